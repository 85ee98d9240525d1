"""What every family's `from_pretrained` shares: the classifier-head policy and the strict streaming load.

A family finds its files (`locate`), opens its checkpoint (names normalised to its canonical table), reads its
config, and calls `load_model` with its name table and a builder; this module checks the tensors, builds the
model abstractly, streams the tensors in, and fills what the checkpoint does not hold (dropout RNG streams, a
new head) without compiling a constructor.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from ..io.resolve import CONFIG, PYTORCH, SAFETENSORS, resolve_model
from ..io.state import (
    Slot,
    abstract_model,
    assemble,
    check_tensors,
    for_layout,
    fresh_rng_state,
    place_on_mesh,
    read_params,
)

logger = logging.getLogger(__name__)


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".npz")


def _is_hf_config(path: Path) -> bool:
    """True for an HF `config.json` (it has `model_type`); a timm folder's config.json has none."""
    if not path.is_file():
        return False
    try:
        raw = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    except RecursionError as err:
        raise ValueError(f"{path} is not a config file: its JSON is nested too deeply") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path} holds a JSON {type(raw).__name__}, not an object; a config.json is a JSON object")
    return "model_type" in raw


def locate(
    name_or_path, *, prefer_pytorch: bool, revision, token, cache_dir
) -> tuple[list[Path], Path | None, Path | None]:
    """(weight files, HF config.json or None, preprocessor_config.json or None) for a file, folder or hub id."""
    path = Path(os.path.expanduser(os.fspath(name_or_path)))
    if path.is_file():
        if path.suffix not in WEIGHT_SUFFIXES:
            raise ValueError(
                f"{path} is not a weights file ({', '.join(WEIGHT_SUFFIXES)}); pass the model folder "
                f"that holds config.json and the weights (e.g. {path.parent})"
            )
        return [path], None, None
    if path.is_dir() and not _is_hf_config(path / CONFIG):  # a timm folder (its config.json has no model_type) or npz
        for name in [PYTORCH, SAFETENSORS] if prefer_pytorch else [SAFETENSORS, PYTORCH]:
            if (path / name).is_file():
                return [path / name], None, None
        npz = sorted(path.glob("*.npz"))
        if len(npz) == 1:
            return npz, None, None
        raise FileNotFoundError(f"{path} has no HF config.json and no single {SAFETENSORS}, {PYTORCH} or .npz file")
    resolved = resolve_model(
        name_or_path, prefer_pytorch=prefer_pytorch, revision=revision, token=token, cache_dir=cache_dir
    )
    hf = resolved.config if _is_hf_config(resolved.config) else None
    return resolved.weights, hf, resolved.preprocessor


def decide_head(
    config,
    stored_classes: int | None,
    *,
    num_classes: int | None,
    id2label: dict[int, str] | None,
    do_classification: bool | None,
    source: str,
):
    """`(config, do_classification, head_from_checkpoint)` for the requested head, said out loud when replaced.

    `config` is a family config with `num_labels` / `id2label`; `stored_classes` is the checkpoint head's
    class count (None when it has no head).
    """
    if id2label is not None:
        id2label = {int(k): str(v) for k, v in id2label.items()}
        if num_classes is not None and num_classes != len(id2label):
            raise ValueError(f"num_classes={num_classes} disagrees with the {len(id2label)} entries of id2label")
        num_classes = len(id2label)
    wants_new_head = num_classes is not None
    if do_classification is None:
        do_classification = stored_classes is not None or wants_new_head
        if not do_classification:
            logger.info("%s has no classifier head: returning a feature model (do_classification=False)", source)
    if not do_classification:
        if stored_classes is not None:
            logger.info("%s: classifier head not loaded (do_classification=False)", source)
        return config, False, False
    if stored_classes is None and not wants_new_head:
        raise ValueError(
            f"{source} has no classifier head; pass num_classes=... (or id2label=...) to add a new one, "
            "or do_classification=False for features"
        )
    stored_names = config.id2label  # None: HF's placeholder names LABEL_i
    renamed = id2label is not None and stored_names is not None and set(id2label.values()) != set(stored_names.values())
    if wants_new_head and (num_classes != stored_classes or renamed):
        why = f"{stored_classes} -> {num_classes} classes" if num_classes != stored_classes else "new label names"
        logger.warning(
            "%s: replacing the classifier head (%s) with a new randomly initialised one",
            source,
            "none" if stored_classes is None else why,
        )
        return config.replace(num_labels=num_classes, id2label=id2label), True, False
    if id2label is not None:
        config = config.replace(id2label=id2label)
    return config, True, True


