"""HF DINOv3 ViT tensor names <-> jimm parameters: the family's name table, and the transformers-v5 rename.

On disk (what transformers saves and the hub holds): `embeddings.{cls_token, mask_token [1, 1, D],
register_tokens, patch_embeddings}`, `layer.N.{norm1, attention.{q,k,v,o}_proj, layer_scale1.lambda1, norm2,
mlp.{up_proj, down_proj} or mlp.{gate_proj, up_proj, down_proj}, layer_scale2.lambda1}`, `norm`; biases only
where the config has them (no `k_proj.bias` by default). transformers v5 holds the blocks as `model.layer.N`.
jimm's optional head is `classifier` (`Linear(2D, C)`), unprefixed.
"""

from __future__ import annotations

import functools
import re

import numpy as np

from ...io.state import Slot, identity
from ..converters import conv_to_hf, conv_to_jimm, heads_bias, heads_in, heads_out, linear
from .config import DINOv3Config

LAYERS = (("encoder", "blocks", "layers"),)
# Tensors only masked-image training reads, with transformers' init given the shape (`_init_weights`: zeros): a
# checkpoint may lack them (an exported graph drops the unused mask token).
MASKED_IMAGE_ONLY = {"embeddings.mask_token": functools.partial(np.zeros, dtype=np.float32)}
EMPTY_REGISTERS = "embeddings.register_tokens"  # transformers keeps a `[1, 0, D]` tensor when there are none


def name_table(config: DINOv3Config, *, prefix: str = "", with_head: bool) -> list[Slot]:
    """Every HF tensor of a DINOv3 ViT with this config, in transformers' order."""
    d, n, c, f = config.hidden_size, config.num_attention_heads, config.num_channels, config.intermediate_size
    h = d // n
    ph, pw = config.patch_hw
    table: list[Slot] = []

    def add(hf_name, param, index, hf_shape, to_jimm=identity, to_hf=identity):
        table.append(Slot(prefix + hf_name, tuple(param.split(".")), index, hf_shape, to_jimm, to_hf))

    add("embeddings.cls_token", "encoder.cls_token", (), (1, 1, d))
    add("embeddings.mask_token", "encoder.mask_token", (), (1, 1, d),
        lambda t: t.reshape(1, d), lambda t: t.reshape(1, 1, d))  # fmt: skip
    if config.num_register_tokens:
        add("embeddings.register_tokens", "encoder.reg_token", (), (1, config.num_register_tokens, d))
    add("embeddings.patch_embeddings.weight", "encoder.patch_embed.kernel", (), (d, c, ph, pw),
        conv_to_jimm, conv_to_hf)  # fmt: skip
    if config.use_patch_bias:
        add("embeddings.patch_embeddings.bias", "encoder.patch_embed.bias", (), (d,))
    blocks = "encoder.blocks.layers"
    flags = (config.query_bias, config.key_bias, config.value_bias)
    rows = {k: row for row, k in enumerate(k for k, on in enumerate(flags) if on)}  # q/k/v -> its bias row
    for i in range(config.num_hidden_layers):
        hf = f"layer.{i}"
        add(f"{hf}.norm1.weight", f"{blocks}.norm1.scale", (i,), (d,))
        add(f"{hf}.norm1.bias", f"{blocks}.norm1.bias", (i,), (d,))
        for k, name in enumerate(("q_proj", "k_proj", "v_proj")):
            add(f"{hf}.attention.{name}.weight", f"{blocks}.attn.qkv_kernel", (i, slice(None), k), (d, d),
                *heads_in(n, h))  # fmt: skip
            if flags[k]:
                add(f"{hf}.attention.{name}.bias", f"{blocks}.attn.qkv_bias", (i, rows[k]), (d,), *heads_bias(n, h))
        add(f"{hf}.attention.o_proj.weight", f"{blocks}.attn.out_kernel", (i,), (d, d), *heads_out(n, h))
        if config.proj_bias:
            add(f"{hf}.attention.o_proj.bias", f"{blocks}.attn.out_bias", (i,), (d,))
        add(f"{hf}.layer_scale1.lambda1", f"{blocks}.ls1.gamma", (i,), (d,))
        add(f"{hf}.norm2.weight", f"{blocks}.norm2.scale", (i,), (d,))
        add(f"{hf}.norm2.bias", f"{blocks}.norm2.bias", (i,), (d,))
        mlp = f"{blocks}.mlp"
        if config.use_gated_mlp:
            for k, half in enumerate(("gate_proj", "up_proj")):
                add(f"{hf}.mlp.{half}.weight", f"{mlp}.gate_up_kernel", (i, slice(None), k), (f, d), linear, linear)
                if config.mlp_bias:
                    add(f"{hf}.mlp.{half}.bias", f"{mlp}.gate_up_bias", (i, k), (f,))
            down = ("down_kernel", "down_bias")
        else:
            add(f"{hf}.mlp.up_proj.weight", f"{mlp}.fc1_kernel", (i,), (f, d), linear, linear)
            if config.mlp_bias:
                add(f"{hf}.mlp.up_proj.bias", f"{mlp}.fc1_bias", (i,), (f,))
            down = ("fc2_kernel", "fc2_bias")
        add(f"{hf}.mlp.down_proj.weight", f"{mlp}.{down[0]}", (i,), (d, f), linear, linear)
        if config.mlp_bias:
            add(f"{hf}.mlp.down_proj.bias", f"{mlp}.{down[1]}", (i,), (d,))
        add(f"{hf}.layer_scale2.lambda1", f"{blocks}.ls2.gamma", (i,), (d,))
    add("norm.weight", "encoder.norm.scale", (), (d,))
    add("norm.bias", "encoder.norm.bias", (), (d,))
    if with_head:
        head = (config.num_labels, 2 * d)
        table.append(Slot("classifier.weight", ("classifier", "kernel"), (), head, linear, linear))
        table.append(Slot("classifier.bias", ("classifier", "bias"), (), (config.num_labels,)))
    return table


V5_LAYERS = re.compile(r"^model\.layer\.")


def classic_name(name: str) -> str:
    """transformers v5's in-memory `model.layer.N.*` -> the on-disk `layer.N.*`."""
    return V5_LAYERS.sub("layer.", name)


__all__ = ["EMPTY_REGISTERS", "LAYERS", "MASKED_IMAGE_ONLY", "classic_name", "name_table"]
