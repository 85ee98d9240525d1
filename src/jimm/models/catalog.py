"""The catalog: the hub checkpoints people load, by name, as data (`catalog_data.py`), and timm's vocabulary on it.

`list_models("*siglip*")` lists catalog names (fnmatch patterns, as timm); `create_model(name)` builds the
architecture with random weights from the entry's recorded `config.json` fields (under `nnx.eval_shape` nothing
is allocated, so a 7B model can be inspected on a laptop); `create_model(name, pretrained=True)` and
`jimm.from_pretrained(name)` load the entry's hub id. Each entry also says how its images are preprocessed and
its text tokenized, its parameter count at full depth (transformers' count for the same config, checked by the
tests) and where its facts come from.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import functools
import os
from typing import Any

FAMILIES = ("vit", "deit", "dinov2", "dinov3", "clip", "siglip", "siglip2")


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


@functools.cache
def _entries() -> dict[str, CatalogEntry]:
    from .catalog_data import ENTRIES

    return {entry.name: entry for entry in ENTRIES}


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted catalog names matching the fnmatch `pattern` (case-insensitive; None lists them all)."""
    names = sorted(_entries())
    if pattern is None:
        return names
    return [name for name in names if fnmatch.fnmatch(name.lower(), pattern.lower())]


def get_entry(name: str) -> CatalogEntry:
    """The catalog entry of `name` (a catalog name or its hub id)."""
    entries = _entries()
    if name in entries:
        return entries[name]
    by_hub = {entry.hub_id: entry for entry in entries.values()}
    if name in by_hub:
        return by_hub[name]
    close = [n for n in sorted(entries) if name.lower().replace("_", "-") in n] or sorted(entries)[:8]
    raise ValueError(
        f"{name!r} is not in the jimm catalog; did you mean one of {close[:8]}? "
        "(`jimm.list_models('*pattern*')` lists them; a hub id or folder loads with jimm.from_pretrained)"
    )


def is_catalog_name(name: Any) -> bool:
    """True when `name` is a catalog name (not a hub id or a folder)."""
    return isinstance(name, str) and name in _entries()


def resolve_name(name_or_path):
    """The hub id of a catalog name; anything else (a hub id, an existing folder of that name) unchanged."""
    if is_catalog_name(name_or_path) and not os.path.exists(name_or_path):
        return get_entry(name_or_path).hub_id
    return name_or_path


def model_class_of(entry: CatalogEntry) -> type:
    from .registry import class_for_config

    return class_for_config(entry.config, source=entry.name)


def create_model(name: str, *, pretrained: bool = False, **runtime: Any):
    """The catalog model `name`: random weights (eval mode), or the hub checkpoint's with `pretrained=True`.

    `runtime` keywords go to the class's `from_config` / `from_pretrained` (`dtype`, `param_dtype`, `sharding`,
    `attention_fn`, `rngs`, ...; with `pretrained=True` also `revision`, `cache_dir`, `num_classes`, ...).
    Under `nnx.eval_shape(lambda: jimm.create_model(name))` no parameter is allocated.
    """
    entry = get_entry(name)
    cls = model_class_of(entry)
    if pretrained:
        return cls.from_pretrained(entry.hub_id, **runtime)
    return cls.from_config(entry.hf_config(), **runtime)


def format_count(n: int) -> str:
    """A parameter count the way model cards write it: 86.6M, 6.72B."""
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def table(pattern: str | None = None) -> str:
    """The catalog entries matching `pattern` as an aligned text table (what `jimm models` prints)."""
    names = list_models(pattern)
    if not names:
        raise ValueError(f"no catalog model matches {pattern!r}; `jimm models` lists them all")
    rows = [("name", "family", "params", "hub id")]
    rows += [(e.name, e.family, format_count(e.params), e.hub_id) for e in map(get_entry, names)]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        f"{name:<{widths[0]}}  {family:<{widths[1]}}  {params:>{widths[2]}}  {hub}"
        for name, family, params, hub in rows
    )


def _image_facts(pre: Preprocessing) -> str:
    size = pre.size.get("shortest_edge") or pre.size["height"]
    crop = f", crop {pre.crop_size}" if pre.crop_size else ""
    return f"{size} {pre.resample}{crop}"


def markdown_table() -> str:
    """Every entry as a markdown table (docs/catalog.md holds this table; a test keeps them equal)."""
    rows = ["| name | family | params | hub id | images | text | unverified |", "|---|---|---:|---|---|---|---|"]
    for entry in map(get_entry, list_models()):
        text = f"{entry.tokenizer.kind}, {entry.tokenizer.max_length}" if entry.tokenizer else ""
        unverified = "; ".join(entry.unverified)
        rows.append(
            f"| {entry.name} | {entry.family} | {format_count(entry.params)} | `{entry.hub_id}` | "
            f"{_image_facts(entry.preprocessing)} | {text} | {unverified} |"
        )
    return "\n".join(rows)


def count_params(model) -> int:
    """Parameters of a (possibly abstract) NNX model: the sum of its `nnx.Param` sizes, nothing allocated."""
    import math

    import jax
    from flax import nnx

    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))


def abstract_param_count(name: str) -> int:
    """jimm's parameter count of catalog model `name` at full depth, from shapes only (`nnx.eval_shape`)."""
    from flax import nnx

    return count_params(nnx.eval_shape(lambda: create_model(name)))


__all__ = [
    "FAMILIES",
    "CatalogEntry",
    "Preprocessing",
    "TokenizerFacts",
    "abstract_param_count",
    "count_params",
    "create_model",
    "format_count",
    "get_entry",
    "is_catalog_name",
    "list_models",
    "markdown_table",
    "resolve_name",
    "table",
]
