"""`from_pretrained` / `from_config` / `save_pretrained` for CLIP and SigLIP, every class, over the shared loader.

One checkpoint layout per transformers class: the pair (`CLIPModel`, `SiglipModel`), a standalone tower
(`CLIPVisionModel[WithProjection]`, `CLIPTextModel[WithProjection]`, `SiglipVisionModel`, `SiglipTextModel`) or a
classifier (`...ForImageClassification`: the pair's config, the vision tower's tensors and `classifier.*`).
Any of them loads into any jimm class that its tensors cover: a vision model takes the vision tower of a pair
checkpoint (the text tower is skipped, said out loud); a class whose tower the checkpoint lacks is an error naming
the class that fits. Loading is strict (`jimm.models.loading`); `position_ids` buffers of old files are ignored.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from flax import nnx

from ...common.transformer import default_kernel_init
from ...io.checkpoint import open_checkpoint
from ...io.resolve import CONFIG, PREPROCESSOR, TOKENIZER_FILES, resolve_model
from ...io.save import save_model_folder
from ...io.state import tensors_to_save
from ..loading import check_depth, decide_head, fresh_params_of, head_permutation, load_model, permute_rows
from ..registry import read_json_object
from ..views import Renamed
from .names import LAYERS, TEXT, VISION, fuse_shared_names, name_table, with_tower_prefix

logger = logging.getLogger(__name__)

PREFIX = {"vision": f"{VISION}.", "text": f"{TEXT}."}
PROJECTION = {"vision": "visual_projection.", "text": "text_projection."}


def _family_class(cls, tower: str) -> str:
    base = cls.CONFIG.FAMILY  # "jimm.CLIP"
    return f"{base}VisionModel" if tower == "vision" else f"{base}TextModel"


def _read_config(cls, path: Path):
    raw = read_json_object(path)
    try:
        return raw, cls.CONFIG.from_hf_dict(raw)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: {err}") from None


def _load_tokenizer(resolved):
    """The checkpoint's `jimm.Tokenizer`, or None (with a warning saying why) when its files are absent or unusable."""
    from ...text import Tokenizer

    found = [p for p in (resolved.file(name) for name in TOKENIZER_FILES) if p is not None]
    if not found:
        logger.info("%s has no tokenizer files: model.tokenize and zero_shot need model.tokenizer set", resolved.source)
        return None
    try:
        folder = found[0].parent
        if all(p.parent == folder for p in found):
            return Tokenizer.from_pretrained(folder)
        # Files of one save spread over the folder and its staging folder (a save being rolled forward): gather
        # them in a folder that lives as long as the process, as `Tokenizer.files` must stay readable for saving.
        gathered = Path(tempfile.mkdtemp(prefix="jimm-tokenizer-"))
        for path in [*found, resolved.config]:
            shutil.copyfile(path, gathered / path.name)
        return Tokenizer.from_pretrained(gathered)
    except (ValueError, OSError) as err:
        logger.warning("%s: its tokenizer could not be read (%s); model.tokenizer is None", resolved.source, err)
        return None


def _stored_towers(cls, entries, raw_config: dict, source: str) -> set[str]:
    """The towers the checkpoint holds; an error naming the class that fits when `cls` needs one it lacks."""
    stored = {tower for tower, prefix in PREFIX.items() if any(name.startswith(prefix) for name in entries)}
    for tower in cls.TOWERS:
        if tower not in stored:
            fits = " or ".join(_family_class(cls, t) for t in sorted(stored)) or "no jimm class"
            raise ValueError(
                f"{source} holds no {tower} tower (architectures: {raw_config.get('architectures')}); "
                f"it loads as {fits}"
            )
    return stored


def _classifier(cls, config, entries, ignored: set, *, source: str, **head_args):
    """A vision model's head, per `decide_head`'s policy: `(config, do_classification, fresh_params or None,
    row order)`; the order reorders a kept head's rows when the same labels come in another order."""
    head = entries.get("classifier.weight")
    stored_labels = config.id2label
    config, do_classification, from_checkpoint = decide_head(
        config, head[0][0] if head is not None else None, source=source, **head_args
    )
    if from_checkpoint:
        return config, True, None, head_permutation(stored_labels, config.id2label)
    ignored |= {name for name in entries if name.startswith("classifier.")}
    if not do_classification:
        return config, False, None, None
    d, c = config.vision_config.hidden_size, config.num_labels

    def fresh(model_rngs: nnx.Rngs) -> dict:
        return fresh_params_of(nnx.Linear(d, c, kernel_init=default_kernel_init, rngs=model_rngs), ("classifier",))

    return config, True, fresh, None


