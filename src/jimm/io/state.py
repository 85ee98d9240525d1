"""Checkpoint tensors <-> NNX state through a name table: strict checks, streaming load, tensors to save.

A family's name table is a list of `Slot`s: one checkpoint tensor (its canonical name and shape) and where it
lives in jimm (`param[index]`), with a pair of numpy converters. Converters return *views* where they can
(transposes, reshapes), so loading copies each tensor once, from a reused scratch buffer straight into its
final host buffer (cast on the way), in cache-friendly blocks; tensors whose slot is a contiguous region read
with one `pread` straight into place. Each finished parameter goes onto its device and sharding before the
next one is read, so host memory holds one parameter plus one tensor at a time.

The model is built abstractly once per (builder, arguments) and cached, and its non-parameter state (dropout
RNG streams) is filled without compiling anything: a load costs little beyond reading the bytes.
No model knowledge here: families pass their table and a builder.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import hashlib
import itertools
import mmap
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from ..common.placement import active_mesh, place, tracing

Converter = Callable[[np.ndarray], np.ndarray]
Path_ = tuple[Any, ...]


def identity(a: np.ndarray) -> np.ndarray:
    return a


@dataclasses.dataclass(frozen=True)
class Slot:
    """One checkpoint tensor: where it lives in jimm (`param[index]`) and how to convert it each way."""

    name: str
    param: tuple[str, ...]
    index: tuple[int | slice, ...]
    shape: tuple[int, ...]
    to_jimm: Converter = identity
    to_hf: Converter = identity


class CheckpointMismatchError(ValueError):
    """The checkpoint's tensors do not match the model: lists every missing, unexpected and wrong-shape one."""


def is_float(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.floating) or dtype == np.dtype(ml_dtypes.bfloat16)


def check_tensors(
    table: Sequence[Slot],
    entries: dict[str, tuple[tuple[int, ...], np.dtype]],
    *,
    source: str,
    ignored: Iterable[str] = (),
    hint: str = "",
) -> None:
    """Raise one `CheckpointMismatchError` listing every missing, unexpected, wrong-shape and wrong-dtype tensor."""
    expected = {slot.name for slot in table}
    missing = sorted(expected - entries.keys())
    unexpected = sorted(entries.keys() - expected - set(ignored))
    wrong_shape, wrong_dtype = [], []
    for slot in table:
        if slot.name not in entries:
            continue
        shape, dtype = entries[slot.name]
        if tuple(shape) != slot.shape:
            wrong_shape.append(f"{slot.name}: checkpoint {list(shape)}, model expects {list(slot.shape)}")
        if not is_float(np.dtype(dtype)):
            wrong_dtype.append(f"{slot.name}: {np.dtype(dtype)} (expected a floating-point tensor)")
    if not (missing or unexpected or wrong_shape or wrong_dtype):
        return
    lines = [f"checkpoint {source} does not match the model:"]
    for title, items in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("wrong shape", wrong_shape),
        ("wrong dtype", wrong_dtype),
    ):
        if items:
            lines.append(f"  {len(items)} {title} tensor(s):")
            lines.extend(f"    {item}" for item in items)
    if hint:
        lines.append(hint)
    raise CheckpointMismatchError("\n".join(lines))


def for_layout(table: Sequence[Slot], param_paths: Iterable[Path_], layers: Sequence[Path_]) -> list[Slot]:
    """The table for the model's block layout: stacked `layers.attn...[i, ...]` or per-layer `layers.i.attn...`.

    Tables index stacked parameters under each path in `layers`; an unscanned model (`scan_layers=False`)
    keeps each block's parameters under its own index, so the layer index moves from the array into the path.
    """
    paths = set(param_paths)
    out = []
    for slot in table:
        base = next((p for p in layers if slot.param[: len(p)] == tuple(p)), None)
        if base is not None and slot.param not in paths:
            i, *rest = slot.index
            slot = dataclasses.replace(slot, param=(*base, i, *slot.param[len(base) :]), index=tuple(rest))
        out.append(slot)
    return out


# -- building the model without running its initialisers ---------------------------------------------------------


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


@functools.lru_cache(maxsize=8)
def _abstract_cached(build: Callable[..., nnx.Module], kwargs: tuple) -> tuple[nnx.GraphDef, dict]:
    return _abstract(build, dict(kwargs))


