"""How arrays sit on the mesh at run time: the helpers model code calls, per mesh axis type.

Names no mesh axis (specs do, in `sharding.py`). Explicit axes are part of each array's type: kernels are
gathered before a matmul, outputs named (`reshard`, `out_sharding=`). Auto axes are left to the compiler's
propagation, with `with_sharding_constraint` only where a spec asks for something. Mixed meshes get each on its
own axes. With no mesh every helper does nothing. Activations keep the batch sharding their inputs carry.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

Spec = P | None
Axes = str | tuple[str, ...] | None
Entries = tuple[Axes, ...]


def entry_axes(entry: Axes) -> tuple[str, ...]:
    """The mesh axes one spec entry names."""
    if entry is None:
        return ()
    return entry if isinstance(entry, tuple) else (entry,)


def join_axes(*groups: Axes) -> Axes:
    """One spec entry for the concatenation of axis groups: None, one name, or a tuple."""
    names = tuple(a for g in groups for a in entry_axes(g))
    if not names:
        return None
    return names[0] if len(names) == 1 else names


# -- meshes and checks ----------------------------------------------------------------------------------------------


def active_mesh() -> jax.sharding.AbstractMesh | None:
    """The mesh set with `jax.set_mesh`, or None when there is none (works inside `jax.jit` too)."""
    mesh = jax.sharding.get_abstract_mesh()
    return None if mesh.empty else mesh


def explicit_axes(mesh) -> frozenset[str]:
    """The names of `mesh`'s Explicit axes (none without a mesh)."""
    if mesh is None:
        return frozenset()
    return frozenset(n for n, t in zip(mesh.axis_names, mesh.axis_types, strict=True) if t == AxisType.Explicit)


def only_axes(entry: Axes, names: frozenset[str]) -> Axes:
    """`entry` restricted to the axes in `names`."""
    return join_axes(*(a for a in entry_axes(entry) if a in names))


def mesh_text(mesh) -> str:
    return (
        "{" + ", ".join(f"{name!r}: {size}" for name, size in zip(mesh.axis_names, mesh.axis_sizes, strict=True)) + "}"
    )


def check_fits(what: str, shape: tuple[int, ...], spec: Spec, mesh) -> None:
    """Raise a clear error when `spec` does not split `shape` evenly on `mesh` (JAX would fail while tracing)."""
    if spec is None:
        return
    sizes = dict(zip(mesh.axis_names, mesh.axis_sizes, strict=True))
    if len(spec) > len(shape):
        raise ValueError(f"{what} has shape {tuple(shape)} but its sharding spec {spec} has {len(spec)} entries")
    for dim, entry in enumerate(spec):
        if entry is P.UNCONSTRAINED:
            continue
        axes = entry_axes(entry)
        missing = [a for a in axes if a not in sizes]
        if missing:
            raise ValueError(
                f"{what}: sharding spec {spec} names mesh axes {missing} that the mesh {mesh_text(mesh)} lacks"
            )
        parts = math.prod(sizes[a] for a in axes)
        if shape[dim] % parts:
            raise ValueError(
                f"{what} of shape {tuple(shape)} cannot be sharded as {spec} on mesh {mesh_text(mesh)}: "
                f"dimension {dim} ({shape[dim]}) is not divisible by {parts} (the size of {'x'.join(axes)}). "
                f"Use a size that {parts} divides, or a mesh / preset that splits this dimension fewer ways."
            )


def tracing() -> bool:
    """True inside a `jax.jit` / `nnx.jit` trace (every jax operation there is staged, so its result is a tracer)."""
    return isinstance(jnp.zeros((), jnp.int8), jax.core.Tracer)


# -- parameters -----------------------------------------------------------------------------------------------------


def with_sharding(init: Callable[..., Any], spec: Spec) -> Callable[..., Any]:
    """Attach `spec` as the parameter's sharding metadata when one is given; the initializer otherwise.

    flax places the value itself on a mesh of one axis type, and refuses mixed meshes: there it is placed here.
    """
    mesh = active_mesh()
    if spec is None:
        return init
    if mesh is None or len(set(mesh.axis_types)) == 1:
        return nnx.with_partitioning(init, spec)
    return nnx.with_partitioning(lambda *args: place(init(*args), spec), spec, eager_sharding=False)


