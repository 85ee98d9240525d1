"""The hand-written backwards (exact GELU, CPU attention, the unrolled stack's cotangent barrier) give the
gradients autodiff gives, in fp32, and leave the forwards unchanged."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jimm.common import attention
from jimm.common.attention import cpu_attention, explicit_attention, jax_attention
from jimm.common.transformer import gelu_exact, materialize_cotangent
from jimm.models.vit import VisionTransformer


def test_exact_gelu_and_its_gradient_equal_jax_nn_gelu():
    x = jnp.linspace(-9.0, 9.0, 4001, dtype=jnp.float32)
    reference = jax.nn.gelu(x, approximate=False)
    np.testing.assert_allclose(gelu_exact(x), reference, atol=1e-6, rtol=1e-6)
    grad = jax.vmap(jax.grad(gelu_exact))(x)
    expected = jax.vmap(jax.grad(lambda v: jax.nn.gelu(v, approximate=False)))(x)
    np.testing.assert_allclose(grad, expected, atol=1e-6, rtol=1e-6)
    second = jax.vmap(jax.grad(jax.grad(gelu_exact)))(x[::40])  # the backward is itself differentiable
    np.testing.assert_allclose(
        second, jax.vmap(jax.grad(jax.grad(lambda v: jax.nn.gelu(v, approximate=False))))(x[::40]), atol=1e-5
    )


@pytest.mark.parametrize("masked", [False, True])
def test_cpu_attention_forward_and_gradients_equal_autodiff_of_the_explicit_path(masked):
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((2, 7, 3, 5)), jnp.float32) for _ in range(3))
    mask = jnp.asarray(rng.random((2, 3, 7, 7)) > 0.3) | jnp.eye(7, dtype=bool) if masked else None
    weights = jnp.asarray(rng.standard_normal((2, 7, 3, 5)), jnp.float32)

    def loss(fn):
        return lambda q, k, v: jnp.sum(fn(q, k, v) * weights)

    ours = jax.value_and_grad(loss(lambda q, k, v: cpu_attention(q, k, v, mask)), argnums=(0, 1, 2))(q, k, v)
    ref = jax.value_and_grad(loss(lambda q, k, v: explicit_attention(q, k, v, mask=mask)), argnums=(0, 1, 2))(q, k, v)
    np.testing.assert_allclose(ours[0], ref[0], atol=1e-5)
    for got, want in zip(ours[1], ref[1], strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_the_default_cpu_backend_uses_the_custom_backward_also_with_causal_masks():
    rng = np.random.default_rng(1)
    q, k, v = (jnp.asarray(rng.standard_normal((1, 6, 2, 4)), jnp.float32) for _ in range(3))
    attention = jax_attention("xla")
    got = jax.grad(lambda q: attention(q, k, v, is_causal=True).sum())(q)
    want = jax.grad(lambda q: explicit_attention(q, k, v, is_causal=True).sum())(q)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_materialize_cotangent_is_the_identity_both_ways():
    x = jnp.asarray(np.random.default_rng(2).standard_normal((3, 4)), jnp.float32)
    y, pullback = jax.vjp(materialize_cotangent, x)
    g = jnp.arange(12.0).reshape(3, 4) - 5
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(pullback(g)[0], g)


def test_scanned_and_unrolled_stacks_give_the_same_gradients():
    kw = dict(num_classes=5, img_size=32, patch_size=8, hidden_size=24, num_layers=3, num_heads=3, mlp_dim=40)
    scanned = VisionTransformer(**kw, scan_layers=True, rngs=nnx.Rngs(0))
    unrolled = VisionTransformer(**kw, scan_layers=False, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 32, 32, 3)), jnp.float32)

    def loss(model):
        return jnp.sum(jax.nn.log_softmax(model(x)) * jnp.arange(5.0))

    g_scan = nnx.state(nnx.grad(loss)(scanned), nnx.Param)
    g_unroll = nnx.state(nnx.grad(loss)(unrolled), nnx.Param)
    flat_scan = dict(nnx.to_flat_state(g_scan))
    flat_unroll = dict(nnx.to_flat_state(g_unroll))
    layer_paths = [p for p in flat_scan if "layers" in map(str, p)]
    assert layer_paths, "the encoder's stacked parameters were not found"
    for path, value in flat_scan.items():
        scan_value = np.asarray(value.get_value())
        if path in flat_unroll:  # embeddings, norms, head: same path both ways
            np.testing.assert_allclose(scan_value, np.asarray(flat_unroll[path].get_value()), atol=1e-5)
            continue
        i = [str(p) for p in path].index("layers")
        for layer in range(kw["num_layers"]):
            per_layer = (*path[: i + 1], layer, *path[i + 1 :])
            np.testing.assert_allclose(scan_value[layer], np.asarray(flat_unroll[per_layer].get_value()), atol=1e-5)


@pytest.mark.parametrize("mask_shape", [None, (2, 3, 7, 7), (2, 1, 1, 7)])
def test_head_by_head_inference_path_equals_the_whole_matrix(monkeypatch, mask_shape):
    rng = np.random.default_rng(4)
    q, k, v = (jnp.asarray(rng.standard_normal((2, 7, 3, 5)), jnp.float32) for _ in range(3))
    mask = None if mask_shape is None else jnp.asarray(rng.random(mask_shape) > 0.3).at[..., 0].set(True)
    whole = jax.jit(lambda q, k, v: cpu_attention(q, k, v, mask))(q, k, v)
    monkeypatch.setattr(attention, "PER_HEAD_BYTES", 0)
    by_head = jax.jit(lambda q, k, v: cpu_attention(q, k, v, mask))(q, k, v)
    np.testing.assert_allclose(by_head, explicit_attention(q, k, v, mask=mask), atol=1e-6)
    np.testing.assert_allclose(by_head, whole, atol=1e-6)
    grad = jax.grad(lambda q: cpu_attention(q, k, v, mask).sum())(q)  # gradients keep the whole-matrix rule
    np.testing.assert_allclose(grad, jax.grad(lambda q: explicit_attention(q, k, v, mask=mask).sum())(q), atol=1e-5)
