"""`from_pretrained` / `from_config` / `save_pretrained` for CLIP and SigLIP, every class, over the shared loader.

One checkpoint layout per transformers class: the pair (`CLIPModel`, `SiglipModel`), a standalone tower
(`CLIPVisionModel[WithProjection]`, `CLIPTextModel[WithProjection]`, `SiglipVisionModel`, `SiglipTextModel`) or a
classifier (`...ForImageClassification`: the pair's config, the vision tower's tensors and `classifier.*`).
Any of them loads into any jimm class that its tensors cover: a vision model takes the vision tower of a pair
checkpoint (the text tower is skipped, said out loud); a class whose tower the checkpoint lacks is an error naming
the class that fits. Loading is the one loader's (`jimm.models.loading`); old `position_ids` buffers are skipped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from flax import nnx

from ...io.files import ModelFiles
from ...io.model_folder import save_model_folder
from ...io.resolve import CONFIG, PREPROCESSOR, TOKENIZER_FILES
from ...io.state import tensors_to_save
from ..loading import Plugin, load
from ..views import Renamed
from .names import LAYERS, TEXT, VISION, fuse_shared_names, with_tower_prefix

logger = logging.getLogger(__name__)

PREFIX = {"vision": f"{VISION}.", "text": f"{TEXT}."}
PROJECTION = {"vision": "visual_projection.", "text": "text_projection."}


def _family_class(cls, tower: str) -> str:
    if cls.STANDALONE is not None:
        return cls.STANDALONE.get(tower, f"no jimm class (jimm has no lone {tower} tower of {cls.CONFIG.FAMILY})")
    base = cls.CONFIG.FAMILY  # "jimm.CLIP"
    return f"{base}VisionModel" if tower == "vision" else f"{base}TextModel"


def _load_tokenizer(files: ModelFiles):
    """The checkpoint's `jimm.Tokenizer`, or None (with a warning saying why) when its files are absent or unusable."""
    from ...text import Tokenizer

    found = [p for p in (files.file(name) for name in TOKENIZER_FILES) if p is not None]
    if not found:
        logger.info("%s has no tokenizer files: model.tokenize and zero_shot need model.tokenizer set", files.source)
        return None
    try:
        folder = found[0].parent
        if all(p.parent == folder for p in found):
            return Tokenizer.from_pretrained(folder, model_config=files.hf_config)
        # Files of one save spread over the folder and its staging folder (a save being rolled forward): gather
        # them in a folder that lives as long as the process, as `Tokenizer.files` must stay readable for saving.
        gathered = Path(tempfile.mkdtemp(prefix="jimm-tokenizer-"))
        for path in [*found, files.config_path]:
            shutil.copyfile(path, gathered / path.name)
        return Tokenizer.from_pretrained(gathered, model_config=files.hf_config)
    except (ValueError, OSError) as err:
        logger.warning("%s: its tokenizer could not be read (%s); model.tokenizer is None", files.source, err)
        return None


