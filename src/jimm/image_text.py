"""Zero-shot classification and embeddings with a CLIP or SigLIP model, over image files, PIL images or uint8 HWC
arrays and plain strings: what `model.zero_shot`, `jimm zero-shot` and `jimm embed` run.

Images stream through in batches: each batch is read and preprocessed with the checkpoint's own
`preprocessor_config.json` (`ImageProcessorConfig.for_model`), then embedded by one jitted call; the last batch
is padded to the batch size so every batch reuses one compiled program. Texts go through the checkpoint's
tokenizer, padded to the text tower's length, and are embedded once.

SigLIP 2 NaFlex models (`jimm.SigLIP2`) take each image at its own aspect ratio within `max_num_patches`
(`jimm.data.naflex`); every batch is padded to `max_num_patches` slots and the grids are data, so a run over
images of any mix of sizes compiles the image tower once per `max_num_patches`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

ImageInput = str | os.PathLike | np.ndarray
DEFAULT_TEMPLATE = "a photo of a {}."


@nnx.jit
def _text_embeds(model, input_ids):
    return model.encode_text(input_ids)


@nnx.jit
def _probabilities(model, images, text_embeds):
    return model.probabilities(model.logits(model.encode_image(images), text_embeds))


@nnx.jit(static_argnames="do_projection")
def _normalized_image_embeds(model, images, do_projection: bool):
    return _normalize(model.encode_image(images, do_projection))


@nnx.jit(static_argnames="do_projection")
def _normalized_text_embeds(model, input_ids, do_projection: bool):
    return _normalize(model.encode_text(input_ids, do_projection=do_projection))


def _normalize(x: jax.Array) -> jax.Array:
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def as_image_list(images) -> list:
    """A list of images from one image (path, PIL image, HWC array), a `[N, H, W, C]` uint8 array, or a list."""
    from PIL import Image

    if isinstance(images, str | os.PathLike | Image.Image):
        return [images]
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            return [images]
        if images.ndim == 4:
            return list(images)
        raise ValueError(f"an image array must be HWC or NHWC, got shape {images.shape}")
    images = list(images)
    if not images:
        raise ValueError("no images given")
    return images


def check_labels(labels, template: str) -> list[str]:
    """The prompts for `labels`, each formatted into `template`; a clear error for an empty or malformed list."""
    if isinstance(labels, str):
        raise TypeError(f"labels must be a list of strings, got the string {labels!r} (split it, e.g. on commas)")
    labels = list(labels)
    if not labels:
        raise ValueError("labels is empty: zero-shot classification needs at least one label")
    bad = [label for label in labels if not isinstance(label, str) or not label.strip()]
    if bad:
        raise ValueError(f"labels must be non-empty strings, got {bad!r}")
    if "{}" not in template:
        raise ValueError(f"template {template!r} has no '{{}}' for the label (e.g. {DEFAULT_TEMPLATE!r})")
    return [template.format(label) for label in labels]


def _preprocessor(model, max_num_patches: int | None):
    """`images -> model input` for a batch: the checkpoint's fixed-size processor, or NaFlex's patch batches."""
    from .data.naflex import NaFlexProcessorConfig, preprocess_naflex
    from .data.preprocess import ImageProcessorConfig, preprocess_images

    if getattr(model, "NAFLEX", False):
        processor = NaFlexProcessorConfig.for_model(model, max_num_patches=max_num_patches)
        return lambda chunk: preprocess_naflex(chunk, processor)
    if max_num_patches is not None:
        raise ValueError(
            f"max_num_patches is for SigLIP 2 NaFlex models; {type(model).__name__} resizes every image to its "
            "processor's size"
        )
    processor = ImageProcessorConfig.for_model(model)
    return lambda chunk: preprocess_images(chunk, processor)


def _repeat_last(batch, extra: int):
    """A batch (an array, or NaFlex's tuple of arrays) with its last row repeated `extra` times."""
    if isinstance(batch, tuple):
        return type(batch)(*(_repeat_last(a, extra) for a in batch))
    return np.concatenate([batch, np.repeat(batch[-1:], extra, axis=0)])


def _batches(
    model, images: list, batch_size: int, progress: bool, desc: str, max_num_patches: int | None = None
) -> Iterator[tuple[np.ndarray, int]]:
    """`(model input for batch_size images, real count)` per batch, the last one padded by repeating its last
    image: NHWC pixels, or `NaFlexInputs` for a NaFlex model."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    process = _preprocessor(model, max_num_patches)
    starts = range(0, len(images), batch_size)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(images), unit="img", desc=desc, dynamic_ncols=True)
    try:
        for start in starts:
            chunk = images[start : start + batch_size]
            pixels = process(chunk)
            if len(chunk) < batch_size and len(images) > batch_size:
                pixels = _repeat_last(pixels, batch_size - len(chunk))
            yield pixels, len(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()


def iter_zero_shot(
    model,
    images,
    labels: Sequence[str],
    *,
    template: str = DEFAULT_TEMPLATE,
    batch_size: int = 32,
    progress=False,
    max_num_patches: int | None = None,
) -> Iterator[np.ndarray]:
    """`zero_shot`'s rows one batch at a time (`[batch, labels]`), as each batch is done."""
    prompts = check_labels(labels, template)
    images = as_image_list(images)
    text = _text_embeds(model, model.tokenize(prompts))
    for pixels, n in _batches(model, images, batch_size, progress, "zero-shot", max_num_patches):
        yield np.asarray(_probabilities(model, pixels, text))[:n].astype(np.float32)


def zero_shot_stream(
    model, stream, labels: Sequence[str], *, template: str = DEFAULT_TEMPLATE
) -> Iterator[tuple[list, np.ndarray]]:
    """`(files, [n, labels] probabilities)` per batch of a `jimm.data.stream.ImageStream` (bad files skipped)."""
    if not hasattr(model, "tokenize"):
        raise ValueError(f"{type(model).__name__} has no text tower; zero-shot needs a CLIP or SigLIP model")
    text = _text_embeds(model, model.tokenize(check_labels(labels, template)))
    for batch in stream:
        yield batch.paths, np.asarray(_probabilities(model, batch.pixels, text))[: batch.n].astype(np.float32)


def zero_shot(
    model,
    images,
    labels: Sequence[str],
    *,
    template: str = DEFAULT_TEMPLATE,
    batch_size: int = 32,
    progress: bool = False,
    max_num_patches: int | None = None,
) -> np.ndarray:
    """`[images, labels]` probabilities: a softmax over the labels (CLIP) or a sigmoid per pair (SigLIP).

    Args:
        model: a `jimm.CLIP` or `jimm.SigLIP` with its tokenizer (as `from_pretrained` loads it).
        images: image files, PIL images or uint8 HWC arrays (or one of them, or an NHWC uint8 array).
        labels: class names, each formatted into `template` as one prompt.
        template: the prompt, with `{}` where the label goes.
        batch_size: images per jitted call.
        progress: show a progress bar over the images.
        max_num_patches: SigLIP 2 NaFlex only: the patch budget of each image (default: the checkpoint's
            processor's, 256 on the hub; the models were trained up to 1024).
    """
    kwargs = dict(template=template, batch_size=batch_size, progress=progress, max_num_patches=max_num_patches)
    return np.concatenate(list(iter_zero_shot(model, images, labels, **kwargs)))


def embed_images(
    model, images, *, batch_size: int = 32, progress: bool = False, max_num_patches: int | None = None
) -> np.ndarray:
    """L2-normalised image embeddings `[N, P]` (CLIP: projected when the model has a projection; SigLIP 2
    NaFlex: each image at its aspect ratio within `max_num_patches`)."""
    images = as_image_list(images)
    project = getattr(model, "visual_projection", None) is not None
    rows = [
        np.asarray(_normalized_image_embeds(model, pixels, project))[:n]
        for pixels, n in _batches(model, images, batch_size, progress, "embed", max_num_patches)
    ]
    return np.concatenate(rows).astype(np.float32)


def embed_texts(model, texts: Sequence[str], *, batch_size: int = 256) -> np.ndarray:
    """L2-normalised text embeddings `[N, P]` from the checkpoint's tokenizer (CLIP: projected when it can be)."""
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise ValueError("no texts given")
    project = getattr(model, "text_projection", None) is not None
    rows = []
    for start in range(0, len(texts), batch_size):
        ids = model.tokenize(texts[start : start + batch_size])
        rows.append(np.asarray(_normalized_text_embeds(model, ids, project)))
    return np.concatenate(rows).astype(np.float32)


__all__ = ["DEFAULT_TEMPLATE", "embed_images", "embed_texts", "iter_zero_shot", "zero_shot", "zero_shot_stream"]
