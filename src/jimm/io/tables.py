"""Result files the commands write, picked by the output's suffix, each written atomically (a temporary file in
the same folder, renamed into place only when complete, so an interrupted run leaves no half table).

- Tables of per-image rows (`jimm predict`, `jimm zero-shot`): `.csv`, `.jsonl` (one JSON object a line) or
  `.parquet` (needs pyarrow: `pip install 'jimm[parquet]'`). Rows are flat dicts with the same keys.
- Embeddings (`jimm embed`): `.npy` (`[N, P]` float32) with `NAME.files.txt` beside it, line i naming row i's
  file; or `.parquet` with a `file` column and an `embedding` list column.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

TABLE_SUFFIXES = (".csv", ".jsonl", ".parquet")
EMBEDDING_SUFFIXES = (".npy", ".parquet")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """An open temporary file that replaces `path` when the block ends without an error (else it is deleted)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if path.parent.parts else ".")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ModuleNotFoundError as err:
        raise ImportError("Parquet output needs pyarrow: pip install 'jimm[parquet]' (or write .csv / .jsonl)") from err
    return pyarrow


def check_suffix(path: str | os.PathLike, suffixes: Sequence[str], what: str) -> str:
    """The output's suffix, or a ValueError naming the accepted ones (raised before any work is done)."""
    suffix = Path(path).suffix.lower()
    if suffix not in suffixes:
        raise ValueError(f"cannot tell the format of {what} {os.fspath(path)!r}: name it {' / '.join(suffixes)}")
    if suffix == ".parquet":
        _pyarrow()
    parent = Path(path).parent
    if parent.parts and not parent.is_dir():
        raise ValueError(f"the folder of {os.fspath(path)} does not exist; create it first")
    return suffix


def write_table(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> None:
    """Rows (flat dicts with the same keys) to `.csv`, `.jsonl` or `.parquet`, by the suffix."""
    suffix = check_suffix(path, TABLE_SUFFIXES, "the output table")
    if suffix == ".parquet":
        pa = _pyarrow()
        table = pa.Table.from_pylist(list(rows))
        with atomic_file(path) as f:
            pa.parquet.write_table(table, f)
        return
    with atomic_file(path, "w") as f:
        if suffix == ".jsonl":
            for row in rows:
                f.write(json.dumps(row) + "\n")
        elif rows:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def read_table(path: str | os.PathLike) -> list[dict[str, Any]]:
    """What `write_table` wrote, as rows (CSV values come back as strings)."""
    suffix = check_suffix(path, TABLE_SUFFIXES, "the table")
    if suffix == ".parquet":
        return _pyarrow().parquet.read_table(path).to_pylist()
    text = Path(path).read_text(encoding="utf-8")
    if suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line]
    return list(csv.DictReader(io.StringIO(text, newline="")))


def file_list_path(npy_path: str | os.PathLike) -> Path:
    """`emb.npy` -> `emb.files.txt`: the file list written beside an embeddings array."""
    path = Path(npy_path)
    return path.with_name(path.stem + ".files.txt")


def write_embeddings(path: str | os.PathLike, files: Sequence[str], embeddings: np.ndarray) -> list[Path]:
    """`[N, P]` embeddings with the file (or prompt) of each row; returns the paths written."""
    if len(files) != len(embeddings):
        raise ValueError(f"{len(files)} names for {len(embeddings)} embeddings")
    if any("\n" in name for name in files):
        raise ValueError("a file name holds a newline; it cannot go in a one-name-a-line list (write .parquet)")
    suffix = check_suffix(path, EMBEDDING_SUFFIXES, "the embeddings file")
    embeddings = np.asarray(embeddings, np.float32)
    if suffix == ".parquet":
        pa = _pyarrow()
        column = pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1)), embeddings.shape[1])
        with atomic_file(path) as f:
            pa.parquet.write_table(pa.table({"file": list(files), "embedding": column}), f)
        return [Path(path)]
    listing = file_list_path(path)
    with atomic_file(listing, "w") as f:
        f.writelines(f"{name}\n" for name in files)
    with atomic_file(path) as f:
        np.save(f, embeddings)
    return [Path(path), listing]


def read_embeddings(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """`(names, [N, P] float32)` from what `write_embeddings` wrote."""
    suffix = check_suffix(path, EMBEDDING_SUFFIXES, "the embeddings file")
    if suffix == ".parquet":
        table = _pyarrow().parquet.read_table(path)
        return table.column("file").to_pylist(), np.asarray(table.column("embedding").to_pylist(), np.float32)
    names = file_list_path(path).read_text(encoding="utf-8").splitlines()
    return names, np.load(path)


__all__ = [
    "EMBEDDING_SUFFIXES",
    "TABLE_SUFFIXES",
    "atomic_file",
    "check_suffix",
    "file_list_path",
    "read_embeddings",
    "read_table",
    "write_embeddings",
    "write_table",
]
