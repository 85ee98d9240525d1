"""`from_pretrained` / `save_pretrained` for the families described by a `Family` (DINOv2, DINOv3).

A family says how to read its config, rename transformers-v5 names, build its name table and open config-less
layouts; this module does the rest once: find the files (`loading.locate`), present the checkpoint under
classic names, pick the head (`loading.decide_head`), load strictly (`loading.load_model`), and save
transformers' format atomically (`jimm.io.save`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from flax import nnx

from ..common.transformer import default_kernel_init
from ..io.checkpoint import CheckpointSource, open_checkpoint
from ..io.resolve import CONFIG, PREPROCESSOR
from ..io.save import save_model_folder
from ..io.state import Slot, tensors_to_save
from .loading import absent_masked_image_only, decide_head, fresh_params_of, load_model, locate
from .registry import read_json_object
from .views import Renamed

HEAD = "classifier."
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # the DINO processors' normalisation


class Family:
    """What the shared loader needs from a family; subclasses override the methods that differ."""

    label: str = "jimm model"  # for messages: the class users call
    config_class: type = object  # the family's config dataclass
    layers: tuple[tuple[str, ...], ...] = (("encoder", "blocks", "layers"),)
    # Tensors only masked-image training reads (unprefixed name -> transformers' init given the shape): a checkpoint
    # may lack them (`loading.absent_masked_image_only`).
    masked_image_only: Mapping[str, Callable[[tuple[int, ...]], Any]] = MappingProxyType({})

    def read_config(self, raw: dict[str, Any]):
        raise NotImplementedError

    def classic_name(self, name: str) -> str:
        """A tensor name in transformers' on-disk naming (v5 in-memory names renamed)."""
        return name

    def model_prefix(self, config) -> str:
        """The backbone's name prefix in a checkpoint with a classifier head ("" if none)."""
        return ""

    def name_table(self, config, *, prefix: str, with_head: bool, entries: dict | None) -> list[Slot]:
        """The table for `config`; `entries` (the checkpoint's, when loading) may choose a naming variant."""
        raise NotImplementedError

    def check(self, config, entries: dict, source: str) -> None:
        """Family-specific checks of a checkpoint's tensors before the strict comparison."""

    def ignored(self, config, entries: dict) -> set[str]:
        """Checkpoint tensors that carry nothing (accepted, not loaded)."""
        return set()

    def fresh(self, config, entries: dict, *, foreign: bool) -> dict[tuple, Any]:
        """Parameters a (`foreign`, config-less) checkpoint layout lacks, with neutral values (a zero mask token)."""
        return {}

    def open_foreign(self, raw: CheckpointSource, config, source: str):
        """`(view under classic names, config)` for a checkpoint without an HF config.json."""
        raise FileNotFoundError(f"{source}: {self.label} needs an HF config.json next to the weights")

    def extra_tensors(self, config, dtype) -> list[tuple[str, tuple[int, ...], Any, Any]]:
        """Tensors to save that hold no jimm parameter: `(name, shape, dtype, produce)`, as `tensors_to_save`."""
        return []

    def architecture(self, config, with_head: bool) -> str:
        raise NotImplementedError

    def preprocessor(self, config) -> dict[str, Any]:
        """The `preprocessor_config.json` written for a model that has none of its own."""
        raise NotImplementedError


def read_config_file(family: Family, path: Path):
    try:
        return family.read_config(read_json_object(path))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: {err}") from err


