"""Backend selection in `jimm.common.tokamax_attention` with fake backends: one the compiler refuses, one that
refuses a dtype, one that needs padding, one that cannot train; and the real table's documented limits."""

import dataclasses
import logging
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jimm.common import tokamax_attention as tk
from jimm.common.attention import explicit_attention

ATOL = 1e-5


class Explicit(tk.Backend):
    """A fake kernel: the explicit XLA path, recording the token counts it was run at."""

    def kernel(self, query, key, value, bias, mask, is_causal, key_lengths=None):
        if key_lengths is not None:  # padded keys excluded by length
            keep = jnp.arange(key.shape[1])[None, None, None, :] < key_lengths[:, None, None, None]
            mask = keep if mask is None else mask & keep
        SEEN.append((self.name, query.shape[1], key.shape[1], jnp.dtype(query.dtype).name))
        return explicit_attention(query, key, value, bias=bias, mask=mask, is_causal=is_causal)


class CompilerRefuses(tk.Backend):
    """Traces and lowers, but the compiler has no kernel for it (a custom call nobody registered)."""

    def kernel(self, query, key, value, bias, mask, is_causal, key_lengths=None):
        return jax.ffi.ffi_call("jimm_no_such_kernel", jax.ShapeDtypeStruct(query.shape, query.dtype))(query)


SEEN: list = []
FAKES = {
    "refused_by_compiler": CompilerRefuses("refused_by_compiler"),
    "bf16_only": Explicit("bf16_only", dtypes=frozenset({"bfloat16"})),
    "pads_to_8": Explicit("pads_to_8", pad_multiple=8),
    "pads_to_8_by_length": Explicit("pads_to_8_by_length", pad_multiple=8, pad_by_length=True),
    "even_training": Explicit("even_training", even_lengths_in_training=True),
    "plain": Explicit("plain"),
}


@pytest.fixture(autouse=True)
def fakes(monkeypatch):
    for name, backend in FAKES.items():
        monkeypatch.setitem(tk.BACKEND_TABLE, name, backend)
    SEEN.clear()


def qkv(b, t, n, h, seed=0):
    r = np.random.RandomState(seed)
    return tuple(jnp.asarray(r.randn(b, t, n, h).astype(np.float32)) for _ in range(3))


def key_mask(b, t, seed=1):
    mask = np.random.RandomState(seed).rand(b, 1, 1, t) > 0.3
    mask[..., 0] = True
    return jnp.asarray(mask)


def reference(q, k, v, mask=None):
    return explicit_attention(q, k, v, mask=mask)


def info_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("tokamax attention")]


def test_compile_time_refusal_falls_back_and_is_logged_once(caplog):
    fn = tk.TokamaxAttention(["refused_by_compiler", "plain"])
    q, k, v = qkv(2, 13, 3, 8)
    with caplog.at_level(logging.INFO, logger="jimm.common.attention"):
        for _ in range(3):
            out = jax.jit(lambda *a: fn(*a) + 0.0)(q, k, v)  # a fresh trace each time: resolved from the memo
    np.testing.assert_allclose(np.asarray(out), np.asarray(reference(q, k, v)), atol=ATOL)
    choice = fn.choice(q, k, v)
    assert choice.backend == "plain"
    (name, reason), = choice.skipped  # fmt: skip
    assert name == "refused_by_compiler" and "refused at compile time" in reason and "jimm_no_such_kernel" in reason
    lines = info_lines(caplog)
    assert len(lines) == 1 and "chose 'plain'" in lines[0] and "refused at compile time" in lines[0], lines


def test_dtype_refusal_before_compiling(caplog):
    fn = tk.TokamaxAttention(["bf16_only", "plain"])
    q, k, v = qkv(1, 13, 2, 8)
    with caplog.at_level(logging.INFO, logger="jimm.common.attention"):
        fn(q, k, v)
        fn(*(x.astype(jnp.bfloat16) for x in (q, k, v)))
    assert fn.choice(q, k, v).skipped == (("bf16_only", "takes bfloat16 only, not float32"),)
    assert fn.choice(q.astype(jnp.bfloat16)).backend == "bf16_only"
    assert {(name, dtype) for name, *_, dtype in SEEN} == {("plain", "float32"), ("bf16_only", "bfloat16")}
    lines = info_lines(caplog)
    assert len(lines) == 2 and "float32" in lines[0] and "takes bfloat16 only" in lines[0], lines


