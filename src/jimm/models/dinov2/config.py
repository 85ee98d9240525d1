"""DINOv2Config: the architecture of a DINOv2 (plain, with registers, giant's SwiGLU), to and from HF `config.json`.

Field names and class defaults are transformers' `Dinov2Config` / `Dinov2WithRegistersConfig` (hub configs are
minimal, so the defaults matter: the registers class defaults to patch 16 and 4 registers). Reading is strict:
a field jimm does not implement, set to anything but its harmless default, is an error naming it.

What changes the maths, and how it maps onto the shared tower:
- MLP width `int(hidden_size * mlp_ratio)` (`mlp_ratio` is an int in transformers); with `use_swiglu_ffn`
  (giant) two thirds of it rounded up to a multiple of 8, `((int(D * mlp_ratio * 2 / 3) + 7) // 8) * 8`, in a
  SiLU-gated MLP whatever `hidden_act` says (transformers' `Dinov2SwiGLUFFN`).
- Position embeddings cover the class token and the patches; registers go in after them. Other image sizes
  resample the patch rows bicubically in fp32: plain DINOv2 without antialiasing (transformers 5), with
  registers antialiased. `interpolate_offset` (jimm's, not transformers') is the original torch-hub models'
  legacy scale factor `(n + offset) / n0`: 0.1 reproduces `facebookresearch/dinov2` and transformers 4.x.
- `hidden_dropout_prob` drops the embeddings only; drop path uses one rate in every block (transformers).
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

PLAIN, REGISTERS = "dinov2", "dinov2_with_registers"
MODEL_TYPES = (PLAIN, REGISTERS)
# transformers' class defaults that differ between the two model types.
TYPE_DEFAULTS: dict[str, dict[str, Any]] = {PLAIN: {}, REGISTERS: {"patch_size": 16, "num_register_tokens": 4}}
JIMM_FIELDS = {"interpolate_offset": 0.0}  # written to config.json only when not at this default


def swiglu_hidden(hidden_size: int, mlp_ratio: int) -> int:
    """transformers' / DINOv2's SwiGLU width: two thirds of `D * mlp_ratio`, rounded up to a multiple of 8."""
    return (int(hidden_size * mlp_ratio * 2 / 3) + 7) // 8 * 8


@dataclasses.dataclass(frozen=True, kw_only=True)
class DINOv2Config(PatchGridConfig):
    """A DINOv2 backbone (and optional `[CLS, mean(patches)]` classifier), with HF field names and defaults."""

    model_type: str = PLAIN  # "dinov2" or "dinov2_with_registers" (which transformers class, which resampling)
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    mlp_ratio: int = 4
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    layer_norm_eps: float = 1e-6
    image_size: int | tuple[int, int] = 224
    patch_size: int | tuple[int, int] = 14
    num_channels: int = 3
    qkv_bias: bool = True
    layerscale_value: float = 1.0
    drop_path_rate: float = 0.0
    use_swiglu_ffn: bool = False
    use_mask_token: bool = True
    num_register_tokens: int = 0
    interpolate_offset: float = 0.0
    num_labels: int = 0  # classes of the `[CLS, mean(patches)]` head; 0 for a backbone
    id2label: dict[int, str] | None = None

    __hash__ = PatchGridConfig.__hash__  # a dataclass would generate one that fails on the id2label dict

    def __post_init__(self) -> None:
        owner = "DINOv2Config"
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"{owner}.model_type must be one of {MODEL_TYPES}, got {self.model_type!r}")
        if isinstance(self.mlp_ratio, float) and self.mlp_ratio.is_integer():
            object.__setattr__(self, "mlp_ratio", int(self.mlp_ratio))
        check_values(
            owner,
            self,
            positive=("hidden_size", "num_hidden_layers", "num_attention_heads", "mlp_ratio", "num_channels"),
            unit=("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"),
        )
        for name in ("image_size", "patch_size"):
            value = getattr(self, name)
            object.__setattr__(self, name, value if isinstance(value, int) else pair(value, f"{owner}.{name}"))
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"{owner}.hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"{owner}.hidden_act={self.hidden_act!r} is not one of {sorted(ACTIVATIONS)}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"{owner}.layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        if not isinstance(self.num_register_tokens, int) or self.num_register_tokens < 0:
            raise ValueError(f"{owner}.num_register_tokens must be a non-negative int, got {self.num_register_tokens}")
        if self.model_type == PLAIN and self.num_register_tokens:
            raise ValueError(
                f"{owner}: model_type 'dinov2' has no register tokens; use model_type='{REGISTERS}' for "
                f"num_register_tokens={self.num_register_tokens}"
            )
        if self.model_type == REGISTERS and not self.use_mask_token:
            raise ValueError(f"{owner}: '{REGISTERS}' always has a mask token (use_mask_token=True)")
        if self.interpolate_offset and self.model_type == REGISTERS:
            raise ValueError(
                f"{owner}.interpolate_offset applies to plain DINOv2 (bicubic without antialias); the registers "
                "models resample with antialiasing and no offset, as their torch-hub originals do"
            )
        if not 0.0 <= self.interpolate_offset < 1.0:
            raise ValueError(f"{owner}.interpolate_offset must be in [0, 1), got {self.interpolate_offset!r}")
        if self.use_swiglu_ffn and swiglu_hidden(self.hidden_size, self.mlp_ratio) <= 0:
            raise ValueError(f"{owner}: SwiGLU width of hidden_size={self.hidden_size} is not positive")
        object.__setattr__(self, "id2label", check_labels(owner, self.num_labels, self.id2label))
        VisionTowerConfig(**self._tower_fields())  # the image / patch sizes: one error if they do not fit

    @property
    def mlp_dim(self) -> int:
        """The MLP hidden width F (see the module docstring)."""
        if self.use_swiglu_ffn:
            return swiglu_hidden(self.hidden_size, self.mlp_ratio)
        return int(self.hidden_size * self.mlp_ratio)

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + self.num_register_tokens

    def _tower_fields(self) -> dict[str, Any]:
        return dict(
            hidden_size=self.hidden_size,
            num_layers=self.num_hidden_layers,
            num_heads=self.num_attention_heads,
            mlp_dim=self.mlp_dim,
            act="silu" if self.use_swiglu_ffn else self.hidden_act,
            eps=self.layer_norm_eps,
            image_size=self.image_hw,
            patch_size=self.patch_hw,
            num_channels=self.num_channels,
            qkv_bias=(self.qkv_bias,) * 3,
            mlp="gated" if self.use_swiglu_ffn else "mlp",
            num_register_tokens=self.num_register_tokens,
            mask_token=self.use_mask_token,
            pos_embed_prefix="class",
            pos_resample="bicubic_antialias" if self.model_type == REGISTERS else "bicubic",
            pos_interpolate_offset=self.interpolate_offset,
            layer_scale_init_value=self.layerscale_value,
            embed_dropout=self.hidden_dropout_prob,
            attention_dropout=self.attention_probs_dropout_prob,
            drop_path_rate=self.drop_path_rate,
            drop_path_uniform=True,
        )

    def tower(self) -> VisionTowerConfig:
        """The shared vision tower this config describes."""
        return VisionTowerConfig(**self._tower_fields())

    @classmethod
    def from_hf_dict(cls, config: dict[str, Any]) -> DINOv2Config:
        """Build from an HF `config.json` dict; unknown or unsupported non-default fields are an error."""
        if not isinstance(config, dict):
            raise TypeError(f"expected an HF config dict, got {type(config).__name__}")
        model_type = config.get("model_type", PLAIN)
        if model_type not in MODEL_TYPES:
            raise ValueError(
                f"config has model_type={model_type!r}; jimm.DINOv2Model reads {' and '.join(map(repr, MODEL_TYPES))} "
                "configs (jimm.from_pretrained picks the class for any family)"
            )
        fields = {f.name for f in dataclasses.fields(cls)} - {"id2label", "num_labels", "model_type"}
        fixed: dict[str, Any] = {"head_dim": config.get("hidden_size", 768) // config.get("num_attention_heads", 12)}
        if model_type == PLAIN:
            fields.discard("num_register_tokens")
        else:  # the registers class has no `use_mask_token`: its mask token is always there
            fields.discard("use_mask_token")
            fixed["use_mask_token"] = True
        check_fields(config, fields, family=f"jimm.DINOv2Model ({model_type})", fixed=fixed, ignored=BACKBONE_KEYS)
        kwargs = {**TYPE_DEFAULTS[model_type], **{k: config[k] for k in fields if k in config}}
        for key in ("image_size", "patch_size"):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = tuple(kwargs[key])
        num_labels, id2label = read_labels(config)
        return cls(model_type=model_type, **kwargs, num_labels=num_labels, id2label=id2label)

    def to_hf_dict(self, *, architecture: str | None = None) -> dict[str, Any]:
        """The complete HF `config.json` dict (labels included when the model has a head)."""
        head = self.num_labels > 0
        if architecture is None:
            stem = "Dinov2WithRegisters" if self.model_type == REGISTERS else "Dinov2"
            architecture = stem + ("ForImageClassification" if head else "Model")
        out: dict[str, Any] = {"architectures": [architecture], "model_type": self.model_type}
        skip = {"id2label", "num_labels", "model_type", "num_register_tokens" if self.model_type == PLAIN else ""}
        if self.model_type == REGISTERS:
            skip.add("use_mask_token")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in skip or (field.name in JIMM_FIELDS and value == JIMM_FIELDS[field.name]):
                continue
            out[field.name] = list(value) if isinstance(value, tuple) else value
        if head:
            out |= write_labels(self.labels)
        out["initializer_range"] = 0.02
        return dict(sorted(out.items()))


__all__ = ["MODEL_TYPES", "DINOv2Config", "swiglu_hidden"]
