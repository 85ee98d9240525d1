"""The training loop: data, jitted steps, progress bar, metrics, plots, checkpoints and resume.

Rerunning `train(...)` on the same `out_dir` resumes from the newest checkpoint: model and optimizer state,
RNG state (inside the model state) and the data iterator position are restored, so the final parameters
equal those of an uninterrupted run bit for bit (same machine, same seed). Outputs in `out_dir`:
`checkpoints/`, `metrics.jsonl`, `training.png`, and `model/` (HF format, labels included) at the end.

Everything that can be checked is checked before anything is written. A run that fails before its first
checkpoint removes what it created (the folders, `checkpoints/`, `metrics.jsonl`), so nothing is left
behind; anything that was in the folder before is never touched. A folder that holds other files but no
checkpoints is refused rather than written into.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from ..data.datasets import DatasetError, Split
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


# What `train` writes in a run folder (`samples/` is the demo's).
RUN_ENTRIES = frozenset({"checkpoints", "metrics.jsonl", "training.png", "model", "samples"})
# What a run that was killed before its first checkpoint leaves; a rerun may start over on top of it.
_START_LEFTOVERS = frozenset({"checkpoints", "metrics.jsonl"})


class _RunFolder:
    """The run folder and what this run creates in it, so a run that fails before its first checkpoint can
    remove exactly that and nothing else."""

    def __init__(self, out: Path):
        self.out = out
        if out.exists() and not out.is_dir():
            raise ValueError(f"the run folder {out} is a file; choose a folder path")
        self.new_dirs = []  # the folders mkdir will create, innermost first
        p = out.absolute()
        while not p.exists():
            self.new_dirs.append(p)
            p = p.parent
        if not p.is_dir():
            raise ValueError(f"cannot create the run folder {out}: {p} is a file, not a folder")
        self.before = {entry.name for entry in out.iterdir()} if out.is_dir() else set()
        self.committed = False  # set once a checkpoint exists: from then on a failure keeps everything

    def has_checkpoints(self) -> bool:
        folder = self.out / "checkpoints"
        return folder.is_dir() and any(p.name.isdigit() and p.is_dir() for p in folder.iterdir())

    def check_writable(self) -> None:
        """Refuse a folder that holds other things and no checkpoints: it is not a run to resume."""
        if self.has_checkpoints():
            return
        foreign = sorted(n for n in self.before if n not in _START_LEFTOVERS and not n.startswith("."))
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise ValueError(
                f"the run folder {self.out} is not empty ({shown}) and holds no checkpoints to resume; "
                "choose a new or empty folder"
            )

    @contextlib.contextmanager
    def removed_unless_committed(self):
        """Create the folder; on any failure before `committed` is set, remove what this run created."""
        try:
            try:
                self.out.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise OSError(f"cannot create the run folder {self.out}: {err.strerror or err}") from err
            yield
        except BaseException:
            if not self.committed:
                self.discard()
            raise

    def discard(self) -> None:
        """Remove what this run created (nothing that was there before), then the folders it created."""
        if self.out.is_dir():
            for entry in self.out.iterdir():
                ours = entry.name in RUN_ENTRIES or any(entry.name.startswith(f".{n}.") for n in RUN_ENTRIES)
                if entry.name in self.before or not ours:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        for folder in self.new_dirs:
            try:
                folder.rmdir()
            except OSError:
                break  # not empty (someone else wrote there) or already gone


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
    train_split = splits["train"]
    val_split = splits.get("validation")
    if not model.do_classification:
        raise ValueError("training needs a model with a classifier head")
    if len(train_split.labels) < 2:
        raise DatasetError(
            f"the training set has only one class ({', '.join(train_split.labels) or 'none'}); a classifier needs "
            "at least two: add a folder per class"
        )
    if len(train_split.labels) != model.num_classes:
        raise ValueError(f"the dataset has {len(train_split.labels)} classes but the model has {model.num_classes}")
    folder = _RunFolder(out)
    folder.check_writable()
    iterator = iter(
        train_dataset(
            train_split, processor, batch_size=cfg.batch_size, seed=cfg.seed, augment=Augment(cfg.shift, cfg.hflip)
        )
    )

    optimizer = nnx.Optimizer(model, make_optimizer(cfg), wrt=trainable(cfg))
    model.train()
    graphdef, state = nnx.split((model, optimizer))
    model.eval()
    eval_graphdef, _ = nnx.split((model, optimizer))
    run = {"model": model.config.to_hf_dict(), "train": cfg.to_dict(), "data": data_name, "shapes": shapes(state)}

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

    with folder.removed_unless_committed():
        checkpoints = Checkpoints(out / "checkpoints", keep=cfg.keep_checkpoints)
        bar = None
        try:
            metrics = MetricsLog(out / "metrics.jsonl")
            start, data_state = 0, None
            if checkpoints.latest_step() is not None:
                checkpoints.check_compatible(run)
                start, state, data_state = checkpoints.restore(state)
                folder.committed = True
                logger.info("resuming from %s at step %d", checkpoints.directory, start)
            metrics.truncate(start)
            if data_state is not None:
                iterator.set_state(data_state)
            began = time.perf_counter()
            window, window_start = [], time.perf_counter()
            validation = None
            bar = _progress(cfg, start)
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
                    folder.committed = True
                    window_start = time.perf_counter()
        finally:
            if bar is not None:
                bar.close()
            checkpoints.close()
    seconds = time.perf_counter() - began
    validation = run_eval(cfg.steps)
    if validation is None:
        plot(metrics.rows, out / "training.png", title=f"{data_name}")
    trained = current_model()
    model_dir = out / "model"
    try:
        trained.save_pretrained(model_dir)
    except OSError as err:
        raise OSError(
            f"cannot save the trained model to {model_dir}: {err.strerror or err}; the checkpoints are kept in "
            f"{checkpoints.directory}: fix that (for a full disk, free some space) and rerun the command to save it"
        ) from err
    return TrainResult(trained, model_dir, cfg.steps, start, validation, seconds)
