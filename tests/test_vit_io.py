"""Loading and saving HF checkpoints: formats, strictness, round trips, hub cache, and bad input."""

import json
import logging
import os
import pickle
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import hf_model, images, to_torch
from flax import nnx
from safetensors.torch import save_file
from transformers import ViTForImageClassification, ViTModel

import jimm
from jimm.io.atomic_save import MANIFEST, MixedFolderError
from jimm.io.safetensors import SafetensorsError
from jimm.io.state import CheckpointMismatchError

ATOL = 1e-5


def logits_of(hf, x):
    with torch.no_grad():
        return hf(to_torch(x)).logits.numpy()


def params_of(model):
    return {path: np.asarray(v.get_value()) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def assert_same_params(a, b):
    pa, pb = params_of(a), params_of(b)
    assert pa.keys() == pb.keys()
    for key in pa:
        np.testing.assert_array_equal(pa[key], pb[key], err_msg=str(key))


@pytest.fixture
def hf():
    return hf_model(
        num_labels=4,
        id2label={0: "cat", 1: "dog", 2: "fox", 3: "owl"},
        label2id={"cat": 0, "dog": 1, "fox": 2, "owl": 3},
    )


@pytest.fixture
def saved(tmp_path, hf):
    path = tmp_path / "hf"
    hf.save_pretrained(path)
    return path


def test_round_trip_is_bit_exact_and_loads_cleanly_in_transformers(tmp_path, hf, saved):
    model = jimm.VisionTransformer.from_pretrained(saved)
    out = tmp_path / "ours"
    model.save_pretrained(out)
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "preprocessor_config.json", MANIFEST}
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "vit" and config["architectures"] == ["ViTForImageClassification"]
    assert config["id2label"] == {"0": "cat", "1": "dog", "2": "fox", "3": "owl"}
    assert config["label2id"]["owl"] == 3
    reloaded_hf, info = ViTForImageClassification.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    x = images()
    np.testing.assert_allclose(logits_of(reloaded_hf.eval(), x), logits_of(hf, x), atol=ATOL, rtol=0)
    again = jimm.VisionTransformer.from_pretrained(out)
    assert_same_params(model, again)
    assert again.config.labels == {0: "cat", 1: "dog", 2: "fox", 3: "owl"}
    from safetensors import safe_open

    with safe_open(out / "model.safetensors", "pt") as f:
        assert f.metadata()["format"] == "pt" and set(f.metadata()) == {"format", "jimm_save_id"}
        assert "vit.encoder.layer.0.attention.attention.query.weight" in f.keys()


def test_headless_model_saves_as_vitmodel(tmp_path):
    hf = hf_model(headless=True)
    hf.save_pretrained(tmp_path / "hf")
    model = jimm.VisionTransformer.from_pretrained(tmp_path / "hf")
    model.save_pretrained(tmp_path / "ours")
    reloaded, info = ViTModel.from_pretrained(tmp_path / "ours", output_loading_info=True)  # with its pooler
    assert not info["missing_keys"] and not info["unexpected_keys"]
    x = images()
    with torch.no_grad():
        ref, got = hf(to_torch(x)), reloaded(to_torch(x))
    np.testing.assert_allclose(got.last_hidden_state.numpy(), ref.last_hidden_state.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(got.pooler_output.numpy(), ref.pooler_output.numpy(), atol=ATOL, rtol=0)


def test_sharded_save_and_load(tmp_path, hf, saved):
    model = jimm.VisionTransformer.from_pretrained(saved)
    out = tmp_path / "sharded"
    model.save_pretrained(out, max_shard_size=4000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and all((out / s).is_file() for s in shards)
    assert not (out / "model.safetensors").exists()
    assert_same_params(model, jimm.VisionTransformer.from_pretrained(out))
    x = images()
    np.testing.assert_allclose(
        logits_of(ViTForImageClassification.from_pretrained(out).eval(), x), logits_of(hf, x), atol=ATOL
    )
    # saving unsharded into the same folder removes the stale shards
    model.save_pretrained(out)
    assert not list(out.glob("model-*")) and not (out / "model.safetensors.index.json").exists()


def test_pytorch_bin_and_v5_names(tmp_path, hf):
    x = images()
    ref = logits_of(hf, x)
    bin_dir = tmp_path / "bin"
    hf.save_pretrained(bin_dir)
    state = hf.state_dict()  # transformers v5 in-memory names: vit.layers.N.attention.q_proj ...
    assert any(".q_proj." in k for k in state)
    (bin_dir / "model.safetensors").unlink()
    torch.save(state, bin_dir / "pytorch_model.bin")
    model = jimm.VisionTransformer.from_pretrained(bin_dir)
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(x))), ref, atol=ATOL, rtol=0)

    v5_dir = tmp_path / "v5"
    shutil.copytree(bin_dir, v5_dir)
    (v5_dir / "pytorch_model.bin").unlink()
    save_file({k: v.contiguous() for k, v in state.items()}, v5_dir / "model.safetensors", metadata={"format": "pt"})
    model = jimm.VisionTransformer.from_pretrained(v5_dir)
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(x))), ref, atol=ATOL, rtol=0)


