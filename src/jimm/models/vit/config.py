"""ViTConfig: the architecture of a ViT, round-tripping to and from a Hugging Face `config.json`.

Only fields that change the maths live here; dtype, sharding and the attention kernel are constructor
arguments. Reading an HF config is strict: a field this package does not implement, set to anything but
its harmless default, is an error naming it (never a silent guess).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ...common.transformer import ACTIVATIONS
from ...common.vision import VisionTowerConfig
from ..hf_config import PatchGridConfig, check_fields, check_types, read_labels, write_labels

# ViT-specific fields that describe heads we do not build: accepted, not used.
VIT_IGNORED_KEYS = frozenset({"encoder_stride"})  # only used by ViTForMaskedImageModeling's decoder
# `architectures` that are transformers' headless model, built with its pooler (dense + activation on the class token).
POOLED_ARCHITECTURES = frozenset({"ViTModel", "DeiTModel"})
POOLER_ACTIVATIONS = frozenset({"tanh", *ACTIVATIONS})  # transformers' ACT2FN names the pooler may use

# HF fields we do not implement, with the only value we accept (the value that leaves the maths unchanged).
FIXED_HF_KEYS: dict[str, Any] = {"use_mask_token": False, "head_dim": None}


GLOBAL_POOLS = ("token", "avg", "map")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ViTConfig(PatchGridConfig):
    """Architecture of a ViT-for-image-classification, with HF `ViTConfig` field names and defaults (ViT-B/16)."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    layer_norm_eps: float = 1e-12
    image_size: int | tuple[int, int] = 224
    patch_size: int | tuple[int, int] = 16
    num_channels: int = 3
    qkv_bias: bool = True
    num_labels: int = 1000
    id2label: dict[int, str] | None = None  # None: HF's default names LABEL_0 ... LABEL_{n-1}
    # transformers' `ViTModel` / `DeiTModel` (config.json `architectures`): no classifier, and a pooler, `pooler_act`
    # on `Linear(D, pooler_output_size)` of the class token (its `pooler_output`). Not a config.json field.
    add_pooling_layer: bool = False
    pooler_output_size: int | None = None  # None: hidden_size, as transformers
    pooler_act: str = "tanh"
    # Variants beyond HF ViT (timm / big_vision / DeiT). The defaults are plain HF ViT, and `to_hf_dict` omits
    # a field at its default, so a plain model's config.json stays exactly what transformers writes.
    class_token: bool = True  # a learned [CLS] token before the patches
    num_register_tokens: int = 0  # "Vision Transformers Need Registers" (Darcet et al., 2023)
    distilled: bool = False  # DeiT's distillation token and second head (Touvron et al., 2021)
    no_embed_class: bool = False  # position embeddings cover the patches only (big_vision, DeiT-3, DINOv2-reg)
    global_pool: str = "token"  # "token" (class token), "avg" (mean of patch tokens) or "map" (attention probe)
    fc_norm: bool = False  # LayerNorm after pooling instead of before it (timm's avg-pool models)
    layer_scale_init_value: float | None = None  # LayerScale "Going deeper with Image Transformers" (CaiT)
    qk_norm: bool = False  # LayerNorm on queries and keys per head ("Scaling ViT to 22B", Dehghani et al.)
    drop_path_rate: float = 0.0  # stochastic depth, linearly increasing over depth (Huang et al., 2016)
    pos_embed_antialias: bool = False  # resample position embeddings as timm does (antialiased), not as HF

    __hash__ = PatchGridConfig.__hash__  # a dataclass would generate one that fails on the id2label dict

    def __post_init__(self) -> None:
        positive = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "num_channels")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"ViTConfig.{name} must be a positive int, got {value!r}")
        if not isinstance(self.num_labels, int) or self.num_labels < 0:
            raise ValueError(f"ViTConfig.num_labels must be a non-negative int, got {self.num_labels!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"ViTConfig.hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(
                f"ViTConfig.hidden_act={self.hidden_act!r} is not supported; choose one of {sorted(ACTIVATIONS)}"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"ViTConfig.{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"ViTConfig.layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        for (img, patch), axis in zip(zip(self.image_hw, self.patch_hw, strict=True), ("height", "width"), strict=True):
            if patch <= 0 or img < patch:  # not a multiple is fine: the grid is the whole patches (transformers)
                raise ValueError(f"ViTConfig image {axis} {img} is smaller than one patch ({axis} {patch})")
        if self.pooler_act not in POOLER_ACTIVATIONS:
            raise ValueError(
                f"ViTConfig.pooler_act={self.pooler_act!r} is not supported; choose one of {sorted(POOLER_ACTIVATIONS)}"
            )
        size = self.pooler_output_size
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
            raise ValueError(f"ViTConfig.pooler_output_size must be a positive int or None, got {size!r}")
        if self.add_pooling_layer and not self.class_token:
            raise ValueError("ViTConfig.add_pooling_layer=True (ViTModel's pooler) needs class_token=True")
        if self.global_pool not in GLOBAL_POOLS:
            raise ValueError(
                f"ViTConfig.global_pool={self.global_pool!r} is not supported; choose one of {GLOBAL_POOLS}"
            )
        if self.global_pool == "token" and not self.class_token:
            raise ValueError("ViTConfig.global_pool='token' needs class_token=True; use global_pool='avg' or 'map'")
        if self.distilled and not (self.class_token and self.global_pool == "token"):
            raise ValueError("ViTConfig.distilled=True needs class_token=True and global_pool='token' (DeiT)")
        if not isinstance(self.num_register_tokens, int) or self.num_register_tokens < 0:
            raise ValueError(
                f"ViTConfig.num_register_tokens must be a non-negative int, got {self.num_register_tokens!r}"
            )
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"ViTConfig.drop_path_rate must be in [0, 1), got {self.drop_path_rate!r}")
        if self.id2label is not None:
            labels = {int(k): str(v) for k, v in self.id2label.items()}
            if sorted(labels) != list(range(self.num_labels)):
                raise ValueError(
                    f"ViTConfig.id2label must have exactly the ids 0..{self.num_labels - 1} "
                    f"(num_labels={self.num_labels}), got {len(labels)} ids"
                )
            object.__setattr__(self, "id2label", labels)

    @property
    def pooler_size(self) -> int:
        """Width of ViTModel's pooler output."""
        return self.pooler_output_size or self.hidden_size

    @property
    def num_prefix_tokens(self) -> int:
        """Class, distillation and register tokens, in that order, before the patch tokens."""
        return int(self.class_token) + int(self.distilled) + self.num_register_tokens

    @property
    def num_tokens(self) -> int:
        """Tokens the encoder sees at the configured image size."""
        gh, gw = self.grid_hw
        return gh * gw + self.num_prefix_tokens

    @property
    def num_pos_embed(self) -> int:
        """Rows of the position-embedding table (the prefix tokens have none with `no_embed_class`)."""
        gh, gw = self.grid_hw
        return gh * gw + (0 if self.no_embed_class else self.num_prefix_tokens)

    def tower(self) -> VisionTowerConfig:
        """The shared vision tower this config describes."""
        return VisionTowerConfig(
            hidden_size=self.hidden_size,
            num_layers=self.num_hidden_layers,
            num_heads=self.num_attention_heads,
            mlp_dim=self.intermediate_size,
            act=self.hidden_act,
            eps=self.layer_norm_eps,
            image_size=self.image_hw,
            patch_size=self.patch_hw,
            num_channels=self.num_channels,
            qkv_bias=(self.qkv_bias,) * 3,
            class_token=self.class_token,
            distilled=self.distilled,
            num_register_tokens=self.num_register_tokens,
            pos_embed_prefix="none" if self.no_embed_class else "all",
            pos_resample="bicubic_antialias" if self.pos_embed_antialias else "bicubic",
            fc_norm=self.fc_norm,
            global_pool=self.global_pool,
            layer_scale_init_value=self.layer_scale_init_value,
            qk_norm=self.qk_norm,
            dropout=self.hidden_dropout_prob,
            attention_dropout=self.attention_probs_dropout_prob,
            drop_path_rate=self.drop_path_rate,
        )

    @classmethod
    def from_hf_dict(cls, config: dict[str, Any]) -> ViTConfig:
        """Build from an HF `config.json` dict; unknown or unsupported non-default fields are an error."""
        if not isinstance(config, dict):
            raise TypeError(f"expected an HF config dict, got {type(config).__name__}")
        model_type = config.get("model_type", "vit")
        if model_type not in ("vit", "deit"):
            raise ValueError(
                f"config has model_type={model_type!r}; jimm.VisionTransformer reads 'vit' and 'deit' configs"
            )
        if model_type == "deit":  # transformers' DeiT: ViT fields plus an always-present distillation token
            config = {**config, "distilled": True}
        fields = {f.name for f in dataclasses.fields(cls)} - {"id2label", "num_labels", "add_pooling_layer"}
        fixed = dict(FIXED_HF_KEYS)
        if config.get("head_dim") is not None:  # an explicit head_dim is fine when it is the implied one
            fixed["head_dim"] = config.get("hidden_size", 768) // config.get("num_attention_heads", 12)
        check_fields(config, fields, family="jimm.VisionTransformer", fixed=fixed, ignored=VIT_IGNORED_KEYS)
        kwargs = {k: config[k] for k in fields if k in config}
        check_types(kwargs, {f.name: f.default for f in dataclasses.fields(cls)})
        for key in ("image_size", "patch_size"):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = tuple(kwargs[key])
        num_labels, id2label = read_labels(config)
        pooled = bool(POOLED_ARCHITECTURES.intersection(config.get("architectures") or ()))
        return cls(**kwargs, num_labels=num_labels, id2label=id2label, add_pooling_layer=pooled)

    def to_hf_dict(self, *, architecture: str = "ViTForImageClassification") -> dict[str, Any]:
        """The complete HF `config.json` dict (classic field names, labels included)."""
        # A distilled model is transformers' DeiT: model_type "deit", whose distillation token is implicit.
        out: dict[str, Any] = {"architectures": [architecture], "model_type": "deit" if self.distilled else "vit"}
        for field in dataclasses.fields(self):
            if field.name in ("id2label", "num_labels", "add_pooling_layer", "pooler_output_size", "pooler_act"):
                continue
            if field.name == "distilled" or (
                field.name in VARIANT_DEFAULTS and getattr(self, field.name) == VARIANT_DEFAULTS[field.name]
            ):
                continue  # keep a plain model's config.json identical to transformers'
            value = getattr(self, field.name)
            out[field.name] = list(value) if isinstance(value, tuple) else value
        # transformers writes both always; a jimm config only when it has the pooler or they were set (round trip)
        if self.add_pooling_layer or self.pooler_output_size is not None:
            out["pooler_output_size"] = self.pooler_size
        if self.add_pooling_layer or self.pooler_act != "tanh":
            out["pooler_act"] = self.pooler_act
        out |= write_labels(self.labels)
        out["encoder_stride"] = self.patch_hw[0]
        out["initializer_range"] = 0.02
        return dict(sorted(out.items()))


VARIANT_DEFAULTS: dict[str, Any] = {
    f.name: f.default
    for f in dataclasses.fields(ViTConfig)
    if f.name
    in (
        "class_token",
        "num_register_tokens",
        "distilled",
        "no_embed_class",
        "global_pool",
        "fc_norm",
        "layer_scale_init_value",
        "qk_norm",
        "drop_path_rate",
        "pos_embed_antialias",
    )
}
