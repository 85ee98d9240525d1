"""Training checkpoints with orbax: model + optimizer state, step, data-iterator state and RNG state.

Orbax writes each step to a temporary folder and renames it when complete, so a kill at any moment leaves
either the previous checkpoint or the new one, never a half-written one. Alongside the arrays, a JSON item
records the run's model config, train config and every state array's shape, so a resume with a different
model or recipe fails with a clear error before anything is read into the model or written to disk.
Typed PRNG keys (nnx's RNG streams) are stored as their raw key data.

Failures are one-line errors that name the folder and the cause: a write that cannot fit on the disk, or
that fails (disk full, no permission), is a `CheckpointWriteError` and its half-written temporary folder is
removed; a checkpoint that cannot be read back (files deleted or damaged) is a `DamagedCheckpointError`.
Orbax also reports a failed read or write from its background threads (logged tracebacks, and tensorstore
callbacks into closed asyncio loops); those repeat the error raised here, so they are silenced.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from .config import RESUME_FREE

logger = logging.getLogger(__name__)


class ResumeError(ValueError):
    """The checkpoint folder belongs to a different run; the message lists the differences."""


class DamagedCheckpointError(ValueError):
    """A checkpoint step folder cannot be read back (files missing or damaged)."""


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed for an operating-system reason (disk full, permission denied, ...)."""


_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")


def io_cause(err: BaseException) -> str | None:
    """The operating-system reason behind an orbax/tensorstore I/O failure ("No space left on device"), or None
    when `err` is not an I/O failure (then it is a bug and propagates unchanged)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno:
            return os.strerror(err.errno)
        if isinstance(err, OSError | ValueError) and (match := _OS_ERROR_CODE.search(str(err))):
            return os.strerror(int(match.group(1)))
        err = err.__cause__ or err.__context__
    return None


def _first_line(err: BaseException) -> str:
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__


class _OrbaxThreadErrors(logging.Filter):
    """Drops the tracebacks orbax's background threads log for a failure that also raises in the caller."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and record.exc_info and f"{os.sep}orbax{os.sep}" in record.pathname)


def _closed_loop_callback(unraisable) -> bool:
    """After one write fails, tensorstore still completes the others and calls back into asyncio loops that
    orbax has already closed; Python prints each such RuntimeError, which carries no information."""
    value = unraisable.exc_value
    return unraisable.object is None and isinstance(value, RuntimeError) and str(value) == "Event loop is closed"


class _BackgroundNoise:
    """Silences what orbax's threads and tensorstore's callbacks print about a failed read or write that the
    caller raises anyway: while an operation runs, and for good once one has failed (they may print later)."""

    def __init__(self):
        self.filter = _OrbaxThreadErrors()
        self.previous_hook = None
        self.failed = False

    def _hook(self, unraisable) -> None:
        if not _closed_loop_callback(unraisable):
            self.previous_hook(unraisable)

    @contextlib.contextmanager
    def silenced(self):
        """Silence during the block; `self.failed = True` inside it keeps the silence after it."""
        logging.getLogger("absl").addFilter(self.filter)
        if self.previous_hook is None:
            self.previous_hook, sys.unraisablehook = sys.unraisablehook, self._hook
        try:
            yield
        finally:
            if not self.failed:
                logging.getLogger("absl").removeFilter(self.filter)
                if sys.unraisablehook == self._hook:
                    sys.unraisablehook = self.previous_hook
                self.previous_hook = None


_NOISE = _BackgroundNoise()


def _remove_settled(path: Path, *, settle_s: float = 0.05, tries: int = 20) -> None:
    """Remove a folder and make sure it stays gone: after a failure, tensorstore finishes the writes already in
    flight (within milliseconds), and those recreate folders."""
    for _ in range(tries):
        shutil.rmtree(path, ignore_errors=True)
        time.sleep(settle_s)
        if not path.exists():
            return


def _flat(state: nnx.State) -> dict[str, jax.Array]:
    out = {}
    for path, value in jax.tree_util.tree_flatten_with_path(state)[0]:
        key = "/".join(str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))) for p in path)
        if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
            value = jax.random.key_data(value)
        out[key] = value
    return out


def _unflat(template: nnx.State, flat: dict[str, np.ndarray]) -> nnx.State:
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, like in paths:
        key = "/".join(str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))) for p in path)
        value = jax.numpy.asarray(flat[key])
        if jax.dtypes.issubdtype(like.dtype, jax.dtypes.prng_key):
            value = jax.random.wrap_key_data(value, impl=jax.random.key_impl(like))
        leaves.append(value)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def shapes(state: nnx.State) -> dict[str, list[Any]]:
    return {k: [list(v.shape), str(v.dtype)] for k, v in _flat(state).items()}


