"""Image preprocessing equal to transformers' `ViTImageProcessor`: resize (Pillow), rescale, normalise.

Numpy and Pillow only (no torch). The order and dtypes follow transformers exactly, so outputs agree to
float32 rounding: resize the uint8 RGB image with Pillow's resample filter from the config, multiply by
`rescale_factor` in float64 and cast to float32, then `(x - mean) / std` in float32. Output is HWC
(NHWC for batches), the layout jimm models take.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float, UInt8
from PIL import Image

# Keys of preprocessor_config.json that ViTImageProcessor reads but that do not change its output here.
_BOOKKEEPING = frozenset({"image_processor_type", "processor_class", "feature_extractor_type", "_processor_class"})
_HANDLED = frozenset(
    {
        "do_resize",
        "size",
        "resample",
        "do_rescale",
        "rescale_factor",
        "do_normalize",
        "image_mean",
        "image_std",
        "do_convert_rgb",
    }
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageProcessorConfig:
    """The fields of `preprocessor_config.json` that ViTImageProcessor uses (its defaults are HF's)."""

    do_resize: bool = True
    size: tuple[int, int] = (224, 224)  # (height, width)
    resample: int = 2  # PIL.Image.Resampling.BILINEAR
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    image_std: tuple[float, ...] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        if self.resample not in {int(r) for r in Image.Resampling}:
            raise ValueError(f"resample={self.resample!r} is not a Pillow resampling filter (0-5)")
        if len(self.image_mean) != len(self.image_std):
            raise ValueError(f"image_mean has {len(self.image_mean)} values but image_std has {len(self.image_std)}")
        if any(s == 0 for s in self.image_std):
            raise ValueError("image_std must not contain zeros")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ImageProcessorConfig:
        if not isinstance(raw, dict):
            raise ValueError(f"expected a JSON object of preprocessing settings, got a {type(raw).__name__}")
        unknown = sorted(k for k in raw if k not in _HANDLED and k not in _BOOKKEEPING)
        kwargs: dict[str, Any] = {k: raw[k] for k in _HANDLED - {"size", "do_convert_rgb"} if k in raw}
        if unknown:
            raise ValueError(f"preprocessor config has fields jimm does not implement: {unknown}")
        if "size" in raw:
            size = raw["size"]
            if isinstance(size, int):
                kwargs["size"] = (size, size)
            elif isinstance(size, dict) and set(size) == {"height", "width"}:
                kwargs["size"] = (int(size["height"]), int(size["width"]))
            else:
                raise ValueError(
                    f"preprocessor size {size!r} is not supported; ViT processors use {{'height': H, 'width': W}}"
                )
        for key in ("image_mean", "image_std"):
            if key in kwargs:
                value = kwargs[key]
                kwargs[key] = tuple(float(v) for v in (value if isinstance(value, list | tuple) else [value] * 3))
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str, *, source: str = "preprocessor_config.json") -> ImageProcessorConfig:
        try:
            return cls.from_dict(json.loads(text))
        except (json.JSONDecodeError, ValueError, TypeError) as err:
            raise ValueError(f"{source}: {err}") from err
        except RecursionError as err:
            raise ValueError(f"{source}: its JSON is nested too deeply") from err

    @classmethod
    def for_model(cls, model) -> ImageProcessorConfig:
        """The model's own preprocessor config (kept from its checkpoint), else ViT defaults at its image size."""
        text = getattr(model, "preprocessor_json", None)
        if text:
            return cls.from_json(text)
        return cls(size=model.config.image_hw)

    def to_dict(self) -> dict[str, Any]:
        h, w = self.size
        return {
            "do_normalize": self.do_normalize,
            "do_rescale": self.do_rescale,
            "do_resize": self.do_resize,
            "image_mean": list(self.image_mean),
            "image_processor_type": "ViTImageProcessor",
            "image_std": list(self.image_std),
            "resample": self.resample,
            "rescale_factor": self.rescale_factor,
            "size": {"height": h, "width": w},
        }


class ImageReadError(ValueError):
    """An image file could not be opened or decoded."""


def load_image(path: str | os.PathLike) -> UInt8[np.ndarray, "height width 3"]:
    """Decode a JPEG/PNG/... file of any size to uint8 RGB (grayscale, palette and RGBA are converted)."""
    try:
        with Image.open(path) as image:
            return to_rgb(image)
    except (OSError, Image.DecompressionBombError, ValueError) as err:
        raise ImageReadError(f"cannot read image {os.fspath(path)}: {err}") from err


def to_rgb(image: Image.Image) -> UInt8[np.ndarray, "height width 3"]:
    """Pillow's RGB conversion, as transformers' `convert_rgb` (alpha is dropped, not composited)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        raise ImageReadError(f"{image.mode} images (16-bit or float) are not supported; save it as 8-bit")
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def preprocess(image: UInt8[np.ndarray, "height width 3"], config: ImageProcessorConfig) -> Float[np.ndarray, "h w 3"]:
    """One uint8 RGB image -> the float32 HWC model input, exactly as ViTImageProcessor computes it."""
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"expected a uint8 [height, width, channels] image, got {image.dtype} {image.shape}")
    out: np.ndarray = image
    if config.do_resize and tuple(image.shape[:2]) != tuple(config.size):
        h, w = config.size
        out = np.asarray(Image.fromarray(image).resize((w, h), resample=Image.Resampling(config.resample)))
    if config.do_rescale:
        out = (out.astype(np.float64) * config.rescale_factor).astype(np.float32)
    else:
        out = out.astype(np.float32)
    if config.do_normalize:
        if len(config.image_mean) != out.shape[-1]:
            raise ValueError(f"image_mean has {len(config.image_mean)} values for a {out.shape[-1]}-channel image")
        mean = np.asarray(config.image_mean, dtype=np.float32)
        std = np.asarray(config.image_std, dtype=np.float32)
        out = (out - mean) / std
    return out.astype(np.float32, copy=False)


def preprocess_files(paths: Sequence[str | os.PathLike], config: ImageProcessorConfig) -> Float[np.ndarray, "B h w 3"]:
    """Load and preprocess image files into one NHWC float32 batch."""
    return np.stack([preprocess(load_image(p), config) for p in paths])


def read_preprocessor(model_dir: str | os.PathLike) -> ImageProcessorConfig | None:
    path = Path(model_dir) / "preprocessor_config.json"
    return (
        ImageProcessorConfig.from_json(path.read_text(encoding="utf-8"), source=str(path)) if path.is_file() else None
    )
