"""Pooling heads that turn `[B, T, D]` tokens into one `[B, D]` vector: attention probes.

Multihead attention pooling ("MAP"): a learned probe token attends over the tokens, then a residual MLP
(`x + mlp(norm(x))`). From big_vision's `MAPHead` (Zhai et al., "Scaling Vision Transformers", 2022) and
timm's `AttentionPoolLatent`, whose parameters this mirrors (`latent`, `q`, `kv`, `proj`, `norm`, `mlp`).
AIMv2's attention-pooling head is the same probe without the query projection and without the MLP
(`query_proj=False, residual_mlp=False`), its key / value bias optional.

Both run through the model's attention function (`attention_fn`, the one its blocks use) and take a key mask
`[B, T]` (True = a real token): padded tokens get no weight (SigLIP 2 NaFlex pads its patches).

Dimension letters: B batch, T tokens, D width, N heads, H head dim, F MLP hidden.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike
from jaxtyping import Array, Bool, Float

from . import init as initializers
from .attention import AttentionCall, AttentionFn, xla_attention
from .placement import batch_like, gathered, with_sharding
from .sharding import Plan
from .transformer import MLP, LayerNorm, default_kernel_init


class MAPHead(nnx.Module):
    """Attention-probe pooling: `[B, T, D]` (and a key mask `[B, T]`) -> `[B, D]`."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        *,
        act: str,
        eps: float,
        sharding: Plan,
        dtype: DTypeLike,
        param_dtype: DTypeLike,
        rngs: nnx.Rngs,
        attention_fn: AttentionFn | None = None,
        query_proj: bool = True,
        kv_bias: bool = True,
        residual_mlp: bool = True,
    ):
        n, h = num_heads, dim // num_heads
        self.num_heads, self.dtype = n, dtype
        self.attend = AttentionCall.bind(attention_fn or xla_attention)
        zeros = initializers.zeros

        def param(init, shape, spec=None):
            return nnx.Param(with_sharding(init, spec)(rngs.params(), shape, param_dtype))

        self.probe = param(default_kernel_init, (1, 1, dim), sharding.probe)
        self.q_kernel = param(default_kernel_init, (dim, n, h)) if query_proj else None
        self.q_bias = param(zeros, (n, h)) if query_proj else None
        self.kv_kernel = param(default_kernel_init, (dim, 2, n, h))
        self.kv_bias = param(zeros, (2, n, h)) if kv_bias else None
        self.out_kernel = param(default_kernel_init, (n, h, dim))
        self.out_bias = param(zeros, (dim,))
        common = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm = LayerNorm(dim, eps=eps, spec=None, **common) if residual_mlp else None
        self.mlp = MLP(dim, mlp_dim, act=act, sharding=sharding, **common) if residual_mlp else None

    def __call__(self, x: Float[Array, "B T D"], mask: Bool[Array, "B T"] | None = None) -> Float[Array, "B D"]:
        dt = self.dtype
        x = x.astype(dt)
        probe = gathered(self.probe[...])[0].astype(dt)  # [1, D]
        if self.q_kernel is None:  # AIMv2: the probe itself, split into heads, is the query
            q = probe.reshape(1, self.num_heads, -1)
        else:
            q = jnp.einsum("QD,DNH->QNH", probe, self.q_kernel[...].astype(dt)) + self.q_bias[...].astype(dt)
        q = batch_like(jnp.broadcast_to(q[None], (x.shape[0], *q.shape)), x)  # [B, 1, N, H], the images' sharding
        kv = jnp.einsum("BTD,DKNH->KBTNH", x, self.kv_kernel[...].astype(dt))
        if self.kv_bias is not None:
            kv = kv + self.kv_bias[...].astype(dt)[:, None, None]
        out = self.attend(q, kv[0], kv[1], None if mask is None else mask[:, None, None, :])
        y = jnp.einsum("BQNH,NHD->BQD", out, self.out_kernel[...].astype(dt)) + self.out_bias[...].astype(dt)
        if self.mlp is not None:
            y = y + self.mlp(self.norm(y))
        return y[:, 0]


__all__ = ["MAPHead"]
