"""Fixed (not learned) position embeddings computed from the patch grid: 2-D sin-cos.

Dimension letters: P patches (h * w, row-major), D width.
"""

from __future__ import annotations

import numpy as np


def sincos_2d(grid_hw: tuple[int, int], dim: int, temperature: float = 10000.0) -> np.ndarray:
    """AIMv2's 2-D sin-cos position table `[h*w, dim]` (float64) for any `h x w` grid.

    As transformers computes it for `is_native` checkpoints: `dim / 4` frequencies `temperature ** -(i / (dim/4))`,
    angles `row * freq` and `col * freq` for each patch (row-major), laid out `[sin_w, cos_w, sin_h, cos_h]`:
    transformers builds `[sin_h, cos_h, sin_w, cos_w]` and swaps the halves (ViT-MAE's naming convention).
    float64 as transformers does it; callers cast to the activations' dtype.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos positions need a width divisible by 4, got {dim}")
    h, w = grid_hw
    quarter = dim // 4
    omega = 1.0 / temperature ** (np.arange(quarter, dtype=np.float64) / quarter)
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    angle_h, angle_w = np.outer(rows.ravel(), omega), np.outer(cols.ravel(), omega)
    return np.concatenate([np.sin(angle_w), np.cos(angle_w), np.sin(angle_h), np.cos(angle_h)], axis=1)


__all__ = ["sincos_2d"]