def _abstract(build: Callable[..., nnx.Module], kwargs: dict) -> tuple[nnx.GraphDef, dict]:
    abstract = nnx.eval_shape(lambda: build(rngs=nnx.Rngs(0), **kwargs))
    graphdef, state = nnx.split(abstract)
    return graphdef, dict(nnx.to_flat_state(state))


def abstract_model(build: Callable[..., nnx.Module], **kwargs) -> tuple[nnx.GraphDef, dict[Path_, nnx.Variable]]:
    """`(graphdef, {path: abstract variable})` of `build(rngs=..., **kwargs)`, traced once per arguments.

    Not cached under a mesh (the sharding metadata depends on it) or with unhashable arguments.
    """
    if active_mesh() is None and all(_hashable(v) for v in kwargs.values()):
        return _abstract_cached(build, tuple(sorted(kwargs.items())))
    return _abstract(build, kwargs)


def fresh_rng_state(variables: dict[Path_, nnx.Variable], rngs: nnx.Rngs | None) -> dict[Path_, nnx.Variable]:
    """Concrete values for the abstract model's RNG streams, derived from `rngs` without running a constructor.

    Each stream's key data is a hash of `rngs`' `dropout` stream key (else its default) and the stream's path,
    made in numpy and wrapped as a key: streams are distinct per module and layer and reproducible per seed,
    and nothing is compiled (a threefry split would cost a second of compilation on the first load). Counts
    start at 0. Any other non-parameter state is an internal error: models keep none.
    """
    rngs = rngs if rngs is not None else nnx.Rngs(0)
    stream = rngs["dropout"] if "dropout" in rngs else rngs.default  # noqa: SIM401 (nnx.Rngs.get is no dict get)
    base_key = stream.key[...]
    traced = tracing()  # a model loaded inside `jax.jit`: the seed is a tracer, so keys come from jax ops
    seed = b"" if traced else np.asarray(jax.random.key_data(base_key)).tobytes()
    impl = jax.random.key_impl(base_key)
    out = {}
    for path, variable in variables.items():
        if isinstance(variable, nnx.Param):
            continue
        value = variable.get_value()
        if isinstance(variable, nnx.RngKey) and traced:
            salt = int.from_bytes(hashlib.sha256(repr(path).encode()).digest()[:4], "little") & 0x7FFFFFFF
            key = jax.random.fold_in(base_key, salt)
            out[path] = variable.replace(value=jax.random.split(key, value.shape) if value.shape else key)
        elif isinstance(variable, nnx.RngKey):
            digest = hashlib.sha256(seed + repr(path).encode()).digest()
            generator = np.random.default_rng(np.frombuffer(digest, np.uint32))
            data = generator.integers(0, 2**32, size=(*value.shape, *np.shape(jax.random.key_data(base_key))))
            key = jax.random.wrap_key_data(data.astype(np.uint32), impl=impl)
            if active_mesh() is not None:  # replicated over the mesh, like every unannotated state
                key = jax.device_put(
                    key, jax.sharding.NamedSharding(jax.sharding.get_mesh(), jax.sharding.PartitionSpec())
                )
            out[path] = variable.replace(value=key)
        elif isinstance(variable, nnx.RngCount):
            out[path] = variable.replace(value=place_on_mesh(np.zeros(value.shape, value.dtype), variable))
        else:
            raise RuntimeError(f"internal error: the loader cannot fill state {path} of type {type(variable).__name__}")
    return out


# -- reading parameters ---------------------------------------------------------------------------------------------


