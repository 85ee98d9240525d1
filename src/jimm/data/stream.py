"""Image files -> model-ready batches, decoded and preprocessed on background threads while the model runs.

`ImageStream(paths, processor, batch_size=...)` yields `Batch(paths, pixels, n)` in the order of `paths`: JPEG
decoding and resizing run in a grain pipeline (`num_threads` workers, `prefetch` images ahead), so the device
is not idle waiting for Pillow. The processor decides what a row and a batch are (`processor_for`): a fixed-size
`ImageProcessorConfig` decodes each file to `[h, w, C]` pixels stacked NHWC; SigLIP 2's `NaFlexProcessorConfig`
decodes each to its own patch grid within `max_num_patches` and pads the batch into `NaFlexInputs` of
`max_num_patches` slots. `num_threads=0` decodes in the calling thread (no grain needed: the Python API's
`zero_shot` and `embed_images` run so on in-memory images too).

A file that cannot be read as an image (corrupt, truncated, not an image, 16-bit) is skipped: one warning line
names it and the reason, it is listed in `stream.skipped`, and the stream goes on. When no file at all is
readable the stream raises one ValueError naming them (and prints no warnings, so a command line that names only
a bad file gets one error line, not a warning and an error).

Every batch has the same leading size (the last is padded by repeating its last image) so one compiled program
serves all; `n` says how many rows are real.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .preprocess import ImageReadError


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A file left out of a stream and why."""

    path: Path
    reason: str


@dataclasses.dataclass(frozen=True)
class Batch:
    """The model input for `batch` images (`pixels [batch, h, w, C]` float32, or `NaFlexInputs`); rows past `n` are
    padding; `paths` are the `n` real rows' files (or the images themselves when the stream was given images)."""

    paths: list
    pixels: Any
    n: int


class _Decode:
    """Grain transform: index -> (index, the processor's row) or (index, error text). Never raises for a bad file
    unless `strict` (the Python API's behaviour: the file's own error)."""

    def __init__(self, processor, items: Sequence, strict: bool = False):
        self.processor, self.items, self.strict = processor, items, strict

    def __call__(self, index: int) -> tuple[int, Any]:
        try:
            return index, self.processor.decode(self.items[index])
        except Exception as err:  # Pillow raises SyntaxError, EOFError, struct.error ... on broken files
            if self.strict:
                raise
            return index, _reason(err)


def _reason(err: Exception) -> str:
    """One line: Pillow's own message for an unreadable file, else the exception's type and message."""
    if isinstance(err, ImageReadError):
        err = err.__cause__ or err
        text = str(err)
    else:
        text = f"{type(err).__name__}: {err}"
    return text.splitlines()[0] if text.strip() else type(err).__name__


def processor_for(model, *, max_num_patches: int | None = None):
    """The model's own processor: `NaFlexProcessorConfig` (at `max_num_patches` when given) for a SigLIP 2 NaFlex
    model, else its fixed-size `ImageProcessorConfig`; a clear error for `max_num_patches` on a fixed-size model."""
    from .naflex import NaFlexProcessorConfig
    from .preprocess import ImageProcessorConfig

    if getattr(model, "NAFLEX", False):
        return NaFlexProcessorConfig.for_model(model, max_num_patches=max_num_patches)
    if max_num_patches is not None:
        raise ValueError(
            f"max_num_patches (--max-num-patches) is for SigLIP 2 NaFlex models; {type(model).__name__} resizes "
            "every image to its processor's size, so leave it out"
        )
    return ImageProcessorConfig.for_model(model)


def print_warning(line: str) -> None:
    print(f"jimm: warning: {line}", file=sys.stderr, flush=True)


class ImageStream:
    """Batches of preprocessed images from files, in order, bad files skipped and named (module docstring).

    `processor` has `decode(image) -> row` and `collate(rows) -> model input` (`ImageProcessorConfig`,
    `NaFlexProcessorConfig`). `paths` may also hold PIL images or uint8 HWC arrays. `strict=True` raises a bad
    file's own error instead of skipping it.
    """

    def __init__(
        self,
        paths: Sequence,
        processor,
        *,
        batch_size: int = 32,
        num_threads: int = 4,
        prefetch: int | None = None,
        progress: bool = False,
        desc: str = "images",
        warn: Callable[[str], None] = print_warning,
        strict: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.items = list(paths)
        self.paths = [Path(p) if isinstance(p, str | os.PathLike) else p for p in self.items]
        if not self.paths:
            raise ValueError("no image files given")
        self.processor = processor
        self.batch_size = min(batch_size, len(self.paths))
        self.num_threads = num_threads
        self.prefetch = prefetch if prefetch is not None else 2 * self.batch_size
        self.progress, self.desc, self.warn, self.strict = progress, desc, warn, strict
        self.skipped: list[Skipped] = []
        self.count = 0  # images yielded so far

    def _decoded(self) -> Iterator[tuple[int, Any]]:
        items = [os.fspath(p) if isinstance(p, Path) else p for p in self.paths]
        decode = _Decode(self.processor, items, self.strict)
        if self.num_threads == 0:
            return map(decode, range(len(items)))
        import grain

        ds = grain.MapDataset.source(range(len(items))).map(decode)
        options = grain.ReadOptions(num_threads=self.num_threads, prefetch_buffer_size=self.prefetch)
        return iter(ds.to_iter_dataset(options))

    def _skip(self, path: Path, reason: str) -> None:
        self.skipped.append(Skipped(path, reason))
        if self.count:  # before the first good image, warnings wait: all-bad input is one error instead
            self.warn(f"skipped {path}: {reason}")

    def _batch(self, paths: list, rows: list) -> Batch:
        """The processor's batch of `rows`, the last row repeated up to `batch_size` (one compiled shape)."""
        n = len(rows)
        return Batch(paths, self.processor.collate(rows + [rows[-1]] * (self.batch_size - n)), n)

    def __iter__(self) -> Iterator[Batch]:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(self.paths), unit="img", desc=self.desc, dynamic_ncols=True, disable=not self.progress)
        paths: list = []
        rows: list = []
        try:
            for index, out in self._decoded():
                bar.update(1)
                path = self.paths[index]
                if isinstance(out, str):
                    self._skip(path, out)
                    continue
                if not self.count and self.skipped:  # the first good image: the held warnings go out now
                    for s in self.skipped:
                        self.warn(f"skipped {s.path}: {s.reason}")
                self.count += 1
                paths.append(path)
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


__all__ = ["Batch", "ImageStream", "Skipped", "print_warning", "processor_for"]
