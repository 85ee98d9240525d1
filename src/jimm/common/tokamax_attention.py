"""tokamax attention kernels behind jimm's attention signature, each call sent to a backend that compiles there.

`make_tokamax_attention(["mosaic", "triton", "xla"])` is an ordered wish list. For every call shape, dtype,
mode (forward, or training: the backward pass too) and target device, the first backend that passes two checks
wins, once, and one INFO line says which and why the others lost:
1. its documented limits (`Backend.refusal`: platform, dtypes, head dim, bias, even lengths in training), which
   refuse before anything is traced, with the reason;
2. `jax.jit(...).lower(...).compile()` of the kernel at that shape on the target device (the backward too in
   training): a kernel that traces but that the target's compiler refuses (Mosaic GPU at 197 tokens on tokamax
   0.0.12) is "not available" there, not the user's crash. `xla` is never probed: it compiles everywhere.
Training picks its backend lazily: the call is a `jax.custom_vjp` whose primal runs the forward choice and whose
forward-for-gradient rule (traced only under differentiation) resolves and runs the training choice.

Padding: a backend with `pad_multiple > 1` gets the token axes padded up to it; padded keys are masked out (they
get exactly zero weight) and padded query rows sliced off, so results do not change. The target device is
`jax.devices()[0]` unless `target=` names one (a compile-only topology device when cross-compiling).

The original jimm's names live here: `tokamax_attention_fn` (= `tokamax_attention`) and `make_tokamax_attention`
(its `implementation=` keyword too). Public jax / tokamax APIs only; tokamax is imported lazily.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import re
import sys
import threading
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from .attention import DROPOUT_CAPABLE, _flax_kwargs

logger = logging.getLogger("jimm.common.attention")

# The spec's backend names, in the order of its table.
BACKENDS: tuple[str, ...] = ("mosaic", "triton", "cudnn", "mosaic_tpu", "xla_chunked", "xla")
_HALF = frozenset({"bfloat16", "float16"})
# Compute capability by device-kind family, for devices that do not report one (compile-only topologies).
_KIND_CC = {"B200": 10.0, "B100": 10.0, "GB200": 10.0, "H100": 9.0, "H200": 9.0, "H800": 9.0, "H20": 9.0}
_KIND_CC |= {"A100": 8.0, "A800": 8.0, "A10": 8.6, "L4": 8.9, "L40": 8.9, "V100": 7.0}


@dataclasses.dataclass(frozen=True)
class Call:
    """What a backend is chosen for: abstract inputs, the causal flag, the mode and the device it compiles for."""

    query: jax.ShapeDtypeStruct
    key: jax.ShapeDtypeStruct
    value: jax.ShapeDtypeStruct
    bias: jax.ShapeDtypeStruct | None
    mask: jax.ShapeDtypeStruct | None
    is_causal: bool
    training: bool
    device: Any

    @property
    def dtype(self) -> str:
        return jnp.dtype(self.query.dtype).name

    @property
    def vendor(self) -> str:
        """ "nvidia", "tpu", "cpu" or the device's platform name."""
        kind = self.device.device_kind
        return "nvidia" if "NVIDIA" in kind or self.device.platform == "cuda" else self.device.platform

    @property
    def compute_capability(self) -> float | None:
        cc = getattr(self.device, "compute_capability", None)
        if cc is not None:
            return float(cc)
        return next((v for name, v in _KIND_CC.items() if re.search(rf"\b{name}", self.device.device_kind)), None)

    def key_tuple(self) -> tuple:
        sig = lambda x: None if x is None else (tuple(x.shape), jnp.dtype(x.dtype).name)  # noqa: E731
        parts = (self.query, self.key, self.value, self.bias, self.mask)
        return (target_name(self.device), *map(sig, parts), self.is_causal, self.training)


