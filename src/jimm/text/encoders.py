"""Text to token ids without special tokens: a `tokenizers` tokenizer.json, or SigLIP's sentencepiece model.

Both answer `encode(texts) -> list[list[int]]`, `token_id(token) -> int | None` and `vocab_size`; the
Tokenizer adds BOS/EOS, truncates and pads.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

SPIECE_UNDERLINE = "▁"
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_WHITESPACE = re.compile(r"\s+")


class TokenizersEncoder:
    """A tokenizer.json through the `tokenizers` library, with the file's own normalizer and pre-tokenizer."""

    def __init__(self, path: Path, *, lowercase: bool = False):
        from tokenizers import Tokenizer, normalizers

        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as e:  # the Rust side raises a bare Exception for any malformed file
            raise ValueError(f"{path} is not a readable tokenizers file: {e}") from e
        tokenizer.no_padding()
        tokenizer.no_truncation()
        if lowercase:  # what transformers' Siglip2Tokenizer does to the Gemma tokenizer.json
            inner = tokenizer.normalizer
            tokenizer.normalizer = (
                normalizers.Lowercase() if inner is None else normalizers.Sequence([normalizers.Lowercase(), inner])
            )
        self._tokenizer, self._path = tokenizer, path
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    def affixes(self) -> tuple[list[int], list[int]]:
        """The ids the file's post-processor puts before and after a single text (none without one)."""
        plain = self._tokenizer.encode("a", add_special_tokens=False).ids
        full = self._tokenizer.encode("a", add_special_tokens=True).ids
        for i in range(len(full) - len(plain) + 1):
            if full[i : i + len(plain)] == plain:
                return full[:i], full[i + len(plain) :]
        raise ValueError(f"the post-processor of {self._path} does not keep the text's tokens together: {full}")

    def encode(self, texts: list[str]) -> list[list[int]]:
        # Added tokens written in the text (say "<|endoftext|>") still map to their ids, as in transformers.
        return [e.ids for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]


def canonicalize_text(text: str, *, lower: bool = True) -> str:
    """big_vision's SigLIP text cleaning, as transformers' SiglipTokenizer applies it: lowercase (when the
    tokenizer's `do_lower_case`), drop ASCII punctuation, collapse whitespace, strip."""
    if lower:
        text = text.lower()
    return _WHITESPACE.sub(" ", text.translate(_PUNCTUATION)).strip()


def _import_sentencepiece():
    try:
        import sentencepiece
    except ImportError as e:
        raise ImportError(
            "SigLIP tokenizers (spiece.model) need sentencepiece: pip install 'sentencepiece>=0.2'"
        ) from e
    return sentencepiece


class SentencePieceEncoder:
    """transformers' SiglipTokenizer, step for step.

    `tokenize` prepends "▁", splits the text on added tokens, then encodes each piece as
    `canonicalize_text(piece)` behind an `<unk>` prefix that it cuts off again (so sentencepiece's dummy-prefix
    handling sees what it saw in transformers). transformers also strips whitespace next to lstrip/rstrip added
    tokens; `canonicalize_text` strips every piece anyway, so that step changes nothing here.
    """

    def __init__(self, path: Path, *, unk: str, special: set[str], added: dict[str, dict], do_lower_case: bool):
        """`special`: transformers' `all_special_tokens` (the named ones and `additional_special_tokens`);
        `added`: tokenizer_config.json's added tokens by content."""
        spm = _import_sentencepiece()
        try:
            self._sp = spm.SentencePieceProcessor(model_file=str(path))
        except (OSError, RuntimeError) as e:
            raise ValueError(f"{path} is not a readable sentencepiece model: {e}") from e
        self.vocab_size = self._sp.get_piece_size()
        self._added = {token: entry["id"] for token, entry in added.items()}
        for token in special - set(added):
            index = self._sp.piece_to_id(token)
            if self._sp.id_to_piece(index) != token:
                raise ValueError(f"special token {token!r} is not in the vocabulary of {path}")
            self._added[token] = index
        self._special = special
        self._unk = unk
        self._unk_length = len(self._sp.encode(unk))
        self._lower = do_lower_case
        by_length = sorted(self._added, key=len, reverse=True)  # longest match first, like transformers' trie
        self._split = re.compile("(" + "|".join(map(re.escape, by_length)) + ")")

    def token_id(self, token: str) -> int | None:
        if token in self._added:
            return self._added[token]
        index = self._sp.piece_to_id(token)
        return index if self._sp.id_to_piece(index) == token else None

    def _pieces(self, text: str) -> list[str]:
        pieces = self._sp.encode(self._unk + canonicalize_text(text, lower=self._lower), out_type=str)
        return pieces[self._unk_length :] if len(pieces) >= self._unk_length else pieces

    def _tokens(self, text: str) -> list[str]:
        text = SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " ")
        chunks = self._split.split(text)  # odd indices are the added tokens
        tokens: list[str] = []
        for i, chunk in enumerate(chunks):
            if chunk:
                tokens.extend([chunk] if i % 2 else self._pieces(chunk))
        if len(tokens) > 1 and tokens[0] == SPIECE_UNDERLINE and tokens[1] in self._special:
            tokens = tokens[1:]
        return tokens

    def encode(self, texts: list[str]) -> list[list[int]]:
        ids = []
        for text in texts:
            tokens = self._tokens(text)
            ids.append([self._added[t] if t in self._added else self._sp.piece_to_id(t) for t in tokens])
        return ids
