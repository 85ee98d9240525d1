"""Configs of two-tower image-text models (CLIP, SigLIP): HF `config.json` <-> frozen dataclasses.

A family declares three keyword-only dataclasses with transformers' field names and class defaults (hub
configs are often minimal: `google/siglip-base-patch16-224` names only the model types): a vision sub-config,
a text sub-config and the pair (`CLIPConfig`). The machinery here is shared: the pair config parses every layout
a checkpoint's `config.json` has — the pair (`model_type: clip`) and each standalone tower (`clip_vision_model`,
`clip_text_model`), the missing tower then at its class defaults — and writes each layout back. Reading is
strict: an unknown field set to anything is an error naming it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from ...common.transformer import ACTIVATIONS
from ..hf_config import (
    LEGACY_PRETRAINED_KEYS,
    LabelledConfig,
    check_fields,
    check_labels,
    check_types,
    check_values,
    read_labels,
    write_labels,
)

# Keys transformers 4.x configs carry that no jimm model uses: old CLIP sub-configs' never-read `dropout`, and the
# labels every 4.x sub-config wrote.
SUB_CONFIG_IGNORED = LEGACY_PRETRAINED_KEYS | {"dropout"}
TOWERS = ("vision", "text")


class SubConfig:
    """Shared behaviour of a tower's dataclass: strict HF parsing, HF writing, validation."""

    MODEL_TYPE: ClassVar[str]

    def __post_init__(self) -> None:
        name = type(self).__name__
        positive = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
        check_values(name, self, positive=positive, unit=("attention_dropout",))
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"{name}.hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"{name}.hidden_act={self.hidden_act!r} is not one of {sorted(ACTIVATIONS)}")
        try:
            self.tower()  # the architecture's own checks (patch grid, pooling rule, ...)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None

    def tower(self):
        raise NotImplementedError

    def _shared_tower_fields(self) -> dict[str, Any]:
        """The tower fields that every HF sub-config spells the same way."""
        return dict(
            hidden_size=self.hidden_size,
            num_layers=self.num_hidden_layers,
            num_heads=self.num_attention_heads,
            mlp_dim=self.intermediate_size,
            act=self.hidden_act,
            eps=self.layer_norm_eps,
            attention_dropout=self.attention_dropout,
        )

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_hf_dict(cls, raw: Mapping[str, Any] | None, *, family: str):
        """Parse one tower's HF dict (None or {} gives the class defaults); null fields take the default."""
        raw = dict(raw or {})
        if raw.get("model_type", cls.MODEL_TYPE) != cls.MODEL_TYPE:
            raise ValueError(
                f"{family}: expected a {cls.MODEL_TYPE!r} sub-config, got model_type={raw['model_type']!r}"
            )
        fields = {f.name: f.default for f in dataclasses.fields(cls)}
        check_fields(raw, fields, family=f"{family} ({cls.MODEL_TYPE})", ignored=SUB_CONFIG_IGNORED)
        values = {k: raw[k] for k in fields if raw.get(k) is not None}  # transformers: null is the default
        check_types(values, fields)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def to_hf_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
        return dict(sorted({**out, "model_type": self.MODEL_TYPE}.items()))


class PairConfig(LabelledConfig):
    """Shared behaviour of a family's pair config: the three on-disk layouts, labels, the image size.

    Subclasses are dataclasses with `vision_config`, `text_config`, `num_labels`, `id2label` and their own
    top-level fields; `model_type` is the family's pair model type (what image-processor defaults key on).
    """

    MODEL_TYPE: ClassVar[str]
    ARCHITECTURE: ClassVar[str]  # transformers' pair class, the default layout of `to_hf_dict`
    FAMILY: ClassVar[str]  # the jimm class names, for messages
    VISION: ClassVar[type]
    TEXT: ClassVar[type]
    # transformers 4.x CLIP configs could carry `text_config_dict` / `vision_config_dict`, which win over the dicts
    LEGACY_SUB_DICTS: ClassVar[bool] = False

    @property
    def model_type(self) -> str:
        return self.MODEL_TYPE

    def _check_labels(self) -> None:
        object.__setattr__(self, "id2label", check_labels(type(self).__name__, self.num_labels, self.id2label))

    @property
    def image_hw(self) -> tuple[int, int]:
        size = self.vision_config.image_size
        return (size, size) if isinstance(size, int) else tuple(size)

    def _top_fields(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if f.name not in ("vision_config", "text_config", *LABELS)]

    @classmethod
    def from_hf_dict(cls, raw: Mapping[str, Any]):
        """Build from a pair or a standalone-tower HF config dict; unknown non-default fields are an error."""
        if not isinstance(raw, Mapping):
            raise TypeError(f"expected an HF config dict, got {type(raw).__name__}")
        model_type = raw.get("model_type", cls.MODEL_TYPE)
        if model_type == cls.VISION.MODEL_TYPE:
            return cls(vision_config=cls.VISION.from_hf_dict(raw, family=cls.FAMILY), text_config=cls.TEXT())
        if model_type == cls.TEXT.MODEL_TYPE:
            return cls(vision_config=cls.VISION(), text_config=cls.TEXT.from_hf_dict(raw, family=cls.FAMILY))
        if model_type != cls.MODEL_TYPE:
            known = (cls.MODEL_TYPE, cls.VISION.MODEL_TYPE, cls.TEXT.MODEL_TYPE)
            raise ValueError(f"config has model_type={model_type!r}; {cls.FAMILY} reads {', '.join(map(repr, known))}")
        top = {f.name for f in dataclasses.fields(cls)} - set(LABELS)
        legacy = {"text_config_dict", "vision_config_dict"} if cls.LEGACY_SUB_DICTS else set()
        check_fields(raw, top | legacy, family=cls.FAMILY, ignored=LEGACY_PRETRAINED_KEYS)
        subs = {}
        for tower, sub_cls in (("vision", cls.VISION), ("text", cls.TEXT)):
            sub = dict(raw.get(f"{tower}_config") or {})
            sub.update(raw.get(f"{tower}_config_dict") or {})  # transformers: the *_dict values win
            subs[f"{tower}_config"] = sub_cls.from_hf_dict(sub, family=cls.FAMILY)
        kwargs = {k: raw[k] for k in top - {"vision_config", "text_config"} if raw.get(k) is not None}
        check_types(kwargs, {f.name: f.default for f in dataclasses.fields(cls)})
        num_labels, id2label = read_labels(raw)
        return cls(**subs, **kwargs, num_labels=num_labels, id2label=id2label)

    def to_hf_dict(
        self, *, architecture: str | None = None, tower: str | None = None, labels: bool = False
    ) -> dict[str, Any]:
        """The HF `config.json` dict of one layout: a standalone `tower` ("vision" / "text"), or the pair."""
        architecture = architecture or self.ARCHITECTURE
        if tower is not None:
            if tower not in TOWERS:
                raise ValueError(f"tower must be one of {TOWERS}, got {tower!r}")
            sub = self.vision_config if tower == "vision" else self.text_config
            return {"architectures": [architecture], **sub.to_hf_dict()}
        out: dict[str, Any] = {"architectures": [architecture], "model_type": self.MODEL_TYPE}
        out |= {name: getattr(self, name) for name in self._top_fields()}
        out |= {"text_config": self.text_config.to_hf_dict(), "vision_config": self.vision_config.to_hf_dict()}
        if labels:
            out |= write_labels(self.labels)
        return dict(sorted(out.items()))


LABELS = ("num_labels", "id2label")


__all__ = ["PairConfig", "SubConfig"]
