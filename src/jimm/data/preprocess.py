"""Image preprocessing equal to transformers' image processors (ViT, DeiT, BiT/DINOv2, CLIP, SigLIP, DINOv3).

Numpy and Pillow only (no torch). The processor is the one a checkpoint's `preprocessor_config.json` names
(`image_processor_type`); each type is transformers' class defaults plus the file's fields. transformers 5
runs two different pipelines for them, and each is reproduced step for step, in its order and dtypes:

- Pillow (`ViTImageProcessor`, `DeiTImageProcessor`, `BitImageProcessor`, `CLIPImageProcessor`,
  `SiglipImageProcessor`; what transformers runs without torchvision): resize the uint8 image with
  Pillow's filter, centre-crop (zero padding split with the larger half first), `x * rescale_factor` in
  float64 cast to float32, then `(x - mean) / std` in float32.
- torch (`DINOv3ViTImageProcessor[Fast]`, which transformers only has as a torchvision processor):
  `x * rescale_factor` in float32 first, then torch's antialiased resize in float32 (bilinear or bicubic
  with PIL's a = -0.5 filter, widened by the scale when downsampling; nearest-exact for resample 0), a
  centre crop that pads the smaller half first, and the float32 normalisation.

A shortest-edge resize keeps the aspect ratio with the long side truncated (`int(n * long / short)`), as
transformers computes it. Output is HWC (NHWC for batches), the layout jimm models take.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float, UInt8
from PIL import Image, ImageOps

from ..common.resample import torch_resize_taps

# PIL resample code -> torch's resize filter
TORCH_FILTERS = {0: "nearest-exact", 2: "bilinear", 3: "bicubic"}

IMAGENET_STANDARD_MEAN = IMAGENET_STANDARD_STD = (0.5, 0.5, 0.5)
IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

ImageLike = np.ndarray | Image.Image | str | os.PathLike


@dataclasses.dataclass(frozen=True)
class _Kind:
    """What one transformers processor class does beyond the shared fields."""

    torch: bool  # the torchvision pipeline (rescale before an antialiased float resize)
    crops: bool  # has do_center_crop / crop_size
    shortest_edge: bool  # accepts size {"shortest_edge": n}
    int_size_is_square: bool  # its `default_to_square`: a bare int size means (n, n), else a shortest edge
    defaults: Mapping[str, Any]  # class defaults that differ from ImageProcessorConfig's (ViT's)


_CLIP_LIKE = {
    "size": 224,
    "resample": 3,
    "do_center_crop": True,
    "crop_size": (224, 224),
    "image_mean": OPENAI_CLIP_MEAN,
    "image_std": OPENAI_CLIP_STD,
    "do_convert_rgb": True,
}
KINDS: dict[str, _Kind] = {
    "ViTImageProcessor": _Kind(torch=False, crops=False, shortest_edge=False, int_size_is_square=True, defaults={}),
    "DeiTImageProcessor": _Kind(
        False, True, False, True, {"size": (256, 256), "resample": 3, "do_center_crop": True, "crop_size": (224, 224)}
    ),
    "BitImageProcessor": _Kind(False, True, True, False, _CLIP_LIKE),  # DINOv2's
    "CLIPImageProcessor": _Kind(False, True, True, False, _CLIP_LIKE),
    "SiglipImageProcessor": _Kind(False, False, False, False, {"resample": 3, "do_convert_rgb": True}),
    "DINOv3ViTImageProcessor": _Kind(
        True, True, True, True, {"image_mean": IMAGENET_DEFAULT_MEAN, "image_std": IMAGENET_DEFAULT_STD}
    ),
}
# Checkpoint model_type -> processor, as transformers' AutoImageProcessor maps them (for models without a file).
MODEL_TYPE_PROCESSORS = {
    "vit": "ViTImageProcessor",
    "deit": "DeiTImageProcessor",
    "dinov2": "BitImageProcessor",
    "dinov2_with_registers": "BitImageProcessor",
    "dinov3_vit": "DINOv3ViTImageProcessor",
    "clip": "CLIPImageProcessor",
    "clip_vision_model": "CLIPImageProcessor",
    "siglip": "SiglipImageProcessor",
    "siglip_vision_model": "SiglipImageProcessor",
    "aimv2": "CLIPImageProcessor",
    "aimv2_vision_model": "CLIPImageProcessor",
}

# What a family's checkpoints all write over their processor class's defaults (for models without a file, e.g.
# torch-hub DINOv2 weights): DINOv2 was trained with ImageNet statistics, BitImageProcessor defaults to CLIP's.
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "dinov2": {"image_mean": IMAGENET_DEFAULT_MEAN, "image_std": IMAGENET_DEFAULT_STD},
    "dinov2_with_registers": {"image_mean": IMAGENET_DEFAULT_MEAN, "image_std": IMAGENET_DEFAULT_STD},
}

# preprocessor_config.json keys that name the file's classes: read for dispatch, otherwise not used.
_BOOKKEEPING = frozenset({"image_processor_type", "processor_class", "feature_extractor_type", "_processor_class"})
# Keys transformers writes that cannot change the pixel values jimm returns (layout, device, tensor type) or
# that are harmless at the value given here; anything else is an error naming the key.
_NO_OP: dict[str, Callable[[Any], bool]] = {
    "data_format": lambda v: v in (None, "channels_first", "channels_last"),  # jimm always returns HWC
    "input_data_format": lambda v: v in (None, "channels_last"),  # jimm arrays are HWC
    "device": lambda v: True,
    "return_tensors": lambda v: True,
    "disable_grouping": lambda v: True,
    "image_seq_length": lambda v: True,
    "do_pad": lambda v: not v,
    "pad_size": lambda v: v is None,
    "use_square_size": lambda v: not v,  # CLIPImageProcessor's Kosmos-2 switch
    "default_to_square": lambda v: v is None or isinstance(v, bool),  # read when parsing a bare int size
}
_BOOL_FIELDS = ("do_resize", "do_center_crop", "do_rescale", "do_normalize", "do_convert_rgb")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageProcessorConfig:
    """One transformers image processor: its type and the fields of `preprocessor_config.json` it uses.

    The defaults are `ViTImageProcessor`'s; `ImageProcessorConfig.defaults(type)` gives another type's class
    defaults, `from_dict`/`from_json` a checkpoint's file. `size` is `(height, width)` to resize to exactly,
    or an int to resize the shorter edge to (transformers' `{"shortest_edge": n}`). `image_processor_type`
    is kept as written (e.g. `DINOv3ViTImageProcessorFast`) so `to_dict()` writes it back.
    """

    image_processor_type: str = "ViTImageProcessor"
    do_resize: bool = True
    size: tuple[int, int] | int = (224, 224)
    resample: int = 2  # PIL.Image.Resampling.BILINEAR
    do_center_crop: bool = False
    crop_size: tuple[int, int] | None = None  # (height, width)
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, ...] = IMAGENET_STANDARD_MEAN
    image_std: tuple[float, ...] = IMAGENET_STANDARD_STD
    do_convert_rgb: bool = False  # composite alpha on white, expand grayscale (files and PIL RGB are unchanged)

    def __post_init__(self) -> None:
        kind, name = self.kind, self.image_processor_type
        set_ = object.__setattr__  # normalise lists to tuples so equal configs compare equal
        set_(self, "size", self.size if isinstance(self.size, int) else _hw(self.size, "size"))
        set_(self, "crop_size", None if self.crop_size is None else _hw(self.crop_size, "crop_size"))
        set_(self, "image_mean", tuple(float(v) for v in self.image_mean))
        set_(self, "image_std", tuple(float(v) for v in self.image_std))
        if isinstance(self.size, bool) or (isinstance(self.size, int) and self.size < 1):
            raise ValueError(f"size must be a positive shortest edge or (height, width), got {self.size!r}")
        if isinstance(self.size, int) and not kind.shortest_edge:
            raise ValueError(
                f"{name} resizes to {{'height': H, 'width': W}}, not to a shortest_edge ({self.size}); "
                "a shortest-edge resize is CLIPImageProcessor's, BitImageProcessor's or DINOv3's"
            )
        if not kind.crops and (self.do_center_crop or self.crop_size is not None):
            raise ValueError(f"{name} does not centre-crop: remove do_center_crop and crop_size")
        if self.do_center_crop and self.crop_size is None:
            raise ValueError("do_center_crop=True needs crop_size (height, width)")
        if not isinstance(self.resample, int) or self.resample not in {int(r) for r in Image.Resampling}:
            raise ValueError(f"resample={self.resample!r} is not a Pillow resampling filter (0-5)")
        if kind.torch and self.resample not in TORCH_FILTERS:
            raise ValueError(f"{name} resample={self.resample} is not supported; use 0, 2 (bilinear) or 3 (bicubic)")
        if kind.torch and not self.do_rescale:
            raise ValueError(
                f"{name} with do_rescale=False resizes uint8 with torch's fixed-point kernel (and cannot "
                "normalise uint8); jimm reproduces only its float path: set do_rescale=True"
            )
        if len(self.image_mean) != len(self.image_std):
            raise ValueError(f"image_mean has {len(self.image_mean)} values but image_std has {len(self.image_std)}")
        if any(s == 0 for s in self.image_std):
            raise ValueError("image_std must not contain zeros")

    @property
    def kind(self) -> _Kind:
        return _kind(self.image_processor_type)

    @property
    def output_hw(self) -> tuple[int, int] | None:
        """The (height, width) every image comes out at, or None when it depends on the image."""
        if self.do_center_crop:
            return self.crop_size
        return self.size if self.do_resize and isinstance(self.size, tuple) else None

    @classmethod
    def defaults(cls, image_processor_type: str = "ViTImageProcessor", **changes: Any) -> ImageProcessorConfig:
        """transformers' class defaults for `image_processor_type` (a minimal hub file), with `changes` applied."""
        return cls(image_processor_type=image_processor_type, **{**_kind(image_processor_type).defaults, **changes})

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ImageProcessorConfig:
        """Parse a `preprocessor_config.json` dict, strictly: unknown or non-default unsupported fields raise."""
        if not isinstance(raw, Mapping):
            raise ValueError(f"expected a JSON object of preprocessing settings, got a {type(raw).__name__}")
        name = raw.get("image_processor_type") or (raw.get("feature_extractor_type") or "").replace(
            "FeatureExtractor", "ImageProcessor"
        )
        name = name or "ViTImageProcessor"  # transformers falls back to config.json; jimm's ViT default
        kind = _kind(name)
        handled = {f.name for f in dataclasses.fields(cls)} - {"image_processor_type"}
        unknown = sorted(k for k in raw if k not in handled and k not in _BOOKKEEPING and k not in _NO_OP)
        if unknown:
            raise ValueError(f"preprocessor config has fields jimm does not implement: {unknown}")
        bad = sorted(f"{k}={raw[k]!r}" for k, harmless in _NO_OP.items() if k in raw and not harmless(raw[k]))
        if bad:
            raise ValueError(f"preprocessor config sets fields jimm does not implement: {bad}")
        # transformers treats null as "the class default"
        values = {k: v for k, v in raw.items() if k in handled and v is not None}
        for key in _BOOL_FIELDS:
            if key in values and not isinstance(values[key], bool):
                raise ValueError(f"{key} must be true or false, got {values[key]!r}")
        square = raw.get("default_to_square")
        if "size" in values:
            values["size"] = _parse_size(values["size"], kind.int_size_is_square if square is None else square)
        if "crop_size" in values:
            values["crop_size"] = _parse_size(values["crop_size"], True, "crop_size")
        for key in ("image_mean", "image_std"):
            if key in values and not isinstance(values[key], list | tuple):
                values[key] = (float(values[key]),) * 3
        return cls(image_processor_type=name, **{**kind.defaults, **values})

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
        """The model's own preprocessor config (kept from its checkpoint), else its family's class defaults
        at its image size (a cropping family resizes to cover `image_hw`, then crops to it)."""
        text = getattr(model, "preprocessor_json", None)
        if text:
            return cls.from_json(text)
        model_type = getattr(model.config, "model_type", "vit")
        if model_type not in MODEL_TYPE_PROCESSORS:
            raise ValueError(
                f"no default image processor for model_type {model_type!r}; "
                "give the model a preprocessor_config.json (model.preprocessor_json)"
            )
        name = MODEL_TYPE_PROCESSORS[model_type]
        kind, (h, w) = KINDS[name], model.config.image_hw
        family = FAMILY_DEFAULTS.get(model_type, {})
        if not kind.defaults.get("do_center_crop"):
            return cls.defaults(name, size=(h, w), **family)
        return cls.defaults(name, size=max(h, w) if kind.shortest_edge else (h, w), crop_size=(h, w), **family)

    def decode(self, image: ImageLike) -> Float[np.ndarray, "h w C"]:
        """One image -> its model input row: what `jimm.data.stream.ImageStream` runs per file."""
        return preprocess(image, self)

    def collate(self, rows: Sequence[np.ndarray]) -> Float[np.ndarray, "B h w C"]:
        """`decode`'s rows -> one NHWC batch; a clear error when the processor keeps aspect ratios apart."""
        shapes = sorted({r.shape for r in rows})
        if len(shapes) > 1:
            raise ValueError(
                f"images came out at different sizes {shapes}: the model's processor keeps each aspect ratio; "
                "give it a center crop (crop_size) or a (height, width) size to batch them"
            )
        return np.stack(rows)

    def to_dict(self) -> dict[str, Any]:
        """A `preprocessor_config.json` that transformers loads into the same class and settings."""
        size = (
            {"shortest_edge": self.size}
            if isinstance(self.size, int)
            else dict(zip(("height", "width"), self.size, strict=True))
        )
        out: dict[str, Any] = {
            "do_convert_rgb": self.do_convert_rgb,
            "do_normalize": self.do_normalize,
            "do_rescale": self.do_rescale,
            "do_resize": self.do_resize,
            "image_mean": list(self.image_mean),
            "image_processor_type": self.image_processor_type,
            "image_std": list(self.image_std),
            "resample": self.resample,
            "rescale_factor": self.rescale_factor,
            "size": size,
        }
        if self.kind.crops:
            out["do_center_crop"] = self.do_center_crop
            if self.crop_size is not None:
                out["crop_size"] = dict(zip(("height", "width"), self.crop_size, strict=True))
        return dict(sorted(out.items()))


def _kind(image_processor_type: str) -> _Kind:
    """The processor class; transformers' legacy `...Fast` names are the same class."""
    kind = KINDS.get(image_processor_type.removesuffix("Fast"))
    if kind is None:
        raise ValueError(
            f"image_processor_type {image_processor_type!r} is not implemented; jimm reproduces {sorted(KINDS)}"
        )
    return kind


def _hw(value: Any, field: str) -> tuple[int, int]:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ValueError(f"{field} must be (height, width) positive ints, got {value!r}")
    return (int(value[0]), int(value[1]))


def _parse_size(size: Any, int_is_square: bool, field: str = "size") -> tuple[int, int] | int:
    """transformers' `get_size_dict` for the forms jimm implements: int, [h, w], {height, width}, {shortest_edge}."""
    if isinstance(size, int) and not isinstance(size, bool):
        return (size, size) if int_is_square else size
    if isinstance(size, list | tuple):
        return _hw(size, field)
    if isinstance(size, dict) and set(size) == {"height", "width"}:
        return _hw((size["height"], size["width"]), field)
    if isinstance(size, dict) and set(size) == {"shortest_edge"} and field == "size":
        return _parse_size(size["shortest_edge"], False)
    raise ValueError(
        f"preprocessor {field} {size!r} is not supported; use {{'height': H, 'width': W}}"
        + (" or {'shortest_edge': N}" if field == "size" else "")
    )


class ImageReadError(ValueError):
    """An image file could not be opened or decoded."""


def load_image(path: str | os.PathLike) -> UInt8[np.ndarray, "height width 3"]:
    """Decode a JPEG/PNG/... file to uint8 RGB as transformers' `load_image` does: EXIF rotation applied,
    then Pillow's RGB conversion (grayscale and palette expanded, alpha dropped)."""
    try:
        with Image.open(path) as image:
            return to_rgb(ImageOps.exif_transpose(image))
    except (OSError, Image.DecompressionBombError, ValueError) as err:
        raise ImageReadError(f"cannot read image {os.fspath(path)}: {err}") from err


def _check_8bit(image: Image.Image) -> None:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        raise ImageReadError(f"{image.mode} images (16-bit or float) are not supported; save it as 8-bit")


def to_rgb(image: Image.Image) -> UInt8[np.ndarray, "height width 3"]:
    """Pillow's RGB conversion, as transformers' `load_image` (alpha is dropped, not composited)."""
    _check_8bit(image)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _pil_rgb(image: Image.Image) -> UInt8[np.ndarray, "height width 3"]:
    """transformers' `convert_to_rgb` for a PIL image: transparency is composited onto white."""
    _check_8bit(image)
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image.convert("RGBA"))
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _array_rgb(image: UInt8[np.ndarray, "h w C"], torch: bool) -> UInt8[np.ndarray, "h w 3"]:
    """transformers' RGB conversion of an array: grayscale repeated, RGBA composited onto white (rounded in
    float64 by the Pillow backend, truncated from float32 by torchvision's `to_dtype`)."""
    channels = image.shape[-1]
    if channels == 1:
        return np.repeat(image, 3, axis=-1)
    if channels == 3:
        return image
    if channels != 4:
        raise ValueError(f"cannot convert a {channels}-channel image to RGB (expected 1, 3 or 4 channels)")
    if torch:
        x = image.astype(np.float32) * np.float32(1 / 255)
        alpha = x[..., 3:]
        return ((x[..., :3] * alpha + (1 - alpha)) * np.float32(255.999)).astype(np.uint8)
    alpha = image[..., 3:] / 255
    return np.round(alpha * image[..., :3] + (1 - alpha) * 255).astype(np.uint8)


