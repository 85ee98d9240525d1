"""Checkpoint sources: one interface over single and sharded safetensors and `pytorch_model.bin` files.

A source lists its tensors with shapes and dtypes without reading data, then reads one tensor at a time,
so loaders can validate a checkpoint completely before allocating anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .safetensors import SafetensorsFile

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH = "pytorch_model.bin"
PYTORCH_INDEX = "pytorch_model.bin.index.json"


class CheckpointSource:
    """`entries()` -> `{name: (shape, dtype)}`, `read(name)` -> numpy array; a context manager."""

    def entries(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        raise NotImplementedError

    def read(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> CheckpointSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SafetensorsSource(CheckpointSource):
    """One or more safetensors files; a tensor may appear in only one of them."""

    def __init__(self, paths: list[Path]):
        self._files: list[SafetensorsFile] = []
        self._owner: dict[str, SafetensorsFile] = {}
        try:
            for path in paths:
                f = SafetensorsFile(path)
                self._files.append(f)
                for name in f.keys():
                    if name in self._owner:
                        raise ValueError(f"tensor {name!r} is in both {self._owner[name].path} and {path}")
                    self._owner[name] = f
        except BaseException:
            self.close()
            raise

    def entries(self):
        return {name: (f.shape(name), f.dtype(name)) for name, f in self._owner.items()}

    def read(self, name: str) -> np.ndarray:
        return self._owner[name].read(name)

    def close(self) -> None:
        for f in self._files:
            f.close()


class TorchBinSource(CheckpointSource):
    """`pytorch_model.bin` files, read with `torch.load(weights_only=True)` so no pickled code ever runs."""

    def __init__(self, paths: list[Path]):
        torch = _import_torch()
        self._tensors = {}
        for path in paths:
            try:
                try:
                    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError as err:
                    if "mmap" not in str(err):
                        raise
                    state = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
            except Exception as err:
                raise ValueError(
                    f"{path} could not be read as a weights-only PyTorch checkpoint ({type(err).__name__}: {err}). "
                    "jimm never unpickles arbitrary objects; convert the file to safetensors if you trust it."
                ) from err
            if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise ValueError(f"{path} does not hold a flat dict of tensors")
            self._tensors.update(state)

    def entries(self):
        return {name: (tuple(t.shape), _torch_to_numpy_dtype(t.dtype)) for name, t in self._tensors.items()}

    def read(self, name: str) -> np.ndarray:
        import torch

        tensor = self._tensors[name].detach()
        if tensor.dtype == torch.bfloat16:
            import ml_dtypes

            return tensor.view(torch.int16).numpy().copy().view(ml_dtypes.bfloat16)
        return tensor.numpy().copy()


def _import_torch():
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            "reading pytorch_model.bin needs torch: `pip install 'jimm[torch]'` (CPU torch is enough), "
            "or convert the checkpoint to safetensors."
        ) from err
    return torch


def _torch_to_numpy_dtype(dtype) -> np.dtype:
    import ml_dtypes
    import torch

    if dtype == torch.bfloat16:
        return np.dtype(ml_dtypes.bfloat16)
    return torch.empty((), dtype=dtype).numpy().dtype


def shard_paths_from_index(index_path: Path) -> list[Path]:
    """The shard files an HF `*.index.json` names, each checked to exist inside the index's directory."""
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        weight_map = index["weight_map"]
        names = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{index_path} is not a valid checkpoint index (needs a 'weight_map' object): {err}") from err
    root = index_path.parent.resolve()
    paths = []
    for name in names:
        path = (root / name).resolve()
        if not isinstance(name, str) or os.path.isabs(name) or path.parent != root:
            raise ValueError(f"{index_path} names shard {name!r}, which is outside {root}; refusing to read it")
        if not path.is_file():
            raise FileNotFoundError(f"{index_path} names shard {name!r}, but {path} does not exist")
        paths.append(path)
    return paths


def open_checkpoint(paths: list[Path]) -> CheckpointSource:
    """Open weight files of one kind (all safetensors or all `.bin`)."""
    if all(p.suffix == ".safetensors" for p in paths):
        return SafetensorsSource(paths)
    if all(p.suffix == ".bin" for p in paths):
        return TorchBinSource(paths)
    raise ValueError(f"cannot read a mix of checkpoint files: {[str(p) for p in paths]}")
