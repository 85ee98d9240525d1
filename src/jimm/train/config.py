"""TrainConfig: every hyperparameter of a run, validated up front, and the named model sizes.

A run directory remembers its TrainConfig; resuming with a config that would change the result is an error
(the fields in `RESUME_FREE` only change logging and checkpoint cadence and may differ).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

# Named sizes (width D, depth L, heads N, MLP F): ViT-Ti/S/B/L from "How to train your ViT" (Steiner et al.,
# 2021) and the original paper, plus "micro" for CPU demos and tests.
SIZES: dict[str, tuple[int, int, int, int]] = {
    "micro": (64, 4, 4, 128),
    "ti": (192, 12, 3, 768),
    "s": (384, 12, 6, 1536),
    "b": (768, 12, 12, 3072),
    "l": (1024, 24, 16, 4096),
}
_ALIASES = {"tiny": "ti", "small": "s", "base": "b", "large": "l"}

MAX_STEPS = 2**31 - 1  # optax counts steps in int32

RESUME_FREE = frozenset({"log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "progress"})


def parse_size(name: str, *, image_size: int) -> dict[str, Any]:
    """`"s/16"`, `"small/16"`, `"micro/4"` -> `VisionTransformer` keyword arguments."""
    match = re.fullmatch(r"(?i)\s*(?:vit[-_]?)?([a-z]+)\s*/\s*(\d+)\s*", name)
    key = _ALIASES.get(match.group(1).lower(), match.group(1).lower()) if match else None
    if key not in SIZES:
        choices = ", ".join(f"{k}/PATCH" for k in SIZES)
        raise ValueError(f"unknown model size {name!r}; use one of {choices} (e.g. s/16), or tiny/small/base/large")
    patch = int(match.group(2))
    if patch <= 0 or image_size % patch:
        raise ValueError(f"image size {image_size} is not a multiple of patch size {patch}")
    d, layers, heads, f = SIZES[key]
    return dict(hidden_size=d, num_layers=layers, num_heads=heads, mlp_dim=f, patch_size=patch, img_size=image_size)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Hyperparameters. `steps` counts optimizer updates; each sees `batch_size` images split into
    `grad_accum` equal micro-batches whose gradients are averaged."""

    steps: int = 1000
    batch_size: int = 64
    grad_accum: int = 1
    lr: float = 1e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.05
    clip_norm: float = 1.0
    label_smoothing: float = 0.0
    head_only: bool = False  # train only the classifier, the rest frozen (a linear probe)
    bf16: bool = False
    seed: int = 0
    shift: int = 0
    hflip: bool = False
    log_every: int = 10
    eval_every: int = 0  # 0: only at the end
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    progress: bool = True

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        need(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        need(self.steps <= MAX_STEPS, f"steps must be at most {MAX_STEPS} (optax counts in int32), got {self.steps}")
        need(self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}")
        need(self.grad_accum >= 1, f"gradient accumulation must be >= 1, got {self.grad_accum}")
        need(
            self.batch_size % self.grad_accum == 0,
            f"batch size {self.batch_size} is not divisible by gradient accumulation {self.grad_accum}",
        )
        need(self.lr > 0 and math.isfinite(self.lr), f"learning rate must be > 0 and finite, got {self.lr}")
        need(
            0 <= self.warmup_steps < self.steps,
            f"warmup steps must be in [0, steps={self.steps}), got {self.warmup_steps}",
        )
        need(0.0 <= self.min_lr_ratio <= 1.0, f"min lr ratio must be in [0, 1], got {self.min_lr_ratio}")
        need(0 <= self.weight_decay < math.inf, f"weight decay must be >= 0 and finite, got {self.weight_decay}")
        need(
            0 <= self.clip_norm < math.inf,
            f"gradient clip norm must be >= 0 and finite (0 disables), got {self.clip_norm}",
        )
        need(0.0 <= self.label_smoothing < 1.0, f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        need(0 <= self.seed < 2**32 - 1, f"seed must be in [0, 2**32 - 2], got {self.seed}")
        need(self.shift >= 0, f"shift must be >= 0, got {self.shift}")
        for name in ("log_every", "checkpoint_every"):
            need(getattr(self, name) >= 1, f"{name.replace('_', ' ')} must be >= 1, got {getattr(self, name)}")
        need(self.eval_every >= 0, f"eval every must be >= 0 (0: only at the end), got {self.eval_every}")
        need(self.keep_checkpoints >= 1, f"keep checkpoints must be >= 1, got {self.keep_checkpoints}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