@dataclasses.dataclass(frozen=True)
class Backend:
    """One tokamax implementation and its documented limits (checked before anything is compiled)."""

    name: str
    vendors: frozenset[str] | None = None  # None: any device
    dtypes: frozenset[str] | None = None  # None: any float dtype
    pad_multiple: int = 1  # token axes padded up to a multiple of this
    head_dim_multiple: int = 1
    max_head_dim: int | None = None
    min_compute_capability: float | None = None
    takes_bias: bool = True
    even_lengths_in_training: bool = False
    full_mask: bool = False  # a mask must have full [.., T, S] axes
    unbatched_mask: bool = False  # a mask must be the same for every example and head ([1, 1, T, S])
    # Without a caller's mask, exclude padded keys by length (`key_value_seq_lengths`) rather than a boolean mask
    # (Mosaic GPU's backward copies a bool mask with byte strides that must be multiples of 16).
    pad_by_length: bool = False
    probe: bool = True  # lower + compile at the call's shape before choosing it

    def refusal(self, call: Call) -> str | None:
        """Why the documented limits rule this call out, or None."""
        kind, h = call.device.device_kind, call.query.shape[-1]
        t, s = call.query.shape[1], call.key.shape[1]
        if self.vendors is not None and call.vendor not in self.vendors:
            return f"needs {' or '.join(sorted(self.vendors))} hardware, not {kind!r}"
        cc = call.compute_capability
        if self.min_compute_capability and cc is not None and cc < self.min_compute_capability:
            return f"needs compute capability >= {self.min_compute_capability}, {kind!r} has {cc}"
        if self.dtypes is not None and call.dtype not in self.dtypes:
            return f"takes {'/'.join(sorted(self.dtypes))} only, not {call.dtype}"
        if h % self.head_dim_multiple or (self.max_head_dim and h > self.max_head_dim):
            return (
                f"needs a head dim that is a multiple of {self.head_dim_multiple} and <= {self.max_head_dim}, not {h}"
            )
        if call.bias is not None and not self.takes_bias:
            return "takes no attention bias"
        if self.unbatched_mask and call.mask is not None and math.prod(call.mask.shape[:-2]) != 1:
            return f"takes one mask for the whole batch ([1, 1, T, S]), not {tuple(call.mask.shape)}"
        if call.training and self.even_lengths_in_training and (t % 2 or s % 2):
            return f"cannot train at odd sequence lengths (q {t}, kv {s})"
        if call.training and call.bias is not None and self.name == "cudnn" and call.query.shape[0] != 1:
            return "computes bias gradients at batch 1 only"
        return None

    def run(self, query, key, value, bias, mask, is_causal: bool) -> jax.Array:
        """The kernel on inputs padded to `pad_multiple`; the output at the caller's length."""
        t, s = query.shape[1], key.shape[1]
        lengths = None
        if self.pad_multiple > 1 and self.pad_by_length and mask is None:
            query, key, value, _ = pad_tokens(query, key, value, None, self.pad_multiple)
            lengths = None if key.shape[1] == s else jnp.full((key.shape[0],), s, jnp.int32)
        elif self.pad_multiple > 1:
            query, key, value, mask = pad_tokens(query, key, value, mask, self.pad_multiple)
            if bias is not None:
                tp, sp = query.shape[1], key.shape[1]
                bias = jnp.pad(bias, ((0, 0), (0, 0), (0, tp - bias.shape[-2]), (0, sp - bias.shape[-1])))
        if self.full_mask and mask is not None:
            mask = jnp.broadcast_to(mask, jnp.broadcast_shapes(mask.shape, (1, 1, query.shape[1], key.shape[1])))
        out = self.kernel(query, key, value, bias, mask, is_causal, key_lengths=lengths)
        return out[:, :t] if out.shape[1] != t else out

    def kernel(self, query, key, value, bias, mask, is_causal: bool, key_lengths=None) -> jax.Array:
        return _import_tokamax().dot_product_attention(
            query,
            key,
            value,
            bias=bias,
            mask=mask,
            is_causal=is_causal,
            key_value_seq_lengths=key_lengths,
            implementation=self.name,
        )


