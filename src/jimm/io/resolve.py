"""Resolve a model name to local files: a directory, or a Hugging Face hub repo id through its cache.

Hub access goes through `huggingface_hub`, so its cache, `revision`, `token` and `HF_HUB_OFFLINE=1`
behave exactly as in transformers. A directory jimm saved is read through its manifest (`jimm.io.atomic_save`),
so a folder left by a crash mid-save resolves to exactly one complete save.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .atomic_save import saved_files
from .readers import CheckpointSource, open_checkpoint

CONFIG = "config.json"
PREPROCESSOR = "preprocessor_config.json"
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH = "pytorch_model.bin"
PYTORCH_INDEX = "pytorch_model.bin.index.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "added_tokens.json",
)
AUX_FILES = (PREPROCESSOR, *TOKENIZER_FILES)
"""Files beside the weights that a model folder carries along (copied by `jimm convert`)."""


def _no_files(name: str) -> None:
    return None


@dataclasses.dataclass
class ModelFiles:
    """A model's files: `weights`, `config_path` and (once parsed, `jimm.io.files.locate`) `hf_config`, the HF
    `config.json` (None when absent or without `model_type`, as a timm folder's); `file(name)` for any other."""

    source: str
    weights: list[Path]
    config_path: Path | None = None
    hf_config: dict[str, Any] | None = None
    lookup: Callable[[str], Path | None] = dataclasses.field(default=_no_files, repr=False)
    opened: CheckpointSource | None = dataclasses.field(default=None, repr=False)

    def __fspath__(self) -> str:
        return self.source

    def file(self, name: str) -> Path | None:
        return self.lookup(name)

    @property
    def preprocessor(self) -> Path | None:
        return self.lookup(PREPROCESSOR)

    def header(self) -> CheckpointSource:
        """The open checkpoint (its header read once): the one opened earlier, else a fresh one."""
        if self.opened is None:
            self.opened = open_checkpoint(self.weights)
        return self.opened

    def open_weights(self) -> CheckpointSource:
        """The open checkpoint, handed over: the caller closes it."""
        source, self.opened = self.header(), None
        return source


def weight_candidates(prefer_pytorch: bool) -> list[str]:
    safetensors, pytorch = [SAFETENSORS, SAFETENSORS_INDEX], [PYTORCH, PYTORCH_INDEX]
    return pytorch + safetensors if prefer_pytorch else safetensors + pytorch


_FILE_SUFFIXES = (".safetensors", ".bin", ".json", ".npz", ".pt", ".pth", ".ckpt")


def looks_local(text: str) -> bool:
    """True for a name that cannot be a hub repo id, or that names a file or a folder under an existing one."""
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or os.sep in text.replace("/", "") or "\\" in text:
        return True
    if text.endswith(_FILE_SUFFIXES) or ("/" in text and Path(text.split("/")[0]).is_dir()):
        return True
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(text)
    except ValueError:  # HFValidationError
        return True
    return False


def read_index(index_path: Path, lookup: Callable[[str], Path | None]) -> list[Path]:
    """The shard files an HF `*.index.json` names, each checked to be a plain name that exists."""
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        weight_map = index["weight_map"]
        names = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
        raise ValueError(f"{index_path} is not a valid checkpoint index (needs a 'weight_map' object): {err}") from err
    paths = []
    for name in names:
        if not isinstance(name, str) or not name or name != os.path.basename(name) or name in (".", ".."):
            raise ValueError(f"{index_path} names shard {name!r}, which is not a file beside it; refusing to read it")
        path = lookup(name)
        if path is None:
            raise FileNotFoundError(f"{index_path} names shard {name!r}, which does not exist")
        paths.append(path)
    return paths


def resolve_model(
    name_or_path: str | os.PathLike,
    *,
    prefer_pytorch: bool = False,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    need_config: bool = True,
) -> ModelFiles:
    """Find `config.json` and the weight files for a model folder or hub repo id."""
    text = os.fspath(name_or_path)
    path = Path(os.path.expanduser(text))
    if path.is_dir():
        return _resolve_local(path, text, prefer_pytorch, need_config)
    if path.exists():
        raise NotADirectoryError(
            f"{text} is not a model directory (it is a file; pass the folder that holds config.json and the weights)"
        )
    if looks_local(text):
        raise FileNotFoundError(
            f"{text} is not a model directory (no such folder); pass a folder with config.json and weights, "
            "or a hub repo id like google/vit-base-patch16-224"
        )
    return _resolve_hub(text, prefer_pytorch, need_config, revision=revision, token=token, cache_dir=cache_dir)


def local_lookup(root: Path) -> Callable[[str], Path | None]:
    """File lookup in a folder: through jimm's save manifest when there is one, else plain files."""
    recorded = saved_files(root)
    if recorded is not None:
        return recorded.get

    def lookup(name: str) -> Path | None:
        path = root / name
        return path if path.is_file() else None

    return lookup


def _resolve_local(
    root: Path, text: str, prefer_pytorch: bool, need_config: bool, lookup: Callable[[str], Path | None] | None = None
) -> ModelFiles:
    lookup = lookup or local_lookup(root)
    config = lookup(CONFIG)
    if config is None and need_config:
        raise FileNotFoundError(f"{text} has no {CONFIG}; it is not a saved Hugging Face model folder")
    for name in weight_candidates(prefer_pytorch):
        found = lookup(name)
        if found is not None:
            weights = read_index(found, lookup) if name.endswith(".index.json") else [found]
            return ModelFiles(text, weights, config, lookup=lookup)
    raise FileNotFoundError(f"{text} has no weights: looked for {', '.join(weight_candidates(prefer_pytorch))}")


def _resolve_hub(repo_id: str, prefer_pytorch: bool, need_config: bool, **hub_kwargs) -> ModelFiles:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

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
    if config is None and need_config:
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
            raise FileNotFoundError(
                f"{repo_id!r} is not a local folder, and that hub repo is not in the cache (HF_HUB_OFFLINE is set); "
                "pass a model folder, or unset HF_HUB_OFFLINE to download it"
            )
        raise FileNotFoundError(f"{repo_id!r} is not a local folder, and hub repo {repo_id!r} has no {CONFIG}")
    for name in weight_candidates(prefer_pytorch):
        found = download(name)
        if found is None:
            continue
        weights = read_index(found, download) if name.endswith(".index.json") else [found]
        return ModelFiles(repo_id, weights, config, lookup=download)
    raise FileNotFoundError(
        f"hub repo {repo_id!r} has no weights: looked for {', '.join(weight_candidates(prefer_pytorch))}"
    )
