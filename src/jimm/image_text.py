"""Zero-shot classification and embeddings with a CLIP or SigLIP model, over image files, PIL images or uint8 HWC
arrays and plain strings: what `model.zero_shot`, `jimm zero-shot` and `jimm embed` run.

Images stream through in batches (`jimm.data.stream.ImageStream`, the same path as the command line's folders):
each image is preprocessed with the checkpoint's own processor (`jimm.data.stream.processor_for`), each batch
embedded by one jitted call; the last batch is padded to the batch size so every batch reuses one compiled
program. Texts go through the checkpoint's tokenizer, padded to the text tower's length, and are embedded once.

SigLIP 2 NaFlex models (`jimm.SigLIP2`) take each image at its own aspect ratio within `max_num_patches`
(`jimm.data.naflex`); every batch is padded to `max_num_patches` slots and the grids are data, so a run over
images of any mix of sizes compiles the image tower once per `max_num_patches`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

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


def _stream(model, images, batch_size: int, progress: bool, desc: str, max_num_patches: int | None):
    """An `ImageStream` over in-memory images or files, decoded in this thread, a bad file raising its error."""
    from .data.stream import ImageStream, processor_for

    processor = processor_for(model, max_num_patches=max_num_patches)
    return ImageStream(
        as_image_list(images),
        processor,
        batch_size=batch_size,
        num_threads=0,
        progress=progress,
        desc=desc,
        strict=True,
    )


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
    check_labels(labels, template)
    stream = _stream(model, images, batch_size, progress, "zero-shot", max_num_patches)
    return np.concatenate([probs for _, probs in zero_shot_stream(model, stream, labels, template=template)])


def embed_images(
    model, images, *, batch_size: int = 32, progress: bool = False, max_num_patches: int | None = None
) -> np.ndarray:
    """L2-normalised image embeddings `[N, P]` (CLIP: projected when the model has a projection; SigLIP 2
    NaFlex: each image at its aspect ratio within `max_num_patches`)."""
    from .embed import embed_stream

    stream = _stream(model, images, batch_size, progress, "embed", max_num_patches)
    return np.concatenate([vectors for _, vectors in embed_stream(model, stream)]).astype(np.float32)


def embed_texts(model, texts: Sequence[str], *, batch_size: int = 256) -> np.ndarray:
    """L2-normalised text embeddings `[N, P]` from the checkpoint's tokenizer (CLIP: projected when it can be)."""
    from .embed import text_embeddings

    return text_embeddings(model, texts, batch_size=batch_size)


__all__ = ["DEFAULT_TEMPLATE", "embed_images", "embed_texts", "zero_shot", "zero_shot_stream"]
