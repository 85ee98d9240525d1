"""jimm.text.Tokenizer against transformers' tokenizers on the same tiny in-process tokenizer folders."""

import json
import logging
import shutil

import numpy as np
import pytest
from tokenizer_fixtures import make_clip_tokenizer, make_siglip2_tokenizer, make_siglip_tokenizer

from jimm.text import Tokenizer

PROMPTS = [
    "a photo of a cat.",
    "A Photo Of A DOG!",
    "  a   blurry\tphoto\nof the   car  ",
    "it's a bird, isn't it? (yes) -- 100% [sure] {ok} #1 @home $5 & more...",
    "Café naïve résumé Zürich São Paulo",
    "日本の猫 and 中文的狗 🐱🐶🚗",
    "",
    "   ",
    "<|endoftext|> special <|startoftext|> tokens </s> <eos> <pad> in the text",
    "ends with </s>",
    "</s> at the start",
    "<pad>first",
    "▁leading ▁underlines",
]
LONG = " ".join(["a photo of a very large truck"] * 30)
FAMILIES = ["clip", "siglip", "siglip2"]
# SiglipTokenizer warns on every text that already ends with </s> ("ends with </s>" above).
pytestmark = pytest.mark.filterwarnings("ignore:This sequence already has </s>:UserWarning")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    sizes = {
        "clip": make_clip_tokenizer(root / "clip"),
        "siglip": make_siglip_tokenizer(root / "siglip"),
        "siglip2": make_siglip2_tokenizer(root / "siglip2"),
    }
    return {name: root / name for name in sizes}, sizes


@pytest.fixture(scope="module")
def hf(folders):
    """transformers' tokenizers. SigLIP 2 is `Siglip2Tokenizer`, the class that lowercases (module docstring of
    jimm.text.tokenizer); `AutoTokenizer` is checked separately."""
    from transformers import AutoTokenizer, Siglip2Tokenizer

    paths, _ = folders
    return {
        "clip": AutoTokenizer.from_pretrained(paths["clip"]),
        "siglip": AutoTokenizer.from_pretrained(paths["siglip"]),
        "siglip2": Siglip2Tokenizer.from_pretrained(paths["siglip2"]),
    }


@pytest.fixture(scope="module")
def ours(folders):
    paths, _ = folders
    return {name: Tokenizer.from_pretrained(path) for name, path in paths.items()}


def hf_ids(tokenizer, texts, max_length, padding="max_length"):
    out = tokenizer(
        texts, padding=padding, truncation=True, max_length=max_length, return_attention_mask=True, return_tensors="np"
    )
    return out["input_ids"], out["attention_mask"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("padding", ["max_length", "longest"])
def test_ids_and_mask_match_transformers(ours, hf, family, padding):
    tok = ours[family]
    texts = [*PROMPTS, LONG] if padding == "max_length" else PROMPTS
    out = tok(texts, padding=padding, return_attention_mask=True)
    ids, mask = hf_ids(hf[family], texts, tok.max_length, padding)
    assert out["input_ids"].dtype == np.int32 and out["attention_mask"].dtype == np.int32
    if padding == "longest":
        assert out["input_ids"].shape[1] < tok.max_length
    np.testing.assert_array_equal(out["input_ids"], ids)
    np.testing.assert_array_equal(out["attention_mask"], mask)


@pytest.mark.parametrize("family", FAMILIES)
def test_truncation_keeps_eos_last(ours, hf, family):
    tok = ours[family]
    out = tok([*PROMPTS, LONG], max_length=9, return_attention_mask=True)
    ids, mask = hf_ids(hf[family], [*PROMPTS, LONG], 9)
    np.testing.assert_array_equal(out["input_ids"], ids)
    np.testing.assert_array_equal(out["attention_mask"], mask)
    assert out["input_ids"].shape == (len(PROMPTS) + 1, 9)
    assert out["input_ids"][-1, -1] == tok.eos_id and out["attention_mask"][-1].all()


@pytest.mark.parametrize("family", FAMILIES)
def test_attributes_match_transformers(ours, hf, folders, family):
    tok, ref = ours[family], hf[family]
    _, sizes = folders
    assert tok.family == family
    assert (tok.pad_id, tok.eos_id, tok.bos_id) == (ref.pad_token_id, ref.eos_token_id, ref.bos_token_id)
    assert tok.vocab_size == sizes[family] == len(ref)
    assert tok.max_length == {"clip": 77, "siglip": 64, "siglip2": 64}[family]
    first = tok("a cat")["input_ids"][0]
    assert (first[0] == tok.bos_id) == (family == "clip")
    assert first[-1] == tok.pad_id  # right padding
    assert sizes[family] < 1000


def test_fixed_shape_and_single_string(ours):
    out = ours["siglip2"]("a photo of a cat")
    assert list(out) == ["input_ids"] and out["input_ids"].shape == (1, 64)


def test_auto_tokenizer_classes(folders, tmp_path):
    """The fixtures load in AutoTokenizer as their hub counterparts do (SigLIP 2 NaFlex picks Siglip2Tokenizer)."""
    from transformers import AutoTokenizer

    paths, _ = folders
    names = {f: type(AutoTokenizer.from_pretrained(paths[f])).__name__ for f in FAMILIES}
    assert names == {"clip": "CLIPTokenizer", "siglip": "SiglipTokenizer", "siglip2": "GemmaTokenizer"}
    make_siglip2_tokenizer(tmp_path, tokenizer_class="Siglip2Tokenizer")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "siglip2"}))
    assert type(AutoTokenizer.from_pretrained(tmp_path)).__name__ == "Siglip2Tokenizer"
    assert Tokenizer.from_pretrained(tmp_path).family == "siglip2"