def _pixels(image: ImageLike, config: ImageProcessorConfig) -> UInt8[np.ndarray, "h w C"]:
    """Any accepted input as a uint8 HWC array, converted to RGB when the config says so."""
    if isinstance(image, str | os.PathLike):
        return load_image(image)
    if isinstance(image, Image.Image):
        if config.do_convert_rgb:
            return _pil_rgb(image)
        if image.mode == "P":
            raise ValueError("a palette (mode P) image needs do_convert_rgb=True or image.convert('RGB')")
        _check_8bit(image)
        image = np.asarray(image)
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected a uint8 HWC array, a PIL image or a file path, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 [height, width, channels] image, got {image.dtype} {image.shape}")
    if image.ndim == 2:
        image = image[..., None]
    return _array_rgb(image, config.kind.torch) if config.do_convert_rgb else image


def _resized_hw(hw: tuple[int, int], size: tuple[int, int] | int) -> tuple[int, int]:
    """transformers' `get_resize_output_image_size`: the long side of a shortest-edge resize is truncated."""
    if isinstance(size, tuple):
        return size
    height, width = hw
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    return (new_long, size) if width <= height else (size, new_long)


def _center_crop(image: np.ndarray, crop_hw: tuple[int, int], *, larger_pad_first: bool) -> np.ndarray:
    """Centre crop with zero padding where the image is smaller; transformers' numpy crop puts the larger
    half of an odd padding first, its torchvision crop the smaller half."""
    pads, starts = [], []
    for n, c in zip(image.shape[:2], crop_hw, strict=True):
        extra = max(c - n, 0)
        pads.append(((extra + 1) // 2, extra // 2) if larger_pad_first else (extra // 2, (extra + 1) // 2))
        starts.append((n + extra - c) // 2)
    if any(p != (0, 0) for p in pads):
        image = np.pad(image, (*pads, (0, 0)))
    (top, left), (ch, cw) = starts, crop_hw
    return image[top : top + ch, left : left + cw]


def _normalize(x: np.ndarray, config: ImageProcessorConfig) -> np.ndarray:
    # torch broadcasts a 1-channel image against a 3-value mean (giving 3 channels); numpy's does not
    if len(config.image_mean) != x.shape[-1] and not (config.kind.torch and x.shape[-1] == 1):
        raise ValueError(
            f"image_mean has {len(config.image_mean)} values for a {x.shape[-1]}-channel image; "
            "set do_convert_rgb=True (or pass an RGB image)"
        )
    mean = np.asarray(config.image_mean, dtype=np.float32)
    return (x - mean) / np.asarray(config.image_std, dtype=np.float32)


def _pillow_pipeline(pixels: np.ndarray, config: ImageProcessorConfig) -> np.ndarray:
    """transformers' PilBackend: resize (Pillow, uint8), crop, rescale (float64 -> float32), normalise."""
    out = pixels
    if config.do_resize:
        h, w = _resized_hw(out.shape[:2], config.size)
        image = Image.fromarray(out[..., 0] if out.shape[-1] == 1 else out)
        out = np.asarray(image.resize((w, h), resample=Image.Resampling(config.resample)))
        out = out[..., None] if out.ndim == 2 else out
    if config.do_center_crop:
        out = _center_crop(out, config.crop_size, larger_pad_first=True)
    if config.do_rescale:
        out = (out.astype(np.float64) * config.rescale_factor).astype(np.float32)
    out = out.astype(np.float32, copy=False)
    return _normalize(out, config) if config.do_normalize else out


def _torch_pipeline(pixels: np.ndarray, config: ImageProcessorConfig) -> np.ndarray:
    """transformers' DINOv3 torchvision processor: rescale (float32), antialiased resize, crop, normalise."""
    out = pixels.astype(np.float32) * np.float32(config.rescale_factor)
    if config.do_resize:
        h, w = _resized_hw(out.shape[:2], config.size)
        out = _torch_resize_axis(out, 1, w, config.resample)  # torch resamples the width first
        out = _torch_resize_axis(out, 0, h, config.resample)
    if config.do_center_crop:
        out = _center_crop(out, config.crop_size, larger_pad_first=False)
    return _normalize(out, config) if config.do_normalize else out


def _torch_resize_axis(x: np.ndarray, axis: int, n_out: int, resample: int) -> np.ndarray:
    """One separable pass over `axis`, accumulated tap by tap in float32 as torch does; a no-op at equal size."""
    if x.shape[axis] == n_out:
        return x
    idx, weights = torch_resize_taps(x.shape[axis], n_out, TORCH_FILTERS[resample])
    shape = [1] * x.ndim
    shape[axis] = n_out
    out = np.take(x, idx[:, 0], axis=axis) * weights[:, 0].reshape(shape)
    for t in range(1, idx.shape[1]):
        out += np.take(x, idx[:, t], axis=axis) * weights[:, t].reshape(shape)
    return out


def preprocess(image: ImageLike, config: ImageProcessorConfig) -> Float[np.ndarray, "h w C"]:
    """One image (uint8 HWC array, PIL image or file path) -> the float32 HWC model input, exactly as the
    transformers processor `config.image_processor_type` computes it."""
    pixels = _pixels(image, config)
    out = (_torch_pipeline if config.kind.torch else _pillow_pipeline)(pixels, config)
    return out.astype(np.float32, copy=False)


def preprocess_images(images: Sequence[ImageLike], config: ImageProcessorConfig) -> Float[np.ndarray, "B h w C"]:
    """A list of images (arrays, PIL images or paths, mixed) -> one NHWC float32 batch."""
    if isinstance(images, np.ndarray | Image.Image | str | os.PathLike):
        raise ValueError("preprocess_images takes a list of images; use preprocess for one")
    if not images:
        raise ValueError("preprocess_images got no images")
    outs = [preprocess(image, config) for image in images]
    shapes = sorted({o.shape for o in outs})
    if len(shapes) > 1:
        raise ValueError(
            f"images came out at different sizes {shapes}: a shortest-edge resize keeps each aspect ratio; "
            "set do_center_crop with crop_size, or a (height, width) size, to batch them"
        )
    return np.stack(outs)


def preprocess_files(paths: Sequence[str | os.PathLike], config: ImageProcessorConfig) -> Float[np.ndarray, "B h w C"]:
    """Load and preprocess image files into one NHWC float32 batch."""
    return preprocess_images(paths, config)


def read_preprocessor(model_dir: str | os.PathLike) -> ImageProcessorConfig | None:
    path = Path(model_dir) / "preprocessor_config.json"
    return (
        ImageProcessorConfig.from_json(path.read_text(encoding="utf-8"), source=str(path)) if path.is_file() else None
    )
