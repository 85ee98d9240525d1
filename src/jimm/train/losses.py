"""Image-text losses for your own training loops, on the logits matrix `model(images, input_ids)` returns.

Both take `logits [N, N]` for N matched image-text pairs (pair i is image i with text i, on the diagonal), in fp32:

- `clip_contrastive_loss`: the symmetric InfoNCE of CLIP (Radford et al., 2021), the mean of the image->text and
  text->image softmax cross-entropies, as transformers' `CLIPModel(return_loss=True)`.
- `siglip_sigmoid_loss`: SigLIP's pairwise sigmoid loss (Zhai et al., 2023) in big_vision's formulation:
  every pair is a binary problem, label +1 on the diagonal and -1 elsewhere,
  `-mean_i sum_j log_sigmoid(z_ij * logits_ij)`, as transformers' `SiglipModel(return_loss=True)`.

The logit scale (and SigLIP's bias) live in the model, so they train with it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def _check_pairs(logits: jax.Array) -> jax.Array:
    if logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(
            f"image-text losses need N matched pairs, an [N, N] logits matrix; got shape {tuple(logits.shape)} "
            "(as many images as texts, pair i on the diagonal)"
        )
    return logits.astype(jnp.float32)


def clip_contrastive_loss(logits: Float[Array, "N N"]) -> Float[Array, ""]:
    """CLIP's symmetric cross-entropy over `logits_per_image [N, N]` (images by texts, pairs on the diagonal)."""
    logits = _check_pairs(logits)
    diagonal = jnp.diagonal(logits)
    image_to_text = jax.nn.logsumexp(logits, axis=1) - diagonal
    text_to_image = jax.nn.logsumexp(logits, axis=0) - diagonal
    return (image_to_text.mean() + text_to_image.mean()) / 2


def siglip_sigmoid_loss(logits: Float[Array, "N N"]) -> Float[Array, ""]:
    """SigLIP's sigmoid loss over `logits_per_image [N, N]` (`exp(t) * cos + b`, pairs on the diagonal)."""
    logits = _check_pairs(logits)
    labels = 2 * jnp.eye(logits.shape[0], dtype=jnp.float32) - 1  # +1 for the matching pair, -1 otherwise
    return -jnp.sum(jax.nn.log_sigmoid(labels * logits), axis=-1).mean()


__all__ = ["clip_contrastive_loss", "siglip_sigmoid_loss"]
