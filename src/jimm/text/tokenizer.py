"""`Tokenizer`: text to fixed-shape int32 `input_ids` for CLIP, SigLIP and SigLIP 2 text towers.

The ids equal transformers' tokenizers on the same files (`CLIPTokenizer`, `SiglipTokenizer`,
`Siglip2Tokenizer`) with `padding="max_length", truncation=True`, and padding is always on the right. As in
transformers 5.24, SigLIP 2's BOS/EOS come from the tokenizer.json post-processor (the config's `add_bos_token` /
`add_eos_token` are ignored when a tokenizer.json exists); a warning says when that differs from training (no BOS,
EOS last). Two choices follow big_vision rather than one transformers code path:

* SigLIP 2 text is always lowercased, as it was in training. transformers' `Siglip2Tokenizer` does this, but
  `AutoTokenizer` picks it only for NaFlex (`model_type: siglip2`) repos; for the fixed-resolution ones
  (`model_type: siglip`, `tokenizer_class: GemmaTokenizer`) it builds a `GemmaTokenizer` that keeps capitals.
* SigLIP 2 pads on the right, as big_vision trained it (and as the hub files do, by transformers#39269, where
  the last token is `<pad>`), whatever the `padding_side` in the folder: the `Siglip2Tokenizer`/`GemmaTokenizer`
  class default is `left`. The text tower pools the last position, so the side changes the embedding.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Literal

import numpy as np

from . import families
from .encoders import SentencePieceEncoder, TokenizersEncoder
from .families import FAMILIES, Family

logger = logging.getLogger(__name__)


def _open_encoder(folder: Path, family: Family, tokens: dict, tokenizer_config: dict):
    path = folder / family.vocab_file
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {family.vocab_file}, which a {family.name} tokenizer is read from")
    if family.vocab_file == families.TOKENIZER_JSON:
        return TokenizersEncoder(path, lowercase=family.lowercase)
    return SentencePieceEncoder(
        path,
        unk=tokens["unk"],
        special={t for t in tokens.values() if t is not None} | families.extra_special_tokens(tokenizer_config),
        added=families.added_tokens(tokenizer_config),
        do_lower_case=bool(tokenizer_config.get("do_lower_case", True)),
    )


def _special_ids(encoder, tokens: dict[str, str | None], source: Path, family: Family) -> dict[str, int | None]:
    ids = {}
    for key, token in tokens.items():
        ids[key] = None if token is None else encoder.token_id(token)
        if token is not None and ids[key] is None and key != "bos":  # an unused BOS may be missing
            raise ValueError(f"{key} token {token!r} of {source} is not in its vocabulary ({family.vocab_file})")
    return ids


def _affixes(encoder, family: Family, ids: dict, source: Path) -> tuple[list[int], list[int]]:
    """The ids put before and after each text: the family's rule, or the tokenizer.json post-processor's."""
    trained = [ids["bos"]] if family.add_bos else [], [ids["eos"]] if family.add_eos else []
    if not family.affixes_from_file:
        return trained
    affixes = encoder.affixes()
    if affixes != trained:
        logger.warning(
            "%s: the post-processor in %s puts %s before and %s after each text, but %s text towers were trained "
            "with %s and %s; following the file, as transformers does",
            source,
            family.vocab_file,
            *affixes,
            family.name,
            *trained,
        )
    return affixes


class Tokenizer:
    """Tokenizer for CLIP, SigLIP and SigLIP 2 text towers, read from a local folder.

    Call it on a string or a list of strings; it returns numpy int32 `input_ids [B, L]` (and `attention_mask`
    on request), padded to `max_length` by default so a jitted text tower compiles once.

    Attributes: `family` ("clip", "siglip", "siglip2"), `max_length`, `pad_id`, `eos_id`, `bos_id` (None when the
    vocabulary has no BOS; SigLIP 2 has one but does not prepend it), `unk_id`, `vocab_size`, `add_bos` and
    `add_eos` (whether each text gets them), `source` (the folder) and `files` (the tokenizer files found there,
    which `save` copies).
    """

    def __init__(
        self,
        encoder: TokenizersEncoder | SentencePieceEncoder,
        *,
        family: Family,
        ids: dict[str, int | None],
        prefix: list[int],
        suffix: list[int],
        max_length: int,
        source: Path,
        files: tuple[Path, ...],
    ):
        """Use `from_pretrained`; this takes an opened encoder, the special token ids and the ids put before
        (`prefix`) and after (`suffix`) each text."""
        self._encoder, self._family = encoder, family
        self._prefix, self._suffix = list(prefix), list(suffix)
        self.family: str = family.name
        self.bos_id: int | None = ids["bos"]
        self.eos_id: int = ids["eos"]
        self.pad_id: int = ids["pad"]
        self.unk_id: int = ids["unk"]
        self.add_bos = self.bos_id is not None and self.bos_id in self._prefix
        self.add_eos = self.eos_id in self._suffix
        self.vocab_size: int = encoder.vocab_size
        self.source, self.files = source, files
        self._num_special = len(self._prefix) + len(self._suffix)
        self.max_length: int = self._check_length(max_length)
        self._warned_truncation = False

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        family: str | None = None,
        max_length: int | None = None,
        model_config: dict | None = None,
    ) -> Tokenizer:
        """Read the tokenizer in `path`: a model folder (with `config.json`) or a tokenizer-only folder.

        Args:
            path: local folder holding `tokenizer.json` (CLIP, SigLIP 2) or `spiece.model` (SigLIP), usually with
                `tokenizer_config.json`.
            family: "clip", "siglip" or "siglip2"; by default read from `tokenizer_config.json`'s
                `tokenizer_class`, else from `config.json`'s `model_type`.
            max_length: the padded length; by default the model's `text_config.max_position_embeddings`, else the
                tokenizer's `model_max_length`, else 77 (CLIP) or 64 (SigLIP).
            model_config: the folder's `config.json` when the caller has already parsed it (a model's loader).
        """
        folder = Path(os.path.expanduser(os.fspath(path)))
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is not a folder (expected one holding the tokenizer files)")
        vocab_files = (families.TOKENIZER_JSON, families.SPIECE)
        if not any((folder / name).is_file() for name in vocab_files):
            raise FileNotFoundError(
                f"{folder} holds no tokenizer: looked for {' and '.join(vocab_files)} "
                f"(with {families.TOKENIZER_CONFIG} or {families.MODEL_CONFIG} to tell the family)"
            )
        tokenizer_config = families.read_json(folder / families.TOKENIZER_CONFIG)
        if model_config is None:
            model_config = families.read_json(folder / families.MODEL_CONFIG)
        if family is None:
            rules = families.detect_family(folder, tokenizer_config, model_config)
        elif family in FAMILIES:
            rules = FAMILIES[family]
        else:
            raise ValueError(f"family={family!r} is not one of {sorted(FAMILIES)}")
        tokens = families.special_tokens(
            rules, tokenizer_config, families.read_json(folder / families.SPECIAL_TOKENS_MAP)
        )
        encoder = _open_encoder(folder, rules, tokens, tokenizer_config)
        ids = _special_ids(encoder, tokens, folder, rules)
        prefix, suffix = _affixes(encoder, rules, ids, folder)
        if max_length is None:
            max_length = families.default_max_length(rules, tokenizer_config, model_config)
        return cls(
            encoder,
            family=rules,
            ids=ids,
            prefix=prefix,
            suffix=suffix,
            max_length=max_length,
            source=folder,
            files=tuple(folder / name for name in families.TOKENIZER_FILES if (folder / name).is_file()),
        )

    def _check_length(self, max_length: int) -> int:
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length <= self._num_special:
            raise ValueError(
                f"max_length={max_length!r} must be an int above {self._num_special} "
                f"(the number of special tokens a {self.family} text gets)"
            )
        return max_length

    def __call__(
        self,
        texts: str | list[str],
        *,
        max_length: int | None = None,
        padding: Literal["max_length", "longest"] = "max_length",
        return_attention_mask: bool = False,
    ) -> dict[str, np.ndarray]:
        """Tokenize, truncate (keeping BOS/EOS) and right-pad.

        Returns:
            {"input_ids": int32 [B, L]} and, when `return_attention_mask`, "attention_mask": int32 [B, L] with 1 on
            real tokens. L is `max_length` (default `self.max_length`), or the longest text's length when
            `padding="longest"`.
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise ValueError("texts is an empty list; pass a string or a non-empty list of strings")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is a {type(text).__name__}, not a str")
        if padding not in ("max_length", "longest"):
            raise ValueError(f"padding={padding!r} must be 'max_length' or 'longest'")
        length = self.max_length if max_length is None else self._check_length(max_length)

        room = length - self._num_special
        encoded = self._encoder.encode(texts)
        too_long = [n for n in map(len, encoded) if n > room]
        if too_long and not self._warned_truncation:
            self._warned_truncation = True
            logger.warning(
                "%d of %d texts are longer than max_length=%d tokens (the longest has %d) and were truncated, "
                "keeping the special tokens; this tokenizer warns once",
                len(too_long),
                len(texts),
                length,
                max(too_long) + self._num_special,
            )
        rows = [self._with_special(ids[:room]) for ids in encoded]
        width = length if padding == "max_length" else max(map(len, rows))
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int32)
        mask = np.zeros((len(rows), width), dtype=np.int32)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": mask} if return_attention_mask else {"input_ids": input_ids}

    def _with_special(self, ids: list[int]) -> list[int]:
        if self._family.eos_if_absent and ids and ids[-1] == self.eos_id:
            return self._prefix + ids
        return self._prefix + ids + self._suffix

    def save(self, directory: str | os.PathLike) -> list[Path]:
        """Copy the tokenizer files into `directory` (created if needed), so a saved model keeps its tokenizer.

        Returns the paths written. The family and length come back from these files (and the model's config.json)
        on the next `from_pretrained`; a `family=`/`max_length=` override is not recorded.
        """
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        written = []
        for path in self.files:
            destination = target / path.name
            if not (destination.exists() and destination.samefile(path)):
                shutil.copyfile(path, destination)
            written.append(destination)
        return written

    def _identity(self) -> tuple:
        files = tuple(str(p) for p in self.files)
        return self.family, self.max_length, tuple(self._prefix), tuple(self._suffix), str(self.source), files

    def __eq__(self, other: object) -> bool:
        """Equal when read from the same files with the same settings: a model holds its tokenizer as static data,
        so a model reloaded from the same folder then hashes the same and its jitted functions do not recompile."""
        return isinstance(other, Tokenizer) and self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def __repr__(self) -> str:
        return (
            f"Tokenizer(family={self.family!r}, max_length={self.max_length}, vocab_size={self.vocab_size}, "
            f"pad_id={self.pad_id}, eos_id={self.eos_id}, bos_id={self.bos_id}, source={str(self.source)!r})"
        )
