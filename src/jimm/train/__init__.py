"""Training for jimm: optax AdamW + warmup/cosine, jitted nnx steps, orbax checkpoints with exact resume."""

from .checkpoint import Checkpoints, ResumeError
from .config import SIZES, TrainConfig, parse_size
from .evaluate import evaluate, predict_files
from .trainer import TrainResult, train

__all__ = [
    "SIZES",
    "Checkpoints",
    "ResumeError",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "parse_size",
    "predict_files",
    "train",
]