NVIDIA = frozenset({"nvidia"})
BACKEND_TABLE: dict[str, Backend] = {
    # Mosaic GPU (Hopper and later): bf16/f16; tokamax 0.0.12's kernel needs the token axis tiled by 8.
    "mosaic": Backend("mosaic", NVIDIA, _HALF, pad_multiple=8, min_compute_capability=9.0, pad_by_length=True),
    "triton": Backend("triton", NVIDIA, min_compute_capability=8.0),
    # cuDNN via jax.nn: fp16/bf16, head dim a multiple of 8 up to 256 (Hopper), full masks, even lengths to train.
    "cudnn": Backend(
        "cudnn", NVIDIA, _HALF, head_dim_multiple=8, max_head_dim=256, even_lengths_in_training=True, full_mask=True
    ),
    # Splash attention (TPU v5+): blocks of 128 tokens that must divide the sequence; no bias; one mask per batch.
    "mosaic_tpu": Backend("mosaic_tpu", frozenset({"tpu"}), pad_multiple=128, takes_bias=False, unbatched_mask=True),
    "xla_chunked": Backend("xla_chunked"),
    "xla": Backend("xla", probe=False),
}


@dataclasses.dataclass(frozen=True)
class BackendChoice:
    """Which backend a fallback list resolved to for one call, and why the earlier ones lost."""

    backend: str
    padded_tokens: int | None  # the token count the kernel runs at, when jimm pads; None when it does not
    skipped: tuple[tuple[str, str], ...]  # (backend, reason) for every earlier candidate

    def describe(self) -> str:
        why = "; ".join(f"{name}: {reason}" for name, reason in self.skipped)
        pad = f", tokens padded to {self.padded_tokens}" if self.padded_tokens else ""
        return f"chose {self.backend!r}{pad} (skipped {why})" if self.skipped else f"chose {self.backend!r}{pad}"