def test_use_pytorch_prefers_bin(tmp_path, hf, saved):
    state = {k: torch.zeros_like(v) for k, v in hf.state_dict().items()}
    torch.save(state, saved / "pytorch_model.bin")
    zeros = jimm.VisionTransformer.from_pretrained(saved, use_pytorch=True)
    assert all(np.all(p == 0) for p in params_of(zeros).values())
    assert not all(np.all(p == 0) for p in params_of(jimm.VisionTransformer.from_pretrained(saved)).values())


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_never_executes(tmp_path, saved):
    marker = tmp_path / "pwned"
    _Exploit.marker = marker
    (saved / "model.safetensors").unlink()
    with open(saved / "pytorch_model.bin", "wb") as f:
        pickle.dump({"vit.embeddings.cls_token": _Exploit()}, f)
    with pytest.raises(ValueError, match="weights-only"):
        jimm.VisionTransformer.from_pretrained(saved)
    assert not marker.exists()


@pytest.mark.parametrize("stored", [torch.bfloat16, torch.float16])
def test_any_stored_dtype_is_cast_to_param_dtype(tmp_path, hf, stored):
    hf.to(stored).save_pretrained(tmp_path)
    hf.float()
    model = jimm.VisionTransformer.from_pretrained(tmp_path)
    assert {p.dtype for p in params_of(model).values()} == {np.dtype(np.float32)}
    x = images()
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(x))), logits_of(hf.to(stored).float(), x), atol=ATOL)
    half = jimm.VisionTransformer.from_pretrained(tmp_path, param_dtype=jnp.bfloat16, dtype=jnp.bfloat16)
    assert {str(p.dtype) for p in params_of(half).values()} == {"bfloat16"}
    half.save_pretrained(tmp_path / "bf16")
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    assert_same_params(half, jimm.VisionTransformer.from_pretrained(tmp_path / "bf16", param_dtype=jnp.bfloat16))


def test_strict_loading_lists_every_problem(tmp_path, hf, saved):
    state = {k: v.clone() for k, v in hf.state_dict().items()}
    from safetensors.torch import load_file

    state = load_file(saved / "model.safetensors")
    del state["vit.encoder.layer.1.output.dense.bias"]
    del state["vit.layernorm.weight"]
    state["vit.encoder.layer.0.attention.attention.rel_pos.weight"] = torch.zeros(3)
    state["vit.embeddings.position_embeddings"] = torch.zeros(1, 50, 15)
    state["vit.encoder.layer.0.layernorm_before.bias"] = torch.zeros(15, dtype=torch.int32)
    save_file(state, saved / "model.safetensors")
    with pytest.raises(CheckpointMismatchError) as err:
        jimm.VisionTransformer.from_pretrained(saved)
    text = str(err.value)
    for expected in (
        "2 missing",
        "vit.encoder.layer.1.output.dense.bias",
        "vit.layernorm.weight",
        "1 unexpected",
        "rel_pos.weight",
        "1 wrong shape",
        "position_embeddings: checkpoint [1, 50, 15], model expects [1, 122, 15]",
        "1 wrong dtype",
        "layernorm_before.bias: int32",
    ):
        assert expected in text, f"{expected!r} not in:\n{text}"


