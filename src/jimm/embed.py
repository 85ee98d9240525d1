"""L2-normalised image and text embeddings from any family, the vectors `jimm embed` writes and `jimm index`
searches.

An image's embedding is the model's own: `encode_image` for CLIP and SigLIP (CLIP projected when the checkpoint
has its projection), and for the vision families (ViT, DeiT, DINOv2, DINOv3) the pooled features before the
classifier (`forward_head(..., pre_logits=True)`: the class token, or what the model's head reads). Texts need a
model with `encode_text` (CLIP, SigLIP). All float32, unit length.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def has_image_encoder(model) -> bool:
    """Whether `model` has a vision tower that gives one embedding per image."""
    return getattr(model, "vision_tower", None) is not None


def has_text_encoder(model) -> bool:
    """Whether `model` embeds text (CLIP, SigLIP and their text towers)."""
    return getattr(model, "text_model", None) is not None


def _unit(x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@nnx.jit
def _image_embeds(model, images):
    if hasattr(model, "encode_image"):
        project = getattr(model, "visual_projection", None) is not None
        return _unit(model.encode_image(images, project))
    return _unit(model.forward_head(model.forward_features(images), pre_logits=True))


@nnx.jit(static_argnames="project")
def _text_embeds(model, input_ids, project: bool):
    return _unit(model.encode_text(input_ids, do_projection=project))


def image_embeddings(model, pixels) -> np.ndarray:
    """`[B, P]` unit embeddings of a preprocessed batch: `[B, H, W, C]` pixels, or `NaFlexInputs` (SigLIP 2)."""
    if not has_image_encoder(model):
        raise ValueError(f"{type(model).__name__} has no vision tower, so it cannot embed images; load an image model")
    return np.asarray(_image_embeds(model, jax.tree.map(jnp.asarray, pixels)))


def embed_stream(model, stream) -> Iterator[tuple[list[Path], np.ndarray]]:
    """`(files, [n, P] embeddings)` per batch of a `jimm.data.stream.ImageStream`."""
    for batch in stream:
        yield batch.paths, image_embeddings(model, batch.pixels)[: batch.n]


def text_embeddings(model, texts: Sequence[str], *, batch_size: int = 256) -> np.ndarray:
    """`[N, P]` unit text embeddings through the checkpoint's tokenizer (CLIP: projected when it can be)."""
    if not has_text_encoder(model):
        raise ValueError(
            f"{type(model).__name__} has no text tower, so it cannot embed text; search it with an image query "
            "(--image), or use a CLIP / SigLIP model"
        )
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ValueError("no texts given")
    project = getattr(model, "text_projection", None) is not None
    rows = [
        np.asarray(_text_embeds(model, model.tokenize(texts[start : start + batch_size]), project))
        for start in range(0, len(texts), batch_size)
    ]
    return np.concatenate(rows).astype(np.float32)


def model_fingerprint(model) -> str:
    """A short hash of the model's class, config and a sample of every parameter (rounded to bfloat16, so one
    checkpoint loaded in float32 or bfloat16 gives the same): what an index checks its queries' model against."""
    digest = hashlib.sha256(type(model).__name__.encode())
    digest.update(repr(getattr(model, "config", None)).encode())  # frozen dataclasses: a stable repr
    for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param)), key=lambda t: str(t[0])):
        flat = jnp.ravel(leaf)
        step = max(1, flat.size // 256)
        sample = np.asarray(flat[::step][:256].astype(jnp.bfloat16)).view(np.uint16)
        digest.update(f"{jax.tree_util.keystr(path)}{leaf.shape}".encode() + sample.tobytes())
    return digest.hexdigest()[:16]


__all__ = [
    "embed_stream",
    "has_image_encoder",
    "has_text_encoder",
    "image_embeddings",
    "model_fingerprint",
    "text_embeddings",
]
