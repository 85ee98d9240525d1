"""DINOv2's part of the shared HF loader (`jimm.models.pretrained`): config, names, layouts, saved files."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..pretrained import IMAGENET_MEAN, IMAGENET_STD, Family
from . import formats
from .config import REGISTERS, DINOv2Config
from .names import MASKED_IMAGE_ONLY, classic_name, has_split_swiglu, model_prefix, name_table

SWIGLU_IN = ".mlp.weights_in.weight"


class DINOv2Family(Family):
    label = "jimm.DINOv2Model"
    config_class = DINOv2Config
    masked_image_only = MASKED_IMAGE_ONLY

    def read_config(self, raw: dict[str, Any]) -> DINOv2Config:
        return DINOv2Config.from_hf_dict(raw)

    def classic_name(self, name: str) -> str:
        return classic_name(name)

    def model_prefix(self, config: DINOv2Config) -> str:
        return model_prefix(config)

    def name_table(self, config, *, prefix, with_head, entries):
        split = entries is not None and config.use_swiglu_ffn and has_split_swiglu(entries)
        return name_table(config, prefix=prefix, with_head=with_head, split_swiglu=split)

    def check(self, config: DINOv2Config, entries: dict, source: str) -> None:
        for name, (shape, _) in entries.items():
            if name.endswith(SWIGLU_IN) and shape and shape[0] % 2:
                raise ValueError(
                    f"{source}: {name} has an odd fused width {shape[0]}: SwiGLU's weights_in stacks the gate and up "
                    f"projections (2 x {config.mlp_dim} rows for this config, gate first)"
                )

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