def aligned_empty(shape: tuple[int, ...], dtype, alignment: int = 64) -> np.ndarray:
    """An uninitialised array whose data is `alignment`-byte aligned: jax on CPU then adopts it without a copy.

    Large buffers are anonymous mappings populated up front (Linux `MAP_POPULATE`): the loader fills them in
    tiles, and faulting their pages in one by one in that order cost 5-15x the copy itself (a ViT-H/14 MLP
    kernel stack: 3.4 s for 838 MB, 0.7 s populated). The mapping is freed with the last array that uses it.
    """
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if nbytes >= POPULATE_BYTES and _POPULATE_FLAGS is not None:
        buffer = mmap.mmap(-1, nbytes, flags=_POPULATE_FLAGS)  # page-aligned
        return np.frombuffer(buffer, dtype, count=nbytes // np.dtype(dtype).itemsize).reshape(shape)
    raw = np.empty(nbytes + alignment, np.uint8)
    offset = (-raw.ctypes.data) % alignment
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


POPULATE_BYTES = 1 << 20
"""Host buffers at least this large are pre-populated anonymous mappings (see `aligned_empty`)."""

_POPULATE_FLAGS = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE if hasattr(mmap, "MAP_POPULATE") else None


def blocked_copy(dest: np.ndarray, src: np.ndarray, block_bytes: int = 256 << 10) -> None:
    """`dest[...] = src` (with casting) in tiles over the source's and the destination's slowest axes.

    A transposed view copied in one go walks one side with a large stride and runs at a fifth of memory speed;
    slabs along one axis only still scatter each write over thousands of pages (a 26 MB ViT-H/14 MLP kernel
    copied at 190 MB/s, 0.1x memory speed). Square-ish tiles of `block_bytes` keep both sides' runs long and
    their pages few.
    """
    if src.ndim == 0 or (src.flags.c_contiguous and dest.flags.c_contiguous):
        np.copyto(dest, src, casting="unsafe")
        return
    src_axis = int(np.argmax([abs(s) for s in src.strides]))
    dest_axis = int(np.argmax([abs(s) for s in dest.strides]))
    itemsize = max(src.itemsize, dest.itemsize)
    if src_axis == dest_axis:
        row_bytes = itemsize * src.size // max(src.shape[src_axis], 1)
        steps = {src_axis: max(1, block_bytes // max(row_bytes, 1))}
    else:
        rest = itemsize * src.size // max(src.shape[src_axis] * src.shape[dest_axis], 1)
        side = max(1, int(np.sqrt(block_bytes / max(rest, 1))))
        src_step = min(side, src.shape[src_axis])
        dest_step = min(src.shape[dest_axis], max(1, block_bytes // max(rest * src_step, 1)))
        steps = {src_axis: src_step, dest_axis: dest_step}
    ranges = [range(0, src.shape[axis], steps[axis]) if axis in steps else [None] for axis in range(src.ndim)]
    for starts in itertools.product(*ranges):
        window = tuple(
            slice(None) if start is None else slice(start, start + steps[axis]) for axis, start in enumerate(starts)
        )
        np.copyto(dest[window], src[window], casting="unsafe")


def _region(host: np.ndarray, slot: Slot) -> np.ndarray:
    """The view of `host` a slot fills (`host[()]` of a 0-d array is a copy, `host[...]` a view: CLIP's logit scale)."""
    return host[slot.index] if slot.index else host[...]


def _direct_target(host: np.ndarray, slot: Slot, dtype: np.dtype) -> np.ndarray | None:
    """The region of `host` a slot fills, when the tensor's bytes can be read straight into it."""
    if slot.to_jimm is not identity or host.dtype != dtype:
        return None
    region = _region(host, slot)
    return region if region.flags.c_contiguous and region.shape == slot.shape else None


def read_params(checkpoint, table: Sequence[Slot], variables: dict[Path_, nnx.Variable]) -> dict[Path_, nnx.Variable]:
    """Fill each parameter from its slots on host, then place it on its sharding.

    Parameters are filled by a few threads (`pread` and numpy's copies release the GIL), each holding one
    parameter and one tensor at a time. On an accelerator, a stacked `[L, ...]` parameter goes to the device one
    layer at a time and is stacked there, so host memory stays at a few tensors however large the model; on CPU
    the host buffer is the parameter itself (jax adopts it without a copy), so it is filled whole.
    """
    by_param: dict[Path_, list[Slot]] = {}
    for slot in table:
        by_param.setdefault(slot.param, []).append(slot)
    entries = checkpoint.entries()
    largest = max((int(np.prod(entries[s.name][0])) * np.dtype(entries[s.name][1]).itemsize for s in table), default=0)
    local = threading.local()
    traced = tracing()  # inside `jax.jit`: values become constants of the program, filled in this thread
    mesh = jax.sharding.get_mesh() if active_mesh() is not None and not traced else None  # re-entered per worker
    by_layer = STACK_ON_DEVICE if STACK_ON_DEVICE is not None else jax.devices()[0].platform != "cpu"

    def fill_host(shape: tuple[int, ...], dtype, slots: Sequence[Slot]) -> np.ndarray:
        if getattr(local, "scratch", None) is None:
            local.scratch = np.empty(largest, np.uint8)
        host = aligned_empty(shape, dtype)
        for slot in slots:
            stored_shape, stored_dtype = entries[slot.name]
            direct = _direct_target(host, slot, np.dtype(stored_dtype))
            if direct is not None:
                checkpoint.read(slot.name, out=direct)
                continue
            nbytes = int(np.prod(stored_shape)) * np.dtype(stored_dtype).itemsize
            buffer = local.scratch[:nbytes].view(stored_dtype).reshape(stored_shape)
            blocked_copy(_region(host, slot), slot.to_jimm(checkpoint.read(slot.name, out=buffer)))
        return host

    def fill(param: Path_) -> nnx.Variable:
        if mesh is not None and active_mesh() is None:
            with jax.set_mesh(mesh):
                return fill(param)
        variable, slots = variables[param], by_param[param]
        value = variable.get_value()
        layers = _layer_slots(value.shape, slots) if by_layer else None
        if layers is None:
            return variable.replace(value=place_on_mesh(fill_host(value.shape, value.dtype, slots), variable))
        spec = variable.get_metadata().get("out_sharding")
        layer_spec = None if spec is None else tuple(spec)[1:]
        on_device = [place(fill_host(value.shape[1:], value.dtype, layer), layer_spec) for layer in layers]
        return variable.replace(value=jnp.stack(on_device))

    workers = 1 if traced else min(LOAD_THREADS, os.cpu_count() or 1, len(by_param))
    if workers <= 1:
        return {param: fill(param) for param in by_param}
    out, pending = {}, collections.deque()
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="jimm-load") as pool:
        for param in by_param:  # at most `workers` parameters in flight: bounded host memory
            pending.append((param, pool.submit(fill, param)))
            if len(pending) >= workers:
                done, future = pending.popleft()
                out[done] = future.result()
        for done, future in pending:
            out[done] = future.result()
    return out


def _layer_slots(shape: tuple[int, ...], slots: Sequence[Slot]) -> list[list[Slot]] | None:
    """The slots of a stacked parameter grouped by layer (index re-based to one layer), or None if not stacked."""
    if not shape or not all(slot.index and isinstance(slot.index[0], int) for slot in slots):
        return None
    layers: list[list[Slot]] = [[] for _ in range(shape[0])]
    for slot in slots:
        layers[slot.index[0]].append(dataclasses.replace(slot, index=slot.index[1:]))
    return layers if all(layers) else None


STACK_ON_DEVICE: bool | None = None
"""Send stacked parameters to the device layer by layer: None = on accelerators only (see `read_params`)."""


LOAD_THREADS = 4
"""Threads that fill parameters while loading (at most the number of cores)."""


def place_on_mesh(host: np.ndarray, variable: nnx.Variable) -> jax.Array:
    """Put a host array on its variable's sharding under the active mesh, else on the default device."""
    return place(host, variable.get_metadata().get("out_sharding"))


def assemble(
    graphdef: nnx.GraphDef, variables: dict[Path_, nnx.Variable], filled: dict[Path_, nnx.Variable]
) -> nnx.Module:
    """The concrete model from its graphdef once every variable is filled (an internal error otherwise)."""
    left = sorted(".".join(map(str, p)) for p in variables.keys() - filled.keys())
    if left:  # a bug in a name table, never a user error
        raise RuntimeError(f"internal error: state not filled by the loader: {left}")
    return nnx.merge(graphdef, nnx.from_flat_state([(path, filled[path]) for path in variables]))


# -- saving ----------------------------------------------------------------------------------------------------------


def to_host(x: jax.Array) -> np.ndarray:
    """A numpy copy of a (possibly sharded) array; gathers across processes when it is not fully addressable."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def tensors_to_save(model: nnx.Module, table: Sequence[Slot], layers: Sequence[Path_]):
    """`(name, shape, dtype, produce)` for every slot, in table order; `produce()` gathers one tensor."""
    params = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    table = for_layout(table, params, layers)
    for slot in table:
        if slot.param not in params:
            raise RuntimeError(
                f"internal error: model has no parameter {'.'.join(map(str, slot.param))} for {slot.name}"
            )

    def producer(slot: Slot):
        return lambda: slot.to_hf(to_host(params[slot.param].get_value()[slot.index]))

    return [(s.name, s.shape, np.dtype(params[s.param].get_value().dtype), producer(s)) for s in table]


__all__ = [
    "CheckpointMismatchError",
    "Slot",
    "abstract_model",
    "assemble",
    "check_tensors",
    "for_layout",
    "fresh_rng_state",
    "read_params",
    "tensors_to_save",
]
