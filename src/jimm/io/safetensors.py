"""safetensors files on numpy (bf16 and fp8 through ml_dtypes): a validated streaming reader and a writer.

Reading: the `safetensors` library (a fuzzed Rust parser, the format's reference) validates the whole file
first: header length and size limit, UTF-8 JSON, known dtypes, well-formed shapes without overflow, offsets
that are contiguous, non-overlapping and cover the data area exactly (no gaps, no trailing bytes). Only a
file it accepts is read, one tensor at a time with `pread` into a buffer the caller owns or a fresh one, so
the file is never held whole. Anything the library rejects is a `SafetensorsError` (a `ValueError`) naming
the file and the problem. Writing streams tensors one at a time in the layout transformers writes
(8-byte aligned header, `{"format": "pt"}` metadata).
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
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E4M3FNUZ": np.dtype(ml_dtypes.float8_e4m3fnuz),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "F8_E5M2FNUZ": np.dtype(ml_dtypes.float8_e5m2fnuz),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U64": np.dtype(np.uint64),
    "U32": np.dtype(np.uint32),
    "U16": np.dtype(np.uint16),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
    "C64": np.dtype(np.complex64),
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
SAVE_ID_KEY = "jimm_save_id"
"""The `__metadata__` key under which jimm records which save wrote a file (see `jimm.io.atomic_save`)."""


class SafetensorsError(ValueError):
    """A safetensors file is truncated, corrupt, or not a safetensors file."""


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict:
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r} in the header")
        seen[key] = value
    return seen


class SafetensorsFile:
    """An open, validated safetensors file: `keys()`, `shape(name)`, `dtype(name)`, `read(name)`, `metadata`.

    Use as a context manager (or call `close()`).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        _validate_with_library(self.path)
        self._fd = os.open(self.path, os.O_RDONLY)
        try:
            self._entries, self.metadata = self._read_header()
        except BaseException:
            os.close(self._fd)
            raise

    def _fail(self, problem: str) -> SafetensorsError:
        return SafetensorsError(f"{self.path} is not a valid safetensors file: {problem}")

    def _read_header(self) -> tuple[dict[str, tuple[np.dtype, tuple[int, ...], int, int]], dict[str, str]]:
        # The library has validated the layout; this reads the offsets it checked, refusing duplicate keys
        # (which a JSON parser would silently collapse) as a second line of defence.
        size = os.fstat(self._fd).st_size
        (header_len,) = struct.unpack("<Q", os.pread(self._fd, 8, 0))
        try:
            header = json.loads(os.pread(self._fd, header_len, 8), object_pairs_hook=_reject_duplicates)
        except (UnicodeDecodeError, ValueError, RecursionError) as err:
            raise self._fail(f"header is not valid JSON ({err})") from err
        metadata = header.pop("__metadata__", None) or {}
        data_start = 8 + header_len
        entries = {}
        for name, info in header.items():
            dtype = DTYPES.get(info["dtype"])
            if dtype is None:
                raise self._fail(
                    f"tensor {name!r} has dtype {info['dtype']}, which jimm cannot represent in numpy "
                    f"(supported: {', '.join(DTYPES)})"
                )
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
            if data_start + end > size:  # the file changed since the library read it
                raise self._fail(f"tensor {name!r} ends past the end of the file")
            entries[name] = (dtype, shape, data_start + begin, end - begin)
        return entries, metadata

    def keys(self) -> list[str]:
        return list(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name][1]

    def dtype(self, name: str) -> np.dtype:
        return self._entries[name][0]

    def read(self, name: str, out: np.ndarray | None = None) -> np.ndarray:
        """The tensor's values; read straight into `out` (C-contiguous, same dtype and size) when given."""
        dtype, shape, offset, nbytes = self._entries[name]
        if out is None:
            out = np.empty(shape, dtype)
        elif out.dtype != dtype or out.size != int(np.prod(shape)) or not out.flags.c_contiguous:
            raise ValueError(f"buffer {out.dtype} {out.shape} cannot hold tensor {name!r} ({dtype} {list(shape)})")
        view = memoryview(out.reshape(-1).view(np.uint8))
        done = 0
        while done < nbytes:
            n = os.preadv(self._fd, [view[done:]], offset + done)
            if n <= 0:
                raise self._fail(f"tensor {name!r} ends early (the file was truncated while reading)")
            done += n
        return out.reshape(shape)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _validate_with_library(path: str) -> None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="numpy"):
            pass
    except SafetensorError as err:
        hint = ""
        if "not fully covered" in str(err) or "too small" in str(err) or "too large" in str(err):
            hint = " (the file is truncated, was cut or padded, or is not a safetensors file)"
        raise SafetensorsError(f"{path} is not a valid safetensors file: {err}{hint}") from None
    except OSError as err:
        raise SafetensorsError(f"{path} could not be read: {err.strerror or err}") from None


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The `__metadata__` of a safetensors file (validated like any read)."""
    with SafetensorsFile(path) as f:
        return dict(f.metadata)


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
            array = np.asarray(produce(), dtype=dtype, order="C")  # ascontiguousarray makes 0-d arrays 1-d
            if array.shape != tuple(shape):
                raise ValueError(f"tensor {name!r} has shape {array.shape}, declared {tuple(shape)}")
            f.write(array.reshape(-1).view(np.uint8).data)
        f.flush()
        os.fsync(f.fileno())
