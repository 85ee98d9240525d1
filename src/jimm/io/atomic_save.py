"""Model folders jimm writes: saves that are atomic as a whole, and reading a folder as exactly one save.

A save (`FolderSave`) writes every new file into a staging folder inside the target, then commits with ONE
rename: the manifest `.jimm-save.json`, which names the save's files with a fingerprint each (the save id in
a safetensors header, a sha256 for other files). Only then are the files moved into place and the previous
save's leftovers removed. A crash before the commit leaves the old save untouched; a crash after it leaves a
committed manifest whose files are partly moved. Readers (`saved_files`) take each file the manifest names
from the target if its fingerprint matches, else from the staging folder, so a jimm load after a crash at
any point sees exactly the old save or exactly the new one, and refuses a folder whose files belong to
different saves. The next save first finishes (rolls forward) a committed save and deletes dead staging
folders of crashed ones.

Only files a previous jimm save recorded in its manifest are ever replaced or deleted. A file of the same
name that jimm did not write (an HF save, the user's own) is a `FolderConflictError` unless
`overwrite=True`; every other file in the folder is left alone.

Concurrent saves to one folder are serialised with an advisory lock on the folder (POSIX `flock`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

MANIFEST = ".jimm-save.json"
STAGING_PREFIX = ".jimm-staging-"
_FORMAT = "jimm-save/1"


class FolderConflictError(FileExistsError):
    """The target folder holds files of the same names that jimm did not write."""


class MixedFolderError(ValueError):
    """A folder's files do not belong to the one save its manifest records."""


def fingerprint(path: Path, save_id: str | None = None) -> dict[str, object]:
    """What identifies a saved file: size plus the save id for safetensors, or the sha256 of the bytes."""
    size = path.stat().st_size
    if path.suffix == ".safetensors" and save_id is not None:
        return {"size": size, "save_id": save_id}
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"size": size, "sha256": digest.hexdigest()}


def _matches(path: Path, expected: dict) -> bool:
    try:
        if not path.is_file() or path.stat().st_size != expected.get("size"):
            return False
        if "save_id" in expected:
            from .safetensors import SAVE_ID_KEY, read_metadata

            return read_metadata(path).get(SAVE_ID_KEY) == expected["save_id"]
        return fingerprint(path) == expected
    except (OSError, ValueError):
        return False


def read_manifest(folder: Path) -> dict | None:
    """The folder's committed manifest, or None when jimm never saved there."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("format") != _FORMAT or not isinstance(manifest.get("files"), dict):
            raise ValueError("not a jimm save manifest")
        return manifest
    except (ValueError, AttributeError, UnicodeDecodeError) as err:
        raise MixedFolderError(
            f"{path} is corrupt ({err}); it records which files of {folder} belong to jimm's last save. "
            "Delete it if you replaced the files on purpose."
        ) from None


def saved_files(folder: str | os.PathLike) -> dict[str, Path] | None:
    """`{file name: path}` of the save a folder's manifest records (None for a folder jimm did not save).

    A file is taken from the folder when it is the recorded one, else from the staging folder of a committed
    but unfinished save; anything else means the folder mixes saves, an error naming the file.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    staging = folder / str(manifest.get("staging", ""))
    out = {}
    for name, expected in manifest["files"].items():
        for candidate in (folder / name, staging / name):
            if _matches(candidate, expected):
                out[name] = candidate
                break
        else:
            raise MixedFolderError(
                f"{folder}: {name} is not the file jimm's last save wrote there (recorded in {MANIFEST}); the "
                "folder mixes files of different saves. Save the model again, or delete "
                f"{MANIFEST} if you replaced {name} on purpose."
            )
    return out


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems cannot fsync a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _finish(folder: Path, manifest: dict) -> None:
    """Move a committed save's files into place and delete what it replaces; safe to repeat after a crash."""
    staging = folder / manifest["staging"]
    for name in manifest["files"]:
        if (staging / name).is_file():
            os.replace(staging / name, folder / name)
    for name in manifest.get("replaces", []):
        if (folder / name).is_file():
            os.unlink(folder / name)
    if staging.is_dir():
        os.rmdir(staging)
    _fsync_dir(folder)


