"""Position-embedding resampling equal to torch's `F.interpolate(..., align_corners=False)`, for every family.

Three torch kernels are in use, and none is `jax.image.resize`'s:
- plain bicubic (HF ViT, CLIP, SigLIP, DINOv2's `interpolate_pos_encoding`): Keys' cubic convolution with
  a = -0.75, source index `(i + 0.5) * in / out - 0.5`, taps clamped to the border, no antialias even when
  downsampling. DINOv2's legacy torch-hub mode passes a scale factor `(out + offset) / in` (offset 0.1)
  instead of the size: same output size, a slightly different sampling grid (`offset=`).
- antialiased bicubic (timm's `resample_abs_pos_embed`, DINOv2 with registers): PIL's filter (a = -0.5,
  widened by the scale when downsampling, taps outside the grid dropped and the rest renormalised).
- antialiased bilinear (SigLIP 2 NaFlex): the triangle filter, widened likewise.
The 2-D resize is separable, so it is two small `[out, in]` weight matrices built in numpy from the static
grid sizes, applied with one einsum: exact, jit-friendly, and differentiable in the embedding.

Dimension letters: T tokens, D width; the grid is `h x w` patches.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

TORCH_CUBIC_A = -0.75  # torch's (and OpenCV's) bicubic coefficient; PIL and jax.image use -0.5


def _cubic_weights(t: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic-convolution weights of the 4 taps at offsets -1, 0, 1, 2 for fractional positions `t`."""

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


@functools.lru_cache(maxsize=64)
def bicubic_matrix(size_in: int, size_out: int, a: float = TORCH_CUBIC_A, offset: float = 0.0) -> np.ndarray:
    """`[size_out, size_in]` matrix M with `M @ v` equal to torch's 1-D bicubic resize of `v` (align_corners=False).

    `offset=0` is torch given the output size; `offset > 0` is torch given `scale_factor=(size_out + offset) /
    size_in` (DINOv2's torch-hub `interpolate_offset`), which samples at `in / (out + offset)` spacing.
    """
    if size_in < 1 or size_out < 1:
        raise ValueError(f"grid sizes must be positive, got {size_in} -> {size_out}")
    # torch computes the scale as in/out when a size is given (1/scale_factor when a factor is) and does not
    # clamp the cubic source index at 0, unlike its linear modes.
    scale = size_in / size_out if offset == 0 else size_in / (size_out + offset)
    src = (np.arange(size_out, dtype=np.float64) + 0.5) * scale - 0.5
    base = np.floor(src)
    weights = _cubic_weights(src - base, a)
    matrix = np.zeros((size_out, size_in), np.float64)
    for tap in range(4):
        idx = np.clip(base.astype(np.int64) - 1 + tap, 0, size_in - 1)  # border replicate, as torch does
        np.add.at(matrix, (np.arange(size_out), idx), weights[:, tap])
    return matrix


@functools.lru_cache(maxsize=64)
def antialiased_bicubic_matrix(size_in: int, size_out: int) -> np.ndarray:
    """`[size_out, size_in]` matrix of torch's `F.interpolate(mode="bicubic", antialias=True)` (PIL's filter)."""
    if size_in < 1 or size_out < 1:
        raise ValueError(f"grid sizes must be positive, got {size_in} -> {size_out}")
    a = -0.5
    scale = size_in / size_out
    stretch = max(scale, 1.0)  # downsampling widens the filter by the scale: that is the antialiasing
    support = 2.0 * stretch
    matrix = np.zeros((size_out, size_in), np.float64)
    for i in range(size_out):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), size_in)
        x = np.abs((np.arange(lo, hi) - center + 0.5) / stretch)
        w = np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1, np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))
        matrix[i, lo:hi] = w / w.sum() if w.sum() != 0 else w
    return matrix


@functools.lru_cache(maxsize=64)
def antialiased_bilinear_matrix(size_in: int, size_out: int) -> np.ndarray:
    """`[size_out, size_in]` matrix of torch's `F.interpolate(mode="bilinear", antialias=True)` (triangle filter)."""
    if size_in < 1 or size_out < 1:
        raise ValueError(f"grid sizes must be positive, got {size_in} -> {size_out}")
    scale = size_in / size_out
    stretch = max(scale, 1.0)
    support = 1.0 * stretch
    matrix = np.zeros((size_out, size_in), np.float64)
    for i in range(size_out):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), size_in)
        x = np.abs((np.arange(lo, hi) - center + 0.5) / stretch)
        w = np.maximum(0.0, 1.0 - x)
        matrix[i, lo:hi] = w / w.sum() if w.sum() != 0 else w
    return matrix


