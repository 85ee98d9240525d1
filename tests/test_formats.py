"""timm, DeiT and vit_jax / big_vision `.npz` checkpoints, written by these tests through the documented inverse
name tables from transformers' (or jimm's) weights, loaded back strictly and compared at fp32 atol 1e-5.

No real timm checkpoint or timm library is used (timm needs a CUDA torch here): these tests check that jimm's
tables are self-consistent and that the maths equals transformers / the hand-written timm reference.
"""

import json

import numpy as np
import pytest
import torch
from conftest import TINY, hf_model, images, to_torch
from safetensors.numpy import save_file
from timm_reference import timm_forward
from variant_helpers import hf_tensors, randomize

from jimm import VisionTransformer, ViTConfig
from jimm.models.views import FormatMismatchError
from jimm.models.vit.formats import big_vision as bv
from jimm.models.vit.formats import timm, to_foreign
from jimm.models.vit.formats.detect import detect_format
from jimm.models.vit.names import classic_name

VIT_JAX = dict(scanned=False, vit_jax=True, pos_name="Transformer/posembed_input/pos_embedding")
BIG_VISION = dict(scanned=False, vit_jax=False, pos_name="pos_embedding")


def hf_state(hf) -> dict[str, np.ndarray]:
    """transformers' tensors under classic names, without the `vit.` / `deit.` prefix."""
    out = {}
    for name, tensor in hf.state_dict().items():
        name = classic_name(name)
        for prefix in ("vit.", "deit."):
            name = name.removeprefix(prefix)
        out[name] = tensor.detach().numpy().copy()
    return out


def hf_logits(hf, x):
    with torch.no_grad():
        return hf(to_torch(x), interpolate_pos_encoding=True).logits.numpy()


@pytest.fixture(scope="module")
def hf():
    return hf_model(seed=7, layer_norm_eps=1e-6)


def test_timm_safetensors_and_bin_equal_transformers(hf, tmp_path):
    state = to_foreign(timm.rules(ViTConfig(**TINY, layer_norm_eps=1e-6), with_head=True), hf_state(hf))
    assert "blocks.1.attn.qkv.weight" in state and state["blocks.1.attn.qkv.weight"].shape == (45, 15)
    save_file(state, tmp_path / "model.safetensors")
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / "pytorch_model.bin")
    config = ViTConfig(**TINY, layer_norm_eps=1e-6)
    x = images(size=(27, 36), seed=1)
    for path, kwargs in ((tmp_path / "model.safetensors", {}), (tmp_path, {"use_pytorch": True})):
        model = VisionTransformer.from_pretrained(path, config=config, **kwargs)
        np.testing.assert_allclose(np.asarray(model(x)), hf_logits(hf, x), atol=1e-5)


def test_timm_folder_with_timm_config_json_and_img_size(hf, tmp_path):
    state = to_foreign(timm.rules(ViTConfig(**TINY, layer_norm_eps=1e-6), with_head=True), hf_state(hf))
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "vit_tiny_patch3", "num_classes": 13}))
    config = ViTConfig(**TINY, layer_norm_eps=1e-6)
    model = VisionTransformer.from_pretrained(tmp_path, config=config, img_size=24)
    x = images(size=24, seed=2)
    np.testing.assert_allclose(np.asarray(model(x)), hf_logits(hf, x), atol=1e-5)
    # save_pretrained still writes HF format, which transformers loads with no missing or unexpected keys
    from transformers import ViTForImageClassification

    model.save_pretrained(tmp_path / "hf")
    back, info = ViTForImageClassification.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    np.testing.assert_allclose(hf_logits(back.eval(), x), hf_logits(hf, x), atol=1e-5)


def test_timm_deit_distilled_equals_transformers(tmp_path):
    from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher

    torch.manual_seed(1)
    deit = DeiTForImageClassificationWithTeacher(DeiTConfig(**TINY, layer_norm_eps=1e-6)).eval()
    with torch.no_grad():
        for p in deit.parameters():
            p.add_(0.1 * torch.randn_like(p))
    config = ViTConfig(**TINY, layer_norm_eps=1e-6, distilled=True)
    state = to_foreign(timm.rules(config, with_head=True), hf_state(deit))
    assert {"dist_token", "head_dist.weight", "head.weight"} <= set(state)
    save_file(state, tmp_path / "deit.safetensors")
    model = VisionTransformer.from_pretrained(tmp_path / "deit.safetensors", config=config)
    x = images(seed=3)
    np.testing.assert_allclose(np.asarray(model(x)), hf_logits(deit, x), atol=1e-5)


TIMM_VARIANTS = {
    "registers_no_embed_class": dict(num_register_tokens=4, no_embed_class=True),
    "avg_fc_norm": dict(class_token=False, global_pool="avg", fc_norm=True, num_register_tokens=1, no_embed_class=True),
    "map": dict(class_token=False, global_pool="map", no_embed_class=True),
    "layer_scale_qk_norm": dict(layer_scale_init_value=1e-5, qk_norm=True),
    "distilled": dict(distilled=True),
}


