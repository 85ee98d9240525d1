"""Resolve a model name to local files: a directory, or a Hugging Face hub repo id through its cache.

Hub access goes through `huggingface_hub`, so its cache, `revision`, `token` and `HF_HUB_OFFLINE=1`
behave exactly as in transformers.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from .checkpoint import PYTORCH, PYTORCH_INDEX, SAFETENSORS, SAFETENSORS_INDEX, shard_paths_from_index

CONFIG = "config.json"
PREPROCESSOR = "preprocessor_config.json"


@dataclasses.dataclass(frozen=True)
class ResolvedModel:
    config: Path
    weights: list[Path]
    preprocessor: Path | None


def _weight_candidates(prefer_pytorch: bool) -> list[str]:
    safetensors, pytorch = [SAFETENSORS, SAFETENSORS_INDEX], [PYTORCH, PYTORCH_INDEX]
    return pytorch + safetensors if prefer_pytorch else safetensors + pytorch


def _weights_from(index_or_file: Path) -> list[Path]:
    return shard_paths_from_index(index_or_file) if index_or_file.name.endswith(".index.json") else [index_or_file]


def resolve_model(
    name_or_path: str | os.PathLike,
    *,
    prefer_pytorch: bool = False,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> ResolvedModel:
    """Find `config.json`, the weight files and `preprocessor_config.json` (optional) for a model."""
    path = Path(os.path.expanduser(os.fspath(name_or_path)))
    if path.is_dir():
        return _resolve_local(path, prefer_pytorch)
    text = os.fspath(name_or_path)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1 or os.sep in text.replace("/", ""):
        raise FileNotFoundError(f"{text} is not a model directory (expected a folder with config.json and weights)")
    return _resolve_hub(text, prefer_pytorch, revision=revision, token=token, cache_dir=cache_dir)


def _resolve_local(root: Path, prefer_pytorch: bool) -> ResolvedModel:
    config = root / CONFIG
    if not config.is_file():
        raise FileNotFoundError(f"{root} has no {CONFIG}; it is not a saved Hugging Face model directory")
    for name in _weight_candidates(prefer_pytorch):
        if (root / name).is_file():
            preprocessor = root / PREPROCESSOR
            return ResolvedModel(config, _weights_from(root / name), preprocessor if preprocessor.is_file() else None)
    raise FileNotFoundError(f"{root} has no weights: looked for {', '.join(_weight_candidates(prefer_pytorch))}")


def _resolve_hub(repo_id: str, prefer_pytorch: bool, **hub_kwargs) -> ResolvedModel:
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ImportError("loading from the hub needs huggingface_hub: `pip install huggingface_hub`") from err

    def download(filename: str) -> Path | None:
        try:
            return Path(hf_hub_download(repo_id, filename, **hub_kwargs))
        except (EntryNotFoundError, LocalEntryNotFoundError):
            return None

    try:
        config = download(CONFIG)
    except Exception as err:
        raise OSError(f"could not resolve {repo_id!r} as a local directory or hub repo: {err}") from err
    if config is None:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = " (HF_HUB_OFFLINE is set and it is not in the cache)" if offline else ""
        raise FileNotFoundError(f"hub repo {repo_id!r} has no {CONFIG}{hint}")
    for name in _weight_candidates(prefer_pytorch):
        found = download(name)
        if found is None:
            continue
        if name.endswith(".index.json"):
            import json

            shards = sorted(set(json.loads(found.read_text(encoding="utf-8")).get("weight_map", {}).values()))
            for shard in shards:
                if download(shard) is None:
                    raise FileNotFoundError(
                        f"hub repo {repo_id!r}: index {name} names shard {shard!r}, which is missing"
                    )
        return ResolvedModel(config, _weights_from(found), download(PREPROCESSOR))
    raise FileNotFoundError(
        f"hub repo {repo_id!r} has no weights: looked for {', '.join(_weight_candidates(prefer_pytorch))}"
    )
