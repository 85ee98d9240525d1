"""Attention kernels behind one signature, and the explicit path that returns attention weights.

Every backend is called as `fn(query, key, value, bias=None, mask=None)` with `query, key, value: [B, T, N, H]`
and returns `[B, T, N, H]`; the scale is always 1/sqrt(H). This is the signature `jax.nn.dot_product_attention`,
tokamax and the original jimm's `attention_fn` share, so a custom function written for the original works.

Three families:
- `jax_attention("xla" | "cudnn")`: `jax.nn.dot_product_attention`, no extra dependency. `xla` is the default;
  on CPU it runs the explicit path below (the same maths, heads-major, faster on XLA's CPU backend).
- `make_tokamax_attention([...])`: tokamax kernels with an ordered fallback list, resolved once per
  (shapes, dtype, platform) by tracing each candidate abstractly; `choice(q, k, v)` says which one won and why.
- `attention_weights` / `apply_attention_weights`: the explicit XLA path, used for attention dropout and for
  attention maps whatever backend a model runs.

Padding: only `mosaic_tpu` (splash attention) needs the token axis padded (to a multiple of 128, its smallest
block); padded keys are masked out and padded query rows sliced off. Every other kernel takes any length.
Dropout: only the XLA backends (whose maths *is* the explicit path) can run with attention dropout in
training; asking any other backend for it is an error (see `check_dropout_support`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

logger = logging.getLogger(__name__)

# The spec's backend names, in the order of its table.
BACKENDS: tuple[str, ...] = ("mosaic", "triton", "cudnn", "mosaic_tpu", "xla_chunked", "xla")
# Token-axis multiple a kernel needs from us. Splash attention's blocks are multiples of 128 lanes and must
# divide the sequence; tokamax's GPU kernels and the XLA paths handle ragged lengths themselves.
PAD_MULTIPLE: dict[str, int] = {"mosaic_tpu": 128}
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


def reference_attention(query, key, value, bias=None, mask=None, **kwargs: Any) -> Float[Array, "B T N H"]:
    """The explicit path as an `attention_fn` (what the tests compare every backend against)."""
    is_causal = _flax_kwargs("reference_attention", kwargs)
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
                f"for tokamax kernels use make_tokamax_attention({list(BACKENDS)!r})"
            )

    def __call__(self, query, key, value, bias=None, mask=None, **kwargs: Any) -> Float[Array, "B T N H"]:
        is_causal = _flax_kwargs(repr(self), kwargs)
        if self.implementation == "cudnn" and jax.default_backend() != "gpu":
            raise RuntimeError(
                f"jax_attention('cudnn') needs an NVIDIA GPU with cuDNN, but the default backend is "
                f"{jax.default_backend()!r}; use jax_attention('xla') (the default) or "
                "make_tokamax_attention(['cudnn', 'xla']) to fall back automatically"
            )
        if self.implementation == "xla" and jax.default_backend() == "cpu":
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


# --------------------------------------------------------------------------------------------------------------
# tokamax, with fallbacks resolved once per shape.


@dataclasses.dataclass(frozen=True)
class BackendChoice:
    """Which backend a fallback list resolved to for one (shapes, dtype, platform), and why the others lost."""

    backend: str
    padded_tokens: int | None  # the token count the kernel runs at, when jimm pads; None when it does not
    skipped: tuple[tuple[str, str], ...]  # (backend, reason) for every earlier candidate

    def describe(self) -> str:
        why = "; ".join(f"{name}: {reason}" for name, reason in self.skipped) or "first in the list"
        pad = f", tokens padded to {self.padded_tokens}" if self.padded_tokens else ""
        return f"chose {self.backend!r}{pad} (skipped {why})" if self.skipped else f"chose {self.backend!r}{pad}"


class TokamaxAttention:
    """`attention_fn` over tokamax's public `dot_product_attention`, trying `backends` in order.

    The first backend that traces without `NotImplementedError` for a given (q/k/v shapes, dtype, mask/bias
    shapes, platform) wins; the choice is cached on this object (`choice(...)`, `choices`) and logged at INFO.
    """

    def __init__(self, backends: Sequence[str]):
        self.backends = tuple(backends)
        self._choices: dict[tuple, BackendChoice] = {}
        self._lock = threading.Lock()

    def __eq__(self, other: object) -> bool:  # a pure memo: equal lists behave identically
        return isinstance(other, TokamaxAttention) and other.backends == self.backends

    def __hash__(self) -> int:
        return hash((TokamaxAttention, self.backends))

    def __repr__(self) -> str:
        return f"make_tokamax_attention({list(self.backends)!r})"

    def __deepcopy__(self, memo) -> TokamaxAttention:  # models are copied; the memo (and its lock) is shared
        return self

    def __reduce__(self):
        return make_tokamax_attention, (list(self.backends),)

    @property
    def choices(self) -> dict[tuple, BackendChoice]:
        """Every resolution made so far, keyed by (platform, shapes, dtypes)."""
        return dict(self._choices)

    def choice(self, query, key=None, value=None, bias=None, mask=None, *, is_causal: bool = False) -> BackendChoice:
        """The backend used for these inputs (arrays or `jax.ShapeDtypeStruct`s), resolving it if needed."""
        key = query if key is None else key
        value = key if value is None else value
        cache_key = (
            _platform(),
            *(_sig(x) for x in (query, key, value, bias, mask)),
            is_causal,
        )
        with self._lock:
            found = self._choices.get(cache_key)
        if found is not None:
            return found
        found = self._resolve(query, key, value, bias, mask, is_causal)
        with self._lock:
            self._choices[cache_key] = found
        logger.info(
            "tokamax attention %s for q%s %s on %s: %s",
            list(self.backends),
            tuple(query.shape),
            jnp.dtype(query.dtype).name,
            cache_key[0],
            found.describe(),
        )
        return found

    def supports_dropout(self, query: jax.Array, key: jax.Array) -> bool:
        return self.choice(query, key).backend in DROPOUT_CAPABLE

    def __call__(self, query, key, value, bias=None, mask=None, **kwargs: Any) -> Float[Array, "B T N H"]:
        is_causal = _flax_kwargs(repr(self), kwargs)
        query, key, value = jnp.asarray(query), jnp.asarray(key), jnp.asarray(value)  # tokamax takes jax arrays only
        bias, mask = (None if x is None else jnp.asarray(x) for x in (bias, mask))
        chosen = self.choice(query, key, value, bias, mask, is_causal=is_causal)
        return _run_tokamax(chosen.backend, query, key, value, bias, mask, is_causal)

    def _resolve(self, query, key, value, bias, mask, is_causal) -> BackendChoice:
        abstract = [
            None if x is None else jax.ShapeDtypeStruct(x.shape, x.dtype) for x in (query, key, value, bias, mask)
        ]
        skipped: list[tuple[str, str]] = []
        for name in self.backends:
            reason = _unavailable_reason(name)
            if reason is None:
                try:
                    jax.eval_shape(lambda *a, name=name: _run_tokamax(name, *a, is_causal), *abstract)
                except NotImplementedError as err:
                    reason = str(err) or type(err).__name__
                except ValueError as err:
                    if "Unknown implementation" not in str(err):
                        raise
                    reason = "not available in this tokamax installation"
            if reason is None:
                multiple = PAD_MULTIPLE.get(name, 1)
                padded = _round_up(key.shape[1], multiple)
                return BackendChoice(name, padded if padded != key.shape[1] else None, tuple(skipped))
            skipped.append((name, reason))
        raise RuntimeError(
            f"no attention backend in {list(self.backends)} supports q{tuple(query.shape)} "
            f"{jnp.dtype(query.dtype).name} on {_platform()}: "
            + "; ".join(f"{n}: {r}" for n, r in skipped)
            + ". End the list with 'xla' (runs everywhere)."
        )


def tokamax_attention(
    query, key, value, bias=None, mask=None, *, implementation: str | Sequence[str] | None = None, **kwargs: Any
) -> Float[Array, "B T N H"]:
    """Attention through tokamax (`pip install 'jimm[tokamax]'`), usable directly as an `attention_fn`.

    `implementation` is one backend name or an ordered fallback list; None means
    `["mosaic", "triton", "mosaic_tpu", "xla"]` (the fastest available kernel, XLA everywhere else).
    """
    return make_tokamax_attention(implementation)(query, key, value, bias=bias, mask=mask, **kwargs)


_DEFAULT_TOKAMAX = ("mosaic", "triton", "mosaic_tpu", "xla")
_SHARED: dict[tuple[str, ...], TokamaxAttention] = {}


def make_tokamax_attention(backends: str | Sequence[str] | None = None) -> TokamaxAttention:
    """An `attention_fn` that tries tokamax `backends` in order (e.g. `["mosaic", "triton", "xla"]` on H100).

    Valid names: mosaic (H100/B100 Pallas Mosaic GPU), triton (any NVIDIA GPU), cudnn (cuDNN via jax.nn),
    mosaic_tpu (TPU v5+ splash attention), xla_chunked (memory-efficient chunked XLA), xla (runs everywhere).
    """
    if backends is None:
        backends = _DEFAULT_TOKAMAX
    names = (backends,) if isinstance(backends, str) else tuple(backends)
    if not names:
        raise ValueError(f"make_tokamax_attention needs at least one backend; valid names: {list(BACKENDS)}")
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown attention backend(s) {unknown}; valid names: {list(BACKENDS)}")
    _import_tokamax()
    if names not in _SHARED:  # one resolution cache per list, shared by every model that uses it
        _SHARED[names] = TokamaxAttention(names)
    return _SHARED[names]


def check_dropout_support(attention_fn: Callable[..., Any], query: jax.Array, key: jax.Array, rate: float) -> None:
    """Raise unless `attention_fn` may be replaced by the explicit XLA path to apply attention dropout."""
    supports = getattr(attention_fn, "supports_dropout", None)
    if supports is not None and supports(query, key):
        return
    what = attention_fn.choice(query, key).backend if isinstance(attention_fn, TokamaxAttention) else None
    name = f"{attention_fn!r} (resolved to {what!r} here)" if what else repr(attention_fn)
    raise ValueError(
        f"attention dropout {rate} in training needs the attention probabilities, which {name} does not expose; "
        "only the XLA path applies attention dropout. Use attention_fn=None (XLA), set the attention dropout "
        "to 0, or call model.eval()"
    )


# --------------------------------------------------------------------------------------------------------------
# Helpers.


def pad_tokens(
    query: Float[Array, "B T N H"],
    key: Float[Array, "B S N H"],
    value: Float[Array, "B S N H"],
    mask: Bool[Array, "#B #N #T #S"] | None,
    multiple: int,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array | None]:
    """Pad the token axes up to `multiple`, with a key mask so padded keys get exactly zero weight.

    The mask returned is `[1, 1, T', S']` when no mask was given (one unbatched mask, what splash accepts).
    """
    t, s = query.shape[1], key.shape[1]
    tp, sp = _round_up(t, multiple), _round_up(s, multiple)
    if (tp, sp) == (t, s):
        return query, key, value, mask

    def pad(x, n):
        return jnp.pad(x, ((0, 0), (0, n - x.shape[1]), (0, 0), (0, 0)))

    keep = jnp.broadcast_to(jnp.arange(sp) < s, (1, 1, tp, sp))
    if mask is not None:
        if mask.ndim != 4:
            raise ValueError(f"attention mask must be rank 4 [B, N, T, S] (broadcastable), got {mask.shape}")
        mask = jnp.broadcast_to(mask, (*mask.shape[:2], t, s))
        keep = keep & jnp.pad(mask, ((0, 0), (0, 0), (0, tp - t), (0, sp - s)), constant_values=True)
    return pad(query, tp), pad(key, sp), pad(value, sp), keep


def _run_tokamax(name, query, key, value, bias, mask, is_causal):
    tokamax = _import_tokamax()
    t = query.shape[1]
    multiple = PAD_MULTIPLE.get(name, 1)
    if multiple > 1:
        if bias is not None:
            raise NotImplementedError(f"{name} takes no attention bias")
        query, key, value, mask = pad_tokens(query, key, value, mask, multiple)
    out = tokamax.dot_product_attention(
        query, key, value, bias=bias, mask=mask, is_causal=is_causal, implementation=name
    )
    return out[:, :t] if out.shape[1] != t else out


def _unavailable_reason(name: str) -> str | None:
    """Reasons tokamax would not report as NotImplementedError."""
    kind = jax.devices()[0].device_kind
    if name == "mosaic" and "NVIDIA" not in kind:
        # tokamax maps "mosaic" to its TPU kernel off NVIDIA; keep the spec's meaning (GPU) and say so.
        return f"the NVIDIA Mosaic kernel, not for {kind!r} (use 'mosaic_tpu' on TPU)"
    return None


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


def _platform() -> str:
    device = jax.devices()[0]
    return f"{device.platform}:{device.device_kind}"


def _import_tokamax():
    try:
        import tokamax
    except ImportError as err:
        raise ImportError(
            "tokamax attention needs the optional dependency tokamax: `pip install 'jimm[tokamax]'`. "
            "Without it, leave `attention_fn=None` (jax.nn XLA) or use jimm.common.attention.jax_attention('cudnn')."
        ) from err
    _parse_absl_flags_once()
    return tokamax


def _parse_absl_flags_once() -> None:
    """tokamax reads absl flags, and absl parses all of `sys.argv` on first use; under pytest or any CLI with its
    own flags that is an `UnrecognizedFlagError`. Parse only the flags absl knows (so `--tokamax_*` still work)."""
    from absl import flags

    if flags.FLAGS.is_parsed():
        return
    try:
        flags.FLAGS(list(sys.argv[:1]) + [a for a in sys.argv[1:] if a.startswith("--tokamax")], known_only=True)
    except flags.Error:
        flags.FLAGS.mark_as_parsed()
