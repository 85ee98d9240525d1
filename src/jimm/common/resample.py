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

NaFlex resizes per image to sizes that are data (`spatial_shapes`), so `naflex_pos_embed` builds the same
triangle weights in jnp from traced sizes: one compiled program serves every mix of aspect ratios.

Dimension letters: T tokens, D width, B batch, M padded patch slots, G the square table's side; the grid is
`h x w` patches.
"""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

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
    # torch computes in float32: the scale as in/out when a size is given (float32(1/scale_factor) when a factor
    # is), the source index, its fraction and the weights; it does not clamp the cubic source index at 0.
    f32 = np.float32
    scale = f32(size_in) / f32(size_out) if offset == 0 else f32(1.0 / ((size_out + offset) / size_in))
    src = (np.arange(size_out, dtype=f32) + f32(0.5)) * scale - f32(0.5)
    base = np.floor(src)
    weights = _cubic_weights(src - base, f32(a)).astype(np.float64)
    matrix = np.zeros((size_out, size_in), np.float64)
    for tap in range(4):
        idx = np.clip(base.astype(np.int64) - 1 + tap, 0, size_in - 1)  # border replicate, as torch does
        np.add.at(matrix, (np.arange(size_out), idx), weights[:, tap])
    return matrix


def _linear(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1, 1 - x, 0).astype(np.float32)


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution with PIL's a = -0.5, which torch's antialiased bicubic uses (not its -0.75)."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0)).astype(np.float32)


_AA_FILTERS = {"bilinear": (_linear, 2), "bicubic": (_cubic, 4)}  # filter and taps at scale 1


def torch_resize_taps(n_in: int, n_out: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights `[n_out, K]` of torch's antialiased CPU resize (`kind` "bilinear" or "bicubic",
    with `antialias=True`) or of "nearest-exact", in torch's float32 arithmetic (`UpSampleKernel.cpp`:
    `_compute_indices_min_size_weights_aa`, `nearest_neighbor_exact_compute_source_index`)."""
    f32 = np.float32
    scale = f32(n_in) / f32(n_out)
    i = np.arange(n_out, dtype=np.float64)
    if kind == "nearest-exact":  # floor((i + 0.5) * scale), no antialiasing
        idx = np.minimum(np.floor(((i + 0.5) * float(scale)).astype(f32)).astype(np.int64), n_in - 1)
        return idx[:, None], np.ones((n_out, 1), f32)
    filt, interp = _AA_FILTERS[kind]
    support = f32(interp * 0.5 * float(scale)) if scale >= 1 else f32(interp * 0.5)
    invscale = float(f32(1 / float(scale))) if scale >= 1 else 1.0
    k = math.ceil(support) * 2 + 1
    center = (float(scale) * (i + 0.5)).astype(f32)
    xmin = np.maximum(((center - support).astype(np.float64) + 0.5).astype(np.int64), 0)
    xmax = np.minimum(((center + support).astype(np.float64) + 0.5).astype(np.int64), n_in)
    xsize = np.clip(xmax - xmin, 0, k)
    j = np.arange(k)
    offset = ((j + xmin[:, None]).astype(f32) - center[:, None]).astype(np.float64) + 0.5
    weights = np.where(j < xsize[:, None], filt((offset * invscale).astype(f32)), f32(0))
    total = weights[:, 0].copy()
    for t in range(1, k):  # torch sums the taps in order
        total += weights[:, t]
    weights = (weights / np.where(total == 0, f32(1), total)[:, None]).astype(f32)
    return np.minimum(j + xmin[:, None], n_in - 1), weights


def _matrix_from_taps(size_in: int, size_out: int, kind: str) -> np.ndarray:
    if size_in < 1 or size_out < 1:
        raise ValueError(f"grid sizes must be positive, got {size_in} -> {size_out}")
    idx, weights = torch_resize_taps(size_in, size_out, kind)
    matrix = np.zeros((size_out, size_in), np.float64)
    np.add.at(matrix, (np.arange(size_out)[:, None], idx), weights.astype(np.float64))
    return matrix


@functools.lru_cache(maxsize=64)
def antialiased_bicubic_matrix(size_in: int, size_out: int) -> np.ndarray:
    """`[size_out, size_in]` matrix of torch's `F.interpolate(mode="bicubic", antialias=True)` (PIL's filter)."""
    return _matrix_from_taps(size_in, size_out, "bicubic")


