"""Image files -> model-ready batches, decoded and preprocessed on background threads while the model runs.

`ImageStream(paths, processor, batch_size=...)` yields `Batch(paths, pixels, n)` in the order of `paths`: JPEG
decoding and resizing run in a grain pipeline (`num_threads` workers, `prefetch` images ahead), so the device
is not idle waiting for Pillow. A file that cannot be read as an image (corrupt, truncated, not an image, 16-bit)
is skipped: one warning line names it and the reason, it is listed in `stream.skipped`, and the stream goes
on. When no file at all is readable the stream raises one ValueError naming them (and prints no warnings, so a
command line that names only a bad file gets one error line, not a warning and an error).

Every batch has the same leading size (the last is padded by repeating its last image) so one compiled program
serves all; `n` says how many rows are real.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from .preprocess import ImageProcessorConfig, ImageReadError, preprocess


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A file left out of a stream and why."""

    path: Path
    reason: str


@dataclasses.dataclass(frozen=True)
class Batch:
    """`pixels [batch, h, w, C]` float32; rows past `n` are padding; `paths` are the `n` real rows' files."""

    paths: list[Path]
    pixels: np.ndarray
    n: int


class _Decode:
    """Picklable grain transform: path -> (path, pixels) or (path, error text); never raises for a bad file."""

    def __init__(self, config: ImageProcessorConfig):
        self.config = config

    def __call__(self, path: str) -> tuple[str, np.ndarray | str]:
        try:
            return path, preprocess(path, self.config)
        except Exception as err:  # Pillow raises SyntaxError, EOFError, struct.error ... on broken files
            return path, _reason(err)


def _reason(err: Exception) -> str:
    """One line: Pillow's own message for an unreadable file, else the exception's type and message."""
    if isinstance(err, ImageReadError):
        err = err.__cause__ or err
        text = str(err)
    else:
        text = f"{type(err).__name__}: {err}"
    return text.splitlines()[0] if text.strip() else type(err).__name__


def print_warning(line: str) -> None:
    print(f"jimm: warning: {line}", file=sys.stderr, flush=True)


class ImageStream:
    """Batches of preprocessed images from files, in order, bad files skipped and named (module docstring)."""

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        processor: ImageProcessorConfig,
        *,
        batch_size: int = 32,
        num_threads: int = 4,
        prefetch: int | None = None,
        progress: bool = False,
        desc: str = "images",
        warn: Callable[[str], None] = print_warning,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise ValueError("no image files given")
        self.processor = processor
        self.batch_size = min(batch_size, len(self.paths))
        self.num_threads = num_threads
        self.prefetch = prefetch if prefetch is not None else 2 * self.batch_size
        self.progress, self.desc, self.warn = progress, desc, warn
        self.skipped: list[Skipped] = []
        self.count = 0  # images yielded so far

    def _decoded(self) -> Iterator[tuple[str, np.ndarray | str]]:
        import grain

        ds = grain.MapDataset.source([os.fspath(p) for p in self.paths]).map(_Decode(self.processor))
        options = grain.ReadOptions(num_threads=self.num_threads, prefetch_buffer_size=self.prefetch)
        return iter(ds.to_iter_dataset(options))

    def _skip(self, path: str, reason: str) -> None:
        self.skipped.append(Skipped(Path(path), reason))
        if self.count:  # before the first good image, warnings wait: all-bad input is one error instead
            self.warn(f"skipped {path}: {reason}")

    def _batch(self, paths: list[Path], rows: list[np.ndarray]) -> Batch:
        shapes = sorted({r.shape for r in rows})
        if len(shapes) > 1:
            raise ValueError(
                f"images came out at different sizes {shapes}: the model's processor keeps each aspect ratio; "
                "give it a center crop (crop_size) or a (height, width) size to batch them"
            )
        n = len(rows)
        rows = rows + [rows[-1]] * (self.batch_size - n)
        return Batch(paths, np.stack(rows), n)

    def __iter__(self) -> Iterator[Batch]:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(self.paths), unit="img", desc=self.desc, dynamic_ncols=True, disable=not self.progress)
        paths: list[Path] = []
        rows: list[np.ndarray] = []
        try:
            for path, out in self._decoded():
                bar.update(1)
                if isinstance(out, str):
                    self._skip(path, out)
                    continue
                if not self.count and self.skipped:  # the first good image: the held warnings go out now
                    for s in self.skipped:
                        self.warn(f"skipped {s.path}: {s.reason}")
                self.count += 1
                paths.append(Path(path))
                rows.append(out)
                if len(rows) == self.batch_size:
                    yield self._batch(paths, rows)
                    paths, rows = [], []
            if rows:
                yield self._batch(paths, rows)
        finally:
            bar.close()
        if not self.count:
            raise ValueError(
                f"none of the {len(self.paths)} file(s) could be read as an image: {self.describe_skipped()}"
            )

    def describe_skipped(self, limit: int = 10) -> str:
        """`a.jpg (reason); b.txt (reason)`, at most `limit` of them then a count."""
        shown = "; ".join(f"{s.path} ({s.reason})" for s in self.skipped[:limit])
        more = len(self.skipped) - limit
        return shown + (f"; and {more} more" if more > 0 else "")

    def summary(self) -> str:
        """The closing line: how many images were read and how many files were skipped."""
        skipped = f"; skipped {len(self.skipped)} unreadable file(s) (named above)" if self.skipped else ""
        return f"read {self.count} image(s){skipped}"


__all__ = ["Batch", "ImageStream", "Skipped", "print_warning"]