def place(value, spec) -> jax.Array:
    """A host or single-device value on `spec` under the active mesh (replicated when `spec` is None).

    Each device receives only its own shard, through `make_array_from_callback`, which touches only this
    process's devices: it works when the mesh spans processes (each process holds the same value). Typed
    PRNG keys travel as their key data. Without a mesh the value goes to the default device. Inside a trace
    (a model loaded in `jax.jit`) the value becomes a constant of the program, constrained to `spec`.
    """
    import numpy as np

    mesh = active_mesh()
    spec = None if spec is None else spec if isinstance(spec, P) else P(*spec)  # vmap metadata: a tuple
    if tracing():
        return constrain_to(jnp.asarray(value), spec)
    if mesh is None:
        return jax.device_put(value)
    spec = P() if spec is None else spec
    mesh = jax.sharding.get_mesh()
    if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        data = place(np.asarray(jax.random.key_data(value)), P(*spec, None))
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(value))
    host = np.asarray(value)
    sharding = NamedSharding(mesh, spec)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def constrain_to(x: jax.Array, spec: Spec) -> jax.Array:
    """`x` on `spec`: resharded on the mesh's Explicit axes, constrained on its Auto axes (a mesh of one kind)."""
    mesh = active_mesh()
    if mesh is None or spec is None:
        return x
    explicit = explicit_axes(mesh)
    if explicit:
        target = P(*(only_axes(e, explicit) for e in spec))
        return x if target == spec_of(x) else jax.sharding.reshard(x, target)
    if any(e is not None and e is not P.UNCONSTRAINED for e in spec):
        return jax.lax.with_sharding_constraint(x, spec)
    return x


# -- activations ------------------------------------------------------------------------------------------------------


def spec_of(x: jax.Array) -> P:
    """The PartitionSpec in `x`'s type (Explicit axes only), padded with None to `x.ndim`."""
    sharding = getattr(jax.typeof(x), "sharding", None)
    spec = () if sharding is None or not hasattr(sharding, "spec") else sharding.spec
    return P(*spec, *([None] * (x.ndim - len(spec))))


def shard_input(x: jax.Array, batch: Axes, what: str = "inputs") -> jax.Array:
    """A model input with its batch resharded over `batch` (checked first); unchanged when `batch` is None."""
    mesh = active_mesh()
    if batch is None or mesh is None:
        return x
    spec = P(batch, *([None] * (jnp.ndim(x) - 1)))
    check_fits(what, jnp.shape(x), spec, mesh)
    return constrain_to(jnp.asarray(x), spec)


def activation_spec(x: jax.Array, rest: Entries, explicit: frozenset[str]) -> P:
    """Explicit axes: dimension 0 keeps `x`'s batch sharding, the others take `rest` (minus the batch's axes)."""
    batch = spec_of(x)[0]
    used = set(entry_axes(batch))
    rest = tuple(only_axes(e, explicit - used) for e in rest)
    return P(batch, *rest, *([None] * (x.ndim - 1 - len(rest))))


def constrain(x: jax.Array, *rest: Axes) -> jax.Array:
    """An activation `[B, ...]` with its batch left as it is and the other dimensions on `rest` (None: whole).

    Explicit axes: resharded when its type differs. Auto axes: a sharding constraint only where `rest` names an
    axis (tensor parallel), the batch left to propagation. No mesh: unchanged.
    """
    mesh = active_mesh()
    if mesh is None:
        return x
    explicit = explicit_axes(mesh)
    if explicit:
        target = activation_spec(x, rest, explicit)
        return x if target == spec_of(x) else jax.sharding.reshard(x, target)
    if any(e is not None for e in rest):
        spec = P(P.UNCONSTRAINED, *rest, *([None] * (x.ndim - 1 - len(rest))))
        check_fits("activation", x.shape, spec, mesh)
        return jax.lax.with_sharding_constraint(x, spec)
    return x


def output(x: jax.Array) -> jax.Array:
    """A model output `[B, ...]` (logits, embeddings): its batch as it is, every other dimension whole.

    Explicit axes: as `constrain`. Auto axes: pinned too (propagation may otherwise leave, say, the width of a
    pooled vector split over an FSDP axis), the batch still left to propagation.
    """
    mesh = active_mesh()
    if mesh is None:
        return x
    explicit = explicit_axes(mesh)
    if explicit:
        x = constrain(x)
    if len(explicit) < len(mesh.axis_names):  # Auto axes (all, or beside Explicit ones in a mixed mesh)
        x = jax.lax.with_sharding_constraint(x, P(P.UNCONSTRAINED, *([None] * (x.ndim - 1))))
    return x


def like(value: jax.Array, x: jax.Array) -> jax.Array:
    """A parameter broadcast against the activation `x` (biases, norms, tokens, position tables), gathered on the
    Explicit axes `x` does not use the same way; unchanged otherwise (Auto axes: the compiler gathers)."""
    explicit = explicit_axes(active_mesh())
    if not explicit:
        return value
    current, x_spec = spec_of(value), spec_of(x)
    offset = x.ndim - value.ndim
    target = P(*(e if offset + i >= 0 and e == x_spec[offset + i] else None for i, e in enumerate(current)))
    return value if target == current else jax.sharding.reshard(value, target)