RESAMPLE_MODES = ("bicubic", "bicubic_antialias", "bilinear_antialias")


def resample_matrix(size_in: int, size_out: int, mode: str = "bicubic", offset: float = 0.0) -> np.ndarray:
    """The 1-D `[size_out, size_in]` matrix of a resampling mode (see the module docstring)."""
    if mode == "bicubic":
        return bicubic_matrix(size_in, size_out, TORCH_CUBIC_A, float(offset))
    if offset:
        raise ValueError(f"interpolate offset {offset} applies to plain bicubic resampling only, not {mode!r}")
    if mode == "bicubic_antialias":
        return antialiased_bicubic_matrix(size_in, size_out)
    if mode == "bilinear_antialias":
        return antialiased_bilinear_matrix(size_in, size_out)
    raise ValueError(f"unknown resampling mode {mode!r}; choose one of {RESAMPLE_MODES}")


def resample_grid(
    grid: Float[Array, "h w D"],
    new_hw: tuple[int, int],
    *,
    antialias: bool = False,
    mode: str | None = None,
    offset: float = 0.0,
) -> Float[Array, "h2 w2 D"]:
    """Resize a `[h, w, D]` grid to `new_hw` with torch's semantics; identity when the size is unchanged.

    `mode` is one of `RESAMPLE_MODES`; the older `antialias=True` means "bicubic_antialias" (timm's kernel).
    The resize is computed in fp32 (as HF's DINOv2 does) and cast back.
    """
    h, w = grid.shape[0], grid.shape[1]
    new_h, new_w = new_hw
    if (h, w) == (new_h, new_w):
        return grid
    mode = mode or ("bicubic_antialias" if antialias else "bicubic")
    mh = jnp.asarray(resample_matrix(h, new_h, mode, offset), jnp.float32)
    mw = jnp.asarray(resample_matrix(w, new_w, mode, offset), jnp.float32)
    out = jnp.einsum("ih,jw,hwD->ijD", mh, mw, grid.astype(jnp.float32), precision="highest")
    return out.astype(grid.dtype)


def resample_pos_embed(
    pos_embed: Float[Array, "1 T D"],
    old_hw: tuple[int, int],
    new_hw: tuple[int, int],
    *,
    num_prefix_tokens: int = 1,
    antialias: bool = False,
    mode: str | None = None,
    offset: float = 0.0,
) -> Float[Array, "1 T2 D"]:
    """Resample `[1, prefix + h*w, D]` position embeddings from grid `old_hw` to `new_hw`.

    The first `num_prefix_tokens` rows (class, distillation, register tokens) are kept as they are; only the
    patch rows are resized. Pass `num_prefix_tokens=0` for embeddings that exclude the prefix tokens.
    `antialias=False` equals HF's `interpolate_pos_encoding`, `True` timm's `resample_abs_pos_embed`; `mode`
    and `offset` select any kernel of `resample_grid`.
    """
    d = pos_embed.shape[-1]
    expected = num_prefix_tokens + old_hw[0] * old_hw[1]
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1 or pos_embed.shape[1] != expected:
        raise ValueError(
            f"position embeddings of shape {tuple(pos_embed.shape)} do not match a {old_hw[0]}x{old_hw[1]} grid "
            f"with {num_prefix_tokens} prefix token(s): expected [1, {expected}, D]"
        )
    if tuple(old_hw) == tuple(new_hw):
        return pos_embed
    prefix, patches = pos_embed[:, :num_prefix_tokens], pos_embed[0, num_prefix_tokens:]
    grid = resample_grid(
        patches.reshape(old_hw[0], old_hw[1], d), new_hw, antialias=antialias, mode=mode, offset=offset
    )
    return jnp.concatenate([prefix, grid.reshape(1, new_hw[0] * new_hw[1], d)], axis=1)


__all__ = [
    "RESAMPLE_MODES",
    "TORCH_CUBIC_A",
    "antialiased_bicubic_matrix",
    "antialiased_bilinear_matrix",
    "bicubic_matrix",
    "resample_grid",
    "resample_matrix",
    "resample_pos_embed",
]
