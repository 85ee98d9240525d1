"""Autotuning of the tokamax kernels inside a jitted function, with the original jimm's API.

Why a module of its own: tokamax picks kernel configs (block sizes, ...) per op shape; tuning them once and
reusing the result is worth 10-30% on GPU/TPU attention. The original jimm wrapped this with `autotune`,
`load_autotune_result`, `cached_autotune` and `autotuned_fn`; code written for it runs unchanged here. Ours sits on
tokamax's public API only (`tokamax.autotune`, `tokamax.AutotuningResult`, `tokamax.autotuning.get_bound_args`),
imports tokamax lazily (it is the optional extra `jimm[tokamax]`), and on a device with nothing to tune (CPU, or a
function with no tokamax op) returns an empty result and logs one INFO line instead of raising, so one script
runs on a laptop and on a cluster.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

logger = logging.getLogger(__name__)

__all__ = ["AutotuningResult", "autotune", "autotuned_fn", "cached_autotune", "load_autotune_result"]  # noqa: F822


def _import_tokamax():
    from .tokamax_attention import _import_tokamax as import_for_attention  # tokamax's import guard, written once

    try:
        return import_for_attention()
    except ImportError as err:
        raise ImportError(
            "autotuning needs the optional dependency tokamax: `pip install 'jimm[tokamax]'` "
            "(without it no attention_fn uses tokamax, so there is nothing to tune)"
        ) from err


def __getattr__(name: str) -> Any:
    if name == "AutotuningResult":  # tokamax's own class, resolved on first use so tokamax stays optional
        return _import_tokamax().AutotuningResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _lowered(jitted_fn: Any, *args: Any, **kwargs: Any) -> jax.stages.Lowered:
    """`jitted_fn` lowered for `args`: a `jax.jit` / `nnx.jit` function, or any callable (jitted with nnx.jit)."""
    if not hasattr(jitted_fn, "lower"):
        from flax import nnx

        jitted_fn = nnx.jit(jitted_fn)
    lowered = jitted_fn.lower(*args, **kwargs)
    return getattr(lowered, "lowered", lowered)  # nnx.jit wraps jax's Lowered


TUNABLE_PLATFORMS = ("gpu", "tpu")
"""Where tokamax has kernels with configs to search (Triton, Mosaic GPU, Mosaic TPU); elsewhere (CPU) it runs
only XLA code, which has nothing to tune."""


def _device() -> jax.Device:
    return jax.devices()[0]


def _device_kind() -> str:
    return _device().device_kind


def _bound_args(jitted_fn: Any, *args: Any) -> tuple | None:
    """tokamax's bound arguments of every op in `jitted_fn`, or None on a platform with nothing to tune."""
    tokamax = _import_tokamax()
    if _device().platform not in TUNABLE_PLATFORMS:
        return None
    lowered = _lowered(jitted_fn, *args)
    try:
        return tuple(tokamax.autotuning.get_bound_args(lowered))
    except (AttributeError, RuntimeError) as err:  # tokamax walks jax's MLIR bindings, which change across versions
        raise RuntimeError(
            f"tokamax {tokamax.__version__} could not read the program jax {jax.__version__} lowered ({err}); "
            "install a matching pair (jax 0.10 with tokamax 0.0.12, jax 0.12 with tokamax 0.0.17)"
        ) from err


def _tunable(bound_args: tuple | None) -> tuple:
    """The ops tokamax can tune here; an op whose configs are empty has nothing to search."""
    return tuple(ba for ba in bound_args or () if ba.autotuning_configs)


def _nothing_to_tune(bound_args: tuple | None) -> str:
    if bound_args is None:
        return f"tokamax has no tunable kernels on {_device().platform}"
    if bound_args:
        return f"{len(bound_args)} tokamax op(s), none with configs to search"
    return "no tokamax op in the function"


def _tune(bound_args: tuple | None, **kwargs: Any) -> Any:
    tokamax = _import_tokamax()
    tunable = _tunable(bound_args)
    if not tunable:
        logger.info("autotune: nothing to tune on %s (%s); empty result", _device_kind(), _nothing_to_tune(bound_args))
        return tokamax.AutotuningResult(_device_kind(), ())
    kwargs.setdefault("progress_bar", False)
    return tokamax.autotune(list(tunable), **kwargs)


def _write(result: Any, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(result.dumps())
    os.replace(tmp, path)  # a reader never sees half a file


def autotune(jitted_fn: Any, *sample_args: Any, save_path: str | os.PathLike | None = None, **kwargs: Any) -> Any:
    """Tune every tokamax op in `jitted_fn` for inputs shaped like `sample_args`.

    Use the result as a context manager: `with jimm.autotune(forward, model, images): forward(model, images)`.

    Args:
        jitted_fn: A `jax.jit` / `nnx.jit` function (any callable is jitted with `nnx.jit`).
        *sample_args: Arguments with the shapes, dtypes and shardings of the real calls.
        save_path: Write the result here as JSON (`load_autotune_result` reads it back).
        **kwargs: Passed to `tokamax.autotune` (`all_implementations=`, `progress_bar=`).

    Returns:
        A `tokamax.AutotuningResult`; empty (with one INFO log line) when nothing is tunable on this device.
    """
    result = _tune(_bound_args(jitted_fn, *sample_args), **kwargs)
    if save_path is not None:
        _write(result, save_path)
    return result


def load_autotune_result(path: str | os.PathLike) -> Any:
    """The `AutotuningResult` that `autotune(..., save_path=path)` or `cached_autotune` wrote."""
    tokamax = _import_tokamax()
    return tokamax.AutotuningResult.loads(Path(path).read_text())


def cache_key(bound_args: tuple) -> str:
    """Key of a tuning result: the device kind and every op's autotuning key (shapes, dtypes, op settings)."""
    parts = sorted(str(ba.autotuning_cache_key) for ba in bound_args)
    return hashlib.sha256("|".join([_device_kind(), *parts]).encode()).hexdigest()[:16]


def cached_autotune(jitted_fn: Any, *sample_args: Any, cache_dir: str | os.PathLike, **kwargs: Any) -> Any | None:
    """`autotune`, stored in `cache_dir` under a key of the device kind and the ops' autotuning keys.

    A second call with the same model shapes on the same kind of device reads the file instead of tuning.

    Returns:
        The result, or None when `jitted_fn` has no tunable tokamax op on this device (nothing is written).
    """
    bound_args = _bound_args(jitted_fn, *sample_args)
    tunable = _tunable(bound_args)
    if not tunable:
        logger.info("cached_autotune: nothing to tune on %s (%s)", _device_kind(), _nothing_to_tune(bound_args))
        return None
    path = Path(cache_dir) / f"{cache_key(tunable)}.json"
    if path.exists():
        return load_autotune_result(path)
    result = _tune(tunable, **kwargs)
    _write(result, path)
    return result


def autotuned_fn(
    jitted_fn: Callable[..., Any], *sample_args: Any, cache_dir: str | os.PathLike, **kwargs: Any
) -> Callable[..., Any]:
    """`jitted_fn`, tuned once now (through `cached_autotune`) and run inside the tuned result on every call."""
    result = cached_autotune(jitted_fn, *sample_args, cache_dir=cache_dir, **kwargs)

    @functools.wraps(jitted_fn)
    def run(*args: Any, **kw: Any) -> Any:
        with result if result is not None else contextlib.nullcontext():
            return jitted_fn(*args, **kw)

    run.autotuning_result = result
    return run
