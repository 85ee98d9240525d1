"""timm ViT / DeiT state dicts (`vit_*`, `deit_*` safetensors or `.bin`) <-> jimm's HF names.

Name table (timm -> HF; N = block index; the HF side is transformers' ViT plus jimm's variant names):

| timm                                  | HF                                                              |
|---------------------------------------|-----------------------------------------------------------------|
| `patch_embed.proj.{weight,bias}`      | `embeddings.patch_embeddings.projection.{weight,bias}`          |
| `cls_token`, `dist_token`, `reg_token`| `embeddings.cls_token`, `.distillation_token`, `.register_tokens` |
| `pos_embed`                           | `embeddings.position_embeddings`                                |
| `blocks.N.norm1`, `blocks.N.norm2`    | `encoder.layer.N.layernorm_before`, `.layernorm_after`          |
| `blocks.N.attn.qkv.{weight,bias}`     | `...attention.attention.{query,key,value}` (rows split in 3)    |
| `blocks.N.attn.{q,k}_norm`            | `...attention.attention.{q,k}_norm`                             |
| `blocks.N.attn.proj`                  | `...attention.output.dense`                                     |
| `blocks.N.ls{1,2}.gamma`              | `encoder.layer.N.layer_scale{1,2}.lambda1`                      |
| `blocks.N.mlp.fc1`, `blocks.N.mlp.fc2`| `...intermediate.dense`, `...output.dense`                      |
| `norm`, `fc_norm`                     | `layernorm`, `fc_norm`                                          |
| `attn_pool.*`                         | `attn_pool.*` (same names)                                      |
| `head`, `head_dist`                   | `classifier` (`cls_classifier` when distilled), `distillation_classifier` |

Both sides store Linear weights `[out, in]`, so every rule but the fused qkv is a rename.

Config inference from shapes: heads come from the big_vision size table by width (pass `config=` for other
widths); LayerNorm eps 1e-6 and exact GELU are timm's defaults; `global_pool` is "map" with `attn_pool`, "avg"
with `fc_norm` or without a class token, else "token"; `no_embed_class` when the position rows are a square
grid without the prefix rows (if they are a square both with and without, `no_embed_class=False` is assumed).
Position embeddings resample as timm does (`pos_embed_antialias=True`: antialiased, PIL's bicubic filter).
timm features outside this table (`norm_pre`, SwiGLU MLPs, ...) are an unexpected-tensor error.
"""

from __future__ import annotations

import math

from ...views import Rule, concat_rows, same, split_rows
from ..config import ViTConfig
from ..variants import HEADS_BY_WIDTH

MARKER = "patch_embed.proj.weight"


def rules(config: ViTConfig, *, with_head: bool) -> list[Rule]:
    """The timm name table for a model of this config."""
    c = config
    out = [
        same("patch_embed.proj.weight", "embeddings.patch_embeddings.projection.weight"),
        same("patch_embed.proj.bias", "embeddings.patch_embeddings.projection.bias"),
        same("pos_embed", "embeddings.position_embeddings"),
    ]
    if c.class_token:
        out.append(same("cls_token", "embeddings.cls_token"))
    if c.distilled:
        out.append(same("dist_token", "embeddings.distillation_token"))
    if c.num_register_tokens:
        out.append(same("reg_token", "embeddings.register_tokens"))
    for i in range(c.num_hidden_layers):
        t, h = f"blocks.{i}", f"encoder.layer.{i}"
        qkv = tuple(f"{h}.attention.attention.{x}" for x in ("query", "key", "value"))
        out.append(Rule((f"{t}.attn.qkv.weight",), tuple(f"{n}.weight" for n in qkv), split_rows(3), concat_rows))
        if c.qkv_bias:
            out.append(Rule((f"{t}.attn.qkv.bias",), tuple(f"{n}.bias" for n in qkv), split_rows(3), concat_rows))
        pairs = [
            ("norm1", "layernorm_before"),
            ("norm2", "layernorm_after"),
            ("attn.proj", "attention.output.dense"),
            ("mlp.fc1", "intermediate.dense"),
            ("mlp.fc2", "output.dense"),
        ]
        if c.qk_norm:
            pairs += [("attn.q_norm", "attention.attention.q_norm"), ("attn.k_norm", "attention.attention.k_norm")]
        for ours, theirs in pairs:
            out += [same(f"{t}.{ours}.weight", f"{h}.{theirs}.weight"), same(f"{t}.{ours}.bias", f"{h}.{theirs}.bias")]
        if c.layer_scale_init_value is not None:
            out += [same(f"{t}.ls{k}.gamma", f"{h}.layer_scale{k}.lambda1") for k in (1, 2)]
    final = "fc_norm" if c.fc_norm else "norm"
    out += [same(f"{final}.{p}", f"{'fc_norm' if c.fc_norm else 'layernorm'}.{p}") for p in ("weight", "bias")]
    if c.global_pool == "map":
        out.append(same("attn_pool.latent", "attn_pool.latent"))
        for layer in ("q", "kv", "proj", "norm", "mlp.fc1", "mlp.fc2"):
            out += [same(f"attn_pool.{layer}.{p}", f"attn_pool.{layer}.{p}") for p in ("weight", "bias")]
    if with_head:
        head = "cls_classifier" if c.distilled else "classifier"
        out += [same("head.weight", f"{head}.weight"), same("head.bias", f"{head}.bias")]
        if c.distilled:
            out += [same(f"head_dist.{p}", f"distillation_classifier.{p}") for p in ("weight", "bias")]
    return out


