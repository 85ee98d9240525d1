"""DINOv2 (plain, registers, giant's SwiGLU, classifiers) against transformers at fp32: outputs at several sizes,
the legacy torch-hub resampling, strict loading, v5 names, round trips both ways, torch-hub / timm layouts,
dispatch, bad input, and training a DINOv2 classifier."""

import json
import math
import types

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers as T
from conftest import images, to_torch
from flax import nnx
from safetensors.numpy import load_file, save_file

import jimm
from jimm.io.state import CheckpointMismatchError
from jimm.models.registry import model_class

ATOL = 1e-5
TINY = dict(hidden_size=15, num_hidden_layers=2, num_attention_heads=3, mlp_ratio=3, image_size=21, patch_size=3)
SIZES = [(21, 21), (15, 27), (33, 33)]  # native 7x7 grid, a non-square one, a larger one
VARIANTS = {  # name: (transformers class, its config class, config overrides)
    "plain": (T.Dinov2Model, T.Dinov2Config, {}),
    "registers": (T.Dinov2WithRegistersModel, T.Dinov2WithRegistersConfig, {"num_register_tokens": 2}),
    "swiglu": (T.Dinov2Model, T.Dinov2Config, {"use_swiglu_ffn": True}),
    "plain_head": (  # with the other fields that change the maths
        T.Dinov2ForImageClassification,
        T.Dinov2Config,
        {
            "num_labels": 5,
            "qkv_bias": False,
            "use_mask_token": False,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
        },
    ),
    "registers_head": (
        T.Dinov2WithRegistersForImageClassification,
        T.Dinov2WithRegistersConfig,
        {"num_labels": 5, "num_register_tokens": 3},
    ),
}


# One compiled program per model, for all its input sizes at once (compiling dominates these tests' time).
features_of = nnx.jit(lambda model, xs: [model.forward_features(x) for x in xs])
outputs_of = nnx.jit(lambda model, xs: [(model.hidden_states(x), model(x)) for x in xs])


def build(name, seed=0, **overrides):
    """A tiny random transformers DINOv2 in eval mode, every parameter perturbed (LayerScale, norms, tokens)."""
    cls, config_cls, kw = VARIANTS[name]
    torch.manual_seed(seed)
    model = cls(config_cls(**{**TINY, **kw, **overrides}))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def backbone(hf):
    return getattr(hf, "dinov2", None) or getattr(hf, "dinov2_with_registers", None) or hf


def params_of(model):
    return {path: np.asarray(v.get_value()) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def assert_same_params(a, b):
    pa, pb = params_of(a), params_of(b)
    assert pa.keys() == pb.keys()
    for key in pa:
        np.testing.assert_array_equal(pa[key], pb[key], err_msg=str(key))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each variant built once and saved by transformers: {name: (hf model, folder)}."""
    out = {}
    for name in VARIANTS:
        path = tmp_path_factory.mktemp(name)
        hf = build(name)
        hf.save_pretrained(path)
        out[name] = (hf, path)
    return out


@pytest.mark.parametrize("name", VARIANTS)
def test_outputs_match_transformers_at_three_sizes(saved, name):
    hf, path = saved[name]
    model = jimm.DINOv2Model.from_pretrained(path)
    assert model.do_classification == ("head" in name)
    sizes = SIZES[:2] if "head" in name else SIZES  # the heads' backbones are the variants above
    xs = [images(size=size) for size in sizes]
    for size, x, (hidden, out) in zip(sizes, xs, outputs_of(model, [jnp.asarray(x) for x in xs]), strict=True):
        with torch.no_grad():
            ref = backbone(hf)(to_torch(x), output_hidden_states=True)
            expected = hf(to_torch(x)).logits.numpy() if model.do_classification else ref.pooler_output.numpy()
        assert len(hidden) == len(ref.hidden_states) == TINY["num_hidden_layers"] + 1
        for layer, (a, b) in enumerate(zip(hidden, ref.hidden_states, strict=True)):
            np.testing.assert_allclose(np.asarray(a), b.numpy(), atol=ATOL, rtol=0, err_msg=f"{size} layer {layer}")
        features = model.encoder.final_norm(hidden[-1])
        np.testing.assert_allclose(np.asarray(features), ref.last_hidden_state.numpy(), atol=ATOL, rtol=0)
        np.testing.assert_allclose(np.asarray(out), expected, atol=ATOL, rtol=0, err_msg=str(size))


@pytest.mark.parametrize("name", ["plain", "registers"])
def test_518_px_checkpoint_on_224_px_images(tmp_path, name):
    overrides = dict(image_size=518, patch_size=14, num_hidden_layers=1)
    hf = build(name, seed=1, **overrides)
    hf.save_pretrained(tmp_path)
    model = jimm.DINOv2Model.from_pretrained(tmp_path)
    x = images(batch=1, size=224)
    with torch.no_grad():
        ref = hf(to_torch(x))
    assert ref.last_hidden_state.shape[1] == 1 + model.config.num_register_tokens + 16 * 16
    np.testing.assert_allclose(np.asarray(features_of(model, [jnp.asarray(x)])[0]), ref.last_hidden_state, atol=ATOL)


def hub_interpolate_pos_encoding(self, embeddings, height, width):
    """facebookresearch/dinov2's `interpolate_pos_encoding` with `interpolate_offset=0.1` (the torch-hub default)."""
    pos = self.position_embeddings.float()
    n, dim = pos.shape[1] - 1, pos.shape[-1]
    m = int(math.sqrt(n))
    p = self.patch_embeddings.patch_size[0]
    h0, w0 = height // p, width // p
    if embeddings.shape[1] - 1 == n and height == width:
        return self.position_embeddings
    grid = pos[:, 1:].reshape(1, m, m, dim).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid, scale_factor=((h0 + 0.1) / m, (w0 + 0.1) / m), mode="bicubic")
    assert grid.shape[-2:] == (h0, w0)
    return torch.cat((pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, dim)), dim=1)


