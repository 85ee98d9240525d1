"""The ViT backbone: patch embedding, prefix tokens, position embeddings, the block stack, final norm, pooling.

Maths only. `VisionTransformer` (vit_model.py) wraps it with the classifier and the I/O entry points.
Dimension letters: B batch, T tokens (prefix + patches), D width, P patch pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike
from jaxtyping import Array, Float

from ...common.attention import AttentionFn
from ...common.sharding import ShardingSpec, reshape_batched, shard, with_sharding
from ...common.transformer import Encoder, LayerNorm, default_kernel_init, einsum
from .config import ViTConfig
from .pooling import MAPHead
from .pos_embed import resample_pos_embed


class PatchEmbed(nnx.Module):
    """Non-overlapping patches, flattened and projected: the conv of HF/timm written as one matmul."""

    def __init__(
        self, config: ViTConfig, *, sharding: ShardingSpec, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs
    ):
        ph, pw = config.patch_hw
        shape = (ph, pw, config.num_channels, config.hidden_size)
        self.kernel = nnx.Param(
            with_sharding(default_kernel_init, sharding.patch_kernel)(rngs.params(), shape, param_dtype)
        )
        self.bias = nnx.Param(
            with_sharding(nnx.initializers.zeros_init(), sharding.patch_bias)(
                rngs.params(), (config.hidden_size,), param_dtype
            )
        )
        self.patch_hw, self.dtype, self.out_spec = (ph, pw), dtype, sharding.act_btd

    def __call__(self, x: Float[Array, "B height width C"]) -> Float[Array, "B T D"]:
        b, h, w, c = x.shape
        ph, pw = self.patch_hw
        gh, gw = h // ph, w // pw
        patches = reshape_batched(x, (b, gh, ph, gw, pw, c)).transpose(0, 1, 3, 2, 4, 5)
        patches = reshape_batched(patches, (b, gh * gw, ph * pw * c))
        kernel = self.kernel[...].reshape(ph * pw * c, -1).astype(self.dtype)
        return einsum("BTP,PD->BTD", patches.astype(self.dtype), kernel, self.out_spec) + self.bias[...].astype(
            self.dtype
        )


def take_indices(num_blocks: int, indices: int | Sequence[int] | None) -> list[int]:
    """timm's `feature_take_indices`: None -> every block, n -> the last n, a list -> those (negatives from the end)."""
    if indices is None:
        indices = num_blocks
    if isinstance(indices, int):
        if not 0 < indices <= num_blocks:
            raise ValueError(f"indices={indices} asks for the last {indices} blocks; choose 1..{num_blocks}")
        return list(range(num_blocks - indices, num_blocks))
    taken = []
    for i in indices:
        idx = num_blocks + i if i < 0 else i
        if not 0 <= idx < num_blocks:
            raise ValueError(
                f"block index {i} is out of range: this model has blocks 0..{num_blocks - 1} (or -{num_blocks}..-1)"
            )
        taken.append(idx)
    if not taken:
        raise ValueError("indices is empty: name at least one block")
    return taken