class Checkpoints:
    """A folder of orbax step checkpoints for one run."""

    def __init__(self, directory: str | os.PathLike, *, keep: int):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=False, create=True, cleanup_tmp_directories=True
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def _damaged(self, step: int, problem: str) -> DamagedCheckpointError:
        return DamagedCheckpointError(
            f"cannot resume from {self.directory / str(step)}: the checkpoint is damaged ({problem}). "
            f"Delete that folder to resume from an older checkpoint, or use a new run folder."
        )

    def _restore(self, step: int, **items) -> dict[str, Any]:
        """Restore items of one step; a missing or unreadable item is a DamagedCheckpointError."""
        with _NOISE.silenced():
            try:
                return self.manager.restore(step, args=ocp.args.Composite(**items))
            except (KeyError, ValueError, OSError, RecursionError) as err:  # reading files a user can change
                _NOISE.failed = True
                raise self._damaged(step, _first_line(err)) from err

    def _meta(self, step: int) -> dict[str, Any]:
        meta = self._restore(step, meta=ocp.args.JsonRestore())["meta"]
        run = meta.get("run") if isinstance(meta, dict) else None
        if not (isinstance(run, dict) and all(isinstance(run.get(k), dict) for k in ("model", "train", "shapes"))):
            raise self._damaged(step, "its meta item is not the run record jimm writes")
        if not isinstance(meta.get("data_state"), dict):
            raise self._damaged(step, "its meta item has no data iterator state")
        return meta

    def check_compatible(self, meta: dict[str, Any]) -> None:
        """Raise ResumeError naming every difference between the stored run and this one."""
        step = self.latest_step()
        stored = self._meta(step)["run"]
        problems = []
        if stored["model"] != meta["model"]:
            diff = sorted(
                k for k in set(stored["model"]) | set(meta["model"]) if stored["model"].get(k) != meta["model"].get(k)
            )
            problems.append(
                "model config differs in "
                + ", ".join(f"{k} ({stored['model'].get(k)!r} -> {meta['model'].get(k)!r})" for k in diff)
            )
        elif stored["shapes"] != meta["shapes"]:
            problems.append("model/optimizer state shapes differ")
        train_diff = sorted(
            k
            for k in set(stored["train"]) | set(meta["train"])
            if k not in RESUME_FREE and stored["train"].get(k) != meta["train"].get(k)
        )
        if train_diff:
            problems.append(
                "training settings differ: "
                + ", ".join(f"{k} ({stored['train'].get(k)!r} -> {meta['train'].get(k)!r})" for k in train_diff)
            )
        if stored.get("data") != meta.get("data"):
            problems.append(f"dataset differs ({stored.get('data')!r} -> {meta.get('data')!r})")
        if problems:
            raise ResumeError(
                f"{self.directory} holds checkpoints of a different run (step {step}): "
                + "; ".join(problems)
                + ". Use a new --out folder, or rerun with the original settings to resume."
                + " The checkpoint was not changed."
            )

    def save(self, step: int, state: nnx.State, *, data_state: dict[str, Any], run: dict[str, Any]) -> None:
        """Write one step; an I/O failure is a CheckpointWriteError, with the half-written folder removed."""
        tree = {k: np.asarray(v) for k, v in _flat(state).items()}
        meta = {"run": run, "data_state": data_state, "step": step}
        needed, free = sum(a.nbytes for a in tree.values()), shutil.disk_usage(self.directory).free
        if free < needed:  # refuse before writing a byte (a write that fails half-way leaves debris in flight)
            raise CheckpointWriteError(
                f"cannot write the checkpoint of step {step} to {self.directory}: it needs about "
                f"{needed / 2**20:.1f} MiB and the disk has {free / 2**20:.1f} MiB free "
                "(free some space, or use a run folder on another disk)"
            )
        with _NOISE.silenced():
            try:
                self.manager.save(
                    step,
                    args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)),
                    force=True,
                )
                self.manager.wait_until_finished()
            except Exception as err:
                cause = io_cause(err)
                if cause is None:
                    raise
                _NOISE.failed = True
                for partial in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
                    _remove_settled(partial)
                hint = " (free some space, or use a run folder on another disk)" if "space" in cause.lower() else ""
                raise CheckpointWriteError(
                    f"cannot write the checkpoint of step {step} to {self.directory}: {cause}{hint}"
                ) from err

    def restore(self, template: nnx.State) -> tuple[int, nnx.State, dict[str, Any]]:
        """`(step, state, data_state)` of the latest checkpoint, shaped like `template`."""
        step = self.latest_step()
        data_state = self._meta(step)["data_state"]
        target = {k: np.zeros(v.shape, v.dtype) for k, v in _flat(template).items()}
        restored = self._restore(step, state=ocp.args.StandardRestore(target))["state"]
        if not isinstance(restored, dict) or set(restored) != set(target):
            raise self._damaged(step, "its state item does not hold this run's arrays")
        return step, _unflat(template, restored), data_state

    def close(self) -> None:
        self.manager.close()
