"""Running a model on data: accuracy and loss over a dataset split, and top-k predictions for image files."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from ..data.datasets import Split
from ..data.loader import eval_batches
from ..data.preprocess import ImageProcessorConfig, preprocess_files
from .step import eval_step, predict_step


def _shown(names) -> str:
    names = list(names)
    return ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")


def _classes(n: int) -> str:
    return f"{n} class" if n == 1 else f"{n} classes"


def model_ids(model, class_names: Sequence[str]) -> np.ndarray:
    """For each dataset class, the model's id for it: matched by name when the model has real labels (so
    folder order does not matter), by position when its labels are HF's placeholders LABEL_0..."""
    if len(class_names) != model.num_classes:
        raise ValueError(
            f"the dataset has {_classes(len(class_names))} ({_shown(class_names)}) but the model has "
            f"{_classes(model.num_classes)}; evaluate on a dataset with the model's classes"
        )
    if model.config.id2label is None:
        return np.arange(len(class_names))
    labels = model.config.labels
    by_name = {name: i for i, name in labels.items()}
    if set(class_names) != set(by_name):
        only_data = [c for c in class_names if c not in by_name]
        only_model = [name for _, name in sorted(labels.items()) if name not in set(class_names)]
        raise ValueError(
            f"the dataset's classes do not match the model's labels: dataset only {_shown(only_data)}; "
            f"model only {_shown(only_model)} (dataset classes: {_shown(class_names)}; model labels: "
            f"{_shown(labels[i] for i in sorted(labels))}). Name the class folders after the model's labels"
        )
    return np.asarray([by_name[c] for c in class_names])


def evaluate(model, split: Split, processor: ImageProcessorConfig, *, batch_size: int = 64) -> dict[str, float]:
    """`{"loss", "accuracy", "count"}` of an eval-mode model on every image of `split`; the dataset's
    classes must be the model's (see `model_ids`)."""
    if not model.do_classification:
        raise ValueError("this model has no classifier head; evaluation needs one")
    to_model = model_ids(model, split.labels)
    model.eval()
    graphdef, state = nnx.split(model)
    loss_sum, correct, count = 0.0, 0, 0
    results = []
    for images, labels, n in eval_batches(split, processor, batch_size=batch_size):
        valid = np.arange(len(labels)) < n
        labels = to_model[labels].astype(labels.dtype)
        results.append(eval_step(graphdef, state, images, labels, valid))
        count += n
    for loss, right in jax.device_get(results):
        loss_sum += float(loss)
        correct += int(right)
    return {"loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1), "count": count}


def _check_classifier(model) -> None:
    if not model.do_classification:
        raise ValueError("this model has no classifier head; predict needs one")
    model.eval()


def _top_k(model, probs: np.ndarray, top_k: int) -> list[list[tuple[str, float]]]:
    """Each row's `top_k` `(label, probability)` pairs, most likely first (ties in label order)."""
    if not np.isfinite(probs).all():
        raise ValueError(
            "the model's outputs are not finite (NaN or inf): its weights are damaged, or its training diverged"
        )
    labels = model.config.labels
    k = min(top_k, probs.shape[-1])
    out = []
    for row in probs:
        order = np.argsort(-row, kind="stable")[:k]
        out.append([(labels[int(i)], float(row[i])) for i in order])
    return out


def predict_files(
    model, paths: Sequence[str | os.PathLike], processor: ImageProcessorConfig, *, top_k: int = 5
) -> list[list[tuple[str, float]]]:
    """For each image file, the `top_k` `(label, probability)` pairs, most likely first."""
    _check_classifier(model)
    images = preprocess_files(paths, processor)
    graphdef, state = nnx.split(model)
    return _top_k(model, np.asarray(predict_step(graphdef, state, images)), top_k)


def predict_stream(model, stream, *, top_k: int = 5) -> Iterator[tuple[Path, list[tuple[str, float]]]]:
    """`(file, top_k (label, probability) pairs)` for each image of a `jimm.data.stream.ImageStream`, in order."""
    _check_classifier(model)
    graphdef, state = nnx.split(model)
    for batch in stream:
        probs = np.asarray(predict_step(graphdef, state, batch.pixels))[: batch.n]
        yield from zip(batch.paths, _top_k(model, probs, top_k), strict=True)