def recover(folder: Path) -> None:
    """Finish a committed save and delete the staging folders of crashed ones (call with the lock held)."""
    manifest = read_manifest(folder)
    if manifest is not None and (folder / str(manifest.get("staging", ""))).is_dir():
        _finish(folder, manifest)
    for leftover in folder.glob(STAGING_PREFIX + "*"):
        if leftover.is_dir():
            shutil.rmtree(leftover)


@contextlib.contextmanager
def _locked(folder: Path):
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no locking
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class FolderSave:
    """Write a complete set of files into `target` atomically; a context manager.

        with FolderSave(target, ["config.json", "model.safetensors"]) as save:
            write(save.path("model.safetensors"))   # into the staging folder
            ...
            save.commit()

    `names` are all the files this save writes (known before writing). Leaving the block without `commit()`
    (an error) removes the staging folder and, if the save created `target`, the empty folder too.
    """

    def __init__(self, target: str | os.PathLike, names: Iterable[str], *, overwrite: bool = False):
        self.target = Path(target)
        self.names = list(dict.fromkeys(names))
        self.overwrite = overwrite
        self.save_id = uuid.uuid4().hex
        self.staging = self.target / f"{STAGING_PREFIX}{self.save_id}"
        self._created_target = False
        self._committed = False
        self._lock = None

    def __enter__(self) -> FolderSave:
        if self.target.exists() and not self.target.is_dir():
            raise NotADirectoryError(f"{self.target} is a file; a folder is needed there, choose another path")
        if not self.target.exists():
            self.target.mkdir(parents=True)
            self._created_target = True
        self._lock = _locked(self.target)
        self._lock.__enter__()
        try:
            recover(self.target)
            manifest = read_manifest(self.target)
            previous = set(manifest["files"]) if manifest else set()
            conflicts = sorted(n for n in self.names if (self.target / n).exists() and n not in previous)
            if conflicts and not self.overwrite:
                raise FolderConflictError(
                    f"{self.target} already holds {', '.join(conflicts)}, which jimm did not write; "
                    "pass overwrite=True (`--overwrite` on the command line) to replace them, or save to a new folder"
                )
            self.replaces = sorted(previous - set(self.names))
            os.mkdir(self.staging)
        except BaseException:
            self._release(failed=True)
            raise
        return self

    def path(self, name: str) -> Path:
        """Where to write the file `name` (inside the staging folder)."""
        if name not in self.names:
            raise ValueError(f"internal error: {name!r} is not one of this save's files {self.names}")
        return self.staging / name

    def commit(self) -> None:
        """Commit the save with one rename, then move the files into place."""
        missing = [n for n in self.names if not (self.staging / n).is_file()]
        if missing:
            raise RuntimeError(f"internal error: the save did not write {missing}")
        manifest = {
            "format": _FORMAT,
            "id": self.save_id,
            "staging": self.staging.name,
            "files": {n: fingerprint(self.staging / n, self.save_id) for n in self.names},
            "replaces": self.replaces,
        }
        pending = self.staging / MANIFEST
        with open(pending, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(self.staging)
        os.replace(pending, self.target / MANIFEST)  # the commit point
        self._committed = True
        _fsync_dir(self.target)
        _finish(self.target, manifest)

    def __exit__(self, exc_type, exc, tb) -> None:
        # A crash (the process killed) runs none of this; what it leaves is cleaned by the next save.
        cleanup = exc_type is not None and issubclass(exc_type, Exception | KeyboardInterrupt)
        self._release(failed=cleanup and not self._committed)
        if cleanup and isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise OSError(
                errno.ENOSPC,
                f"no space left on the device while saving to {self.target}: a save writes a complete new copy "
                "next to the current files before it replaces them, so it needs room for both; free space or "
                "save to another disk",
            ) from exc

    def _release(self, *, failed: bool) -> None:
        if failed:
            shutil.rmtree(self.staging, ignore_errors=True)
            if self._created_target:
                with contextlib.suppress(OSError):
                    self.target.rmdir()  # only if empty
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None


__all__ = ["MANIFEST", "FolderConflictError", "FolderSave", "MixedFolderError", "read_manifest", "saved_files"]
