"""The records of the catalog (`catalog_data.py` holds the entries, `catalog.py` looks them up)."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

FAMILIES = ("vit", "deit", "dinov2", "dinov3", "clip", "siglip", "siglip2", "aimv2")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Preprocessing:
    """The checkpoint's `preprocessor_config.json` in brief: resize (then crop), rescale by 1/255, normalise."""

    processor: str  # the transformers image processor class
    size: dict[str, int]  # {"height", "width"} (resized exactly) or {"shortest_edge"} (aspect kept)
    crop_size: int | None  # centre crop to crop_size x crop_size; None: no crop
    resample: str  # "bilinear" | "bicubic" (PIL filters 2 | 3)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokenizerFacts:
    """How the text tower's inputs were made in training (see `jimm.text`)."""

    kind: str  # "clip" (byte-level BPE), "siglip" (sentencepiece), "siglip2" (Gemma tokenizer.json)
    max_length: int  # the text length the tower was trained with (its position table may be longer)
    padding: str  # "max_length": pad every text to max_length; "longest": pooling ignores what follows EOS
    pad_token: str
    lowercase: bool


@dataclasses.dataclass(frozen=True, kw_only=True)
class CatalogEntry:
    """One hub checkpoint. `config` holds the architecture fields of its `config.json` (as published, HF class
    defaults where the hub file omits a field); `unverified` names facts not confirmed from a published copy."""

    name: str
    hub_id: str
    family: str
    config: dict[str, Any]
    preprocessing: Preprocessing
    tokenizer: TokenizerFacts | None
    params: int  # transformers' parameter count for `config` at full depth (its architectures' class)
    source: str
    unverified: tuple[str, ...] = ()
    notes: str = ""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"catalog entry {self.name}: unknown family {self.family!r}; known: {FAMILIES}")

    def hf_config(self) -> dict[str, Any]:
        """A fresh copy of the recorded config.json fields (safe to modify)."""
        return copy.deepcopy(self.config)

    @property
    def architecture(self) -> str:
        return self.config["architectures"][0]


__all__ = ["FAMILIES", "CatalogEntry", "Preprocessing", "TokenizerFacts"]