def test_siglip2_lowercases_unlike_gemma_tokenizer(ours, folders):
    """AutoTokenizer gives fixed-resolution SigLIP 2 a GemmaTokenizer, which keeps capitals; we lowercase as
    big_vision trained it, so we equal GemmaTokenizer on lowercased text only."""
    from transformers import GemmaTokenizer

    paths, _ = folders
    gemma = GemmaTokenizer.from_pretrained(paths["siglip2"])
    texts = ["A Photo Of A DOG!", "a Car"]
    ours_ids = ours["siglip2"](texts)["input_ids"]
    np.testing.assert_array_equal(ours_ids, hf_ids(gemma, [t.lower() for t in texts], 64)[0])
    assert (ours_ids != hf_ids(gemma, texts, 64)[0]).any()


@pytest.mark.parametrize(
    "change", ["no_lower_case", "legacy_special_tokens_map", "keep_whitespace", "keep_whitespace_extra_special"]
)
def test_siglip_config_variants(folders, tmp_path, change):
    """do_lower_case=False; a config without added_tokens_decoder (special_tokens_map.json then counts); a
    sentencepiece model that keeps extra whitespace, where SiglipTokenizer drops a lone leading "▁" before a
    special token (named, or listed in additional_special_tokens, not merely an added token)."""
    from transformers import SiglipTokenizer

    paths, _ = folders
    folder = shutil.copytree(paths["siglip"], tmp_path / "siglip")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    if change == "no_lower_case":
        config["do_lower_case"] = False
    elif change.startswith("keep_whitespace"):
        make_siglip_tokenizer(folder, remove_extra_whitespaces=False)
        config["additional_special_tokens"] = ["<pad>"] if change.endswith("extra_special") else []
    else:
        del config["added_tokens_decoder"]
        config["pad_token"] = "<pad>"  # overridden by special_tokens_map.json's "</s>", as in transformers
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    tok = Tokenizer.from_pretrained(folder)
    ids, mask = hf_ids(SiglipTokenizer.from_pretrained(folder), PROMPTS, 64)
    out = tok(PROMPTS, return_attention_mask=True)
    np.testing.assert_array_equal(out["input_ids"], ids)
    np.testing.assert_array_equal(out["attention_mask"], mask)
    assert tok.pad_id == tok.eos_id == 1


def test_truncation_warns_once(folders, caplog):
    paths, _ = folders
    tok = Tokenizer.from_pretrained(paths["clip"])
    with caplog.at_level(logging.WARNING, logger="jimm.text.tokenizer"):
        tok([LONG, "short"])
        tok([LONG])
        tok(["short"])
    assert len(caplog.records) == 1
    assert "1 of 2 texts are longer than max_length=77" in caplog.records[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="jimm.text.tokenizer"):
        Tokenizer.from_pretrained(paths["clip"])([LONG])  # a new tokenizer warns again
    assert len(caplog.records) == 1


def _write_config(folder, config):
    (folder / "config.json").write_text(json.dumps(config))


def test_max_length_from_model_config(folders, tmp_path):
    paths, _ = folders
    folder = shutil.copytree(paths["siglip"], tmp_path / "model")
    # so400m-224: the tokenizer says 64, the text tower has 16 positions.
    _write_config(folder, {"model_type": "siglip", "text_config": {"max_position_embeddings": 16}})
    assert Tokenizer.from_pretrained(folder).max_length == 16
    assert Tokenizer.from_pretrained(folder)("a cat")["input_ids"].shape == (1, 16)
    assert Tokenizer.from_pretrained(folder, max_length=24).max_length == 24
    _write_config(folder, {"model_type": "siglip_text_model", "max_position_embeddings": 12})
    assert Tokenizer.from_pretrained(folder).max_length == 12
    _write_config(folder, {"model_type": "siglip", "text_config": {}})  # minimal hub config: the tokenizer's 64
    assert Tokenizer.from_pretrained(folder).max_length == 64
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": int(1e30)}))
    assert Tokenizer.from_pretrained(folder).max_length == 64  # HF's "no limit" sentinel: the family default


@pytest.mark.parametrize(
    ("family", "model_type", "expected"),
    [("clip", "clip", "clip"), ("siglip", "siglip", "siglip"), ("siglip2", "siglip", "siglip2")],
)
def test_family_from_model_type(folders, tmp_path, family, model_type, expected):
    """Without tokenizer_config.json the model_type decides; SigLIP 2 fixed-res is "siglip" with a tokenizer.json."""
    paths, _ = folders
    folder = shutil.copytree(paths[family], tmp_path / family)
    (folder / "tokenizer_config.json").unlink()
    _write_config(folder, {"model_type": model_type})
    assert Tokenizer.from_pretrained(folder).family == expected


