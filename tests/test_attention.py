"""Attention backends: parity with a float64 reference on odd shapes, fallback resolution, padding masks, dropout
rules, custom attention_fns from the original jimm, and attention maps equal to transformers'."""

import dataclasses
import logging
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import hf_model, images, to_torch
from flax import nnx

import jimm
from jimm.common import tokamax_attention as tk
from jimm.common.attention import attention_weights, jax_attention, reference_attention, xla_attention
from jimm.common.tokamax_attention import TokamaxAttention, make_tokamax_attention, pad_tokens, tokamax_attention

ATOL = 1e-5
GPU_ONLY = ["mosaic", "triton", "cudnn", "mosaic_tpu"]

CPU_BACKENDS = {
    "default": lambda: xla_attention,
    "jax_xla": lambda: jax_attention("xla"),
    "tokamax_xla": lambda: make_tokamax_attention(["xla"]),
    "tokamax_xla_chunked": lambda: make_tokamax_attention("xla_chunked"),
    "tokamax_attention_fn": lambda: tokamax_attention,  # the spec's plain function, used as an attention_fn
    "explicit": lambda: reference_attention,
}


def qkv(b, t, n, h, seed=0, s=None):
    r = np.random.RandomState(seed)
    s = t if s is None else s
    return tuple(r.randn(b, length, n, h).astype(np.float32) for length in (t, s, s))


def numpy_attention(q, k, v, mask=None):
    """float64 softmax(q k^T / sqrt(H)) v, masked keys excluded."""
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    if mask is not None:
        logits = np.where(mask, logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bnts,bsnh->btnh", p, v)


def random_mask(b, t, s, seed=1):
    mask = np.random.RandomState(seed).rand(b, 1, t, s) > 0.4
    mask[..., 0] = True  # every query sees at least one key
    return mask


# --------------------------------------------------------------------------------------------------------------
# Kernel-level parity.


@pytest.mark.parametrize("backend", CPU_BACKENDS.keys())
@pytest.mark.parametrize(("tokens", "head_dim"), [(197, 64), (50, 5), (197, 5)])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_cpu_backend_matches_reference(backend, tokens, head_dim, masked):
    q, k, v = qkv(2, tokens, 3, head_dim)
    mask = random_mask(2, tokens, tokens) if masked else None
    fn = CPU_BACKENDS[backend]()
    out = jax.jit(lambda q, k, v, m: fn(q, k, v, mask=m))(q, k, v, mask)
    assert out.shape == q.shape and out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), numpy_attention(q, k, v, mask), atol=ATOL, rtol=0)


def test_cross_attention_shapes_and_bias():
    q, k, v = qkv(2, 50, 3, 5, s=37)
    bias = np.random.RandomState(2).randn(2, 3, 50, 37).astype(np.float32)
    ref = np.asarray(reference_attention(q, k, v, bias=bias))
    for fn in (xla_attention, make_tokamax_attention(["xla"]), make_tokamax_attention(["xla_chunked"])):
        np.testing.assert_allclose(np.asarray(fn(q, k, v, bias=bias)), ref, atol=ATOL, rtol=0)


def test_causal_flag_from_flax_is_honoured():
    q, k, v = qkv(1, 50, 3, 5)
    causal = np.tril(np.ones((50, 50), bool))[None, None]
    expected = numpy_attention(q, k, v, causal)
    for fn in (xla_attention, make_tokamax_attention(["xla_chunked"]), reference_attention):
        np.testing.assert_allclose(np.asarray(fn(q, k, v, is_causal=True)), expected, atol=ATOL, rtol=0)


def test_flax_dropout_and_unknown_kwargs_are_errors_not_ignored():
    q, k, v = qkv(1, 8, 2, 4)
    fn = make_tokamax_attention(["xla"])
    with pytest.raises(ValueError, match="cannot apply attention dropout"):
        fn(q, k, v, dropout_rate=0.1, deterministic=False, dropout_rng=jax.random.key(0))
    with pytest.raises(TypeError, match="unexpected keyword"):
        xla_attention(q, k, v, windows=3)
    with pytest.raises(ValueError, match="attention_maps"):
        xla_attention(q, k, v, module=object())
    # what nnx.MultiHeadAttention passes in eval mode is accepted
    out = xla_attention(q, k, v, dropout_rate=0.1, deterministic=True, dtype=jnp.float32, precision=None, module=None)
    np.testing.assert_allclose(np.asarray(out), numpy_attention(q, k, v), atol=ATOL, rtol=0)


