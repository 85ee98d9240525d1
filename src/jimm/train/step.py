"""Jitted train and eval steps over the split (graphdef, state) of a model and its `nnx.Optimizer`.

The state pytree is what the checkpoint stores; the graphdefs are static. `model.train()` and `model.eval()`
produce two graphdefs over the same state, so one state feeds both steps. Dimension letters: A gradient
accumulation micro-batches, B micro-batch size, C classes.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jaxtyping import Array, Float, Int

from .config import TrainConfig
from .optim import trainable


def cross_entropy(logits: Float[Array, "B C"], labels: Int[Array, " B"], smoothing: float) -> Float[Array, " B"]:
    """Softmax cross-entropy in fp32 against (optionally) smoothed one-hot targets."""
    targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
    if smoothing:
        targets = optax.smooth_labels(targets, smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


@partial(jax.jit, static_argnums=(0, 1), donate_argnums=(2,))
def train_step(graphdef: nnx.GraphDef, cfg: TrainConfig, state, images, labels):
    """One optimizer update on `images [A,B,h,w,C]`, `labels [A,B]` -> `(state, metrics)`; donates `state`.

    The A micro-batches' gradients are averaged (gradient accumulation), equal to one batch of A*B images.
    """
    model, optimizer = nnx.merge(graphdef, state)

    def loss_fn(model, x, y):
        logits = model(x)
        return cross_entropy(logits, y, cfg.label_smoothing).mean(), logits

    grad_fn = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, trainable(cfg)), has_aux=True)
    n_micro = images.shape[0]
    grads, loss_sum, correct = None, 0.0, 0
    for i in range(n_micro):  # unrolled: A is small, and nnx's RNG state threads through in order
        (loss, logits), g = grad_fn(model, images[i], labels[i])
        grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
        loss_sum = loss_sum + loss
        correct = correct + jnp.sum(jnp.argmax(logits, -1) == labels[i])
    if n_micro > 1:
        grads = jax.tree.map(lambda g: g / n_micro, grads)
    optimizer.update(model, grads)
    metrics = {
        "loss": loss_sum / n_micro,
        "accuracy": correct / (labels.size),
        "grad_norm": optax.tree.norm(grads),
    }
    return nnx.state((model, optimizer)), metrics


@partial(jax.jit, static_argnums=(0,))
def eval_step(graphdef: nnx.GraphDef, state, images, labels, valid):
    """`(loss sum, correct count)` over the rows where `valid`, for a model-only `(graphdef, state)`."""
    model = nnx.merge(graphdef, state)
    logits = model(images)
    loss = cross_entropy(logits, labels, 0.0)
    correct = (jnp.argmax(logits, -1) == labels) & valid
    return jnp.sum(jnp.where(valid, loss, 0.0)), jnp.sum(correct)


@partial(jax.jit, static_argnums=(0,))
def predict_step(graphdef: nnx.GraphDef, state, images):
    """Class probabilities `[B, C]` in fp32."""
    model = nnx.merge(graphdef, state)
    return jax.nn.softmax(model(images).astype(jnp.float32), axis=-1)
