"""grain pipelines: shuffled, augmented, prefetched training batches with a checkpointable iterator, and
ordered evaluation batches.

Every random choice (order, augmentation) is a pure function of the seed and the element's position, so
`iterator.get_state()` / `set_state()` reproduce the exact same stream after a restart.
Batches are `(images [B, h, w, C] float32 NHWC, labels [B] int32)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import grain
import numpy as np

from .datasets import Split
from .preprocess import ImageProcessorConfig, preprocess


@dataclasses.dataclass(frozen=True)
class Augment:
    """Random translation by up to `shift` pixels (edge-padded) and optional horizontal flips."""

    shift: int = 0
    hflip: bool = False

    def __call__(self, element: tuple[np.ndarray, int], rng: np.random.Generator) -> tuple[np.ndarray, int]:
        image, label = element
        if self.shift > 0:
            s = self.shift
            h, w = image.shape[:2]
            padded = np.pad(image, ((s, s), (s, s), (0, 0)), mode="edge")
            dy, dx = rng.integers(0, 2 * s + 1, size=2)
            image = padded[dy : dy + h, dx : dx + w]
        if self.hflip and rng.random() < 0.5:
            image = image[:, ::-1]
        return np.ascontiguousarray(image), label


class _Preprocess:
    """Picklable element transform: decode (if needed) and preprocess like ViTImageProcessor."""

    def __init__(self, config: ImageProcessorConfig):
        self.config = config

    def __call__(self, element: tuple[np.ndarray, int]) -> tuple[np.ndarray, np.int32]:
        image, label = element
        return preprocess(image, self.config), np.int32(label)


def train_dataset(
    split: Split,
    config: ImageProcessorConfig,
    *,
    batch_size: int,
    seed: int,
    augment: Augment = Augment(),
    prefetch: int = 4,
    num_threads: int = 2,
) -> grain.IterDataset:
    """An endless stream of shuffled (re-shuffled every epoch), augmented batches; drops ragged batches."""
    if len(split) < batch_size:
        raise ValueError(
            f"the training split has {len(split)} images, fewer than one batch of {batch_size}; lower --batch-size"
        )
    ds = grain.MapDataset.source(split).shuffle(seed=seed).repeat(None).map(_Preprocess(config))
    if augment.shift or augment.hflip:
        ds = ds.random_map(augment, seed=seed + 1)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))


def eval_batches(
    split: Split, config: ImageProcessorConfig, *, batch_size: int, num_threads: int = 2
) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Ordered batches `(images, labels, n_valid)`; the last batch is zero-padded to `batch_size` so one
    compiled evaluation step serves every batch (only its first `n_valid` rows count)."""
    ds = grain.MapDataset.source(split).map(_Preprocess(config)).batch(batch_size, drop_remainder=False)
    for images, labels in ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2)):
        n = len(labels)
        if n < batch_size:
            images = np.concatenate([images, np.zeros((batch_size - n, *images.shape[1:]), images.dtype)])
            labels = np.concatenate([labels, np.zeros(batch_size - n, labels.dtype)])
        yield images, labels, n