# --------------------------------------------------------------------------------------------------------------
# Fallback resolution.


@pytest.mark.parametrize(
    ("backends", "chosen"),
    [
        (["mosaic", "triton", "xla"], "xla"),
        (["mosaic_tpu", "xla_chunked"], "xla_chunked"),
        ([*GPU_ONLY, "xla_chunked", "xla"], "xla_chunked"),
        (["cudnn", "xla"], "xla"),
    ],
)
def test_gpu_first_lists_fall_back_on_cpu(backends, chosen, caplog):
    fn = TokamaxAttention(backends)  # a private memo, so the log line is this test's
    q, k, v = qkv(2, 197, 3, 64, seed=3)
    with caplog.at_level(logging.INFO, logger="jimm.common.attention"):
        out = jax.jit(fn)(q, k, v)
        out_again = jax.jit(lambda *a: fn(*a) * 1.0)(q, k, v)  # a second trace: resolved from the cache
    np.testing.assert_allclose(np.asarray(out), numpy_attention(q, k, v), atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.asarray(out_again), np.asarray(out), atol=ATOL, rtol=0)
    choice = fn.choice(q, k, v)
    assert choice.backend == chosen
    assert [name for name, _ in choice.skipped] == backends[: backends.index(chosen)]
    assert all("cpu" in reason.lower() for _, reason in choice.skipped), choice.skipped
    assert choice.padded_tokens is None  # none of the CPU kernels needs padding
    lines = [r.getMessage() for r in caplog.records if "tokamax attention" in r.getMessage()]
    assert len(lines) == 1 and f"chose {chosen!r}" in lines[0], lines
    assert all(name in lines[0] for name, _ in choice.skipped)


def test_resolution_is_per_shape_and_dtype():
    fn = TokamaxAttention(["mosaic", "xla"])
    for t, dtype in [(197, jnp.float32), (50, jnp.float32), (50, jnp.bfloat16), (197, jnp.float32)]:
        q = jnp.zeros((1, t, 2, 8), dtype)
        jax.jit(fn)(q, q, q)
    assert len(fn.choices) == 3
    assert {c.backend for c in fn.choices.values()} == {"xla"}


def test_make_tokamax_attention_shares_one_memo_per_list():
    assert make_tokamax_attention(["triton", "xla"]) is make_tokamax_attention(("triton", "xla"))
    assert make_tokamax_attention("xla") is make_tokamax_attention(["xla"])
    assert repr(make_tokamax_attention(["triton", "xla"])) == "make_tokamax_attention(['triton', 'xla'])"


def test_unknown_backend_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown attention backend\(s\) \['flash'\].*'mosaic_tpu'.*'xla'"):
        make_tokamax_attention(["flash", "xla"])
    with pytest.raises(ValueError, match="at least one backend"):
        make_tokamax_attention([])
    with pytest.raises(ValueError, match="'xla' or 'cudnn'"):
        jax_attention("triton")


def test_no_backend_available_is_a_clear_error():
    q, k, v = qkv(1, 16, 2, 8)
    with pytest.raises(RuntimeError, match=r"no attention backend in \['triton', 'cudnn'\].*End the list with 'xla'"):
        TokamaxAttention(["triton", "cudnn"])(q, k, v)


def abstract_mesh(platform: str, kind: str):
    from jax._src.mesh import AbstractDevice  # test-only: a mesh of another platform's devices, without them

    return jax.sharding.AbstractMesh((1,), ("data",), abstract_device=AbstractDevice(kind, 1, platform))


def test_jax_nn_cudnn_off_gpu_says_what_to_do():
    """An explicit `jax_attention("cudnn")` is one kernel, not a list: off an NVIDIA GPU it is an error naming the
    platform and the fallback list (a silent switch to XLA would mislabel every benchmark and memory number)."""
    q, k, v = qkv(1, 16, 2, 8)
    with pytest.raises(
        RuntimeError, match=r"needs an NVIDIA GPU.*compiles for 'cpu'.*make_tokamax_attention\(\['cudnn', 'xla'\]\)"
    ):
        jax_attention("cudnn")(q, k, v)
    tpu = jax.sharding.use_abstract_mesh(abstract_mesh("tpu", "TPU v5 lite"))
    with tpu, pytest.raises(RuntimeError, match=r"needs an NVIDIA GPU.*compiles for 'tpu'"):
        jax.eval_shape(jax_attention("cudnn"), q, k, v)


