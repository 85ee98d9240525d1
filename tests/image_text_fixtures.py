"""Tiny random transformers CLIP, SigLIP and SigLIP-2-style models, saved in-process with their tokenizer and image
processor files (no downloads), and helpers to run them.

Distinct odd sizes so a swapped axis fails loudly, and head dims that are not 64: CLIP vision 18 wide (3 heads of
6, MLP 23, 30 px images of 5 px patches), text 20 wide (4 heads of 5, MLP 13, 16 positions); SigLIP vision 21
wide (3 heads of 7, MLP 17, 28 px of 4 px patches), text 14 wide (2 heads of 7, 7 positions), head to 21;
SigLIP 2 as SigLIP with a Gemma tokenizer and 16 positions. Token ids match each folder's tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tokenizer_fixtures import make_clip_tokenizer, make_siglip2_tokenizer, make_siglip_tokenizer

CLIP_VISION = dict(
    hidden_size=18,
    intermediate_size=23,
    num_hidden_layers=2,
    num_attention_heads=3,
    image_size=30,
    patch_size=5,
    projection_dim=11,
)
CLIP_TEXT = dict(hidden_size=20, intermediate_size=13, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=16, hidden_act="gelu", projection_dim=11)  # fmt: skip
SIGLIP_VISION = dict(
    hidden_size=21, intermediate_size=17, num_hidden_layers=2, num_attention_heads=3, image_size=28, patch_size=4
)
SIGLIP_TEXT = dict(hidden_size=14, intermediate_size=19, num_hidden_layers=2, num_attention_heads=2,
                   max_position_embeddings=7, projection_size=21)  # fmt: skip
KINDS = ("clip", "siglip", "siglip2")
IMAGE_SIZE = {"clip": 30, "siglip": 28, "siglip2": 28}


def quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def perturb(model, seed: int = 0):
    """Non-trivial biases and LayerNorms (transformers initialises them to 0 / 1), in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or name in ("logit_scale", "logit_bias"):
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def tokenizer_folder(kind: str, path: Path) -> dict:
    """Write `kind`'s tokenizer into `path`; the text-config token ids that go with it."""
    if kind == "clip":
        vocab = make_clip_tokenizer(path)
        return dict(vocab_size=vocab, bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1)
    if kind == "siglip":
        return dict(vocab_size=make_siglip_tokenizer(path), pad_token_id=1, eos_token_id=1, bos_token_id=None)
    return dict(vocab_size=make_siglip2_tokenizer(path), pad_token_id=0, eos_token_id=1, bos_token_id=2)


def hf_config(kind: str, text_ids: dict | None = None, **text):
    import transformers as T

    text_ids = text_ids or {"vocab_size": 99}
    if kind == "clip":
        return T.CLIPConfig(vision_config=CLIP_VISION, text_config={**CLIP_TEXT, **text_ids, **text}, projection_dim=11)
    siglip_text = {**SIGLIP_TEXT, **({"max_position_embeddings": 16} if kind == "siglip2" else {})}
    return T.SiglipConfig(vision_config=SIGLIP_VISION, text_config={**siglip_text, **text_ids, **text})


def image_processor(kind: str):
    import transformers as T

    if kind == "clip":  # shortest edge then a centre crop, OpenAI mean/std
        return T.CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30})
    return T.SiglipImageProcessor(size={"height": 28, "width": 28})


def save_pair(kind: str, path: Path, seed: int = 0):
    """A tiny random `CLIPModel` / `SiglipModel` saved with its tokenizer and image processor; returns the model."""
    import transformers as T

    quiet_transformers()
    torch.manual_seed(seed)
    config = hf_config(kind, tokenizer_folder(kind, path))
    model = (T.CLIPModel if kind == "clip" else T.SiglipModel)(config)
    perturb(model, seed).save_pretrained(path)
    image_processor(kind).save_pretrained(path)
    return model


def images(kind: str, batch: int = 2, size=None, seed: int = 0) -> np.ndarray:
    """Random NHWC float images at the model's size (or `size`: an int or (h, w))."""
    size = size or IMAGE_SIZE[kind]
    h, w = (size, size) if isinstance(size, int) else size
    return np.random.RandomState(seed).randn(batch, h, w, 3).astype(np.float32)


def nchw(x: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


PROMPTS = ["a photo of a cat.", "A blurry photo of the DOG!", "an origami car; a plastic car: a toy car and more words"]
