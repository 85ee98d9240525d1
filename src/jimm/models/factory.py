"""`create_model`: a catalog name to a model, random (or abstract) or pretrained; timm's vocabulary.

Above both the catalog (what a name means) and the registry (which class a config builds), so neither imports
the other's way back.
"""

from __future__ import annotations

from typing import Any

from .catalog import CatalogEntry, count_params, get_entry
from .registry import class_for_config


def model_class_of(entry: CatalogEntry) -> type:
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


def abstract_param_count(name: str) -> int:
    """jimm's parameter count of catalog model `name` at full depth, from shapes only (`nnx.eval_shape`)."""
    from flax import nnx

    return count_params(nnx.eval_shape(lambda: create_model(name)))


__all__ = ["abstract_param_count", "create_model", "model_class_of"]