def test_jax_attention_follows_the_compile_target_not_the_host():
    """Traced for a GPU mesh from this CPU host: `xla` is jax.nn's path (not the CPU heads-major one) and `cudnn`
    passes jimm's check (jax's own cuDNN lookup is the next step; it needs cuDNN on the tracing host)."""
    from jimm.common.attention import compile_platform

    q = jax.ShapeDtypeStruct((2, 16, 2, 8), jnp.bfloat16)
    assert compile_platform() == "cpu"
    assert "custom_vjp_call" in str(jax.make_jaxpr(jax_attention("xla"))(q, q, q))  # CPU: cpu_attention
    with jax.sharding.use_abstract_mesh(abstract_mesh("gpu", "NVIDIA H100 80GB HBM3")):
        assert compile_platform() == "gpu"
        assert "custom_vjp_call" not in str(jax.make_jaxpr(jax_attention("xla"))(q, q, q))  # jax.nn's path
        with pytest.raises(RuntimeError) as err:
            jax.eval_shape(jax_attention("cudnn"), q, q, q)
        assert "needs an NVIDIA GPU" not in str(err.value)  # past jimm's check, into jax's cuDNN lookup
    with jax.default_device(jax.devices("cpu")[0]), jax.sharding.use_abstract_mesh(abstract_mesh("gpu", "H100")):
        assert compile_platform() == "cpu"  # a named default device wins over the mesh


def test_missing_tokamax_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tokamax", None)  # makes `import tokamax` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'jimm\[tokamax\]'"):
        make_tokamax_attention(["xla"])
    # the rest of the library works without it
    q, k, v = qkv(1, 16, 2, 8)
    np.testing.assert_allclose(np.asarray(jax_attention("xla")(q, k, v)), numpy_attention(q, k, v), atol=ATOL)


def test_tokamax_under_foreign_command_line_flags():
    """absl would parse sys.argv on tokamax's first flag read and fail on flags it does not know (pytest's)."""
    code = textwrap.dedent(
        """
        import sys
        sys.argv = ["prog", "-q", "--maxfail=1", "--not-an-absl-flag", "-x"]
        import jax.numpy as jnp
        from jimm.common.tokamax_attention import make_tokamax_attention
        q = jnp.ones((1, 9, 2, 4))
        print(make_tokamax_attention(["xla_chunked"])(q, q, q).shape)
        """
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "(1, 9, 2, 4)" in run.stdout


# --------------------------------------------------------------------------------------------------------------
# Padding.


def test_padded_keys_get_exactly_zero_weight():
    q, k, v = qkv(2, 50, 3, 5)
    qp, kp, vp, mask = pad_tokens(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), None, 128)
    assert qp.shape[1] == kp.shape[1] == vp.shape[1] == 128 and mask.shape == (1, 1, 128, 128)
    w = np.asarray(attention_weights(qp, kp, mask=mask))
    assert np.all(w[..., 50:] == 0.0)
    np.testing.assert_allclose(w[:, :, :50, :50], np.asarray(attention_weights(q, k)), atol=ATOL, rtol=0)
    # control: without the mask the zero-padded keys would take weight (so this test can fail)
    assert np.asarray(attention_weights(qp, kp))[..., 50:].sum() > 1.0


def test_no_padding_when_already_aligned():
    q, k, v = (jnp.asarray(x) for x in qkv(1, 128, 2, 8))
    assert pad_tokens(q, k, v, None, 128) == (q, k, v, None)


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_padding_backend_end_to_end(monkeypatch, masked):
    """Pretend the xla kernel needs 64-token blocks: jimm pads 50 -> 64, masks the pad, slices the output."""
    monkeypatch.setitem(tk.BACKEND_TABLE, "xla", dataclasses.replace(tk.BACKEND_TABLE["xla"], pad_multiple=64))
    fn = TokamaxAttention(["xla"])
    q, k, v = qkv(2, 50, 3, 5)
    mask = random_mask(2, 50, 50) if masked else None
    out = jax.jit(lambda *a: fn(*a[:3], mask=a[3]))(q, k, v, mask)
    assert out.shape == q.shape
    assert fn.choice(q, k, v, mask=mask).padded_tokens == 64
    np.testing.assert_allclose(np.asarray(out), numpy_attention(q, k, v, mask), atol=ATOL, rtol=0)


# --------------------------------------------------------------------------------------------------------------
# Models.


def load(tmp_path, hf, **kwargs):
    hf.save_pretrained(tmp_path)
    return jimm.VisionTransformer.from_pretrained(tmp_path, **kwargs)


