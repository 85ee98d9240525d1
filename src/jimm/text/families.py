"""What a tokenizer folder holds: its family (CLIP, SigLIP, SigLIP 2), special tokens and default text length.

Read from the files transformers reads (`tokenizer_config.json`, `special_tokens_map.json`, the model's
`config.json`), with transformers' precedence, so a folder means the same thing to jimm and to `AutoTokenizer`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

TOKENIZER_JSON = "tokenizer.json"
SPIECE = "spiece.model"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
MODEL_CONFIG = "config.json"
# Everything a saved model folder needs to keep its tokenizer (the model's config.json is not ours to copy).
TOKENIZER_FILES = (TOKENIZER_JSON, "vocab.json", "merges.txt", SPIECE, TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP)
# transformers writes int(1e30) and similar when a tokenizer has no length limit.
_MAX_SANE_LENGTH = 1_000_000


@dataclasses.dataclass(frozen=True, kw_only=True)
class Family:
    """One family's tokenizer rules; the token strings are transformers' class defaults."""

    name: str
    vocab_file: str  # the one file this family's vocabulary is read from
    default_max_length: int  # the length the text towers were trained with
    bos: str | None
    eos: str
    pad: str
    unk: str
    add_bos: bool  # BOS first and EOS last, as the text towers were trained
    add_eos: bool
    # The tokenizer.json post-processor decides BOS/EOS instead (a warning says when it differs from the above):
    # transformers drops the config's add_bos_token / add_eos_token whenever a tokenizer.json exists.
    # CLIPTokenizer is the exception: it forces BOS/EOS whatever the file says.
    affixes_from_file: bool = False
    lowercase: bool = False  # put Lowercase before the tokenizer.json normalizer (transformers' Siglip2Tokenizer)
    eos_if_absent: bool = False  # SiglipTokenizer adds no second EOS when the ids already end with one


CLIP = Family(
    name="clip",
    vocab_file=TOKENIZER_JSON,
    default_max_length=77,
    bos="<|startoftext|>",
    eos="<|endoftext|>",
    pad="<|endoftext|>",
    unk="<|endoftext|>",
    add_bos=True,
    add_eos=True,
)
SIGLIP = Family(
    name="siglip",
    vocab_file=SPIECE,
    default_max_length=64,
    bos=None,
    eos="</s>",
    pad="</s>",
    unk="<unk>",
    add_bos=False,
    add_eos=True,
    eos_if_absent=True,
)
# big_vision trains SigLIP 2 on `lower | tok(model="gemma", bos="no", eos="sticky")`, right-padded with <pad>.
SIGLIP2 = Family(
    name="siglip2",
    vocab_file=TOKENIZER_JSON,
    default_max_length=64,
    bos="<bos>",
    eos="<eos>",
    pad="<pad>",
    unk="<unk>",
    add_bos=False,
    add_eos=True,
    affixes_from_file=True,
    lowercase=True,
)
FAMILIES = {f.name: f for f in (CLIP, SIGLIP, SIGLIP2)}

_BY_TOKENIZER_CLASS = {
    "CLIPTokenizer": CLIP,
    "CLIPTokenizerFast": CLIP,
    "SiglipTokenizer": SIGLIP,
    "GemmaTokenizer": SIGLIP2,
    "GemmaTokenizerFast": SIGLIP2,
    "Siglip2Tokenizer": SIGLIP2,
}
_BY_MODEL_TYPE = {
    "clip": CLIP,
    "clip_text_model": CLIP,
    "aimv2": CLIP,  # the AIMv2 LiT pair ships a CLIP BPE tokenizer
    "aimv2_text_model": CLIP,
    "siglip2": SIGLIP2,
    "siglip2_text_model": SIGLIP2,
}


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in `path`, or {} when there is no such file."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} should hold a JSON object, not {type(data).__name__}")
    return data


def detect_family(folder: Path, tokenizer_config: dict, model_config: dict) -> Family:
    """The family named by `tokenizer_class`, else by the model's `model_type`."""
    by_class = _BY_TOKENIZER_CLASS.get(tokenizer_config.get("tokenizer_class"))
    if by_class is not None:
        return by_class
    model_type = model_config.get("model_type")
    if model_type in ("siglip", "siglip_text_model"):
        # SigLIP 2 fixed-resolution checkpoints are model_type "siglip" too, but ship a Gemma tokenizer.json
        # and no spiece.model.
        has_spiece, has_json = (folder / SPIECE).is_file(), (folder / TOKENIZER_JSON).is_file()
        return SIGLIP2 if has_json and not has_spiece else SIGLIP
    if model_type in _BY_MODEL_TYPE:
        return _BY_MODEL_TYPE[model_type]
    raise ValueError(
        f"cannot tell which tokenizer family {folder} holds: {TOKENIZER_CONFIG} has tokenizer_class="
        f"{tokenizer_config.get('tokenizer_class')!r} and {MODEL_CONFIG} has model_type={model_type!r}; "
        f"pass family= one of {sorted(FAMILIES)}"
    )


def _content(value: Any) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def special_tokens(family: Family, tokenizer_config: dict, special_tokens_map: dict) -> dict[str, str | None]:
    """bos/eos/pad/unk token strings. As in transformers, special_tokens_map.json only counts (and then wins) when
    tokenizer_config.json has no `added_tokens_decoder`; a missing or null entry keeps the family default."""
    tokens = {"bos": family.bos, "eos": family.eos, "pad": family.pad, "unk": family.unk}
    sources = [tokenizer_config]
    if "added_tokens_decoder" not in tokenizer_config:
        sources.append(special_tokens_map)
    for source in sources:
        for key in tokens:
            value = _content(source.get(f"{key}_token"))
            if value is not None:
                tokens[key] = value
    return tokens


def extra_special_tokens(tokenizer_config: dict) -> set[str]:
    """The special tokens beyond bos/eos/pad/unk (`additional_special_tokens`, v5 `extra_special_tokens`)."""
    extra = tokenizer_config.get("extra_special_tokens") or tokenizer_config.get("additional_special_tokens") or []
    return {_content(token) for token in extra} if isinstance(extra, list) else set()


def added_tokens(tokenizer_config: dict) -> dict[str, dict]:
    """tokenizer_config.json's `added_tokens_decoder`, keyed by content, each entry with its `id` added."""
    decoder = tokenizer_config.get("added_tokens_decoder") or {}
    return {entry["content"]: {**entry, "id": int(index)} for index, entry in decoder.items()}


def default_max_length(family: Family, tokenizer_config: dict, model_config: dict) -> int:
    """The text tower's `max_position_embeddings` (SigLIP so400m-224 has 16, not the tokenizer's 64), else the
    tokenizer's `model_max_length`, else the family's training length."""
    if "text_config" in model_config:
        text_config = model_config["text_config"] or {}
    elif str(model_config.get("model_type", "")).endswith("_text_model"):
        text_config = model_config
    else:
        text_config = {}
    for value in (text_config.get("max_position_embeddings"), tokenizer_config.get("model_max_length")):
        if isinstance(value, int) and 0 < value <= _MAX_SANE_LENGTH:
            return value
    return family.default_max_length