class ImageTextFamily(Plugin):
    """CLIP / SigLIP, every class: a pair, a standalone tower, or a vision classifier, from any of their layouts."""

    layers = LAYERS

    def __init__(self, cls, *, attention_fn, vision_attention_fn=None, text_attention_fn=None):
        self.cls, self.towers = cls, cls.TOWERS
        self.label, self.config_class = cls.__name__, cls.CONFIG
        self.head_modules = ("classifier",) if self.towers == ("vision",) else ()
        fns = {"vision": vision_attention_fn, "text": text_attention_fn}
        if len(self.towers) == 1:
            self.attention = {"attention_fn": fns[self.towers[0]] or attention_fn}
        else:
            self.attention = {"attention_fn": attention_fn, **{f"{t}_attention_fn": fn for t, fn in fns.items()}}
        self.model_type, self.stored, self.flags = None, set(), {}

    def open(self, raw, files, config, source):
        view, config = super().open(raw, files, config, source)
        self.model_type = files.hf_config.get("model_type")
        standalone = {self.cls.CONFIG.VISION.MODEL_TYPE: "vision", self.cls.CONFIG.TEXT.MODEL_TYPE: "text"}
        if self.model_type in standalone:
            view = Renamed(raw, with_tower_prefix(PREFIX[standalone[self.model_type]]))
        entries = view.entries()
        self.stored = {tower for tower, prefix in PREFIX.items() if any(name.startswith(prefix) for name in entries)}
        for tower in self.towers:
            if tower not in self.stored:
                fits = " or ".join(_family_class(self.cls, t) for t in sorted(self.stored)) or "no jimm class"
                raise ValueError(
                    f"{source} holds no {tower} tower (architectures: {files.hf_config.get('architectures')}); "
                    f"it loads as {fits}"
                )
        return view, config

    def settle(self, config, entries, do_classification, source):
        ignored = {name for name in entries if name.endswith("embeddings.position_ids")}  # old non-persistent buffers
        for tower in self.stored - set(self.towers):
            ignored |= {name for name in entries if name.startswith((PREFIX[tower], PROJECTION[tower]))}
            logger.info("%s: skipped the %s tower, which %s does not have", source, tower, self.cls.__name__)
        self.flags = {}
        if len(self.towers) == 1:  # a standalone tower: no logit scale; a projection or a classifier when it has one
            (tower,) = self.towers
            ignored |= {name for name in entries if name in ("logit_scale", "logit_bias")}
            projected = self.cls.PROJECTS and f"{PROJECTION[tower]}weight" in entries
            if tower == "vision":
                self.flags["do_classification"] = do_classification
                if projected and do_classification:  # transformers' classifiers have no projection
                    ignored.add("visual_projection.weight")
                    projected = False
                    logger.info("%s: skipped visual_projection (a classifier pools the patch tokens)", source)
            if projected and self.model_type == self.cls.CONFIG.MODEL_TYPE:  # a pair's projection: the pair's width
                sub = getattr(config, f"{tower}_config").replace(projection_dim=config.projection_dim)
                config = config.replace(**{f"{tower}_config": sub})
            if self.cls.PROJECTS:
                self.flags["with_projection"] = projected
        return config, {**self.attention, **self.flags}, ignored

    def depths(self, config):
        return [
            (rf"^{re.escape(PREFIX[t])}encoder\.layers\.(\d+)\.", getattr(config, f"{t}_config").num_hidden_layers)
            for t in self.towers
        ]

    def name_table(self, config, entries, *, with_head):
        parts = self.cls.parts(config, **self.flags)
        return self.cls.hf_name_table(config, parts if with_head else dataclasses.replace(parts, num_labels=None))

    def head_width(self, config):
        return config.vision_config.hidden_size

    def finish(self, model, files):
        if "vision" in self.towers and files.preprocessor is not None:
            model.preprocessor_json = files.preprocessor.read_text(encoding="utf-8")
        if "text" in self.towers:
            model.tokenizer = _load_tokenizer(files)


def load_pretrained(
    cls,
    name_or_path,
    *,
    attention_fn=None,
    vision_attention_fn=None,
    text_attention_fn=None,
    **kwargs,
):
    """Strictly load a CLIP / SigLIP checkpoint of any layout into `cls`, streaming each tensor onto its sharding."""
    fns = dict(attention_fn=attention_fn, vision_attention_fn=vision_attention_fn, text_attention_fn=text_attention_fn)
    return load(cls, ImageTextFamily(cls, **fns), name_or_path, **kwargs)


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
    """Write the transformers layout of `model.hf_architecture` as one atomic save (see `jimm.io.atomic_save`)."""
    from ...data.naflex import NaFlexProcessorConfig
    from ...data.preprocess import ImageProcessorConfig

    classify = getattr(model, "do_classification", False)
    tower = model.TOWERS[0] if len(model.TOWERS) == 1 and not classify else None
    tensors = fuse_shared_names(tensors_to_save(model, model.hf_name_table(model.config, model.held_parts()), LAYERS))
    hf_config = model.config.to_hf_dict(architecture=model.hf_architecture, tower=tower, labels=classify)
    hf_config["dtype"] = {"bfloat16": "bfloat16", "float16": "float16"}.get(tensors[0][2].name, "float32")
    other_files: dict[str, Any] = {}
    if "vision" in model.TOWERS:
        processor = NaFlexProcessorConfig if getattr(model, "NAFLEX", False) else ImageProcessorConfig
        text = model.preprocessor_json or json.dumps(processor.for_model(model).to_dict(), indent=2)
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