@pytest.fixture(scope="module")
def tiny_hf():
    return hf_model(seed=3)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tiny_hf):
    path = tmp_path_factory.mktemp("tiny")
    tiny_hf.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def hf_logits(tiny_hf):
    with torch.no_grad():
        return tiny_hf(to_torch(images(seed=5))).logits.numpy()


@pytest.mark.parametrize("backend", ["jax_xla", "tokamax_xla", "tokamax_xla_chunked", "tokamax_attention_fn"])
def test_model_with_cpu_backend_equals_default_and_transformers(tiny_dir, hf_logits, backend):
    x = images(seed=5)
    default = jimm.VisionTransformer.from_pretrained(tiny_dir)
    model = jimm.VisionTransformer.from_pretrained(tiny_dir, attention_fn=CPU_BACKENDS[backend]())
    out = np.asarray(model(x))
    np.testing.assert_allclose(out, np.asarray(default(x)), atol=ATOL, rtol=0)
    np.testing.assert_allclose(out, hf_logits, atol=ATOL, rtol=0)


def test_gpu_first_fallback_model_runs_on_cpu(tiny_dir, hf_logits):
    model = jimm.VisionTransformer.from_pretrained(
        tiny_dir, attention_fn=make_tokamax_attention(["mosaic", "triton", "xla"])
    )
    np.testing.assert_allclose(np.asarray(model(images(seed=5))), hf_logits, atol=ATOL, rtol=0)


def original_style_attention(query, key, value, bias=None, mask=None, **kwargs):
    """A custom attention_fn as written for the original jimm (called through nnx.MultiHeadAttention)."""
    logits = jnp.einsum("bqnh,bknh->bnqk", query / jnp.sqrt(query.shape[-1]), key)
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        logits = jnp.where(mask, logits, -1e30)
    return jnp.einsum("bnqk,bknh->bqnh", jax.nn.softmax(logits, axis=-1), value)


@pytest.mark.parametrize("fn", [original_style_attention, nnx.dot_product_attention], ids=["custom", "flax"])
def test_custom_attention_fn_from_the_original_keeps_working(tiny_dir, hf_logits, fn):
    calls = []

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return fn(*args, **kwargs)

    model = jimm.VisionTransformer.from_pretrained(tiny_dir, attention_fn=counted)
    np.testing.assert_allclose(np.asarray(model(images(seed=5))), hf_logits, atol=ATOL, rtol=0)
    assert calls and calls[0] == (2, 122, 3, 5)  # [B, T, N, H] with T = 11 * 11 + 1


