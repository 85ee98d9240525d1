"""The image files a command line names: files, folders (walked recursively) and glob patterns, in a stable order.

Each argument expands in place, in the order given: a file is itself; a folder is every file under it, sorted by
its path relative to the folder (hidden files and folders, `.name`, are left out, as `ls` does); a glob pattern
(`*`, `?`, `[`, `**` recursive) is the files it matches, sorted (glob's own rule: `*` skips hidden names). A file
reached twice is listed once, where it first appeared. Nothing is decoded here: a file that is not an image is
found out, named and counted when it is read (`jimm.data.stream`), so none is dropped silently.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

_GLOB_CHARS = frozenset("*?[")


def _walk(folder: Path) -> list[Path]:
    """Every non-hidden file under `folder`, sorted by relative path (so `a/b.jpg` sits before `a/c/d.jpg`)."""
    files = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        files += [Path(dirpath, name) for name in filenames if not name.startswith(".")]
    return sorted(files, key=lambda p: p.relative_to(folder).parts)


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """The files named by `inputs` (files, folders, glob patterns), each once, in the order the module describes.

    Raises ValueError naming every argument that is neither an existing path nor a pattern that matches a file,
    and when the inputs hold no file at all.
    """
    seen: set[Path] = set()
    files: list[Path] = []
    missing: list[str] = []
    empty: list[str] = []
    for arg in inputs:
        text = os.fspath(arg)
        path = Path(text)
        if path.is_dir():
            found = _walk(path)
        elif path.exists():
            found = [path]
        elif _GLOB_CHARS & set(text):
            found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        else:
            missing.append(text)
            continue
        if not found:
            empty.append(text)
        for file in found:
            if file.resolve() not in seen:
                seen.add(file.resolve())
                files.append(file)
    if missing:
        raise ValueError(f"no such file or folder: {', '.join(missing)}; check the path (or quote a glob pattern)")
    if not files:
        raise ValueError(f"no files in {', '.join(empty)}; give image files, folders of images or glob patterns")
    return files


__all__ = ["expand_inputs"]
