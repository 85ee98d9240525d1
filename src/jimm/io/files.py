"""A model's files, found once per load: the weights, `config.json` parsed once, any other file by name.

`locate` accepts what users pass to `from_pretrained` (a weights file, a model folder, a timm folder whose
config.json has no `model_type`, a hub repo id) and returns a `ModelFiles`. Everything downstream (choosing
the class in `jimm.from_pretrained`, the family's loader) reads that object instead of the disk, so a load
resolves names once, parses `config.json` once, and opens a checkpoint's header once (`ModelFiles.opened`
hands a header already read, e.g. to pick the class of a config-less checkpoint, to the loader).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from .resolve import CONFIG, PYTORCH, SAFETENSORS, ModelFiles, _resolve_local, local_lookup, resolve_model

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".npz")


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON file that must hold an object (an HF config), with errors naming the file."""
    try:
        data = json.loads(Path(path).read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    except RecursionError as err:
        raise ValueError(f"{path} is not a config file: its JSON is nested too deeply") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, not an object; a config.json is a JSON object")
    return data


def _hf_config(path: Path | None) -> dict[str, Any] | None:
    """The parsed HF `config.json` (it has `model_type`), or None (absent, or a timm folder's config.json)."""
    if path is None or not path.is_file():
        return None
    raw = read_json_object(path)
    return raw if "model_type" in raw else None


def locate(name_or_path, *, prefer_pytorch: bool = False, revision=None, token=None, cache_dir=None) -> ModelFiles:
    """The `ModelFiles` of a weights file, a model folder or a hub repo id (a `ModelFiles` is returned as is)."""
    if isinstance(name_or_path, ModelFiles):
        return name_or_path
    text = os.fspath(name_or_path)
    path = Path(os.path.expanduser(text))
    if path.is_file():
        if path.suffix not in WEIGHT_SUFFIXES:
            raise ValueError(
                f"{path} is not a weights file ({', '.join(WEIGHT_SUFFIXES)}); pass the model folder "
                f"that holds config.json and the weights (e.g. {path.parent})"
            )
        return ModelFiles(text, [path])
    if path.is_dir():
        lookup = local_lookup(path)
        hf = _hf_config(lookup(CONFIG))
        if hf is None:  # a timm folder (its config.json has no model_type) or an npz folder
            for name in [PYTORCH, SAFETENSORS] if prefer_pytorch else [SAFETENSORS, PYTORCH]:
                if (path / name).is_file():
                    return ModelFiles(text, [path / name])
            npz = sorted(path.glob("*.npz"))
            if len(npz) == 1:
                return ModelFiles(text, npz)
            raise FileNotFoundError(f"{path} has no HF config.json and no single {SAFETENSORS}, {PYTORCH} or .npz file")
        resolved = _resolve_local(path, text, prefer_pytorch, True, lookup)
        return dataclasses.replace(resolved, hf_config=hf)
    resolved = resolve_model(text, prefer_pytorch=prefer_pytorch, revision=revision, token=token, cache_dir=cache_dir)
    return dataclasses.replace(resolved, hf_config=_hf_config(resolved.config_path))


__all__ = ["WEIGHT_SUFFIXES", "ModelFiles", "locate", "read_json_object"]
