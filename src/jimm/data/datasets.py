"""Labelled image datasets: the built-in `digits` and an image-folder layout, split into train/validation/test.

A dataset split is a random-access sequence of `(uint8 RGB image [h, w, 3], label id)` with its class names;
preprocessing and augmentation happen in the loader (`jimm.data.loader`), so the same split feeds training,
evaluation and prediction identically.

Image folders: `root/<class>/<image>` (split into train/validation with a seeded stratified draw), or
`root/{train,validation|val,test}/<class>/<image>` (splits as given). Hidden files (names starting with `.`)
are ignored. Any other file that Pillow cannot open is skipped with one warning naming every such file;
a class folder left with no images is an error. A file whose header reads but whose data is corrupt fails
later with an error naming it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

from .preprocess import load_image

logger = logging.getLogger(__name__)

SPLIT_DIRS = {"train": ("train",), "validation": ("validation", "val", "valid"), "test": ("test",)}
DIGITS_SPLIT_SEED = 0  # fixed: the digits test split never depends on the training seed


class DatasetError(ValueError):
    """A dataset folder or name is unusable; the message names the problem and the fix."""


@dataclasses.dataclass(frozen=True)
class ArraySplit:
    """Images held in memory: `images [N, h, w, 3] uint8`, `labels [N] int`."""

    images: np.ndarray
    label_ids: np.ndarray
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.label_ids)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.images[i], int(self.label_ids[i])


@dataclasses.dataclass(frozen=True)
class FileSplit:
    """Image files decoded on access."""

    paths: tuple[Path, ...]
    label_ids: np.ndarray
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return load_image(self.paths[i]), int(self.label_ids[i])


Split = ArraySplit | FileSplit


def _stratified(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices `(rest, held_out)`: `fraction` of each class held out (at least one when a class has 2+)."""
    rng = np.random.default_rng(seed)
    rest, held = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = round(fraction * len(idx))
        n = min(max(n, 1 if len(idx) > 1 and fraction > 0 else 0), len(idx) - 1)
        held.extend(idx[:n])
        rest.extend(idx[n:])
    return np.sort(np.asarray(rest, dtype=np.int64)), np.sort(np.asarray(held, dtype=np.int64))


def digits(*, test_fraction: float = 0.2, val_fraction: float = 0.1) -> dict[str, ArraySplit]:
    """scikit-learn's bundled 8x8 digits (1,797 images, offline) as uint8 RGB, split train/validation/test.

    The split is stratified with a fixed seed, so `test` is the same held-out set in every run. Images stay
    8x8; the preprocessor upsamples them to the model's size.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    gray = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # pixel values are 0..16
    images = np.repeat(gray[..., None], 3, axis=-1)
    targets = bunch.target.astype(np.int64)
    names = tuple(str(i) for i in range(10))
    rest, test = _stratified(targets, test_fraction, DIGITS_SPLIT_SEED)
    train_rel, val_rel = _stratified(targets[rest], val_fraction / (1 - test_fraction), DIGITS_SPLIT_SEED + 1)
    train, val = rest[train_rel], rest[val_rel]
    return {
        name: ArraySplit(images[idx], targets[idx], names)
        for name, idx in (("train", train), ("validation", val), ("test", test))
    }


def _scan_classes(root: Path) -> tuple[list[str], list[list[Path]]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(f"{root} has no class folders; expected the layout {root}/<class>/<image>")
    files, unreadable = [], []
    for name in classes:
        found = []
        for path in sorted((root / name).rglob("*")):
            if not path.is_file() or any(part.startswith(".") for part in path.relative_to(root).parts):
                continue
            try:
                with Image.open(path):
                    pass
                found.append(path)
            except (OSError, Image.DecompressionBombError, ValueError):
                unreadable.append(path)
        files.append(found)
    if unreadable:
        shown = ", ".join(str(p) for p in unreadable[:20]) + (" ..." if len(unreadable) > 20 else "")
        logger.warning("skipping %d file(s) that are not readable images: %s", len(unreadable), shown)
    empty = [name for name, found in zip(classes, files, strict=True) if not found]
    if empty:
        raise DatasetError(
            f"class folder(s) with no readable images in {root}: {', '.join(empty)}; add images or remove the folder"
        )
    return classes, files


def _split_dir(root: Path, split: str) -> Path | None:
    for name in SPLIT_DIRS[split]:
        if (root / name).is_dir():
            return root / name
    return None


def image_folder(root: str | os.PathLike, *, val_fraction: float = 0.1, seed: int = 0) -> dict[str, FileSplit]:
    """Splits of an image-folder dataset (see the module docstring for the layout and bad-file policy)."""
    root = Path(os.path.expanduser(os.fspath(root)))
    if root.exists() and not root.is_dir():
        raise DatasetError(
            f"dataset path {root} is a file; pass a folder of class folders (ROOT/<class>/<image>), "
            "or digits for the built-in dataset"
        )
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist (use --data digits for the built-in dataset)")
    if _split_dir(root, "train") is not None:
        scanned = {s: _scan_classes(d) for s in SPLIT_DIRS if (d := _split_dir(root, s)) is not None}
        classes = scanned["train"][0]
        for s, (names, _) in scanned.items():
            if names != classes:
                raise DatasetError(f"{root}: split {s!r} has classes {names}, but train has {classes}")
        out = {}
        for s, (_, files) in scanned.items():
            paths = [p for found in files for p in found]
            ids = np.asarray([c for c, found in enumerate(files) for _ in found], dtype=np.int64)
            out[s] = FileSplit(tuple(paths), ids, tuple(classes))
        return out
    if not 0.0 <= val_fraction < 1.0:
        raise DatasetError(f"validation fraction must be in [0, 1), got {val_fraction}")
    classes, files = _scan_classes(root)
    paths = np.asarray([p for found in files for p in found], dtype=object)
    ids = np.asarray([c for c, found in enumerate(files) for _ in found], dtype=np.int64)
    train, val = _stratified(ids, val_fraction, seed)
    out = {"train": FileSplit(tuple(paths[train]), ids[train], tuple(classes))}
    if len(val):
        out["validation"] = FileSplit(tuple(paths[val]), ids[val], tuple(classes))
    return out


def load_dataset(spec: str | os.PathLike, *, val_fraction: float = 0.1, seed: int = 0) -> dict[str, Split]:
    """`"digits"` or a folder path -> `{split name: split}`."""
    if os.fspath(spec) == "digits":
        return digits()
    return image_folder(spec, val_fraction=val_fraction, seed=seed)


def pick_split(splits: dict[str, Split], name: str) -> Split:
    if name not in splits:
        raise DatasetError(f"dataset has no {name!r} split; it has {sorted(splits)}")
    return splits[name]
