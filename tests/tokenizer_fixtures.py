"""Tiny but realistic tokenizer folders for CLIP, SigLIP and SigLIP 2, built in-process (no downloads).

Each `make_*` function trains a small tokenizer on the corpus below and writes the files the hub repos ship, in
their layout, so that both `jimm.text.Tokenizer` and transformers' `AutoTokenizer` load the same folder. Each
returns the vocabulary size, small enough for a tiny text tower's embedding table.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

_CLASSES = ["cat", "dog", "car", "bird", "plane", "ship", "horse", "frog", "deer", "truck", "apple", "tree"]
_TEMPLATES = [
    "a photo of a {}.",
    "a blurry photo of the {}!",
    "A close-up photo of a {}, taken at night?",
    "This is a photo of my {} (it's small).",
    "a drawing of a big {} -- and another {}",
    "an origami {}; a plastic {}: a toy {}",
]
_SENTENCES = [
    "Two cats sleep on a sofa near 3 dogs, 42 birds and 7 cars.",
    "The quick brown fox jumps over the lazy dog; isn't it great? It's 100% true!",
    "Café, naïve, résumé, über, São Paulo and Zürich are words with accents.",
    "日本の猫 and 中文的狗 are written in CJK; emoji like 🐱🐶🚗 appear too.",
    "Punctuation: hello, world! (parentheses) [brackets] {braces} #hash @at $5.00 & more...",
    "We've been there, they'll go, you'd say I'm here and he's gone.",
    "MiXeD CaSe TeXt, ALL CAPS and lower case words live together here.",
    "tabs\tand\nnew lines   and    many spaces should collapse.",
]


def corpus() -> list[str]:
    """A few hundred words: prompt templates over classes, plus punctuation, capitals, digits and unicode."""
    return [t.format(*[c] * t.count("{}")) for c in _CLASSES for t in _TEMPLATES] + _SENTENCES * 3


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _added_token(content: str, *, strip: bool = False, normalized: bool = False) -> dict:
    flags = dict(lstrip=strip, normalized=normalized, rstrip=strip, single_word=False, special=True)
    return {"content": content, **flags}


# --- CLIP: byte-level BPE with `</w>` word ends, as openai/clip-vit-base-patch32 ships it -------------------------

CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def make_clip_tokenizer(dir: str | Path, *, vocab_size: int = 800) -> int:
    """Write a CLIP tokenizer folder (tokenizer.json, vocab.json, merges.txt, tokenizer_config.json,
    special_tokens_map.json) to `dir`; return its vocabulary size.

    The vocabulary is laid out like OpenAI's: 256 byte symbols, the same 256 with `</w>`, the merges, then
    `<|startoftext|>` and `<|endoftext|>` last, so every byte sequence is encodable (no unknown tokens). It holds
    exactly `vocab_size` entries (at least 515).
    """
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
    from tokenizers.models import BPE

    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    bos, eos = "<|startoftext|>", "<|endoftext|>"

    def pipeline(model: BPE) -> Tokenizer:
        tok = Tokenizer(model)
        tok.normalizer = normalizers.Sequence(
            [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
        )
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        tok.decoder = decoders.ByteLevel()
        return tok

    byte_symbols = pre_tokenizers.ByteLevel.alphabet()
    byte_symbols.sort(key=lambda s: ord(s))
    base = byte_symbols + [s + "</w>" for s in byte_symbols]
    trainer_tok = pipeline(BPE(end_of_word_suffix="</w>", continuing_subword_prefix=""))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=byte_symbols, end_of_word_suffix="</w>", show_progress=False
    )
    trainer_tok.train_from_iterator(corpus(), trainer=trainer)
    merges = [tuple(m) for m in json.loads(trainer_tok.to_str())["model"]["merges"]]
    merges = merges[: vocab_size - len(base) - 2]  # merges are in priority order: a prefix is a valid BPE

    vocab: dict[str, int] = {}
    for token in [*base, *("".join(m) for m in merges), bos, eos]:
        vocab.setdefault(token, len(vocab))
    model = BPE(vocab, merges, continuing_subword_prefix="", end_of_word_suffix="</w>", fuse_unk=False, unk_token=eos)
    tok = pipeline(model)
    tok.add_special_tokens([bos, eos])  # already in the vocab: keeps their ids, marks them special
    tok.post_processor = processors.RobertaProcessing((eos, vocab[eos]), (bos, vocab[bos]), trim_offsets=False)
    tok.save(str(dir / "tokenizer.json"))

    _write_json(dir / "vocab.json", vocab)
    (dir / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    special = {"bos_token": bos, "eos_token": eos, "pad_token": eos, "unk_token": eos}
    _write_json(dir / "special_tokens_map.json", special)
    _write_json(
        dir / "tokenizer_config.json",
        {
            "add_prefix_space": False,
            "added_tokens_decoder": {str(vocab[t]): _added_token(t, normalized=True) for t in (bos, eos)},
            "clean_up_tokenization_spaces": True,
            "do_lower_case": True,
            "errors": "replace",
            "model_max_length": 77,
            "tokenizer_class": "CLIPTokenizer",
            **special,
        },
    )
    return len(vocab)


# --- SigLIP v1: a sentencepiece unigram model (`spiece.model`), T5-style ids: <pad>=0, </s>=1, <unk>=2 ------------


def make_siglip_tokenizer(dir: str | Path, *, vocab_size: int = 300, remove_extra_whitespaces: bool = True) -> int:
    """Write a SigLIP tokenizer folder (spiece.model, tokenizer_config.json, special_tokens_map.json) to `dir`;
    return its vocabulary size. Padding is with `</s>`, as google/siglip-base-patch16-224's files say.

    `remove_extra_whitespaces=False` gives a model that keeps runs of spaces (and a lone "▁") as pieces.
    """
    import sentencepiece as spm

    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=0.995,  # rare CJK characters stay unknown, so `<unk>` is exercised
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        hard_vocab_limit=False,
        remove_extra_whitespaces=remove_extra_whitespaces,
        minloglevel=2,
    )
    (dir / "spiece.model").write_bytes(model.getvalue())
    size = spm.SentencePieceProcessor(model_proto=model.getvalue()).get_piece_size()

    special = {"eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>"}
    _write_json(dir / "special_tokens_map.json", special)
    _write_json(
        dir / "tokenizer_config.json",
        {
            "added_tokens_decoder": {
                str(i): _added_token(t, strip=True) for i, t in enumerate(["<pad>", "</s>", "<unk>"])
            },
            "additional_special_tokens": [],
            "clean_up_tokenization_spaces": True,
            "do_lower_case": True,
            "model_input_names": ["input_ids"],
            "model_max_length": 64,
            "sp_model_kwargs": {},
            "tokenizer_class": "SiglipTokenizer",
            **special,
        },
    )
    return size


# --- SigLIP 2: a Gemma-style tokenizer.json (BPE with byte fallback), <pad>=0 <eos>=1 <bos>=2 <unk>=3 <mask>=4 --


def make_siglip2_tokenizer(dir: str | Path, *, vocab_size: int = 700, tokenizer_class: str = "GemmaTokenizer") -> int:
    """Write a SigLIP 2 tokenizer folder (tokenizer.json, tokenizer_config.json, special_tokens_map.json) to `dir`;
    return its vocabulary size.

    The config follows google/siglip2-base-patch16-224's (`tokenizer_class: GemmaTokenizer`, `add_bos_token: false`,
    `add_eos_token: true`; `padding_side: right` is inferred from transformers#39269, not read). Pass
    `tokenizer_class="Siglip2Tokenizer"` for the class transformers picks for NaFlex (`model_type: siglip2`) repos.
    """
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
    from tokenizers.models import BPE

    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]

    # Train on words that start with "▁" (sentencepiece-style pieces never cross a word boundary).
    trainer_tok = Tokenizer(BPE(unk_token="<unk>"))
    trainer_tok.normalizer = normalizers.Replace(" ", "▁")
    trainer_tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(specials) - len(byte_tokens), limit_alphabet=60, show_progress=False
    )
    trainer_tok.train_from_iterator(corpus(), trainer=trainer)
    trained = json.loads(trainer_tok.to_str())["model"]
    pieces = sorted(trained["vocab"], key=trained["vocab"].get)

    vocab: dict[str, int] = {}
    for token in [*specials, *byte_tokens, *pieces]:
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m) for m in trained["merges"]]
    tok = Tokenizer(BPE(vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True, dropout=None))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens(specials)
    tok.post_processor = processors.TemplateProcessing(
        single="$A <eos>", pair="$A <eos> $B <eos>", special_tokens=[("<eos>", 1)]
    )
    tok.save(str(dir / "tokenizer.json"))

    special = {
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "mask_token": "<mask>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
    }
    _write_json(dir / "special_tokens_map.json", special)
    _write_json(
        dir / "tokenizer_config.json",
        {
            "add_bos_token": False,
            "add_eos_token": True,
            "added_tokens_decoder": {str(i): _added_token(t) for i, t in enumerate(specials)},
            "clean_up_tokenization_spaces": False,
            "model_max_length": 64,
            "padding_side": "right",
            "sp_model_kwargs": {},
            "spaces_between_special_tokens": False,
            "tokenizer_class": tokenizer_class,
            "use_default_system_prompt": False,
            **special,
        },
    )
    return len(vocab)
