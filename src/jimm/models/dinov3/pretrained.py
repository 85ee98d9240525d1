"""DINOv3's part of the shared HF loader (`jimm.models.pretrained`): config, names, saved files."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..pretrained import IMAGENET_MEAN, IMAGENET_STD, Family
from .config import DINOv3Config
from .names import EMPTY_REGISTERS, MASKED_IMAGE_ONLY, classic_name, name_table


class DINOv3Family(Family):
    label = "jimm.DINOv3Model"
    config_class = DINOv3Config
    masked_image_only = MASKED_IMAGE_ONLY

    def read_config(self, raw: dict[str, Any]) -> DINOv3Config:
        return DINOv3Config.from_hf_dict(raw)

    def classic_name(self, name: str) -> str:
        return classic_name(name)

    def name_table(self, config, *, prefix, with_head, entries):
        return name_table(config, prefix=prefix, with_head=with_head)

    def ignored(self, config: DINOv3Config, entries: dict) -> set[str]:
        shape = entries.get(EMPTY_REGISTERS, ((1,),))[0]
        return {EMPTY_REGISTERS} if not config.num_register_tokens and 0 in tuple(shape) else set()

    def extra_tensors(self, config: DINOv3Config, dtype) -> list:
        if config.num_register_tokens:
            return []
        shape = (1, 0, config.hidden_size)  # transformers' DINOv3ViTModel always has a register parameter
        return [(EMPTY_REGISTERS, shape, dtype, lambda: np.zeros(shape, dtype))]

    def architecture(self, config: DINOv3Config, with_head: bool) -> str:
        # transformers has no DINOv3 classifier: a headed save still loads in DINOv3ViTModel (the head aside).
        return "DINOv3ViTModel"

    def preprocessor(self, config: DINOv3Config) -> dict[str, Any]:
        """The hub checkpoints' DINOv3ViTImageProcessor at the model's size (bilinear, ImageNet mean/std)."""
        h, w = config.image_hw
        return {
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": list(IMAGENET_MEAN),
            "image_processor_type": "DINOv3ViTImageProcessorFast",
            "image_std": list(IMAGENET_STD),
            "resample": 2,
            "rescale_factor": 1 / 255,
            "size": {"height": h, "width": w},
        }


FAMILY = DINOv3Family()
