"""Numerical parity with transformers' ViT at fp32 (atol 1e-5), per config field that changes the maths."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import hf_model, images, to_torch
from flax import nnx

import jimm

ATOL = 1e-5

CONFIGS = {
    "default": {},
    "gelu_new": {"hidden_act": "gelu_new"},
    "gelu_pytorch_tanh": {"hidden_act": "gelu_pytorch_tanh"},
    "quick_gelu": {"hidden_act": "quick_gelu"},
    "relu": {"hidden_act": "relu"},
    "silu": {"hidden_act": "silu"},
    "eps_1e-6": {"layer_norm_eps": 1e-6},
    "no_qkv_bias": {"qkv_bias": False},
    "one_channel": {"num_channels": 1},
    "non_square": {"image_size": [33, 21], "patch_size": [3, 7]},
    "wide_mlp": {"intermediate_size": 61, "num_hidden_layers": 3},
}


def load(tmp_path, hf, **kwargs):
    hf.save_pretrained(tmp_path)
    return jimm.VisionTransformer.from_pretrained(tmp_path, **kwargs)


def image_shape(hf) -> tuple[int, int]:
    size = hf.config.image_size
    return tuple(size) if isinstance(size, list | tuple) else (size, size)


@pytest.mark.parametrize("overrides", CONFIGS.values(), ids=CONFIGS.keys())
def test_logits_features_and_layers_match_transformers(tmp_path, overrides):
    hf = hf_model(**overrides)
    model = load(tmp_path, hf)
    x = images(size=image_shape(hf), channels=hf.config.num_channels)
    with torch.no_grad():
        ref = hf(to_torch(x), output_hidden_states=True)
        base = hf.vit(to_torch(x), output_hidden_states=True)
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(x))), ref.logits.numpy(), atol=ATOL, rtol=0)
    features = np.asarray(model.forward_features(jnp.asarray(x)))
    np.testing.assert_allclose(features, base.last_hidden_state.numpy(), atol=ATOL, rtol=0)
    ours = model.encoder.hidden_states(jnp.asarray(x))
    assert len(ours) == len(ref.hidden_states) == hf.config.num_hidden_layers + 1
    for layer, (a, b) in enumerate(zip(ours, ref.hidden_states, strict=True)):
        np.testing.assert_allclose(np.asarray(a), b.numpy(), atol=ATOL, rtol=0, err_msg=f"hidden state {layer}")


def test_jit_and_grad_without_mesh(tmp_path):
    model = load(tmp_path, hf_model())
    x = jnp.asarray(images())
    eager = model(x)
    jitted = nnx.jit(lambda m, x: m(x))(model, x)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), atol=ATOL)
    grads = nnx.grad(lambda m: m(x).sum())(model)
    leaves = [np.asarray(g) for g in jax_leaves(grads)]
    assert leaves and all(np.isfinite(g).all() for g in leaves)
    assert any(np.abs(g).sum() > 0 for g in leaves)


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def test_pooled_output_equals_vitmodel_pooler_output(tmp_path):
    hf = hf_model(headless=True)
    model = load(tmp_path, hf)
    assert not model.do_classification
    x = images()
    with torch.no_grad():
        ref = hf(to_torch(x))
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(x))), ref.pooler_output.numpy(), atol=ATOL, rtol=0)
    cls_token = model.forward_head(model.forward_features(jnp.asarray(x)), pre_logits=True)
    np.testing.assert_allclose(np.asarray(cls_token), ref.last_hidden_state[:, 0].numpy(), atol=ATOL, rtol=0)


def test_from_config_honours_every_field_and_starts_in_eval_mode():
    hf = hf_model(hidden_act="quick_gelu", layer_norm_eps=1e-6, qkv_bias=False, hidden_dropout_prob=0.3)
    config = hf.config.to_dict()
    model = jimm.VisionTransformer.from_config(config)
    c = model.config
    assert (c.hidden_act, c.layer_norm_eps, c.qkv_bias, c.hidden_dropout_prob) == ("quick_gelu", 1e-6, False, 0.3)
    assert model.encoder.blocks.layers.attn.qkv_bias is None
    assert model.encoder.blocks.layers.mlp.fc1_kernel.shape == (2, 15, 7)
    assert model.classifier.kernel.shape == (15, 13)
    x = jnp.asarray(images())
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(model(x)))  # eval mode: deterministic
    model.train()
    a, b = np.asarray(model(x)), np.asarray(model(x))
    assert not np.allclose(a, b), "dropout should make two training-mode calls differ"
    model.eval()
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(model(x)))


def test_spec_constructor_defaults_and_rngs_none():
    model = jimm.VisionTransformer(
        num_classes=5, img_size=32, patch_size=8, num_layers=1, num_heads=2, mlp_dim=16, hidden_size=8
    )
    again = jimm.VisionTransformer(
        num_classes=5, img_size=32, patch_size=8, num_layers=1, num_heads=2, mlp_dim=16, hidden_size=8
    )
    x = jnp.asarray(images(size=32))
    assert model(x).shape == (2, 5)
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(again(x)))  # rngs=None means nnx.Rngs(0)
    assert model.config.layer_norm_eps == 1e-12 and model.config.hidden_act == "gelu"
    quick = jimm.VisionTransformer(
        img_size=32, patch_size=8, num_layers=1, num_heads=2, mlp_dim=16, hidden_size=8, use_quick_gelu=True
    )
    assert quick.config.hidden_act == "quick_gelu"
    features = jimm.VisionTransformer(
        img_size=32, patch_size=8, num_layers=1, num_heads=2, mlp_dim=16, hidden_size=8, do_classification=False
    )
    assert features(x).shape == (2, 8)


def test_attention_dropout_is_honoured_in_training_only():
    model = jimm.VisionTransformer(
        num_classes=3,
        img_size=12,
        patch_size=4,
        num_layers=1,
        num_heads=2,
        mlp_dim=8,
        hidden_size=8,
        dropout_rate=0.0,
        attention_dropout_rate=0.5,
    )
    x = jnp.asarray(images(size=12))
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(model(x)))
    model.train()
    assert not np.allclose(np.asarray(model(x)), np.asarray(model(x)))


def test_bf16_compute_is_close(tmp_path):
    hf = hf_model()
    model = load(tmp_path, hf, dtype=jnp.bfloat16)
    x = images()
    with torch.no_grad():
        ref = hf(to_torch(x)).logits.numpy()
    out = model(jnp.asarray(x))
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, dtype=np.float32), ref, atol=5e-2)
