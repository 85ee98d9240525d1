"""Run records: `metrics.jsonl` (one JSON object per log or evaluation) and a PNG plot of the curves.

Both are replaced atomically (write to a temporary file, then rename). On resume, rows past the restored
step are dropped, so a killed run's log matches an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def _naming(path: Path):
    """OS errors (a full disk) name the file being written."""
    try:
        yield
    except OSError as err:
        if err.filename is not None or err.errno is None:
            raise
        raise OSError(err.errno, err.strerror, os.fspath(path)) from err


def _atomic_write(path: Path, write) -> None:
    with _naming(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class MetricsLog:
    """Append-only JSON lines; `truncate(step)` keeps rows with `step <= step`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        if self.path.exists():
            for line in self.path.read_bytes().splitlines():
                try:
                    row = json.loads(line)
                except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                    row = None
                if not (isinstance(row, dict) and isinstance(row.get("step"), int)):
                    break  # a line cut by a kill (or not ours): drop it and everything after
                self.rows.append(row)

    def truncate(self, step: int) -> None:
        self.rows = [r for r in self.rows if r.get("step", 0) <= step]
        data = "".join(json.dumps(r) + "\n" for r in self.rows).encode()
        _atomic_write(self.path, lambda f: f.write(data))

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        with _naming(self.path), open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def plot(rows: list[dict[str, Any]], path: str | os.PathLike, *, title: str = "") -> None:
    """Loss and accuracy against step, train and validation, as a PNG (matplotlib's Agg backend)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    axes = fig.subplots(1, 2)
    for split, style in (("train", "-"), ("validation", "o-")):
        points = [r for r in rows if r.get("split") == split]
        steps = [r["step"] for r in points]
        for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
            if points:
                ax.plot(steps, [r[key] for r in points], style, label=split, markersize=4)
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_yscale("log")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    _atomic_write(path, lambda f: fig.savefig(f, format="png"))
