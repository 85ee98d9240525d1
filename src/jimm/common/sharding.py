"""Sharding: the original jimm's per-layer spec classes, our presets, and the helpers model code calls.

The only module that names mesh axes. A spec is a frozen dataclass with the original's 21 per-layer fields
(`attn_qkv_kernel`, ..., `layer_scale`), each a tuple of mesh axis entries for one parameter; the family classes
(`ViTSharding`, `CLIPSharding`, ...) are the original's defaults and the presets (`fsdp_sharding(data=..., fsdp=...)`)
build the same class from the user's axis names. Models take the class, an instance, or any object with those
fields; `resolve_sharding` maps them once, through `PARAMS`, onto our parameter layouts (a `Plan`).

Activations follow the inputs: a replicated batch stays replicated and one sharded on `data` keeps `data` to the
logits. A spec's `batch=` axes (the presets' `shard_batch=True`) reshard the inputs' batch instead. How a spec is
applied depends on the mesh's axis types (`jax.set_mesh`): Explicit axes are part of each array's type, so kernels
are gathered and outputs named (`reshard`, `out_sharding=`); Auto axes are left to the compiler's propagation, with
`with_sharding_constraint` only where the spec asks for something (the batch, tensor-parallel activations). Mixed
meshes get each treatment on its own axes. With no mesh every spec is ignored.

Dimension letters: B batch, T tokens, D width, N heads, H head dim, F MLP hidden, C classes, P patch pixels.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

Spec = P | None
Axes = str | tuple[str, ...] | None
Entries = tuple[Axes, ...]

# -- the original's spec classes --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ShardingSpec:
    """The original jimm's 21 per-layer fields, all replicated here, and our `batch` option (keyword-only).

    Each field is one parameter's spec for one layer: a tuple with one entry per dimension, each None, a mesh axis
    name or a tuple of names. `batch`: mesh axes to reshard the inputs' batch over (our presets' `shard_batch=True`);
    None (the default) leaves the batch as the inputs carry it. Subclass it, or pass any object with these fields.
    """

    attn_qkv_kernel: Entries = (None, None, None)  # [D, N, H], each of q, k and v
    attn_qkv_bias: Entries = (None, None)  # [N, H]
    attn_out_kernel: Entries = (None, None, None)  # [N, H, D]
    attn_out_bias: Entries = (None,)  # [D]
    mlp_up_kernel: Entries = (None, None)  # [D, F] (also the gate of a gated MLP)
    mlp_up_bias: Entries = (None,)  # [F]
    mlp_down_kernel: Entries = (None, None)  # [F, D]
    mlp_down_bias: Entries = (None,)  # [D]
    layernorm: Entries = (None,)  # [D], every LayerNorm's scale and bias
    patch_conv_kernel: Entries = (None, None, None, None)  # [P, P, C_in, D]
    patch_conv_bias: Entries = (None,)  # [D]
    embed: Entries = (None, None)  # text token table [V, D]
    pos_embed_3d: Entries = (None, None, None)  # vision position table [1, T, D]
    pos_embed_2d: Entries = (None, None)  # the original's 2-D position tables: no parameter of ours
    vision_pos_id: Entries = (None, None)  # the original's position-id buffer: no parameter of ours
    text_pos_embed: Entries = (None, None)  # text position table [T, D]
    cls_token: Entries = (None, None, None)  # [1, 1, D] (and DeiT's distillation token)
    probe_token: Entries = (None, None, None)  # the MAP head's probe [1, 1, D]
    proj_kernel: Entries = (None, None)  # classifier and projection kernels [D, C]
    proj_bias: Entries = (None,)  # [C]
    layer_scale: Entries = (None,)  # [D]
    batch: Axes = dataclasses.field(default=None, kw_only=True)


@dataclasses.dataclass(frozen=True)
class NoSharding(ShardingSpec):
    """Every parameter replicated, the batch as the inputs carry it."""


@dataclasses.dataclass(frozen=True)
class ViTSharding(ShardingSpec):
    """The original's FSDP default over an axis named "fsdp": kernels on their contracting dimension (the patch
    kernel and the position table on D), the attention output kernel replicated."""

    attn_qkv_kernel: Entries = ("fsdp", None, None)
    mlp_up_kernel: Entries = ("fsdp", None)
    mlp_down_kernel: Entries = ("fsdp", None)
    patch_conv_kernel: Entries = (None, None, None, "fsdp")
    pos_embed_3d: Entries = (None, None, "fsdp")
    proj_kernel: Entries = ("fsdp", None)


@dataclasses.dataclass(frozen=True)
class CLIPSharding(ViTSharding):
    """`ViTSharding` plus the text token table on its vocabulary axis."""

    embed: Entries = ("fsdp", None)


@dataclasses.dataclass(frozen=True)
class SigLIPSharding(CLIPSharding):
    """The same fields as `CLIPSharding`."""


@dataclasses.dataclass(frozen=True)
class DINOv2Sharding(ViTSharding):
    """`ViTSharding` plus LayerScale and the MLP's first bias over "fsdp"."""

    mlp_up_bias: Entries = ("fsdp",)
    layer_scale: Entries = ("fsdp",)


