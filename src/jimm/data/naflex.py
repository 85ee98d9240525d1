"""SigLIP 2 NaFlex image processing, equal to transformers' `Siglip2ImageProcessor` (numpy and Pillow only).

Each image keeps its aspect ratio: it is resized to the largest (height, width), both multiples of the patch
size, whose patch grid fits `max_num_patches` (transformers' binary search over the scale, eps 1e-5), then
rescaled and normalised exactly as the fixed-size Pillow processors do (`preprocess.py`), cut into patches
flattened in transformers' (p_h, p_w, C) order, row-major over the grid, and zero-padded to a common length.

transformers without torchvision gives `Siglip2ImageProcessorPil` (Pillow's uint8 bilinear resize) for both
`Siglip2ImageProcessor` and `...Fast` files; this is that processor. The torchvision one resizes with torch's
uint8 antialiased kernel, which rounds about 0.3% of pixels one level away from Pillow's (2/255 after the 0.5
normalisation), so the two transformers processors themselves differ by up to 0.0079.

The batch is `jimm.common.naflex.NaFlexInputs` of numpy arrays: `pixel_values` float32 `[B, M, P]`,
`pixel_attention_mask` int32 `[B, M]` (1 for a real patch), `spatial_shapes` int64 `[B, 2]` (rows, columns).

Dimension letters: B batch, M padded patch slots, P patch values (p * p * C).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from jaxtyping import Float
from PIL import Image

from ..common.naflex import NaFlexInputs
from .preprocess import (
    _BOOKKEEPING,
    _NO_OP,
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    ImageLike,
    ImageProcessorConfig,
    _pillow_pipeline,
    _pixels,
)

PROCESSOR_TYPES = ("Siglip2ImageProcessor", "Siglip2ImageProcessorFast", "Siglip2ImageProcessorPil")
_BOOL_FIELDS = ("do_resize", "do_rescale", "do_normalize", "do_convert_rgb")


def size_for_max_num_patches(
    height: int, width: int, patch_size: int, max_num_patches: int, eps: float = 1e-5
) -> tuple[int, int]:
    """The (height, width) transformers resizes an image to: multiples of `patch_size`, at least one patch each,
    aspect ratio kept, found by bisecting the scale until the grid is the largest that fits `max_num_patches`."""

    def scaled(scale: float, n: int) -> int:
        return max(patch_size, math.ceil(n * scale / patch_size) * patch_size)

    low, high = eps / 10, 100.0
    while high - low >= eps:
        mid = (low + high) / 2
        if (scaled(mid, height) / patch_size) * (scaled(mid, width) / patch_size) <= max_num_patches:
            low = mid
        else:
            high = mid
    return scaled(low, height), scaled(low, width)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NaFlexProcessorConfig:
    """`Siglip2ImageProcessor`'s fields, with its class defaults; `from_dict` reads a `preprocessor_config.json`."""

    image_processor_type: str = "Siglip2ImageProcessor"
    do_resize: bool = True
    resample: int = 2  # PIL.Image.Resampling.BILINEAR
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, ...] = IMAGENET_STANDARD_MEAN
    image_std: tuple[float, ...] = IMAGENET_STANDARD_STD
    do_convert_rgb: bool = False
    patch_size: int = 16
    max_num_patches: int = 256

    def __post_init__(self) -> None:
        if self.image_processor_type not in PROCESSOR_TYPES:
            raise ValueError(f"image_processor_type {self.image_processor_type!r} is not one of {PROCESSOR_TYPES}")
        for key in ("patch_size", "max_num_patches"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be a positive int, got {value!r}")
        # the per-image Pillow pipeline validates resample, mean and std
        self.pipeline((self.patch_size, self.patch_size))

    def pipeline(self, hw: tuple[int, int]) -> ImageProcessorConfig:
        """The fixed-size Pillow pipeline that resizes to `hw`, rescales and normalises as this processor does."""
        return ImageProcessorConfig(
            do_resize=self.do_resize,
            size=hw,
            resample=self.resample,
            do_rescale=self.do_rescale,
            rescale_factor=self.rescale_factor,
            do_normalize=self.do_normalize,
            image_mean=self.image_mean,
            image_std=self.image_std,
            do_convert_rgb=self.do_convert_rgb,
        )

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> NaFlexProcessorConfig:
        """Parse a `preprocessor_config.json` dict strictly: unknown or non-default unsupported fields raise."""
        if not isinstance(raw, Mapping):
            raise ValueError(f"expected a JSON object of preprocessing settings, got a {type(raw).__name__}")
        handled = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in raw if k not in handled and k not in _BOOKKEEPING and k not in _NO_OP)
        if unknown:
            raise ValueError(f"NaFlex preprocessor config has fields jimm does not implement: {unknown}")
        bad = sorted(f"{k}={raw[k]!r}" for k, harmless in _NO_OP.items() if k in raw and not harmless(raw[k]))
        if bad:
            raise ValueError(f"NaFlex preprocessor config sets fields jimm does not implement: {bad}")
        values = {k: v for k, v in raw.items() if k in handled and v is not None}  # null is the class default
        for key in _BOOL_FIELDS:
            if key in values and not isinstance(values[key], bool):
                raise ValueError(f"{key} must be true or false, got {values[key]!r}")
        for key in ("image_mean", "image_std"):
            if key in values:
                v = values[key]
                values[key] = tuple(float(x) for x in v) if isinstance(v, list | tuple) else (float(v),) * 3
        return cls(**values)

    @classmethod
    def for_model(cls, model, *, max_num_patches: int | None = None) -> NaFlexProcessorConfig:
        """The model's own preprocessor config (kept from its checkpoint), else the class defaults at its patch
        size; `max_num_patches` overrides the patch budget (256 by default, the models were trained up to 1024)."""
        text = getattr(model, "preprocessor_json", None)
        config = cls.from_json(text) if text else cls(patch_size=model.config.vision_config.patch_size)
        return config if max_num_patches is None else config.replace(max_num_patches=max_num_patches)

    def replace(self, **changes: Any) -> NaFlexProcessorConfig:
        return dataclasses.replace(self, **changes)

    def decode(self, image: ImageLike) -> tuple[Float[np.ndarray, "T P"], tuple[int, int]]:
        """One image -> its unpadded patches and grid: what `jimm.data.stream.ImageStream` runs per file."""
        return naflex_patches(image, self)

    def collate(self, rows: Sequence[tuple[np.ndarray, tuple[int, int]]], *, pad_to: int | None = None) -> NaFlexInputs:
        """`decode`'s rows -> one `NaFlexInputs` batch padded to `pad_to` slots (default `max_num_patches`, so
        every batch has one shape)."""
        length = self.max_num_patches if pad_to is None else pad_to
        longest = max(len(patches) for patches, _ in rows)
        if length < longest:
            raise ValueError(f"pad_to={length} is shorter than the longest image's {longest} patches")
        values = np.zeros((len(rows), length, rows[0][0].shape[1]), np.float32)
        mask = np.zeros((len(rows), length), np.int32)
        for i, (patches, _) in enumerate(rows):
            values[i, : len(patches)] = patches
            mask[i, : len(patches)] = 1
        return NaFlexInputs(values, mask, np.asarray([grid for _, grid in rows], np.int64))

    @classmethod
    def from_json(cls, text: str, *, source: str = "preprocessor_config.json") -> NaFlexProcessorConfig:
        try:
            return cls.from_dict(json.loads(text))
        except (json.JSONDecodeError, ValueError, TypeError) as err:
            raise ValueError(f"{source}: {err}") from err

    def to_dict(self) -> dict[str, Any]:
        """A `preprocessor_config.json` transformers loads into the same processor and settings."""
        out = dataclasses.asdict(self)
        out["image_mean"], out["image_std"] = list(self.image_mean), list(self.image_std)
        return dict(sorted(out.items()))