@functools.lru_cache(maxsize=64)
def antialiased_bilinear_matrix(size_in: int, size_out: int) -> np.ndarray:
    """`[size_out, size_in]` matrix of torch's `F.interpolate(mode="bilinear", antialias=True)` (triangle filter)."""
    return _matrix_from_taps(size_in, size_out, "bilinear")


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
    mode: str = "bicubic",
    offset: float = 0.0,
) -> Float[Array, "h2 w2 D"]:
    """Resize a `[h, w, D]` grid to `new_hw` with torch's semantics; identity when the size is unchanged.

    `mode` is one of `RESAMPLE_MODES` ("bicubic_antialias" is timm's kernel).
    The resize is computed in fp32 (as HF's DINOv2 does) and cast back.
    """
    h, w = grid.shape[0], grid.shape[1]
    new_h, new_w = new_hw
    if (h, w) == (new_h, new_w):
        return grid
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
    mode: str = "bicubic",
    offset: float = 0.0,
) -> Float[Array, "1 T2 D"]:
    """Resample `[1, prefix + h*w, D]` position embeddings from grid `old_hw` to `new_hw`.

    The first `num_prefix_tokens` rows (class, distillation, register tokens) are kept as they are; only the
    patch rows are resized. Pass `num_prefix_tokens=0` for embeddings that exclude the prefix tokens.
    `mode="bicubic"` equals HF's `interpolate_pos_encoding`, "bicubic_antialias" timm's `resample_abs_pos_embed`;
    `mode` and `offset` select any kernel of `resample_grid`.
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
    grid = resample_grid(patches.reshape(old_hw[0], old_hw[1], d), new_hw, mode=mode, offset=offset)
    return jnp.concatenate([prefix, grid.reshape(1, new_hw[0] * new_hw[1], d)], axis=1)


def naflex_pos_embed(
    table: Float[Array, "G G D"], spatial_shapes: Int[Array, "B 2"], length: int
) -> Float[Array, "B M D"]:
    """SigLIP 2 NaFlex positions: the `[G, G, D]` table resized to each image's `(h, w)` patch grid with bilinear
    antialiased weights (torch's `F.interpolate(mode="bilinear", align_corners=False, antialias=True)`), written
    row-major into the first `h * w` of `length` slots; padding slots get the resized grid's first row.

    Equal to transformers' `Siglip2VisionEmbeddings.resize_positional_embeddings`, in its float32 arithmetic:
    the weights of output row `i` are `max(0, 1 - |s - ((i + 0.5) * G / h - 0.5)| / max(G / h, 1))` over the
    table rows `s`, normalised to sum 1 (columns alike), and the resized grid is one `[M, G*G] @ [G*G, D]` matmul.
    `spatial_shapes` may be traced; `length` is static.
    """
    g, d = table.shape[0], table.shape[-1]
    f32 = jnp.float32
    sizes = jnp.asarray(spatial_shapes).astype(f32)[:, None]  # [B, 1, 2]
    slots = jnp.arange(length, dtype=f32)[None, :, None]  # [1, M, 1]
    rows = jnp.floor(slots / sizes[..., 1:])
    index = jnp.concatenate([rows, slots - rows * sizes[..., 1:]], axis=-1)  # [B, M, 2] (row, column)
    index = index * (slots < sizes.prod(-1, keepdims=True))  # padding slots take position (0, 0)
    scale = f32(g) / sizes
    support = jnp.maximum(scale, 1.0)
    center = (index + 0.5) * scale - 0.5
    source = jnp.arange(g, dtype=f32)
    weights = jnp.maximum(1 - jnp.abs(source - center[..., None]) / support[..., None], 0)  # [B, M, 2, G]
    weights = weights / weights.sum(-1, keepdims=True)
    weights = (weights[..., 0, :, None] * weights[..., 1, None, :]).reshape(*weights.shape[:2], g * g)
    out = jnp.einsum("BMS,SD->BMD", weights, table.reshape(g * g, d).astype(f32), precision="highest")
    return out.astype(table.dtype)


__all__ = [
    "RESAMPLE_MODES",
    "TORCH_CUBIC_A",
    "antialiased_bicubic_matrix",
    "antialiased_bilinear_matrix",
    "bicubic_matrix",
    "naflex_pos_embed",
    "resample_grid",
    "resample_matrix",
    "resample_pos_embed",
    "torch_resize_taps",
]
