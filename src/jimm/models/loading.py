"""The one loader: every family's `from_pretrained` is `load(cls, plugin, name_or_path, ...)`.

The orchestration is written once, in this order: find the files and parse `config.json` once
(`jimm.io.files.locate`), open the checkpoint once, let the family present it under its canonical names and
read its config (`Plugin.open`: the layout is detected there, once), decide the classifier head once
(`head_policy`: keep, replace, reorder rows or drop), check the depth before any name table is built
(`check_depth`), build the family's name table, stream the tensors onto their shardings and report every
mismatch in one error (`jimm.io.state`). A family supplies a `Plugin`: how to read its config and layouts,
its name table, its head's tensors, and what its constructor needs. timm's `_builder.load_pretrained`, which
applies one classifier policy for every model, is the pattern.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
from flax import nnx

from ..common.transformer import default_kernel_init
from ..io.files import ModelFiles, locate
from ..io.readers import CheckpointSource
from ..io.state import (
    CheckpointMismatchError,
    Slot,
    abstract_model,
    assemble,
    check_tensors,
    for_layout,
    fresh_rng_state,
    place_on_mesh,
    read_params,
)
from .views import Renamed

logger = logging.getLogger(__name__)


class HeadPlan(NamedTuple):
    """`head_policy`'s decision: the config, whether the model classifies, whether the head comes from the
    checkpoint, and the checkpoint's head rows in the requested label order (None: as stored)."""

    config: Any
    do_classification: bool
    from_checkpoint: bool
    order: list[int] | None


def head_policy(
    config,
    stored_classes: int | None,
    *,
    num_classes: int | None,
    id2label: dict[int, str] | None,
    do_classification: bool | None,
    source: str,
) -> HeadPlan:
    """The classifier head to build, for every family: kept, replaced (said out loud), reordered, or dropped.

    `config` is a family config with `num_labels` / `id2label`; `stored_classes` is the checkpoint head's class
    count (None when it has no head). New classes or new label names replace the head with a random one; the
    same names in another order keep it with its rows reordered, so every class keeps its own weights.
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
        return HeadPlan(config, False, False, None)
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
        return HeadPlan(config.replace(num_labels=num_classes, id2label=id2label), True, False, None)
    if id2label is None:
        return HeadPlan(config, True, True, None)
    return HeadPlan(config.replace(id2label=id2label), True, True, head_permutation(stored_names, id2label))


def head_permutation(stored: dict[int, str] | None, requested: dict[int, str] | None) -> list[int] | None:
    """Rows of the checkpoint's head in the order of `requested` labels, when both name the same classes."""
    if stored is None or requested is None or stored == requested:
        return None
    row_of = {name: i for i, name in stored.items()}
    order = [row_of[requested[i]] for i in range(len(requested))]
    return None if order == list(range(len(order))) else order


def permute_rows(table: Sequence[Slot], heads: Iterable[str], order: list[int] | None) -> list[Slot]:
    """The table with the tensors of the head modules `heads` read with their rows (classes) in `order` (the
    model then holds, and saves, the rows in the requested order)."""
    if order is None:
        return list(table)
    heads, index = set(heads), np.asarray(order)
    return [
        dataclasses.replace(slot, to_jimm=lambda a, f=slot.to_jimm: f(a[index])) if slot.param[0] in heads else slot
        for slot in table
    ]


def check_depth(entries: Iterable[str], pattern: str, expected: int, *, source: str) -> None:
    """Refuse a config with more layers than the checkpoint holds before a name table is built for it.

    `pattern` is a regex whose group 1 is the layer index (e.g. `r"encoder\\.layer\\.(\\d+)\\."`). Without this
    check a corrupt `num_hidden_layers` (say 10**30) would build a table of that many tensors first.
    """
    if not isinstance(expected, int) or isinstance(expected, bool) or expected < 0:
        raise CheckpointMismatchError(
            f"checkpoint {source}: num_hidden_layers={expected!r} is not a layer count; fix it in config.json"
        )
    regex = re.compile(pattern)
    found = {int(m.group(1)) for name in entries if (m := regex.search(name))}
    have = max(found) + 1 if found else 0
    if expected > have:
        raise CheckpointMismatchError(
            f"checkpoint {source} does not match the model: the config asks for {expected} layers but the checkpoint "
            f"holds {have}; fix num_hidden_layers in config.json (or pass the matching config)"
        )


