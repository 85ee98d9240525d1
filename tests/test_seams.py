"""The vision tower's seams: norms from a table (RMSNorm as transformers computes it), the patch-token norm,
2-D sin-cos positions, pooling by kind, and a token mask carried from `encode` through every block into `pool`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jimm.common.positions import sincos_2d
from jimm.common.sharding import resolve_sharding
from jimm.common.transformer import RMSNorm
from jimm.common.vision import VisionTower, VisionTowerConfig

ATOL = 1e-5
TINY = dict(hidden_size=20, num_layers=2, num_heads=4, mlp_dim=11, image_size=(12, 9), patch_size=3)


def tower(attention_fn=None, **fields) -> VisionTower:
    config = VisionTowerConfig(**{**TINY, **fields})
    model = VisionTower(
        config,
        attention_fn=attention_fn,
        use_gradient_checkpointing=False,
        sharding=resolve_sharding(None),
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs=nnx.Rngs(0),
    )
    # Non-trivial norm scales and biases, so a norm left out or applied twice shows.
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    noisy = [x + 0.1 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys, strict=True)]
    nnx.update(model, jax.tree.unflatten(treedef, noisy))
    return model


def images(batch=2, hw=(12, 9), seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(batch, *hw, 3)).astype(np.float32))


def test_rmsnorm_matches_transformers():
    from transformers.models.aimv2.modeling_aimv2 import Aimv2RMSNorm

    x = np.random.default_rng(0).normal(3.0, 2.0, size=(2, 5, 7)).astype(np.float32)
    ref = Aimv2RMSNorm(7, eps=1e-5)
    with torch.no_grad():
        ref.weight.copy_(torch.linspace(0.5, 1.5, 7))
        expected = ref(torch.from_numpy(x)).numpy()
    ours = RMSNorm(7, eps=1e-5, spec=None, dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
    ours.scale[...] = jnp.linspace(0.5, 1.5, 7)
    np.testing.assert_allclose(np.asarray(ours(jnp.asarray(x))), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("grid", [(4, 4), (3, 7), (1, 5)])
def test_sincos_matches_transformers(grid):
    from transformers.models.aimv2.modeling_aimv2 import build_2d_sinusoidal_position_embedding

    ref = build_2d_sinusoidal_position_embedding(*grid, embed_dim=24, dtype=torch.float64)
    half = ref.shape[-1] // 2
    expected = torch.cat([ref[..., half:], ref[..., :half]], dim=-1).numpy()  # what Aimv2VisionEmbeddings adds
    np.testing.assert_array_equal(sincos_2d(grid, 24), expected)


@pytest.mark.parametrize(
    "fields",
    [
        dict(global_pool="avg", class_token=False, pos_embed_prefix="none"),
        dict(global_pool="map", class_token=False, pos_embed_prefix="none"),
        dict(global_pool="probe", class_token=False, norm="rmsnorm", patch_norm=True, position="sincos",
             pos_embed_prefix="none", mlp="gated", act="silu", qkv_bias=(False,) * 3),  # fmt: skip
        dict(global_pool="token", num_register_tokens=2, norm="rmsnorm"),
    ],
    ids=["avg", "map", "probe-sincos-rms", "token-registers"],
)
def test_padding_masked_everywhere(fields):
    """Padded tokens with a mask change nothing: every block's real tokens and the pooled vector are the same."""
    model = tower(**fields)
    x = images()
    tokens = model.embed(x)
    b, t, d = tokens.shape
    pad = jnp.asarray(np.random.default_rng(5).normal(size=(b, 3, d)).astype(np.float32)) * 10
    mask = jnp.concatenate([jnp.ones((b, t), bool), jnp.zeros((b, 3), bool)], axis=1)
    _, plain = model.trunk(tokens, return_hidden_states=True)
    _, padded = model.trunk(jnp.concatenate([tokens, pad], axis=1), mask=mask, return_hidden_states=True)
    np.testing.assert_allclose(np.asarray(padded[:, :, :t]), np.asarray(plain), atol=ATOL, rtol=0)
    features = model.final_norm(padded[-1])
    pooled = model.pool(features, mask=mask)
    np.testing.assert_allclose(np.asarray(pooled), np.asarray(model(x)), atol=ATOL, rtol=0)
    unmasked = model.pool(features)  # the check can fail: without the mask the padding leaks in
    if fields["global_pool"] != "token":
        assert np.abs(np.asarray(unmasked) - np.asarray(pooled)).max() > 1e-3


def test_mask_reaches_encode_and_forward_features():
    model = tower(global_pool="avg", class_token=False, pos_embed_prefix="none")
    x = images()
    t = model.embed(x).shape[1]
    all_real = jnp.ones((2, t), bool)
    np.testing.assert_allclose(model.forward_features(x, mask=all_real), model.forward_features(x), atol=ATOL)
    hide_last = all_real.at[:, -1].set(False)
    changed = model.forward_features(x, mask=hide_last)[:, 0] - model.forward_features(x)[:, 0]
    assert np.abs(np.asarray(changed)).max() > 1e-4
    with pytest.raises(ValueError, match=r"mask must be \[batch, tokens\]"):
        model.encode(x, mask=all_real[:, None])


@pytest.mark.parametrize("pool", ["map", "probe"])
def test_attention_heads_use_the_models_attention_fn(pool):
    calls = []

    def counting(q, k, v, *, mask=None, **kwargs):
        calls.append((q.shape[1], None if mask is None else mask.shape))
        return jax.nn.dot_product_attention(q, k, v, mask=mask)

    model = tower(attention_fn=counting, global_pool=pool, class_token=False, pos_embed_prefix="none")
    x = images()
    t = model.embed(x).shape[1]
    calls.clear()
    model.pool(model.forward_features(x), mask=jnp.ones((2, t), bool))
    assert (1, (2, 1, 1, t)) in calls  # the head's one query, with the key mask


def test_sincos_runs_at_any_grid_and_config_checks():
    model = tower(position="sincos", class_token=False, pos_embed_prefix="none", global_pool="avg")
    assert model.pos_embed is None
    for hw in [(12, 9), (6, 15), (21, 21)]:
        assert model(images(hw=hw)).shape == (2, 20)
    with pytest.raises(ValueError, match="sincos"):
        VisionTowerConfig(**TINY, position="sincos")  # a class token with a position row: not sin-cos's
    with pytest.raises(ValueError, match="norm='batchnorm'"):
        VisionTowerConfig(**TINY, norm="batchnorm")