def test_legacy_interpolate_offset_matches_the_torch_hub_models(saved):
    hf, path = saved["plain"]
    legacy = jimm.DINOv2Model.from_pretrained(path, interpolate_offset=0.1)
    assert legacy.config.interpolate_offset == 0.1
    xs = [images(size=size) for size in SIZES[1:]]
    for x, ours in zip(xs, features_of(legacy, [jnp.asarray(x) for x in xs]), strict=True):
        with torch.no_grad():
            modern = hf(to_torch(x)).last_hidden_state.numpy()
            original = hf.embeddings.interpolate_pos_encoding
            hf.embeddings.interpolate_pos_encoding = types.MethodType(hub_interpolate_pos_encoding, hf.embeddings)
            try:
                ref = hf(to_torch(x)).last_hidden_state.numpy()
            finally:
                hf.embeddings.interpolate_pos_encoding = original
        np.testing.assert_allclose(np.asarray(ours), ref, atol=ATOL, rtol=0)
        assert np.abs(modern - ref).max() > 1e-4  # the offset matters


def test_strict_loading_lists_every_problem(tmp_path, saved):
    tensors = load_file(saved["plain"][1] / "model.safetensors")
    del tensors["encoder.layer.0.norm1.weight"]
    tensors["encoder.layer.0.extra.weight"] = np.zeros(3, np.float32)
    tensors["embeddings.cls_token"] = np.zeros((1, 1, 16), np.float32)
    save_file(tensors, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((saved["plain"][1] / "config.json").read_text())
    with pytest.raises(CheckpointMismatchError) as err:
        jimm.DINOv2Model.from_pretrained(tmp_path)
    message = str(err.value)
    for expected in ("missing", "encoder.layer.0.norm1.weight", "unexpected", "encoder.layer.0.extra.weight"):
        assert expected in message
    assert "embeddings.cls_token: checkpoint [1, 1, 16], model expects [1, 1, 15]" in message


@pytest.mark.parametrize("name", ["swiglu", "registers_head"])
def test_transformers_v5_in_memory_names(tmp_path, saved, name):
    hf, path = saved[name]
    state = {k: v.numpy() for k, v in hf.state_dict().items()}
    assert any("q_proj" in k for k in state)
    assert name != "swiglu" or any("mlp.gate_proj" in k for k in state)  # giant's weights_in split in two
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    assert_same_params(jimm.DINOv2Model.from_pretrained(tmp_path), jimm.DINOv2Model.from_pretrained(path))


@pytest.mark.parametrize("name", VARIANTS)
def test_round_trip_loads_in_transformers_and_back_bit_exactly(tmp_path, saved, name):
    hf, path = saved[name]
    model = jimm.DINOv2Model.from_pretrained(path)
    model.save_pretrained(tmp_path / "jimm")
    cls = VARIANTS[name][0]
    again, info = cls.from_pretrained(tmp_path / "jimm", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    x = to_torch(images(size=SIZES[1]))
    with torch.no_grad():
        a, b = hf(x), again.eval()(x)
    key = "logits" if "head" in name else "last_hidden_state"
    np.testing.assert_array_equal(getattr(a, key).numpy(), getattr(b, key).numpy())
    reloaded = jimm.DINOv2Model.from_pretrained(tmp_path / "jimm")
    assert reloaded.config == model.config
    assert_same_params(model, reloaded)


def test_dispatch_by_model_type_and_layout(tmp_path, saved):
    for name in ("plain", "registers_head"):
        model = jimm.from_pretrained(saved[name][1])
        assert isinstance(model, jimm.DINOv2Model) and model.do_classification == (name == "registers_head")
    hub = tmp_path / "dinov2_vits14_pretrain.safetensors"
    save_file(to_hub({k: v.numpy() for k, v in saved["registers"][0].state_dict().items()}, 2), hub)
    assert model_class(hub) is jimm.DINOv2Model
    save_file({"conv.weight": np.zeros((2, 2), np.float32)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="matches no family"):
        jimm.from_pretrained(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="not a DINOv2 checkpoint"):
        jimm.DINOv2Model.from_pretrained(tmp_path / "other.safetensors")


# -- the original layouts -------------------------------------------------------------------------------------------


def to_hub(sd: dict, num_layers: int) -> dict:
    """transformers' v5 state dict -> the facebookresearch/dinov2 state dict (written here independently)."""
    out = {
        "cls_token": sd["embeddings.cls_token"],
        "pos_embed": sd["embeddings.position_embeddings"],
        "mask_token": sd["embeddings.mask_token"],
        "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": sd["layernorm.weight"],
        "norm.bias": sd["layernorm.bias"],
    }
    if "embeddings.register_tokens" in sd:
        out["register_tokens"] = sd["embeddings.register_tokens"]
    for i in range(num_layers):
        h, b = f"encoder.layer.{i}.", f"blocks.{i}."
        for p in ("weight", "bias"):
            out[b + f"attn.qkv.{p}"] = np.concatenate([sd[h + f"attention.{x}_proj.{p}"] for x in "qkv"])
            out[b + f"attn.proj.{p}"] = sd[h + f"attention.o_proj.{p}"]
            for norm in ("norm1", "norm2"):
                out[b + f"{norm}.{p}"] = sd[h + f"{norm}.{p}"]
            if h + "mlp.gate_proj.weight" in sd:
                out[b + f"mlp.w12.{p}"] = np.concatenate([sd[h + f"mlp.gate_proj.{p}"], sd[h + f"mlp.up_proj.{p}"]])
                out[b + f"mlp.w3.{p}"] = sd[h + f"mlp.down_proj.{p}"]
            else:
                out[b + f"mlp.fc1.{p}"], out[b + f"mlp.fc2.{p}"] = sd[h + f"mlp.fc1.{p}"], sd[h + f"mlp.fc2.{p}"]
        out[b + "ls1.gamma"], out[b + "ls2.gamma"] = sd[h + "layer_scale1.lambda1"], sd[h + "layer_scale2.lambda1"]
    return out


def hub_to_timm(sd: dict) -> dict:
    """timm's `_convert_dinov2` on a torch-hub state dict."""
    sd = dict(sd)
    sd.pop("mask_token")
    if "register_tokens" in sd:
        sd["reg_token"] = sd.pop("register_tokens")
        sd["cls_token"] = sd["cls_token"] + sd["pos_embed"][:, :1]
        sd["pos_embed"] = sd["pos_embed"][:, 1:]
    return {k.replace("mlp.w12", "mlp.fc1").replace("mlp.w3", "mlp.fc2"): v for k, v in sd.items()}


LAYOUTS = {  # name: (variant, overrides, timm?)
    "hub_plain": ("plain", {}, False),
    "hub_registers_swiglu": ("registers", {"use_swiglu_ffn": True}, False),
    "timm_registers": ("registers", {}, True),
    "timm_swiglu": ("plain", {"use_swiglu_ffn": True}, True),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_torch_hub_and_timm_state_dicts(tmp_path, layout):
    name, overrides, timm = LAYOUTS[layout]
    hf = build(name, seed=2, hidden_size=128, num_attention_heads=2, **overrides)  # heads inferred: width / 64
    sd = to_hub({k: v.numpy() for k, v in hf.state_dict().items()}, TINY["num_hidden_layers"])
    sd = hub_to_timm(sd) if timm else sd
    save_file(sd, tmp_path / "model.safetensors")
    model = jimm.DINOv2Model.from_pretrained(tmp_path)  # a folder without config.json
    c = model.config
    assert (c.hidden_size, c.num_attention_heads, c.mlp_ratio, c.use_swiglu_ffn) == (128, 2, 3, "swiglu" in layout)
    assert c.interpolate_offset == (0.1 if name == "plain" else 0.0)  # the torch-hub models' resampling
    if name == "plain":  # the legacy offset: transformers 5 only matches at the native size
        hf.embeddings.interpolate_pos_encoding = types.MethodType(hub_interpolate_pos_encoding, hf.embeddings)
    sizes = SIZES[:2] if layout in ("hub_plain", "timm_registers") else SIZES[:1]  # legacy offset; folded cls
    xs = [images(size=size) for size in sizes]
    for size, x, ours in zip(sizes, xs, features_of(model, [jnp.asarray(x) for x in xs]), strict=False):
        with torch.no_grad():
            ref = hf(to_torch(x)).last_hidden_state.numpy()
        np.testing.assert_allclose(np.asarray(ours), ref, atol=ATOL, rtol=0, err_msg=str(size))
    file_model = jimm.DINOv2Model.from_pretrained(tmp_path / "model.safetensors")
    assert file_model.config == c
    if layout == "hub_plain":  # the torch-hub download itself: a pickled state dict, read weights-only
        torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, tmp_path / "dinov2_vits14_pretrain.pth")
        assert model_class(tmp_path / "dinov2_vits14_pretrain.pth") is jimm.DINOv2Model
        assert_same_params(jimm.from_pretrained(tmp_path / "dinov2_vits14_pretrain.pth"), model)


# -- bad input ------------------------------------------------------------------------------------------------------


def test_configs_of_other_families_and_unknown_fields_are_refused(tmp_path, saved):
    config = json.loads((saved["plain"][1] / "config.json").read_text())
    cases = {
        "dinov3": ({**config, "model_type": "dinov3_vit"}, jimm.DINOv2Model, "model_type='dinov3_vit'"),
        "vit": ({**config, "model_type": "vit"}, jimm.DINOv2Model, "jimm.DINOv2Model reads 'dinov2'"),
        "unknown": ({**config, "use_rope": True}, jimm.DINOv2Model, "use_rope=True \\(unknown field\\)"),
        "registers in plain": ({**config, "num_register_tokens": 4}, jimm.DINOv2Model, "num_register_tokens=4"),
        "to ViT": (config, jimm.VisionTransformer, "model_type='dinov2'"),
    }
    for case, (bad, cls, message) in cases.items():
        folder = tmp_path / case
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(bad))
        (folder / "model.safetensors").write_bytes((saved["plain"][1] / "model.safetensors").read_bytes())
        with pytest.raises(ValueError, match=message):
            cls.from_pretrained(folder)


def test_odd_swiglu_fused_width_is_named(tmp_path, saved):
    hf, path = saved["swiglu"]
    tensors = load_file(path / "model.safetensors")
    name = "encoder.layer.1.mlp.weights_in.weight"
    tensors[name] = tensors[name][:-1]
    save_file(tensors, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(ValueError, match=f"{name} has an odd fused width 63"):
        jimm.DINOv2Model.from_pretrained(tmp_path)
    hub = to_hub({k: v.numpy() for k, v in hf.state_dict().items()}, TINY["num_hidden_layers"])
    hub["blocks.0.mlp.w12.weight"] = hub["blocks.0.mlp.w12.weight"][:-1]
    save_file(hub, tmp_path / "hub.safetensors")
    with pytest.raises(ValueError, match="blocks.0.mlp.w12.weight has an odd fused width 63"):
        jimm.DINOv2Model.from_pretrained(tmp_path / "hub.safetensors", config=None)


def test_constructor_arguments_and_bad_sizes():
    """Shapes and errors at trace time (`nnx.eval_shape`): no weights are drawn, nothing is compiled."""
    model = nnx.eval_shape(lambda: jimm.DINOv2Model())  # the original jimm's defaults: ViT-S/14 at 518 px
    c = model.config
    sizes = (c.image_hw, c.patch_hw, c.hidden_size, c.num_hidden_layers, c.mlp_dim)
    assert sizes == ((518, 518), (14, 14), 384, 12, 1536)
    assert not model.do_classification and c.model_type == "dinov2"
    giant = nnx.eval_shape(lambda: jimm.DINOv2Model(hidden_size=1536, num_heads=24, mlp_dim=6144, use_swiglu_ffn=True))
    assert giant.config.mlp_dim == 4096  # ((int(1536 * 4 * 2 / 3) + 7) // 8) * 8
    small = dict(img_size=15, patch_size=3, hidden_size=15, num_layers=1, num_heads=3, mlp_dim=30, sharding=None)

    def run(x, pre_logits=False, **kwargs):
        def f():
            model = jimm.DINOv2Model(**small, **kwargs)
            return model.forward_head(model.forward_features(x), pre_logits=pre_logits)

        return nnx.eval_shape(f)

    registers = dict(num_register_tokens=2, num_classes=4)
    assert nnx.eval_shape(lambda: jimm.DINOv2Model(**small, **registers)).config.model_type == "dinov2_with_registers"
    assert run(jnp.zeros((2, 15, 9, 3)), **registers).shape == (2, 4)
    assert run(jnp.zeros((1, 9, 9, 3)), pre_logits=True, **registers).shape == (1, 30)  # [CLS, mean(patches)]
    assert run(jnp.zeros((1, 9, 9, 3))).shape == (1, 15)  # the class token
    assert run(jnp.zeros((1, 20, 21, 3))).shape == (1, 15)  # not a multiple: the whole 6 x 7 patches
    with pytest.raises(ValueError, match="2x21 is smaller than one patch"):
        run(jnp.zeros((1, 2, 21, 3)))
    hf_config = T.Dinov2WithRegistersConfig(
        **TINY, num_labels=3, architectures=["Dinov2WithRegistersForImageClassification"]
    )
    built = nnx.eval_shape(lambda: jimm.DINOv2Model.from_config(hf_config.to_dict(), sharding=None))
    assert built.do_classification and built.config.patch_hw == (3, 3) and built.config.num_register_tokens == 4
    assert built.classifier.kernel.shape == (30, 3)
    drop = nnx.eval_shape(
        lambda: jimm.DINOv2Model(config=jimm.DINOv2Config(drop_path_rate=0.2, hidden_dropout_prob=0.1))
    )
    assert drop.encoder.blocks.drop_path_rates == (np.float32(0.2),) * 12  # one rate in every block, as transformers
    assert drop.encoder.pos_drop.rate == 0.1 and drop.encoder.config.dropout == 0.0  # hidden dropout: embeddings only
    with pytest.raises(ValueError, match="mlp_dim=37 is not a multiple of hidden_size=15"):
        jimm.DINOv2Model(**{**small, "mlp_dim": 37})
    with pytest.raises(ValueError, match="interpolate_offset applies to plain DINOv2"):
        jimm.DINOv2Model(**small, num_register_tokens=1, interpolate_offset=0.1)


def test_eval_and_predict_on_a_dinov2_classifier(tmp_path, saved):
    """What `jimm eval` / `jimm predict` do with a `Dinov2ForImageClassification` folder, against transformers."""
    from PIL import Image

    from jimm.data import ArraySplit, ImageProcessorConfig
    from jimm.train.evaluate import evaluate, predict_files

    hf, path = saved["registers_head"]
    model = jimm.from_pretrained(path, sharding=None)
    processor = ImageProcessorConfig(size=(21, 21), image_mean=(0.5,) * 3, image_std=(0.25,) * 3)
    pixels = np.random.default_rng(0).integers(0, 256, (6, 21, 21, 3), dtype=np.uint8)
    files = []
    for i, image in enumerate(pixels):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(image).save(files[-1])
    with torch.no_grad():
        x = (pixels.astype(np.float32) / 255 - 0.5) / 0.25
        probs = torch.softmax(hf(to_torch(x)).logits, -1).numpy()
    top = predict_files(model, files, processor, top_k=2)
    assert [label for label, _ in top[0]] == [model.config.labels[int(i)] for i in np.argsort(-probs[0])[:2]]
    np.testing.assert_allclose([p for _, p in top[0]], np.sort(probs[0])[::-1][:2], atol=1e-5)
    split = ArraySplit(pixels, np.arange(6) % 5, tuple(model.config.labels.values()))
    scores = evaluate(model, split, processor, batch_size=4)
    assert scores["count"] == 6 and scores["accuracy"] == pytest.approx(np.mean(probs.argmax(-1) == np.arange(6) % 5))
    assert model.config.to_hf_dict()["architectures"] == ["Dinov2WithRegistersForImageClassification"]
