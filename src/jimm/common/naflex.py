"""The SigLIP 2 NaFlex vision tower: SigLIP's tower on images of any aspect ratio, as pre-cut patches.

Its input is what transformers' `Siglip2ImageProcessor` returns (and `jimm.data.naflex` computes): each image's
patches, row-major over its own `h x w` grid and flattened (p_h, p_w, C), zero-padded to M slots
(`pixel_values [B, M, P]`), which slots are real (`pixel_attention_mask [B, M]`) and each grid
(`spatial_shapes [B, 2]`). Every other seam is the shared tower's:

- patches: the shared `PatchEmbed` kernel `[p, p, C, D]`, whose flattening is transformers' Linear's;
- positions: the `G x G` learned table resized to each image's grid (`resample.naflex_pos_embed`), padding
  slots taking the resized grid's first row, as transformers does;
- the blocks and the MAP head see the real keys only (`trunk` / `pool` with the mask); padded slots are
  computed too (they attend to the real keys) and kept, so `last_hidden_state` equals transformers' everywhere.

Grids are data, not shapes: one compiled program per (batch size, M) serves any mix of aspect ratios.

Dimension letters: B batch, M padded patch slots, P patch values (p * p * C), D width, G position table side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .placement import gathered, shard_input
from .resample import naflex_pos_embed
from .vision import VisionTower, take_indices


class NaFlexInputs(NamedTuple):
    """A NaFlex batch, under transformers' processor names (a pytree: it goes through `jax.jit` as is)."""

    pixel_values: Float[Array, "B M P"]
    pixel_attention_mask: Int[Array, "B M"]  # 1 for a real patch, 0 for padding
    spatial_shapes: Int[Array, "B 2"]  # each image's patch grid (rows, columns)


class NaFlexTower(VisionTower):
    """`VisionTower` whose inputs are `NaFlexInputs` (see the module docstring); the feature API takes them too."""

    def check_inputs(self, inputs: NaFlexInputs) -> NaFlexInputs:
        """The inputs as arrays, with a clear error for a wrong type, rank or patch width."""
        if not isinstance(inputs, tuple) or len(inputs) != 3:
            raise TypeError(
                "a NaFlex tower takes NaFlexInputs(pixel_values, pixel_attention_mask, spatial_shapes), as "
                f"jimm.data.naflex.preprocess_naflex returns them; got {type(inputs).__name__}"
            )
        values, mask, shapes = (jnp.asarray(a) for a in inputs)
        (ph, pw), c = self.config.patch_size, self.config.num_channels
        width = ph * pw * c
        if values.ndim != 3 or values.shape[-1] != width:
            raise ValueError(
                f"pixel_values must be [batch, patches, {width}] ({ph}x{pw} patches of {c} channels), got "
                f"{tuple(values.shape)}"
            )
        if mask.shape != values.shape[:2] or shapes.shape != (values.shape[0], 2):
            raise ValueError(
                f"pixel_attention_mask {tuple(mask.shape)} and spatial_shapes {tuple(shapes.shape)} must be "
                f"{values.shape[:2]} and ({values.shape[0]}, 2) for pixel_values {tuple(values.shape)}"
            )
        return NaFlexInputs(values, mask, shapes)

    def token_mask(self, inputs: NaFlexInputs) -> Bool[Array, "B M"]:
        return jnp.asarray(inputs.pixel_attention_mask).astype(bool)

    def embed(self, inputs: NaFlexInputs) -> Float[Array, "B M D"]:
        values, _, shapes = self.check_inputs(inputs)
        values = shard_input(values, self.sharding.batch, "pixel_values")
        tokens = self.patch_embed.project(values)
        g, d = self.config.grid_hw[0], tokens.shape[-1]
        table = gathered(self.pos_embed[...])[0].reshape(g, g, d)
        pos = naflex_pos_embed(table, shapes, values.shape[1])
        return self.pos_drop(tokens + pos.astype(tokens.dtype))

    def encode(self, inputs: NaFlexInputs, **kwargs):
        """`trunk(embed(inputs))` with the padding masked (`Encoder.__call__`'s extras via `kwargs`)."""
        return self.trunk(self.embed(inputs), mask=self.token_mask(inputs), **kwargs)

    def forward_features(self, inputs: NaFlexInputs) -> Float[Array, "B M D"]:
        """Every slot after `post_layernorm` (transformers' `last_hidden_state`, padded slots included)."""
        return self.final_norm(self.encode(inputs))

    def hidden_states(self, inputs: NaFlexInputs) -> list[Float[Array, "B M D"]]:
        """The embeddings and every block's output, un-normalised (HF `output_hidden_states=True`)."""
        tokens = self.embed(inputs)
        _, per_layer = self.trunk(tokens, mask=self.token_mask(inputs), return_hidden_states=True)
        return [tokens, *per_layer]

    def attention_maps(self, inputs: NaFlexInputs) -> Float[Array, "L B N M M"]:
        """Every block's attention probabilities `[L, B, N, M, M]` (padded keys get 0), explicit XLA path."""
        _, weights = self.encode(inputs, return_attention_weights=True)
        return weights

    def forward_intermediates(
        self,
        inputs: NaFlexInputs,
        indices: int | Sequence[int] | None = None,
        *,
        norm: bool = False,
        output_fmt: str = "NLC",
        stop_early: bool = True,
        intermediates_only: bool = False,
        return_prefix_tokens: bool = False,
    ):
        """Outputs of chosen blocks as padded patch tokens `[B, M, D]` (`VisionFeatures.forward_intermediates`);
        images of different grids share no `[h, w]` layout, so only "NLC" is offered."""
        if output_fmt != "NLC":
            raise ValueError(
                f"output_fmt={output_fmt!r}: NaFlex images each have their own grid; use output_fmt='NLC' and "
                "reshape image i's first h*w tokens to spatial_shapes[i]"
            )
        if return_prefix_tokens:
            raise ValueError("a NaFlex tower has no prefix tokens (return_prefix_tokens=False)")
        taken = take_indices(self.config.num_layers, indices)
        run = max(taken) + 1 if stop_early else self.config.num_layers
        last, per_layer = self.encode(inputs, return_hidden_states=True, num_layers=run)
        outs = [self.final_norm(per_layer[i]) if norm else per_layer[i] for i in taken]
        return outs if intermediates_only else (self.final_norm(last), outs)

    def __call__(self, inputs: NaFlexInputs) -> Float[Array, "B D"]:
        """The pooled embedding: the MAP head over the real patches (or their mean without a head)."""
        return self.pool(self.forward_features(inputs), mask=self.token_mask(inputs))


__all__ = ["NaFlexInputs", "NaFlexTower"]