@dataclasses.dataclass(frozen=True)
class DINOv3Sharding(DINOv2Sharding):
    """`DINOv2Sharding` plus the register tokens' own field."""

    register_tokens: Entries = (None, None, None)


# -- presets: the same classes, from the user's axis names ---------------------------------------------------------


def _entry_axes(entry: Axes) -> tuple[str, ...]:
    if entry is None:
        return ()
    return entry if isinstance(entry, tuple) else (entry,)


def _axes(*groups: Axes) -> Axes:
    """One spec entry for the concatenation of axis groups: None, one name, or a tuple."""
    names = tuple(a for g in groups for a in _entry_axes(g))
    if not names:
        return None
    return names[0] if len(names) == 1 else names


def fsdp_sharding(
    *, data: Axes = "data", fsdp: str | tuple[str, ...] = "fsdp", shard_batch: bool = False
) -> ViTSharding:
    """FSDP: kernels stored sharded on their contracting dimension over `fsdp` (the attention output kernel `[N, H,
    D]` on H, the patch kernel on D), gathered for each matmul; the gradient is reduce-scattered back.

    `shard_batch=True` also reshards every input's batch over `data` + `fsdp` (replicated inputs included: each
    device then computes only its share); by default the batch stays as the inputs carry it.
    """
    return ViTSharding(
        attn_qkv_kernel=(fsdp, None, None),
        attn_out_kernel=(None, fsdp, None),
        mlp_up_kernel=(fsdp, None),
        mlp_down_kernel=(fsdp, None),
        patch_conv_kernel=(None, None, None, fsdp),
        pos_embed_3d=(None, None, None),
        proj_kernel=(fsdp, None),
        batch=_axes(data, fsdp) if shard_batch else None,
    )


def data_parallel_sharding(*, data: Axes = "data", shard_batch: bool = True) -> NoSharding:
    """Pure data parallel: parameters replicated, every input's batch resharded over `data` (one axis or several).

    `shard_batch=False` keeps the inputs' own batch sharding (then this is `NoSharding()`).
    """
    return NoSharding(batch=_axes(data) if shard_batch else None)


def fsdp_tp_sharding(
    *, data: Axes = "data", fsdp: Axes = "fsdp", tp: str | tuple[str, ...] = "tp", shard_batch: bool = False
) -> ViTSharding:
    """FSDP + tensor parallel: heads (N) and MLP width (F) over `tp`, the kernels' D dimension over `fsdp`.

    q/k/v, attention outputs and the MLP hidden activations are sharded over `tp` (Megatron-style: one all-reduce
    after the attention output and one after the MLP); needs N and F divisible by the `tp` size. `fsdp=None`: pure
    tensor parallel. `shard_batch=True` reshards the inputs' batch over `data` + `fsdp`.
    """
    return ViTSharding(
        attn_qkv_kernel=(fsdp, tp, None),
        attn_qkv_bias=(tp, None),
        attn_out_kernel=(tp, None, fsdp),
        mlp_up_kernel=(fsdp, tp),
        mlp_up_bias=(tp,),
        mlp_down_kernel=(tp, fsdp),
        patch_conv_kernel=(None, None, None, fsdp),
        pos_embed_3d=(None, None, None),
        proj_kernel=(fsdp, None),
        batch=_axes(data, fsdp) if shard_batch else None,
    )


def replicated_sharding(reference: Any = None) -> NoSharding | NamedSharding:
    """No argument: the preset with every parameter replicated (`NoSharding()`).

    With an array (the original's helper): a fully replicated `NamedSharding` on that array's mesh.
    """
    if reference is None:
        return NoSharding()
    return named_sharding_like(reference, P(*([None] * reference.ndim)))


