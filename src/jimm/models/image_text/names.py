"""HF tensor names <-> jimm parameters for CLIP and SigLIP: one name table for both families and every class.

Both families write the same encoder layers (`encoder.layers.N.self_attn.{q,k,v,out}_proj`, `layer_norm1/2`,
`mlp.fc1/fc2`); what differs (CLIP's class embedding, missing patch bias and `pre_layrnorm`; SigLIP's MAP head
and text `head`) is read from the tower configs. Names are the classic ones transformers writes for the pair
models and the hub holds (`vision_model.embeddings...`); the standalone towers' transformers-v5 names, which
lack the `vision_model.` / `text_model.` prefix, are renamed first (`with_tower_prefix`).

SigLIP's MAP head is a torch `nn.MultiheadAttention`: its fused `in_proj_weight [3D, D]` (q, k, v rows) fills
two jimm parameters, `q_kernel [D, N, H]` and `kv_kernel [D, 2, N, H]`. Two slots share that tensor name, each
converting its own rows; `fuse_shared_names` concatenates them again on save.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ...common.text import TextTowerConfig
from ...common.vision import VisionTowerConfig
from ...io.state import Slot, identity
from ..converters import conv_to_hf, conv_to_jimm, heads_bias, heads_in, heads_out, linear

VISION, TEXT = "vision_model", "text_model"
LAYERS = ((VISION, "blocks", "layers"), (TEXT, "blocks", "layers"))
"""Where the stacked blocks of each tower live in `nnx.state(model)`."""
# Names outside either tower (what a standalone tower's v5 names never need a prefix for).
TOP_LEVEL = (f"{VISION}.", f"{TEXT}.", "visual_projection.", "text_projection.", "logit_", "classifier.")


@dataclasses.dataclass(frozen=True)
class Parts:
    """What a model holds: the towers it has and the parameters around them (None / False: absent)."""

    vision: VisionTowerConfig | None = None
    text: TextTowerConfig | None = None
    visual_projection: int | None = None  # output width
    text_projection: int | None = None
    logit_scale: tuple[int, ...] | None = None  # CLIP's is 0-d, SigLIP's (1,)
    logit_bias: bool = False
    num_labels: int | None = None  # the classifier's classes
    linear_patches: bool = False  # the patch embedding is a Linear over flattened patches (SigLIP 2 NaFlex)


def _slot(name: str, param: str, index, shape, to_jimm=identity, to_hf=identity) -> Slot:
    return Slot(name, tuple(param.split(".")), tuple(index), tuple(shape), to_jimm, to_hf)


def encoder_slots(hf: str, ours: str, num_layers: int, d: int, n: int, f: int) -> list[Slot]:
    """`{hf}encoder.layers.N.*` (CLIP / SigLIP encoder layers) -> the stacked `{ours}.blocks.layers` parameters."""
    h, blocks, table = d // n, f"{ours}.blocks.layers", []
    for i in range(num_layers):
        p = f"{hf}encoder.layers.{i}."
        for k, proj in enumerate("qkv"):
            table.append(_slot(f"{p}self_attn.{proj}_proj.weight", f"{blocks}.attn.qkv_kernel", (i, slice(None), k),
                               (d, d), *heads_in(n, h)))  # fmt: skip
            table.append(_slot(f"{p}self_attn.{proj}_proj.bias", f"{blocks}.attn.qkv_bias", (i, k), (d,),
                               *heads_bias(n, h)))  # fmt: skip
        table.append(
            _slot(f"{p}self_attn.out_proj.weight", f"{blocks}.attn.out_kernel", (i,), (d, d), *heads_out(n, h))
        )
        table.append(_slot(f"{p}self_attn.out_proj.bias", f"{blocks}.attn.out_bias", (i,), (d,)))
        for norm in ("1", "2"):
            table.append(_slot(f"{p}layer_norm{norm}.weight", f"{blocks}.norm{norm}.scale", (i,), (d,)))
            table.append(_slot(f"{p}layer_norm{norm}.bias", f"{blocks}.norm{norm}.bias", (i,), (d,)))
        for fc, shape in (("fc1", (f, d)), ("fc2", (d, f))):
            table.append(_slot(f"{p}mlp.{fc}.weight", f"{blocks}.mlp.{fc}_kernel", (i,), shape, linear, linear))
            table.append(_slot(f"{p}mlp.{fc}.bias", f"{blocks}.mlp.{fc}_bias", (i,), shape[:1]))
    return table


def _norm(hf: str, ours: str, d: int) -> list[Slot]:
    return [_slot(f"{hf}.weight", f"{ours}.scale", (), (d,)), _slot(f"{hf}.bias", f"{ours}.bias", (), (d,))]


def _with_batch_axis():
    return (lambda w: w[None], lambda k: k[0])  # HF `[T, D]` embedding table <-> jimm `[1, T, D]`


def torch_map_head_slots(hf: str, ours: str, d: int, n: int, f: int) -> list[Slot]:
    """SigLIP's `head` (probe, torch `MultiheadAttention`, layernorm, mlp) -> jimm's `MAPHead` at `ours`."""
    h = d // n
    q_w = (lambda w: w[:d].T.reshape(d, n, h), lambda k: k.reshape(d, d).T)
    kv_w = (lambda w: w[d:].T.reshape(d, 2, n, h), lambda k: k.reshape(d, 2 * d).T)
    q_b = (lambda b: b[:d].reshape(n, h), lambda b: b.reshape(d))
    kv_b = (lambda b: b[d:].reshape(2, n, h), lambda b: b.reshape(2 * d))
    return [
        _slot(f"{hf}probe", f"{ours}.probe", (), (1, 1, d)),
        _slot(f"{hf}attention.in_proj_weight", f"{ours}.q_kernel", (), (3 * d, d), *q_w),
        _slot(f"{hf}attention.in_proj_weight", f"{ours}.kv_kernel", (), (3 * d, d), *kv_w),
        _slot(f"{hf}attention.in_proj_bias", f"{ours}.q_bias", (), (3 * d,), *q_b),
        _slot(f"{hf}attention.in_proj_bias", f"{ours}.kv_bias", (), (3 * d,), *kv_b),
        _slot(f"{hf}attention.out_proj.weight", f"{ours}.out_kernel", (), (d, d), *heads_out(n, h)),
        _slot(f"{hf}attention.out_proj.bias", f"{ours}.out_bias", (), (d,)),
        *_norm(f"{hf}layernorm", f"{ours}.norm", d),
        _slot(f"{hf}mlp.fc1.weight", f"{ours}.mlp.fc1_kernel", (), (f, d), linear, linear),
        _slot(f"{hf}mlp.fc1.bias", f"{ours}.mlp.fc1_bias", (), (f,)),
        _slot(f"{hf}mlp.fc2.weight", f"{ours}.mlp.fc2_kernel", (), (d, f), linear, linear),
        _slot(f"{hf}mlp.fc2.bias", f"{ours}.mlp.fc2_bias", (), (d,)),
    ]


def _linear_patches(ph: int, pw: int, c: int, d: int):
    """transformers' NaFlex `Linear(p*p*C -> D)` weight `[D, P]` <-> jimm's patch kernel `[p, p, C, D]` (both
    flatten a patch in (p_h, p_w, C) order)."""
    return (lambda w: w.T.reshape(ph, pw, c, d), lambda k: k.reshape(ph * pw * c, d).T)


def vision_slots(
    c: VisionTowerConfig, hf: str = f"{VISION}.", ours: str = VISION, *, linear_patches: bool = False
) -> list[Slot]:
    d, (ph, pw), ch = c.hidden_size, c.patch_size, c.num_channels
    e = f"{hf}embeddings."
    table = []
    if c.class_token:  # CLIP's `class_embedding` is a bare `[D]` vector
        table.append(_slot(f"{e}class_embedding", f"{ours}.cls_token", (), (d,),
                           lambda w: w.reshape(1, 1, d), lambda k: k.reshape(d)))  # fmt: skip
    if linear_patches:
        table.append(_slot(f"{e}patch_embedding.weight", f"{ours}.patch_embed.kernel", (), (d, ph * pw * ch),
                           *_linear_patches(ph, pw, ch, d)))  # fmt: skip
    else:
        table.append(_slot(f"{e}patch_embedding.weight", f"{ours}.patch_embed.kernel", (), (d, ch, ph, pw),
                           conv_to_jimm, conv_to_hf))  # fmt: skip
    if c.patch_bias:
        table.append(_slot(f"{e}patch_embedding.bias", f"{ours}.patch_embed.bias", (), (d,)))
    table.append(_slot(f"{e}position_embedding.weight", f"{ours}.pos_embed", (), (c.num_pos_embed, d),
                       *_with_batch_axis()))  # fmt: skip
    if c.pre_norm:
        table += _norm(f"{hf}pre_layrnorm", f"{ours}.pre_norm", d)  # sic: transformers' spelling
    table += encoder_slots(hf, ours, c.num_layers, d, c.num_heads, c.mlp_dim)
    table += _norm(f"{hf}post_layernorm", f"{ours}.{'fc_norm' if c.fc_norm else 'norm'}", d)
    if c.global_pool == "map":
        table += torch_map_head_slots(f"{hf}head.", f"{ours}.attn_pool", d, c.num_heads, c.mlp_dim)
    return table


def text_slots(c: TextTowerConfig, hf: str = f"{TEXT}.", ours: str = TEXT) -> list[Slot]:
    d = c.hidden_size
    table = [
        _slot(f"{hf}embeddings.token_embedding.weight", f"{ours}.token_embed", (), (c.vocab_size, d)),
        _slot(f"{hf}embeddings.position_embedding.weight", f"{ours}.pos_embed", (), (c.max_positions, d)),
        *encoder_slots(hf, ours, c.num_layers, d, c.num_heads, c.mlp_dim),
        *_norm(f"{hf}final_layer_norm", f"{ours}.norm", d),
    ]
    if c.head_size is not None:  # SigLIP's text `head`
        table.append(_slot(f"{hf}head.weight", f"{ours}.head.kernel", (), (c.head_size, d), linear, linear))
        table.append(_slot(f"{hf}head.bias", f"{ours}.head.bias", (), (c.head_size,)))
    return table


def name_table(parts: Parts) -> list[Slot]:
    """Every HF tensor of a model made of `parts`, under classic names."""
    table = []
    if parts.vision is not None:
        table += vision_slots(parts.vision, linear_patches=parts.linear_patches)
    if parts.text is not None:
        table += text_slots(parts.text)
    return table + outer_slots(parts)


def outer_slots(parts: Parts) -> list[Slot]:
    """The tensors around the towers (projections, logit scale and bias, classifier), which every family of the
    image-text structure names alike; a family with its own tower names (AIMv2) adds these to its towers'."""
    table = []
    for name, width, tower in (("visual_projection", parts.visual_projection, parts.vision),
                               ("text_projection", parts.text_projection, parts.text)):  # fmt: skip
        if width is not None:
            table.append(_slot(f"{name}.weight", f"{name}.kernel", (), (width, tower.hidden_size), linear, linear))
    if parts.logit_scale is not None:
        table.append(_slot("logit_scale", "logit_scale", (), parts.logit_scale))
    if parts.logit_bias:
        table.append(_slot("logit_bias", "logit_bias", (), (1,)))
    if parts.num_labels is not None:
        c, d = parts.num_labels, parts.vision.hidden_size
        table.append(_slot("classifier.weight", "classifier.kernel", (), (c, d), linear, linear))
        table.append(_slot("classifier.bias", "classifier.bias", (), (c,)))
    return table


def fuse_shared_names(tensors: list) -> list:
    """`tensors_to_save` entries with one name per tensor: slots that share a checkpoint name (the MAP head's
    `in_proj_*`) are row blocks of it, concatenated in table order."""
    by_name: dict[str, list] = {}
    for entry in tensors:
        by_name.setdefault(entry[0], []).append(entry)
    out = []
    for name, group in by_name.items():
        if len(group) == 1:
            out.append(group[0])
            continue
        producers = [produce for *_, produce in group]
        out.append((name, group[0][1], group[0][2], lambda ps=producers: np.concatenate([p() for p in ps], axis=0)))
    return out


def with_tower_prefix(prefix: str):
    """The rename to classic names of a standalone tower's checkpoint (for `jimm.models.views.Renamed`).

    transformers v5 drops the `vision_model.` / `text_model.` prefix of `CLIPVisionModel`, `CLIPTextModel`,
    `SiglipVisionModel` and `SiglipTextModel`, in memory and (5.24) on disk for a tower it built itself; names
    already under a top-level prefix stay.
    """
    return lambda name: name if name.startswith(TOP_LEVEL) else prefix + name


__all__ = ["LAYERS", "Parts", "fuse_shared_names", "name_table", "outer_slots", "with_tower_prefix"]