def load_pretrained(
    cls,
    name_or_path,
    *,
    prefer_pytorch: bool,
    rngs: nnx.Rngs | None,
    dtype,
    param_dtype,
    sharding,
    use_gradient_checkpointing: bool,
    attention_fn,
    vision_attention_fn=None,
    text_attention_fn=None,
    num_classes: int | None = None,
    id2label: dict[int, str] | None = None,
    do_classification: bool | None = None,
    remat_policy: str | None = None,
    scan_layers: bool = True,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir=None,
):
    """Strictly load a CLIP / SigLIP checkpoint of any layout into `cls`, streaming each tensor onto its sharding."""
    source, towers = os.fspath(name_or_path), cls.TOWERS
    head_args = dict(num_classes=num_classes, id2label=id2label, do_classification=do_classification)
    if towers != ("vision",) and any(value is not None for value in head_args.values()):
        raise TypeError(f"{cls.__name__}.from_pretrained got {head_args}: a classifier head is for vision models")
    resolved = resolve_model(
        name_or_path, prefer_pytorch=prefer_pytorch, revision=revision, token=token, cache_dir=cache_dir
    )
    raw_config, config = _read_config(cls, resolved.config)
    model_type = raw_config.get("model_type")
    standalone = {cls.CONFIG.VISION.MODEL_TYPE: "vision", cls.CONFIG.TEXT.MODEL_TYPE: "text"}.get(model_type)
    kwargs: dict[str, Any] = {"vision_attention_fn": vision_attention_fn, "text_attention_fn": text_attention_fn}
    with open_checkpoint(resolved.weights) as raw:
        view = Renamed(raw, with_tower_prefix(PREFIX[standalone])) if standalone else raw
        entries = view.entries()
        stored = _stored_towers(cls, entries, raw_config, source)
        ignored = {name for name in entries if name.endswith("embeddings.position_ids")}  # old non-persistent buffers
        for tower in stored - set(towers):
            ignored |= {name for name in entries if name.startswith((PREFIX[tower], PROJECTION[tower]))}
            logger.info("%s: skipped the %s tower, which %s does not have", source, tower, cls.__name__)
        fresh, order, flags = None, None, {}
        if len(towers) == 1:  # a standalone tower: no logit scale; a projection or a classifier when the file has one
            (tower,) = towers
            ignored |= {name for name in entries if name in ("logit_scale", "logit_bias")}
            kwargs = {"attention_fn": kwargs[f"{tower}_attention_fn"] or attention_fn}
            projected = cls.PROJECTS and f"{PROJECTION[tower]}weight" in entries
            if tower == "vision":
                config, classify, fresh, order = _classifier(cls, config, entries, ignored, source=source, **head_args)
                flags["do_classification"] = classify
                if projected and classify:  # transformers' classifiers have no projection
                    ignored.add("visual_projection.weight")
                    projected = False
                    logger.info("%s: skipped visual_projection (a classifier pools the patch tokens)", source)
            if projected and model_type == cls.CONFIG.MODEL_TYPE:  # a pair's projection has the pair's width
                sub = getattr(config, f"{tower}_config").replace(projection_dim=config.projection_dim)
                config = config.replace(**{f"{tower}_config": sub})
            if cls.PROJECTS:
                flags["with_projection"] = projected
        else:
            kwargs["attention_fn"] = attention_fn
        parts = cls.parts(config, **flags)
        if fresh is not None:  # the new head is not read from the file
            parts = dataclasses.replace(parts, num_labels=None)
        build_kwargs = dict(
            config=config,
            dtype=dtype,
            param_dtype=param_dtype,
            sharding=sharding,
            use_gradient_checkpointing=use_gradient_checkpointing,
            remat_policy=remat_policy,
            scan_layers=scan_layers,
            **kwargs,
            **flags,
        )
        for tower in towers:  # a corrupt layer count fails here, before a table of that many tensors is built
            depth = getattr(config, f"{tower}_config").num_hidden_layers
            check_depth(entries, rf"^{re.escape(PREFIX[tower])}encoder\.layers\.(\d+)\.", depth, source=source)
        table = permute_rows(name_table(parts), ("classifier.weight", "classifier.bias"), order)
        model = load_model(
            cls, build_kwargs, table, view, source=source, layers=LAYERS, rngs=rngs, ignored=ignored, fresh_params=fresh
        )
    if "vision" in towers and resolved.preprocessor is not None:
        model.preprocessor_json = resolved.preprocessor.read_text(encoding="utf-8")
    if "text" in towers:
        model.tokenizer = _load_tokenizer(resolved)
    return model


