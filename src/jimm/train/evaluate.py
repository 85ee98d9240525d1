"""Running a model on data: accuracy and loss over a dataset split, and top-k predictions for image files."""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx

from ..data.datasets import Split
from ..data.loader import eval_batches
from ..data.preprocess import ImageProcessorConfig, preprocess_files
from .step import eval_step, predict_step


def evaluate(model, split: Split, processor: ImageProcessorConfig, *, batch_size: int = 64) -> dict[str, float]:
    """`{"loss", "accuracy", "count"}` of an eval-mode model on every image of `split`."""
    if not model.do_classification:
        raise ValueError("this model has no classifier head; evaluation needs one")
    if len(split.labels) != model.num_classes:
        raise ValueError(f"the dataset has {len(split.labels)} classes but the model has {model.num_classes}")
    model.eval()
    graphdef, state = nnx.split(model)
    loss_sum, correct, count = 0.0, 0, 0
    results = []
    for images, labels, n in eval_batches(split, processor, batch_size=batch_size):
        valid = np.arange(len(labels)) < n
        results.append(eval_step(graphdef, state, images, labels, valid))
        count += n
    for loss, right in jax.device_get(results):
        loss_sum += float(loss)
        correct += int(right)
    return {"loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1), "count": count}


def predict_files(
    model, paths: Sequence[str | os.PathLike], processor: ImageProcessorConfig, *, top_k: int = 5
) -> list[list[tuple[str, float]]]:
    """For each image file, the `top_k` `(label, probability)` pairs, most likely first."""
    if not model.do_classification:
        raise ValueError("this model has no classifier head; predict needs one")
    model.eval()
    images = preprocess_files(paths, processor)
    graphdef, state = nnx.split(model)
    probs = np.asarray(predict_step(graphdef, state, images))
    labels = model.config.labels
    k = min(top_k, probs.shape[-1])
    out = []
    for row in probs:
        order = np.argsort(-row, kind="stable")[:k]
        out.append([(labels[int(i)], float(row[i])) for i in order])
    return out
