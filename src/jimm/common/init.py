"""Parameter initialisers that compile nothing when a model is built eagerly.

`jax.random`'s truncated normal compiles one XLA program per parameter shape, and on a CPU each takes a
second or more: building even a tiny ViT eagerly spent half a minute compiling random-number kernels. Called
with a concrete key, these initialisers draw in numpy from a generator seeded by the key's bits (so values are
reproducible per key and distinct across keys); called while tracing (`jit`, `eval_shape`, `vmap`) they are
jax's own, so sharded initialisation under `jax.jit` works as before. The distribution is the same either way.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Initializer = Callable[..., jax.Array]
_TRUNC_STD = 0.87962566103423978  # std of a standard normal truncated to [-2, 2] (flax's correction)


def is_concrete(key) -> bool:
    """True for a key that holds values (eager construction), False while tracing."""
    return not isinstance(key, jax.core.Tracer)


def numpy_generator(key) -> np.random.Generator:
    """A numpy generator seeded by the bits of a concrete jax key."""
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().astype(np.uint64))


def _host(values: np.ndarray, dtype) -> jax.Array:
    return jnp.asarray(values.astype(np.dtype(dtype) if dtype is not None else np.float32, copy=False))


def truncated_normal(stddev: float = 0.02) -> Initializer:
    """flax's `truncated_normal(stddev)`: a normal truncated to +-2 standard deviations, rescaled to `stddev`."""
    traced = nnx.initializers.truncated_normal(stddev=stddev)

    def init(key, shape, dtype=jnp.float32):
        if not is_concrete(key):
            return traced(key, shape, dtype)
        rng = numpy_generator(key)
        x = rng.standard_normal(shape, np.float32)
        bad = np.abs(x) > 2.0
        while bad.any():  # rejection sampling: exactly the truncated distribution
            x[bad] = rng.standard_normal(int(bad.sum()), np.float32)
            bad = np.abs(x) > 2.0
        return _host(x * np.float32(stddev / _TRUNC_STD), dtype)

    return init


def constant(value: float) -> Initializer:
    def init(key, shape, dtype=jnp.float32):
        if not is_concrete(key):
            return jnp.full(shape, value, dtype)
        return _host(np.full(shape, value, np.float32), dtype)

    return init


zeros = constant(0.0)
ones = constant(1.0)
default_kernel_init = truncated_normal(0.02)

__all__ = ["constant", "default_kernel_init", "is_concrete", "numpy_generator", "ones", "truncated_normal", "zeros"]