def test_save_round_trip(ours, tmp_path):
    for family, tok in ours.items():
        written = tok.save(tmp_path / family)
        assert sorted(p.name for p in written) == sorted(p.name for p in tok.files)
        assert {"tokenizer_config.json", tok._family.vocab_file} <= {p.name for p in written}
        again = Tokenizer.from_pretrained(tmp_path / family)
        np.testing.assert_array_equal(again(PROMPTS)["input_ids"], tok(PROMPTS)["input_ids"])
        assert tok.save(tmp_path / family) == written  # saving onto itself is fine


def test_bad_input_errors(ours, folders, tmp_path):
    paths, _ = folders
    tok = ours["clip"]
    with pytest.raises(ValueError, match="empty list"):
        tok([])
    with pytest.raises(TypeError, match=r"texts\[1\] is a int"):
        tok(["a", 3])
    with pytest.raises(ValueError, match="padding='left'"):
        tok("a", padding="left")
    with pytest.raises(ValueError, match="max_length=2 must be an int above 2"):
        tok("a", max_length=2)
    with pytest.raises(ValueError, match="family='bert'"):
        Tokenizer.from_pretrained(paths["clip"], family="bert")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        Tokenizer.from_pretrained(tmp_path / "missing")


def test_missing_and_unreadable_files(folders, tmp_path):
    paths, _ = folders
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text('{"model_type": "clip"}')
    with pytest.raises(
        FileNotFoundError, match=r"empty holds no tokenizer: looked for tokenizer.json and spiece.model"
    ):
        Tokenizer.from_pretrained(empty)

    folder = shutil.copytree(paths["siglip"], tmp_path / "siglip")
    (folder / "tokenizer.json").write_text("{}")  # a stray file: the config still says SiglipTokenizer
    (folder / "spiece.model").unlink()
    with pytest.raises(FileNotFoundError, match="has no spiece.model, which a siglip tokenizer is read from"):
        Tokenizer.from_pretrained(folder)
    (folder / "spiece.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(ValueError, match="spiece.model is not a readable sentencepiece model"):
        Tokenizer.from_pretrained(folder)

    folder = shutil.copytree(paths["clip"], tmp_path / "clip")
    (folder / "tokenizer.json").write_text('{"model": 1}')
    with pytest.raises(ValueError, match="tokenizer.json is not a readable tokenizers file"):
        Tokenizer.from_pretrained(folder)
    (folder / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer_config.json is not valid JSON"):
        Tokenizer.from_pretrained(folder)

    folder = shutil.copytree(paths["siglip2"], tmp_path / "bad_pad")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "pad_token": "<nope>"}))
    with pytest.raises(
        ValueError, match=r"pad token '<nope>' of .*bad_pad is not in its vocabulary \(tokenizer.json\)"
    ):
        Tokenizer.from_pretrained(folder)

    folder = shutil.copytree(paths["siglip2"], tmp_path / "unknown")
    (folder / "tokenizer_config.json").write_text('{"tokenizer_class": "T5Tokenizer"}')
    with pytest.raises(ValueError, match=r"cannot tell which tokenizer family .* pass family="):
        Tokenizer.from_pretrained(folder)
    assert Tokenizer.from_pretrained(folder, family="siglip2").family == "siglip2"


@pytest.mark.parametrize("single", ["$A <eos>", "<bos> $A"])
def test_siglip2_special_tokens_from_tokenizer_json(folders, tmp_path, caplog, single):
    """transformers 5.24 ignores add_bos_token / add_eos_token when a tokenizer.json exists: its post-processor
    decides. So do we, with a warning when that differs from SigLIP 2 training (no BOS, EOS last)."""
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import processors
    from transformers import Siglip2Tokenizer

    paths, _ = folders
    folder = shutil.copytree(paths["siglip2"], tmp_path / "siglip2")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "add_bos_token": True}))
    rust = RustTokenizer.from_file(str(folder / "tokenizer.json"))
    rust.post_processor = processors.TemplateProcessing(single=single, special_tokens=[("<bos>", 2), ("<eos>", 1)])
    rust.save(str(folder / "tokenizer.json"))
    with caplog.at_level(logging.WARNING, logger="jimm.text.tokenizer"):
        tok = Tokenizer.from_pretrained(folder)
    messages = [r.getMessage() for r in caplog.records]
    out = tok([*PROMPTS, LONG], max_length=12)["input_ids"]
    np.testing.assert_array_equal(out, hf_ids(Siglip2Tokenizer.from_pretrained(folder), [*PROMPTS, LONG], 12)[0])
    trained = single == "$A <eos>"
    assert (tok.add_bos, tok.add_eos) == (not trained, trained)
    assert (out[-1, -1] == tok.eos_id) == trained and (out[:, 0] == tok.bos_id).all() == (not trained)
    assert len(messages) == (0 if trained else 1)
    assert trained or "puts [2] before and [] after each text, but siglip2 text towers" in messages[0]