@pytest.mark.parametrize(
    ("backend", "masked", "causal"),
    [
        ("pads_to_8", True, False),
        ("pads_to_8", False, True),
        ("pads_to_8_by_length", False, False),
        ("pads_to_8_by_length", True, True),
    ],
)
def test_padding_is_applied_and_removed_without_changing_results(backend, masked, causal):
    fn = tk.TokamaxAttention([backend])
    q, k, v = qkv(2, 13, 3, 8)
    mask = key_mask(2, 13) if masked else None
    full = tk.BACKEND_TABLE["plain"]

    def loss(run, q, k, v):
        return jnp.sum(run(q, k, v) * jnp.arange(8.0))

    out = fn(q, k, v, mask=mask, causal=causal)
    expected = explicit_attention(q, k, v, mask=mask, is_causal=causal)
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), atol=ATOL)
    grads = jax.grad(lambda *a: loss(lambda *b: fn(*b, mask=mask, causal=causal), *a), argnums=(0, 1, 2))(q, k, v)
    ref = jax.grad(lambda *a: loss(lambda *b: full.run(*b, None, mask, causal), *a), argnums=(0, 1, 2))(q, k, v)
    for got, want in zip(grads, ref, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=ATOL)
    assert (backend, 16, 16, "float32") in SEEN and fn.choice(q, mask=mask, is_causal=causal).padded_tokens == 16


def test_forward_and_training_choose_separately():
    fn = tk.TokamaxAttention(["even_training", "plain"])
    q, k, v = qkv(2, 13, 3, 8)
    out = fn(q, k, v)
    assert {name for name, *_ in SEEN} == {"even_training"}
    assert not any(training for *_, training in fn.choices)  # inference resolves no training backend
    grads = jax.grad(lambda q: jnp.sum(fn(q, k, v) ** 2))(q)
    ref = jax.grad(lambda q: jnp.sum(reference(q, k, v) ** 2))(q)
    np.testing.assert_allclose(np.asarray(grads), np.asarray(ref), atol=ATOL)
    np.testing.assert_allclose(np.asarray(out), np.asarray(reference(q, k, v)), atol=ATOL)
    assert fn.choice(q).backend == "even_training"
    training = fn.choice(q, training=True)
    assert training.backend == "plain"
    assert training.skipped == (("even_training", "cannot train at odd sequence lengths (q 13, kv 13)"),)
    assert fn.choice(qkv(2, 14, 3, 8)[0], training=True).backend == "even_training"  # even: trains there


def test_nothing_compiles_is_a_clear_error():
    with pytest.raises(RuntimeError, match=r"no attention backend in \['refused_by_compiler', 'bf16_only'\].*'xla'"):
        tk.TokamaxAttention(["refused_by_compiler", "bf16_only"])(*qkv(1, 5, 2, 8))


# --------------------------------------------------------------------------------------------------------------
# The real table's documented limits, against described devices (no hardware needed).

H100 = types.SimpleNamespace(platform="gpu", device_kind="NVIDIA H100 80GB HBM3")
A100 = types.SimpleNamespace(platform="gpu", device_kind="NVIDIA A100-SXM4-80GB", compute_capability="8.0")
TPU = types.SimpleNamespace(platform="tpu", device_kind="TPU v5 lite")


def call(device, t=197, h=64, dtype=jnp.bfloat16, *, training=False, bias=False, b=8, mask=None):
    q = jax.ShapeDtypeStruct((b, t, 12, h), dtype)
    bias = jax.ShapeDtypeStruct((b, 12, t, t), dtype) if bias else None
    mask = None if mask is None else jax.ShapeDtypeStruct(mask, jnp.bool_)
    return tk.Call(q, q, q, bias, mask, is_causal=False, training=training, device=device)


