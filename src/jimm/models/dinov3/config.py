"""DINOv3Config: the architecture of a DINOv3 ViT, to and from HF `config.json` (`DINOv3ViTConfig`, `dinov3_vit`).

Field names and class defaults are transformers' (ViT-S/16: width 384, 12 layers, 6 heads, MLP 1536, no
registers; the hub checkpoints have 4). Reading is strict: an unknown field set to anything but its harmless
default is an error naming it.

What changes the maths, and how it maps onto the shared tower: 2-D RoPE on the patch tokens only
(`rope_theta`; class and register tokens unrotated; any grid), per-projection biases (`query_bias`,
`key_bias` off by default, `value_bias`, `proj_bias`), an MLP (`up`/`down`) or a gated MLP (`gate`, `up`,
`down`; `use_gated_mlp`, with `hidden_act`, SiLU on the hub's S+/H+/7B) with `mlp_bias`, LayerScale, LayerNorm
eps 1e-5, drop path at one rate in every block, jimm's `use_patch_bias=False` (no transformers equivalent:
written to config.json only when set), and train-time RoPE coordinate augmentation
(`pos_embed_shift`, `pos_embed_jitter`, `pos_embed_rescale`, drawn in train mode only, as transformers does).
transformers has no DINOv3 classifier; jimm's optional head is DINOv2's `Linear(2D, C)` on
`[CLS, mean(patch tokens)]`, saved as `classifier.*` next to the backbone tensors.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ...common.transformer import ACTIVATIONS
from ...common.vision import VisionTowerConfig
from ..hf_config import (
    BACKBONE_KEYS,
    PatchGridConfig,
    check_fields,
    check_labels,
    check_values,
    pair,
    read_labels,
    write_labels,
)

MODEL_TYPE = "dinov3_vit"
JIMM_FIELDS = {"use_patch_bias": True}  # written to config.json only when not at this default


@dataclasses.dataclass(frozen=True, kw_only=True)
class DINOv3Config(PatchGridConfig):
    """A DINOv3 ViT backbone (and optional `[CLS, mean(patches)]` classifier), with HF names and defaults."""

    patch_size: int | tuple[int, int] = 16
    hidden_size: int = 384
    intermediate_size: int = 1536
    num_hidden_layers: int = 12
    num_attention_heads: int = 6
    hidden_act: str = "gelu"
    attention_dropout: float = 0.0
    layer_norm_eps: float = 1e-5
    rope_theta: float = 100.0
    image_size: int | tuple[int, int] = 224
    num_channels: int = 3
    query_bias: bool = True
    key_bias: bool = False
    value_bias: bool = True
    proj_bias: bool = True
    mlp_bias: bool = True
    layerscale_value: float = 1.0
    drop_path_rate: float = 0.0
    use_gated_mlp: bool = False
    num_register_tokens: int = 0
    pos_embed_shift: float | None = None
    pos_embed_jitter: float | None = None
    pos_embed_rescale: float | None = 2.0
    use_patch_bias: bool = True  # jimm's (the original jimm's argument); transformers' patch conv has a bias
    num_labels: int = 0  # classes of jimm's `[CLS, mean(patches)]` head; 0 for a backbone
    id2label: dict[int, str] | None = None

    model_type = MODEL_TYPE  # one transformers class (a property-like constant, not a field)

    __hash__ = PatchGridConfig.__hash__  # a dataclass would generate one that fails on the id2label dict

    def __post_init__(self) -> None:
        owner = "DINOv3Config"
        check_values(
            owner,
            self,
            positive=("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels"),
            unit=("attention_dropout", "drop_path_rate"),
        )
        for name in ("image_size", "patch_size"):
            value = getattr(self, name)
            object.__setattr__(self, name, value if isinstance(value, int) else pair(value, f"{owner}.{name}"))
        if self.hidden_size % self.num_attention_heads or (self.hidden_size // self.num_attention_heads) % 4:
            raise ValueError(
                f"{owner}: hidden_size={self.hidden_size} / num_attention_heads={self.num_attention_heads} must give "
                "a head dimension divisible by 4 (2-D RoPE rotates y and x halves)"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"{owner}.hidden_act={self.hidden_act!r} is not one of {sorted(ACTIVATIONS)}")
        if not self.layer_norm_eps > 0 or not self.rope_theta > 0:
            raise ValueError(f"{owner}: layer_norm_eps and rope_theta must be > 0")
        if not isinstance(self.num_register_tokens, int) or self.num_register_tokens < 0:
            raise ValueError(f"{owner}.num_register_tokens must be a non-negative int, got {self.num_register_tokens}")
        for name in ("pos_embed_shift", "pos_embed_jitter", "pos_embed_rescale"):
            value = getattr(self, name)
            floor = 0.0 if name == "pos_embed_shift" else 1.0
            if value is not None and not (isinstance(value, int | float) and value >= floor):
                raise ValueError(f"{owner}.{name} must be None or a number >= {floor}, got {value!r}")
        object.__setattr__(self, "id2label", check_labels(owner, self.num_labels, self.id2label))
        VisionTowerConfig(**self._tower_fields())  # the image / patch sizes: one error if they do not fit

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + self.num_register_tokens

    def _tower_fields(self) -> dict[str, Any]:
        return dict(
            hidden_size=self.hidden_size,
            num_layers=self.num_hidden_layers,
            num_heads=self.num_attention_heads,
            mlp_dim=self.intermediate_size,
            act=self.hidden_act,
            eps=self.layer_norm_eps,
            image_size=self.image_hw,
            patch_size=self.patch_hw,
            num_channels=self.num_channels,
            patch_bias=self.use_patch_bias,
            qkv_bias=(self.query_bias, self.key_bias, self.value_bias),
            out_bias=self.proj_bias,
            mlp="gated" if self.use_gated_mlp else "mlp",
            mlp_bias=self.mlp_bias,
            num_register_tokens=self.num_register_tokens,
            mask_token=True,
            position="rope",
            pos_embed_prefix="none",
            rope_theta=float(self.rope_theta),
            layer_scale_init_value=self.layerscale_value,
            attention_dropout=self.attention_dropout,
            drop_path_rate=self.drop_path_rate,
            drop_path_uniform=True,
            rope_shift=self.pos_embed_shift,
            rope_jitter=self.pos_embed_jitter,
            rope_rescale=self.pos_embed_rescale,
        )

    def tower(self) -> VisionTowerConfig:
        """The shared vision tower this config describes."""
        return VisionTowerConfig(**self._tower_fields())

    @classmethod
    def from_hf_dict(cls, config: dict[str, Any]) -> DINOv3Config:
        """Build from an HF `config.json` dict; unknown or unsupported non-default fields are an error."""
        if not isinstance(config, dict):
            raise TypeError(f"expected an HF config dict, got {type(config).__name__}")
        model_type = config.get("model_type", MODEL_TYPE)
        if model_type != MODEL_TYPE:
            raise ValueError(
                f"config has model_type={model_type!r}; jimm.DINOv3Model reads '{MODEL_TYPE}' configs "
                "(jimm.from_pretrained picks the class for any family)"
            )
        fields = {f.name for f in dataclasses.fields(cls)} - {"id2label", "num_labels"}
        check_fields(config, fields, family="jimm.DINOv3Model", ignored=BACKBONE_KEYS)
        kwargs = {k: config[k] for k in fields if k in config}
        for key in ("image_size", "patch_size"):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = tuple(kwargs[key])
        num_labels, id2label = read_labels(config)
        return cls(**kwargs, num_labels=num_labels, id2label=id2label)

    def to_hf_dict(self, *, architecture: str = "DINOv3ViTModel") -> dict[str, Any]:
        """The complete HF `config.json` dict (labels included when the model has jimm's head)."""
        out: dict[str, Any] = {"architectures": [architecture], "model_type": MODEL_TYPE}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in ("id2label", "num_labels") or (
                field.name in JIMM_FIELDS and value == JIMM_FIELDS[field.name]
            ):
                continue
            out[field.name] = list(value) if isinstance(value, tuple) else value
        if self.num_labels > 0:
            out |= write_labels(self.labels)
        out["initializer_range"] = 0.02
        return dict(sorted(out.items()))


__all__ = ["MODEL_TYPE", "DINOv3Config"]
