"""DINOv3 ViT (RoPE, registers, MLP or gated MLP, bias flags) against transformers at fp32: outputs at three
sizes, v5 names, round trips both ways, jimm's classifier head, train-mode RoPE augmentation, bad input."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers as T
from conftest import images, to_torch
from flax import nnx
from safetensors.numpy import save_file

import jimm
from jimm.common.transformer import RopeAugment, rope_2d, rope_coords

ATOL = 1e-5
TINY = dict(
    hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=37, image_size=15, patch_size=3
)
SIZES = [(15, 15), (9, 21), (24, 24)]  # native 5x5 grid, a non-square one, a larger one
VARIANTS = {
    "plain": {"num_register_tokens": 2},
    "gated": {"num_register_tokens": 2, "use_gated_mlp": True, "hidden_act": "silu"},
    "biases": {"num_register_tokens": 0, "key_bias": True, "proj_bias": False, "mlp_bias": False, "rope_theta": 37.0},
}
outputs_of = nnx.jit(lambda model, xs: [(model.hidden_states(x), model(x)) for x in xs])


def build(name, seed=0, **overrides):
    torch.manual_seed(seed)
    model = T.DINOv3ViTModel(T.DINOv3ViTConfig(**{**TINY, **VARIANTS[name], **overrides}))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def params_of(model):
    return {path: np.asarray(v.get_value()) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def assert_same_params(a, b):
    pa, pb = params_of(a), params_of(b)
    assert pa.keys() == pb.keys()
    for key in pa:
        np.testing.assert_array_equal(pa[key], pb[key], err_msg=str(key))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
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
    model = jimm.from_pretrained(path)
    assert isinstance(model, jimm.DINOv3Model) and not model.do_classification
    xs = [images(size=size) for size in SIZES]
    for size, x, (hidden, pooled) in zip(SIZES, xs, outputs_of(model, [jnp.asarray(x) for x in xs]), strict=True):
        with torch.no_grad():
            ref = hf(to_torch(x), output_hidden_states=True)
        assert len(hidden) == len(ref.hidden_states) == TINY["num_hidden_layers"] + 1
        for layer, (a, b) in enumerate(zip(hidden, ref.hidden_states, strict=True)):
            np.testing.assert_allclose(np.asarray(a), b.numpy(), atol=ATOL, rtol=0, err_msg=f"{size} layer {layer}")
        features = model.encoder.final_norm(hidden[-1])
        np.testing.assert_allclose(np.asarray(features), ref.last_hidden_state.numpy(), atol=ATOL, rtol=0)
        np.testing.assert_allclose(np.asarray(pooled), ref.pooler_output.numpy(), atol=ATOL, rtol=0, err_msg=str(size))


def test_rope_equals_transformers_for_any_grid_and_augmented_coordinates(monkeypatch):
    from transformers.models.dinov3_vit import modeling_dinov3_vit as hf_dinov3

    rope = hf_dinov3.DINOv3ViTRopePositionEmbedding(T.DINOv3ViTConfig(**TINY, rope_theta=37.0)).eval()
    for grid in ((5, 5), (3, 7)):
        pixels = torch.zeros(1, 3, grid[0] * 3, grid[1] * 3)
        cos, sin = rope(pixels)
        ours = rope_2d(grid, 8, 37.0)
        np.testing.assert_allclose(ours[0], cos.numpy(), atol=1e-6)
        np.testing.assert_allclose(ours[1], sin.numpy(), atol=1e-6)
    # Training: transformers draws a scale in [1/2, 2]; with the same scale the embeddings agree.
    augment = RopeAugment(None, None, 2.0, rngs=nnx.Rngs(0))
    coords = rope_coords((3, 7))
    np.testing.assert_array_equal(augment(coords), coords)  # eval mode: the identity
    augment.deterministic = False
    draws = [np.asarray(augment(coords)) for _ in range(2)]
    scales = [float(d[0, 0] / coords[0, 0]) for d in draws]
    assert scales[0] != scales[1] and all(0.5 <= s <= 2.0 for s in scales)
    np.testing.assert_allclose(draws[0], coords * scales[0], rtol=1e-6)
    monkeypatch.setattr(hf_dinov3, "augment_patches_center_coordinates", lambda c, **_: c * scales[0])
    cos, sin = rope.train()(torch.zeros(1, 3, 9, 21))
    ours = rope_2d((3, 7), 8, 37.0, jnp.asarray(draws[0]))
    np.testing.assert_allclose(np.asarray(ours[0]), cos.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.asarray(ours[1]), sin.numpy(), atol=1e-5)


def test_transformers_v5_in_memory_names(tmp_path, saved):
    hf, path = saved["gated"]
    state = {k: v.numpy() for k, v in hf.state_dict().items()}
    assert any(k.startswith("model.layer.0.") for k in state)
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    assert_same_params(jimm.DINOv3Model.from_pretrained(tmp_path), jimm.DINOv3Model.from_pretrained(path))


@pytest.mark.parametrize("name", VARIANTS)
def test_round_trip_loads_in_transformers_and_back_bit_exactly(tmp_path, saved, name):
    hf, path = saved[name]
    model = jimm.DINOv3Model.from_pretrained(path)
    model.save_pretrained(tmp_path)
    again, info = T.DINOv3ViTModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    x = to_torch(images(size=SIZES[1]))
    with torch.no_grad():
        np.testing.assert_array_equal(hf(x).last_hidden_state.numpy(), again.eval()(x).last_hidden_state.numpy())
    reloaded = jimm.DINOv3Model.from_pretrained(tmp_path)
    assert reloaded.config == model.config
    assert_same_params(model, reloaded)


def test_classifier_head_saves_and_reloads(tmp_path, saved):
    hf, path = saved["plain"]
    model = jimm.DINOv3Model.from_pretrained(path, id2label={0: "cat", 1: "dog", 2: "emu"})
    assert model.do_classification and model.num_classes == 3
    x = jnp.asarray(images(size=SIZES[1]))
    features = model.forward_features(x)
    pooled = model.forward_head(features, pre_logits=True)
    with torch.no_grad():
        ref = hf(to_torch(np.asarray(x))).last_hidden_state.numpy()
    expected = np.concatenate([ref[:, 0], ref[:, 3:].mean(axis=1)], axis=-1)  # registers excluded from the mean
    np.testing.assert_allclose(np.asarray(pooled), expected, atol=ATOL, rtol=0)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["id2label"] == {"0": "cat", "1": "dog", "2": "emu"}
    _, info = T.DINOv3ViTModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and sorted(info["unexpected_keys"]) == ["classifier.bias", "classifier.weight"]
    reloaded = jimm.from_pretrained(tmp_path)
    assert isinstance(reloaded, jimm.DINOv3Model) and reloaded.config.labels == {0: "cat", 1: "dog", 2: "emu"}
    assert_same_params(model, reloaded)


def test_train_mode_augments_rope_and_a_train_step_runs(saved):
    from jimm.train import TrainConfig
    from jimm.train.optim import make_optimizer
    from jimm.train.step import train_step

    _, path = saved["plain"]
    model = jimm.DINOv3Model.from_pretrained(path, num_classes=3, sharding=None)
    x = jnp.asarray(images(batch=4, size=SIZES[0]))
    cfg = TrainConfig(steps=2, warmup_steps=0, batch_size=4, lr=1e-2)
    optimizer = nnx.Optimizer(model, make_optimizer(cfg), wrt=nnx.Param)
    model.train()
    graphdef, state = nnx.split((model, optimizer))
    before = [np.asarray(a) for a in jax.tree.leaves(nnx.filter_state(state[0], nnx.Param))]
    count = [np.asarray(a) for a in jax.tree.leaves(nnx.filter_state(state[0], nnx.RngCount))]
    state, metrics = train_step(graphdef, cfg, state, x[None], jnp.arange(4)[None] % 3)
    assert np.isfinite(float(metrics["loss"]))
    after = [np.asarray(a) for a in jax.tree.leaves(nnx.filter_state(state[0], nnx.Param))]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    counts = [np.asarray(a) for a in jax.tree.leaves(nnx.filter_state(state[0], nnx.RngCount))]
    assert any(not np.array_equal(a, b) for a, b in zip(counts, count, strict=True))  # a RoPE draw was taken
    trained, _ = nnx.merge(graphdef, state)
    call = nnx.jit(lambda m, x: m(x))
    train_a, train_b = np.asarray(call(trained, x)), np.asarray(call(trained, x))
    assert np.abs(train_a - train_b).max() > 1e-4  # a new coordinate rescale per call
    trained.eval()
    np.testing.assert_array_equal(np.asarray(call(trained, x)), np.asarray(call(trained, x)))


def test_bad_input_is_named(tmp_path, saved):
    _, path = saved["plain"]
    config = json.loads((path / "config.json").read_text())
    for case, (bad, cls, message) in {
        "dinov2": ({**config, "model_type": "dinov2"}, jimm.DINOv3Model, "jimm.DINOv3Model reads 'dinov3_vit'"),
        "to dinov2": (config, jimm.DINOv2Model, "model_type='dinov3_vit'"),
        "unknown": ({**config, "use_swiglu_ffn": True}, jimm.DINOv3Model, "use_swiglu_ffn=True \\(unknown field\\)"),
        "rope heads": ({**config, "num_attention_heads": 4}, jimm.DINOv3Model, "divisible by 4"),
    }.items():
        folder = tmp_path / case
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(bad))
        (folder / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
        with pytest.raises(ValueError, match=message):
            cls.from_pretrained(folder)
    with pytest.raises(TypeError, match="jimm.DINOv2Model needs config= a DINOv2Config, got DINOv3Config"):
        jimm.DINOv2Model.from_pretrained(path, config=jimm.DINOv3Config())
    save_file({"layer.0.norm1.weight": np.zeros(24, np.float32)}, tmp_path / "bare.safetensors")
    with pytest.raises(FileNotFoundError, match="jimm.DINOv3Model needs an HF config.json"):
        jimm.DINOv3Model.from_pretrained(tmp_path / "bare.safetensors")
    with pytest.raises(ValueError, match="8x40 is smaller than one patch"):
        nnx.eval_shape(lambda: jimm.DINOv3Model(num_layers=1)(jnp.zeros((1, 8, 40, 3))))
    model = nnx.eval_shape(lambda: jimm.DINOv3Model())  # the original jimm's defaults: ViT-S/16, 4 registers
    c = model.config
    assert (c.hidden_size, c.num_register_tokens, c.key_bias, c.intermediate_size) == (384, 4, False, 1536)
