"""A small, strict safetensors reader and writer on numpy (bf16 through ml_dtypes).

Reading parses and validates the header once, then reads one tensor at a time with `pread` into a fresh
buffer, so the file is never mapped or held whole. Writing streams tensors one at a time in the format
transformers writes (`{"format": "pt"}` metadata, 8-byte aligned header).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterable

import ml_dtypes
import numpy as np

DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
MAX_HEADER_BYTES = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """A safetensors file is truncated, corrupt or not a safetensors file."""


class SafetensorsFile:
    """An open safetensors file: `shape(name)`, `dtype(name)`, `read(name)`; use as a context manager."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_RDONLY)
        try:
            self._entries, self.metadata = self._read_header()
        except BaseException:
            os.close(self._fd)
            raise

    def _fail(self, problem: str) -> SafetensorsError:
        return SafetensorsError(f"{self.path} is not a valid safetensors file: {problem}")

    def _read_header(self) -> tuple[dict[str, tuple[np.dtype, tuple[int, ...], int, int]], dict[str, str]]:
        size = os.fstat(self._fd).st_size
        if size < 8:
            raise self._fail(f"only {size} bytes")
        (header_len,) = struct.unpack("<Q", os.pread(self._fd, 8, 0))
        if header_len > min(MAX_HEADER_BYTES, size - 8):
            raise self._fail(f"header claims {header_len} bytes but the file has {size}")
        try:
            header = json.loads(os.pread(self._fd, header_len, 8))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise self._fail(f"header is not JSON ({err})") from err
        if not isinstance(header, dict):
            raise self._fail("header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        data_start, data_size = 8 + header_len, size - 8 - header_len
        entries = {}
        for name, info in header.items():
            try:
                dtype = DTYPES[info["dtype"]]
                shape = tuple(int(d) for d in info["shape"])
                begin, end = (int(o) for o in info["data_offsets"])
            except (KeyError, TypeError, ValueError) as err:
                raise self._fail(f"tensor {name!r} has a malformed entry {info!r}") from err
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if not 0 <= begin <= end <= data_size or end - begin != nbytes:
                raise self._fail(
                    f"tensor {name!r} ({info['dtype']} {list(shape)}) has offsets [{begin}, {end}) that do not fit "
                    f"its size {nbytes} or the {data_size} data bytes (truncated file?)"
                )
            entries[name] = (dtype, shape, data_start + begin, nbytes)
        return entries, metadata

    def keys(self) -> list[str]:
        return list(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name][1]

    def dtype(self, name: str) -> np.dtype:
        return self._entries[name][0]

    def read(self, name: str) -> np.ndarray:
        dtype, shape, offset, nbytes = self._entries[name]
        out = np.empty(shape, dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        done = 0
        while done < nbytes:
            n = os.preadv(self._fd, [view[done:]], offset + done)
            if n <= 0:
                raise self._fail(f"tensor {name!r} ends early")
            done += n
        return out

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_safetensors(
    path: str | os.PathLike,
    tensors: Iterable[tuple[str, tuple[int, ...], np.dtype, Callable[[], np.ndarray]]],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write tensors given as `(name, shape, dtype, produce)`; each `produce()` is called once, in order."""
    tensors = list(tensors)
    header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, shape, dtype, _ in tensors:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        header[name] = {
            "dtype": DTYPE_NAMES[np.dtype(dtype)],
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name, shape, dtype, produce in tensors:
            array = np.ascontiguousarray(produce(), dtype=dtype)
            if array.shape != tuple(shape):
                raise ValueError(f"tensor {name!r} has shape {array.shape}, declared {tuple(shape)}")
            f.write(array.reshape(-1).view(np.uint8).data)
        f.flush()
        os.fsync(f.fileno())
