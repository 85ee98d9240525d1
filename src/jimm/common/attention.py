"""Attention kernels behind one signature, and the explicit path that returns attention weights.

Every backend is called as `fn(q, k, v, *, mask=None, bias=None)` with `q, k, v: [B, T, N, H]` and returns
`[B, T, N, H]`; the scale is always 1/sqrt(H). This is the signature `jax.nn.dot_product_attention`,
tokamax and the original jimm's `attention_fn` share, so a custom function written for the original works.
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float


class AttentionFn(Protocol):
    def __call__(
        self,
        query: Float[Array, "B T N H"],
        key: Float[Array, "B S N H"],
        value: Float[Array, "B S N H"],
        *,
        mask: Bool[Array, "B N T S"] | None = None,
        bias: Float[Array, "B N T S"] | None = None,
    ) -> Float[Array, "B T N H"]: ...


def xla_attention(query, key, value, *, mask=None, bias=None, **_: Any):
    """`jax.nn.dot_product_attention` with the portable XLA implementation (the default)."""
    return jax.nn.dot_product_attention(query, key, value, bias=bias, mask=mask, implementation="xla")


def attention_weights(
    query: Float[Array, "B T N H"],
    key: Float[Array, "B S N H"],
    *,
    mask: Bool[Array, "B N T S"] | None = None,
    bias: Float[Array, "B N T S"] | None = None,
) -> Float[Array, "B N T S"]:
    """Softmax attention probabilities, computed explicitly in fp32 (for dropout and attention maps)."""
    scale = query.shape[-1] ** -0.5
    logits = jnp.einsum("BTNH,BSNH->BNTS", query, key).astype(jnp.float32) * scale
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    return jax.nn.softmax(logits, axis=-1).astype(query.dtype)


def apply_attention_weights(
    weights: Float[Array, "B N T S"], value: Float[Array, "B S N H"]
) -> Float[Array, "B T N H"]:
    return jnp.einsum("BNTS,BSNH->BTNH", weights, value)


def tokamax_attention(query, key, value, *, mask=None, bias=None, implementation=None, **_: Any):
    """Attention through tokamax's public `dot_product_attention` (install with `pip install jimm[tokamax]`)."""
    tokamax = _import_tokamax()
    return tokamax.dot_product_attention(query, key, value, bias=bias, mask=mask, implementation=implementation)


def make_tokamax_attention(implementation: str | list[str] | None = None) -> AttentionFn:
    """An `attention_fn` bound to a tokamax backend or an ordered fallback list of backends."""
    _import_tokamax()
    return functools.partial(tokamax_attention, implementation=implementation)


def _import_tokamax():
    try:
        import tokamax
    except ImportError as err:
        raise ImportError(
            "tokamax attention needs the optional dependency tokamax: `pip install 'jimm[tokamax]'`. "
            "Without it, leave `attention_fn=None` to use jax.nn.dot_product_attention."
        ) from err
    return tokamax