@pytest.mark.parametrize(
    ("backend", "the_call", "reason"),
    [
        ("mosaic", call(H100), None),
        ("mosaic", call(H100, dtype=jnp.float32), "takes bfloat16/float16 only, not float32"),
        ("mosaic", call(A100), "needs compute capability >= 9.0, 'NVIDIA A100-SXM4-80GB' has 8.0"),
        ("mosaic", call(TPU), "needs nvidia hardware, not 'TPU v5 lite'"),
        ("triton", call(A100, dtype=jnp.float32), None),
        ("cudnn", call(H100), None),
        ("cudnn", call(H100, training=True), "cannot train at odd sequence lengths (q 197, kv 197)"),
        ("cudnn", call(H100, t=256, training=True), None),
        ("cudnn", call(H100, h=72), None),
        ("cudnn", call(H100, h=100), "needs a head dim that is a multiple of 8 and <= 256, not 100"),
        ("cudnn", call(H100, h=264), "needs a head dim that is a multiple of 8 and <= 256, not 264"),
        ("cudnn", call(H100, dtype=jnp.float32), "takes bfloat16/float16 only, not float32"),
        ("cudnn", call(H100, t=256, training=True, bias=True), "computes bias gradients at batch 1 only"),
        ("mosaic_tpu", call(TPU), None),
        ("mosaic_tpu", call(TPU, bias=True), "takes no attention bias"),
        (
            "mosaic_tpu",
            call(TPU, mask=(8, 1, 1, 197)),
            "takes one mask for the whole batch ([1, 1, T, S]), not (8, 1, 1, 197)",
        ),
        ("mosaic_tpu", call(TPU, mask=(1, 1, 197, 197)), None),
        ("mosaic_tpu", call(H100), "needs tpu hardware, not 'NVIDIA H100 80GB HBM3'"),
        ("xla_chunked", call(TPU, dtype=jnp.float32), None),
    ],
)
def test_documented_limits(backend, the_call, reason):
    assert tk.BACKEND_TABLE[backend].refusal(the_call) == reason


def test_padding_the_table_asks_for():
    assert {n: b.pad_multiple for n, b in tk.BACKEND_TABLE.items() if b.pad_multiple > 1 and n in tk.BACKENDS} == {
        "mosaic": 8,
        "mosaic_tpu": 128,
    }
    assert dataclasses.replace(tk.BACKEND_TABLE["mosaic"], pad_multiple=1).refusal(call(H100)) is None


def test_probe_under_an_explicit_mesh():
    """The compile probe runs inside the caller's trace; under a mesh it must not name a device of its own."""
    mesh = jax.make_mesh((4, 2), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Explicit,) * 2)
    fn = tk.TokamaxAttention(["xla_chunked", "xla"])
    q, k, v = qkv(8, 13, 2, 8)
    with jax.set_mesh(mesh):
        out = jax.jit(fn)(q, k, v)
    assert fn.choice(q).backend == "xla_chunked", fn.choice(q).describe()
    np.testing.assert_allclose(np.asarray(out), np.asarray(reference(q, k, v)), atol=ATOL)


def test_fp32_model_asking_for_mosaic_on_h100_falls_back_with_one_info_line(caplog):
    fn = tk.TokamaxAttention(["mosaic", "xla"], target=H100)  # described device: nothing is compiled for it
    q = jax.ShapeDtypeStruct((8, 197, 12, 64), jnp.float32)
    with caplog.at_level(logging.INFO, logger="jimm.common.attention"):
        for _ in range(3):
            choice = fn.choice(q)
    assert choice.backend == "xla" and choice.skipped == (("mosaic", "takes bfloat16/float16 only, not float32"),)
    (line,) = info_lines(caplog)
    assert "float32 forward on gpu:NVIDIA H100 80GB HBM3: chose 'xla'" in line, line
