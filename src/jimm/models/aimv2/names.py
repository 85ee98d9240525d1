"""HF AIMv2 vision tensor names <-> jimm parameters: the family's name table, as data.

transformers' `Aimv2VisionModel` (no v5 rename: the names on disk are the names in memory) holds
`embeddings.{patch_embed, rms_norm, position_embedding}`, `encoder.layers.N.{rms_norm1, attention.{q,k,v,out}_proj,
rms_norm2, ffn.{gate,up,down}_proj}`, `rms_norm` and, with `use_head`, `head.{cls_token, k_proj, v_proj,
output_proj}`. Biases only where `qkv_bias` (attention and head k / v) or `mlp_bias` say. A LiT pair holds the
same under `vision_model.`, and its text tower (`Aimv2TextModel`) under `text_model.`: `embeddings.{token_embedding,
position_embedding}`, the same block rows, `rms_norm`; the projections and `logit_scale` are named as CLIP's.
"""

from __future__ import annotations

from ...io.state import Slot, identity
from ..converters import conv_to_hf, conv_to_jimm, heads_bias, heads_in, heads_out, linear
from .config import AIMv2Config, AIMv2LiTConfig, AIMv2TextConfig

LAYERS = (("encoder", "blocks", "layers"),)
PAIR_PREFIX = "vision_model."  # where a LiT pair (`Aimv2Model`) keeps its vision tower

# One row per block tensor: (HF name under `encoder.layers.N.`, jimm path under the blocks, index after the
# layer, converter kind, bias flag that gates it: None always, else the config field).
BLOCK_ROWS = (
    ("rms_norm1.weight", "norm1.scale", (), "vector", None),
    ("attention.q_proj.weight", "attn.qkv_kernel", (slice(None), 0), "heads_in", None),
    ("attention.k_proj.weight", "attn.qkv_kernel", (slice(None), 1), "heads_in", None),
    ("attention.v_proj.weight", "attn.qkv_kernel", (slice(None), 2), "heads_in", None),
    ("attention.q_proj.bias", "attn.qkv_bias", (0,), "heads_bias", "qkv_bias"),
    ("attention.k_proj.bias", "attn.qkv_bias", (1,), "heads_bias", "qkv_bias"),
    ("attention.v_proj.bias", "attn.qkv_bias", (2,), "heads_bias", "qkv_bias"),
    ("attention.out_proj.weight", "attn.out_kernel", (), "heads_out", None),
    ("attention.out_proj.bias", "attn.out_bias", (), "vector", "qkv_bias"),
    ("rms_norm2.weight", "norm2.scale", (), "vector", None),
    ("ffn.gate_proj.weight", "mlp.gate_up_kernel", (slice(None), 0), "mlp_in", None),
    ("ffn.up_proj.weight", "mlp.gate_up_kernel", (slice(None), 1), "mlp_in", None),
    ("ffn.gate_proj.bias", "mlp.gate_up_bias", (0,), "mlp_bias", "mlp_bias"),
    ("ffn.up_proj.bias", "mlp.gate_up_bias", (1,), "mlp_bias", "mlp_bias"),
    ("ffn.down_proj.weight", "mlp.down_kernel", (), "mlp_out", None),
    ("ffn.down_proj.bias", "mlp.down_bias", (), "vector", "mlp_bias"),
)
# The attention-pooling head: `cls_token` is the probe (the query itself), k / v share one `[D, 2, N, H]` kernel.
HEAD_ROWS = (
    ("head.cls_token", "attn_pool.probe", (), "probe", None),
    ("head.k_proj.weight", "attn_pool.kv_kernel", (slice(None), 0), "heads_in", None),
    ("head.v_proj.weight", "attn_pool.kv_kernel", (slice(None), 1), "heads_in", None),
    ("head.k_proj.bias", "attn_pool.kv_bias", (0,), "heads_bias", "qkv_bias"),
    ("head.v_proj.bias", "attn_pool.kv_bias", (1,), "heads_bias", "qkv_bias"),
    ("head.output_proj.weight", "attn_pool.out_kernel", (), "heads_out", None),
    ("head.output_proj.bias", "attn_pool.out_bias", (), "vector", None),
)


def _kinds(config: AIMv2Config | AIMv2TextConfig) -> dict[str, tuple[tuple[int, ...], tuple]]:
    """Converter kind -> (HF shape, (to_jimm, to_hf))."""
    d, n, f = config.hidden_size, config.num_attention_heads, config.intermediate_size
    h = d // n
    return {
        "vector": ((d,), (identity, identity)),
        "probe": ((1, 1, d), (identity, identity)),
        "heads_in": ((d, d), heads_in(n, h)),
        "heads_bias": ((d,), heads_bias(n, h)),
        "heads_out": ((d, d), heads_out(n, h)),
        "mlp_in": ((f, d), (linear, linear)),
        "mlp_bias": ((f,), (identity, identity)),
        "mlp_out": ((d, f), (linear, linear)),
    }