def patchify(image: Float[np.ndarray, "h w C"], patch_size: int) -> Float[np.ndarray, "T P"]:
    """HWC image -> patches row-major over the grid, each flattened (p_h, p_w, C) as transformers does."""
    h, w, c = image.shape
    nh, nw = h // patch_size, w // patch_size
    grid = image[: nh * patch_size, : nw * patch_size].reshape(nh, patch_size, nw, patch_size, c)
    return grid.transpose(0, 2, 1, 3, 4).reshape(nh * nw, patch_size * patch_size * c)


def unpatchify(patches: Float[np.ndarray, "T P"], grid: tuple[int, int], patch_size: int) -> np.ndarray:
    """`patchify`'s inverse: an image's `h * w` patches (padding slots dropped first) -> `[h * p, w * p, C]`."""
    (h, w), p = grid, patch_size
    blocks = patches[: h * w].reshape(h, w, p, p, -1)
    return blocks.transpose(0, 2, 1, 3, 4).reshape(h * p, w * p, -1)


def naflex_patches(image: ImageLike, config: NaFlexProcessorConfig) -> tuple[Float[np.ndarray, "T P"], tuple[int, int]]:
    """One image -> its unpadded patches and patch grid (rows, columns)."""
    pixels = _pixels(image, config.pipeline((1, 1)))
    p = config.patch_size
    if config.do_resize:
        hw = size_for_max_num_patches(*pixels.shape[:2], p, config.max_num_patches)
    else:
        hw = pixels.shape[:2]
        if hw[0] % p or hw[1] % p or (hw[0] // p) * (hw[1] // p) > config.max_num_patches:
            raise ValueError(
                f"with do_resize=False the image ({hw[0]}x{hw[1]}) must be a multiple of patch_size {p} with at "
                f"most max_num_patches={config.max_num_patches} patches; resize it or set do_resize=True"
            )
    out = _pillow_pipeline(pixels, config.pipeline(hw)).astype(np.float32, copy=False)
    return patchify(out, p), (hw[0] // p, hw[1] // p)


def preprocess_naflex(
    images: Sequence[ImageLike], config: NaFlexProcessorConfig, *, pad_to: int | None = None
) -> NaFlexInputs:
    """Images of any sizes (arrays, PIL images or paths) -> one padded NaFlex batch.

    Each image gets at most `config.max_num_patches` patches; the batch is padded to `pad_to` patch slots
    (default `max_num_patches`, as transformers; a shorter bucket saves compute and needs `pad_to` at least the
    largest image's patch count).
    """
    if isinstance(images, np.ndarray | Image.Image | str):
        raise ValueError("preprocess_naflex takes a list of images")
    if not images:
        raise ValueError("preprocess_naflex got no images")
    return config.collate([config.decode(image) for image in images], pad_to=pad_to)


__all__ = [
    "NaFlexInputs",
    "NaFlexProcessorConfig",
    "naflex_patches",
    "patchify",
    "preprocess_naflex",
    "size_for_max_num_patches",
    "unpatchify",
]
