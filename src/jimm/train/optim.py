"""The optimizer: AdamW on a linear-warmup + cosine schedule, with global-norm clipping.

Weight decay applies to matmul kernels only (not biases, LayerNorm, position embeddings or the class token),
the usual ViT recipe; the mask is by parameter name because stacked layer biases are 2-D.
"""

from __future__ import annotations

import jax
import optax
from flax import nnx

from .config import TrainConfig


def schedule(cfg: TrainConfig) -> optax.Schedule:
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.lr,
        warmup_steps=cfg.warmup_steps,
        decay_steps=cfg.steps,
        end_value=cfg.lr * cfg.min_lr_ratio,
    )


def _is_kernel(path) -> bool:
    names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
    return any(isinstance(n, str) and n.endswith("kernel") for n in names)


def _decay_mask(params):
    return jax.tree_util.tree_map_with_path(lambda path, _: _is_kernel(path), params)


def trainable(cfg: TrainConfig):
    """The nnx filter of the parameters a run trains: all of them, or only the classifier heads (`head_only`)."""
    if not cfg.head_only:
        return nnx.Param
    return nnx.All(nnx.Param, lambda path, _: any(str(key).startswith("classifier") for key in path))


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    adamw = optax.adamw(schedule(cfg), b1=0.9, b2=0.999, weight_decay=cfg.weight_decay, mask=_decay_mask)
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), adamw) if cfg.clip_norm > 0 else adamw
