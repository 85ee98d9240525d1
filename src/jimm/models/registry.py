"""One entry point for every family: `jimm.from_pretrained(name_or_path)` picks the class from the checkpoint.

The class comes from `config.json`'s `model_type` (refined by `architectures` where one model type has several
classes), or, for checkpoints without an HF config, from the tensor layout (`LAYOUTS`). Classes are named
by import path and imported only when chosen, so adding a family is one line here.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from ..io.files import ModelFiles, locate
from .catalog import resolve_name

# model_type -> "module:Class"
MODEL_TYPES: dict[str, str] = {
    "vit": "jimm.models.vit:VisionTransformer",
    "deit": "jimm.models.vit:VisionTransformer",
    "dinov2": "jimm.models.dinov2:DINOv2Model",
    "dinov2_with_registers": "jimm.models.dinov2:DINOv2Model",
    "dinov3_vit": "jimm.models.dinov3:DINOv3Model",
    "aimv2_vision_model": "jimm.models.aimv2:AIMv2Model",
    "aimv2": "jimm.models.aimv2:AIMv2",  # the LiT pair (jimm.AIMv2Model.from_pretrained takes its vision tower)
    "clip": "jimm.models.clip:CLIP",
    "clip_vision_model": "jimm.models.clip:CLIPVisionModel",
    "clip_text_model": "jimm.models.clip:CLIPTextModel",
    "siglip": "jimm.models.siglip:SigLIP",  # SigLIP 2 fixed-resolution checkpoints are model_type "siglip" too
    "siglip_vision_model": "jimm.models.siglip:SigLIPVisionModel",
    "siglip_text_model": "jimm.models.siglip:SigLIPTextModel",
    "siglip2": "jimm.models.siglip2:SigLIP2",  # NaFlex only: SigLIP 2's fixed-resolution repos are "siglip"
    "siglip2_vision_model": "jimm.models.siglip2:SigLIP2VisionModel",
    "siglip2_text_model": "jimm.models.siglip2:SigLIP2TextModel",
}
# (model_type, architecture) -> "module:Class", where an architecture picks another class than its model_type.
ARCHITECTURES: dict[tuple[str, str], str] = {
    ("clip", "CLIPForImageClassification"): "jimm.models.clip:CLIPVisionModel",
    ("siglip", "SiglipForImageClassification"): "jimm.models.siglip:SigLIPVisionModel",
    ("siglip2", "Siglip2ForImageClassification"): "jimm.models.siglip2:SigLIP2VisionModel",
}
# (predicate over tensor names, "module:Class"), tried in order for checkpoints without an HF config.json.
LAYOUTS: list[tuple[Any, str]] = [
    (lambda names: any(n.endswith("embedding/kernel") for n in names), "jimm.models.vit:VisionTransformer"),
    # torch-hub DINOv2 (`mask_token`, `register_tokens`, SwiGLU `w12`); timm's DINOv2 names are a timm ViT's
    (lambda names: _dinov2_hub(names), "jimm.models.dinov2:DINOv2Model"),
    (lambda names: "patch_embed.proj.weight" in names, "jimm.models.vit:VisionTransformer"),
    # HF-layout weights without their config.json: the class's own loader says what is missing
    (
        lambda names: any(n.endswith("embeddings.patch_embeddings.projection.weight") for n in names),
        "jimm.models.vit:VisionTransformer",
    ),
]


def _dinov2_hub(names) -> bool:
    from .dinov2.formats import HUB, detect  # imported when asked: the registry imports no family

    return detect(names) == HUB


def _load_class(target: str) -> type:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def class_for_config(config: dict, *, source: str) -> type:
    """The jimm class of an HF config dict."""
    model_type = config.get("model_type")
    if model_type is None:
        raise ValueError(f"{source}: config.json has no model_type; pass the checkpoint to the model class directly")
    for architecture in config.get("architectures") or ():
        if (model_type, architecture) in ARCHITECTURES:
            return _load_class(ARCHITECTURES[(model_type, architecture)])
    if model_type not in MODEL_TYPES:
        raise ValueError(
            f"{source}: model_type {model_type!r} is not a family jimm implements; known: {sorted(MODEL_TYPES)}"
        )
    return _load_class(MODEL_TYPES[model_type])


def class_for_tensors(names, *, source: str) -> type:
    names = set(names)
    for matches, target in LAYOUTS:
        if matches(names):
            return _load_class(target)
    sample = ", ".join(sorted(names)[:6]) + (", ..." if len(names) > 6 else "")
    raise ValueError(f"{source}: the tensor layout matches no family jimm implements (tensors: {sample})")


def locate_class(name_or_path: str | os.PathLike, **locate_kwargs) -> tuple[type, ModelFiles]:
    """The class `from_pretrained(name_or_path)` builds, and the files it found (config parsed, a config-less
    checkpoint's header open), to hand to that class's loader so nothing is read twice."""
    kwargs = {"prefer_pytorch": False, "revision": None, "token": None, "cache_dir": None, **locate_kwargs}
    files = locate(name_or_path, **kwargs)
    if files.hf_config is not None:
        return class_for_config(files.hf_config, source=files.source), files
    try:
        return class_for_tensors(files.header().entries(), source=files.source), files
    except BaseException:
        files.open_weights().close()
        raise


def model_class(name_or_path: str | os.PathLike, **locate_kwargs) -> type:
    """The jimm class that `from_pretrained(name_or_path)` would build (the same file lookup and messages)."""
    cls, files = locate_class(name_or_path, **locate_kwargs)
    if files.opened is not None:
        files.open_weights().close()
    return cls


def _as_classifier(cls: type, source) -> type:
    cls = getattr(cls, "vision_class", cls)
    if "vision" not in getattr(cls, "TOWERS", ("vision",)):
        raise ValueError(f"{source} is a text model ({cls.__name__}); it has no image tower to classify with")
    return cls


def image_classifier_class(name_or_path: str | os.PathLike, **hub_kwargs) -> type:
    """The class that fine-tunes `name_or_path` as an image classifier: the checkpoint's own class, or the vision
    model of an image-text checkpoint (`jimm.CLIP` -> `jimm.CLIPVisionModel`, whose head saves as transformers'
    `CLIPForImageClassification`)."""
    return _as_classifier(model_class(name_or_path, **hub_kwargs), name_or_path)


def _load(name_or_path, kwargs: dict[str, Any], pick=None):
    """`pick(class, source)`'s `from_pretrained`, given the files found (and config parsed) once."""
    hub = {k: kwargs[k] for k in ("revision", "token", "cache_dir") if k in kwargs}
    prefer = {"prefer_pytorch": kwargs["use_pytorch"]} if kwargs.get("use_pytorch") else {}
    cls, files = locate_class(name_or_path, **hub, **prefer)
    try:
        cls = pick(cls, name_or_path) if pick is not None else cls
        return cls.from_pretrained(files, **kwargs)
    finally:
        if files.opened is not None:  # the class's loader did not take the open checkpoint (an argument error)
            files.open_weights().close()


def from_pretrained(name_or_path: str | os.PathLike, **kwargs: Any):
    """Load any supported checkpoint with the right jimm class (`model_type`, else the tensor layout).

    `name_or_path` may also be a catalog name (`jimm.list_models()`). Keyword arguments go to that class's
    `from_pretrained` (e.g. `dtype=`, `sharding=`, `num_classes=`).
    """
    return _load(resolve_name(name_or_path), kwargs)  # a catalog name (`jimm.list_models()`) loads its hub id


def image_classifier(name_or_path: str | os.PathLike, **kwargs: Any):
    """Load `name_or_path` with `image_classifier_class`'s class (an image-text checkpoint's vision model)."""
    return _load(name_or_path, kwargs, _as_classifier)


__all__ = [
    "ARCHITECTURES",
    "LAYOUTS",
    "MODEL_TYPES",
    "from_pretrained",
    "image_classifier",
    "image_classifier_class",
    "locate_class",
    "model_class",
]
