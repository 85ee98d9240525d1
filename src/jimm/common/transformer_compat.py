"""The original jimm's `Transformer` and `TransformerEncoder`, over our `Encoder` and `Block`.

Why: code written for the original builds these directly (`from jimm.common.transformer import Transformer`)
with its argument names and calls them on `[B, T, D]` tokens. The maths is our block's (pre-norm, exact GELU,
LayerScale, gated MLP, per-projection biases); only the constructor's vocabulary is the original's.

Dimension letters: B batch, T tokens, D width.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike
from jaxtyping import Array, Float

from .sharding import NoSharding, ShardingSpec, resolve_sharding
from .transformer import Block, Encoder, remat_policy_fn

__all__ = ["Transformer", "TransformerEncoder"]


_NOT_BLOCK_ARGS = ("self", "num_layers", "attn_mask", "use_gradient_checkpointing", "rngs")


def _block_kwargs(
    *,
    hidden_size: int,
    mlp_dim: int,
    num_heads: int,
    layernorm_epsilon: float,
    dropout_rate: float,
    use_quick_gelu: bool,
    use_layer_scale: bool,
    layer_scale_init: float,
    use_gated_mlp: bool,
    hidden_act: str,
    key_bias: bool,
    attention_fn: Callable[..., Any] | None,
    dtype: DTypeLike,
    param_dtype: DTypeLike,
    sharding: ShardingSpec | type | None,
) -> dict[str, Any]:
    if isinstance(sharding, type):  # the original passes spec classes as well as instances
        sharding = sharding()
    return dict(
        dim=hidden_size,
        num_heads=num_heads,
        mlp_dim=mlp_dim,
        act="quick_gelu" if use_quick_gelu else hidden_act,
        eps=layernorm_epsilon,
        qkv_bias=(True, key_bias, True),
        dropout=dropout_rate,
        attention_dropout=0.0,
        attention_fn=attention_fn,
        sharding=resolve_sharding(sharding),
        dtype=dtype,
        param_dtype=param_dtype,
        layer_scale_init_value=layer_scale_init if use_layer_scale else None,
        mlp="gated" if use_gated_mlp else "mlp",
    )


def _mask(attn_mask: jax.Array | None, tokens: int) -> jax.Array | None:
    """The original's `[T_max, T_max]` mask (nonzero = attend), cut to `tokens` and shaped `[1, 1, T, T]`."""
    if attn_mask is None:
        return None
    return jnp.asarray(attn_mask)[:tokens, :tokens].astype(bool)[None, None]


class TransformerEncoder(nnx.Module):
    """One pre-norm block: `x + attn(norm1(x))`, then `x + mlp(norm2(x))` (the original's argument names)."""

    def __init__(
        self,
        hidden_size: int,
        mlp_dim: int,
        num_heads: int,
        layernorm_epsilon: float = 1e-5,
        dropout_rate: float = 0.0,
        attn_mask: Float[Array, "T T"] | None = None,
        use_quick_gelu: bool = False,
        use_gradient_checkpointing: bool = False,
        use_layer_scale: bool = False,
        layer_scale_init: float = 1.0,
        use_gated_mlp: bool = False,
        hidden_act: str = "gelu",
        key_bias: bool = True,
        attention_fn: Callable[..., Any] | None = None,
        rngs: nnx.Rngs | None = None,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        sharding: ShardingSpec | type | None = NoSharding,
    ) -> None:
        kwargs = {k: v for k, v in locals().items() if k not in _NOT_BLOCK_ARGS}
        self.block = Block(rngs=rngs if rngs is not None else nnx.Rngs(0), **_block_kwargs(**kwargs))
        self.attn_mask = nnx.Variable(jnp.asarray(attn_mask)) if attn_mask is not None else None
        self.use_gradient_checkpointing = use_gradient_checkpointing

    def __call__(self, x: Float[Array, "B T D"]) -> Float[Array, "B T D"]:
        mask = _mask(None if self.attn_mask is None else self.attn_mask[...], x.shape[1])
        if self.use_gradient_checkpointing:
            policy = remat_policy_fn("nothing_saveable")
            return nnx.remat(lambda block, x: block(x, mask=mask), policy=policy)(self.block, x)
        return self.block(x, mask=mask)


class Transformer(nnx.Module):
    """`num_layers` pre-norm blocks, stacked and scanned (the original's argument names and defaults)."""

    def __init__(
        self,
        hidden_size: int,
        mlp_dim: int,
        num_layers: int,
        num_heads: int,
        layernorm_epsilon: float = 1e-6,
        dropout_rate: float = 0.0,
        attn_mask: Float[Array, "T T"] | None = None,
        use_quick_gelu: bool = False,
        use_gradient_checkpointing: bool = False,
        use_layer_scale: bool = False,
        layer_scale_init: float = 1.0,
        use_gated_mlp: bool = False,
        hidden_act: str = "gelu",
        key_bias: bool = True,
        attention_fn: Callable[..., Any] | None = None,
        rngs: nnx.Rngs | None = None,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        sharding: ShardingSpec | type | None = NoSharding,
    ) -> None:
        kwargs = {k: v for k, v in locals().items() if k not in _NOT_BLOCK_ARGS}
        self.num_layers = num_layers
        self.encoder = Encoder(
            num_layers,
            remat=use_gradient_checkpointing,
            rngs=rngs if rngs is not None else nnx.Rngs(0),
            **_block_kwargs(**kwargs),
        )
        self.attn_mask = nnx.Variable(jnp.asarray(attn_mask)) if attn_mask is not None else None

    def __call__(self, x: Float[Array, "B T D"]) -> Float[Array, "B T D"]:
        return self.encoder(x, mask=_mask(None if self.attn_mask is None else self.attn_mask[...], x.shape[1]))
