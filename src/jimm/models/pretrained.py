"""Single-tower families (ViT, DINOv2, DINOv3): their `Plugin` base for the one loader, and their saving.

A `BackboneFamily` adds to the loader's `Plugin` what saving needs (the name table under a given prefix, the
architecture name, a default preprocessor); loading is `jimm.models.loading.load`, saving `save_pretrained`
here (transformers' format, one atomic save through `jimm.io.model_folder`).
"""

from __future__ import annotations

import json
from typing import Any

from ..io.model_folder import save_model_folder
from ..io.resolve import CONFIG, PREPROCESSOR
from ..io.state import Slot, tensors_to_save
from .loading import Plugin
from .loading import load as load_pretrained

# the DINO processors' normalisation (one name per line: the API reference documents each)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BackboneFamily(Plugin):
    """A single-tower family: its name table under a prefix (`vit.`, `dinov2.` with a head) and its saved files."""

    def model_prefixes(self, config) -> tuple[str, ...]:
        """Backbone name prefixes a checkpoint with a classifier head may use; the first is the one saved."""
        return ()

    def table(self, config, *, prefix: str, with_head: bool, entries: dict | None) -> list[Slot]:
        """The table for `config`; `entries` (the checkpoint's, when loading) may choose a naming variant."""
        raise NotImplementedError

    def name_table(self, config, entries: dict, *, with_head: bool) -> list[Slot]:
        prefixes = self.model_prefixes(config)
        prefix = next((p for p in prefixes if any(name.startswith(p) for name in entries)), "")
        return self.table(config, prefix=prefix, with_head=with_head, entries=entries)

    def extra_tensors(self, config, dtype) -> list[tuple[str, tuple[int, ...], Any, Any]]:
        """Tensors to save that hold no jimm parameter: `(name, shape, dtype, produce)`, as `tensors_to_save`."""
        return []

    def architecture(self, config, with_head: bool) -> str:
        raise NotImplementedError

    def preprocessor(self, config) -> dict[str, Any]:
        """The `preprocessor_config.json` written for a model that has none of its own."""
        raise NotImplementedError


def save_pretrained(
    model, family: BackboneFamily, save_directory, *, max_shard_size: int | str = "5GB", overwrite: bool = False
) -> None:
    """Write transformers' format for `model` as one atomic save (see `jimm.io.atomic_save`)."""
    config = model.config
    with_head = getattr(model, "do_classification", False)  # a feature model (AIMv2) has no classifier
    prefix = family.model_prefixes(config)[:1] if with_head else ()
    table = family.table(config, prefix=prefix[0] if prefix else "", with_head=with_head, entries=None)
    tensors = tensors_to_save(model, table, family.layers)
    tensors += family.extra_tensors(config, tensors[0][2])
    hf_config = config.to_hf_dict(architecture=family.architecture(config, with_head))
    hf_config["dtype"] = {"bfloat16": "bfloat16", "float16": "float16"}.get(tensors[0][2].name, "float32")
    preprocessor = getattr(model, "preprocessor_json", None) or json.dumps(family.preprocessor(config), indent=2)
    save_model_folder(
        save_directory,
        tensors,
        json_files={CONFIG: hf_config},
        other_files={PREPROCESSOR: preprocessor},
        max_shard_size=max_shard_size,
        overwrite=overwrite,
    )


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "BackboneFamily", "load_pretrained", "save_pretrained"]
