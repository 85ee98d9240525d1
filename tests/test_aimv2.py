"""AIMv2 vision (RMSNorm, patch norm, SwiGLU, learned or sin-cos positions, probe head) against transformers'
`Aimv2VisionModel` at fp32: every hidden state, last_hidden_state and pooler_output; strict loading, saving
that transformers reloads, dispatch, a LiT pair's vision tower, the feature API at other sizes."""

import json

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
from jimm.models.aimv2 import AIMv2Config

ATOL = 1e-5
# Distinct sizes: 4 heads of 5, SwiGLU 13, 15 px at patch 3 (a 5 x 5 grid).
TINY = dict(
    hidden_size=20, num_hidden_layers=2, num_attention_heads=4, intermediate_size=13, image_size=15, patch_size=3
)
VARIANTS = {
    "head": {"use_head": True},
    "no-head": {"use_head": False},
    "native": {"use_head": True, "is_native": True},
    "biases": {"use_head": True, "qkv_bias": True, "mlp_bias": True, "rms_norm_eps": 1e-3},
}
outputs_of = nnx.jit(lambda model, x: (model.hidden_states(x), model(x)))


def build(name, seed=0):
    torch.manual_seed(seed)
    model = T.Aimv2VisionModel(T.Aimv2VisionConfig(**TINY, **VARIANTS[name]))
    with torch.no_grad():  # non-trivial norm scales and biases
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def reference(hf, x):
    with torch.no_grad():
        return hf(to_torch(x), output_hidden_states=True)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = {}
    for name in VARIANTS:
        path = tmp_path_factory.mktemp(name)
        hf = build(name)
        hf.save_pretrained(path)
        out[name] = (hf, path)
    return out


def assert_parity(model, hf, x, with_head):
    ref = reference(hf, x)
    hidden, tokens = outputs_of(model, jnp.asarray(x))
    assert len(hidden) == len(ref.hidden_states) == TINY["num_hidden_layers"] + 1
    for i, (ours, theirs) in enumerate(zip(hidden, ref.hidden_states, strict=True)):
        np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), atol=ATOL, rtol=0, err_msg=f"hidden state {i}")
    np.testing.assert_allclose(np.asarray(tokens), ref.last_hidden_state.numpy(), atol=ATOL, rtol=0)
    if with_head:
        np.testing.assert_allclose(np.asarray(model.pooled(jnp.asarray(x))), ref.pooler_output.numpy(), atol=ATOL)
    else:
        assert ref.pooler_output is None
        with pytest.raises(ValueError, match="no pooling head"):
            model.pooled(jnp.asarray(x))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_parity_with_transformers(saved, name):
    hf, path = saved[name]
    model = jimm.AIMv2Model.from_pretrained(path)
    assert isinstance(model, jimm.AIMv2Model) and model.config.use_head == VARIANTS[name]["use_head"]
    assert_parity(model, hf, images(size=15), VARIANTS[name]["use_head"])


@pytest.mark.parametrize("size", [(9, 21), (24, 24), (16, 17)])
def test_native_sincos_at_any_size(saved, size):
    """The -native checkpoints compute sin-cos positions for the image's own grid, as transformers does."""
    hf, path = saved["native"]
    assert_parity(jimm.AIMv2Model.from_pretrained(path), hf, images(size=size), True)


def test_save_reloads_in_transformers(saved, tmp_path):
    for name in ("head", "native", "biases"):
        hf, path = saved[name]
        model = jimm.AIMv2Model.from_pretrained(path)
        out = tmp_path / name
        model.save_pretrained(out)
        again, info = T.Aimv2VisionModel.from_pretrained(out, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], info
        assert load_file(out / "model.safetensors").keys() == load_file(path / "model.safetensors").keys()
        x = images(size=15)
        with torch.no_grad():
            a, b = again.eval()(to_torch(x)), hf(to_torch(x))
        np.testing.assert_array_equal(a.last_hidden_state.numpy(), b.last_hidden_state.numpy())
        assert AIMv2Config.from_hf_dict(json.loads((out / "config.json").read_text())) == model.config


def test_dispatch_through_from_pretrained(saved):
    _, path = saved["native"]
    model = jimm.from_pretrained(path)
    assert isinstance(model, jimm.AIMv2Model) and model.config.is_native


