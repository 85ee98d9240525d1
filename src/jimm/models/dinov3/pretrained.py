"""DINOv3's plug-in for the one loader (`jimm.models.loading`): config, names, its head, saved files."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..dinov2.pretrained import settle
from ..pretrained import IMAGENET_MEAN, IMAGENET_STD, BackboneFamily
from .config import DINOv3Config
from .names import EMPTY_REGISTERS, MASKED_IMAGE_ONLY, classic_name, name_table


class DINOv3Family(BackboneFamily):
    label = "jimm.DINOv3Model"
    config_class = DINOv3Config
    masked_image_only = MASKED_IMAGE_ONLY
    depth_pattern = r"(?:^|\.)layer\.(\d+)\."  # DINOv3's blocks are `layer.N`, with no `encoder.`

    classic_name = staticmethod(classic_name)

    def table(self, config, *, prefix, with_head, entries):
        return name_table(config, prefix=prefix, with_head=with_head)

    def head_width(self, config) -> int:
        return 2 * config.hidden_size  # the head reads [CLS, mean(patches)]

    def settle(self, config: DINOv3Config, entries: dict, do_classification: bool, source: str):
        config, kwargs, ignored = settle(config, do_classification)
        shape = entries.get(EMPTY_REGISTERS, ((1,),))[0]
        if not config.num_register_tokens and 0 in tuple(shape):  # transformers' always-present empty registers
            ignored.add(EMPTY_REGISTERS)
        return config, kwargs, ignored

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
