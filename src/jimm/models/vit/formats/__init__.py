"""Checkpoint layouts other than Hugging Face's, presented to the strict HF loader under HF names.

Each format module (`timm`, `big_vision`) holds a documented name table: a list of `Rule`s, each mapping
tensor(s) of the foreign layout to tensor(s) of jimm's HF layout (`to_hf`), with the inverse (`from_hf`)
used to write that layout. Loading wraps the foreign checkpoint in a `ConvertedSource` (shared by every family,
`jimm.models.views`), a strict read-only view under HF names, so the HF loader's strict checks, head handling
and streaming placement apply unchanged.

HF names for the variants HF ViT lacks (jimm's extension, used by `save_pretrained` for such models):
`embeddings.distillation_token` (DeiT), `embeddings.register_tokens` and `encoder.layer.N.layer_scale{1,2}
.lambda1` (DINOv2), `encoder.layer.N.attention.attention.{q,k}_norm.{weight,bias}`, `fc_norm.{weight,bias}`,
`attn_pool.{latent, q, kv, proj, norm, mlp.fc1, mlp.fc2}` (timm's `AttentionPoolLatent`), and DeiT's heads
`cls_classifier` / `distillation_classifier`.
"""

from __future__ import annotations

import numpy as np

from ....common.resample import resample_pos_embed
from ....io.readers import CheckpointSource
from ...views import to_foreign  # the public path docs/formats.md uses


class ResampledPosEmbed(CheckpointSource):
    """A view whose position embeddings are resampled to a new grid (fine-tuning at a new resolution)."""

    def __init__(self, raw: CheckpointSource, name: str, old_hw, new_hw, num_prefix_tokens: int, antialias: bool):
        self.raw, self.name = raw, name
        self.old_hw, self.new_hw, self.num_prefix_tokens = tuple(old_hw), tuple(new_hw), num_prefix_tokens
        self.antialias = antialias

    def entries(self):
        entries = self.raw.entries()
        if self.name in entries:
            (one, _, d), dtype = entries[self.name]
            entries[self.name] = ((one, self.num_prefix_tokens + self.new_hw[0] * self.new_hw[1], d), dtype)
        return entries

    def read(self, name: str, out: np.ndarray | None = None) -> np.ndarray:
        if name != self.name:
            return self.raw.read(name, out=out)
        array = self.raw.read(name)
        resampled = resample_pos_embed(
            np.asarray(array, np.float32),
            self.old_hw,
            self.new_hw,
            num_prefix_tokens=self.num_prefix_tokens,
            mode="bicubic_antialias" if self.antialias else "bicubic",
        )
        resampled = np.asarray(resampled).astype(array.dtype)
        if out is None:
            return resampled
        out.reshape(resampled.shape)[...] = resampled
        return out

    def close(self) -> None:
        self.raw.close()


__all__ = ["ResampledPosEmbed", "to_foreign"]
