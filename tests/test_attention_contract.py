"""The original jimm's attention contract: every attention function takes `causal=`, `make_tokamax_attention` takes
`implementation=`, and a user `attention_fn` written to that contract keeps the text tower's causal mask (plus
the adaptation for functions that take only one of `mask=` / `causal=`, see `AttentionCall`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_attention import numpy_attention  # the float64 reference, written once

import jimm
from jimm.common.attention import AttentionCall, jax_attention, reference_attention, xla_attention
from jimm.common.sharding import NoSharding, resolve_sharding
from jimm.common.text import TextTower, TextTowerConfig
from jimm.common.tokamax_attention import make_tokamax_attention, tokamax_attention

ATOL = 1e-5


def qkv(b, t, n, h, seed=0):
    r = np.random.RandomState(seed)
    return tuple(r.randn(b, t, n, h).astype(np.float32) for _ in range(3))


CAUSAL = np.tril(np.ones((13, 13), bool))[None, None]


@pytest.mark.parametrize(
    "fn",
    [
        jimm.tokamax_attention,
        xla_attention,
        reference_attention,
        make_tokamax_attention(["xla_chunked"]),
        make_tokamax_attention(implementation=["xla"]),
    ],
    ids=["jimm.tokamax_attention", "xla", "reference", "tokamax_chunked", "implementation_kw"],
)
def test_every_attention_function_takes_causal(fn):
    q, k, v = qkv(2, 13, 3, 5)
    np.testing.assert_allclose(np.asarray(fn(q, k, v, causal=True)), numpy_attention(q, k, v, CAUSAL), atol=ATOL)
    np.testing.assert_allclose(np.asarray(fn(q, k, v, causal=False)), numpy_attention(q, k, v), atol=ATOL)


def test_original_names_and_keywords():
    from jimm.common import tokamax_attention as original_module

    assert original_module.make_tokamax_attention(implementation=["xla"]) is make_tokamax_attention(["xla"])
    assert original_module.tokamax_attention_fn is tokamax_attention
    q, k, v = qkv(1, 13, 2, 4)
    out = original_module.tokamax_attention_fn(q, k, v, causal=True, implementation="xla")
    np.testing.assert_allclose(np.asarray(out), numpy_attention(q, k, v, CAUSAL), atol=ATOL)
    with pytest.raises(TypeError, match="`backends` or `implementation`, not both"):
        make_tokamax_attention(["xla"], implementation=["xla"])


# --------------------------------------------------------------------------------------------------------------
# How a block calls a user's function.


SEEN: dict = {}


def original_signature(q, k, v, bias=None, mask=None, *, causal=False, **_):
    SEEN.update(mask=mask, causal=causal)
    return q


def kwargs_only(q, k, v, mask=None, **kwargs):
    SEEN.update(mask=mask, **kwargs)
    return q


def causal_keyword_only(q, k, v, *, causal=False):
    SEEN.update(causal=causal)
    return q


def is_causal_style(q, k, v, mask=None, is_causal=False):  # jax.nn / tokamax / flax
    SEEN.update(mask=mask, is_causal=is_causal)
    return q


def mask_keyword_only(q, k, v, mask=None):
    SEEN.update(mask=mask)
    return q


@pytest.mark.parametrize(
    ("fn", "passed"),
    [
        (original_signature, {"mask": True, "causal": True}),
        (kwargs_only, {"mask": True, "causal": True}),
        (causal_keyword_only, {"causal": True}),  # the causal mask alone travels as causal=
        (is_causal_style, {"mask": True, "is_causal": True}),
        (mask_keyword_only, {"mask": True}),  # causality folded into the mask
    ],
)
def test_causal_block_calls_each_signature_with_what_it_takes(fn, passed):
    SEEN.clear()
    q = jnp.zeros((2, 13, 3, 4))
    AttentionCall.bind(fn, causal=True)(q, q, q)
    assert {name: value if name != "mask" else value is not None for name, value in SEEN.items()} == passed
    if "mask" in passed:  # the mask a block passes is complete on its own: causal, with full [.., T, S] axes
        np.testing.assert_array_equal(np.asarray(SEEN["mask"]), np.broadcast_to(CAUSAL, SEEN["mask"].shape))


def test_non_causal_block_passes_causal_false_only_to_functions_that_name_it():
    got = []

    def named(q, k, v, mask=None, *, causal):  # required keyword: must be given
        got.append(causal)
        return q

    def wrapper(q, k, v, **kwargs):  # a **kwargs wrapper around a mask-only function
        return nnx.dot_product_attention(q, k, v, **kwargs)

    q, k, v = qkv(1, 13, 2, 4)
    AttentionCall.bind(named)(q, k, v)
    assert got == [False]
    np.testing.assert_allclose(np.asarray(AttentionCall.bind(wrapper)(q, k, v)), numpy_attention(q, k, v), atol=ATOL)


def test_padding_mask_for_a_function_without_mask_is_an_error():
    def causal_only(q, k, v, *, causal=False):
        return q

    q = jnp.zeros((2, 13, 3, 4))
    padding = jnp.ones((2, 1, 13, 13), bool)
    AttentionCall.bind(causal_only, causal=True)(q, q, q)  # the causal mask alone: fine
    with pytest.raises(TypeError, match=r"takes no `mask=` keyword, but this block needs a padding mask: add"):
        AttentionCall.bind(causal_only, causal=True)(q, q, q, padding)

    def neither(q, k, v):
        return q

    AttentionCall.bind(neither)(q, q, q)  # a vision block needs neither
    with pytest.raises(TypeError, match="needs a causal mask"):
        AttentionCall.bind(neither, causal=True)(q, q, q)


# --------------------------------------------------------------------------------------------------------------
# A causal text tower (CLIP's) with user functions written to the original's contract.


def original_contract(query, key, value, bias=None, mask=None, *, causal=False, **_):
    """Written for the original jimm: honours `causal=` and ignores `mask` (the original passed none)."""
    logits = jnp.einsum("btnh,bsnh->bnts", query, key) / jnp.sqrt(query.shape[-1])
    if causal:
        logits = jnp.where(jnp.tril(jnp.ones(logits.shape[-2:], bool)), logits, -1e30)
    return jnp.einsum("bnts,bsnh->btnh", jax.nn.softmax(logits, axis=-1), value)


def mask_only(query, key, value, bias=None, mask=None, **kwargs):
    """Honours `mask` only, swallowing `causal=` in `**kwargs` (the mask a block passes carries causality)."""
    logits = jnp.einsum("btnh,bsnh->bnts", query, key) / jnp.sqrt(query.shape[-1])
    logits = logits if mask is None else jnp.where(mask, logits, -1e30)
    return jnp.einsum("bnts,bsnh->btnh", jax.nn.softmax(logits, axis=-1), value)


def ignores_both(query, key, value, bias=None, mask=None, **kwargs):
    return mask_only(query, key, value)


TEXT = TextTowerConfig(vocab_size=31, hidden_size=20, num_layers=2, num_heads=4, mlp_dim=13, max_positions=11,
                       causal=True, pooling="argmax")  # fmt: skip


def tower(attention_fn):
    plan = resolve_sharding(NoSharding())
    return TextTower(TEXT, attention_fn=attention_fn, use_gradient_checkpointing=False, sharding=plan,
                     dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(3))  # fmt: skip


@pytest.fixture(scope="module")
def text_inputs():
    ids = np.random.RandomState(4).randint(0, 30, (3, 11)).astype(np.int32)
    padding = np.ones((3, 11), np.int32)
    padding[1, 7:] = 0
    return jnp.asarray(ids), jnp.asarray(padding)


@pytest.fixture(scope="module")
def default_features(text_inputs):
    ids, padding = text_inputs
    model = tower(None)
    return np.asarray(model.forward_features(ids)), np.asarray(model.forward_features(ids, padding))


@pytest.mark.parametrize("fn", [original_contract, mask_only, tokamax_attention, jax_attention("xla")])
def test_text_tower_keeps_causal_mask_with_user_functions(fn, text_inputs, default_features):
    ids, padding = text_inputs
    plain, padded = default_features
    model = tower(fn)
    np.testing.assert_allclose(np.asarray(model.forward_features(ids)), plain, atol=ATOL)
    if fn is not original_contract:  # it ignores the padding mask (the original had none)
        np.testing.assert_allclose(np.asarray(model.forward_features(ids, padding)), padded, atol=ATOL)
    # control: a function that honours neither differs, so the comparison above can fail
    assert np.abs(np.asarray(tower(ignores_both).forward_features(ids)) - plain).max() > 1e-2


def test_attention_maps_of_a_causal_tower_are_causal(text_inputs):
    ids, _ = text_inputs
    model = tower(original_contract)
    _, weights = model.blocks(model.embed(ids), return_attention_weights=True)
    assert weights.shape == (2, 3, 4, 11, 11)  # [L, B, N, T, T]
    assert np.all(np.triu(np.ones((11, 11)), 1) * np.asarray(weights) == 0)