@pytest.mark.parametrize("name", list(TIMM_VARIANTS))
def test_timm_variants_infer_config_and_round_trip(name, tmp_path):
    # width 192 is Ti in the size table, so the number of heads is inferred from the width
    # (timm checkpoints also resample position embeddings as timm does: antialiased)
    config = ViTConfig(hidden_size=192, num_hidden_layers=2, num_attention_heads=3, intermediate_size=11, image_size=16,
                       patch_size=4, num_labels=5, layer_norm_eps=1e-6, pos_embed_antialias=True,
                       **TIMM_VARIANTS[name])  # fmt: skip
    model = randomize(VisionTransformer.from_config(config), seed=11, scale=0.1)
    state = to_foreign(timm.rules(config, with_head=True), hf_tensors(model))
    save_file(state, tmp_path / "model.safetensors")
    loaded = VisionTransformer.from_pretrained(tmp_path / "model.safetensors")
    inferred = loaded.config
    if config.layer_scale_init_value is not None:  # the init value is not stored; the loaded gammas are
        inferred = inferred.replace(layer_scale_init_value=config.layer_scale_init_value)
    if config.num_prefix_tokens == 0:  # no prefix tokens: no_embed_class changes nothing and cannot be told
        inferred = inferred.replace(no_embed_class=config.no_embed_class)
    assert inferred == config
    x = images(size=(8, 16), seed=4)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-5)
    np.testing.assert_allclose(np.asarray(loaded(x)), timm_forward(state, config, x), atol=1e-5)


def test_npz_vit_jax_layout_equals_transformers(hf, tmp_path):
    config = ViTConfig(**TINY, layer_norm_eps=1e-6)
    state = to_foreign(bv.rules(config, with_head=True, **VIT_JAX), hf_state(hf))
    assert state["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"].shape == (15, 3, 5)
    assert state["embedding/kernel"].shape == (3, 3, 3, 15)
    np.savez(tmp_path / "vit.npz", **state)
    model = VisionTransformer.from_pretrained(tmp_path / "vit.npz")
    assert model.config == config.replace(num_labels=13)
    x = images(size=(30, 21), seed=5)
    np.testing.assert_allclose(np.asarray(model(x)), hf_logits(hf, x), atol=1e-5)


@pytest.mark.parametrize("scanned", [False, True])
@pytest.mark.parametrize("pool", ["avg", "map", "token"])
def test_npz_big_vision_layouts(scanned, pool, tmp_path):
    variant = {"avg": dict(class_token=False, global_pool="avg"), "map": dict(class_token=False, global_pool="map")}
    config = ViTConfig(**{**TINY, "layer_norm_eps": 1e-6, "no_embed_class": True, **variant.get(pool, {})})
    model = randomize(VisionTransformer.from_config(config), seed=13, scale=0.2)
    state = to_foreign(bv.rules(config, with_head=True, **BIG_VISION), hf_tensors(model))
    if scanned:
        state = bv.pyloop_to_scan(state, config.num_hidden_layers)
        assert state["Transformer/encoderblock/LayerNorm_0/scale"].shape == (2, 15)
        np.testing.assert_array_equal(bv.scan_to_pyloop(state)["Transformer/encoderblock_1/LayerNorm_0/scale"],
                                      state["Transformer/encoderblock/LayerNorm_0/scale"][1])  # fmt: skip
    np.savez(tmp_path / "bv.npz", **{f"params/{k}": v for k, v in state.items()})  # big_vision's wrapper prefix
    loaded = VisionTransformer.from_pretrained(tmp_path / "bv.npz")
    assert loaded.config == config
    x = images(seed=6)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-5)


def test_format_detection_and_strictness(hf, tmp_path):
    assert detect_format(["vit.embeddings.patch_embeddings.projection.weight"]) == "hf"
    assert detect_format(["patch_embed.proj.weight", "blocks.0.norm1.weight"]) == "timm"
    assert detect_format(["params/embedding/kernel"]) == "big_vision"
    with pytest.raises(ValueError, match=r"unknown checkpoint layout \(tensors: conv1.weight, fc.weight\)"):
        detect_format(["conv1.weight", "fc.weight"])
    save_file({"conv1.weight": np.zeros((2, 2), np.float32)}, tmp_path / "resnet.safetensors")
    with pytest.raises(ValueError, match="unknown checkpoint layout"):
        VisionTransformer.from_pretrained(tmp_path / "resnet.safetensors")

    config = ViTConfig(**TINY, layer_norm_eps=1e-6)
    state = to_foreign(timm.rules(config, with_head=True), hf_state(hf))
    extra = {**state, "norm_pre.weight": np.ones(15, np.float32)}
    save_file(extra, tmp_path / "extra.safetensors")
    with pytest.raises(FormatMismatchError, match=r"1 unexpected tensor\(s\):\n    norm_pre.weight"):
        VisionTransformer.from_pretrained(tmp_path / "extra.safetensors", config=config)
    missing = {k: v for k, v in state.items() if k != "blocks.1.mlp.fc2.bias"}
    save_file(missing, tmp_path / "missing.safetensors")
    with pytest.raises(FormatMismatchError, match=r"1 missing tensor\(s\):\n    blocks.1.mlp.fc2.bias"):
        VisionTransformer.from_pretrained(tmp_path / "missing.safetensors", config=config)
    with pytest.raises(ValueError, match="cannot infer the number of heads of a timm ViT of width 15"):
        VisionTransformer.from_pretrained(tmp_path / "extra.safetensors")
    wrong = ViTConfig(**{**TINY, "layer_norm_eps": 1e-6, "intermediate_size": 8})
    with pytest.raises(ValueError, match="wrong shape"):
        save_file(state, tmp_path / "ok.safetensors")
        VisionTransformer.from_pretrained(tmp_path / "ok.safetensors", config=wrong)
