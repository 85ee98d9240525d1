"""Sharding specs: the original jimm's per-layer spec classes, our presets, and the table onto our parameters.

The only module that names mesh axes. A spec is a frozen dataclass with the original's 21 per-layer fields
(`attn_qkv_kernel`, ..., `layer_scale`), each a tuple of mesh axis entries for one parameter; the family classes
(`ViTSharding`, `CLIPSharding`, ...) are the original's defaults and the presets (`fsdp_sharding(data=..., fsdp=...)`)
build the same class from the user's axis names. Models take the class, an instance, or any object with those
fields; `resolve_sharding` maps them once, through `PARAMS`, onto our parameter layouts (a `Plan`).

Activations follow the inputs: a replicated batch stays replicated and one sharded on `data` keeps `data` to the
logits. A spec's `batch=` axes (the presets' `shard_batch=True`) reshard the inputs' batch instead. How a plan is
applied under each mesh axis type (Auto, Explicit, mixed) is `placement.py`'s job. With no mesh every spec is
ignored.

Dimension letters: B batch, T tokens, D width, N heads, H head dim, F MLP hidden, C classes, P patch pixels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from .placement import Axes, Entries, Spec, active_mesh, check_fits, compute_kernel_spec, entry_axes, join_axes

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


@dataclasses.dataclass(frozen=True)
class AIMv2Sharding(ViTSharding):
    """`ViTSharding` as it is: AIMv2 has no LayerScale, registers or MLP biases (the original's definition)."""


# -- presets: the same classes, from the user's axis names ---------------------------------------------------------


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
        batch=join_axes(data, fsdp) if shard_batch else None,
    )


def data_parallel_sharding(*, data: Axes = "data", shard_batch: bool = True) -> NoSharding:
    """Pure data parallel: parameters replicated, every input's batch resharded over `data` (one axis or several).

    `shard_batch=False` keeps the inputs' own batch sharding (then this is `NoSharding()`).
    """
    return NoSharding(batch=join_axes(data) if shard_batch else None)


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
        batch=join_axes(data, fsdp) if shard_batch else None,
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
    named = {a for v in (*fields.values(), (batch,)) for e in v for a in entry_axes(e)}
    missing = sorted(named - set(mesh.axis_names))
    if missing:
        raise ValueError(
            f"sharding spec names mesh axes {missing} that the active mesh lacks (mesh axes: {list(mesh.axis_names)}). "
            "Build the spec with your axis names, e.g. `jimm.common.sharding.fsdp_sharding(data=..., fsdp=...)`, "
            "or pass `sharding=jimm.common.sharding.NoSharding()`."
        )
    return plan


__all__ = [
    "AIMv2Sharding",
    "CLIPSharding",
    "DINOv2Sharding",
    "DINOv3Sharding",
    "NoSharding",
    "Plan",
    "ShardingSpec",
    "SigLIPSharding",
    "ViTSharding",
    "active_mesh",
    "compute_kernel_spec",
    "data_parallel_sharding",
    "fsdp_sharding",
    "fsdp_tp_sharding",
    "named_sharding_like",
    "replicated_sharding",
    "reshard_like",
    "resolve_sharding",
    "sharding_of",
]