def test_lit_pair_vision_tower(tmp_path):
    """An `aimv2` LiT checkpoint into `jimm.AIMv2Model`: its vision tower loads strictly, the text tower and
    projections are skipped (`jimm.from_pretrained` builds the pair, `jimm.AIMv2`: tests/test_aimv2_lit.py)."""
    torch.manual_seed(0)
    text = dict(vocab_size=99, hidden_size=12, intermediate_size=11, num_hidden_layers=1, num_attention_heads=3)
    config = T.Aimv2Config(vision_config={**TINY, "use_head": True}, text_config=text, projection_dim=8)
    pair = T.Aimv2Model(config).eval()
    pair.save_pretrained(tmp_path)
    model = jimm.AIMv2Model.from_pretrained(tmp_path)
    assert isinstance(model, jimm.AIMv2Model)
    assert_parity(model, pair.vision_model, images(size=15), True)


def test_strict_loading(saved, tmp_path):
    _, path = saved["head"]
    tensors = load_file(path / "model.safetensors")
    config = json.loads((path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config))
    broken = {k: v for k, v in tensors.items() if k != "head.k_proj.weight"} | {"head.extra": np.zeros(3, np.float32)}
    save_file(broken, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointMismatchError) as err:
        jimm.AIMv2Model.from_pretrained(tmp_path)
    assert "head.k_proj.weight" in str(err.value) and "head.extra" in str(err.value)


@pytest.mark.parametrize("layers", [10**30, 3])
def test_corrupt_depth_refused(saved, tmp_path, layers):
    _, path = saved["head"]
    config = json.loads((path / "config.json").read_text()) | {"num_hidden_layers": layers}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointMismatchError, match="asks for .* layers but the checkpoint holds 2"):
        jimm.AIMv2Model.from_pretrained(tmp_path)


def test_config_whitelist_and_round_trip(saved):
    hf, _ = saved["biases"]
    config = AIMv2Config.from_hf_dict(hf.config.to_dict())
    assert config.qkv_bias and config.mlp_bias and config.rms_norm_eps == 1e-3
    assert AIMv2Config.from_hf_dict(config.to_hf_dict()) == config
    with pytest.raises(ValueError, match="use_cls_token=True"):
        AIMv2Config.from_hf_dict({**config.to_hf_dict(), "use_cls_token": True})
    with pytest.raises(ValueError, match="model_type='clip'"):
        AIMv2Config.from_hf_dict({"model_type": "clip"})
    remote_code = {"model_type": "aimv2", "auto_map": {}, "hidden_size": 1024, "use_bias": False}  # Apple's first
    with pytest.raises(ValueError, match="remote-code layout"):
        AIMv2Config.from_hf_dict(remote_code)


def test_feature_api_at_other_sizes(saved):
    _, path = saved["native"]
    model = jimm.AIMv2Model.from_pretrained(path)
    x = jnp.asarray(images(size=(12, 21)))
    final, maps = model.forward_intermediates(x, indices=[0, 1], stop_early=False)
    assert final.shape == (2, 4 * 7, 20) and [m.shape for m in maps] == [(2, 4, 7, 20)] * 2
    np.testing.assert_allclose(np.asarray(final), np.asarray(model(x)), atol=ATOL)


def test_original_positional_constructor():
    """The original jimm's `AIMv2Model(img_size, patch_size, in_channels, hidden_size, num_layers, num_heads,
    mlp_dim)`: patch tokens out, no head, learned positions."""
    model = jimm.AIMv2Model(12, 3, 3, 16, 2, 2, 24, rngs=nnx.Rngs(1))
    assert model(jnp.ones((1, 12, 12, 3))).shape == (1, 16, 16)
    assert not model.config.use_head and model.encoder.attn_pool is None
    assert isinstance(jimm.AIMv2Sharding(), jimm.ViTSharding)


TEXT = dict(
    vocab_size=50, hidden_size=20, intermediate_size=13, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=9, eos_token_id=7,
)  # fmt: skip


def text_tower(config, *, rngs):
    from jimm.common.sharding import resolve_sharding
    from jimm.common.text import TextTower

    return TextTower(
        config.tower(),
        attention_fn=None,
        use_gradient_checkpointing=False,
        sharding=resolve_sharding(None),
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs=rngs,
    )


