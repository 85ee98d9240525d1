"""The training loop: data, jitted steps, progress bar, metrics, plots, checkpoints and resume.

Rerunning `train(...)` on the same `out_dir` resumes from the newest checkpoint: model and optimizer state,
RNG state (inside the model state) and the data iterator position are restored, so the final parameters
equal those of an uninterrupted run bit for bit (same machine, same seed). Outputs in `out_dir`:
`checkpoints/`, `metrics.jsonl`, `training.png`, and `model/` (HF format, labels included) at the end.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from ..data.datasets import Split
from ..data.loader import Augment, train_dataset
from ..data.preprocess import ImageProcessorConfig
from .checkpoint import Checkpoints, shapes
from .config import TrainConfig
from .evaluate import evaluate
from .metrics import MetricsLog, plot
from .optim import make_optimizer, schedule, trainable
from .step import train_step

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainResult:
    model: Any  # the trained VisionTransformer, in eval mode
    model_dir: Path
    steps: int
    resumed_from: int
    validation: dict[str, float] | None
    seconds: float


def _progress(cfg: TrainConfig, start: int):
    from tqdm.auto import tqdm

    return tqdm(total=cfg.steps, initial=start, disable=not cfg.progress, unit="step", dynamic_ncols=True, desc="train")


def train(
    model,
    splits: dict[str, Split],
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    processor: ImageProcessorConfig,
    data_name: str,
) -> TrainResult:
    """Train `model` on `splits["train"]` (evaluating on `splits["validation"]` when present)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_split = splits["train"]
    val_split = splits.get("validation")
    if len(train_split.labels) != model.num_classes:
        raise ValueError(f"the dataset has {len(train_split.labels)} classes but the model has {model.num_classes}")

    optimizer = nnx.Optimizer(model, make_optimizer(cfg), wrt=trainable(cfg))
    model.train()
    graphdef, state = nnx.split((model, optimizer))
    model.eval()
    eval_graphdef, _ = nnx.split((model, optimizer))
    run = {"model": model.config.to_hf_dict(), "train": cfg.to_dict(), "data": data_name, "shapes": shapes(state)}

    checkpoints = Checkpoints(out / "checkpoints", keep=cfg.keep_checkpoints)
    metrics = MetricsLog(out / "metrics.jsonl")
    start, data_state = 0, None
    if checkpoints.latest_step() is not None:
        checkpoints.check_compatible(run)
        start, state, data_state = checkpoints.restore(state)
        logger.info("resuming from %s at step %d", checkpoints.directory, start)
    metrics.truncate(start)

    iterator = iter(
        train_dataset(
            train_split, processor, batch_size=cfg.batch_size, seed=cfg.seed, augment=Augment(cfg.shift, cfg.hflip)
        )
    )
    if data_state is not None:
        iterator.set_state(data_state)
    lr_at = schedule(cfg)
    a, b = cfg.grad_accum, cfg.batch_size // cfg.grad_accum

    def current_model():
        trained, _ = nnx.merge(eval_graphdef, state)
        return trained

    def run_eval(step: int) -> dict[str, float] | None:
        if val_split is None:
            return None
        result = evaluate(current_model(), val_split, processor, batch_size=min(256, max(cfg.batch_size, 32)))
        metrics.append({"step": step, "split": "validation", "loss": result["loss"], "accuracy": result["accuracy"]})
        plot(metrics.rows, out / "training.png", title=f"{data_name}")
        return result

    began = time.perf_counter()
    window, window_start = [], time.perf_counter()
    validation = None
    bar = _progress(cfg, start)
    try:
        for step in range(start + 1, cfg.steps + 1):
            images, labels = next(iterator)
            images = images.reshape(a, b, *images.shape[1:])
            labels = labels.reshape(a, b)
            state, step_metrics = train_step(graphdef, cfg, state, images, labels)
            window.append(step_metrics)
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                fetched = jax.device_get(window)
                elapsed = time.perf_counter() - window_start
                row = {
                    "step": step,
                    "split": "train",
                    "loss": float(np.mean([m["loss"] for m in fetched])),
                    "accuracy": float(np.mean([m["accuracy"] for m in fetched])),
                    "grad_norm": float(np.mean([m["grad_norm"] for m in fetched])),
                    "lr": float(lr_at(step - 1)),
                    "images_per_s": len(fetched) * cfg.batch_size / max(elapsed, 1e-9),
                }
                metrics.append(row)
                bar.set_postfix(
                    loss=f"{row['loss']:.4f}", acc=f"{row['accuracy']:.3f}", img_s=f"{row['images_per_s']:.0f}"
                )
                window, window_start = [], time.perf_counter()
            if cfg.eval_every and step % cfg.eval_every == 0 and step != cfg.steps:
                validation = run_eval(step)
                window_start = time.perf_counter()
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                checkpoints.save(step, state, data_state=iterator.get_state(), run=run)
                window_start = time.perf_counter()
    finally:
        bar.close()
        checkpoints.close()
    seconds = time.perf_counter() - began
    validation = run_eval(cfg.steps)
    if validation is None:
        plot(metrics.rows, out / "training.png", title=f"{data_name}")
    trained = current_model()
    model_dir = out / "model"
    trained.save_pretrained(model_dir)
    return TrainResult(trained, model_dir, cfg.steps, start, validation, seconds)