def test_new_head_only_when_asked_and_said(tmp_path, hf, saved, caplog):
    same = jimm.VisionTransformer.from_pretrained(saved)
    with caplog.at_level(logging.WARNING, logger="jimm"):
        replaced = jimm.VisionTransformer.from_pretrained(saved, num_classes=7)
    assert "replacing the classifier head (4 -> 7 classes)" in caplog.text
    assert replaced.classifier.kernel.shape == (15, 7) and replaced.config.num_labels == 7
    p_same, p_new = params_of(same), params_of(replaced)
    for key in p_same:
        if key[0] != "classifier":
            np.testing.assert_array_equal(p_same[key], p_new[key])
    # other class names (same count): a new head too, and said; the same names keep the head (reordered if needed)
    with caplog.at_level(logging.WARNING, logger="jimm"):
        relabelled = jimm.VisionTransformer.from_pretrained(saved, id2label={0: "a", 1: "b", 2: "c", 3: "d"})
    assert "replacing the classifier head (new label names)" in caplog.text and relabelled.config.labels[3] == "d"
    assert not np.array_equal(params_of(relabelled)[("classifier", "kernel")], p_same[("classifier", "kernel")])
    kept = jimm.VisionTransformer.from_pretrained(saved, id2label={0: "cat", 1: "dog", 2: "fox", 3: "owl"})
    np.testing.assert_array_equal(params_of(kept)[("classifier", "kernel")], p_same[("classifier", "kernel")])


def test_headless_checkpoint_needs_explicit_head(tmp_path):
    hf_model(headless=True).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="has no classifier head; pass num_classes"):
        jimm.VisionTransformer.from_pretrained(tmp_path, do_classification=True)
    model = jimm.VisionTransformer.from_pretrained(tmp_path, num_classes=3)
    assert model(jnp.asarray(images())).shape == (2, 3)


def test_hub_repo_from_offline_cache(tmp_path, hf, saved, monkeypatch):
    snapshot = tmp_path / "cache" / "models--acme--tiny-vit" / "snapshots" / "0123456789abcdef"
    shutil.copytree(saved, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123456789abcdef")
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    model = jimm.VisionTransformer.from_pretrained("acme/tiny-vit", cache_dir=tmp_path / "cache")
    x = images()
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(x))), logits_of(hf, x), atol=ATOL)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="not in the cache"):
        jimm.VisionTransformer.from_pretrained("acme/missing-vit", cache_dir=tmp_path / "cache")


def test_atomic_save_keeps_previous_files_on_crash(tmp_path, saved, monkeypatch):
    model = jimm.VisionTransformer.from_pretrained(saved)
    out = tmp_path / "out"
    model.save_pretrained(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    from jimm.io import safetensors as st

    real = st.write_safetensors

    def crash(path, tensors, metadata=None):
        tensors = list(tensors)
        real(path, tensors[:3], metadata)
        raise KeyboardInterrupt("simulated crash mid-save")

    monkeypatch.setattr("jimm.io.model_folder.write_safetensors", crash)
    bigger = jimm.VisionTransformer.from_pretrained(saved, num_classes=9)
    with pytest.raises(KeyboardInterrupt):
        bigger.save_pretrained(out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "not fully covered.*truncated"),
        (lambda p: p.write_bytes(b"\x08" + b"\x00" * 7 + b"not json"), "invalid JSON in header"),
        (lambda p: p.write_bytes(b"abc"), "header too small"),
    ],
    ids=["truncated", "bad-header", "tiny"],
)
def test_corrupt_safetensors_is_named(saved, corrupt, message):
    corrupt(saved / "model.safetensors")
    with pytest.raises(SafetensorsError, match=message) as err:
        jimm.VisionTransformer.from_pretrained(saved)
    assert "model.safetensors" in str(err.value)


def test_bad_index_files(tmp_path, saved):
    model = jimm.VisionTransformer.from_pretrained(saved)
    model.save_pretrained(tmp_path / "s", max_shard_size=4000)
    index_path = tmp_path / "s" / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = "model-99999-of-99999.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(MixedFolderError, match="model.safetensors.index.json is not the file jimm's last save"):
        jimm.VisionTransformer.from_pretrained(tmp_path / "s")  # hand-edited after jimm saved it
    (tmp_path / "s" / MANIFEST).unlink()  # as a folder written by another tool
    with pytest.raises(FileNotFoundError, match="model-99999-of-99999.safetensors"):
        jimm.VisionTransformer.from_pretrained(tmp_path / "s")
    index["weight_map"][first] = "../hf/model.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(ValueError, match="not a file beside it"):
        jimm.VisionTransformer.from_pretrained(tmp_path / "s")


