"""Checkpoint file conversion: `pytorch_model.bin` <-> safetensors (single or sharded), with dtype casts.

Tensor names and values are copied unchanged (only floating-point tensors are cast), so the output is the
same HF checkpoint in another container. `config.json`, the preprocessor and tokenizer files are copied
along. The source is read through the validating readers (a malformed file is an error, never "repaired"),
and the destination is written as one atomic save (`jimm.io.atomic_save`).
"""

from __future__ import annotations

import os
from pathlib import Path

import ml_dtypes
import numpy as np

from .atomic_save import FolderSave
from .files import read_json_object
from .model_folder import parse_size, plan_shards, save_model_folder, write_json
from .readers import open_checkpoint
from .resolve import AUX_FILES, CONFIG, PYTORCH, resolve_model
from .state import is_float

DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16)}
FORMATS = ("safetensors", "pytorch")


def convert_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    to_format: str = "safetensors",
    dtype: str | None = None,
    max_shard_size: int | str = "5GB",
    overwrite: bool = False,
) -> list[Path]:
    """Convert the model folder `src` into `dst`; returns the weight files written."""
    if to_format not in FORMATS:
        raise ValueError(f"unknown format {to_format!r}; choose one of {', '.join(FORMATS)}")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    limit = parse_size(max_shard_size)
    src_path, dst_path = Path(src), Path(dst)
    if src_path.is_file():
        raise NotADirectoryError(
            f"{src_path} is not a model directory (it is a file; pass the folder that holds config.json and the "
            "weights)"
        )
    if not src_path.is_dir():
        raise FileNotFoundError(
            f"{src_path} is not a model directory (no such folder); pass a folder with config.json and weights"
        )
    if dst_path.exists() and dst_path.resolve() == src_path.resolve():
        raise ValueError("source and destination are the same folder; choose a new destination")
    resolved = resolve_model(src_path, prefer_pytorch=False)
    config = read_json_object(resolved.config_path)
    target = None if dtype is None else DTYPES[dtype]
    if target is not None:
        config["dtype"] = dtype
        config.pop("torch_dtype", None)
    aux = {name: path for name in AUX_FILES if (path := resolved.file(name)) is not None}
    with open_checkpoint(resolved.weights) as checkpoint:
        plan = []
        for name, (shape, stored) in checkpoint.entries().items():
            out_dtype = target if target is not None and is_float(stored) else np.dtype(stored)

            def produce(name=name, out_dtype=out_dtype):
                return np.asarray(checkpoint.read(name)).astype(out_dtype, copy=False)

            plan.append((name, tuple(shape), out_dtype, produce))
        if to_format == "safetensors":
            names = [name for name, _ in plan_shards(plan, limit)]
            save_model_folder(
                dst_path, plan, json_files={CONFIG: config}, other_files=aux, max_shard_size=limit, overwrite=overwrite
            )
        else:
            if len(plan_shards(plan, limit)) > 1:
                raise ValueError("sharded pytorch_model.bin output is not supported; convert to safetensors to shard")
            names = [PYTORCH]
            with FolderSave(dst_path, [PYTORCH, *aux, CONFIG], overwrite=overwrite) as save:
                _write_torch(save.path(PYTORCH), plan)
                for name, path in aux.items():
                    save.path(name).write_bytes(path.read_bytes())
                write_json(save.path(CONFIG), config)
                save.commit()
    return [dst_path / n for n in names]


def _write_torch(path: Path, plan) -> None:
    import torch

    state = {}
    for name, _, dtype, produce in plan:
        array = produce()
        if dtype == np.dtype(ml_dtypes.bfloat16):
            state[name] = torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
        else:
            state[name] = torch.from_numpy(np.ascontiguousarray(array).copy())
    torch.save(state, path)
