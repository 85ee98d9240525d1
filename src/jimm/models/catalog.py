"""The catalog: the hub checkpoints people load, by name, as data (`catalog_data.py`), and timm's vocabulary on it.

`list_models("*siglip*")` lists catalog names (fnmatch patterns, as timm); `jimm.create_model(name)` (`factory.py`)
builds the architecture with random weights from the entry's recorded `config.json` fields (under `nnx.eval_shape`
nothing is allocated, so a 7B model can be inspected on a laptop); `create_model(name, pretrained=True)` and
`jimm.from_pretrained(name)` load the entry's hub id. Each entry also says how its images are preprocessed and its
text tokenized, its parameter count at full depth (transformers' count for the same config, checked by the tests)
and where its facts come from."""

from __future__ import annotations

import fnmatch
import functools
import os
from typing import Any

from .catalog_data import ENTRIES
from .catalog_entry import FAMILIES, CatalogEntry, Preprocessing, TokenizerFacts


@functools.cache
def _entries() -> dict[str, CatalogEntry]:
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


__all__ = [
    "FAMILIES",
    "CatalogEntry",
    "Preprocessing",
    "TokenizerFacts",
    "count_params",
    "format_count",
    "get_entry",
    "is_catalog_name",
    "list_models",
    "markdown_table",
    "resolve_name",
    "table",
]
