"""Sharding specs for ViT parameters and activations: the only module that names mesh axes.

A `ShardingSpec` is one frozen dataclass of `PartitionSpec`s named by role and dimension letters
(B batch, T tokens, D width, N heads, H head dim, F MLP hidden, C classes, P patch pixels). Parameter specs
describe one layer; the scanned stack prepends the layer axis itself (`nnx.vmap` transform_metadata), so
optimizer state built from the parameters carries the same stacked specs. Presets are functions of the
user's axis names, so no model code ever spells an axis.

How a spec is used under an explicit mesh (`AxisType.Explicit`): a parameter is *stored* on its spec, and a
matmul first gathers every kernel axis that the activation uses for its batch (the FSDP all-gather, whose
transpose is the gradient reduce-scatter), keeping the axes that shard heads or MLP width (tensor
parallel); a contraction over a tensor-parallel dimension names its output sharding (an all-reduce).

With no mesh set (`jax.set_mesh`) every spec is ignored and the model runs unsharded: the specs are hints
for a mesh, never a requirement.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
from flax import nnx
from jax.sharding import PartitionSpec as P

Spec = P | None
Axes = str | tuple[str, ...] | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardingSpec:
    """Partition specs for every ViT parameter (per layer) and the activations between layers.

    `None` means "no annotation": the array is left to the compiler (replicated when created).
    """

    # activations
    act_btd: Spec = None  # residual stream [B, T, D]; its first entry is the batch sharding of the images
    act_btf: Spec = None  # MLP hidden [B, T, F]
    act_btnh: Spec = None  # q, k, v and attention output [B, T, N, H]
    act_bc: Spec = None  # logits [B, C]
    # embeddings
    patch_kernel: Spec = None  # [P, P, C_in, D]
    patch_bias: Spec = None  # [D]
    cls_token: Spec = None  # [1, 1, D]
    pos_embed: Spec = None  # [1, T, D]
    # one encoder block
    qkv_kernel: Spec = None  # [D, 3, N, H]
    qkv_bias: Spec = None  # [3, N, H]
    attn_out_kernel: Spec = None  # [N, H, D]
    attn_out_bias: Spec = None  # [D]
    mlp_in_kernel: Spec = None  # [D, F]
    mlp_in_bias: Spec = None  # [F]
    mlp_out_kernel: Spec = None  # [F, D]
    mlp_out_bias: Spec = None  # [D]
    norm: Spec = None  # LayerNorm scale and bias [D]
    # classifier head (names kept from the original jimm)
    proj_kernel: Spec = None  # [D, C]
    proj_bias: Spec = None  # [C]

    def axis_names(self) -> set[str]:
        """Every mesh axis any field names."""
        names: set[str] = set()
        for field in dataclasses.fields(self):
            for entry in getattr(self, field.name) or ():
                names.update(_entry_axes(entry))
        return names

    def batch_spec(self, ndim: int) -> Spec:
        """The batch-only spec for an input of `ndim` dimensions (images `[B, H, W, C]`), from `act_btd`."""
        if self.act_btd is None:
            return None
        return P(self.act_btd[0], *([None] * (ndim - 1)))

    def check_shapes(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Raise before building when a field's spec does not fit its array (`{field name: shape}`)."""
        mesh = active_mesh()
        if mesh is None:
            return
        for name, shape in shapes.items():
            check_fits(f"parameter `{name}`", shape, getattr(self, name), mesh)


class NoSharding(ShardingSpec):
    """Disables sharding: every parameter and activation is left unannotated."""

    def __init__(self) -> None:
        super().__init__()


def _entry_axes(entry: Axes) -> tuple[str, ...]:
    if entry is None:
        return ()
    return entry if isinstance(entry, tuple) else (entry,)


def _axes(*groups: Axes) -> Axes:
    """One PartitionSpec entry for the concatenation of axis groups: None, one name, or a tuple."""
    names = tuple(a for g in groups for a in _entry_axes(g))
    if not names:
        return None
    return names[0] if len(names) == 1 else names


