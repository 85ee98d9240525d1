"""AIMv2Config: the architecture of an AIMv2 vision tower, to and from HF `config.json` (`Aimv2VisionConfig`).

Field names and class defaults are transformers' (AIMv2-L/14 at 224 px: width 1024, 24 layers, 8 heads of 128,
SwiGLU 2816, RMSNorm eps 1e-5, no attention or MLP bias, the attention-pooling head on). Reading is strict: an
unknown field set to anything but its harmless default is an error naming it. A LiT pair's config
(`model_type: aimv2`) is `AIMv2LiTConfig` (the image-text family's pair config over the two tower configs here);
`AIMv2Model` reads its `vision_config`.

What changes the maths, and how it maps onto the shared tower: RMSNorm everywhere (`norm="rmsnorm"`), an RMSNorm
on the patch tokens before positions (`patch_norm`), no class token, a learned position table for the patches
or, with `is_native`, 2-D sin-cos positions for any grid (`position="sincos"`), SwiGLU (`mlp="gated"`,
`hidden_act`), `qkv_bias` on q, k, v and the attention output alike, `mlp_bias`, and the attention-pooling head
(`use_head`: `global_pool="probe"`, else no pooled output).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from ...common.text import TextTowerConfig
from ...common.transformer import ACTIVATIONS
from ...common.vision import VisionTowerConfig
from ..hf_config import check_fields, check_values, pair
from ..image_text.config import PairConfig

MODEL_TYPE = "aimv2_vision_model"
PAIR_MODEL_TYPE = "aimv2"  # the LiT image-text pair; its vision tower loads into AIMv2Model


@dataclasses.dataclass(frozen=True, kw_only=True)
class AIMv2Config:
    """An AIMv2 vision tower, with HF names and defaults."""

    hidden_size: int = 1024
    intermediate_size: int = 2816
    num_hidden_layers: int = 24
    num_attention_heads: int = 8
    num_channels: int = 3
    image_size: int | tuple[int, int] = 224
    patch_size: int | tuple[int, int] = 14
    hidden_act: str = "silu"
    attention_dropout: float = 0.0
    rms_norm_eps: float = 1e-5
    qkv_bias: bool = False
    mlp_bias: bool = False
    use_head: bool = True
    is_native: bool = False

    model_type = MODEL_TYPE
    MODEL_TYPE: ClassVar[str] = MODEL_TYPE  # the image-text family's name for it (`AIMv2LiTConfig.VISION`)

    def __post_init__(self) -> None:
        owner = "AIMv2Config"
        check_values(
            owner,
            self,
            positive=("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels"),
            unit=("attention_dropout",),
        )
        for name in ("image_size", "patch_size"):
            value = getattr(self, name)
            object.__setattr__(self, name, value if isinstance(value, int) else pair(value, f"{owner}.{name}"))
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"{owner}.hidden_act={self.hidden_act!r} is not one of {sorted(ACTIVATIONS)}")
        if not self.rms_norm_eps > 0:
            raise ValueError(f"{owner}.rms_norm_eps must be > 0, got {self.rms_norm_eps}")
        VisionTowerConfig(**self._tower_fields())  # sizes, heads, sin-cos width: one error if they do not fit

    @property
    def image_hw(self) -> tuple[int, int]:
        return pair(self.image_size, "image_size")

    @property
    def patch_hw(self) -> tuple[int, int]:
        return pair(self.patch_size, "patch_size")

    @property
    def grid_hw(self) -> tuple[int, int]:
        (ih, iw), (ph, pw) = self.image_hw, self.patch_hw
        return ih // ph, iw // pw

    def replace(self, **changes: Any) -> AIMv2Config:
        return dataclasses.replace(self, **changes)

    def _tower_fields(self) -> dict[str, Any]:
        return dict(
            hidden_size=self.hidden_size,
            num_layers=self.num_hidden_layers,
            num_heads=self.num_attention_heads,
            mlp_dim=self.intermediate_size,
            act=self.hidden_act,
            eps=self.rms_norm_eps,
            norm="rmsnorm",
            patch_norm=True,
            image_size=self.image_hw,
            patch_size=self.patch_hw,
            num_channels=self.num_channels,
            qkv_bias=(self.qkv_bias,) * 3,
            out_bias=self.qkv_bias,
            mlp="gated",
            mlp_bias=self.mlp_bias,
            class_token=False,
            position="sincos" if self.is_native else "learned",
            pos_embed_prefix="none",
            global_pool="probe" if self.use_head else "none",
            attention_dropout=self.attention_dropout,
        )

    def tower(self) -> VisionTowerConfig:
        """The shared vision tower this config describes."""
        return VisionTowerConfig(**self._tower_fields())

    @classmethod
    def from_hf_dict(cls, config: dict[str, Any], *, family: str = "jimm.AIMv2Model") -> AIMv2Config:
        """Build from an HF `config.json` dict (a vision tower's, or a LiT pair's `vision_config`); unknown or
        unsupported non-default fields are an error naming `family`, the class reading it."""
        if not isinstance(config, dict):
            raise TypeError(f"expected an HF config dict, got {type(config).__name__}")
        model_type = config.get("model_type", MODEL_TYPE)
        if model_type == PAIR_MODEL_TYPE:
            if "vision_config" not in config:  # Apple's first hub files: flat fields, `auto_map`, `trunk.*` tensors
                raise ValueError(
                    "config has model_type='aimv2' without a vision_config: Apple's remote-code layout "
                    "(trust_remote_code), which jimm does not read; use the checkpoint as transformers >= 4.54 saves "
                    "it (Aimv2VisionModel, or Aimv2Model for the LiT pair)"
                )
            config = config["vision_config"]
            model_type = config.get("model_type", MODEL_TYPE)
        if model_type != MODEL_TYPE:
            raise ValueError(
                f"config has model_type={model_type!r}; jimm.AIMv2Model reads '{MODEL_TYPE}' and '{PAIR_MODEL_TYPE}' "
                "configs (jimm.from_pretrained picks the class for any family)"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        check_fields(config, fields, family=family)
        kwargs = {k: config[k] for k in fields if k in config}
        for key in ("image_size", "patch_size"):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def to_hf_dict(self, *, architecture: str = "Aimv2VisionModel") -> dict[str, Any]:
        """The complete HF `config.json` dict of the vision tower."""
        out: dict[str, Any] = {"architectures": [architecture], "model_type": MODEL_TYPE, "initializer_range": 0.02}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = list(value) if isinstance(value, tuple) else value
        return dict(sorted(out.items()))


@dataclasses.dataclass(frozen=True, kw_only=True)
class AIMv2TextConfig:
    """The LiT pair's text tower (`Aimv2TextConfig`), with HF names and defaults: the vision blocks (RMSNorm,
    SwiGLU, no biases) over token and position embeddings, causal, pooled at the first `eos_token_id`.

    transformers builds the causal mask only when an `attention_mask` is passed (without one, or under SDPA with an
    all-ones one, its text tower runs bidirectionally); Apple's reference is always causal, and so is jimm: it equals
    transformers given a mask that pads, or any mask with eager attention.
    """

    vocab_size: int = 49408
    hidden_size: int = 768
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 6
    max_position_embeddings: int = 77
    hidden_act: str = "silu"
    attention_dropout: float = 0.0
    eos_token_id: int = 49407
    rms_norm_eps: float = 1e-5
    qkv_bias: bool = False
    mlp_bias: bool = False

    model_type = "aimv2_text_model"
    MODEL_TYPE: ClassVar[str] = model_type

    def __post_init__(self) -> None:
        owner = "AIMv2TextConfig"
        check_values(
            owner,
            self,
            positive=("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"),
            unit=("attention_dropout",),
        )
        self.tower()  # the tower's own checks: one error naming the field

    def tower(self) -> TextTowerConfig:
        return TextTowerConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_hidden_layers,
            num_heads=self.num_attention_heads,
            mlp_dim=self.intermediate_size,
            max_positions=self.max_position_embeddings,
            act=self.hidden_act,
            eps=self.rms_norm_eps,
            causal=True,
            pooling="eos",
            eos_token_id=self.eos_token_id,
            attention_dropout=self.attention_dropout,
            norm="rmsnorm",
            mlp="gated",
            qkv_bias=self.qkv_bias,
            out_bias=self.qkv_bias,
            mlp_bias=self.mlp_bias,
        )

    @classmethod
    def from_hf_dict(cls, config: dict[str, Any] | None, *, family: str = "jimm AIMv2 text") -> AIMv2TextConfig:
        """Build from an `aimv2_text_model` dict (a LiT pair's `text_config`); unknown fields are an error.

        transformers allows a list of `eos_token_id`s; its text tower compares the ids with the whole value, which
        only works for one id, so jimm takes an int and says so for a list.
        """
        config = dict(config or {})
        if config.get("model_type", cls.MODEL_TYPE) != cls.MODEL_TYPE:
            raise ValueError(f"{family}: expected an {cls.MODEL_TYPE!r} text_config, got {config['model_type']!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        check_fields(config, fields, family=family)
        if not isinstance(config.get("eos_token_id", 0), int):
            raise ValueError(f"{family}: text_config.eos_token_id must be one int, got {config['eos_token_id']!r}")
        return cls(**{k: config[k] for k in fields if config.get(k) is not None})

    def to_hf_dict(self) -> dict[str, Any]:
        """The HF `text_config` dict (`Aimv2TextConfig`)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return dict(sorted({**out, "model_type": self.MODEL_TYPE, "initializer_range": 0.02}.items()))


@dataclasses.dataclass(frozen=True, kw_only=True)
class AIMv2LiTConfig(PairConfig):
    """transformers' `Aimv2Config`: the LiT pair (vision tower with its probe head, causal text tower), both
    projected without bias to `projection_dim`; the logit scale is clamped to `[0, ln max_logit_scale]`.

    Parsing and writing are the image-text family's (`PairConfig`), over `AIMv2Config` / `AIMv2TextConfig`.
    """

    MODEL_TYPE = PAIR_MODEL_TYPE
    ARCHITECTURE = "Aimv2Model"
    FAMILY = "jimm.AIMv2"
    VISION = AIMv2Config
    TEXT = AIMv2TextConfig
    vision_config: AIMv2Config = dataclasses.field(default_factory=AIMv2Config)
    text_config: AIMv2TextConfig = dataclasses.field(default_factory=AIMv2TextConfig)
    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592  # ln(1 / 0.07)
    max_logit_scale: float = 100.0
    num_labels: int = 2
    id2label: dict[int, str] | None = None

    __hash__ = PairConfig.__hash__  # a dataclass would generate one that fails on the id2label dict

    def __post_init__(self) -> None:
        self._check_labels()
        if not self.vision_config.use_head:
            raise ValueError(
                "AIMv2LiTConfig: the pair's image embedding is the attention-pooling head's, so vision_config.use_head "
                "must be true"
            )
        if not self.max_logit_scale >= 1:
            raise ValueError(
                f"AIMv2LiTConfig.max_logit_scale must be >= 1 (its log is the clamp), got {self.max_logit_scale}"
            )


__all__ = ["MODEL_TYPE", "PAIR_MODEL_TYPE", "AIMv2Config", "AIMv2LiTConfig", "AIMv2TextConfig"]
