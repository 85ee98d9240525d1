"""DINOv2's plug-in for the one loader (`jimm.models.loading`): config, names, layouts, its head, saved files."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..pretrained import IMAGENET_MEAN, IMAGENET_STD, BackboneFamily
from . import formats
from .config import REGISTERS, DINOv2Config
from .names import MASKED_IMAGE_ONLY, classic_name, has_split_swiglu, model_prefix, name_table

SWIGLU_IN = ".mlp.weights_in.weight"


def settle(config, do_classification: bool):
    """A headless DINO model records no labels (transformers' `Dinov2Model` has none)."""
    config = config if do_classification else config.replace(num_labels=0, id2label=None)
    return config, {"do_classification": do_classification}, set()


class DINOv2Family(BackboneFamily):
    label = "jimm.DINOv2Model"
    config_class = DINOv2Config
    masked_image_only = MASKED_IMAGE_ONLY

    classic_name = staticmethod(classic_name)

    def model_prefixes(self, config: DINOv2Config) -> tuple[str, ...]:
        return (model_prefix(config),)

    def table(self, config, *, prefix, with_head, entries):
        split = entries is not None and config.use_swiglu_ffn and has_split_swiglu(entries)
        return name_table(config, prefix=prefix, with_head=with_head, split_swiglu=split)

    def head_width(self, config) -> int:
        return 2 * config.hidden_size  # the head reads [CLS, mean(patches)]

    def settle(self, config: DINOv2Config, entries: dict, do_classification: bool, source: str):
        for name, (shape, _) in entries.items():
            if name.endswith(SWIGLU_IN) and shape and shape[0] % 2:
                raise ValueError(
                    f"{source}: {name} has an odd fused width {shape[0]}: SwiGLU's weights_in stacks the gate and up "
                    f"projections (2 x {config.mlp_dim} rows for this config, gate first)"
                )
        return settle(config, do_classification)

    def fresh(self, config: DINOv2Config, entries: dict, *, foreign: bool) -> dict:
        if foreign and config.use_mask_token and "embeddings.mask_token" not in entries:
            return {("encoder", "mask_token"): np.zeros((1, config.hidden_size), np.float32)}  # timm drops it
        return {}

    def open_foreign(self, raw, config, source):
        return formats.open_foreign(raw, config, source)

    def architecture(self, config: DINOv2Config, with_head: bool) -> str:
        stem = "Dinov2WithRegisters" if config.model_type == REGISTERS else "Dinov2"
        return stem + ("ForImageClassification" if with_head else "Model")

    def preprocessor(self, config: DINOv2Config) -> dict[str, Any]:
        """The hub checkpoints' BitImageProcessor (shortest edge 8/7 of the crop, ImageNet mean/std, bicubic)."""
        h, w = config.image_hw
        return {
            "crop_size": {"height": h, "width": w},
            "do_center_crop": True,
            "do_convert_rgb": True,
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": list(IMAGENET_MEAN),
            "image_processor_type": "BitImageProcessor",
            "image_std": list(IMAGENET_STD),
            "resample": 3,
            "rescale_factor": 1 / 255,
            "size": {"shortest_edge": max(h, w) * 8 // 7},
        }


FAMILY = DINOv2Family()
