"""HF DINOv2 tensor names <-> jimm parameters: the family's name table, and the transformers-v5 renames.

Classic names are what transformers saves (and the hub holds): `embeddings.{cls_token, mask_token,
position_embeddings, register_tokens, patch_embeddings.projection}`, `encoder.layer.N.{norm1,
attention.attention.{query,key,value}, attention.output.dense, layer_scale1.lambda1, norm2, mlp.fc1, mlp.fc2,
layer_scale2.lambda1}`, `layernorm`; giant's SwiGLU is `mlp.weights_in` (gate and up stacked, gate first) and
`mlp.weights_out`. A classifier prefixes the backbone with `dinov2.` / `dinov2_with_registers.` and adds
`classifier` (`Linear(2D, C)`).

transformers v5 renames in memory: `attention.{q,k,v,o}_proj` and giant's `mlp.{gate_proj, up_proj, down_proj}`
(`weights_in` split in two). `classic_name` maps the one-to-one renames back; the split gate/up halves fill the
fused kernel's two slots directly (`name_table(..., split_swiglu=True)`), so nothing is concatenated.
"""

from __future__ import annotations

import functools
import re

import numpy as np

from ...io.state import Slot, identity
from ..converters import conv_to_hf, conv_to_jimm, heads_bias, heads_in, heads_out, linear
from .config import REGISTERS, DINOv2Config

LAYERS = (("encoder", "blocks", "layers"),)
"""Where the stacked blocks live in `nnx.state(model)`."""
# Tensors only masked-image training reads, with transformers' init given the shape (`_init_weights`: zeros): a
# checkpoint may lack them (real DINOv2-S/14 weights converted from an exported graph drop the mask token).
MASKED_IMAGE_ONLY = {"embeddings.mask_token": functools.partial(np.zeros, dtype=np.float32)}


def fused_in(d: int, f: int):
    """SwiGLU's stacked `[2F, D]` weight (gate rows first) <-> jimm's `[D, 2, F]` kernel, and the `[2F]` bias."""
    weight = (lambda w: w.T.reshape(d, 2, f), lambda k: k.reshape(d, 2 * f).T)
    bias = (lambda b: b.reshape(2, f), lambda b: b.reshape(2 * f))
    return weight, bias


def model_prefix(config: DINOv2Config) -> str:
    """The backbone's prefix in a classifier checkpoint (`Dinov2ForImageClassification.dinov2`)."""
    return "dinov2_with_registers." if config.model_type == REGISTERS else "dinov2."


