"""Dense features people can look at: per image, the patch features, their PCA picture and the CLS attention.

`jimm features MODEL IMAGE... --out DIR` runs `write_features_stream`: the model comes from `jimm.from_pretrained`
(any family with patch tokens), each image goes through the model's own processor
(`jimm.data.stream.processor_for`), and three files are written per image:
- `NAME_features.npy`: the patch tokens after the final norm, `[h, w, D]` float32 (`forward_features`
  without the class / register tokens, on the patch grid);
- `NAME_pca.png`: the model input next to the first three principal components of the patch tokens shown as
  RGB (each component min-max scaled; nearest upsampling, so each patch stays a square): the DINOv2 picture;
- `NAME_attention.png`: the last block's attention from the class token to each patch, averaged over heads,
  upsampled bilinearly and laid over the image (models without a class token: the attention each patch
  receives, averaged over queries and heads).

SigLIP 2 NaFlex models take each image at its own aspect ratio within `max_num_patches` (`jimm.data.naflex`): the
files are on that image's own grid, the attention map is what each real patch receives from the real patches.

numpy and Pillow only, imported lazily by the CLI. Dimension letters: h, w patch grid; D width; N heads; T tokens;
M padded patch slots.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from PIL import Image

# A perceptually ordered black -> purple -> red -> orange -> yellow ramp (close to matplotlib's "inferno").
_HEAT = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float32) / 255


@dataclasses.dataclass(frozen=True)
class ImageFeatures:
    """One image's model input (`[H, W, 3]` in [0, 1]), patch tokens `[h, w, D]` and attention map `[h, w]`."""

    image: np.ndarray
    patches: np.ndarray
    attention: np.ndarray


def _last_block(encoder):
    """The encoder's last block as a module of its own (sliced out of the stacked parameters when scanned)."""
    if not encoder.scan_layers:
        return encoder.layers[-1]
    graphdef, state = nnx.split(encoder.layers)
    return nnx.merge(graphdef, jax.tree.map(lambda a: a[-1], state))


@nnx.jit
def _patches_and_attention(model, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(final-normed tokens [B, T, D], last block's attention [B, N, T, T])` in one pass."""
    tower = model.vision_tower
    hidden = tower.hidden_states(x)
    block = _last_block(tower.blocks)
    weights = block.attn.weights(block.norm1(hidden[-2]), rope=tower.rope_for(tower.check_images(x)))
    return tower.final_norm(hidden[-1]), weights


@nnx.jit
def _naflex_patches_and_attention(model, inputs) -> tuple[jax.Array, jax.Array]:
    """NaFlex: `(final-normed slots [B, M, D], last block's attention over the real patches [B, N, M, M])`."""
    from ..common.vision import key_mask

    tower = model.vision_tower
    hidden = tower.hidden_states(inputs)
    block = _last_block(tower.blocks)
    weights = block.attn.weights(block.norm1(hidden[-2]), mask=key_mask(tower.token_mask(inputs)))
    return tower.final_norm(hidden[-1]), weights


def attention_map(weights: np.ndarray, num_prefix: int, class_token: bool, grid_hw: tuple[int, int]) -> np.ndarray:
    """`[N, T, T]` attention -> `[h, w]`: the class token's row over the patches, or what each patch receives."""
    mean = weights.mean(axis=0)  # [T, T], heads averaged
    to_patches = mean[0, num_prefix:] if class_token else mean[:, num_prefix:].mean(axis=0)
    return to_patches.reshape(grid_hw)


def pca_rgb(patches: np.ndarray) -> np.ndarray:
    """`[h, w, D]` -> `[h, w, 3]` in [0, 1]: the first three principal components, each min-max scaled.

    Signs are fixed (each component's largest loading positive), so the picture is reproducible.
    """
    h, w, d = patches.shape
    flat = patches.reshape(h * w, d).astype(np.float64)
    flat = flat - flat.mean(axis=0)
    _, _, vt = np.linalg.svd(flat, full_matrices=False)
    vt = vt[:3]
    vt = vt * np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])[:, None]
    comps = flat @ vt.T
    if comps.shape[1] < 3:  # fewer patches or channels than three components
        comps = np.pad(comps, ((0, 0), (0, 3 - comps.shape[1])))
    lo, hi = comps.min(axis=0), comps.max(axis=0)
    comps = (comps - lo) / np.where(hi > lo, hi - lo, 1.0)
    return comps.reshape(h, w, 3).astype(np.float32)


def heat_colors(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] `[...]` -> RGB `[..., 3]` on the `_HEAT` ramp."""
    position = np.clip(values, 0, 1) * (len(_HEAT) - 1)
    low = np.minimum(position.astype(int), len(_HEAT) - 2)
    t = (position - low)[..., None]
    return _HEAT[low] * (1 - t) + _HEAT[low + 1] * t


def _to_pil(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8))


def side_by_side(image: np.ndarray, pca: np.ndarray) -> Image.Image:
    """The image and its PCA map (nearest-upsampled to the image size), left to right."""
    height, width = image.shape[:2]
    pca_big = np.asarray(_to_pil(pca).resize((width, height), Image.Resampling.NEAREST))
    return Image.fromarray(np.concatenate([np.asarray(_to_pil(image)), pca_big], axis=1))


def overlay(image: np.ndarray, attention: np.ndarray, *, alpha: float = 0.6) -> Image.Image:
    """The attention map, min-max scaled, upsampled bilinearly and blended over the image."""
    height, width = image.shape[:2]
    lo, hi = float(attention.min()), float(attention.max())
    scaled = (attention - lo) / (hi - lo) if hi > lo else np.zeros_like(attention)
    big = Image.fromarray(scaled.astype(np.float32)).resize((width, height), Image.Resampling.BILINEAR)
    return _to_pil((1 - alpha) * image + alpha * heat_colors(np.asarray(big)))


def model_view(pixels: np.ndarray, processor) -> np.ndarray:
    """A processor's output `[H, W, C]` -> the picture the model saw, RGB in [0, 1] (normalisation undone)."""
    x = pixels.astype(np.float32)
    if processor.do_normalize:
        x = x * np.asarray(processor.image_std, np.float32) + np.asarray(processor.image_mean, np.float32)
    if processor.do_rescale:
        x = x / (processor.rescale_factor * 255)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return np.clip(x[..., :3], 0, 1)


