"""Real photos of mixed aspect ratios and a tiny random transformers `Siglip2Model` (NaFlex), saved in-process.

Odd widths and head dims that are not 64: vision 39 wide (3 heads of 13, MLP 23, 8 px patches, a 12 x 12 position
table), text 33 wide (3 heads of 11, MLP 19, 16 positions, a Gemma-style tokenizer), text head to 39.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from image_text_fixtures import perturb, quiet_transformers, tokenizer_folder

VISION = dict(hidden_size=39, intermediate_size=23, num_hidden_layers=2, num_attention_heads=3, patch_size=8,
              num_patches=144)  # fmt: skip
TEXT = dict(hidden_size=33, intermediate_size=19, num_hidden_layers=2, num_attention_heads=3,
            max_position_embeddings=16, projection_size=39)  # fmt: skip


def photos() -> dict:
    """skimage's photos: square, landscape, a portrait crop, and a sliver that rounds up to one patch row."""
    from skimage import data

    return {
        "astronaut": data.astronaut(),  # square 512x512
        "coffee": data.coffee(),  # landscape 400x600
        "chelsea": data.chelsea(),  # landscape 300x451
        "rocket": data.rocket(),  # landscape 427x640
        "rocket_crop": data.rocket()[20:407, 230:401],  # portrait 387x171
        "sliver": data.coffee()[100:109, :],  # 9x600
    }


def processor_folder(path: Path, max_num_patches: int = 256, **fields) -> Path:
    """A `preprocessor_config.json` as the NaFlex hub repos write it (the Fast class name)."""
    path.mkdir(parents=True, exist_ok=True)
    raw = {"image_processor_type": "Siglip2ImageProcessorFast", "max_num_patches": max_num_patches, **fields}
    (path / "preprocessor_config.json").write_text(json.dumps(raw))
    return path


def save_siglip2(path: Path, seed: int = 0, text: dict | None = None, **vision):
    """A tiny random `Siglip2Model` saved with its tokenizer and image processor (patch size 8); returns it.
    `text` and `vision` override the fixture's sizes."""
    import transformers as T

    quiet_transformers()
    torch.manual_seed(seed)
    text = {**TEXT, **(text or {}), **tokenizer_folder("siglip2", path)}
    model = T.Siglip2Model(T.Siglip2Config(vision_config={**VISION, **vision}, text_config=text))
    perturb(model, seed).save_pretrained(path)
    processor_folder(path, patch_size=model.config.vision_config.patch_size)
    return model
