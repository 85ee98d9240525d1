"""Training checkpoints with orbax: model + optimizer state, step, data-iterator state and RNG state.

Orbax writes each step to a temporary folder and renames it when complete, so a kill at any moment leaves
either the previous checkpoint or the new one, never a half-written one. Alongside the arrays, a JSON item
records the run's model config, train config and every state array's shape, so a resume with a different
model or recipe fails with a clear error before anything is read into the model or written to disk.
Typed PRNG keys (nnx's RNG streams) are stored as their raw key data.
"""

from __future__ import annotations

import logging
import os
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

    def check_compatible(self, meta: dict[str, Any]) -> None:
        """Raise ResumeError naming every difference between the stored run and this one."""
        step = self.latest_step()
        stored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]["run"]
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
        tree = {k: np.asarray(v) for k, v in _flat(state).items()}
        meta = {"run": run, "data_state": data_state, "step": step}
        self.manager.save(
            step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)), force=True
        )
        self.manager.wait_until_finished()

    def restore(self, template: nnx.State) -> tuple[int, nnx.State, dict[str, Any]]:
        """`(step, state, data_state)` of the latest checkpoint, shaped like `template`."""
        step = self.latest_step()
        target = {k: np.zeros(v.shape, v.dtype) for k, v in _flat(template).items()}
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
        )
        return step, _unflat(template, restored["state"]), restored["meta"]["data_state"]

    def close(self) -> None:
        self.manager.close()