def test_attention_maps_equal_transformers(tiny_hf, tiny_dir):
    x = images(seed=7)
    tiny_hf.set_attn_implementation("eager")
    with torch.no_grad():
        expected = tiny_hf(to_torch(x), output_attentions=True).attentions
    model = jimm.VisionTransformer.from_pretrained(tiny_dir)
    maps = np.asarray(model.attention_maps(x))
    assert maps.shape == (2, 2, 3, 122, 122)  # [L, B, N, T, T]
    for layer, ref in enumerate(expected):
        np.testing.assert_allclose(maps[layer], ref.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("scan_layers", [True, False], ids=["scan", "loop"])
def test_attention_maps_ignore_the_attention_fn(tiny_dir, scan_layers):
    x = images(seed=7)
    default = jimm.VisionTransformer.from_pretrained(tiny_dir)
    calls = []

    def never(*args, **kwargs):
        calls.append(1)
        return xla_attention(*args, **kwargs)

    other = jimm.VisionTransformer.from_pretrained(tiny_dir, attention_fn=never, scan_layers=scan_layers)
    np.testing.assert_allclose(np.asarray(other.attention_maps(x)), np.asarray(default.attention_maps(x)), atol=1e-7)
    assert not calls  # the explicit path, not the model's kernel


def test_encoder_returns_hidden_states_and_weights_together(tiny_dir):
    model = jimm.VisionTransformer.from_pretrained(tiny_dir)
    tokens = model.encoder.embed(jnp.asarray(images(seed=7)))
    y, hidden, weights = model.encoder.blocks(tokens, return_hidden_states=True, return_attention_weights=True)
    assert hidden.shape == (2, 2, 122, 15) and weights.shape == (2, 2, 3, 122, 122)
    np.testing.assert_array_equal(np.asarray(hidden[-1]), np.asarray(y))
    np.testing.assert_allclose(np.asarray(y), np.asarray(model.encoder.blocks(tokens)), atol=ATOL, rtol=0)


# --------------------------------------------------------------------------------------------------------------
# Attention dropout in training.


def dropout_model(tiny_dir, attention_fn):
    model = jimm.VisionTransformer.from_pretrained(tiny_dir, attention_fn=attention_fn, rngs=nnx.Rngs(0, dropout=1))
    # attention dropout only (hidden dropout stays 0 in the tiny config)
    model.encoder.blocks.layers.attn.attn_drop.rate = 0.5
    return model


@pytest.mark.parametrize("backend", ["default", "jax_xla", "tokamax_xla", "gpu_first_list"])
def test_attention_dropout_runs_on_xla_backends(tiny_dir, hf_logits, backend):
    fn = make_tokamax_attention(["mosaic", "triton", "xla"]) if backend == "gpu_first_list" else CPU_BACKENDS[backend]()
    model = dropout_model(tiny_dir, fn)
    x = images(seed=5)
    np.testing.assert_allclose(np.asarray(model(x)), hf_logits, atol=ATOL, rtol=0)  # eval: no dropout
    model.train()
    a, b = np.asarray(model(x)), np.asarray(model(x))
    assert np.abs(a - hf_logits).max() > 1e-3 and np.abs(a - b).max() > 1e-3  # dropout applied, fresh masks
    model.eval()
    np.testing.assert_allclose(np.asarray(model(x)), hf_logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("backend", ["tokamax_xla_chunked", "cudnn", "custom"])
def test_attention_dropout_on_other_backends_is_an_error(tiny_dir, backend):
    fn = {
        "tokamax_xla_chunked": make_tokamax_attention(["mosaic_tpu", "xla_chunked"]),
        "cudnn": jax_attention("cudnn"),
        "custom": original_style_attention,
    }[backend]
    model = dropout_model(tiny_dir, fn)
    model.train()
    with pytest.raises(ValueError, match=r"attention dropout 0.5 in training .* Use attention_fn=None"):
        model(images(seed=5))
    if backend != "cudnn":
        model.eval()
        model(images(seed=5))  # eval mode is fine


# --------------------------------------------------------------------------------------------------------------
# GPU (skipped on CPU): every GPU backend against xla at ViT-B/16 sizes.

VIT_B = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, patch_size=16)
GPU_TOL = {jnp.float32: 2e-3, jnp.bfloat16: 3e-2}


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["mosaic", "triton", "cudnn", "xla_chunked", "jax_cudnn"])
@pytest.mark.parametrize("tokens", [197, 4097])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["fp32", "bf16"])
def test_gpu_kernel_matches_xla(backend, tokens, dtype):
    if backend in ("cudnn", "jax_cudnn") and dtype == jnp.float32:
        pytest.skip("cuDNN flash attention takes fp16/bf16 only")
    q, k, v = (jnp.asarray(x, dtype) for x in qkv(8 if tokens == 197 else 2, tokens, 12, 64))
    fn = jax_attention("cudnn") if backend == "jax_cudnn" else TokamaxAttention([backend])
    out = jax.jit(fn)(q, k, v).astype(jnp.float32)
    ref = jax.jit(xla_attention)(q, k, v).astype(jnp.float32)
    err = float(jnp.abs(out - ref).max())
    print(f"{backend} T={tokens} {jnp.dtype(dtype).name}: max |diff| vs xla = {err:.2e}")
    assert err < GPU_TOL[dtype]


@pytest.mark.gpu
@pytest.mark.parametrize("image_size", [224, 1024], ids=["197tok", "4097tok"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["fp32", "bf16"])
def test_gpu_vit_b16_fallback_list_matches_xla(image_size, dtype):
    config = jimm.ViTConfig(**VIT_B, image_size=image_size, num_labels=10)
    x = jnp.asarray(images(batch=2, size=image_size), dtype)
    ref = jimm.VisionTransformer(config=config, dtype=dtype, sharding=None)
    fast = jimm.VisionTransformer(
        config=config, dtype=dtype, sharding=None, attention_fn=make_tokamax_attention(["mosaic", "triton", "xla"])
    )
    err = float(jnp.abs(fast(x).astype(jnp.float32) - ref(x).astype(jnp.float32)).max())
    print(f"ViT-B/16 {image_size}px {jnp.dtype(dtype).name}: max |logit diff| = {err:.2e}")
    assert err < 10 * GPU_TOL[dtype]