def _preset(
    batch: Axes, *, store: Axes = None, tp: Axes = None, store_patch: Axes = None, store_out: Axes = None
) -> ShardingSpec:
    return ShardingSpec(
        act_btd=P(batch, None, None),
        act_btf=P(batch, None, tp),
        act_btnh=P(batch, None, tp, None),
        act_bc=P(batch, None),
        patch_kernel=P(None, None, None, store_patch),
        patch_bias=P(None),
        cls_token=P(None, None, None),
        pos_embed=P(None, None, None),
        qkv_kernel=P(store, None, tp, None),
        qkv_bias=P(None, tp, None),
        attn_out_kernel=P(tp, store_out, None) if tp is None else P(tp, None, store_out),
        attn_out_bias=P(None),
        mlp_in_kernel=P(store, tp),
        mlp_in_bias=P(tp),
        mlp_out_kernel=P(store, None) if tp is None else P(tp, store),
        mlp_out_bias=P(None),
        norm=P(None),
        proj_kernel=P(store, None),
        proj_bias=P(None),
    )


def fsdp_sharding(*, data: Axes = "data", fsdp: str | tuple[str, ...] = "fsdp") -> ShardingSpec:
    """FSDP: kernels stored sharded on their contracting dimension over `fsdp`; batch over `data` + `fsdp`.

    The attention output kernel `[N, H, D]` is sharded on H (12 heads do not split 8 ways; 64-wide heads do) and
    the patch kernel `[P, P, C, D]` on D (16x16x3 patches do not always split). Activations carry only the batch
    sharding. `data=None` for a mesh without a data axis.
    """
    return _preset(_axes(data, fsdp), store=fsdp, store_patch=fsdp, store_out=fsdp)


def data_parallel_sharding(*, data: Axes = "data") -> ShardingSpec:
    """Pure data parallel: parameters replicated, batch over `data` (one axis or a tuple of axes)."""
    return _preset(_axes(data))


def fsdp_tp_sharding(*, data: Axes = "data", fsdp: Axes = "fsdp", tp: str | tuple[str, ...] = "tp") -> ShardingSpec:
    """FSDP + tensor parallel: heads (N) and MLP width (F) over `tp`, kernels' D dimension over `fsdp`.

    Batch is over `data` + `fsdp`; q/k/v, attention outputs and the MLP hidden activations are also sharded over
    `tp` (Megatron-style: one all-reduce after the attention output and one after the MLP). Needs `N` and `F`
    divisible by the `tp` size. `fsdp=None` gives pure tensor parallel (with data parallel over `data`).
    """
    return _preset(_axes(data, fsdp), store=fsdp, tp=tp, store_patch=fsdp, store_out=fsdp)


def replicated_sharding() -> ShardingSpec:
    """Everything replicated on every device (parameters and activations): each device computes the whole batch."""
    return _preset(None)


ViTSharding: ShardingSpec = fsdp_sharding()
"""The spec's default: FSDP over an axis named "fsdp", batch over ("data", "fsdp")."""


def active_mesh() -> jax.sharding.AbstractMesh | None:
    """The mesh set with `jax.set_mesh`, or None when there is none."""
    mesh = jax.sharding.get_abstract_mesh()
    return None if mesh.empty else mesh


def _mesh_text(mesh) -> str:
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
        axes = _entry_axes(entry)
        missing = [a for a in axes if a not in sizes]
        if missing:
            raise ValueError(
                f"{what}: sharding spec {spec} names mesh axes {missing} that the mesh {_mesh_text(mesh)} lacks"
            )
        parts = math.prod(sizes[a] for a in axes)
        if shape[dim] % parts:
            raise ValueError(
                f"{what} of shape {tuple(shape)} cannot be sharded as {spec} on mesh {_mesh_text(mesh)}: "
                f"dimension {dim} ({shape[dim]}) is not divisible by {parts} (the size of {'x'.join(axes)}). "
                f"Use a size that {parts} divides, or a mesh / preset that splits this dimension fewer ways."
            )


def resolve_sharding(sharding: ShardingSpec | None) -> ShardingSpec:
    """The spec to build with: `NoSharding` without a mesh; otherwise `sharding`, checked against the mesh."""
    mesh = active_mesh()
    if sharding is None or mesh is None:
        return NoSharding()
    missing = sorted(sharding.axis_names() - set(mesh.axis_names))
    if missing:
        raise ValueError(
            f"sharding spec names mesh axes {missing} that the active mesh lacks (mesh axes: {list(mesh.axis_names)}). "
            "Build the spec with your axis names, e.g. `jimm.common.sharding.fsdp_sharding(data=..., fsdp=...)`, "
            "or pass `sharding=jimm.common.sharding.NoSharding()`."
        )
    return sharding