def test_bad_configs(tmp_path, saved):
    config_path = saved / "config.json"
    good = json.loads(config_path.read_text())
    config_path.write_text("{not json")
    with pytest.raises(ValueError, match=r"config.json is not valid JSON"):
        jimm.VisionTransformer.from_pretrained(saved)
    for change, message in (
        ({"num_attention_heads": 4}, "not divisible by num_attention_heads=4"),
        ({"hidden_act": "swish_glu"}, "hidden_act='swish_glu' is not supported"),
        ({"use_mask_token": True}, "use_mask_token=True"),
        ({"rope_theta": 10000.0}, "rope_theta=10000.0 (unknown field)"),
        ({"model_type": "swin"}, "model_type='swin'"),
        ({"model_type": "deit"}, "1 missing tensor(s):\n    vit.embeddings.distillation_token"),
        ({"image_size": 2}, "image height 2 is smaller than one patch (height 3)"),
    ):
        config_path.write_text(json.dumps({**good, **change}))
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            jimm.VisionTransformer.from_pretrained(saved)
    with pytest.raises(FileNotFoundError, match="has no HF config.json and no single model.safetensors"):
        jimm.VisionTransformer.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"nowhere is not a model directory \(no such folder\)"):
        jimm.VisionTransformer.from_pretrained(tmp_path / "nowhere")


def test_bad_images_get_clear_errors():
    model = jimm.VisionTransformer(
        num_classes=3, img_size=12, patch_size=4, num_layers=1, num_heads=2, mlp_dim=8, hidden_size=8
    )
    with pytest.raises(ValueError, match="expected NHWC images"):
        model(jnp.zeros((12, 12, 3)))
    with pytest.raises(ValueError, match="NCHW input"):
        model(jnp.zeros((1, 3, 12, 12)))
    with pytest.raises(ValueError, match=r"image size 3x12 is smaller than one patch \(4x4\)"):
        model(jnp.zeros((1, 3, 12, 3)))
    assert model(jnp.zeros((1, 13, 12, 3))).shape == (1, 3)  # not a multiple: the whole 3 x 3 patches
    assert model(jnp.zeros((1, 16, 20, 3))).shape == (1, 3)  # any multiple of the patch: pos-embed resampled


def test_loading_under_jit_free_constructor_matches_rng_argument(tmp_path, saved):
    a = jimm.VisionTransformer.from_pretrained(saved, num_classes=6, rngs=nnx.Rngs(1))
    b = jimm.VisionTransformer.from_pretrained(saved, num_classes=6, rngs=nnx.Rngs(1))
    c = jimm.VisionTransformer.from_pretrained(saved, num_classes=6, rngs=nnx.Rngs(2))
    ka, kb, kc = (np.asarray(m.classifier.kernel.get_value()) for m in (a, b, c))
    np.testing.assert_array_equal(ka, kb)
    assert not np.allclose(ka, kc)
    assert jax.tree.leaves(nnx.state(a, nnx.RngState))  # dropout streams exist and are concrete


def test_same_labels_in_another_order_reorder_the_head_and_new_names_replace_it(tmp_path, caplog):
    model = jimm.VisionTransformer(
        num_classes=3, img_size=8, patch_size=4, num_layers=1, num_heads=2, mlp_dim=6, hidden_size=4,
        id2label={0: "cat", 1: "dog", 2: "emu"},
    )  # fmt: skip
    model.save_pretrained(tmp_path / "m")
    x = np.random.RandomState(0).rand(2, 8, 8, 3).astype(np.float32)
    reference = np.asarray(model(x))
    # a dataset whose folders sort as emu, cat, dog: the head's rows follow the names, not the positions
    reordered = jimm.VisionTransformer.from_pretrained(tmp_path / "m", id2label={0: "emu", 1: "cat", 2: "dog"})
    np.testing.assert_array_equal(np.asarray(reordered(x)), reference[:, [2, 0, 1]])
    reordered.save_pretrained(tmp_path / "r")
    again = jimm.VisionTransformer.from_pretrained(tmp_path / "r")
    assert again.config.id2label == {0: "emu", 1: "cat", 2: "dog"}
    np.testing.assert_array_equal(np.asarray(again(x)), reference[:, [2, 0, 1]])
    with caplog.at_level(logging.WARNING):
        renamed = jimm.VisionTransformer.from_pretrained(tmp_path / "m", id2label={0: "ant", 1: "bee", 2: "cow"})
    assert "replacing the classifier head (new label names)" in caplog.text
    assert not np.allclose(np.asarray(renamed(x)), reference)


def test_a_config_deeper_than_the_checkpoint_fails_fast(saved):
    config = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 10**30}))
    with pytest.raises(CheckpointMismatchError, match=r"asks for 10{30} layers but the checkpoint holds 2"):
        jimm.VisionTransformer.from_pretrained(saved)
