"""Test setup: 8 virtual CPU devices, highest matmul precision for parity, tiny HF models built in-process.

XLA programs that take a while to compile are kept in a persistent compilation cache under `.pytest_cache/`,
shared by the xdist workers and the subprocesses tests start (`jimm train` runs, docs examples), which compile
many of the same programs. The cache is keyed by the program and the compiler settings, so it never serves a
stale result.
"""

import os
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax
import numpy as np
import pytest

jax.config.update("jax_default_matmul_precision", "highest")

# Distinct prime-ish sizes so a swapped axis fails loudly: 3 heads of dim 5, MLP 7, 33 px images, patch 3.
TINY = dict(
    hidden_size=15,
    num_hidden_layers=2,
    num_attention_heads=3,
    intermediate_size=7,
    image_size=33,
    patch_size=3,
    num_channels=3,
    num_labels=13,
)


def hf_config(**overrides):
    from transformers import ViTConfig as HFViTConfig

    return HFViTConfig(**{**TINY, **overrides})


def hf_model(seed: int = 0, headless: bool = False, **overrides):
    """A tiny random transformers ViT in eval mode, with non-trivial LayerNorm and bias values."""
    import torch
    from transformers import ViTForImageClassification, ViTModel

    torch.manual_seed(seed)
    config = hf_config(**overrides)
    model = ViTModel(config) if headless else ViTForImageClassification(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layernorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def images(batch: int = 2, size=33, channels: int = 3, seed: int = 0) -> np.ndarray:
    h, w = (size, size) if isinstance(size, int) else size
    return np.random.RandomState(seed).randn(batch, h, w, channels).astype(np.float32)


def to_torch(x: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def pytest_collection_modifyitems(config, items):
    has_gpu = (
        any(d.platform == "gpu" for d in jax.devices()) if "gpu" not in os.environ.get("JAX_PLATFORMS", "cpu") else True
    )
    skip_gpu = pytest.mark.skip(reason="needs an NVIDIA GPU")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)