def rows_to_slots(config, rows, *, hf_prefix: str, jimm_prefix: tuple[str, ...], index: tuple = ()) -> list[Slot]:
    """The `Slot`s of `rows` (`BLOCK_ROWS`, `HEAD_ROWS`) whose bias flag `config` sets."""
    kinds, out = _kinds(config), []
    for hf, ours, extra, kind, flag in rows:
        if flag is None or getattr(config, flag):
            shape, (to_jimm, to_hf) = kinds[kind]
            path = (*jimm_prefix, *ours.split("."))
            out.append(Slot(f"{hf_prefix}{hf}", path, (*index, *extra), shape, to_jimm, to_hf))
    return out


def block_slots(config, *, prefix: str, layers: tuple[str, ...]) -> list[Slot]:
    """Every block's tensors (`encoder.layers.N.*` under `prefix`) onto the stacked blocks at `layers`."""
    return [
        slot
        for i in range(config.num_hidden_layers)
        for slot in rows_to_slots(
            config, BLOCK_ROWS, hf_prefix=f"{prefix}encoder.layers.{i}.", jimm_prefix=layers, index=(i,)
        )
    ]


def text_name_table(config: AIMv2TextConfig, *, prefix: str = "text_model.", ours: tuple[str, ...] = ()) -> list[Slot]:
    """Every HF tensor of an AIMv2 text tower (`Aimv2TextModel`) onto a `TextTower` at `ours`."""
    d = config.hidden_size
    return [
        Slot(f"{prefix}embeddings.token_embedding.weight", (*ours, "token_embed"), (), (config.vocab_size, d)),
        Slot(
            f"{prefix}embeddings.position_embedding.weight",
            (*ours, "pos_embed"),
            (),
            (config.max_position_embeddings, d),
        ),
        *block_slots(config, prefix=prefix, layers=(*ours, "blocks", "layers")),
        Slot(f"{prefix}rms_norm.weight", (*ours, "norm", "scale"), (), (d,)),
    ]


def name_table(config: AIMv2Config, *, prefix: str = "", ours: tuple[str, ...] = ("encoder",)) -> list[Slot]:
    """Every HF tensor of an AIMv2 vision tower with this config, in transformers' order, onto a `VisionTower`
    at `ours` (`AIMv2Model.encoder`, or the LiT pair's `vision_model`)."""
    d, c = config.hidden_size, config.num_channels
    (ph, pw), (gh, gw) = config.patch_hw, config.grid_hw
    table = [
        Slot(
            f"{prefix}embeddings.patch_embed.weight",
            (*ours, "patch_embed", "kernel"),
            (),
            (d, c, ph, pw),
            conv_to_jimm,
            conv_to_hf,
        ),
        Slot(f"{prefix}embeddings.patch_embed.bias", (*ours, "patch_embed", "bias"), (), (d,)),
        Slot(f"{prefix}embeddings.rms_norm.weight", (*ours, "patch_norm", "scale"), (), (d,)),
    ]
    if not config.is_native:
        table.append(
            Slot(
                f"{prefix}embeddings.position_embedding.weight",
                (*ours, "pos_embed"),
                (),
                (gh * gw, d),
                lambda t: t[None],
                lambda t: t[0],
            )
        )
    table += block_slots(config, prefix=prefix, layers=(*ours, "blocks", "layers"))
    table.append(Slot(f"{prefix}rms_norm.weight", (*ours, "norm", "scale"), (), (d,)))
    if config.use_head:
        table += rows_to_slots(config, HEAD_ROWS, hf_prefix=prefix, jimm_prefix=ours)
    return table


def lit_name_table(config: AIMv2LiTConfig, around: list[Slot]) -> list[Slot]:
    """Every HF tensor of the LiT pair (`Aimv2Model`): AIMv2's two towers under `vision_model.` / `text_model.`,
    then `around` them the image-text family's projections and logit scale (`outer_slots`)."""
    vision = name_table(config.vision_config, prefix=PAIR_PREFIX, ours=("vision_model",))
    return [*vision, *text_name_table(config.text_config, ours=("text_model",)), *around]


__all__ = [
    "BLOCK_ROWS",
    "HEAD_ROWS",
    "LAYERS",
    "PAIR_PREFIX",
    "block_slots",
    "lit_name_table",
    "name_table",
    "rows_to_slots",
    "text_name_table",
]