class TokamaxAttention:
    """`attention_fn` over tokamax's public `dot_product_attention`, trying `backends` in order (module docstring).

    `choice(...)` / `choices` say what was chosen and why; `target` is the device the kernels compile for.
    """

    def __init__(self, backends: Sequence[str], target: Any = None):
        self.backends = tuple(backends)
        self.target = target
        self._choices: dict[tuple, BackendChoice] = {}
        self._lock = threading.Lock()

    def __eq__(self, other: object) -> bool:  # a pure memo: equal lists behave identically
        return isinstance(other, TokamaxAttention) and (other.backends, other.target) == (self.backends, self.target)

    def __hash__(self) -> int:
        return hash((TokamaxAttention, self.backends, self.target))

    def __repr__(self) -> str:
        target = "" if self.target is None else f", target={target_name(self.target)!r}"
        return f"make_tokamax_attention({list(self.backends)!r}{target})"

    def __deepcopy__(self, memo) -> TokamaxAttention:  # models are copied; the memo (and its lock) is shared
        return self

    def __reduce__(self):
        return _shared, (self.backends, self.target)

    @property
    def choices(self) -> dict[tuple, BackendChoice]:
        """Every resolution made so far, keyed by (target, shapes and dtypes, causal, training)."""
        return dict(self._choices)

    def choice(
        self, query, key=None, value=None, bias=None, mask=None, *, is_causal: bool = False, training: bool = False
    ) -> BackendChoice:
        """The backend used for these inputs (arrays or `jax.ShapeDtypeStruct`s), resolving it if needed."""
        key = query if key is None else key
        value = key if value is None else value
        abstract = (
            None if x is None else jax.ShapeDtypeStruct(x.shape, x.dtype) for x in (query, key, value, bias, mask)
        )
        call = Call(*abstract, is_causal=is_causal, training=training, device=self.target or jax.devices()[0])
        cache_key = call.key_tuple()
        with self._lock:
            found = self._choices.get(cache_key)
        if found is None:
            found = self._resolve(call)
            with self._lock:
                self._choices[cache_key] = found
            logger.info(
                "tokamax attention %s for q%s %s %s on %s: %s",
                list(self.backends),
                tuple(call.query.shape),
                call.dtype,
                "training" if training else "forward",
                cache_key[0],
                found.describe(),
            )
        return found

    def supports_dropout(self, query: jax.Array, key: jax.Array) -> bool:
        return self.choice(query, key).backend in DROPOUT_CAPABLE

    def __call__(
        self, query, key, value, bias=None, mask=None, *, causal: bool = False, **kwargs: Any
    ) -> Float[Array, "B T N H"]:
        is_causal = _flax_kwargs(repr(self), kwargs) or causal
        query, key, value = jnp.asarray(query), jnp.asarray(key), jnp.asarray(value)  # tokamax takes jax arrays only
        bias, mask = (None if x is None else jnp.asarray(x) for x in (bias, mask))
        forward = BACKEND_TABLE[self.choice(query, key, value, bias, mask, is_causal=is_causal).backend]

        def run(backend: Backend, *args):
            with self._on_target():
                return backend.run(*args, is_causal)

        @jax.custom_vjp
        def attend(q, k, v, b, m):
            return run(forward, q, k, v, b, m)

        def attend_fwd(q, k, v, b, m):  # traced only under differentiation: the training choice
            name = self.choice(q, k, v, b, m, is_causal=is_causal, training=True).backend
            out, vjp = jax.vjp(lambda q, k, v, b: run(BACKEND_TABLE[name], q, k, v, b, m), q, k, v, b)
            return out, vjp

        def attend_bwd(vjp, d_out):
            with self._on_target():
                return (*vjp(d_out), None)

        attend.defvjp(attend_fwd, attend_bwd)
        return attend(query, key, value, bias, mask)

    def _on_target(self):
        """tokamax and Pallas check kernels against the default device: point it at the target when one is named.
        (To cross-compile a model, lower it under `jax.default_device(target)` or a mesh of target devices too.)"""
        return jax.default_device(self.target) if self.target is not None else contextlib.nullcontext()

    def _resolve(self, call: Call) -> BackendChoice:
        skipped: list[tuple[str, str]] = []
        for name in self.backends:
            backend = BACKEND_TABLE[name]
            reason = backend.refusal(call) or (self._compile_refusal(backend, call) if backend.probe else None)
            if reason is None:
                padded = _round_up(call.key.shape[1], backend.pad_multiple)
                return BackendChoice(name, padded if padded != call.key.shape[1] else None, tuple(skipped))
            skipped.append((name, reason))
        raise RuntimeError(
            f"no attention backend in {list(self.backends)} supports q{tuple(call.query.shape)} {call.dtype} "
            f"({'training' if call.training else 'forward'}) on {target_name(call.device)}: "
            + "; ".join(f"{n}: {r}" for n, r in skipped)
            + ". End the list with 'xla' (runs everywhere)."
        )

    def _compile_refusal(self, backend: Backend, call: Call) -> str | None:
        """Lower and compile the kernel (and its backward, in training) at the call's shape on the target."""
        # On the target device; under a mesh, where the mesh puts it (naming another device would conflict).
        sharding = jax.sharding.SingleDeviceSharding(call.device) if jax.sharding.get_abstract_mesh().empty else None
        inputs = [call.query, call.key, call.value, call.bias, call.mask]
        specs = [None if x is None else jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding) for x in inputs]

        def forward(q, k, v, b, m):
            return backend.run(q, k, v, b, m, call.is_causal)

        def training(q, k, v, b, m):
            out, vjp = jax.vjp(lambda q, k, v, b: forward(q, k, v, b, m), q, k, v, b)
            return vjp(jnp.ones_like(out))

        try:
            with self._on_target():  # Pallas reads the device kind when lowering, too
                jax.jit(training if call.training else forward).lower(*specs).compile()
        except NotImplementedError as err:
            return str(err) or "not implemented here"
        except ValueError as err:
            if "Unknown implementation" in str(err):
                return "not available in this tokamax installation"
            return f"refused at compile time: {_first_line(err)}"
        except Exception as err:  # the target's compiler said no (Mosaic, Triton, cuDNN, XLA errors)
            return f"refused at compile time: {_first_line(err)}"
        return None


