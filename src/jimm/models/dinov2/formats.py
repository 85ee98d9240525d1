"""The original `facebookresearch/dinov2` (torch hub) and timm DINOv2 state dicts, under HF DINOv2 names.

Name table (N = block index; timm's names are the torch hub's except where noted):

| torch hub                          | HF                                                     |
|------------------------------------|--------------------------------------------------------|
| `cls_token`                        | `embeddings.cls_token`                                 |
| `pos_embed` `[1, 1 + n, D]`        | `embeddings.position_embeddings`                       |
| `register_tokens` (timm `reg_token`) | `embeddings.register_tokens`                         |
| `mask_token` `[1, D]` (timm: none) | `embeddings.mask_token` (zeros when absent)            |
| `patch_embed.proj`                 | `embeddings.patch_embeddings.projection`               |
| `blocks.N.norm1`, `blocks.N.norm2` | `encoder.layer.N.norm1`, `.norm2`                      |
| `blocks.N.attn.qkv` (rows q, k, v) | `encoder.layer.N.attention.attention.{query,key,value}`|
| `blocks.N.attn.proj`               | `encoder.layer.N.attention.output.dense`               |
| `blocks.N.ls{1,2}.gamma`           | `encoder.layer.N.layer_scale{1,2}.lambda1`             |
| `blocks.N.mlp.fc1`, `.fc2`         | `encoder.layer.N.mlp.fc1`, `.fc2`                      |
| `blocks.N.mlp.w12`, `.w3` (SwiGLU; timm `fc1` `[2F, D]`, `fc2`) | `encoder.layer.N.mlp.weights_in`, `.weights_out` |
| `norm`                             | `layernorm`                                            |

timm's registers models have no class position row (it is folded into `cls_token`, and `pos_embed` is
`[1, n, D]`); loading puts it back as a zero class position row, which computes the same.

The config is inferred from the shapes: width, depth, patch and grid; heads = width / 64 (every DINOv2 size:
S 6, B 12, L 16, g 24; pass `config=` otherwise); LayerNorm eps 1e-6, exact GELU, LayerScale; SwiGLU when the
fused first MLP weight has twice the rows of the second's input. Resampling follows the torch-hub models:
plain models with the legacy `interpolate_offset=0.1`, registers models antialiased without offset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp

from ..loading import check_depth
from ..views import ConvertedSource, Rule, concat_rows, same, split_rows
from .config import PLAIN, REGISTERS, DINOv2Config, swiglu_hidden

HUB = "facebookresearch/dinov2 (torch hub)"
TIMM = "timm DINOv2"
MARKER = "patch_embed.proj.weight"
HEAD_DIM = 64


def infer_heads(width: int, head_dim: int, *, source: str, tensor: str) -> int:
    """Heads of a checkpoint without a config: every DINOv2 size has `head_dim`-wide heads."""
    if width % head_dim:
        raise ValueError(
            f"{source}: cannot infer the number of heads of width {width} (from {tensor}): this family's sizes "
            f"have {head_dim}-wide heads; pass config=... with num_attention_heads"
        )
    return width // head_dim


def count_layers(names: Sequence[str], prefix: str) -> int:
    """How many `prefix{i}.` blocks the names hold (0..n-1, each present)."""
    found = {int(n[len(prefix) :].split(".", 1)[0]) for n in names if n.startswith(prefix) and n[len(prefix)].isdigit()}
    if found != set(range(len(found))):
        raise ValueError(f"checkpoint blocks {sorted(found)} are not numbered 0..{len(found) - 1}")
    return len(found)


def detect(names) -> str | None:
    """`HUB`, `TIMM` or None: torch hub files have `mask_token` / `register_tokens` / `w12`; timm's have LayerScale."""
    names = set(names)
    if MARKER not in names or "blocks.0.ls1.gamma" not in names:
        return None
    if "mask_token" in names or "register_tokens" in names or "blocks.0.mlp.w12.weight" in names:
        return HUB
    return TIMM


def _swiglu_ratio(d: int, fused_rows: int, *, source: str, tensor: str) -> int:
    """The integer `mlp_ratio` whose SwiGLU width is `fused_rows / 2`, or an error naming the tensor."""
    if fused_rows % 2:
        raise ValueError(
            f"{source}: {tensor} has an odd fused width {fused_rows}: a SwiGLU weight stacks the gate and up "
            "projections (2 x hidden rows, gate first)"
        )
    hidden = fused_rows // 2
    for ratio in range(1, 65):
        if swiglu_hidden(d, ratio) == hidden:
            return ratio
    raise ValueError(
        f"{source}: {tensor} holds SwiGLU width {hidden}, which transformers' rule ((int(D*r*2/3)+7)//8*8 with "
        f"D={d}) gives for no integer mlp_ratio r; transformers cannot hold this model"
    )