def build_from_config(
    cls,
    config,
    *,
    rngs: nnx.Rngs | None = None,
    with_projection: bool | None = None,
    do_classification: bool | None = None,
    **kwargs: Any,
):
    """A randomly initialised `cls` from an HF config dict (its `architectures` choose the projection and the
    classifier when not given) or a family config object."""
    architecture = ""
    if isinstance(config, dict):
        architecture = (config.get("architectures") or [""])[0]
        is_pair = config.get("model_type", cls.CONFIG.MODEL_TYPE) == cls.CONFIG.MODEL_TYPE
        config = cls.CONFIG.from_hf_dict(config)
    elif isinstance(config, cls.CONFIG):
        is_pair = False
    else:
        raise TypeError(f"config must be an HF config dict or a {cls.CONFIG.__name__}, got {type(config).__name__}")
    towers = cls.TOWERS
    for name, value, allowed in (("with_projection", with_projection, cls.PROJECTS and len(towers) == 1),
                                 ("do_classification", do_classification, towers == ("vision",))):  # fmt: skip
        if value is not None and not allowed:
            raise TypeError(
                f"{cls.__name__}.from_config got {name}=, which only CLIP's single towers / vision models take"
            )
    if len(towers) == 1:
        (tower,) = towers
        classify = architecture.endswith("ForImageClassification")
        if cls.PROJECTS:
            if with_projection is None:
                with_projection = (
                    architecture.endswith("WithProjection") or (is_pair and not classify) or not architecture
                )
            if with_projection and is_pair:
                sub = getattr(config, f"{tower}_config").replace(projection_dim=config.projection_dim)
                config = config.replace(**{f"{tower}_config": sub})
            kwargs["with_projection"] = with_projection
        if tower == "vision":
            kwargs["do_classification"] = classify if do_classification is None else do_classification
    return cls(config=config, rngs=rngs, **kwargs)


def save_pretrained(model, save_directory, *, max_shard_size: int | str = "5GB", overwrite: bool = False) -> None:
    """Write the transformers layout of `model.hf_architecture` as one atomic save (see `jimm.io.saved`)."""
    from ...data.preprocess import ImageProcessorConfig

    classify = getattr(model, "do_classification", False)
    tower = model.TOWERS[0] if len(model.TOWERS) == 1 and not classify else None
    tensors = fuse_shared_names(tensors_to_save(model, name_table(model.held_parts()), LAYERS))
    hf_config = model.config.to_hf_dict(architecture=model.hf_architecture, tower=tower, labels=classify)
    hf_config["dtype"] = {"bfloat16": "bfloat16", "float16": "float16"}.get(tensors[0][2].name, "float32")
    other_files: dict[str, Any] = {}
    if "vision" in model.TOWERS:
        text = model.preprocessor_json or json.dumps(ImageProcessorConfig.for_model(model).to_dict(), indent=2)
        other_files[PREPROCESSOR] = text
    if "text" in model.TOWERS and model.tokenizer is not None:
        other_files |= {path.name: path for path in model.tokenizer.files}  # `Tokenizer.save`'s files, atomically
    save_model_folder(
        save_directory,
        tensors,
        json_files={CONFIG: hf_config},
        other_files=other_files,
        max_shard_size=max_shard_size,
        overwrite=overwrite,
    )


__all__ = ["build_from_config", "load_pretrained", "save_pretrained"]
