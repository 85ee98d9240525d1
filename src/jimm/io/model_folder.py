"""Write an HF-format model folder: safetensors weights (sharded past a size), JSON files and copied files,
committed as one atomic save (`jimm.io.atomic_save.FolderSave`). No model knowledge: families pass their tensors.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from .atomic_save import FolderSave
from .resolve import SAFETENSORS, SAFETENSORS_INDEX
from .safetensors import SAVE_ID_KEY, write_safetensors

Tensor = tuple[str, tuple[int, ...], np.dtype, Callable[[], np.ndarray]]
_SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(size: int | str) -> int:
    """Bytes from an int or a string like '5GB' / '500MiB' (the forms transformers accepts)."""
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?I?B)\s*", str(size).upper())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"max_shard_size must be a positive byte count or like '5GB' / '500MiB', got {size!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def nbytes(tensor: Tensor) -> int:
    return int(np.prod(tensor[1], dtype=np.int64)) * np.dtype(tensor[2]).itemsize


def plan_shards(tensors: Sequence[Tensor], limit: int) -> list[tuple[str, list[Tensor]]]:
    """`[(file name, tensors)]`: one `model.safetensors`, or `model-0000k-of-0000n.safetensors` shards."""
    shards: list[list[Tensor]] = [[]]
    size = 0
    for tensor in tensors:
        if shards[-1] and size + nbytes(tensor) > limit:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += nbytes(tensor)
    if len(shards) == 1:
        return [(SAFETENSORS, shards[0])]
    return [(f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors", shard) for i, shard in enumerate(shards)]


def write_json(path: Path, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def save_model_folder(
    directory: str | os.PathLike,
    tensors: Sequence[Tensor],
    *,
    json_files: dict[str, Any],
    other_files: dict[str, str | bytes | Path] | None = None,
    max_shard_size: int | str = "5GB",
    overwrite: bool = False,
) -> None:
    """Write weights, `json_files` (name -> JSON data) and `other_files` (name -> text, bytes or a file to copy).

    On a multi-process run only process 0 writes; every process gathers the tensors (a collective), in order.
    """
    shards = plan_shards(tensors, parse_size(max_shard_size))
    if jax.process_index() != 0:
        for *_, produce in tensors:
            produce()
        return
    other_files = other_files or {}
    names = [name for name, _ in shards] + ([SAFETENSORS_INDEX] if len(shards) > 1 else [])
    names += [*other_files, *json_files]  # config.json last in the manifest too
    with FolderSave(directory, names, overwrite=overwrite) as save:
        metadata = {"format": "pt", SAVE_ID_KEY: save.save_id}
        for name, shard in shards:
            write_safetensors(save.path(name), shard, metadata=metadata)
        if len(shards) > 1:
            weight_map = {tensor[0]: name for name, shard in shards for tensor in shard}
            total = sum(nbytes(t) for t in tensors)
            write_json(save.path(SAFETENSORS_INDEX), {"metadata": {"total_size": total}, "weight_map": weight_map})
        for name, content in other_files.items():
            if isinstance(content, Path):
                shutil.copyfile(content, save.path(name))
            else:
                mode, encoding = ("wb", None) if isinstance(content, bytes) else ("w", "utf-8")
                with open(save.path(name), mode, encoding=encoding) as f:
                    f.write(content)
        for name, data in json_files.items():
            write_json(save.path(name), data)
        save.commit()


__all__ = ["nbytes", "parse_size", "plan_shards", "save_model_folder", "write_json"]