def load_pretrained(
    cls,
    family: Family,
    name_or_path,
    *,
    prefer_pytorch: bool = False,
    config=None,
    rngs: nnx.Rngs | None = None,
    num_classes: int | None = None,
    id2label: dict[int, str] | None = None,
    do_classification: bool | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir=None,
    config_changes: dict[str, Any] | None = None,
    **build_kwargs,
):
    """Strictly load `name_or_path` into `cls` (a `BackboneModel`), streaming each tensor onto its sharding.

    `config` replaces the checkpoint's (or the inferred) config; `config_changes` are applied to it (fields
    that do not change the tensors, such as the resampling offset); `build_kwargs` go to the constructor.
    """
    source = os.fspath(name_or_path)
    if config is not None and not isinstance(config, family.config_class):
        raise TypeError(f"{family.label} needs config= a {family.config_class.__name__}, got {type(config).__name__}")
    weights, hf_config, preprocessor = locate(
        name_or_path, prefer_pytorch=prefer_pytorch, revision=revision, token=token, cache_dir=cache_dir
    )
    raw = open_checkpoint(weights)
    with raw:
        if hf_config is None:
            view, config = family.open_foreign(raw, config, source)
        else:
            config = read_config_file(family, hf_config) if config is None else config
            view = Renamed(raw, family.classic_name)
        if config_changes:
            config = config.replace(**config_changes)
        entries = view.entries()
        head_prefix = family.model_prefix(config)
        prefix = head_prefix if head_prefix and any(n.startswith(head_prefix) for n in entries) else ""
        head = entries.get(HEAD + "weight")
        stored_classes = head[0][0] if head is not None and len(head[0]) == 2 else None
        config, do_classification, from_checkpoint = decide_head(
            config,
            stored_classes,
            num_classes=num_classes,
            id2label=id2label,
            do_classification=do_classification,
            source=source,
        )
        if not do_classification:
            config = config.replace(num_labels=0, id2label=None)
        family.check(config, entries, source)
        fresh = family.fresh(config, entries, foreign=hf_config is None)
        table = family.name_table(config, prefix=prefix, with_head=from_checkpoint, entries=entries)
        table = [slot for slot in table if slot.param not in fresh]
        fresh |= absent_masked_image_only(table, entries, family.masked_image_only, prefix=prefix, source=source)
        table = [slot for slot in table if slot.param not in fresh]
        ignored = family.ignored(config, entries)
        if not from_checkpoint:
            ignored |= {name for name in entries if name.startswith(HEAD)}

        def fresh_params(model_rngs: nnx.Rngs) -> dict:
            out = dict(fresh)
            if do_classification and not from_checkpoint:
                linear = nnx.Linear(
                    2 * config.hidden_size, config.num_labels, kernel_init=default_kernel_init, rngs=model_rngs
                )
                out |= fresh_params_of(linear, ("classifier",))
            return out

        model = load_model(
            cls,
            dict(config=config, do_classification=do_classification, **build_kwargs),
            table,
            view,
            source=source,
            layers=family.layers,
            rngs=rngs,
            ignored=ignored,
            fresh_params=fresh_params if fresh or (do_classification and not from_checkpoint) else None,
        )
    model.preprocessor_json = preprocessor.read_text(encoding="utf-8") if preprocessor else None
    return model


def save_pretrained(
    model, family: Family, save_directory, *, max_shard_size: int | str = "5GB", overwrite: bool = False
) -> None:
    """Write transformers' format for `model` as one atomic save (see `jimm.io.saved`)."""
    config = model.config
    with_head = model.do_classification
    table = family.name_table(
        config, prefix=family.model_prefix(config) if with_head else "", with_head=with_head, entries=None
    )
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


def infer_heads(width: int, head_dim: int, *, source: str, tensor: str) -> int:
    """Heads of a checkpoint without a config, from a family whose sizes all share one head width."""
    if width % head_dim:
        raise ValueError(
            f"{source}: cannot infer the number of heads of width {width} (from {tensor}): this family's sizes "
            f"have {head_dim}-wide heads; pass config=... with num_attention_heads"
        )
    return width // head_dim


def count_layers(names: Sequence[str], prefix: str) -> int:
    """How many `prefix{i}.` blocks the names hold (0..n-1, each present)."""
    found = {int(n[len(prefix) :].split(".", 1)[0]) for n in names if n.startswith(prefix) and n[len(prefix)].isdigit()}
    if found != set(range(len(found))):
        raise ValueError(f"checkpoint blocks {sorted(found)} are not numbered 0..{len(found) - 1}")
    return len(found)


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Family",
    "count_layers",
    "infer_heads",
    "load_pretrained",
    "save_pretrained",
]