def batch_like(value: jax.Array, x: jax.Array) -> jax.Array:
    """A batch-leading `value` (an expanded token, another tower's output) with `x`'s batch sharding and nothing
    else sharded, on the Explicit axes; unchanged otherwise."""
    explicit = explicit_axes(active_mesh())
    if not explicit:
        return value
    target = P(spec_of(x)[0], *([None] * (value.ndim - 1)))
    return value if target == spec_of(value) else jax.sharding.reshard(value, target)


def gathered(value: jax.Array) -> jax.Array:
    """A parameter whole on every device (Explicit axes); unchanged otherwise. For tables read by a gather."""
    explicit = explicit_axes(active_mesh())
    if not explicit or all(e is None for e in spec_of(value)):
        return value
    return jax.sharding.reshard(value, P())


def take_rows(table: jax.Array, ids: jax.Array) -> jax.Array:
    """`table[ids]` (an embedding lookup): the table gathered whole first on the Explicit axes, the rows sharded
    like `ids`' batch."""
    if not explicit_axes(active_mesh()):
        return jnp.take(table, ids, axis=0)
    out = P(spec_of(ids)[0], *([None] * (ids.ndim + table.ndim - 2)))
    return gathered(table).at[ids].get(out_sharding=out)


def compute_kernel_spec(equation: str, x_spec: P, kernel_spec: P) -> P:
    """The spec a kernel is gathered to before `einsum(equation, x, kernel)`.

    A kernel axis is dropped (gathered) when `x` uses it for a dimension the kernel does not share (the FSDP
    axes, which shard the batch), or when the kernel shards a contracted dimension that `x` shards differently.
    Axes that shard the same contracted dimension on both (tensor parallel) and output-only axes `x` does not
    use are kept.
    """
    lhs, _ = equation.replace(" ", "").split("->")
    x_letters, k_letters = lhs.split(",")
    x_axes = dict(zip(x_letters, (entry_axes(e) for e in x_spec), strict=True))
    x_used_elsewhere = {a for letter, axes in x_axes.items() if letter not in k_letters for a in axes}
    out = []
    for letter, entry in zip(k_letters, kernel_spec, strict=True):
        axes = entry_axes(entry)
        if letter in x_axes:  # shared with x (contracted, or a batch-like dimension both carry)
            keep = axes if axes == x_axes[letter] else ()
        else:
            keep = tuple(a for a in axes if a not in x_used_elsewhere)
        out.append(join_axes(keep))
    return P(*out)


def gather_for(equation: str, x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Gather `kernel` to `compute_kernel_spec` on the Explicit axes; a no-op otherwise or when nothing moves."""
    if not explicit_axes(active_mesh()):
        return kernel
    current = spec_of(kernel)
    target = compute_kernel_spec(equation, spec_of(x), current)
    return kernel if target == current else jax.sharding.reshard(kernel, target)


def einsum(equation: str, x: jax.Array, kernel: jax.Array, *rest: Axes) -> jax.Array:
    """`jnp.einsum(equation, x, kernel)` for a batch-leading `x` under any mesh; the output keeps `x`'s batch
    sharding and puts its other dimensions on `rest` (tensor parallel; None: whole).

    Explicit axes: the kernel's FSDP axes are gathered first and the output sharding is named (an all-reduce when
    a contracted dimension stays sharded). Auto axes: the compiler decides, constrained only where `rest` names an
    axis.
    """
    mesh = active_mesh()
    if mesh is None:
        return jnp.einsum(equation, x, kernel)
    explicit = explicit_axes(mesh)
    if not explicit:
        return constrain(jnp.einsum(equation, x, kernel), *rest)
    kernel = gather_for(equation, x, kernel)
    out_rank = len(equation.replace(" ", "").split("->")[1])
    out = activation_spec(x, rest, explicit)
    out = P(*out[:1], *(tuple(out[1:]) + (None,) * out_rank)[: out_rank - 1])
    return jnp.einsum(equation, x, kernel, out_sharding=out)


def reshape_batched(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """`x.reshape(shape)` that keeps dimension 0 (the batch) and its sharding, splitting or merging only the rest.

    Explicit sharding cannot infer the output sharding of a general reshape, so it is named here.
    """
    if shape[0] != x.shape[0]:
        raise ValueError(f"reshape_batched keeps the batch dimension: {tuple(x.shape)} -> {tuple(shape)}")
    if not explicit_axes(active_mesh()):
        return x.reshape(shape)
    return jax.lax.reshape(x, shape, out_sharding=P(spec_of(x)[0], *([None] * (len(shape) - 1))))


__all__ = [
    "active_mesh",
    "batch_like",
    "check_fits",
    "constrain",
    "einsum",
    "gathered",
    "like",
    "output",
    "place",
    "reshape_batched",
    "shard_input",
    "take_rows",
    "tracing",
    "with_sharding",
]