def infer_config(entries: dict) -> ViTConfig:
    """A `ViTConfig` from a timm state dict's names and shapes (see the module docstring for the defaults)."""
    d, channels, ph, pw = entries[MARKER][0]
    depth = len(
        {name.split(".")[1] for name in entries if name.startswith("blocks.") and name.endswith(".norm1.weight")}
    )
    if d not in HEADS_BY_WIDTH:
        raise ValueError(
            f"cannot infer the number of heads of a timm ViT of width {d} (known widths: {sorted(HEADS_BY_WIDTH)}); "
            "pass config=ViTConfig(...) or a variant name"
        )
    class_token, distilled = "cls_token" in entries, "dist_token" in entries
    registers = entries["reg_token"][0][1] if "reg_token" in entries else 0
    prefix = int(class_token) + int(distilled) + registers
    rows = entries["pos_embed"][0][1]
    no_embed_class = math.isqrt(rows) ** 2 == rows and math.isqrt(rows - prefix) ** 2 != rows - prefix
    grid = math.isqrt(rows if no_embed_class else rows - prefix)
    if grid * grid != (rows if no_embed_class else rows - prefix):
        raise ValueError(f"timm pos_embed has {rows} rows, which is not a square grid (+{prefix} prefix tokens)")
    fc_norm, map_head = "fc_norm.weight" in entries, "attn_pool.latent" in entries
    pool = "map" if map_head else "avg" if fc_norm or not class_token else "token"
    return ViTConfig(
        hidden_size=d,
        num_hidden_layers=depth,
        num_attention_heads=HEADS_BY_WIDTH[d],
        intermediate_size=entries["blocks.0.mlp.fc1.weight"][0][0],
        layer_norm_eps=1e-6,
        image_size=grid * ph if ph == pw else (grid * ph, grid * pw),
        patch_size=ph if ph == pw else (ph, pw),
        num_channels=channels,
        qkv_bias="blocks.0.attn.qkv.bias" in entries,
        num_labels=entries["head.weight"][0][0] if "head.weight" in entries else 0,
        class_token=class_token,
        num_register_tokens=registers,
        distilled=distilled,
        no_embed_class=no_embed_class,
        global_pool=pool,
        fc_norm=fc_norm,
        layer_scale_init_value=1e-5 if "blocks.0.ls1.gamma" in entries else None,
        qk_norm="blocks.0.attn.q_norm.weight" in entries,
        pos_embed_antialias=True,  # timm's resample_abs_pos_embed (dynamic_img_size, new img_size) antialiases
    )


def has_head(entries: dict) -> bool:
    return "head.weight" in entries


__all__ = ["MARKER", "has_head", "infer_config", "rules"]