def infer_config(entries: dict, layout: str, *, source: str) -> DINOv2Config:
    """A `DINOv2Config` from a torch-hub or timm state dict's names and shapes (module docstring)."""
    d, channels, ph, pw = entries[MARKER][0]
    depth = count_layers(list(entries), "blocks.")
    reg_name = "register_tokens" if layout == HUB else "reg_token"
    registers = entries[reg_name][0][1] if reg_name in entries else 0
    rows = entries["pos_embed"][0][1]
    patches = rows if (layout == TIMM and registers) else rows - 1
    grid = math.isqrt(patches)
    if grid * grid != patches:
        raise ValueError(f"{source}: pos_embed has {rows} rows, which is not a square grid plus a class row")

    def shape(name: str) -> tuple[int, ...]:
        if name not in entries:
            raise ValueError(f"{source}: {layout} checkpoint lacks {name}")
        return tuple(entries[name][0])

    fc1, fc2 = "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc2.weight"
    if layout == HUB:
        swiglu = "blocks.0.mlp.w12.weight" in entries
        first, second = ("blocks.0.mlp.w12.weight", "blocks.0.mlp.w3.weight") if swiglu else (fc1, fc2)
    else:  # timm packs SwiGLU into fc1: twice the rows of fc2's input
        first, second = fc1, fc2
        swiglu = shape(fc1)[0] != shape(fc2)[1]
    if swiglu:
        ratio = _swiglu_ratio(d, shape(first)[0], source=source, tensor=first)
        if shape(second)[1] != swiglu_hidden(d, ratio):
            raise ValueError(f"{source}: {second} has {shape(second)[1]} inputs, {first} {shape(first)[0]} rows")
    else:
        ratio, rest = divmod(shape(fc1)[0], d)
        if rest or ratio < 1:
            raise ValueError(
                f"{source}: {fc1} has {shape(fc1)[0]} rows, not a multiple of the width {d}: DINOv2's MLP "
                "width is hidden_size * an integer mlp_ratio"
            )
    return DINOv2Config(
        model_type=REGISTERS if registers else PLAIN,
        hidden_size=d,
        num_hidden_layers=depth,
        num_attention_heads=infer_heads(d, HEAD_DIM, source=source, tensor=MARKER),
        mlp_ratio=ratio,
        image_size=grid * ph if ph == pw else (grid * ph, grid * pw),
        patch_size=ph if ph == pw else (ph, pw),
        num_channels=channels,
        qkv_bias="blocks.0.attn.qkv.bias" in entries,
        use_swiglu_ffn=swiglu,
        use_mask_token=bool(registers) or "mask_token" in entries,
        num_register_tokens=registers,
        interpolate_offset=0.0 if registers else 0.1,
    )


def _timm_prefix(cls, pos):
    return cls, jnp.pad(pos, ((0, 0), (1, 0), (0, 0)))


def _timm_fold(cls, pos):
    return cls + pos[:, :1], pos[:, 1:]


def rules(config: DINOv2Config, layout: str, *, with_mask_token: bool) -> list[Rule]:
    """The name table of a torch-hub or timm DINOv2 state dict for this config."""
    out = [same("patch_embed.proj.weight", "embeddings.patch_embeddings.projection.weight")]
    out.append(same("patch_embed.proj.bias", "embeddings.patch_embeddings.projection.bias"))
    hf_tokens = ("embeddings.cls_token", "embeddings.position_embeddings")
    if layout == TIMM and config.num_register_tokens:
        out.append(Rule(("cls_token", "pos_embed"), hf_tokens, _timm_prefix, _timm_fold))
    else:
        out += [same("cls_token", hf_tokens[0]), same("pos_embed", hf_tokens[1])]
    if config.num_register_tokens:
        out.append(same("register_tokens" if layout == HUB else "reg_token", "embeddings.register_tokens"))
    if with_mask_token:
        out.append(same("mask_token", "embeddings.mask_token"))
    mlp = ("w12", "w3") if layout == HUB else ("fc1", "fc2")
    for i in range(config.num_hidden_layers):
        t, h = f"blocks.{i}", f"encoder.layer.{i}"
        qkv = tuple(f"{h}.attention.attention.{x}" for x in ("query", "key", "value"))
        params = ("weight", "bias") if config.qkv_bias else ("weight",)
        for p in params:
            out.append(Rule((f"{t}.attn.qkv.{p}",), tuple(f"{n}.{p}" for n in qkv), split_rows(3), concat_rows))
        pairs = [("norm1", "norm1"), ("norm2", "norm2"), ("attn.proj", "attention.output.dense")]
        if config.use_swiglu_ffn:
            pairs += [(f"mlp.{mlp[0]}", "mlp.weights_in"), (f"mlp.{mlp[1]}", "mlp.weights_out")]
        else:
            pairs += [("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")]
        for ours, theirs in pairs:
            out += [same(f"{t}.{ours}.{p}", f"{h}.{theirs}.{p}") for p in ("weight", "bias")]
        out += [same(f"{t}.ls{k}.gamma", f"{h}.layer_scale{k}.lambda1") for k in (1, 2)]
    out += [same(f"norm.{p}", f"layernorm.{p}") for p in ("weight", "bias")]
    return out


def open_foreign(raw, config: DINOv2Config | None, source: str) -> tuple[ConvertedSource, DINOv2Config]:
    """A torch-hub or timm DINOv2 checkpoint under HF names, and its (given or inferred) config."""
    entries = raw.entries()
    layout = detect(entries)
    if layout is None:
        sample = ", ".join(sorted(entries)[:6]) + (", ..." if len(entries) > 6 else "")
        raise ValueError(
            f"{source}: not a DINOv2 checkpoint jimm reads (tensors: {sample}); expected transformers' layout with "
            f"its config.json, or the torch-hub / timm layout ('{MARKER}', 'blocks.N.ls1.gamma')"
        )
    config = config or infer_config(entries, layout, source=source)
    check_depth(entries, r"^blocks\.(\d+)\.", config.num_hidden_layers, source=source)  # before its rules
    with_mask = "mask_token" in entries
    return ConvertedSource(raw, rules(config, layout, with_mask_token=with_mask), format_name=layout), config


__all__ = ["HUB", "TIMM", "detect", "infer_config", "open_foreign", "rules"]
