"""Named ViT sizes in big_vision's style: `"B/16"` is width, depth, MLP width and heads, plus the patch size.

Sizes from Table 2 of "Scaling Vision Transformers" (Zhai et al., 2022, arXiv:2106.04560), which extends the
Ti/S/B/L/H of "An Image is Worth 16x16 Words" (Dosovitskiy et al., 2021) and DeiT (Touvron et al., 2021);
the same numbers as big_vision's `decode_variant`.
"""

from __future__ import annotations

from typing import Any

from .config import ViTConfig

# name: (width D, depth L, MLP width F, heads N)
SIZES: dict[str, tuple[int, int, int, int]] = {
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "M": (512, 12, 2048, 8),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "H": (1280, 32, 5120, 16),
    "g": (1408, 40, 6144, 16),
    "G": (1664, 48, 8192, 16),
}

HEADS_BY_WIDTH = {width: heads for width, _, _, heads in SIZES.values()}


def config_for(variant: str, **overrides: Any) -> ViTConfig:
    """The `ViTConfig` of a named size, e.g. `config_for("S/16", image_size=384, global_pool="avg")`.

    `variant` is a size from `SIZES` and an optional `/patch` (default 16). Keyword arguments set any other
    `ViTConfig` field (they may not override the size's width, depth, MLP width or heads). timm / big_vision
    conventions such as `layer_norm_eps=1e-6` are not implied: pass them.
    """
    if not isinstance(variant, str):
        raise TypeError(f"variant must be a string like 'B/16', got {type(variant).__name__}")
    size, _, patch = variant.partition("/")
    if size not in SIZES:
        raise ValueError(
            f"unknown ViT variant {variant!r}: choose a size from {list(SIZES)}, optionally '/patch' (e.g. 'B/16')"
        )
    if patch and (not patch.isdigit() or int(patch) < 1):
        raise ValueError(f"variant {variant!r} has an invalid patch size {patch!r}: use e.g. '{size}/16'")
    width, depth, mlp, heads = SIZES[size]
    fixed = {"hidden_size": width, "num_hidden_layers": depth, "intermediate_size": mlp, "num_attention_heads": heads}
    clash = sorted(set(fixed) & set(overrides))
    if clash:
        raise ValueError(f"variant {variant!r} fixes {clash}; build a ViTConfig directly to change them")
    return ViTConfig(**fixed, patch_size=int(patch) if patch else 16, **overrides)


__all__ = ["HEADS_BY_WIDTH", "SIZES", "config_for"]
