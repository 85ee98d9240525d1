"""The trainer: exact resume after SIGKILL, resume safety, fine-tuning heads, the step maths, outputs."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

import jimm
from jimm.data import ImageProcessorConfig, digits
from jimm.io.safetensors import SafetensorsFile
from jimm.train import ResumeError, TrainConfig, train
from jimm.train.optim import make_optimizer, schedule
from jimm.train.step import cross_entropy, train_step

SRC = str(Path(jimm.__file__).resolve().parents[1])
SMALL = dict(hidden_size=16, num_layers=2, num_heads=2, mlp_dim=24, img_size=8, patch_size=4)


def small_model(seed=0, **overrides):
    kw = {"dropout_rate": 0.0, **SMALL, **overrides}
    return jimm.VisionTransformer(
        **kw, num_classes=10, id2label={i: str(i) for i in range(10)}, rngs=nnx.Rngs(seed), sharding=None
    )


def read_tensors(model_dir):
    out = {}
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with SafetensorsFile(path) as f:
            out.update({name: f.read(name) for name in f.keys()})
    return out


def tree_digest(folder):
    h = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(
        steps=30,
        batch_size=32,
        lr=3e-3,
        warmup_steps=5,
        log_every=5,
        eval_every=10,
        checkpoint_every=10,
        progress=False,
    )
    result = train(small_model(), digits(), cfg, out, processor=ImageProcessorConfig(size=(8, 8)), data_name="digits")
    return out, result, cfg


def test_outputs_metrics_plot_and_saved_model(trained):
    out, result, _ = trained
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    val_rows = [r for r in rows if r["split"] == "validation"]
    assert [r["step"] for r in train_rows] == [5, 10, 15, 20, 25, 30]
    assert [r["step"] for r in val_rows] == [10, 20, 30]
    assert set(train_rows[0]) >= {"loss", "accuracy", "lr", "images_per_s", "grad_norm"}
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]  # it learns
    assert result.validation["accuracy"] == val_rows[-1]["accuracy"] > 0.2
    png = (out / "training.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out / "training.png") as image:
        image.load()
        assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["id2label"] == {str(i): str(i) for i in range(10)}
    reloaded = jimm.VisionTransformer.from_pretrained(out / "model", sharding=None)
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 3), dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(reloaded(x)), np.asarray(result.model(x)))
    assert sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == [20, 30]


def test_resume_refuses_a_different_model_and_leaves_checkpoint_untouched(trained, tmp_path):
    out, _, cfg = trained
    before = tree_digest(out / "checkpoints")
    bigger = jimm.VisionTransformer(
        **{**SMALL, "hidden_size": 24}, num_classes=10, id2label={i: str(i) for i in range(10)}, sharding=None
    )
    with pytest.raises(ResumeError, match=r"hidden_size \(16 -> 24\).*not changed"):
        train(bigger, digits(), cfg, out, processor=ImageProcessorConfig(size=(8, 8)), data_name="digits")
    with pytest.raises(ResumeError, match=r"lr \(0.003 -> 0.1\)"):
        train(
            small_model(),
            digits(),
            TrainConfig(**{**cfg.to_dict(), "lr": 0.1}),
            out,
            processor=ImageProcessorConfig(size=(8, 8)),
            data_name="digits",
        )
    assert tree_digest(out / "checkpoints") == before


def _train_cmd(out, steps=40):
    return [
        sys.executable, "-m", "jimm.cli", "train", "--model", "micro/4", "--image-size", "8", "--data", "digits",
        "--steps", str(steps), "--batch-size", "16", "--checkpoint-every", "5", "--log-every", "5",
        "--eval-every", "20", "--shift", "1", "--dropout", "0.1", "--label-smoothing", "0.1", "--quiet",
        "--out", str(out),
    ]  # fmt: skip


def _env():
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "JAX_PLATFORMS": "cpu"}


def test_sigkill_then_rerun_resumes_bit_exact(tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    done = subprocess.run(_train_cmd(ref), env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    proc = subprocess.Popen(_train_cmd(killed), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        steps = [int(p.name) for p in (killed / "checkpoints").glob("*") if p.name.isdigit()]
        if steps and max(steps) >= 10:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    assert not (killed / "model").exists()
    resumed = subprocess.run(_train_cmd(killed), env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from step" in resumed.stdout
    a, b = read_tensors(ref / "model"), read_tensors(killed / "model")
    assert sorted(a) == sorted(b) and len(a) > 20
    for name in a:
        assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), name

    def losses(run):
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["split"], r["loss"], r["accuracy"]) for r in rows]

    assert losses(ref) == losses(killed)  # the log was trimmed to the checkpoint and continued identically


def _batch(seed=0, n=8):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 8, 8, 3), dtype=np.float32), rng.integers(0, 10, n).astype(np.int32)


def _params(state):
    return [np.asarray(x) for x in jax.tree.leaves(nnx.State(state[0]).filter(nnx.Param))]


def test_gradient_accumulation_equals_one_big_batch():
    x, y = _batch()
    results = []
    for accum in (1, 2, 4):
        cfg = TrainConfig(steps=10, warmup_steps=0, batch_size=8, grad_accum=accum, lr=1e-2, clip_norm=0.5)
        # No qkv bias: the key bias has an exactly-zero gradient whose round-off Adam would amplify to ~lr.
        model = small_model(qkv_bias=False)
        optimizer = nnx.Optimizer(model, make_optimizer(cfg), wrt=nnx.Param)
        model.train()
        graphdef, state = nnx.split((model, optimizer))
        state, metrics = train_step(graphdef, cfg, state, x.reshape(accum, 8 // accum, 8, 8, 3), y.reshape(accum, -1))
        results.append((_params(state), float(metrics["loss"])))
    for params, loss in results[1:]:
        assert loss == pytest.approx(results[0][1], rel=1e-5)
        for p, q in zip(params, results[0][0], strict=True):
            np.testing.assert_allclose(p, q, atol=2e-6)
    initial = [np.asarray(p) for p in jax.tree.leaves(nnx.state(small_model(qkv_bias=False), nnx.Param))]
    assert any(not np.array_equal(p, q) for p, q in zip(results[0][0], initial, strict=True))  # it moved


def test_bf16_compute_keeps_fp32_params():
    cfg = TrainConfig(steps=10, warmup_steps=0, batch_size=8, lr=1e-2, bf16=True)
    model = jimm.VisionTransformer(**SMALL, num_classes=10, dtype=jnp.bfloat16, sharding=None)
    optimizer = nnx.Optimizer(model, make_optimizer(cfg), wrt=nnx.Param)
    model.train()
    graphdef, state = nnx.split((model, optimizer))
    before = _params(state)
    x, y = _batch()
    state, metrics = train_step(graphdef, cfg, state, x[None], y[None])
    after = _params(state)
    assert all(p.dtype == np.float32 for p in after)
    assert np.isfinite(float(metrics["loss"])) and any(
        not np.array_equal(p, q) for p, q in zip(before, after, strict=True)
    )


def test_label_smoothing_and_schedule_values():
    logits = jnp.array([[2.0, 0.0, -1.0]])
    labels = jnp.array([0])
    p = jax.nn.log_softmax(logits)[0]
    assert float(cross_entropy(logits, labels, 0.0)[0]) == pytest.approx(-float(p[0]), rel=1e-6)
    smooth = -(0.9 + 0.1 / 3) * p[0] - (0.1 / 3) * (p[1] + p[2])
    assert float(cross_entropy(logits, labels, 0.1)[0]) == pytest.approx(float(smooth), rel=1e-6)
    lr = schedule(TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1))
    assert float(lr(0)) == 0.0 and float(lr(5)) == pytest.approx(0.5) and float(lr(10)) == pytest.approx(1.0)
    assert float(lr(55)) == pytest.approx(0.1 + 0.9 * 0.5, rel=1e-4) and float(lr(100)) == pytest.approx(0.1)


def test_weight_decay_only_touches_kernels():
    cfg = TrainConfig(steps=10, warmup_steps=0, lr=1.0, weight_decay=0.5, clip_norm=0.0)
    model = small_model()
    params = nnx.state(model, nnx.Param)
    tx = make_optimizer(cfg)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    decayed = {
        ".".join(map(str, path)) for path, u in nnx.to_flat_state(updates) if np.any(np.asarray(u.get_value()) != 0)
    }
    assert decayed and all("kernel" in name for name in decayed)
    assert "classifier.kernel" in decayed and not any("bias" in n or "pos_embed" in n for n in decayed)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"steps": 0}, "steps must be >= 1"),
        ({"batch_size": 10, "grad_accum": 4}, "not divisible"),
        ({"warmup_steps": 50, "steps": 50}, "warmup steps"),
        ({"label_smoothing": 1.0}, "label smoothing"),
        ({"lr": -1.0}, "learning rate"),
    ],
)
def test_config_rejects_bad_numbers(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{"steps": 100, "warmup_steps": 0, **changes})