def tokamax_attention(
    query,
    key,
    value,
    bias=None,
    mask=None,
    *,
    causal: bool = False,
    implementation: str | Sequence[str] | None = None,
    **kwargs: Any,
) -> Float[Array, "B T N H"]:
    """Attention through tokamax (`pip install 'jimm[tokamax]'`), usable directly as an `attention_fn`.

    The original jimm's `tokamax_attention_fn` signature: `causal=True` masks future keys; `implementation` is
    one backend name or an ordered fallback list; None means `["mosaic", "triton", "mosaic_tpu", "xla"]` (the
    fastest available kernel, XLA everywhere else).
    """
    return make_tokamax_attention(implementation)(query, key, value, bias=bias, mask=mask, causal=causal, **kwargs)


tokamax_attention_fn = tokamax_attention  # the original jimm's name

_DEFAULT_TOKAMAX = ("mosaic", "triton", "mosaic_tpu", "xla")
_SHARED: dict[tuple, TokamaxAttention] = {}


def make_tokamax_attention(
    backends: str | Sequence[str] | None = None,
    *,
    implementation: str | Sequence[str] | None = None,
    target: Any = None,
) -> TokamaxAttention:
    """An `attention_fn` that tries tokamax `backends` in order (e.g. `["mosaic", "triton", "xla"]` on H100).

    `implementation=` is the original jimm's name for the same argument (pass one or the other). `target` is the
    device kernels are checked and compiled for (default: `jax.devices()[0]`). Valid names: mosaic (H100/B100
    Pallas Mosaic GPU), triton (any NVIDIA GPU), cudnn (cuDNN via jax.nn), mosaic_tpu (TPU v5+ splash
    attention), xla_chunked (memory-efficient chunked XLA), xla (runs everywhere).
    """
    if backends is not None and implementation is not None:
        raise TypeError("make_tokamax_attention takes the backend list once: `backends` or `implementation`, not both")
    backends = backends if backends is not None else implementation
    if backends is None:
        backends = _DEFAULT_TOKAMAX
    names = (backends,) if isinstance(backends, str) else tuple(backends)
    if not names:
        raise ValueError(f"make_tokamax_attention needs at least one backend; valid names: {list(BACKENDS)}")
    unknown = [n for n in names if n not in BACKEND_TABLE]
    if unknown:
        raise ValueError(f"unknown attention backend(s) {unknown}; valid names: {list(BACKENDS)}")
    _import_tokamax()
    return _shared(names, target)


def _shared(names: tuple[str, ...], target: Any) -> TokamaxAttention:
    """One resolution cache per (list, target), shared by every model that uses it."""
    if (names, target) not in _SHARED:
        _SHARED[names, target] = TokamaxAttention(names, target)
    return _SHARED[names, target]


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


def target_name(device) -> str:
    return f"{device.platform}:{device.device_kind}"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}"


def _round_up(n: int, multiple: int) -> int:
    return math.ceil(n / multiple) * multiple


def _import_tokamax():
    try:
        import tokamax
    except ImportError as err:
        raise ImportError(
            "tokamax attention needs the optional dependency tokamax: `pip install 'jimm[tokamax]'`. "
            "Without it, leave `attention_fn=None` (jax.nn XLA) or use jimm.common.attention.jax_attention('cudnn')."
        ) from err
    _check_pairing()
    _parse_absl_flags_once()
    return tokamax


def _check_pairing() -> None:
    """tokamax 0.0.12 imports but fails on first use with jax >= 0.11 (`jax.core.is_concrete` is gone)."""
    from importlib.metadata import version

    def parts(text: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", text)[:3])

    tokamax_version, jax_version = version("tokamax"), jax.__version__
    if parts(tokamax_version) < (0, 0, 13) and parts(jax_version) >= (0, 11):
        raise ImportError(
            f"tokamax {tokamax_version} does not work with jax {jax_version} (it needs jax < 0.11); on Python >= 3.12 "
            "install `pip install 'tokamax>=0.0.17'`, or keep jax 0.10 (`pip install 'jimm[tokamax]'` picks the pair)"
        )


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