def with_sharding(init: Callable[..., Any], spec: Spec) -> Callable[..., Any]:
    """Attach `spec` as the parameter's sharding metadata when one is given; the initializer otherwise."""
    return init if spec is None else nnx.with_partitioning(init, spec)


def place(value, spec) -> jax.Array:
    """A host or single-device value on `spec` under the active mesh (replicated when `spec` is None).

    Each device receives only its own shard, through `make_array_from_callback`, which touches only this
    process's devices: it works when the mesh spans processes (each process holds the same value). Typed
    PRNG keys travel as their key data. Without a mesh the value goes to the default device.
    """
    import numpy as np

    if active_mesh() is None:
        return jax.device_put(value)
    spec = P() if spec is None else spec if isinstance(spec, P) else P(*spec)  # vmap metadata: a tuple
    mesh = jax.sharding.get_mesh()
    if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        data = place(np.asarray(jax.random.key_data(value)), P(*spec, None))
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(value))
    host = np.asarray(value)
    sharding = jax.sharding.NamedSharding(mesh, spec)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _explicit(mesh) -> bool:
    return mesh is not None and all(t == jax.sharding.AxisType.Explicit for t in mesh.axis_types)


def shard(x: jax.Array, spec: Spec, name: str = "activation") -> jax.Array:
    """Reshard an activation to `spec` under a mesh (checked first, naming `name`); a no-op without a mesh or spec."""
    mesh = active_mesh()
    if spec is None or mesh is None:
        return x
    check_fits(name, x.shape, spec, mesh)
    if _explicit(mesh):
        return jax.sharding.reshard(x, spec)
    return jax.lax.with_sharding_constraint(x, spec)


def spec_of(x: jax.Array) -> P:
    """The PartitionSpec in `x`'s type under an explicit mesh (all-None padded to `x.ndim`)."""
    spec = jax.typeof(x).sharding.spec
    return P(*spec, *([None] * (x.ndim - len(spec))))


def compute_kernel_spec(equation: str, x_spec: P, kernel_spec: P) -> P:
    """The spec a kernel is gathered to before `einsum(equation, x, kernel)`.

    A kernel axis is dropped (gathered) when `x` uses it for a dimension the kernel does not share (the FSDP
    axes, which shard the batch), or when the kernel shards a contracted dimension that `x` shards differently.
    Axes that shard the same contracted dimension on both (tensor parallel) and output-only axes `x` does not
    use are kept.
    """
    lhs, _ = equation.replace(" ", "").split("->")
    x_letters, k_letters = lhs.split(",")
    x_axes = dict(zip(x_letters, (_entry_axes(e) for e in x_spec), strict=True))
    x_used_elsewhere = {a for letter, axes in x_axes.items() if letter not in k_letters for a in axes}
    out = []
    for letter, entry in zip(k_letters, kernel_spec, strict=True):
        axes = _entry_axes(entry)
        if letter in x_axes:  # shared with x (contracted, or a batch-like dimension both carry)
            keep = axes if axes == x_axes[letter] else ()
        else:
            keep = tuple(a for a in axes if a not in x_used_elsewhere)
        out.append(_axes(keep))
    return P(*out)


def gather_for(equation: str, x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Gather `kernel` to `compute_kernel_spec` under an explicit mesh; a no-op otherwise or when nothing moves."""
    if not _explicit(active_mesh()):
        return kernel
    current = spec_of(kernel)
    target = compute_kernel_spec(equation, spec_of(x), current)
    return kernel if target == current else jax.sharding.reshard(kernel, target)


def reshape_batched(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """`x.reshape(shape)` that keeps dimension 0 (the batch) and its sharding, splitting or merging only the rest.

    Explicit sharding cannot infer the output sharding of a general reshape, so it is named here.
    """
    if shape[0] != x.shape[0]:
        raise ValueError(f"reshape_batched keeps the batch dimension: {tuple(x.shape)} -> {tuple(shape)}")
    if not _explicit(active_mesh()):
        return x.reshape(shape)
    return jax.lax.reshape(x, shape, out_sharding=P(spec_of(x)[0], *([None] * (len(shape) - 1))))
