"""AIMv2's plug-in for the one loader (`jimm.models.loading`): config, names, the LiT pair's vision tower."""

from __future__ import annotations

from typing import Any

from ..catalog_data import OPENAI
from ..pretrained import BackboneFamily
from .config import AIMv2Config
from .names import LAYERS, PAIR_PREFIX, name_table


class AIMv2Family(BackboneFamily):
    label = "jimm.AIMv2Model"
    config_class = AIMv2Config
    layers = LAYERS
    head_modules = ()  # the attention-pooling head is part of the tower's table, not a classifier
    head_tensors = ()
    depth_pattern = r"^(?:vision_model\.)?encoder\.layers\.(\d+)\."  # a LiT pair's text layers do not count

    def model_prefixes(self, config) -> tuple[str, ...]:
        return (PAIR_PREFIX,)

    def table(self, config, *, prefix, with_head, entries):
        return name_table(config, prefix=prefix)

    def settle(self, config: AIMv2Config, entries: dict, do_classification: bool, source: str):
        # A LiT pair: its text tower, projections and logit scale are not this model's.
        pair = any(name.startswith(PAIR_PREFIX) for name in entries)
        return config, {}, {name for name in entries if pair and not name.startswith(PAIR_PREFIX)}

    def architecture(self, config: AIMv2Config, with_head: bool) -> str:
        return "Aimv2VisionModel"

    def preprocessor(self, config: AIMv2Config) -> dict[str, Any]:
        """The hub checkpoints' processor class (CLIPImageProcessor, transformers' auto map) at the model's size."""
        h, w = config.image_hw
        return {
            "crop_size": {"height": h, "width": w},
            "do_center_crop": True,
            "do_convert_rgb": True,
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": list(OPENAI["mean"]),
            "image_processor_type": "CLIPImageProcessor",
            "image_std": list(OPENAI["std"]),
            "resample": 3,
            "rescale_factor": 1 / 255,
            "size": {"shortest_edge": min(h, w)},
        }


FAMILY = AIMv2Family()
