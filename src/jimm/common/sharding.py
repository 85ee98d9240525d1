"""Sharding specs for ViT parameters and activations: the only module that names mesh axes.

A `ShardingSpec` is one frozen dataclass of `PartitionSpec`s named by role and dimension letters
(B batch, T tokens, D width, N heads, H head dim, F MLP hidden, C classes, P patch pixels). Parameter specs
describe one layer; the scanned stack prepends the layer axis itself. Presets are functions of the user's
axis names, so no model code ever spells an axis.

With no mesh set (`jax.set_mesh`) every spec is ignored and the model runs unsharded: the specs are hints
for a mesh, never a requirement.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
from flax import nnx
from jax.sharding import PartitionSpec as P

Spec = P | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardingSpec:
    """Partition specs for every ViT parameter (per layer) and the activations between layers.

    `None` means "no annotation": the array is left to the compiler (replicated when created).
    """

    # activations
    act_btd: Spec = None  # residual stream [B, T, D]
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
            spec = getattr(self, field.name)
            for entry in spec or ():
                if entry is None:
                    continue
                names.update(entry if isinstance(entry, tuple) else (entry,))
        return names


class NoSharding(ShardingSpec):
    """Disables sharding: every parameter and activation is left unannotated."""

    def __init__(self) -> None:
        super().__init__()


def fsdp_sharding(*, data: str | tuple[str, ...] | None = "data", fsdp: str = "fsdp") -> ShardingSpec:
    """FSDP: large kernels sharded on their contracting (input) dimension over `fsdp`, batch over `data`+`fsdp`.

    Activations then carry only the batch-axis sharding, as in the original jimm.
    """
    data_axes = tuple(a for a in ((data,) if isinstance(data, str) else (data or ())) if a)
    batch = (*data_axes, fsdp) if data_axes else fsdp
    return ShardingSpec(
        act_btd=P(batch, None, None),
        act_btf=P(batch, None, None),
        act_btnh=P(batch, None, None, None),
        act_bc=P(batch, None),
        patch_kernel=P(None, None, None, fsdp),
        patch_bias=P(None),
        cls_token=P(None, None, None),
        pos_embed=P(None, None, None),
        qkv_kernel=P(fsdp, None, None, None),
        qkv_bias=P(None, None, None),
        attn_out_kernel=P(fsdp, None, None),
        attn_out_bias=P(None),
        mlp_in_kernel=P(fsdp, None),
        mlp_in_bias=P(None),
        mlp_out_kernel=P(fsdp, None),
        mlp_out_bias=P(None),
        norm=P(None),
        proj_kernel=P(fsdp, None),
        proj_bias=P(None),
    )


ViTSharding: ShardingSpec = fsdp_sharding()
"""The spec's default: FSDP over an axis named "fsdp", batch over ("data", "fsdp")."""


def active_mesh() -> jax.sharding.AbstractMesh | None:
    """The mesh set with `jax.set_mesh`, or None when there is none."""
    mesh = jax.sharding.get_abstract_mesh()
    return None if mesh.empty else mesh


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


def shard(x: jax.Array, spec: Spec) -> jax.Array:
    """Reshard an activation to `spec` under a mesh; a no-op without a mesh or spec."""
    if spec is None or active_mesh() is None:
        return x
    return jax.sharding.reshard(x, spec)