# -- the original's helpers ---------------------------------------------------------------------------------------


def sharding_of(value: Any) -> NamedSharding:
    """The `NamedSharding` in `value`'s type (under an Explicit mesh it names the axes; Auto axes do not appear)."""
    return jax.typeof(value).sharding


def named_sharding_like(reference: Any, spec: P | tuple[Axes, ...]) -> NamedSharding:
    """A `NamedSharding` of `spec` (a PartitionSpec or a tuple) on `reference`'s mesh."""
    return NamedSharding(sharding_of(reference).mesh, spec if isinstance(spec, P) else P(*spec))


def reshard_like(value: Any, reference: Any) -> Any:
    """`value` resharded to `reference`'s sharding."""
    return jax.sharding.reshard(value, sharding_of(reference))


# -- from a spec to our parameters: the one table ------------------------------------------------------------------


def _same(entries: Entries) -> Entries:
    return tuple(entries)


def _insert(position: int) -> Callable[[Entries], Entries]:
    """Our fused layouts carry one more, unsharded, axis: q/k/v stacked in `[D, 3, N, H]` and `[3, N, H]`."""
    return lambda entries: (*entries[:position], None, *entries[position:])


PARAMS: dict[str, tuple[str, Callable[[Entries], Entries]]] = {
    # our parameter (its `Plan` field): (the original's field, its per-layer spec onto our layout)
    "patch_kernel": ("patch_conv_kernel", _same),  # [P, P, C, D]
    "patch_bias": ("patch_conv_bias", _same),  # [D]
    "cls_token": ("cls_token", _same),  # [1, 1, D], DeiT's distillation token too
    "reg_token": ("register_tokens", _same),  # [1, R, D]; `cls_token` where a spec has no such field
    "pos_embed": ("pos_embed_3d", _same),  # [1, T, D]
    "qkv_kernel": ("attn_qkv_kernel", _insert(1)),  # [D, 3, N, H]
    "qkv_bias": ("attn_qkv_bias", _insert(0)),  # [3, N, H] (only the biased projections)
    "attn_out_kernel": ("attn_out_kernel", _same),  # [N, H, D]
    "attn_out_bias": ("attn_out_bias", _same),  # [D]
    "mlp_in_kernel": ("mlp_up_kernel", _same),  # [D, F]; the gated MLP's [D, 2, F] inserts its axis itself
    "mlp_in_bias": ("mlp_up_bias", _same),  # [F]
    "mlp_out_kernel": ("mlp_down_kernel", _same),  # [F, D]
    "mlp_out_bias": ("mlp_down_bias", _same),  # [D]
    "norm": ("layernorm", _same),  # [D]
    "layer_scale": ("layer_scale", _same),  # [D]
    "proj_kernel": ("proj_kernel", _same),  # classifier, projections, SigLIP's text head [D, C]
    "proj_bias": ("proj_bias", _same),  # [C]
    "token_embed": ("embed", _same),  # [V, D]
    "text_pos_embed": ("text_pos_embed", _same),  # [T, D]
    "probe": ("probe_token", _same),  # [1, 1, D]
}
FIELDS = tuple(f.name for f in dataclasses.fields(ShardingSpec) if f.name != "batch")
_RANKS = {f.name: len(f.default) for f in dataclasses.fields(ShardingSpec) if f.name != "batch"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Plan:
    """A spec resolved against the active mesh: each of our parameters' storage spec (None without a mesh) and the
    axes activations use: `batch` (reshard inputs to it; None follows them), `heads` and `hidden` (tensor parallel,
    from the q/k/v kernel's N entry and the MLP up kernel's F entry)."""

    patch_kernel: Spec = None
    patch_bias: Spec = None
    cls_token: Spec = None
    reg_token: Spec = None
    pos_embed: Spec = None
    qkv_kernel: Spec = None
    qkv_bias: Spec = None
    attn_out_kernel: Spec = None
    attn_out_bias: Spec = None
    mlp_in_kernel: Spec = None
    mlp_in_bias: Spec = None
    mlp_out_kernel: Spec = None
    mlp_out_bias: Spec = None
    norm: Spec = None
    layer_scale: Spec = None
    proj_kernel: Spec = None
    proj_bias: Spec = None
    token_embed: Spec = None
    text_pos_embed: Spec = None
    probe: Spec = None
    batch: Axes = None
    heads: Axes = None
    hidden: Axes = None

    def check_shapes(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Raise before building when a parameter's spec does not fit its shape (`{Plan field: shape}`)."""
        mesh = active_mesh()
        if mesh is None:
            return
        for name, shape in shapes.items():
            check_fits(f"parameter `{name}`", shape, getattr(self, name), mesh)


def spec_fields(sharding: Any) -> dict[str, Entries]:
    """The original's fields of `sharding` (a spec class, an instance, or any object with those fields), checked."""
    if sharding is None:
        return {name: (None,) * rank for name, rank in (*_RANKS.items(), ("register_tokens", 3))}
    if isinstance(sharding, type) and dataclasses.is_dataclass(sharding):
        sharding = sharding()  # the original's default is the class itself
    present = [name for name in FIELDS if hasattr(sharding, name)]
    if not present:
        raise TypeError(
            f"sharding= takes a spec class or instance with the fields {', '.join(FIELDS[:3])}, ... (e.g. "
            f"jimm.ViTSharding, jimm.NoSharding() or jimm.common.sharding.fsdp_sharding(...)), or None; "
            f"got {sharding!r}"
        )
    out = {}
    for name in (*FIELDS, "register_tokens"):
        value = getattr(sharding, name, None if name != "register_tokens" else getattr(sharding, "cls_token", None))
        rank = _RANKS.get(name, 3)
        value = (None,) * rank if value is None else tuple(value)
        if len(value) != rank or not all(e is None or isinstance(e, str | tuple) for e in value):
            raise ValueError(
                f"sharding field `{name}` must be a tuple of {rank} entries (None, an axis name or a tuple of "
                f"names), got {value!r}"
            )
        out[name] = value
    return out


def resolve_sharding(sharding: Any) -> Plan:
    """The plan to build with: every spec ignored without a mesh; under one, mapped through `PARAMS` and checked."""
    fields = spec_fields(sharding)
    mesh = active_mesh()
    if mesh is None:
        return Plan()
    batch = getattr(sharding, "batch", None) if not isinstance(sharding, type) else None
    specs = {ours: P(*convert(fields[theirs])) for ours, (theirs, convert) in PARAMS.items()}
    plan = Plan(**specs, batch=batch, heads=fields["attn_qkv_kernel"][1], hidden=fields["mlp_up_kernel"][1])
    named = {a for v in (*fields.values(), (batch,)) for e in v for a in _entry_axes(e)}
    missing = sorted(named - set(mesh.axis_names))
    if missing:
        raise ValueError(
            f"sharding spec names mesh axes {missing} that the active mesh lacks (mesh axes: {list(mesh.axis_names)}). "
            "Build the spec with your axis names, e.g. `jimm.common.sharding.fsdp_sharding(data=..., fsdp=...)`, "
            "or pass `sharding=jimm.common.sharding.NoSharding()`."
        )
    return plan


# -- meshes and checks ----------------------------------------------------------------------------------------------


def active_mesh() -> jax.sharding.AbstractMesh | None:
    """The mesh set with `jax.set_mesh`, or None when there is none (works inside `jax.jit` too)."""
    mesh = jax.sharding.get_abstract_mesh()
    return None if mesh.empty else mesh


def _explicit_names(mesh) -> frozenset[str]:
    if mesh is None:
        return frozenset()
    return frozenset(n for n, t in zip(mesh.axis_names, mesh.axis_types, strict=True) if t == AxisType.Explicit)


def _only(entry: Axes, names: frozenset[str]) -> Axes:
    return _axes(*(a for a in _entry_axes(entry) if a in names))


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
        if entry is P.UNCONSTRAINED:
            continue
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
    explicit = _explicit_names(mesh)
    if explicit:
        target = P(*(_only(e, explicit) for e in spec))
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


def _activation_spec(x: jax.Array, rest: Entries, explicit: frozenset[str]) -> P:
    """Explicit axes: dimension 0 keeps `x`'s batch sharding, the others take `rest` (minus the batch's axes)."""
    batch = spec_of(x)[0]
    used = set(_entry_axes(batch))
    rest = tuple(_only(e, explicit - used) for e in rest)
    return P(batch, *rest, *([None] * (x.ndim - 1 - len(rest))))


def constrain(x: jax.Array, *rest: Axes) -> jax.Array:
    """An activation `[B, ...]` with its batch left as it is and the other dimensions on `rest` (None: whole).

    Explicit axes: resharded when its type differs. Auto axes: a sharding constraint only where `rest` names an
    axis (tensor parallel), the batch left to propagation. No mesh: unchanged.
    """
    mesh = active_mesh()
    if mesh is None:
        return x
    explicit = _explicit_names(mesh)
    if explicit:
        target = _activation_spec(x, rest, explicit)
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
    explicit = _explicit_names(mesh)
    if explicit:
        x = constrain(x)
    if len(explicit) < len(mesh.axis_names):  # Auto axes (all, or beside Explicit ones in a mixed mesh)
        x = jax.lax.with_sharding_constraint(x, P(P.UNCONSTRAINED, *([None] * (x.ndim - 1))))
    return x


def like(value: jax.Array, x: jax.Array) -> jax.Array:
    """A parameter broadcast against the activation `x` (biases, norms, tokens, position tables), gathered on the
    Explicit axes `x` does not use the same way; unchanged otherwise (Auto axes: the compiler gathers)."""
    explicit = _explicit_names(active_mesh())
    if not explicit:
        return value
    current, x_spec = spec_of(value), spec_of(x)
    offset = x.ndim - value.ndim
    target = P(*(e if offset + i >= 0 and e == x_spec[offset + i] else None for i, e in enumerate(current)))
    return value if target == current else jax.sharding.reshard(value, target)


def batch_like(value: jax.Array, x: jax.Array) -> jax.Array:
    """A batch-leading `value` (an expanded token, another tower's output) with `x`'s batch sharding and nothing
    else sharded, on the Explicit axes; unchanged otherwise."""
    explicit = _explicit_names(active_mesh())
    if not explicit:
        return value
    target = P(spec_of(x)[0], *([None] * (value.ndim - 1)))
    return value if target == spec_of(value) else jax.sharding.reshard(value, target)


def gathered(value: jax.Array) -> jax.Array:
    """A parameter whole on every device (Explicit axes); unchanged otherwise. For tables read by a gather."""
    explicit = _explicit_names(active_mesh())
    if not explicit or all(e is None for e in spec_of(value)):
        return value
    return jax.sharding.reshard(value, P())


def take_rows(table: jax.Array, ids: jax.Array) -> jax.Array:
    """`table[ids]` (an embedding lookup): the table gathered whole first on the Explicit axes, the rows sharded
    like `ids`' batch."""
    if not _explicit_names(active_mesh()):
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
    """Gather `kernel` to `compute_kernel_spec` on the Explicit axes; a no-op otherwise or when nothing moves."""
    if not _explicit_names(active_mesh()):
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
    explicit = _explicit_names(mesh)
    if not explicit:
        return constrain(jnp.einsum(equation, x, kernel), *rest)
    kernel = gather_for(equation, x, kernel)
    out_rank = len(equation.replace(" ", "").split("->")[1])
    out = _activation_spec(x, rest, explicit)
    out = P(*out[:1], *(tuple(out[1:]) + (None,) * out_rank)[: out_rank - 1])
    return jnp.einsum(equation, x, kernel, out_sharding=out)


def reshape_batched(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """`x.reshape(shape)` that keeps dimension 0 (the batch) and its sharding, splitting or merging only the rest.

    Explicit sharding cannot infer the output sharding of a general reshape, so it is named here.
    """
    if shape[0] != x.shape[0]:
        raise ValueError(f"reshape_batched keeps the batch dimension: {tuple(x.shape)} -> {tuple(shape)}")
    if not _explicit_names(active_mesh()):
        return x.reshape(shape)
    return jax.lax.reshape(x, shape, out_sharding=P(spec_of(x)[0], *([None] * (len(shape) - 1))))


__all__ = [
    "CLIPSharding",
    "DINOv2Sharding",
    "DINOv3Sharding",
    "NoSharding",
    "Plan",
    "ShardingSpec",
    "SigLIPSharding",
    "ViTSharding",
    "batch_like",
    "constrain",
    "data_parallel_sharding",
    "einsum",
    "fsdp_sharding",
    "fsdp_tp_sharding",
    "like",
    "named_sharding_like",
    "output",
    "replicated_sharding",
    "reshard_like",
    "resolve_sharding",
    "shard_input",
    "sharding_of",
    "take_rows",
]
