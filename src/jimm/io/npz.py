"""Read `.npz` checkpoints (vit_jax / big_vision) one array at a time, with shapes known before reading.

`np.load` of an `.npz` is lazy per member; the shapes come from each member's `.npy` header so a loader can
validate the whole checkpoint before reading any data. Object arrays are refused (`allow_pickle=False`).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .checkpoint import CheckpointSource


class NpzSource(CheckpointSource):
    """One `.npz` file; names are the archive's keys (e.g. `Transformer/encoderblock_0/LayerNorm_0/scale`)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._npz = np.load(self.path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise ValueError(f"{self.path} is not a readable .npz checkpoint: {err}") from err
        self._entries = {}
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
                self._entries[info.filename[: -len(".npy")]] = (tuple(shape), np.dtype(dtype))

    def entries(self):
        return dict(self._entries)

    def read(self, name: str) -> np.ndarray:
        return self._npz[name]

    def close(self) -> None:
        self._npz.close()


class PrefixStripped(CheckpointSource):
    """A view of a source without a common name prefix (big_vision's `params/`, vit_jax's `opt/target/`)."""

    def __init__(self, raw: CheckpointSource, prefix: str):
        self.raw, self.prefix = raw, prefix

    def entries(self):
        n = len(self.prefix)
        return {(k[n:] if k.startswith(self.prefix) else k): v for k, v in self.raw.entries().items()}

    def read(self, name: str) -> np.ndarray:
        entries = self.raw.entries()
        return self.raw.read(self.prefix + name if self.prefix + name in entries else name)

    def close(self) -> None:
        self.raw.close()


__all__ = ["NpzSource", "PrefixStripped"]
