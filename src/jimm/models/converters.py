"""Numpy converters between HF tensor layouts and jimm parameters, shared by every family's name table.

Each returns a view where it can (transposes, reshapes), so loading copies each tensor once (see
`jimm.io.state`). Pairs are `(to_jimm, to_hf)`.
"""

from __future__ import annotations

import numpy as np

from ..io.state import Slot


def linear(w: np.ndarray) -> np.ndarray:
    """HF Linear weight `[out, in]` <-> jimm kernel `[in, out]` (both ways: a transpose)."""
    return w.T


def conv_to_jimm(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 1, 0)  # [D, C, ph, pw] -> [ph, pw, C, D]


def conv_to_hf(k: np.ndarray) -> np.ndarray:
    return k.transpose(3, 2, 0, 1)


def heads_in(n: int, h: int):
    """`[N*H, D]` q/k/v weight -> `[D, N, H]` and back."""
    return (lambda w: w.T.reshape(-1, n, h), lambda k: k.reshape(k.shape[0], n * h).T)


def heads_bias(n: int, h: int):
    return (lambda b: b.reshape(n, h), lambda b: b.reshape(n * h))


def heads_out(n: int, h: int):
    """Attention output weight `[D, N*H]` -> `[N, H, D]` and back."""
    return (lambda w: w.T.reshape(n, h, -1), lambda k: k.reshape(n * h, k.shape[-1]).T)


def map_head_slots(prefix: str, p: tuple[str, ...], d: int, n: int, f: int) -> list[Slot]:
    """timm's `AttentionPoolLatent` names (`latent`, `q`, `kv`, `proj`, `norm`, `mlp`) for jimm's MAP head at `p`."""
    h = d // n
    kv_w = (lambda w: w.T.reshape(d, 2, n, h), lambda k: k.reshape(d, 2 * d).T)
    kv_b = (lambda b: b.reshape(2, n, h), lambda b: b.reshape(2 * d))
    return [
        Slot(f"{prefix}latent", (*p, "probe"), (), (1, 1, d)),
        Slot(f"{prefix}q.weight", (*p, "q_kernel"), (), (d, d), *heads_in(n, h)),
        Slot(f"{prefix}q.bias", (*p, "q_bias"), (), (d,), *heads_bias(n, h)),
        Slot(f"{prefix}kv.weight", (*p, "kv_kernel"), (), (2 * d, d), *kv_w),
        Slot(f"{prefix}kv.bias", (*p, "kv_bias"), (), (2 * d,), *kv_b),
        Slot(f"{prefix}proj.weight", (*p, "out_kernel"), (), (d, d), *heads_out(n, h)),
        Slot(f"{prefix}proj.bias", (*p, "out_bias"), (), (d,)),
        Slot(f"{prefix}norm.weight", (*p, "norm", "scale"), (), (d,)),
        Slot(f"{prefix}norm.bias", (*p, "norm", "bias"), (), (d,)),
        Slot(f"{prefix}mlp.fc1.weight", (*p, "mlp", "fc1_kernel"), (), (f, d), linear, linear),
        Slot(f"{prefix}mlp.fc1.bias", (*p, "mlp", "fc1_bias"), (), (f,)),
        Slot(f"{prefix}mlp.fc2.weight", (*p, "mlp", "fc2_kernel"), (), (d, f), linear, linear),
        Slot(f"{prefix}mlp.fc2.bias", (*p, "mlp", "fc2_bias"), (), (d,)),
    ]


__all__ = ["conv_to_hf", "conv_to_jimm", "heads_bias", "heads_in", "heads_out", "linear", "map_head_slots"]