class VisionTransformerBase(nnx.Module):
    """Patch embedding, prefix tokens, position embeddings, the block stack, the final norm and the pooling.

    Prefix tokens come in the order class, distillation, registers, then the patches (timm and DeiT's order).
    """

    def __init__(
        self,
        config: ViTConfig,
        *,
        attention_fn: AttentionFn | None,
        use_gradient_checkpointing: bool,
        sharding: ShardingSpec,
        remat_policy: str | None = None,
        scan_layers: bool = True,
        dtype: DTypeLike,
        param_dtype: DTypeLike,
        rngs: nnx.Rngs,
    ):
        d, c = config.hidden_size, config
        self.config, self.dtype, self.sharding = config, dtype, sharding
        self.patch_embed = PatchEmbed(config, sharding=sharding, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

        def token(shape, spec=None):
            return nnx.Param(with_sharding(default_kernel_init, spec)(rngs.params(), shape, param_dtype))

        self.cls_token = token((1, 1, d), sharding.cls_token) if c.class_token else None
        self.dist_token = token((1, 1, d), sharding.cls_token) if c.distilled else None
        self.reg_token = token((1, c.num_register_tokens, d)) if c.num_register_tokens else None
        self.pos_embed = token((1, c.num_pos_embed, d), sharding.pos_embed)
        self.pos_drop = nnx.Dropout(c.hidden_dropout_prob, deterministic=True, rngs=rngs)
        self.blocks = Encoder(
            c.num_hidden_layers,
            remat=use_gradient_checkpointing,
            remat_policy=remat_policy,
            scan_layers=scan_layers,
            rngs=rngs,
            dim=d,
            num_heads=c.num_attention_heads,
            mlp_dim=c.intermediate_size,
            act=c.hidden_act,
            eps=c.layer_norm_eps,
            qkv_bias=c.qkv_bias,
            dropout=c.hidden_dropout_prob,
            attention_dropout=c.attention_probs_dropout_prob,
            attention_fn=attention_fn,
            sharding=sharding,
            dtype=dtype,
            param_dtype=param_dtype,
            layer_scale_init_value=c.layer_scale_init_value,
            drop_path_rate=c.drop_path_rate,
            qk_norm=c.qk_norm,
        )
        norm = dict(eps=c.layer_norm_eps, spec=sharding.norm, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        # timm: with fc_norm the LayerNorm moves from the tokens to the pooled vector.
        self.norm = LayerNorm(d, **norm) if not c.fc_norm else None
        self.fc_norm = LayerNorm(d, **norm) if c.fc_norm else None
        self.attn_pool = (
            MAPHead(
                d,
                c.num_attention_heads,
                c.intermediate_size,
                act=c.hidden_act,
                eps=c.layer_norm_eps,
                sharding=sharding,
                dtype=dtype,
                param_dtype=param_dtype,
                rngs=rngs,
            )
            if c.global_pool == "map"
            else None
        )

    def check_images(self, x: jax.Array) -> tuple[int, int]:
        """The patch grid `(h, w)` of NHWC images; a clear error for a wrong rank, channel count or size."""
        c = self.config
        if x.ndim != 4:
            raise ValueError(
                f"expected NHWC images [batch, height, width, {c.num_channels}], got shape {tuple(x.shape)}"
            )
        if x.shape[-1] != c.num_channels:
            hint = " (NCHW input? jimm takes NHWC: use x.transpose(0, 2, 3, 1))" if x.shape[1] == c.num_channels else ""
            raise ValueError(f"expected {c.num_channels} channels in the last axis, got shape {tuple(x.shape)}{hint}")
        (h, w), (ph, pw) = x.shape[1:3], c.patch_hw
        if h < ph or w < pw or h % ph or w % pw:
            raise ValueError(
                f"image size {h}x{w} is not a positive multiple of the patch size {ph}x{pw}; "
                f"resize or crop to a multiple (e.g. {max(ph, h // ph * ph)}x{max(pw, w // pw * pw)})"
            )
        return h // ph, w // pw

    def pos_embed_for(self, grid_hw: tuple[int, int]) -> Float[Array, "1 T D"]:
        """Position embeddings for a `grid_hw` patch grid: torch-exact bicubic resampling when it differs."""
        c = self.config
        return resample_pos_embed(
            self.pos_embed[...],
            c.grid_hw,
            grid_hw,
            num_prefix_tokens=0 if c.no_embed_class else c.num_prefix_tokens,
            antialias=c.pos_embed_antialias,
        )

    def embed(self, x: Float[Array, "B height width C"]) -> Float[Array, "B T D"]:
        grid = self.check_images(x)
        tokens = self.patch_embed(shard(x, self.sharding.batch_spec(x.ndim), "images"))
        b, _, d = tokens.shape
        pos = self.pos_embed_for(grid).astype(tokens.dtype)
        prefix = [
            jnp.broadcast_to(t[...].astype(tokens.dtype), (b, t.shape[1], d))
            for t in (self.cls_token, self.dist_token, self.reg_token)
            if t is not None
        ]
        prefix = [shard(t, self.sharding.act_btd) for t in prefix]  # batch-sharded like the patches
        if self.config.no_embed_class:  # big_vision / DeiT-3: add to the patches, then prepend the prefix tokens
            tokens = jnp.concatenate([*prefix, tokens + pos], axis=1)
        else:  # HF / original ViT: the prefix tokens have position embeddings too
            tokens = jnp.concatenate([*prefix, tokens], axis=1) + pos
        return shard(self.pos_drop(tokens), self.sharding.act_btd)

    def final_norm(self, x: Float[Array, "B T D"]) -> Float[Array, "B T D"]:
        return self.norm(x) if self.norm is not None else x

    def forward_features(self, x: Float[Array, "B height width C"]) -> Float[Array, "B T D"]:
        """All tokens after the final LayerNorm (HF `ViTModel(...).last_hidden_state`)."""
        return self.final_norm(self.blocks(self.embed(x)))

    def hidden_states(self, x: Float[Array, "B height width C"]) -> list[Float[Array, "B T D"]]:
        """The embeddings and every block's output, un-normalised (HF `output_hidden_states=True`)."""
        tokens = self.embed(x)
        _, per_layer = self.blocks(tokens, return_hidden_states=True)
        return [tokens, *per_layer]

    def attention_maps(self, x: Float[Array, "B height width C"]) -> Float[Array, "L B N T T"]:
        """Every block's attention probabilities, stacked `[L, B, N, T, T]` (HF `output_attentions=True`).

        Always computed through the explicit XLA path (probabilities materialised), whatever `attention_fn`
        the model uses for normal calls, so the maps are the same for every backend.
        """
        _, weights = self.blocks(self.embed(x), return_attention_weights=True)
        return weights

    def forward_intermediates(
        self,
        x: Float[Array, "B height width C"],
        indices: int | Sequence[int] | None = None,
        *,
        norm: bool = False,
        output_fmt: str = "NHWC",
        stop_early: bool = True,
        intermediates_only: bool = False,
        return_prefix_tokens: bool = False,
    ):
        """Outputs of chosen blocks, timm's `forward_intermediates` (see `VisionTransformer.forward_intermediates`)."""
        if output_fmt not in ("NHWC", "NLC"):
            raise ValueError(
                f"output_fmt={output_fmt!r} is not supported; choose 'NHWC' (spatial maps) or 'NLC' (tokens)"
            )
        c = self.config
        taken = take_indices(c.num_hidden_layers, indices)
        grid = self.check_images(x)
        tokens = self.embed(x)
        run = max(taken) + 1 if stop_early else c.num_hidden_layers
        last, per_layer = self.blocks(tokens, return_hidden_states=True, num_layers=run)
        outs = [self.final_norm(per_layer[i]) if norm else per_layer[i] for i in taken]
        npt = c.num_prefix_tokens
        prefixes = [y[:, :npt] for y in outs]
        outs = [y[:, npt:] for y in outs]
        if output_fmt == "NHWC":
            outs = [y.reshape(y.shape[0], grid[0], grid[1], y.shape[-1]) for y in outs]
        if return_prefix_tokens:
            outs = list(zip(outs, prefixes, strict=True))
        if intermediates_only:
            return outs
        return self.final_norm(last), outs

    def pool(self, features: Float[Array, "B T D"]) -> Float[Array, "B D"]:
        """One vector per image from the final tokens, by `config.global_pool` (then `fc_norm` if set)."""
        c = self.config
        if c.global_pool == "map":
            pooled = self.attn_pool(features[:, c.num_prefix_tokens :])
        elif c.global_pool == "avg":
            pooled = features[:, c.num_prefix_tokens :].mean(axis=1)
        elif c.distilled:  # DeiT / timm: the mean of the class and distillation tokens
            pooled = (features[:, 0] + features[:, 1]) / 2
        else:
            pooled = features[:, 0]
        return self.fc_norm(pooled) if self.fc_norm is not None else pooled

    def __call__(self, x: Float[Array, "B height width C"]) -> Float[Array, "B D"]:
        """The pooled representation (the class token after the final LayerNorm, for plain ViT)."""
        return self.pool(self.forward_features(x))


def param_shapes(config: ViTConfig) -> dict[str, tuple[int, ...]]:
    """Per-layer parameter shapes by `ShardingSpec` field, to check a spec against a mesh before building."""
    d, n, f = config.hidden_size, config.num_attention_heads, config.intermediate_size
    ph, pw = config.patch_hw
    return {
        "patch_kernel": (ph, pw, config.num_channels, d),
        "patch_bias": (d,),
        "cls_token": (1, 1, d),
        "pos_embed": (1, config.num_tokens, d),
        "qkv_kernel": (d, 3, n, d // n),
        "qkv_bias": (3, n, d // n),
        "attn_out_kernel": (n, d // n, d),
        "attn_out_bias": (d,),
        "mlp_in_kernel": (d, f),
        "mlp_in_bias": (f,),
        "mlp_out_kernel": (f, d),
        "mlp_out_bias": (d,),
        "norm": (d,),
        "proj_kernel": (d, max(config.num_labels, 1)),
        "proj_bias": (max(config.num_labels, 1),),
    }
