"""Pre-norm transformer encoder: attention, MLP, block, and the layer stack scanned over depth.

Dimension letters: B batch, T tokens, D width, N heads, H head dim, F MLP hidden, L layers.
The stack's parameters carry a leading L axis (built with `nnx.vmap`), so one compiled block body runs
L times under `nnx.scan`: compile time does not grow with depth.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import DTypeLike
from jaxtyping import Array, Bool, Float

from . import init as initializers
from .attention import (
    AttentionCall,
    AttentionFn,
    apply_attention_weights,
    attention_weights,
    check_dropout_support,
    full_mask,
    xla_attention,
)
from .placement import Spec, constrain, einsum, like, place, with_sharding
from .sharding import Plan

_SQRT_HALF = np.float32(np.sqrt(0.5))


@jax.custom_vjp
def gelu_exact(x: jax.Array) -> jax.Array:
    """The exact (erf) GELU, `x Phi(x) = 0.5 x (1 + erf(x / sqrt 2))`, as torch computes it.

    Written with erf rather than `jax.nn.gelu`'s erfc (the same function; XLA's CPU erfc costs 2.7x erf). The
    backward keeps only `x` and recomputes the exact derivative `Phi(x) + x phi(x)`: autodiff would keep several
    `[B, T, F]` intermediates per block.
    """
    return 0.5 * x * (1 + jax.lax.erf(x * _SQRT_HALF.astype(x.dtype)))


def _gelu_fwd(x):
    return gelu_exact(x), x


def _gelu_bwd(x, g):
    # Phi through erfc, not the forward's erf: XLA would merge the two (CSE) in an unrolled stack and keep the
    # forward's erf alive until the backward, one more [B, T, F] buffer per block.
    cdf = 0.5 * jax.lax.erfc(-x * _SQRT_HALF.astype(x.dtype))
    pdf = jnp.exp(-0.5 * x * x) * (1 / np.sqrt(2 * np.pi)).astype(x.dtype)
    return (g * (cdf + x * pdf),)


gelu_exact.defvjp(_gelu_fwd, _gelu_bwd)

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    # HF "gelu" is the exact erf GELU; "gelu_new" and "gelu_pytorch_tanh" are the tanh approximation.
    "gelu": gelu_exact,
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}

default_kernel_init = initializers.default_kernel_init  # trunc normal, std 0.02 (HF's initializer_range)


class LayerNorm(nnx.LayerNorm):
    """LayerNorm with the two-pass variance torch uses (flax's fast variance loses ~1e-6 on large means)."""

    def __init__(self, dim: int, *, eps: float, spec: Spec, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
        super().__init__(
            dim,
            epsilon=eps,
            use_fast_variance=False,
            dtype=dtype,
            param_dtype=param_dtype,
            scale_init=with_sharding(initializers.ones, spec),
            bias_init=with_sharding(initializers.zeros, spec),
            rngs=rngs,
        )

    def __call__(self, x: Float[Array, "... D"], *, mask: jax.Array | None = None) -> Float[Array, "... D"]:
        scale, bias = like(self.scale[...], x), like(self.bias[...], x)
        if mask is not None or (scale is self.scale[...] and bias is self.bias[...]):
            return super().__call__(x, mask=mask)
        # A scale / bias stored sharded (the `layernorm` field) under Explicit axes, gathered to fit `x`:
        # flax's own steps (float32 statistics, two-pass variance) on the gathered values.
        x, scale, bias = self.promote_dtype((x, scale, bias), dtype=self.dtype)
        stats = jnp.asarray(x, jnp.promote_types(self.dtype or x.dtype, jnp.float32))
        mean = stats.mean(-1, keepdims=True)
        var = jnp.square(stats - mean).mean(-1, keepdims=True)
        y = (x - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias
        return jnp.asarray(y, self.dtype or jnp.result_type(x, scale, bias))


class RMSNorm(nnx.Module):
    """Root-mean-square norm, `scale * x / sqrt(mean(x^2) + eps)`, no bias (AIMv2, T5).

    Statistics in fp32 and the normalised value cast back to the input dtype before the scale, as
    transformers' `Aimv2RMSNorm` / `T5LayerNorm` do, so a bf16 model rounds where torch does.
    """

    def __init__(self, dim: int, *, eps: float, spec: Spec, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
        self.scale = nnx.Param(with_sharding(initializers.ones, spec)(rngs.params(), (dim,), param_dtype))
        self.epsilon, self.dtype = eps, dtype

    def __call__(self, x: Float[Array, "... D"]) -> Float[Array, "... D"]:
        stats = x.astype(jnp.float32)
        normed = (stats * jax.lax.rsqrt(jnp.mean(jnp.square(stats), axis=-1, keepdims=True) + self.epsilon)).astype(
            x.dtype
        )
        dtype = self.dtype or x.dtype
        return like(self.scale[...], x).astype(dtype) * normed.astype(dtype)


NORMS: dict[str, type[nnx.Module]] = {"layernorm": LayerNorm, "rmsnorm": RMSNorm}
"""Norm layers by config name; each is built as `NORMS[kind](dim, eps=, spec=, dtype=, param_dtype=, rngs=)`."""


def make_norm(kind: str, dim: int, **kwargs) -> nnx.Module:
    """The `kind` norm layer (a `NORMS` key), or a clear error naming the known kinds."""
    if kind not in NORMS:
        raise ValueError(f"unknown norm {kind!r}; choose one of {sorted(NORMS)}")
    return NORMS[kind](dim, **kwargs)


class Attention(nnx.Module):
    """Multi-head self-attention with a fused qkv kernel `[D, 3, N, H]`.

    `attention_fn(q, k, v, mask=..., causal=...)` runs the attention itself (`AttentionCall`: the original
    jimm's contract, adapted to the function's signature); `causal=True` masks future keys. The explicit XLA
    path (probabilities materialised) is used instead when attention dropout is active (only allowed for XLA
    backends, see `check_dropout_support`) and when the weights are asked for (`weights`, `return_weights=True`).

    `qkv_bias` is one flag or three (query, key, value): DINOv3 has no key bias. Only the projections with a
    bias get one, stacked `[n_biased, N, H]`. `rope=(cos, sin)` rotates the queries and keys of the last
    `cos.shape[0]` tokens (the patches; prefix tokens stay unrotated), as DINOv3 does.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qkv_bias: bool | tuple[bool, bool, bool],
        attention_dropout: float,
        attention_fn: AttentionFn | None,
        sharding: Plan,
        dtype: DTypeLike,
        param_dtype: DTypeLike,
        rngs: nnx.Rngs,
        qk_norm: bool = False,
        eps: float = 1e-6,
        out_bias: bool = True,
        causal: bool = False,
    ):
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by the number of heads {num_heads}")
        head_dim = dim // num_heads
        self.num_heads, self.head_dim = num_heads, head_dim
        self.dtype, self.sharding = dtype, sharding
        self.attention_fn = attention_fn or xla_attention
        self.causal = causal
        self.attend = AttentionCall.bind(self.attention_fn, causal=causal)
        flags = (qkv_bias,) * 3 if isinstance(qkv_bias, bool) else tuple(bool(b) for b in qkv_bias)
        self.bias_slots = tuple(i for i, on in enumerate(flags) if on)  # which of q, k, v have a bias
        key = rngs.params()
        self.qkv_kernel = nnx.Param(
            with_sharding(default_kernel_init, sharding.qkv_kernel)(key, (dim, 3, num_heads, head_dim), param_dtype)
        )
        zeros = initializers.zeros
        self.qkv_bias = (
            nnx.Param(
                with_sharding(zeros, sharding.qkv_bias)(key, (len(self.bias_slots), num_heads, head_dim), param_dtype)
            )
            if self.bias_slots
            else None
        )
        self.out_kernel = nnx.Param(
            with_sharding(default_kernel_init, sharding.attn_out_kernel)(
                rngs.params(), (num_heads, head_dim, dim), param_dtype
            )
        )
        self.out_bias = (
            nnx.Param(with_sharding(zeros, sharding.attn_out_bias)(key, (dim,), param_dtype)) if out_bias else None
        )
        self.attn_drop = nnx.Dropout(attention_dropout, deterministic=True, rngs=rngs)
        # qk-norm (issue 7): LayerNorm over each head's H features of q and k, as timm's `qk_norm=True`.
        norm = dict(eps=eps, spec=None, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_norm = LayerNorm(head_dim, **norm) if qk_norm else None
        self.k_norm = LayerNorm(head_dim, **norm) if qk_norm else None

    def qkv(
        self, x: Float[Array, "B T D"], rope: tuple[jax.Array, jax.Array] | None = None
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        # The dot's natural output layout [B, T, 3, N, H]: a K-leading output costs a transpose on CPU.
        heads = self.sharding.heads
        qkv = einsum(
            "BTD,DKNH->BTKNH", x.astype(self.dtype), self.qkv_kernel[...].astype(self.dtype), None, None, heads
        )
        bias = None if self.qkv_bias is None else like(self.qkv_bias[...], qkv).astype(self.dtype)
        if bias is not None and len(self.bias_slots) == 3:
            qkv = qkv + bias
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if bias is not None and len(self.bias_slots) < 3:
            parts = [q, k, v]
            for row, slot in enumerate(self.bias_slots):
                parts[slot] = parts[slot] + bias[row]
            q, k, v = parts
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        return constrain(q, None, heads), constrain(k, None, heads), constrain(v, None, heads)

    def weights(self, x: Float[Array, "B T D"], *, mask: jax.Array | None = None, rope=None) -> Float[Array, "B N T T"]:
        """Attention probabilities, always through the explicit XLA path."""
        q, k, _ = self.qkv(x, rope)
        return attention_weights(q, k, mask=full_mask(mask, q.shape[1], k.shape[1], causal=self.causal))

    def __call__(
        self,
        x: Float[Array, "B T D"],
        *,
        mask: Bool[Array, "#B #N T T"] | None = None,
        rope: tuple[jax.Array, jax.Array] | None = None,
        return_weights: bool = False,
    ) -> Float[Array, "B T D"] | tuple[Float[Array, "B T D"], Float[Array, "B N T T"]]:
        """Self-attention; `mask` (True = attend) is passed to the kernel; with `return_weights`, also the
        probabilities (explicit XLA path, pre-dropout)."""
        q, k, v = self.qkv(x, rope)
        dropout = self.attn_drop.rate > 0 and not self.attn_drop.deterministic
        weights = None
        if dropout or return_weights:
            if dropout and not return_weights:
                check_dropout_support(self.attention_fn, q, k, self.attn_drop.rate)
            weights = attention_weights(q, k, mask=full_mask(mask, q.shape[1], k.shape[1], causal=self.causal))
            out = apply_attention_weights(self.attn_drop(weights) if dropout else weights, v)
        else:
            out = self.attend(q, k, v, mask)
        out = constrain(out, None, self.sharding.heads)
        y = einsum("BTNH,NHD->BTD", out, self.out_kernel[...].astype(self.dtype))
        y = _add_bias(y, self.out_bias)
        return (y, weights) if return_weights else y


def rope_coords(grid_hw: tuple[int, int]) -> np.ndarray:
    """Patch-centre coordinates `[h*w, 2]` in [-1, 1], (y, x) row-major: `2 (i + 0.5) / n - 1` (fp32)."""
    h, w = grid_hw
    coords_h = np.arange(0.5, h, dtype=np.float32) / h
    coords_w = np.arange(0.5, w, dtype=np.float32) / w
    coords = np.stack(np.meshgrid(coords_h, coords_w, indexing="ij"), axis=-1).reshape(-1, 2)
    return 2.0 * coords - 1.0


def rope_2d(grid_hw: tuple[int, int], head_dim: int, theta: float, coords=None) -> tuple[np.ndarray, np.ndarray]:
    """DINOv3's 2-D rotary embedding for an `h x w` patch grid: `(cos, sin)`, each `[h*w, head_dim]` fp32.

    Patch centres `rope_coords(grid_hw)` (or the given, e.g. augmented, `coords`); `head_dim / 4` frequencies
    `theta ** -(4j / head_dim)`; angles `2 pi coord freq` laid out `[y-freqs, x-freqs]` and tiled twice
    (transformers' `DINOv3ViTRopePositionEmbedding`). Computed in numpy from static sizes (free under jit);
    in jnp when `coords` is a traced array.
    """
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs a head dimension divisible by 4, got {head_dim}")
    xp = np if coords is None else jnp
    coords = rope_coords(grid_hw) if coords is None else coords
    inv_freq = (1.0 / theta ** np.arange(0, 1, 4 / head_dim, dtype=np.float32)).astype(np.float32)
    angles = (2 * np.pi * coords[:, :, None] * inv_freq[None, None, :]).astype(np.float32).reshape(len(coords), -1)
    angles = xp.tile(angles, 2)
    return xp.cos(angles), xp.sin(angles)


class RopeAugment(nnx.Module):
    """DINOv3's train-time augmentation of the RoPE patch coordinates; the identity in eval mode.

    In order, as transformers' `augment_patches_center_coordinates`: add a uniform shift in `[-shift, shift]`
    per axis, multiply by a log-uniform jitter in `[1/jitter, jitter]` per axis, multiply both axes by one
    log-uniform rescale in `[1/rescale, rescale]`; one draw per call (per batch), from the `dropout` stream.
    """

    def __init__(self, shift: float | None, jitter: float | None, rescale: float | None, *, rngs: nnx.Rngs):
        self.shift, self.jitter, self.rescale = shift, jitter, rescale
        self.deterministic = True
        self.rngs = rngs["dropout"].fork()

    def __call__(self, coords: Float[Array, "P 2"]) -> Float[Array, "P 2"]:
        if self.deterministic:
            return coords
        k_shift, k_jitter, k_rescale = jax.random.split(self.rngs(), 3)
        coords = jnp.asarray(coords, jnp.float32)
        if self.shift is not None:
            coords = coords + jax.random.uniform(k_shift, (1, 2), minval=-self.shift, maxval=self.shift)
        if self.jitter is not None:
            span = float(np.log(self.jitter))
            coords = coords * jnp.exp(jax.random.uniform(k_jitter, (1, 2), minval=-span, maxval=span))
        if self.rescale is not None:
            span = float(np.log(self.rescale))
            coords = coords * jnp.exp(jax.random.uniform(k_rescale, (1,), minval=-span, maxval=span))
        return coords


def apply_rope(x: Float[Array, "B T N H"], rope: tuple[jax.Array, jax.Array]) -> Float[Array, "B T N H"]:
    """Rotate the last `cos.shape[0]` tokens of `x` (rotate-half convention); the prefix tokens are unchanged."""
    cos, sin = rope
    num_patches = cos.shape[0]
    prefix, patches = x[:, : x.shape[1] - num_patches], x[:, x.shape[1] - num_patches :]
    cos, sin = cos[None, :, None].astype(x.dtype), sin[None, :, None].astype(x.dtype)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-patches[..., half:], patches[..., :half]], axis=-1)
    return jnp.concatenate([prefix, patches * cos + rotated * sin], axis=1)


class MLP(nnx.Module):
    """Two dense layers with an activation between them: `D -> F -> D` (biases optional, DINOv3's `mlp_bias`)."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        *,
        act: str,
        sharding: Plan,
        dtype: DTypeLike,
        param_dtype: DTypeLike,
        rngs: nnx.Rngs,
        bias: bool = True,
    ):
        self.act = ACTIVATIONS[act]
        self.dtype, self.sharding = dtype, sharding
        zeros = initializers.zeros
        self.fc1_kernel = nnx.Param(
            with_sharding(default_kernel_init, sharding.mlp_in_kernel)(rngs.params(), (dim, hidden), param_dtype)
        )
        self.fc1_bias = (
            nnx.Param(with_sharding(zeros, sharding.mlp_in_bias)(rngs.params(), (hidden,), param_dtype))
            if bias
            else None
        )
        self.fc2_kernel = nnx.Param(
            with_sharding(default_kernel_init, sharding.mlp_out_kernel)(rngs.params(), (hidden, dim), param_dtype)
        )
        self.fc2_bias = (
            nnx.Param(with_sharding(zeros, sharding.mlp_out_bias)(rngs.params(), (dim,), param_dtype)) if bias else None
        )

    def __call__(self, x: Float[Array, "B T D"]) -> Float[Array, "B T D"]:
        h = einsum(
            "BTD,DF->BTF", x.astype(self.dtype), self.fc1_kernel[...].astype(self.dtype), None, self.sharding.hidden
        )
        h = self.act(_add_bias(h, self.fc1_bias))
        y = einsum("BTF,FD->BTD", h, self.fc2_kernel[...].astype(self.dtype))
        return _add_bias(y, self.fc2_bias)


class GatedMLP(nnx.Module):
    """`down(act(gate(x)) * up(x))`: SwiGLU (DINOv2-giant, act silu) and DINOv3's gated MLP.

    Gate and up projections share one kernel `[D, 2, F]` (gate first, as DINOv2's fused `weights_in`), so the
    two matmuls run as one.
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        *,
        act: str,
        sharding: Plan,
        dtype: DTypeLike,
        param_dtype: DTypeLike,
        rngs: nnx.Rngs,
        bias: bool = True,
    ):
        self.act = ACTIVATIONS[act]
        self.dtype, self.sharding = dtype, sharding
        zeros = initializers.zeros
        self.gate_up_kernel = nnx.Param(
            with_sharding(default_kernel_init, _insert_axis(sharding.mlp_in_kernel, 1))(
                rngs.params(), (dim, 2, hidden), param_dtype
            )
        )
        self.gate_up_bias = (
            nnx.Param(
                with_sharding(zeros, _insert_axis(sharding.mlp_in_bias, 0))(rngs.params(), (2, hidden), param_dtype)
            )
            if bias
            else None
        )
        self.down_kernel = nnx.Param(
            with_sharding(default_kernel_init, sharding.mlp_out_kernel)(rngs.params(), (hidden, dim), param_dtype)
        )
        self.down_bias = (
            nnx.Param(with_sharding(zeros, sharding.mlp_out_bias)(rngs.params(), (dim,), param_dtype)) if bias else None
        )

    def __call__(self, x: Float[Array, "B T D"]) -> Float[Array, "B T D"]:
        h = einsum(
            "BTD,DKF->BTKF",
            x.astype(self.dtype),
            self.gate_up_kernel[...].astype(self.dtype),
            None,
            None,
            self.sharding.hidden,
        )
        h = _add_bias(h, self.gate_up_bias)
        h = constrain(self.act(h[:, :, 0]) * h[:, :, 1], None, self.sharding.hidden)
        y = einsum("BTF,FD->BTD", h, self.down_kernel[...].astype(self.dtype))
        return _add_bias(y, self.down_bias)


MLPS = {"mlp": MLP, "gated": GatedMLP}


def _add_bias(x: jax.Array, bias: nnx.Param | None) -> jax.Array:
    return x if bias is None else x + like(bias[...], x).astype(x.dtype)


def _insert_axis(spec: Spec, position: int) -> Spec:
    """A spec with an unsharded axis inserted (the gate/up axis of a fused gated-MLP kernel)."""
    if spec is None:
        return None
    entries = list(spec)
    entries.insert(position, None)
    return jax.sharding.PartitionSpec(*entries)


class LayerScale(nnx.Module):
    """Per-channel scale of a residual branch, `gamma * x` (CaiT, Touvron et al., 2021; timm's `ls1`/`ls2`)."""

    def __init__(self, dim: int, init_value: float, *, spec: Spec = None, param_dtype: DTypeLike):
        gamma = jnp.asarray(np.full((dim,), init_value, np.dtype(param_dtype)))
        self.gamma = nnx.Param(with_sharding(lambda *_: gamma, spec)(None, (dim,), param_dtype))

    def __call__(self, x: Float[Array, "B T D"]) -> Float[Array, "B T D"]:
        return x * like(self.gamma[...], x).astype(x.dtype)


class DropPath(nnx.Module):
    """Stochastic depth: drop a residual branch for a whole sample with probability `rate`, scale survivors.

    The `Encoder` passes each block its rate of the linear schedule at call time (`rate=`), so the schedule is
    derived from the config rather than stored as state. Identity in eval mode (`deterministic=True`).
    """

    def __init__(self, rate: float, *, rngs: nnx.Rngs):
        self.rate = float(rate)
        self.deterministic = True
        self.rngs = rngs["dropout"].fork()

    def __call__(self, x: Float[Array, "B T D"], rate: jax.Array | float | None = None) -> Float[Array, "B T D"]:
        if self.deterministic:
            return x
        keep = 1.0 - jnp.asarray(self.rate if rate is None else rate, jnp.float32)
        mask = jax.random.bernoulli(self.rngs(), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(mask, x / keep.astype(x.dtype), jnp.zeros((), x.dtype))


class Block(nnx.Module):
    """`x + attn(norm1(x))`, then `x + mlp(norm2(x))`, with dropout on each branch.

    Optional: the norm kind (`norm`, a `NORMS` key), LayerScale on each branch, stochastic depth on each branch,
    qk-norm and per-projection biases in attention, a gated MLP (`mlp="gated"`), MLP biases off, RoPE and an
    attention mask passed per call.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        *,
        act: str,
        eps: float,
        qkv_bias: bool | tuple[bool, bool, bool],
        dropout: float,
        attention_dropout: float,
        attention_fn: AttentionFn | None,
        sharding: Plan,
        dtype: DTypeLike,
        param_dtype: DTypeLike,
        rngs: nnx.Rngs,
        layer_scale_init_value: float | None = None,
        drop_path_rate: float = 0.0,
        qk_norm: bool = False,
        out_bias: bool = True,
        mlp: str = "mlp",
        mlp_bias: bool = True,
        causal: bool = False,
        norm: str = "layernorm",
    ):
        common = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm1 = make_norm(norm, dim, eps=eps, spec=sharding.norm, **common)
        self.attn = Attention(
            dim,
            num_heads,
            qkv_bias=qkv_bias,
            attention_dropout=attention_dropout,
            attention_fn=attention_fn,
            sharding=sharding,
            qk_norm=qk_norm,
            eps=eps,
            out_bias=out_bias,
            causal=causal,
            **common,
        )
        self.norm2 = make_norm(norm, dim, eps=eps, spec=sharding.norm, **common)
        if mlp not in MLPS:
            raise ValueError(f"unknown MLP kind {mlp!r}; choose one of {sorted(MLPS)}")
        self.mlp = MLPS[mlp](dim, mlp_dim, act=act, sharding=sharding, bias=mlp_bias, **common)
        self.drop = nnx.Dropout(dropout, deterministic=True, rngs=rngs)
        scale = layer_scale_init_value
        self.ls1 = (
            LayerScale(dim, scale, spec=sharding.layer_scale, param_dtype=param_dtype) if scale is not None else None
        )
        self.ls2 = (
            LayerScale(dim, scale, spec=sharding.layer_scale, param_dtype=param_dtype) if scale is not None else None
        )
        self.drop_path1 = DropPath(drop_path_rate, rngs=rngs) if drop_path_rate > 0 else None
        self.drop_path2 = DropPath(drop_path_rate, rngs=rngs) if drop_path_rate > 0 else None

    def _branch(self, y: jax.Array, scale: LayerScale | None, drop_path: DropPath | None, rate) -> jax.Array:
        y = self.drop(y)
        if scale is not None:
            y = scale(y)
        return drop_path(y, rate) if drop_path is not None else y

    def __call__(
        self,
        x: Float[Array, "B T D"],
        *,
        mask: jax.Array | None = None,
        rope: tuple[jax.Array, jax.Array] | None = None,
        drop_path_rate: jax.Array | float | None = None,
        return_attention_weights: bool = False,
    ) -> Float[Array, "B T D"] | tuple[Float[Array, "B T D"], Float[Array, "B N T T"]]:
        attn = self.attn(self.norm1(x), mask=mask, rope=rope, return_weights=return_attention_weights)
        attn, weights = attn if return_attention_weights else (attn, None)
        x = constrain(x + self._branch(attn, self.ls1, self.drop_path1, drop_path_rate))
        x = constrain(x + self._branch(self.mlp(self.norm2(x)), self.ls2, self.drop_path2, drop_path_rate))
        return (x, weights) if return_attention_weights else x


@functools.partial(nnx.jit, static_argnums=(4,))
def _jitted_encoder(encoder: Encoder, x, mask, rope, flags: tuple[bool, bool, int]):
    hidden, weights, num_layers = flags
    return encoder(
        x, mask=mask, rope=rope, return_hidden_states=hidden, return_attention_weights=weights, num_layers=num_layers
    )


def _vmapped_blocks(num_layers: int, block_kwargs: dict, rngs: nnx.Rngs) -> Block:
    """`num_layers` blocks with stacked `[L, ...]` parameters, built by vmapping the constructor (traced)."""

    @nnx.split_rngs(splits=num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: None})
    def make_blocks(rngs: nnx.Rngs) -> Block:
        return Block(rngs=rngs, **block_kwargs)

    return make_blocks(rngs)


def stack_blocks(blocks: list[Block], num_layers: int, block_kwargs: dict) -> Block:
    """Per-layer blocks -> one block with stacked `[L, ...]` variables, as `_vmapped_blocks` would build it.

    The stacked graph (and each variable's metadata, e.g. the sharding with its leading layer axis) comes
    from tracing the vmapped constructor abstractly; the values are the blocks' own, stacked on the host.
    """
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: _vmapped_blocks(num_layers, block_kwargs, nnx.Rngs(0))))
    per_layer = [dict(nnx.to_flat_state(nnx.state(block))) for block in blocks]
    filled = []
    for path, variable in nnx.to_flat_state(abstract):
        values = [layer[path].get_value() for layer in per_layer]
        if isinstance(variable, nnx.RngKey):
            data = np.stack([np.asarray(jax.random.key_data(v)) for v in values])
            stacked = jax.random.wrap_key_data(data, impl=jax.random.key_impl(values[0]))
        else:
            stacked = jnp.asarray(np.stack([np.asarray(v) for v in values]))
        filled.append((path, variable.replace(value=place(stacked, variable.get_metadata().get("out_sharding")))))
    return nnx.merge(graphdef, nnx.from_flat_state(filled))


@jax.custom_vjp
def materialize_cotangent(x: jax.Array) -> jax.Array:
    """Identity whose cotangent is computed once, in memory, before flowing on.

    In an unrolled stack XLA otherwise fuses the residual stream's gradient (a sum of every later block's
    LayerNorm-backward terms, all cheap elementwise ops) into each consumer and recomputes it there: work
    quadratic in depth (2x the whole step's time on CPU for ViT-S/16). A scan's loop boundary does this already.
    """
    return x


def _materialize_fwd(x):
    return x, None


def _materialize_bwd(_, g):
    # max(g, -inf) = g through a reduction, which XLA materialises instead of fusing into each consumer.
    # `lax.optimization_barrier(g)` does not stop the recomputation (measured: 5.4 s vs 3.0 s per ViT-S/16 step).
    return (jnp.max(jnp.stack([g, jnp.full_like(g, -jnp.inf)]), axis=0),)


materialize_cotangent.defvjp(_materialize_fwd, _materialize_bwd)


# Policies of `jax.checkpoint_policies` that take no arguments, by name.
REMAT_POLICIES: tuple[str, ...] = (
    "nothing_saveable",
    "everything_saveable",
    "dots_saveable",
    "checkpoint_dots",
    "dots_with_no_batch_dims_saveable",
    "checkpoint_dots_with_no_batch_dims",
)
DEFAULT_REMAT_POLICY = "nothing_saveable"
"""Used when checkpointing is on and no policy is named: keep only each block's input, recompute the rest."""


def remat_policy_fn(name: str) -> Callable[..., bool]:
    """The `jax.checkpoint_policies` function called `name`, or a clear error listing the valid names."""
    if name not in REMAT_POLICIES:
        raise ValueError(
            f"unknown remat_policy {name!r}; choose one of {list(REMAT_POLICIES)} (jax.checkpoint_policies)"
        )
    return getattr(jax.checkpoint_policies, name)


class Encoder(nnx.Module):
    """`num_layers` blocks, scanned (stacked parameters, one compiled body) or as a python loop over modules.

    Scanned (`scan_layers=True`, the default): parameters carry a leading L axis and their sharding specs a
    leading `None` (`nnx.vmap` transform_metadata), so optimizer state built from them is sharded alike; compile
    time does not grow with depth. Unscanned: `layers` is a list of per-layer `Block`s (for per-layer surgery);
    `stacked_to_per_layer` / `per_layer_to_stacked` convert parameters between the two layouts.

    `remat_policy` names a `jax.checkpoint_policies` policy (see `REMAT_POLICIES`); `remat=True` with no policy
    uses `DEFAULT_REMAT_POLICY`; naming a policy turns checkpointing on. Stochastic depth follows timm's
    schedule, `linspace(0, drop_path_rate, num_layers)`, or the same rate in every block with
    `drop_path_uniform=True` (transformers' DINOv2 / DINOv3), passed to each block at call time.
    """

    def __init__(
        self,
        num_layers: int,
        *,
        remat: bool,
        rngs: nnx.Rngs,
        remat_policy: str | None = None,
        scan_layers: bool = True,
        drop_path_uniform: bool = False,
        **block_kwargs,
    ):
        self.num_layers = num_layers
        self.scan_layers = scan_layers
        self.remat_policy = remat_policy or (DEFAULT_REMAT_POLICY if remat else None)
        self.remat = self.remat_policy is not None
        if self.remat_policy is not None:
            remat_policy_fn(self.remat_policy)  # fail at construction, not at the first backward pass
        rate = float(block_kwargs.get("drop_path_rate", 0.0))
        ramp = np.full(num_layers, rate) if drop_path_uniform else np.linspace(0.0, rate, num_layers, dtype=np.float32)
        self.drop_path_rates = tuple(float(r) for r in ramp.astype(np.float32))

        if not scan_layers:
            self.layers = nnx.List([Block(rngs=rngs, **block_kwargs) for _ in range(num_layers)])
        elif initializers.is_concrete(rngs.params.key[...]):
            # Eager: build the blocks one by one (numpy initialisers, nothing compiled) and stack them, rather
            # than vmapping the constructor, which would compile a random-number kernel per parameter shape.
            blocks = [Block(rngs=rngs, **block_kwargs) for _ in range(num_layers)]
            self.layers = stack_blocks(blocks, num_layers, block_kwargs)
        else:
            self.layers = _vmapped_blocks(num_layers, block_kwargs, rngs)

    def __call__(
        self,
        x: Float[Array, "B T D"],
        *,
        mask: jax.Array | None = None,
        rope: tuple[jax.Array, jax.Array] | None = None,
        return_hidden_states: bool = False,
        return_attention_weights: bool = False,
        num_layers: int | None = None,
    ) -> Float[Array, "B T D"] | tuple[jax.Array, ...]:
        """Run every block. Extras, each stacked on a leading L axis, come after `x` in this order:
        `return_hidden_states`: each block's output `[L, B, T, D]`; `return_attention_weights`: each block's
        attention probabilities `[L, B, N, T, T]` (explicit XLA path, whatever the attention_fn).

        `mask` (attention mask, True = attend) and `rope` are the same for every block.
        `num_layers=n` runs only the first n blocks (no work at all for the rest): used for early stopping.
        """
        if num_layers is None:
            num_layers = self.num_layers
        if not 1 <= num_layers <= self.num_layers:
            raise ValueError(f"num_layers={num_layers} is out of range: this encoder has 1..{self.num_layers} layers")
        if self.scan_layers and initializers.is_concrete(x):
            # An eager scan traces and compiles its body on every call (a new closure each time); one cached
            # jitted call instead compiles once per shape, so eager `model(x)` is fast after the first call.
            flags = (return_hidden_states, return_attention_weights, num_layers)
            return _jitted_encoder(self, x, mask, rope, flags)

        def step(block: Block, x: jax.Array, rate, mask, rope):
            out = block(x, mask=mask, rope=rope, drop_path_rate=rate, return_attention_weights=return_attention_weights)
            return out if return_attention_weights else (out, None)

        if self.remat:
            step = nnx.remat(step, policy=remat_policy_fn(self.remat_policy))

        def with_extras(y: jax.Array, hidden, weights):
            extras = (hidden if return_hidden_states else None, weights if return_attention_weights else None)
            return (y, *(e for e in extras if e is not None)) if any(e is not None for e in extras) else y

        if not self.scan_layers:
            outputs, weights = [], []
            for block, rate in zip(list(self.layers)[:num_layers], self.drop_path_rates, strict=False):
                x, w = step(block, materialize_cotangent(x), rate, mask, rope)
                outputs.append(x)
                weights.append(w)
            return with_extras(x, jnp.stack(outputs), jnp.stack(weights) if return_attention_weights else None)

        extras = return_hidden_states or return_attention_weights
        rates = jnp.asarray(self.drop_path_rates[:num_layers], jnp.float32)

        @nnx.scan(in_axes=(0, nnx.Carry, 0, None, None), out_axes=(nnx.Carry, 0) if extras else nnx.Carry)
        def run(block: Block, x: jax.Array, rate, mask, rope):
            y, w = step(block, x, rate, mask, rope)
            return (y, (y if return_hidden_states else None, w)) if extras else y

        if num_layers == self.num_layers:
            out = run(self.layers, x, rates, mask, rope)
        else:
            graphdef, state = nnx.split(self.layers)
            prefix = nnx.merge(graphdef, jax.tree.map(lambda a: a[:num_layers], state))  # the first n blocks
            before = jax.tree.leaves(nnx.state(prefix, nnx.Not(nnx.Param)))
            out = run(prefix, x, rates, mask, rope)
            # Write back what the blocks changed (train-mode dropout rng counters) so randomness keeps advancing.
            changed = nnx.state(prefix, nnx.Not(nnx.Param))
            if any(a is not b for a, b in zip(before, jax.tree.leaves(changed), strict=True)):
                full = nnx.state(self.layers, nnx.Not(nnx.Param))
                nnx.update(self.layers, jax.tree.map(lambda f, c: f.at[:num_layers].set(c), full, changed))
        if not extras:
            return out
        y, (hidden, weights) = out
        return with_extras(y, hidden, weights)


LAYERS_PATH: tuple[str, ...] = ("encoder", "blocks", "layers")
"""Where a VisionTransformer keeps its `Encoder.layers` in `nnx.state(model)`."""


def _subtree(tree: dict, path: tuple) -> tuple[dict, object]:
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    return parent, path[-1]


def stacked_to_per_layer(state: dict, path: tuple[str, ...] = LAYERS_PATH) -> dict:
    """Scanned -> unscanned layout of a pure state dict (`nnx.to_pure_dict(nnx.state(model))`); a new dict.

    The stacked subtree at `path` (every leaf `[L, ...]`) becomes `{0: leaf[0], 1: leaf[1], ...}`.
    """
    state = jax.tree.map(lambda a: a, state)  # copy the containers, share the leaves
    parent, key = _subtree(state, path)
    stacked = parent[key]
    leaves = jax.tree.leaves(stacked)
    num_layers = leaves[0].shape[0]
    parent[key] = {i: jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(num_layers)}
    return state


def per_layer_to_stacked(state: dict, path: tuple[str, ...] = LAYERS_PATH) -> dict:
    """Unscanned -> scanned layout of a pure state dict: `{0: tree, 1: tree, ...}` at `path` becomes one tree."""
    state = jax.tree.map(lambda a: a, state)
    parent, key = _subtree(state, path)
    per_layer = parent[key]
    order = sorted(per_layer, key=int)
    if [int(i) for i in order] != list(range(len(order))):
        raise ValueError(f"per-layer keys at {'.'.join(path)} must be 0..L-1, got {order}")
    parent[key] = jax.tree.map(lambda *a: jnp.stack(a), *[per_layer[i] for i in order])
    return state


def __getattr__(name: str):
    # The original jimm's classes live here by path; they are defined over this module's Block and Encoder.
    if name in ("Transformer", "TransformerEncoder"):
        from . import transformer_compat

        return getattr(transformer_compat, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
