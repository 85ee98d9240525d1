"""Checkpoint file conversion: `pytorch_model.bin` <-> safetensors (single or sharded), with dtype casts.

Tensor names and values are copied unchanged (only floating-point tensors are cast), so the output is the
same HF checkpoint in another container. `config.json` and `preprocessor_config.json` are copied along.
The destination is written to a staging folder and moved into place file by file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import ml_dtypes
import numpy as np

from .checkpoint import PYTORCH, SAFETENSORS, SAFETENSORS_INDEX, open_checkpoint
from .resolve import CONFIG, PREPROCESSOR, resolve_model
from .safetensors import write_safetensors

DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16)}
FORMATS = ("safetensors", "pytorch")


def parse_size(size: int | str) -> int:
    from ..models.vit.params import _parse_size

    return _parse_size(size)


def _is_float(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.floating) or dtype == np.dtype(ml_dtypes.bfloat16)


def convert_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    to_format: str = "safetensors",
    dtype: str | None = None,
    max_shard_size: int | str = "5GB",
) -> list[Path]:
    """Convert the model folder `src` into `dst`; returns the weight files written."""
    if to_format not in FORMATS:
        raise ValueError(f"unknown format {to_format!r}; choose one of {', '.join(FORMATS)}")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    limit = parse_size(max_shard_size)
    src_path, dst_path = Path(src), Path(dst)
    if not src_path.is_dir():
        raise FileNotFoundError(f"{src_path} is not a model directory (expected a folder with config.json and weights)")
    if dst_path.exists() and dst_path.resolve() == src_path.resolve():
        raise ValueError("source and destination are the same folder; choose a new destination")
    resolved = resolve_model(src_path, prefer_pytorch=False)
    target = None if dtype is None else DTYPES[dtype]
    with open_checkpoint(resolved.weights) as checkpoint:
        entries = checkpoint.entries()
        plan = []
        for name, (shape, stored) in entries.items():
            out_dtype = target if target is not None and _is_float(stored) else stored
            plan.append((name, tuple(shape), np.dtype(out_dtype)))
        dst_path.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".jimm-convert-", dir=dst_path))
        try:
            names = _write(checkpoint, plan, staging, to_format, limit)
            config = json.loads(resolved.config.read_text(encoding="utf-8"))
            if target is not None:
                config["dtype"] = dtype
                config.pop("torch_dtype", None)
            (staging / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            if resolved.preprocessor is not None:
                shutil.copyfile(resolved.preprocessor, staging / PREPROCESSOR)
                names.append(PREPROCESSOR)
            names.append(CONFIG)
            stale = {p.name for p in dst_path.glob("model*.safetensors*")} | {
                p.name for p in dst_path.glob("pytorch_model*.bin*")
            }
            for name in names:
                os.replace(staging / name, dst_path / name)
            for name in stale - set(names):
                (dst_path / name).unlink(missing_ok=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return [dst_path / n for n in names if n.endswith((".safetensors", ".bin"))]


def _shards(plan, limit: int) -> list[list]:
    shards: list[list] = [[]]
    size = 0
    for item in plan:
        nbytes = int(np.prod(item[1], dtype=np.int64)) * item[2].itemsize
        if shards[-1] and size + nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(item)
        size += nbytes
    return shards


def _write(checkpoint, plan, staging: Path, to_format: str, limit: int) -> list[str]:
    shards = _shards(plan, limit)
    if to_format == "pytorch":
        if len(shards) > 1:
            raise ValueError("sharded pytorch_model.bin output is not supported; convert to safetensors to shard")
        import torch

        state = {}
        for name, _, dtype in plan:
            array = checkpoint.read(name).astype(dtype)
            if dtype == np.dtype(ml_dtypes.bfloat16):
                state[name] = torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
            else:
                state[name] = torch.from_numpy(np.ascontiguousarray(array))
        torch.save(state, staging / PYTORCH)
        return [PYTORCH]

    def producer(name, dtype):
        return lambda: checkpoint.read(name).astype(dtype)

    if len(shards) == 1:
        write_safetensors(
            staging / SAFETENSORS, [(n, s, d, producer(n, d)) for n, s, d in plan], metadata={"format": "pt"}
        )
        return [SAFETENSORS]
    names, weight_map, total = [], {}, 0
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(staging / name, [(n, s, d, producer(n, d)) for n, s, d in shard], metadata={"format": "pt"})
        names.append(name)
        for tensor, shape, dtype in shard:
            weight_map[tensor] = name
            total += int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (staging / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return [*names, SAFETENSORS_INDEX]