def extract_batch(model, pixels, processor) -> list[ImageFeatures]:
    """Features of each preprocessed image of a batch: `[B, H, W, C]` pixels, or SigLIP 2's `NaFlexInputs` (each
    image on its own grid; the attention map is what each real patch receives from the real patches)."""
    from ..common.naflex import NaFlexInputs

    if isinstance(pixels, NaFlexInputs):
        return _extract_naflex_batch(model, pixels, processor)
    tower = model.vision_tower
    x = jax.numpy.asarray(pixels)
    grid = tower.check_images(x)
    tokens, weights = _patches_and_attention(model, x)
    tokens, weights = np.asarray(tokens), np.asarray(weights)
    c = tower.config
    return [
        ImageFeatures(
            model_view(pixels[i], processor),
            tokens[i, c.num_prefix_tokens :].reshape(*grid, -1),
            attention_map(weights[i], c.num_prefix_tokens, c.class_token, grid),
        )
        for i in range(len(pixels))
    ]


def _extract_naflex_batch(model, inputs, processor) -> list[ImageFeatures]:
    from ..data.naflex import unpatchify

    tokens, weights = _naflex_patches_and_attention(model, inputs)
    tokens, weights = np.asarray(tokens), np.asarray(weights)
    out = []
    for i, shape in enumerate(np.asarray(inputs.spatial_shapes)):
        grid = (int(shape[0]), int(shape[1]))
        n = grid[0] * grid[1]
        pixels = unpatchify(np.asarray(inputs.pixel_values[i]), grid, processor.patch_size)
        out.append(
            ImageFeatures(
                model_view(pixels, processor),
                tokens[i, :n].reshape(*grid, -1),
                attention_map(weights[i, :, :n, :n], 0, False, grid),
            )
        )
    return out


def extract(model, pixels: np.ndarray, processor) -> ImageFeatures:
    """Features of one preprocessed image `[H, W, C]` (the model's processor output)."""
    return extract_batch(model, pixels[None], processor)[0]


def extract_naflex(model, image, processor) -> ImageFeatures:
    """Features of one image for a SigLIP 2 NaFlex model: on the image's own grid within the processor's
    `max_num_patches` (one compiled program for every image)."""
    return extract_batch(model, processor.collate([processor.decode(image)]), processor)[0]


def _names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Output stems, made unique (`a`, `a_2`, ...) when two images share a file name."""
    seen: dict[str, int] = {}
    out = []
    for path in paths:
        stem = Path(path).stem
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return out


def load_vision_model(model):
    """`model`, or the model it names; a clear error when it has no vision tower with patch tokens."""
    if isinstance(model, str | os.PathLike):
        from ..models.registry import from_pretrained

        model = from_pretrained(model, sharding=None)
    if getattr(model, "vision_tower", None) is None:
        raise ValueError(f"{type(model).__name__} has no vision tower with patch tokens; `jimm features` needs one")
    return model


def _write(features: ImageFeatures, out: Path, name: str) -> tuple[Path, Path, Path]:
    files = (out / f"{name}_features.npy", out / f"{name}_pca.png", out / f"{name}_attention.png")
    np.save(files[0], features.patches.astype(np.float32))
    side_by_side(features.image, pca_rgb(features.patches)).save(files[1])
    overlay(features.image, features.attention).save(files[2])
    return files


def write_features(
    model, images: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *, max_num_patches: int | None = None
) -> list[Path]:
    """Write the three files per image (module docstring) into `out_dir`; `model` is a jimm model or a name.
    `max_num_patches` is SigLIP 2 NaFlex's patch budget per image (default: the checkpoint's).

    Returns the written paths, three per image in input order.
    """
    from ..data.stream import ImageStream, processor_for

    model = load_vision_model(model)
    processor = processor_for(model, max_num_patches=max_num_patches)
    stream = ImageStream(images, processor, batch_size=1, num_threads=0, strict=True)
    return list(write_features_stream(model, stream, out_dir))


def write_features_stream(model, stream, out_dir: str | os.PathLike) -> Iterator[Path]:
    """`write_features` over a `jimm.data.stream.ImageStream` (batched, bad files skipped); yields each path
    as it is written. Output names are made unique over all of the stream's files, readable or not."""
    out = Path(out_dir)
    names = dict(zip(stream.paths, _names(stream.paths), strict=True))
    for batch in stream:
        out.mkdir(parents=True, exist_ok=True)  # only once an image was read: a failed run leaves no folder
        for path, features in zip(batch.paths, extract_batch(model, batch.pixels, stream.processor), strict=False):
            yield from _write(features, out, names[path])


__all__ = [
    "ImageFeatures",
    "attention_map",
    "extract",
    "extract_batch",
    "extract_naflex",
    "load_vision_model",
    "overlay",
    "pca_rgb",
    "side_by_side",
    "write_features",
    "write_features_stream",
]
