"""HF ViT / DeiT tensor names <-> jimm parameters: the family's name table.

The table maps each HF tensor (classic transformers names, `vit.encoder.layer.N...`, which transformers also
writes) to a slot of one jimm parameter with a pair of numpy converters. Layer tensors fill one index of a
stacked `[L, ...]` parameter, and q/k/v fill one index of the fused `[D, 3, N, H]` kernel. transformers-v5
in-memory names (`vit.layers.N.attention.q_proj`, `mlp.fc1`, ...) are normalised to the classic ones first.

Converters are shared by every family (`jimm.models.converters`).
"""

from __future__ import annotations

import re

from ...io.state import Slot, identity
from ..converters import conv_to_hf, conv_to_jimm, heads_bias, heads_in, heads_out, linear, map_head_slots
from .config import ViTConfig

LAYERS = (("encoder", "blocks", "layers"),)
"""Where the stacked blocks live in `nnx.state(model)`."""


def name_table(config: ViTConfig, *, prefix: str, with_head: bool) -> list[Slot]:
    """Every HF tensor of a ViT with this config, in the order transformers saves them."""
    d, n, f, c = config.hidden_size, config.num_attention_heads, config.intermediate_size, config.num_channels
    h = d // n
    ph, pw = config.patch_hw
    table: list[Slot] = []

    def add(hf_name, param, index, hf_shape, to_jimm=identity, to_hf=identity):
        table.append(Slot(prefix + hf_name, tuple(param.split(".")), index, hf_shape, to_jimm, to_hf))

    if config.class_token:
        add("embeddings.cls_token", "encoder.cls_token", (), (1, 1, d))
    if config.distilled:
        add("embeddings.distillation_token", "encoder.dist_token", (), (1, 1, d))
    if config.num_register_tokens:
        add("embeddings.register_tokens", "encoder.reg_token", (), (1, config.num_register_tokens, d))
    add("embeddings.position_embeddings", "encoder.pos_embed", (), (1, config.num_pos_embed, d))
    add("embeddings.patch_embeddings.projection.weight", "encoder.patch_embed.kernel", (), (d, c, ph, pw),
        conv_to_jimm, conv_to_hf)  # fmt: skip
    add("embeddings.patch_embeddings.projection.bias", "encoder.patch_embed.bias", (), (d,))
    blocks = "encoder.blocks.layers"
    for i in range(config.num_hidden_layers):
        hf = f"encoder.layer.{i}"
        for k, name in enumerate(("query", "key", "value")):
            add(f"{hf}.attention.attention.{name}.weight", f"{blocks}.attn.qkv_kernel", (i, slice(None), k), (d, d),
                *heads_in(n, h))  # fmt: skip
            if config.qkv_bias:
                add(f"{hf}.attention.attention.{name}.bias", f"{blocks}.attn.qkv_bias", (i, k), (d,), *heads_bias(n, h))
        add(f"{hf}.attention.output.dense.weight", f"{blocks}.attn.out_kernel", (i,), (d, d), *heads_out(n, h))
        add(f"{hf}.attention.output.dense.bias", f"{blocks}.attn.out_bias", (i,), (d,))
        add(f"{hf}.intermediate.dense.weight", f"{blocks}.mlp.fc1_kernel", (i,), (f, d), linear, linear)
        add(f"{hf}.intermediate.dense.bias", f"{blocks}.mlp.fc1_bias", (i,), (f,))
        add(f"{hf}.output.dense.weight", f"{blocks}.mlp.fc2_kernel", (i,), (d, f), linear, linear)
        add(f"{hf}.output.dense.bias", f"{blocks}.mlp.fc2_bias", (i,), (d,))
        for norm, ours in (("layernorm_before", "norm1"), ("layernorm_after", "norm2")):
            add(f"{hf}.{norm}.weight", f"{blocks}.{ours}.scale", (i,), (d,))
            add(f"{hf}.{norm}.bias", f"{blocks}.{ours}.bias", (i,), (d,))
        # Variants (issue 7): names follow DINOv2 (layer scale) and timm (qk-norm); see formats/__init__.py.
        if config.layer_scale_init_value is not None:
            add(f"{hf}.layer_scale1.lambda1", f"{blocks}.ls1.gamma", (i,), (d,))
            add(f"{hf}.layer_scale2.lambda1", f"{blocks}.ls2.gamma", (i,), (d,))
        if config.qk_norm:
            for qk in ("q_norm", "k_norm"):
                add(f"{hf}.attention.attention.{qk}.weight", f"{blocks}.attn.{qk}.scale", (i,), (h,))
                add(f"{hf}.attention.attention.{qk}.bias", f"{blocks}.attn.{qk}.bias", (i,), (h,))
    final, ours = ("fc_norm", "fc_norm") if config.fc_norm else ("layernorm", "norm")
    add(f"{final}.weight", f"encoder.{ours}.scale", (), (d,))
    add(f"{final}.bias", f"encoder.{ours}.bias", (), (d,))
    if config.global_pool == "map":
        table += map_head_slots(f"{prefix}attn_pool.", ("encoder", "attn_pool"), d, n, f)
    if config.add_pooling_layer:  # ViTModel's pooler
        add("pooler.dense.weight", "pooler.kernel", (), (config.pooler_size, d), linear, linear)
        add("pooler.dense.bias", "pooler.bias", (), (config.pooler_size,))
    if with_head:
        heads = [("cls_classifier", "classifier"), ("distillation_classifier", "classifier_dist")]
        for hf_head, ours in heads if config.distilled else [("classifier", "classifier")]:
            table.append(Slot(f"{hf_head}.weight", (ours, "kernel"), (), (config.num_labels, d), linear, linear))
            table.append(Slot(f"{hf_head}.bias", (ours, "bias"), (), (config.num_labels,)))
    return table


def head_name(config: ViTConfig) -> str:
    """The HF name of the (first) classifier weight: DeiT calls it `cls_classifier`."""
    return "cls_classifier.weight" if config.distilled else "classifier.weight"


def model_prefix(config: ViTConfig) -> str:
    return "deit." if config.distilled else "vit."


# transformers v5 in-memory names -> classic names (v5 itself saves classic names).
V5_RENAMES = [
    (re.compile(r"(^|\.)layers\.(\d+)\.attention\.q_proj\."), r"\1encoder.layer.\2.attention.attention.query."),
    (re.compile(r"(^|\.)layers\.(\d+)\.attention\.k_proj\."), r"\1encoder.layer.\2.attention.attention.key."),
    (re.compile(r"(^|\.)layers\.(\d+)\.attention\.v_proj\."), r"\1encoder.layer.\2.attention.attention.value."),
    (re.compile(r"(^|\.)layers\.(\d+)\.attention\.o_proj\."), r"\1encoder.layer.\2.attention.output.dense."),
    (re.compile(r"(^|\.)layers\.(\d+)\.mlp\.fc1\."), r"\1encoder.layer.\2.intermediate.dense."),
    (re.compile(r"(^|\.)layers\.(\d+)\.mlp\.fc2\."), r"\1encoder.layer.\2.output.dense."),
    (re.compile(r"(^|\.)layers\.(\d+)\.(layernorm_before|layernorm_after)\."), r"\1encoder.layer.\2.\3."),
]
POOLER = re.compile(r"^((vit|deit)\.)?pooler\.dense\.(weight|bias)$")


def classic_name(name: str) -> str:
    for pattern, replacement in V5_RENAMES:
        name = pattern.sub(replacement, name)
    return name


__all__ = ["LAYERS", "classic_name", "head_name", "model_prefix", "name_table"]
