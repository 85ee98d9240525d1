"""Checkpoint sources: one interface over safetensors (single or sharded), `pytorch_model.bin` and `.npz` files.

A source lists its tensors with shapes and dtypes without reading data, then reads one tensor at a time,
so loaders can validate a checkpoint completely before allocating anything. Every reader refuses to run
code from a file: safetensors has none, `.bin` goes through `torch.load(weights_only=True)`, `.npz` through
`np.load(allow_pickle=False)`. A file that cannot be read is a `ValueError` naming it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .safetensors import SafetensorsFile


class CheckpointSource:
    """`entries()` -> `{name: (shape, dtype)}`, `read(name, out=None)` -> numpy array; a context manager."""

    def entries(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        raise NotImplementedError

    def read(self, name: str, out: np.ndarray | None = None) -> np.ndarray:
        """The tensor `name`; sources that can read straight into `out` (same dtype and size) do so."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> CheckpointSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _into(array: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    if out is None:
        return array
    out.reshape(array.shape)[...] = array
    return out


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

    def read(self, name: str, out: np.ndarray | None = None) -> np.ndarray:
        f = self._owner[name]
        if out is not None and out.dtype == f.dtype(name) and out.flags.c_contiguous:
            return f.read(name, out)
        return _into(f.read(name), out)

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
                ) from None
            if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise ValueError(f"{path} does not hold a flat dict of tensors")
            for name, tensor in state.items():
                if name in self._tensors:
                    raise ValueError(f"tensor {name!r} appears in more than one of {[str(p) for p in paths]}")
                try:
                    _torch_to_numpy_dtype(tensor.dtype)
                except (TypeError, RuntimeError):
                    raise ValueError(
                        f"{path}: tensor {name!r} has dtype {tensor.dtype}, which jimm cannot read"
                    ) from None
                self._tensors[name] = tensor

    def entries(self):
        return {name: (tuple(t.shape), _torch_to_numpy_dtype(t.dtype)) for name, t in self._tensors.items()}

    def read(self, name: str, out: np.ndarray | None = None) -> np.ndarray:
        import torch

        tensor = self._tensors[name].detach()
        if tensor.dtype == torch.bfloat16:
            import ml_dtypes

            return _into(tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16), out)
        return _into(tensor.numpy(), out)


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


class NpzSource(CheckpointSource):
    """One `.npz` file (vit_jax / big_vision); names are the archive's keys, shapes read from the `.npy` headers."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._entries: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        try:
            with zipfile.ZipFile(self.path) as archive:
                for info in archive.infolist():
                    if not info.filename.endswith(".npy"):
                        continue
                    with archive.open(info) as f:
                        version = np.lib.format.read_magic(f)
                        read_header = (
                            np.lib.format.read_array_header_1_0
                            if version == (1, 0)
                            else np.lib.format.read_array_header_2_0
                        )
                        shape, _, dtype = read_header(f)  # the header only, no data
                    if np.dtype(dtype).hasobject:
                        raise ValueError(f"member {info.filename} is an object array, which is never unpickled")
                    self._entries[info.filename[: -len(".npy")]] = (tuple(shape), np.dtype(dtype))
            self._npz = np.load(self.path, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile) as err:
            raise ValueError(f"{self.path} is not a readable .npz checkpoint: {err}") from None

    def entries(self):
        return dict(self._entries)

    def read(self, name: str, out: np.ndarray | None = None) -> np.ndarray:
        try:
            array = self._npz[name]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"{self.path}: array {name!r} could not be read: {err}") from None
        if array.shape != self._entries[name][0] or array.dtype != self._entries[name][1]:
            raise ValueError(f"{self.path}: array {name!r} does not match its header")
        return _into(array, out)

    def close(self) -> None:
        if hasattr(self, "_npz"):
            self._npz.close()


class PrefixStripped(CheckpointSource):
    """A view of a source without a common name prefix (big_vision's `params/`, vit_jax's `opt/target/`)."""

    def __init__(self, raw: CheckpointSource, prefix: str):
        self.raw, self.prefix = raw, prefix

    def entries(self):
        n = len(self.prefix)
        return {(k[n:] if k.startswith(self.prefix) else k): v for k, v in self.raw.entries().items()}

    def read(self, name: str, out: np.ndarray | None = None) -> np.ndarray:
        entries = self.raw.entries()
        return self.raw.read(self.prefix + name if self.prefix + name in entries else name, out=out)

    def close(self) -> None:
        self.raw.close()


def open_checkpoint(paths: list[Path]) -> CheckpointSource:
    """Open weight files of one kind: all safetensors, all `.bin`, or one `.npz`."""
    suffixes = {p.suffix for p in paths}
    if suffixes == {".safetensors"}:
        return SafetensorsSource(paths)
    if suffixes in ({".bin"}, {".pth"}):  # transformers' pytorch_model.bin; torch-hub state dicts (DINOv2's .pth)
        return TorchBinSource(paths)
    if suffixes == {".npz"} and len(paths) == 1:
        return NpzSource(paths[0])
    if len(suffixes) > 1:
        raise ValueError(f"cannot read a mix of checkpoint file kinds: {[str(p) for p in paths]}")
    raise ValueError(
        f"{', '.join(str(p) for p in paths)}: not a checkpoint file jimm reads (.safetensors, .bin / .pth or one .npz)"
    )
