"""Pooling heads that turn `[B, T, D]` tokens into one `[B, D]` vector: the MAP attention probe.

Multihead attention pooling ("MAP"): a learned probe token attends over the patch tokens, then a residual
MLP (`x + mlp(norm(x))`). From big_vision's `MAPHead` (Zhai et al., "Scaling Vision Transformers", 2022) and
timm's `AttentionPoolLatent`, whose parameters this mirrors (`latent`, `q`, `kv`, `proj`, `norm`, `mlp`).

Dimension letters: B batch, T tokens, D width, N heads, H head dim, F MLP hidden.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike
from jaxtyping import Array, Float

from . import init as initializers
from .attention import AttentionFn, xla_attention
from .placement import batch_like, gathered, with_sharding
from .sharding import Plan
from .transformer import MLP, LayerNorm, default_kernel_init


class MAPHead(nnx.Module):
    """Attention-probe pooling: `[B, T, D]` -> `[B, D]`."""

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
    ):
        n, h = num_heads, dim // num_heads
        self.dtype = dtype
        self.attention_fn = xla_attention
        zeros = initializers.zeros
        self.probe = nnx.Param(
            with_sharding(default_kernel_init, sharding.probe)(rngs.params(), (1, 1, dim), param_dtype)
        )
        self.q_kernel = nnx.Param(default_kernel_init(rngs.params(), (dim, n, h), param_dtype))
        self.q_bias = nnx.Param(zeros(rngs.params(), (n, h), param_dtype))
        self.kv_kernel = nnx.Param(default_kernel_init(rngs.params(), (dim, 2, n, h), param_dtype))
        self.kv_bias = nnx.Param(zeros(rngs.params(), (2, n, h), param_dtype))
        self.out_kernel = nnx.Param(default_kernel_init(rngs.params(), (n, h, dim), param_dtype))
        self.out_bias = nnx.Param(zeros(rngs.params(), (dim,), param_dtype))
        common = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm = LayerNorm(dim, eps=eps, spec=None, **common)
        self.mlp = MLP(dim, mlp_dim, act=act, sharding=sharding, **common)

    def use_attention_fn(self, attention_fn: AttentionFn) -> None:
        """Attend through `attention_fn` from now on (`jimm.export` picks the explicit path)."""
        self.attention_fn = attention_fn

    def __call__(self, x: Float[Array, "B T D"]) -> Float[Array, "B D"]:
        dt = self.dtype
        x = x.astype(dt)
        q = jnp.einsum("QD,DNH->QNH", gathered(self.probe[...])[0].astype(dt), self.q_kernel[...].astype(dt))
        q = jnp.broadcast_to((q + self.q_bias[...].astype(dt))[None], (x.shape[0], *q.shape))  # [B, 1, N, H]
        q = batch_like(q, x)  # the probe's queries take the images' batch sharding
        kv = (
            jnp.einsum("BTD,DKNH->KBTNH", x, self.kv_kernel[...].astype(dt))
            + self.kv_bias[...].astype(dt)[:, None, None]
        )
        out = self.attention_fn(q, kv[0], kv[1])
        y = jnp.einsum("BQNH,NHD->BQD", out, self.out_kernel[...].astype(dt)) + self.out_bias[...].astype(dt)
        y = y + self.mlp(self.norm(y))
        return y[:, 0]


__all__ = ["MAPHead"]
