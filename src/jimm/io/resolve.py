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
    if path.exists():
        raise FileNotFoundError(
            f"{text} is not a model directory (it is a file; pass the folder that holds config.json and the weights)"
        )
    if _looks_local(text):
        raise FileNotFoundError(
            f"{text} is not a model directory (no such folder); pass a folder with config.json and weights, "
            "or a hub repo id like google/vit-base-patch16-224"
        )
    if _under_local_folder(text):
        raise FileNotFoundError(
            f"{text} is not a model directory (no such folder in {text.split('/')[0]}/); for the hub repo "
            f"{text!r}, run from a directory without a {text.split('/')[0]}/ folder"
        )
    return _resolve_hub(text, prefer_pytorch, revision=revision, token=token, cache_dir=cache_dir)


_FILE_SUFFIXES = (".safetensors", ".bin", ".json", ".npz", ".pt", ".pth", ".ckpt")


def _under_local_folder(text: str) -> bool:
    """`runs/typo` where `runs/` exists: a local path, not a hub repo of the organisation `runs`."""
    return text.count("/") == 1 and Path(text.split("/")[0]).is_dir()


def _looks_local(text: str) -> bool:
    """True for a name that cannot be a hub repo id, or that names a file."""
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or os.sep in text.replace("/", ""):
        return True
    if text.endswith(_FILE_SUFFIXES):
        return True
    try:
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(text)
    except ImportError:  # pragma: no cover - a declared dependency
        return False
    except ValueError:  # HFValidationError
        return True
    return False


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
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise OSError(
            f"{repo_id!r} is not a local folder, and the hub lookup failed ({type(err).__name__}: {first})"
        ) from err
    if config is None:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        if offline:
            raise FileNotFoundError(
                f"{repo_id!r} is not a local folder, and that hub repo is not in the cache (HF_HUB_OFFLINE is set); "
                "pass a model folder, or unset HF_HUB_OFFLINE to download it"
            )
        raise FileNotFoundError(f"{repo_id!r} is not a local folder, and hub repo {repo_id!r} has no {CONFIG}")
    for name in _weight_candidates(prefer_pytorch):
        found = download(name)
        if found is None:
            continue
        if name.endswith(".index.json"):
            import json

            try:
                shards = sorted(set(json.loads(found.read_text(encoding="utf-8"))["weight_map"].values()))
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
                raise ValueError(f"hub repo {repo_id!r}: {name} is not a valid checkpoint index ({err})") from err
            for shard in shards:
                if download(shard) is None:
                    raise FileNotFoundError(
                        f"hub repo {repo_id!r}: index {name} names shard {shard!r}, which is missing"
                    )
        return ResolvedModel(config, _weights_from(found), download(PREPROCESSOR))
    raise FileNotFoundError(
        f"hub repo {repo_id!r} has no weights: looked for {', '.join(_weight_candidates(prefer_pytorch))}"
    )