def absent_masked_image_only(
    table: Sequence[Slot],
    entries: Iterable[str],
    inits: Mapping[str, Callable[[tuple[int, ...]], np.ndarray]],
    *,
    source: str,
) -> dict[tuple, np.ndarray]:
    """Fresh values for the tensors of `table` that only masked-image training reads and the checkpoint lacks.

    `inits` maps such a tensor's name (without a head model's prefix such as `dinov2.`) to transformers'
    initialiser for it, given its checkpoint shape. Every other missing tensor stays a strict error
    (`check_tensors`); these load with one warning naming them, as transformers does (a mask token dropped by an
    exported graph, say).
    """
    entries = set(entries)
    fresh, names = {}, []
    for slot in table:
        init = next((f for key, f in inits.items() if slot.name == key or slot.name.endswith("." + key)), None)
        if init is not None and slot.name not in entries and slot.index == ():
            fresh[slot.param] = slot.to_jimm(init(slot.shape))
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


class Plugin:
    """What a family plugs into `load`; the defaults fit a transformers checkpoint with a `classifier` head.

    A plugin may keep per-load state (a ViT's `img_size=`): families make one per load where they need to.
    """

    label: str = "jimm model"  # for messages: the class users call
    config_class: type = object  # the family's config dataclass
    layers: tuple[tuple[str, ...], ...] = (("encoder", "blocks", "layers"),)
    head_modules: tuple[str, ...] = ("classifier",)  # the head's modules (model attributes); () for no head
    head_tensors: tuple[str, ...] = ("classifier.",)  # prefixes of the head's tensors in the checkpoint
    depth_pattern: str = r"(?:^|\.)encoder\.layer\.(\d+)\."  # group 1: a block's index, in canonical names
    # Tensors only masked-image training reads (name -> transformers' init given the shape): a checkpoint may lack
    # them (`absent_masked_image_only`).
    masked_image_only: Mapping[str, Callable[[tuple[int, ...]], Any]] = MappingProxyType({})

    def read_config(self, raw: dict[str, Any]):
        """The family config of an HF config.json."""
        return self.config_class.from_hf_dict(raw)

    def classic_name(self, name: str) -> str:
        """A tensor name in transformers' on-disk naming (v5 in-memory names renamed)."""
        return name

    def open(self, raw: CheckpointSource, files: ModelFiles, config, source: str):
        """`(checkpoint view under canonical names, config)`; the layout is detected here, once."""
        if config is not None and not isinstance(config, self.config_class):
            raise TypeError(f"{self.label} needs config= a {self.config_class.__name__}, got {type(config).__name__}")
        if files.hf_config is None:
            return self.open_foreign(raw, config, source)
        if config is None:
            try:
                config = self.read_config(files.hf_config)
            except (ValueError, TypeError) as err:
                raise ValueError(f"{files.config_path}: {err}") from err
        return Renamed(raw, self.classic_name), config

    def open_foreign(self, raw: CheckpointSource, config, source: str):
        """`(view under canonical names, config)` for a checkpoint without an HF config.json."""
        raise FileNotFoundError(f"{source}: {self.label} needs an HF config.json next to the weights")

    def stored_classes(self, config, entries: dict) -> int | None:
        """The checkpoint head's class count, or None when it has none."""
        head = entries.get(self.head_tensors[0] + "weight") if self.head_tensors else None
        return head[0][0] if head is not None and len(head[0]) == 2 else None

    def settle(self, config, entries: dict, do_classification: bool, source: str) -> tuple[Any, dict, set[str]]:
        """After the head is decided: `(config, constructor arguments, checkpoint tensors to skip)`."""
        return config, {"do_classification": do_classification}, set()

    def depths(self, config) -> list[tuple[str, int]]:
        """`(pattern, num_hidden_layers)` of each stack, checked against the checkpoint before the table is built."""
        return [(self.depth_pattern, config.num_hidden_layers)]

    def name_table(self, config, entries: dict, *, with_head: bool) -> list[Slot]:
        raise NotImplementedError

    def fresh(self, config, entries: dict, *, foreign: bool) -> dict[tuple, Any]:
        """Parameters a (`foreign`, config-less) layout lacks, with neutral values (a zero mask token)."""
        return {}

    def head_width(self, config) -> int:
        """The classifier's input width."""
        return config.hidden_size

    def new_heads(self, config) -> tuple[str, ...]:
        """The head modules a new head has (DeiT has two)."""
        return self.head_modules[:1]

    def new_head(self, config, rngs: nnx.Rngs) -> dict[tuple, Any]:
        """A new random head, `{param path: value}`: a linear layer for each of `new_heads`."""
        out = {}
        for module in self.new_heads(config):
            linear = nnx.Linear(self.head_width(config), config.num_labels, kernel_init=default_kernel_init, rngs=rngs)
            out |= fresh_params_of(linear, (module,))
        return out

    def finish(self, model: nnx.Module, files: ModelFiles) -> None:
        """Attach what lives beside the weights (the preprocessor config, a tokenizer)."""
        model.preprocessor_json = files.preprocessor.read_text(encoding="utf-8") if files.preprocessor else None