def name_table(config: DINOv2Config, *, prefix: str, with_head: bool, split_swiglu: bool = False) -> list[Slot]:
    """Every HF tensor of a DINOv2 with this config, in transformers' order (v5 gate/up halves if `split_swiglu`)."""
    d, n, c, f = config.hidden_size, config.num_attention_heads, config.num_channels, config.mlp_dim
    h = d // n
    ph, pw = config.patch_hw
    gh, gw = config.grid_hw
    table: list[Slot] = []

    def add(hf_name, param, index, hf_shape, to_jimm=identity, to_hf=identity):
        table.append(Slot(prefix + hf_name, tuple(param.split(".")), index, hf_shape, to_jimm, to_hf))

    add("embeddings.cls_token", "encoder.cls_token", (), (1, 1, d))
    if config.use_mask_token:
        add("embeddings.mask_token", "encoder.mask_token", (), (1, d))
    add("embeddings.position_embeddings", "encoder.pos_embed", (), (1, 1 + gh * gw, d))
    if config.num_register_tokens:
        add("embeddings.register_tokens", "encoder.reg_token", (), (1, config.num_register_tokens, d))
    add("embeddings.patch_embeddings.projection.weight", "encoder.patch_embed.kernel", (), (d, c, ph, pw),
        conv_to_jimm, conv_to_hf)  # fmt: skip
    add("embeddings.patch_embeddings.projection.bias", "encoder.patch_embed.bias", (), (d,))
    blocks = "encoder.blocks.layers"
    (w_in, b_in) = fused_in(d, f)
    for i in range(config.num_hidden_layers):
        hf = f"encoder.layer.{i}"
        add(f"{hf}.norm1.weight", f"{blocks}.norm1.scale", (i,), (d,))
        add(f"{hf}.norm1.bias", f"{blocks}.norm1.bias", (i,), (d,))
        for k, name in enumerate(("query", "key", "value")):
            add(f"{hf}.attention.attention.{name}.weight", f"{blocks}.attn.qkv_kernel", (i, slice(None), k), (d, d),
                *heads_in(n, h))  # fmt: skip
            if config.qkv_bias:
                add(f"{hf}.attention.attention.{name}.bias", f"{blocks}.attn.qkv_bias", (i, k), (d,), *heads_bias(n, h))
        add(f"{hf}.attention.output.dense.weight", f"{blocks}.attn.out_kernel", (i,), (d, d), *heads_out(n, h))
        add(f"{hf}.attention.output.dense.bias", f"{blocks}.attn.out_bias", (i,), (d,))
        add(f"{hf}.layer_scale1.lambda1", f"{blocks}.ls1.gamma", (i,), (d,))
        add(f"{hf}.norm2.weight", f"{blocks}.norm2.scale", (i,), (d,))
        add(f"{hf}.norm2.bias", f"{blocks}.norm2.bias", (i,), (d,))
        mlp = f"{blocks}.mlp"
        if not config.use_swiglu_ffn:
            add(f"{hf}.mlp.fc1.weight", f"{mlp}.fc1_kernel", (i,), (f, d), linear, linear)
            add(f"{hf}.mlp.fc1.bias", f"{mlp}.fc1_bias", (i,), (f,))
            add(f"{hf}.mlp.fc2.weight", f"{mlp}.fc2_kernel", (i,), (d, f), linear, linear)
            add(f"{hf}.mlp.fc2.bias", f"{mlp}.fc2_bias", (i,), (d,))
        else:
            if split_swiglu:
                for k, half in enumerate(("gate_proj", "up_proj")):
                    add(f"{hf}.mlp.{half}.weight", f"{mlp}.gate_up_kernel", (i, slice(None), k), (f, d), linear, linear)
                    add(f"{hf}.mlp.{half}.bias", f"{mlp}.gate_up_bias", (i, k), (f,))
            else:
                add(f"{hf}.mlp.weights_in.weight", f"{mlp}.gate_up_kernel", (i,), (2 * f, d), *w_in)
                add(f"{hf}.mlp.weights_in.bias", f"{mlp}.gate_up_bias", (i,), (2 * f,), *b_in)
            add(f"{hf}.mlp.weights_out.weight", f"{mlp}.down_kernel", (i,), (d, f), linear, linear)
            add(f"{hf}.mlp.weights_out.bias", f"{mlp}.down_bias", (i,), (d,))
        add(f"{hf}.layer_scale2.lambda1", f"{blocks}.ls2.gamma", (i,), (d,))
    add("layernorm.weight", "encoder.norm.scale", (), (d,))
    add("layernorm.bias", "encoder.norm.bias", (), (d,))
    if with_head:
        table.append(
            Slot("classifier.weight", ("classifier", "kernel"), (), (config.num_labels, 2 * d), linear, linear)
        )
        table.append(Slot("classifier.bias", ("classifier", "bias"), (), (config.num_labels,)))
    return table


# transformers v5 in-memory names -> classic names (v5 itself saves classic names).
V5_RENAMES = [
    (re.compile(r"\.attention\.q_proj\."), ".attention.attention.query."),
    (re.compile(r"\.attention\.k_proj\."), ".attention.attention.key."),
    (re.compile(r"\.attention\.v_proj\."), ".attention.attention.value."),
    (re.compile(r"\.attention\.o_proj\."), ".attention.output.dense."),
    (re.compile(r"\.mlp\.down_proj\."), ".mlp.weights_out."),
]
SPLIT_SWIGLU = re.compile(r"\.mlp\.(gate_proj|up_proj)\.")


def classic_name(name: str) -> str:
    for pattern, replacement in V5_RENAMES:
        name = pattern.sub(replacement, name)
    return name


def has_split_swiglu(names) -> bool:
    """True when the SwiGLU MLPs come as v5's separate `gate_proj` / `up_proj` (not the fused `weights_in`)."""
    return any(SPLIT_SWIGLU.search(name) for name in names)


__all__ = ["LAYERS", "MASKED_IMAGE_ONLY", "classic_name", "fused_in", "has_split_swiglu", "model_prefix", "name_table"]