def check_depth(entries: Iterable[str], pattern: str, expected: int, *, source: str) -> None:
    """Refuse a config with more layers than the checkpoint holds before a name table is built for it.

    `pattern` is a regex whose group 1 is the layer index (e.g. `r"encoder\\.layer\\.(\\d+)\\."`). Without this
    check a corrupt `num_hidden_layers` (say 10**30) would build a table of that many tensors first.
    """
    regex = re.compile(pattern)
    found = {int(m.group(1)) for name in entries if (m := regex.search(name))}
    have = max(found) + 1 if found else 0
    if expected > have:
        from ..io.state import CheckpointMismatchError

        raise CheckpointMismatchError(
            f"checkpoint {source} does not match the model: the config asks for {expected} layers but the checkpoint "
            f"holds {have}; fix num_hidden_layers in config.json (or pass the matching config)"
        )


def head_permutation(stored: dict[int, str] | None, requested: dict[int, str] | None) -> list[int] | None:
    """Rows of the checkpoint's head in the order of `requested` labels, when both name the same classes.

    `decide_head` keeps the head when the names are the same set; a different order (a dataset's folders
    sorted differently) must reorder the rows, or every prediction would be silently permuted.
    """
    if stored is None or requested is None or stored == requested:
        return None
    row_of = {name: i for i, name in stored.items()}
    order = [row_of[requested[i]] for i in range(len(requested))]
    return None if order == list(range(len(order))) else order


def permute_rows(table: Sequence[Slot], names: Iterable[str], order: list[int] | None) -> list[Slot]:
    """The table with the head tensors `names` read with their rows (classes) in `order` (loading only: the
    model then holds, and saves, the rows in the requested order)."""
    if order is None:
        return list(table)
    names, index = set(names), np.asarray(order)
    return [
        dataclasses.replace(slot, to_jimm=lambda a, f=slot.to_jimm: f(a[index])) if slot.name in names else slot
        for slot in table
    ]


def absent_masked_image_only(
    table: Sequence[Slot],
    entries: Iterable[str],
    inits: Mapping[str, Callable[[tuple[int, ...]], np.ndarray]],
    *,
    prefix: str,
    source: str,
) -> dict[tuple, np.ndarray]:
    """Fresh values for the tensors of `table` that only masked-image training reads and the checkpoint lacks.

    `inits` maps such a tensor's name (without the head `prefix`) to transformers' initialiser for it, given its
    checkpoint shape. Every other missing tensor stays a strict error (`check_tensors`); these load with one
    warning naming them, as transformers does (a mask token dropped by an exported graph, say).
    """
    entries = set(entries)
    fresh, names = {}, []
    for slot in table:
        name = slot.name[len(prefix) :] if slot.name.startswith(prefix) else slot.name
        if name in inits and slot.name not in entries and slot.index == ():
            fresh[slot.param] = slot.to_jimm(inits[name](slot.shape))
            names.append(slot.name)
    if names and all(slot.name in entries for slot in table if slot.param not in fresh):  # else a strict error follows
        logger.warning(
            "%s has no %s, which only masked-image training uses: initialised as transformers does",
            source,
            ", ".join(names),
        )
    return fresh


def fresh_params_of(module: nnx.Module, prefix: tuple[str, ...]) -> dict[tuple, np.ndarray]:
    """`{path: value}` of a small, eagerly built module's parameters, re-homed under `prefix` (a new head)."""
    return {(*prefix, *path): v.get_value() for path, v in nnx.to_flat_state(nnx.state(module, nnx.Param))}


def load_model(
    build: Callable[..., nnx.Module],
    build_kwargs: dict[str, Any],
    table: Sequence[Slot],
    checkpoint,
    *,
    source: str,
    layers: Sequence[tuple[str, ...]],
    rngs: nnx.Rngs | None,
    ignored: Iterable[str] = (),
    fresh_params: Callable[[nnx.Rngs], dict[tuple, Any]] | None = None,
    hint: str = "",
) -> nnx.Module:
    """Strictly load `checkpoint` (canonical names) into `build(rngs=..., **build_kwargs)`.

    Every tensor of `table` must be present with its shape and a float dtype, and every tensor of the
    checkpoint must be in `table` or `ignored`: one error lists all problems, before anything is allocated.
    Parameters the table does not fill come from `fresh_params(rngs)` (e.g. a new classifier head).
    """
    check_tensors(table, checkpoint.entries(), source=source, ignored=ignored, hint=hint)
    graphdef, variables = abstract_model(build, **build_kwargs)
    table = for_layout(table, variables, layers)
    filled = read_params(checkpoint, table, variables)
    rngs = rngs if rngs is not None else nnx.Rngs(0)
    if fresh_params is not None:
        for path, value in fresh_params(rngs).items():
            host = np.asarray(value, dtype=variables[path].get_value().dtype)  # the model's param_dtype
            filled[path] = variables[path].replace(value=place_on_mesh(host, variables[path]))
    filled.update(fresh_rng_state(variables, rngs))
    return assemble(graphdef, variables, filled)


__all__ = [
    "absent_masked_image_only",
    "check_depth",
    "decide_head",
    "fresh_params_of",
    "head_permutation",
    "load_model",
    "locate",
    "permute_rows",
]
