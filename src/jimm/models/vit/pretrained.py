"""`VisionTransformer.from_pretrained` / `save_pretrained`: ViT's layouts and head rules over the shared loader.

Any supported layout (HF, timm, vit_jax / big_vision npz; see `formats/`) is presented under classic HF
names, checked strictly against the ViT name table (`names.py`) and streamed onto the model's shardings
(`jimm.models.loading`). Saving writes transformers' format through the atomic folder save (`jimm.io.model_folder`).
"""

from __future__ import annotations

import logging

from ..loading import load
from ..pretrained import BackboneFamily
from ..pretrained import save_pretrained as save_family
from ..views import Renamed
from .config import ViTConfig
from .names import LAYERS, POOLER, classic_name, head_name, model_prefix, name_table

logger = logging.getLogger(__name__)


class ViTFamily(BackboneFamily):
    """ViT / DeiT in any layout (HF, timm, npz), with load-time resampling of the positions to `img_size`."""

    label = "jimm.VisionTransformer"
    config_class = ViTConfig
    layers = LAYERS
    head_modules = ("classifier", "classifier_dist")
    head_tensors = ("classifier.", "cls_classifier.", "distillation_classifier.")

    def __init__(self, img_size: int | tuple[int, int] | None = None):
        self.img_size, self.format = img_size, None

    def open(self, raw, files, config, source):
        from .formats import ResampledPosEmbed
        from .formats.detect import open_layout

        view, config, self.format = open_layout(raw, files, config, source)
        view = Renamed(view, classic_name)
        if self.img_size is not None:  # resample once at load time: the saved config then records the new size
            old_grid, size = config.grid_hw, self.img_size
            config = config.replace(image_size=tuple(size) if isinstance(size, list | tuple) else size)
            pos_prefix = 0 if config.no_embed_class else config.num_prefix_tokens
            pos_name = next((n for n in view.entries() if n.endswith("embeddings.position_embeddings")), None)
            if pos_name is not None and config.grid_hw != old_grid:
                view = ResampledPosEmbed(
                    view, pos_name, old_grid, config.grid_hw, pos_prefix, config.pos_embed_antialias
                )
        return view, config

    def stored_classes(self, config, entries):
        head = entries.get(head_name(config))
        return head[0][0] if head is not None and len(head[0]) == 2 else None

    def settle(self, config, entries, do_classification, source):
        """ViTModel's pooler loads when the config's architectures ask for it and the checkpoint has it (a classifier,
        or a save without pooler tensors, builds none); an unused pooler is skipped with an info line."""
        pooler = {name for name in entries if POOLER.match(name)}
        if config.add_pooling_layer and (do_classification or not pooler):
            config = config.replace(add_pooling_layer=False)
        if pooler and not config.add_pooling_layer:
            logger.info("%s: skipped ViTModel's pooler (dense+tanh): this model is not a ViTModel", source)
        return config, {"do_classification": do_classification}, set() if config.add_pooling_layer else pooler

    def model_prefixes(self, config):
        return (model_prefix(config), *({"vit.", "deit."} - {model_prefix(config)}))

    def table(self, config, *, prefix, with_head, entries):
        return name_table(config, prefix=prefix, with_head=with_head)

    def new_heads(self, config):
        return self.head_modules if config.distilled else self.head_modules[:1]

    def finish(self, model, files):
        hf = self.format == "hf" and self.img_size is None and files.preprocessor is not None
        model.preprocessor_json = files.preprocessor.read_text(encoding="utf-8") if hf else None

    def architecture(self, config, with_head):
        head = "ForImageClassificationWithTeacher" if config.distilled else "ForImageClassification"
        return ("DeiT" if config.distilled else "ViT") + (head if with_head else "Model")

    def preprocessor(self, config):
        h, w = config.image_hw
        return {**DEFAULT_PREPROCESSOR, "size": {"height": h, "width": w}}


def load_pretrained(cls, name_or_path, *, img_size=None, **kwargs):
    """Strictly load a ViT checkpoint (HF, timm or npz layout), streaming each tensor onto its target sharding."""
    return load(cls, ViTFamily(img_size), name_or_path, **kwargs)


DEFAULT_PREPROCESSOR = {
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "ViTImageProcessor",
    "image_std": [0.5, 0.5, 0.5],
    "resample": 2,
    "rescale_factor": 1 / 255,
}


def save_pretrained(model, save_directory, *, max_shard_size: int | str = "5GB", overwrite: bool = False) -> None:
    """Write transformers' ViT / DeiT format as one atomic save (see `jimm.io.atomic_save`)."""
    save_family(model, ViTFamily(), save_directory, max_shard_size=max_shard_size, overwrite=overwrite)


__all__ = ["ViTFamily", "load_pretrained", "save_pretrained"]
