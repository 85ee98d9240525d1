"""The `jimm` command's argument types: each parses one value or raises argparse's error naming the bound.

Shared by `jimm.cli` and `jimm.cli_image_text`, so neither imports the other's private helpers.
"""

from __future__ import annotations

import argparse
import math


def positive_int(text: str) -> int:
    value = integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def nonneg_int(text: str) -> int:
    value = integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


MAX_NUM_PATCHES_HELP = "SigLIP 2 NaFlex: patches per image at its own aspect ratio (default: the checkpoint's, 256)"
MAX_IMAGE_SIZE = 4096  # beyond any ViT checkpoint; larger sizes only fail deep inside XLA


def image_size(text: str) -> int:
    value = positive_int(text)
    if value > MAX_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_IMAGE_SIZE}, got {text}")
    return value


MAX_SEED = 2**32 - 2  # grain seeds are uint32, and augmentation draws from seed + 1


def seed(text: str) -> int:
    value = integer(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be in [0, {MAX_SEED}], got {text}")
    return value


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def number(low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = True):
    """An argparse type: a finite float in the interval from `low` to `high`."""
    if high == math.inf:
        describe = f"> {low:g}" if low_open else f">= {low:g}"
    else:
        describe = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (math.isfinite(value) and above and below):
            raise argparse.ArgumentTypeError(f"must be {describe}, got {text}")
        return value

    return parse


__all__ = ["MAX_IMAGE_SIZE", "MAX_SEED", "image_size", "integer", "nonneg_int", "number", "positive_int", "seed"]