def load(
    cls,
    plugin: Plugin,
    name_or_path,
    *,
    prefer_pytorch: bool = False,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir=None,
    config=None,
    config_changes: dict[str, Any] | None = None,
    num_classes: int | None = None,
    id2label: dict[int, str] | None = None,
    do_classification: bool | None = None,
    rngs: nnx.Rngs | None = None,
    **build_kwargs,
) -> nnx.Module:
    """Strictly load `name_or_path` into `cls` through `plugin`, streaming each tensor onto its sharding.

    `config` replaces the checkpoint's (or the inferred) config; `config_changes` are applied to it (fields that
    do not change the tensors); `build_kwargs` (dtype, sharding, ...) go to the constructor.
    """
    files = locate(name_or_path, prefer_pytorch=prefer_pytorch, revision=revision, token=token, cache_dir=cache_dir)
    source = files.source
    head_request = dict(num_classes=num_classes, id2label=id2label, do_classification=do_classification)
    if not plugin.head_modules and any(value is not None for value in head_request.values()):
        raise TypeError(f"{cls.__name__}.from_pretrained got {head_request}: a classifier head is for vision models")
    with files.open_weights() as raw:
        view, config = plugin.open(raw, files, config, source)
        if config_changes:
            config = config.replace(**config_changes)
        entries = view.entries()
        if plugin.head_modules:
            stored = plugin.stored_classes(config, entries)
            plan = head_policy(config, stored, source=source, **head_request)
        else:
            plan = HeadPlan(config, False, False, None)
        config, kwargs, ignored = plugin.settle(plan.config, entries, plan.do_classification, source)
        for pattern, depth in plugin.depths(config):
            check_depth(entries, pattern, depth, source=source)
        fresh = plugin.fresh(config, entries, foreign=files.hf_config is None)
        table = plugin.name_table(config, entries, with_head=plan.from_checkpoint)
        table = [slot for slot in permute_rows(table, plugin.head_modules, plan.order) if slot.param not in fresh]
        absent = absent_masked_image_only(table, entries, plugin.masked_image_only, source=source)
        fresh, table = fresh | absent, [slot for slot in table if slot.param not in absent]
        if plugin.head_modules and not plan.from_checkpoint:
            ignored |= {name for name in entries if name.startswith(plugin.head_tensors)}
        new_head = plan.do_classification and not plan.from_checkpoint

        def fresh_params(model_rngs: nnx.Rngs) -> dict:
            return {**fresh, **(plugin.new_head(config, model_rngs) if new_head else {})}

        model = load_model(
            cls,
            {**build_kwargs, "config": config, **kwargs},
            table,
            view,
            entries=entries,
            source=source,
            layers=plugin.layers,
            rngs=rngs,
            ignored=ignored,
            fresh_params=fresh_params if fresh or new_head else None,
        )
    plugin.finish(model, files)
    return model


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
    entries: dict | None = None,
) -> nnx.Module:
    """Strictly load `checkpoint` (canonical names) into `build(rngs=..., **build_kwargs)`.

    Every tensor of `table` must be present with its shape and a float dtype, and every tensor of the
    checkpoint must be in `table` or `ignored`: one error lists all problems, before anything is allocated.
    Parameters the table does not fill come from `fresh_params(rngs)` (e.g. a new classifier head).
    """
    check_tensors(table, checkpoint.entries() if entries is None else entries, source=source, ignored=ignored)
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
    "HeadPlan",
    "Plugin",
    "absent_masked_image_only",
    "check_depth",
    "fresh_params_of",
    "head_permutation",
    "head_policy",
    "load",
    "load_model",
    "permute_rows",
]
