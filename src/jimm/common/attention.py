"""Attention kernels behind one signature, and the explicit path that returns attention weights.

Every backend is called as `fn(query, key, value, bias=None, mask=None)` with `query, key, value: [B, T, N, H]`
and returns `[B, T, N, H]`; the scale is always 1/sqrt(H). This is the signature `jax.nn.dot_product_attention`,
tokamax and the original jimm's `attention_fn` share, so a custom function written for the original works.

Three families:
- `jax_attention("xla" | "cudnn")`: `jax.nn.dot_product_attention`, no extra dependency. `xla` is the default;
  on CPU it runs the explicit path below (the same maths, heads-major, faster on XLA's CPU backend).
- `make_tokamax_attention([...])` (in `jimm.common.tokamax_attention`, which imports this module): tokamax kernels
  with an ordered fallback list, each call sent to the first backend whose limits allow it and that compiles on
  the target.
- `attention_weights` / `apply_attention_weights`: the explicit XLA path, used for attention dropout and for
  attention maps whatever backend a model runs.

Models call their `attention_fn` through `AttentionCall` (the original jimm's `causal=` contract).
Dropout: only the XLA backends (whose maths *is* the explicit path) can run with attention dropout in
training; asking any other backend for it is an error (see `check_dropout_support`).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

logger = logging.getLogger(__name__)

# Backends whose maths is exactly the explicit XLA path, so attention dropout can run there instead.
DROPOUT_CAPABLE: frozenset[str] = frozenset({"xla"})


class AttentionFn(Protocol):
    def __call__(
        self,
        query: Float[Array, "B T N H"],
        key: Float[Array, "B S N H"],
        value: Float[Array, "B S N H"],
        bias: Float[Array, "B N T S"] | None = None,
        mask: Bool[Array, "B N T S"] | None = None,
        **kwargs: Any,
    ) -> Float[Array, "B T N H"]: ...


# --------------------------------------------------------------------------------------------------------------
# The explicit path.


def attention_weights(
    query: Float[Array, "B T N H"],
    key: Float[Array, "B S N H"],
    *,
    mask: Bool[Array, "B N T S"] | None = None,
    bias: Float[Array, "B N T S"] | None = None,
) -> Float[Array, "B N T S"]:
    """Softmax attention probabilities, computed explicitly in fp32 (for dropout and attention maps).

    Heads-major: q and k are moved to `[B, N, T, H]` before the product. XLA's CPU backend runs the batched
    dot 1.8x faster that way than with the heads axis in the middle (ViT-B/16, 197 tokens).
    """
    scale = query.shape[-1] ** -0.5
    q, k = jnp.swapaxes(query, 1, 2), jnp.swapaxes(key, 1, 2)
    logits = jnp.einsum("BNTH,BNSH->BNTS", q, k, preferred_element_type=jnp.float32) * scale
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    return jax.nn.softmax(logits, axis=-1).astype(query.dtype)


def apply_attention_weights(
    weights: Float[Array, "B N T S"], value: Float[Array, "B S N H"]
) -> Float[Array, "B T N H"]:
    return jnp.swapaxes(jnp.einsum("BNTS,BNSH->BNTH", weights, jnp.swapaxes(value, 1, 2)), 1, 2)


def explicit_attention(query, key, value, *, bias=None, mask=None, is_causal: bool = False) -> jax.Array:
    """Softmax attention with the probabilities materialised: `attention_weights`, then `value`."""
    mask = _with_causal(mask, query.shape[1], key.shape[1]) if is_causal else mask
    return apply_attention_weights(attention_weights(query, key, mask=mask, bias=bias), value)


@jax.custom_vjp
def cpu_attention(
    query: Float[Array, "B T N H"],
    key: Float[Array, "B S N H"],
    value: Float[Array, "B S N H"],
    mask: Bool[Array, "B N T S"] | None = None,
) -> Float[Array, "B T N H"]:
    """`explicit_attention` (no bias) with a hand-written backward, the default on CPU.

    Autodiff of the explicit path keeps both the unnormalised exponentials and the probabilities `[B, N, T, S]`
    for the backward; this keeps the fp32 probabilities only and uses the exact softmax gradient
    `dS = P * (dP - rowsum(P * dP))` (the same maths, less memory traffic).

    Without gradients, large attention matrices are computed one head at a time (`lax.map`): the whole
    `[B, N, T, S]` fp32 matrix goes through memory three times, one head's stays in cache (DINOv2 at 518 px,
    1,370 tokens: 2.5x faster; identical values).
    """
    b, t, n, _ = query.shape
    if b * n * t * key.shape[1] * 4 <= PER_HEAD_BYTES:
        return _cpu_attention_fwd(query, key, value, mask)[0]
    q, k, v = (jnp.swapaxes(x, 1, 2).reshape(b * n, *x.shape[1:2], x.shape[3]) for x in (query, key, value))
    if mask is None:
        out = jax.lax.map(lambda qkv: _heads_major_attention(*qkv, None)[0], (q, k, v))
    else:
        heads_mask = jnp.broadcast_to(mask, (b, n, t, key.shape[1])).reshape(b * n, t, key.shape[1])
        out = jax.lax.map(lambda qkvm: _heads_major_attention(*qkvm)[0], (q, k, v, heads_mask))
    return jnp.swapaxes(out.reshape(b, n, t, -1), 1, 2)


PER_HEAD_BYTES = 16 << 20
"""Attention matrices larger than this (fp32 bytes, all heads) run head by head when no gradient is taken."""


def _heads_major_attention(q, k, v, mask):
    """Softmax attention over the last two axes of heads-major `[..., T, H]` inputs; also the probabilities."""
    logits = jnp.einsum("...TH,...SH->...TS", q, k, preferred_element_type=jnp.float32) * q.shape[-1] ** -0.5
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("...TS,...SH->...TH", probs.astype(q.dtype), v), probs


def _cpu_attention_fwd(query, key, value, mask):
    q, k, v = (jnp.swapaxes(x, 1, 2) for x in (query, key, value))  # heads-major [B, N, T, H]
    out, probs = _heads_major_attention(q, k, v, mask)
    return jnp.swapaxes(out, 1, 2), (q, k, v, probs)


def _cpu_attention_bwd(residuals, d_out):
    q, k, v, probs = residuals
    scale = q.shape[-1] ** -0.5
    d_out = jnp.swapaxes(d_out, 1, 2)
    d_v = jnp.einsum("BNTS,BNTH->BNSH", probs.astype(v.dtype), d_out)
    d_probs = jnp.einsum("BNTH,BNSH->BNTS", d_out, v, preferred_element_type=jnp.float32)
    d_logits = (probs * (d_probs - jnp.sum(probs * d_probs, axis=-1, keepdims=True)) * scale).astype(q.dtype)
    d_q = jnp.einsum("BNTS,BNSH->BNTH", d_logits, k)
    d_k = jnp.einsum("BNTS,BNTH->BNSH", d_logits, q)
    return jnp.swapaxes(d_q, 1, 2), jnp.swapaxes(d_k, 1, 2), jnp.swapaxes(d_v, 1, 2), None


cpu_attention.defvjp(_cpu_attention_fwd, _cpu_attention_bwd)


def reference_attention(
    query, key, value, bias=None, mask=None, *, causal: bool = False, **kwargs: Any
) -> Float[Array, "B T N H"]:
    """The explicit path as an `attention_fn` (what the tests compare every backend against)."""
    is_causal = _flax_kwargs("reference_attention", kwargs) or causal
    return explicit_attention(query, key, value, bias=bias, mask=mask, is_causal=is_causal)


# --------------------------------------------------------------------------------------------------------------
# jax.nn.dot_product_attention (no extra dependency).


@dataclasses.dataclass(frozen=True)
class JaxAttention:
    """`jax.nn.dot_product_attention` with a fixed implementation: `"xla"` (any device) or `"cudnn"` (NVIDIA)."""

    implementation: str = "xla"

    def __post_init__(self):
        if self.implementation not in ("xla", "cudnn"):
            raise ValueError(
                f"jax.nn attention implementation must be 'xla' or 'cudnn', got {self.implementation!r}; "
                "for tokamax kernels use make_tokamax_attention(['mosaic', 'triton', 'xla']) (any list of backends)"
            )

    def __call__(
        self, query, key, value, bias=None, mask=None, *, causal: bool = False, **kwargs: Any
    ) -> Float[Array, "B T N H"]:
        is_causal = _flax_kwargs(repr(self), kwargs) or causal
        platform = compile_platform()
        if self.implementation == "cudnn" and platform != "gpu":
            raise RuntimeError(
                f"jax_attention('cudnn') needs an NVIDIA GPU with cuDNN, but this call compiles for {platform!r}; "
                "use jax_attention('xla') (the default) or make_tokamax_attention(['cudnn', 'xla']) to fall back "
                "automatically (to compile for a GPU from here, trace under jax.default_device(<GPU device>) or a "
                "mesh of GPU devices)"
            )
        if self.implementation == "xla" and platform == "cpu":
            # Same maths as jax.nn's XLA path (fp32 softmax), heads-major: faster on XLA's CPU backend.
            if bias is None:
                mask = _with_causal(mask, query.shape[1], key.shape[1]) if is_causal else mask
                return cpu_attention(query, key, value, mask)
            return explicit_attention(query, key, value, bias=bias, mask=mask, is_causal=is_causal)
        return jax.nn.dot_product_attention(
            query, key, value, bias=bias, mask=mask, is_causal=is_causal, implementation=self.implementation
        )

    def supports_dropout(self, query: jax.Array, key: jax.Array) -> bool:
        return self.implementation in DROPOUT_CAPABLE

    def __repr__(self) -> str:
        return f"jax_attention({self.implementation!r})"


def jax_attention(implementation: str = "xla") -> JaxAttention:
    """An `attention_fn` through `jax.nn.dot_product_attention`; `"cudnn"` is cuDNN flash attention (bf16/fp16)."""
    return JaxAttention(implementation)


xla_attention = JaxAttention("xla")  # the default attention_fn


def check_dropout_support(attention_fn: Callable[..., Any], query: jax.Array, key: jax.Array, rate: float) -> None:
    """Raise unless `attention_fn` may be replaced by the explicit XLA path to apply attention dropout."""
    supports = getattr(attention_fn, "supports_dropout", None)
    if supports is not None and supports(query, key):
        return
    choice = getattr(attention_fn, "choice", None)  # a tokamax list: say what it resolved to
    what = choice(query, key).backend if callable(choice) else None
    name = f"{attention_fn!r} (resolved to {what!r} here)" if what else repr(attention_fn)
    raise ValueError(
        f"attention dropout {rate} in training needs the attention probabilities, which {name} does not expose; "
        "only the XLA path applies attention dropout. Use attention_fn=None (XLA), set the attention dropout "
        "to 0, or call model.eval()"
    )


# --------------------------------------------------------------------------------------------------------------
# How a model calls its attention_fn.


@dataclasses.dataclass(frozen=True)
class AttentionCall:
    """One block's call of its `attention_fn`, adapted once (at construction) to the function's signature.

    The contract (the original jimm's): `fn(q, k, v, mask=mask, causal=causal)`. `causal` says whether the block
    masks future keys (CLIP's text tower); `mask` is the complete mask, True = attend, `[B, 1, T, S]`: the
    causal mask combined with the padding mask when there is one. So a function that honours either keyword
    gets causality right. `causal=False` is passed only to a function that names the parameter, so a
    `**kwargs` wrapper around a mask-only function (e.g. `flax.nnx.dot_product_attention`) keeps working in
    non-causal models. Adaptation for functions that do not take both (named or through `**kwargs`):
    - no `causal`: passed as `is_causal=` when the function has that keyword (`jax.nn`, tokamax, flax);
      otherwise not passed (the mask carries it).
    - no `mask`: the mask is left out when it is only the causal mask and `causal` was passed; a padding mask
      such a function cannot take is an error (it would be silently dropped).
    """

    fn: Callable[..., Any]
    causal: bool = False
    causal_keyword: str | None = "causal"  # the keyword the causal flag goes by, None: the mask alone
    takes_mask: bool = True
    names_causal: bool = True  # the keyword is a named parameter (else only reached through **kwargs)

    @classmethod
    def bind(cls, fn: Callable[..., Any], *, causal: bool = False) -> AttentionCall:
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):  # no introspectable signature: assume the original's contract
            return cls(fn, causal)
        kinds = {p.kind for p in params.values()}
        var_kw = inspect.Parameter.VAR_KEYWORD in kinds
        named = {n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL}
        keyword = "causal" if var_kw or "causal" in named else ("is_causal" if "is_causal" in named else None)
        return cls(fn, causal, keyword, var_kw or "mask" in named, keyword in named)

    def __call__(
        self,
        query: Float[Array, "B T N H"],
        key: Float[Array, "B S N H"],
        value: Float[Array, "B S N H"],
        padding: Bool[Array, "#B #N #T S"] | None = None,
    ) -> Float[Array, "B T N H"]:
        """Attention over `padding` (True = attend; None: every key) and, for a causal block, the causal mask."""
        mask = full_mask(padding, query.shape[1], key.shape[1], causal=self.causal)
        kwargs: dict[str, Any] = {}
        if self.causal_keyword is not None and (self.causal or self.names_causal):
            kwargs[self.causal_keyword] = self.causal
        if mask is not None and self.takes_mask:
            kwargs["mask"] = mask
        elif padding is not None or (self.causal and self.causal_keyword is None):
            what = "a padding mask" if padding is not None else "a causal mask"
            raise TypeError(
                f"attention_fn {self.fn!r} takes no `mask=` keyword, but this block needs {what}: add "
                "`mask=None` (a boolean [B, 1, T, S] array, True = attend) to the function, or `**kwargs`"
            )
        return self.fn(query, key, value, **kwargs)


def full_mask(padding, t: int, s: int, *, causal: bool) -> jax.Array | None:
    """`padding` combined with the causal mask when `causal`, with full `[.., T, S]` axes (what cuDNN needs);
    None when there is neither."""
    if padding is None and not causal:
        return None
    mask = _with_causal(padding, t, s) if causal else padding
    return jnp.broadcast_to(mask, jnp.broadcast_shapes(mask.shape, (1, 1, t, s)))


# --------------------------------------------------------------------------------------------------------------
# Helpers.


def _flax_kwargs(name: str, kwargs: dict[str, Any]) -> bool:
    """Accept what `nnx.MultiHeadAttention` passes an `attention_fn`; refuse anything that would be ignored."""
    known = {
        "dropout_rng",
        "dropout_rate",
        "broadcast_dropout",
        "deterministic",
        "dtype",
        "precision",
        "module",
        "is_causal",
    }
    unknown = set(kwargs) - known
    if unknown:
        raise TypeError(f"{name} got unexpected keyword arguments {sorted(unknown)}")
    if kwargs.get("dropout_rate", 0.0) > 0 and not kwargs.get("deterministic", False):
        raise ValueError(f"{name} cannot apply attention dropout; use the XLA path or deterministic=True")
    if kwargs.get("module") is not None:
        raise ValueError(f"{name} does not return attention weights; use model.attention_maps(x)")
    return bool(kwargs.get("is_causal", False))


def _with_causal(mask, t: int, s: int):
    causal = jnp.tril(jnp.ones((t, s), bool))[None, None]
    return causal if mask is None else mask & causal


def _round_up(n: int, multiple: int) -> int:
    return math.ceil(n / multiple) * multiple


def _sig(x) -> tuple | None:
    return None if x is None else (tuple(x.shape), jnp.dtype(x.dtype).name)


def compile_platform() -> str:
    """The platform the code being traced compiles for: "cpu", "gpu", "tpu", ...

    The default device when one is set (`jax.default_device(...)`, e.g. a compile-only device of
    `jax.experimental.topologies`), else the set mesh's devices, else jax's default backend. Cross-compiling from a
    CPU host for a GPU or TPU mesh therefore gets that target's path, not the CPU one.
    """
    device = jax.config.jax_default_device
    if device is not None:
        platform = device if isinstance(device, str) else device.platform
    elif not (mesh := jax.sharding.get_abstract_mesh()).empty and getattr(mesh, "abstract_device", None) is not None:
        platform = mesh.abstract_device.platform
    else:
        platform = jax.default_backend()
    return "gpu" if platform in ("cuda", "rocm") else platform
