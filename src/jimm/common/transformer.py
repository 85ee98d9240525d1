"""Pre-norm transformer encoder: attention, MLP, block, and the layer stack scanned over depth.

Dimension letters: B batch, T tokens, D width, N heads, H head dim, F MLP hidden, L layers.
The stack's parameters carry a leading L axis (built with `nnx.vmap`), so one compiled block body runs
L times under `nnx.scan`: compile time does not grow with depth.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike
from jaxtyping import Array, Float

from .attention import AttentionFn, apply_attention_weights, attention_weights, xla_attention
from .sharding import ShardingSpec, Spec, active_mesh, shard, with_sharding

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    # HF "gelu" is the exact erf GELU; "gelu_new" and "gelu_pytorch_tanh" are the tanh approximation.
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}

default_kernel_init = nnx.initializers.truncated_normal(stddev=0.02)


def einsum(equation: str, x: jax.Array, kernel: jax.Array, out_spec: Spec) -> jax.Array:
    """`jnp.einsum` that names its output sharding under a mesh (needed when a contracting dim is sharded)."""
    if out_spec is not None and active_mesh() is not None:
        return jnp.einsum(equation, x, kernel, out_sharding=out_spec)
    return jnp.einsum(equation, x, kernel)


class LayerNorm(nnx.LayerNorm):
    """LayerNorm with the two-pass variance torch uses (flax's fast variance loses ~1e-6 on large means)."""

    def __init__(self, dim: int, *, eps: float, spec: Spec, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
        super().__init__(
            dim,
            epsilon=eps,
            use_fast_variance=False,
            dtype=dtype,
            param_dtype=param_dtype,
            scale_init=with_sharding(nnx.initializers.ones_init(), spec),
            bias_init=with_sharding(nnx.initializers.zeros_init(), spec),
            rngs=rngs,
        )


class Attention(nnx.Module):
    """Multi-head self-attention with a fused qkv kernel `[D, 3, N, H]`."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qkv_bias: bool,
        attention_dropout: float,
        attention_fn: AttentionFn | None,
        sharding: ShardingSpec,
        dtype: DTypeLike,
        param_dtype: DTypeLike,
        rngs: nnx.Rngs,
    ):
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by the number of heads {num_heads}")
        head_dim = dim // num_heads
        self.num_heads, self.head_dim = num_heads, head_dim
        self.dtype, self.sharding = dtype, sharding
        self.attention_fn = attention_fn or xla_attention
        key = rngs.params()
        self.qkv_kernel = nnx.Param(
            with_sharding(default_kernel_init, sharding.qkv_kernel)(key, (dim, 3, num_heads, head_dim), param_dtype)
        )
        self.qkv_bias = (
            nnx.Param(
                with_sharding(nnx.initializers.zeros_init(), sharding.qkv_bias)(
                    key, (3, num_heads, head_dim), param_dtype
                )
            )
            if qkv_bias
            else None
        )
        self.out_kernel = nnx.Param(
            with_sharding(default_kernel_init, sharding.attn_out_kernel)(
                rngs.params(), (num_heads, head_dim, dim), param_dtype
            )
        )
        self.out_bias = nnx.Param(
            with_sharding(nnx.initializers.zeros_init(), sharding.attn_out_bias)(key, (dim,), param_dtype)
        )
        self.attn_drop = nnx.Dropout(attention_dropout, deterministic=True, rngs=rngs)

    def qkv(self, x: Float[Array, "B T D"]) -> tuple[jax.Array, jax.Array, jax.Array]:
        qkv = einsum("BTD,DKNH->KBTNH", x.astype(self.dtype), self.qkv_kernel[...].astype(self.dtype), None)
        if self.qkv_bias is not None:
            qkv = qkv + self.qkv_bias[...].astype(self.dtype)[:, None, None]
        spec = self.sharding.act_btnh
        return shard(qkv[0], spec), shard(qkv[1], spec), shard(qkv[2], spec)

    def weights(self, x: Float[Array, "B T D"]) -> Float[Array, "B N T T"]:
        """Attention probabilities, always through the explicit XLA path."""
        q, k, _ = self.qkv(x)
        return attention_weights(q, k)

    def __call__(self, x: Float[Array, "B T D"]) -> Float[Array, "B T D"]:
        q, k, v = self.qkv(x)
        if self.attn_drop.rate > 0 and not self.attn_drop.deterministic:
            # Dropout on the probabilities needs them explicitly; kernels never expose them.
            out = apply_attention_weights(self.attn_drop(attention_weights(q, k)), v)
        else:
            out = self.attention_fn(q, k, v)
        out = shard(out, self.sharding.act_btnh)
        y = einsum("BTNH,NHD->BTD", out, self.out_kernel[...].astype(self.dtype), self.sharding.act_btd)
        return y + self.out_bias[...].astype(self.dtype)


class MLP(nnx.Module):
    """Two dense layers with an activation between them: `D -> F -> D`."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        *,
        act: str,
        sharding: ShardingSpec,
        dtype: DTypeLike,
        param_dtype: DTypeLike,
        rngs: nnx.Rngs,
    ):
        self.act = ACTIVATIONS[act]
        self.dtype, self.sharding = dtype, sharding
        zeros = nnx.initializers.zeros_init()
        self.fc1_kernel = nnx.Param(
            with_sharding(default_kernel_init, sharding.mlp_in_kernel)(rngs.params(), (dim, hidden), param_dtype)
        )
        self.fc1_bias = nnx.Param(with_sharding(zeros, sharding.mlp_in_bias)(rngs.params(), (hidden,), param_dtype))
        self.fc2_kernel = nnx.Param(
            with_sharding(default_kernel_init, sharding.mlp_out_kernel)(rngs.params(), (hidden, dim), param_dtype)
        )
        self.fc2_bias = nnx.Param(with_sharding(zeros, sharding.mlp_out_bias)(rngs.params(), (dim,), param_dtype))

    def __call__(self, x: Float[Array, "B T D"]) -> Float[Array, "B T D"]:
        h = einsum("BTD,DF->BTF", x.astype(self.dtype), self.fc1_kernel[...].astype(self.dtype), self.sharding.act_btf)
        h = self.act(h + self.fc1_bias[...].astype(self.dtype))
        y = einsum("BTF,FD->BTD", h, self.fc2_kernel[...].astype(self.dtype), self.sharding.act_btd)
        return y + self.fc2_bias[...].astype(self.dtype)


class Block(nnx.Module):
    """`x + attn(norm1(x))`, then `x + mlp(norm2(x))`, with dropout on each branch."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        *,
        act: str,
        eps: float,
        qkv_bias: bool,
        dropout: float,
        attention_dropout: float,
        attention_fn: AttentionFn | None,
        sharding: ShardingSpec,
        dtype: DTypeLike,
        param_dtype: DTypeLike,
        rngs: nnx.Rngs,
    ):
        common = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm1 = LayerNorm(dim, eps=eps, spec=sharding.norm, **common)
        self.attn = Attention(
            dim,
            num_heads,
            qkv_bias=qkv_bias,
            attention_dropout=attention_dropout,
            attention_fn=attention_fn,
            sharding=sharding,
            **common,
        )
        self.norm2 = LayerNorm(dim, eps=eps, spec=sharding.norm, **common)
        self.mlp = MLP(dim, mlp_dim, act=act, sharding=sharding, **common)
        self.drop = nnx.Dropout(dropout, deterministic=True, rngs=rngs)
        self.act_spec = sharding.act_btd

    def __call__(self, x: Float[Array, "B T D"]) -> Float[Array, "B T D"]:
        x = shard(x + self.drop(self.attn(self.norm1(x))), self.act_spec)
        return shard(x + self.drop(self.mlp(self.norm2(x))), self.act_spec)


class Encoder(nnx.Module):
    """`num_layers` blocks with stacked parameters, run with `nnx.scan` (optionally rematerialised)."""

    def __init__(self, num_layers: int, *, remat: bool, rngs: nnx.Rngs, **block_kwargs):
        self.num_layers = num_layers
        self.remat = remat

        @nnx.split_rngs(splits=num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: None})
        def make_blocks(rngs: nnx.Rngs) -> Block:
            return Block(rngs=rngs, **block_kwargs)

        self.layers = make_blocks(rngs)

    def __call__(
        self, x: Float[Array, "B T D"], *, return_hidden_states: bool = False
    ) -> Float[Array, "B T D"] | tuple[Float[Array, "B T D"], Float[Array, "L B T D"]]:
        """Run every block; with `return_hidden_states`, also each block's output stacked on a leading L axis."""

        def step(block: Block, x: jax.Array) -> jax.Array:
            return block(x)

        if self.remat:
            step = nnx.remat(step)

        @nnx.scan(in_axes=(0, nnx.Carry), out_axes=(nnx.Carry, 0) if return_hidden_states else nnx.Carry)
        def run(block: Block, x: jax.Array):
            y = step(block, x)
            return (y, y) if return_hidden_states else y

        return run(self.layers, x)