@pytest.mark.parametrize("biases", [False, True])
def test_lit_text_tower_matches_transformers(tmp_path, biases):
    """The LiT text tower (RMSNorm, SwiGLU, causal, first-EOS pooling) on the shared `TextTower`, loaded through
    AIMv2's text rows: transformers' outputs when it is given a mask (it is causal only then)."""
    from jimm.io.readers import open_checkpoint
    from jimm.models.aimv2.config import AIMv2TextConfig
    from jimm.models.aimv2.names import text_name_table
    from jimm.models.loading import load_model

    torch.manual_seed(0)
    hf_config = T.Aimv2TextConfig(**TEXT, qkv_bias=biases, mlp_bias=biases)
    hf = T.Aimv2TextModel(hf_config)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.1 * torch.randn_like(p))
    hf.eval()
    save_file({k: v.numpy() for k, v in hf.state_dict().items()}, tmp_path / "text.safetensors")
    config = AIMv2TextConfig.from_hf_dict(hf_config.to_dict())
    with open_checkpoint([tmp_path / "text.safetensors"]) as checkpoint:
        ours = load_model(
            text_tower,
            {"config": config},
            text_name_table(config, prefix=""),
            checkpoint,
            source="test",
            layers=(("blocks", "layers"),),
            rngs=None,
        )
    ids = np.array([[3, 9, 7, 7, 1, 2], [4, 7, 5, 6, 7, 8]], np.int64)  # EOS (7) first at 2 and 1; text after it
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], np.int64)
    with torch.no_grad():
        ref = hf(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), output_hidden_states=True)
        bidirectional = hf(torch.from_numpy(ids)).last_hidden_state.numpy()
    hidden = ours.hidden_states(jnp.asarray(ids), jnp.asarray(mask))
    for i, (a, b) in enumerate(zip(hidden, ref.hidden_states, strict=True)):
        np.testing.assert_allclose(np.asarray(a), b.numpy(), atol=ATOL, rtol=0, err_msg=f"hidden state {i}")
    features = ours.forward_features(jnp.asarray(ids), jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(features), ref.last_hidden_state.numpy(), atol=ATOL, rtol=0)
    pooled = ours(jnp.asarray(ids), jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(pooled), ref.pooler_output.numpy(), atol=ATOL, rtol=0)
    # Without a mask jimm stays causal (the trained model); transformers runs bidirectionally: they differ.
    causal = np.asarray(ours.forward_features(jnp.asarray(ids)))
    np.testing.assert_allclose(causal[1], ref.last_hidden_state.numpy()[1], atol=ATOL, rtol=0)
    assert np.abs(causal - bidirectional).max() > 1e-3


@pytest.mark.parametrize("native", [False, True])
def test_fsdp_mesh_default_sharding(tmp_path, native):
    """The original's recipe: a ("data", "fsdp") Explicit mesh, then the default `AIMv2Sharding`; sharded weights,
    the same tokens and pooled vector as without a mesh."""
    import jax
    from jax.sharding import AxisType
    from jax.sharding import PartitionSpec as P

    torch.manual_seed(0)
    dims = dict(hidden_size=24, intermediate_size=16, num_hidden_layers=2, num_attention_heads=4, patch_size=3)
    T.Aimv2VisionModel(T.Aimv2VisionConfig(**dims, image_size=12, is_native=native)).save_pretrained(tmp_path)
    x = images(size=(12, 15) if native else 12)
    plain = jimm.AIMv2Model.from_pretrained(tmp_path)
    expected_tokens, expected_pooled = np.asarray(plain(x)), np.asarray(plain.pooled(x))
    jax.set_mesh(jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(AxisType.Explicit,) * 2))
    try:
        model = jimm.AIMv2Model.from_pretrained(tmp_path)
        qkv = model.encoder.blocks.layers.attn.qkv_kernel[...]
        assert qkv.sharding.spec == P(None, "fsdp", None, None, None)
        assert model.encoder.blocks.layers.mlp.down_kernel[...].sharding.spec == P(None, "fsdp", None)
        xs = jax.device_put(x, P("data"))
        np.testing.assert_allclose(np.asarray(model(xs)), expected_tokens, atol=ATOL, rtol=0)
        np.testing.assert_allclose(np.asarray(model.pooled(xs)), expected_pooled, atol=ATOL, rtol=0)
    finally:
        jax.set_mesh(None)
