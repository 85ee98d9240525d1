"""`from_pretrained` / `from_config` / `save_pretrained` for CLIP and SigLIP, every class, over the shared loader.

One checkpoint layout per transformers class: the pair (`CLIPModel`, `SiglipModel`), a standalone tower
(`CLIPVisionModel[WithProjection]`, `CLIPTextModel[WithProjection]`, `SiglipVisionModel`, `SiglipTextModel`) or a
classifier (`...ForImageClassification`: the pair's config, the vision tower's tensors and `classifier.*`).
Any of them loads into any jimm class that its tensors cover: a vision model takes the vision tower of a pair
checkpoint (the text tower is skipped, said out loud); a class whose tower the checkpoint lacks is an error naming
the class that fits. Loading is strict (`jimm.models.loading`); `position_ids` buffers of old files are ignored.
"""

from __future__ import annotations

import json
import logging
import os
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
from ..loading import decide_head, fresh_params_of, load_model
from ..registry import read_json_object
from .names import LAYERS, TEXT, VISION, TowerPrefixed, fuse_shared_names, name_table

logger = logging.getLogger(__name__)

PREFIX = {"vision": f"{VISION}.", "text": f"{TEXT}."}
PROJECTION = {"vision": "visual_projection.", "text": "text_projection."}
PER_TOWER_KWARGS = {"vision": "vision_attention_fn", "text": "text_attention_fn"}


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
        with tempfile.TemporaryDirectory() as tmp:  # files spread over folders (a save being rolled forward)
            for path in [*found, resolved.config]:
                shutil.copyfile(path, Path(tmp) / path.name)
            return Tokenizer.from_pretrained(tmp)
    except (ValueError, OSError) as err:
        logger.warning("%s: its tokenizer could not be read (%s); model.tokenizer is None", resolved.source, err)
        return None


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
    source = os.fspath(name_or_path)
    towers = cls.TOWERS
    if "vision" not in towers or len(towers) > 1:
        for name, value in (
            ("num_classes", num_classes),
            ("id2label", id2label),
            ("do_classification", do_classification),
        ):
            if value is not None:
                raise TypeError(f"{cls.__name__}.from_pretrained got {name}=: a classifier head is for vision models")
    resolved = resolve_model(
        name_or_path, prefer_pytorch=prefer_pytorch, revision=revision, token=token, cache_dir=cache_dir
    )
    raw_config, config = _read_config(cls, resolved.config)
    model_type = raw_config.get("model_type")
    standalone = {cls.CONFIG.VISION.MODEL_TYPE: "vision", cls.CONFIG.TEXT.MODEL_TYPE: "text"}.get(model_type)
    with open_checkpoint(resolved.weights) as raw:
        view = TowerPrefixed(raw, PREFIX[standalone]) if standalone else raw
        entries = view.entries()
        stored = {t for t, p in PREFIX.items() if any(n.startswith(p) for n in entries)}
        for tower in towers:
            if tower not in stored:
                fits = " or ".join(_family_class(cls, t) for t in sorted(stored)) or "no jimm class"
                raise ValueError(
                    f"{source} holds no {tower} tower (architectures: {raw_config.get('architectures')}); "
                    f"it loads as {fits}"
                )
        ignored = {n for n in entries if n.endswith("embeddings.position_ids")}  # old non-persistent buffers
        for tower in stored - set(towers):
            ignored |= {n for n in entries if n.startswith((PREFIX[tower], PROJECTION[tower]))}
            logger.info("%s: skipped the %s tower, which %s does not have", source, tower, cls.__name__)
        if len(towers) == 1:
            ignored |= {n for n in entries if n in ("logit_scale", "logit_bias")}

        kwargs: dict[str, Any] = {}
        fresh = None
        if len(towers) == 2:
            parts = cls.parts(config)
            kwargs |= {"vision_attention_fn": vision_attention_fn, "text_attention_fn": text_attention_fn}
        else:
            (tower,) = towers
            projected = cls.PROJECTS and f"{PROJECTION[tower]}weight" in entries
            flags = {}
            if tower == "vision":
                head = entries.get("classifier.weight")
                stored_classes = head[0][0] if head is not None else None
                config, do_classification, head_from_checkpoint = decide_head(
                    config,
                    stored_classes,
                    num_classes=num_classes,
                    id2label=id2label,
                    do_classification=do_classification,
                    source=source,
                )
                if not head_from_checkpoint:
                    ignored |= {n for n in entries if n.startswith("classifier.")}
                if projected and do_classification:  # transformers' classifiers have no projection
                    ignored.add("visual_projection.weight")
                    projected = False
                    logger.info("%s: skipped visual_projection (a classifier pools the patch tokens)", source)
                flags["do_classification"] = do_classification
                if do_classification and not head_from_checkpoint:
                    d, c = config.vision_config.hidden_size, config.num_labels

                    def fresh(model_rngs: nnx.Rngs) -> dict:
                        linear = nnx.Linear(d, c, kernel_init=default_kernel_init, rngs=model_rngs)
                        return fresh_params_of(linear, ("classifier",))

            if projected and model_type == cls.CONFIG.MODEL_TYPE:  # a pair's projection: its width is the pair's
                sub = getattr(config, f"{tower}_config").replace(projection_dim=config.projection_dim)
                config = config.replace(**{f"{tower}_config": sub})
            if cls.PROJECTS:
                flags["with_projection"] = projected
            parts = cls.parts(config, **flags)
            if tower == "vision" and fresh is not None:
                import dataclasses

                parts = dataclasses.replace(parts, num_labels=None)  # the new head is not read from the file
            kwargs |= flags
            kwargs["attention_fn"] = (vision_attention_fn if tower == "vision" else text_attention_fn) or attention_fn
        if len(towers) == 2:
            kwargs["attention_fn"] = attention_fn
        build_kwargs = dict(
            config=config,
            dtype=dtype,
            param_dtype=param_dtype,
            sharding=sharding,
            use_gradient_checkpointing=use_gradient_checkpointing,
            remat_policy=remat_policy,
            scan_layers=scan_layers,
            **kwargs,
        )
        model = load_model(
            cls,
            build_kwargs,
            name_table(parts),
            view,
            source=source,
            layers=LAYERS,
            rngs=rngs,
            ignored=ignored,
            fresh_params=fresh,
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


def model_parts(model):
    """The `Parts` of a built model (what it holds), for its name table."""
    if len(model.TOWERS) == 2:
        return model.parts(model.config)
    flags = {"with_projection": model.text_projection is not None} if model.TOWERS == ("text",) else {}
    if model.TOWERS == ("vision",):
        flags = {"with_projection": model.visual_projection is not None, "do_classification": model.do_classification}
    if not model.PROJECTS:
        flags.pop("with_projection")
    return model.parts(model.config, **flags)


def save_pretrained(model, save_directory, *, max_shard_size: int | str = "5GB", overwrite: bool = False) -> None:
    """Write the transformers layout of `model.hf_architecture` as one atomic save (see `jimm.io.saved`)."""
    from ...data.preprocess import ImageProcessorConfig

    classify = getattr(model, "do_classification", False)
    tower = model.TOWERS[0] if len(model.TOWERS) == 1 and not classify else None
    tensors = fuse_shared_names(tensors_to_save(model, name_table(model_parts(model)), LAYERS))
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
