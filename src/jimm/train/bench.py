"""Throughput of a named ViT size on this machine: forward and full training step (forward, loss, backward,
AdamW update), jimm and, when torch is installed, transformers' `ViTForImageClassification` side by side."""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import numpy as np
from flax import nnx

from .config import TrainConfig, parse_size
from .optim import make_optimizer
from .step import train_step


def _time(fn: Callable[[], object], *, warmup: int, iters: int) -> float:
    """Median seconds per call after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def bench_jimm(
    size: str, *, batch: int, image_size: int, num_classes: int, warmup: int, iters: int, scan_layers: bool = True
) -> dict[str, float]:
    from ..models.vit import VisionTransformer

    model = VisionTransformer(
        **parse_size(size, image_size=image_size),
        num_classes=num_classes,
        dropout_rate=0.0,
        sharding=None,
        scan_layers=scan_layers,
    )
    cfg = TrainConfig(steps=10_000, warmup_steps=10, batch_size=batch, clip_norm=0.0, weight_decay=0.05, progress=False)
    x = np.random.default_rng(0).standard_normal((batch, image_size, image_size, 3), dtype=np.float32)
    y = np.arange(batch, dtype=np.int32) % num_classes
    graphdef_eval, params = nnx.split(model)
    forward = jax.jit(lambda state, x: nnx.merge(graphdef_eval, state)(x))
    fwd = _time(lambda: forward(params, x).block_until_ready(), warmup=warmup, iters=iters)
    optimizer = nnx.Optimizer(model, make_optimizer(cfg), wrt=nnx.Param)
    model.train()
    graphdef, state = nnx.split((model, optimizer))
    box = [state]

    def step():
        box[0], metrics = train_step(graphdef, cfg, box[0], x[None], y[None])
        jax.block_until_ready(metrics["loss"])

    trn = _time(step, warmup=warmup, iters=iters)
    return {"forward_s": fwd, "train_step_s": trn}


def bench_torch(
    size: str, *, batch: int, image_size: int, num_classes: int, warmup: int, iters: int
) -> dict[str, float]:
    import torch
    from transformers import ViTConfig as HFViTConfig
    from transformers import ViTForImageClassification

    kw = parse_size(size, image_size=image_size)
    config = HFViTConfig(
        hidden_size=kw["hidden_size"],
        num_hidden_layers=kw["num_layers"],
        num_attention_heads=kw["num_heads"],
        intermediate_size=kw["mlp_dim"],
        image_size=image_size,
        patch_size=kw["patch_size"],
        num_labels=num_classes,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = ViTForImageClassification(config)
    x = torch.randn(batch, 3, image_size, image_size)
    y = torch.arange(batch) % num_classes
    model.eval()

    def forward():
        with torch.no_grad():
            model(pixel_values=x)

    fwd = _time(forward, warmup=warmup, iters=iters)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(pixel_values=x).logits, y)
        loss.backward()
        optimizer.step()

    trn = _time(step, warmup=warmup, iters=iters)
    return {"forward_s": fwd, "train_step_s": trn}


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True
