"""VisionTransformer: the original jimm API over an HF-exact ViT. Maths only: no file or hub I/O here.

Dimension letters: B batch, T tokens (patches + class token), D width, N heads, H head dim, F MLP hidden,
C classes, P patch pixels. Inputs are NHWC images `[B, height, width, channels]`.

Train/eval mode: a freshly built or loaded model is in eval mode (dropout off, deterministic outputs).
`model.train()` turns dropout on, drawing from the model's `dropout` rng stream; `model.eval()` turns it off.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike
from jaxtyping import Array, Float

from ...common.attention import AttentionFn
from ...common.sharding import ShardingSpec, ViTSharding, reshape_batched, resolve_sharding, shard, with_sharding
from ...common.transformer import Encoder, LayerNorm, default_kernel_init, einsum
from .config import ViTConfig
from .pooling import MAPHead
from .pos_embed import resample_pos_embed

logger = logging.getLogger(__name__)


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
        if c.drop_path_rate > 0:  # timm's schedule: linspace(0, rate, depth), block i gets the i-th rate
            rates = jnp.linspace(0.0, c.drop_path_rate, c.num_hidden_layers, dtype=jnp.float32)
            self.blocks.layers.drop_path1.rate.set_value(rates)
            self.blocks.layers.drop_path2.rate.set_value(rates)
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
            self.pos_embed[...], c.grid_hw, grid_hw, num_prefix_tokens=0 if c.no_embed_class else c.num_prefix_tokens
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


class VisionTransformer(nnx.Module):
    """Vision Transformer (ViT) for image classification, numerically equal to HF `ViTForImageClassification`.

    "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale" (Dosovitskiy et al., 2021).
    Positional arguments and defaults are the original jimm's; keyword-only arguments cover the HF config
    fields the original hard-coded. `model.config` is the `ViTConfig` it was built from.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        img_size: int = 224,
        patch_size: int = 16,
        num_layers: int = 12,
        num_heads: int = 12,
        mlp_dim: int = 3072,
        hidden_size: int = 768,
        dropout_rate: float = 0.1,
        use_quick_gelu: bool = False,
        use_gradient_checkpointing: bool = False,
        attention_fn: Callable[..., Any] | None = None,
        do_classification: bool = True,
        rngs: nnx.Rngs | None = None,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        sharding: ShardingSpec | None = ViTSharding,
        *,
        hidden_act: str | None = None,
        layer_norm_eps: float = 1e-12,
        qkv_bias: bool = True,
        attention_dropout_rate: float = 0.0,
        id2label: dict[int, str] | None = None,
        config: ViTConfig | None = None,
        remat_policy: str | None = None,
        scan_layers: bool = True,
    ) -> None:
        """Build a ViT with random weights, in eval mode.

        Args:
            num_classes: Number of output classes.
            in_channels: Number of input channels.
            img_size: Input image size (an int, or `(height, width)`).
            patch_size: Patch size (an int, or `(height, width)`).
            num_layers: Number of transformer blocks.
            num_heads: Number of attention heads.
            mlp_dim: MLP hidden width (any width, not only 4x).
            hidden_size: Token width.
            dropout_rate: Dropout after the embeddings and on each residual branch (active after `.train()`).
            use_quick_gelu: Use quick GELU (`x * sigmoid(1.702 x)`); ignored when `hidden_act` is given.
            use_gradient_checkpointing: Rematerialise each block in the backward pass.
            attention_fn: Attention kernel `fn(q, k, v, *, mask=None, bias=None)`; None is jax.nn's XLA path.
            do_classification: Include the classifier; otherwise return the pooled class token.
            rngs: Random streams for init (`params`) and dropout (`dropout`); None means `nnx.Rngs(0)`.
            dtype: Computation dtype.
            param_dtype: Parameter dtype.
            sharding: Parameter and activation specs, used only under a mesh (`jax.set_mesh`).
            hidden_act: HF activation name (gelu, gelu_new, gelu_pytorch_tanh, quick_gelu, relu, silu).
            layer_norm_eps: LayerNorm epsilon (1e-12 for google/vit-*, 1e-6 for timm-converted models).
            qkv_bias: Whether the query/key/value projections have a bias.
            attention_dropout_rate: Dropout on attention probabilities (active after `.train()`).
            id2label: Class names, saved in `config.json`.
            config: A complete `ViTConfig`; when given, it replaces every architecture argument above.
            remat_policy: A `jax.checkpoint_policies` name (e.g. "dots_with_no_batch_dims_saveable"); turns
                checkpointing on. None with `use_gradient_checkpointing=True` means "nothing_saveable".
            scan_layers: Stack the blocks and run them with `nnx.scan` (one compiled block); False keeps a python
                list of per-layer blocks (`encoder.blocks.layers[i]`) for per-layer surgery.
        """
        if config is None:
            config = ViTConfig(
                hidden_size=hidden_size,
                num_hidden_layers=num_layers,
                num_attention_heads=num_heads,
                intermediate_size=mlp_dim,
                hidden_act=hidden_act or ("quick_gelu" if use_quick_gelu else "gelu"),
                hidden_dropout_prob=dropout_rate,
                attention_probs_dropout_prob=attention_dropout_rate,
                layer_norm_eps=layer_norm_eps,
                image_size=img_size,
                patch_size=patch_size,
                num_channels=in_channels,
                qkv_bias=qkv_bias,
                num_labels=num_classes,
                id2label=id2label,
            )
        if rngs is None:
            rngs = nnx.Rngs(0)
        sharding = resolve_sharding(sharding)
        sharding.check_shapes(param_shapes(config))
        self.config = config
        self.do_classification = do_classification
        self.preprocessor_json: str | None = None  # the checkpoint's preprocessor_config.json, kept for saving
        self.dtype = dtype
        self.encoder = VisionTransformerBase(
            config,
            attention_fn=attention_fn,
            use_gradient_checkpointing=use_gradient_checkpointing,
            remat_policy=remat_policy,
            scan_layers=scan_layers,
            sharding=sharding,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.logits_spec = sharding.act_bc
        if do_classification:
            if config.num_labels < 1:
                raise ValueError("do_classification=True needs num_classes >= 1")
            head = dict(
                dtype=dtype,
                param_dtype=param_dtype,
                kernel_init=with_sharding(default_kernel_init, sharding.proj_kernel),
                bias_init=with_sharding(nnx.initializers.zeros_init(), sharding.proj_bias),
                rngs=rngs,
            )
            self.classifier = nnx.Linear(config.hidden_size, config.num_labels, **head)
            # DeiT's second head reads the distillation token; eval logits average the two (timm, HF WithTeacher).
            self.classifier_dist = (
                nnx.Linear(config.hidden_size, config.num_labels, **head) if config.distilled else None
            )

    @property
    def num_classes(self) -> int:
        return self.config.num_labels

    def forward_features(self, x: Float[Array, "B height width C"]) -> Float[Array, "B T D"]:
        """All tokens after the final LayerNorm, `[B, T, D]` (class token first)."""
        return self.encoder.forward_features(x)

    def forward_head(self, features: Float[Array, "B T D"], pre_logits: bool = False) -> Float[Array, "B C"]:
        """Pool (by `config.global_pool`) and apply the classifier; `pre_logits=True` returns the pooled vector."""
        if pre_logits or not self.do_classification:
            return self.encoder.pool(features)
        if self.config.distilled:
            cls_logits = self._linear(self.classifier, features[:, 0])
            logits = (cls_logits + self._linear(self.classifier_dist, features[:, 1])) / 2
        else:
            logits = self._linear(self.classifier, self.encoder.pool(features))
        return shard(logits, self.logits_spec)

    def _linear(self, layer: nnx.Linear, x: Float[Array, "B D"]) -> Float[Array, "B C"]:
        logits = einsum("BD,DC->BC", x, layer.kernel[...].astype(self.dtype), self.logits_spec)
        return logits + layer.bias[...].astype(self.dtype)

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
        """Outputs of chosen blocks, for dense tasks and probing (timm's `forward_intermediates`).

        Args:
            x: NHWC images of any size divisible by the patch size.
            indices: None for every block, an int n for the last n blocks, or a list of block indices
                (negative counts from the end). Block i's output is HF `output_hidden_states[i + 1]`.
            norm: Apply the final LayerNorm to each intermediate.
            output_fmt: "NHWC" for spatial maps `[B, h, w, D]`, "NLC" for patch tokens `[B, h*w, D]`; the prefix
                (class, distillation, register) tokens are removed from both.
            stop_early: Run only the blocks up to the last one requested (no work on the rest).
            intermediates_only: Return only the list of intermediates.
            return_prefix_tokens: Return `(spatial, prefix_tokens [B, prefix, D])` pairs instead.

        Returns:
            `(final_tokens, intermediates)`, where `final_tokens` is the final-normed output of the last block
            run (the full `forward_features` when `stop_early=False`); or the intermediates alone.
        """
        return self.encoder.forward_intermediates(
            x,
            indices,
            norm=norm,
            output_fmt=output_fmt,
            stop_early=stop_early,
            intermediates_only=intermediates_only,
            return_prefix_tokens=return_prefix_tokens,
        )

    def attention_maps(self, x: Float[Array, "B height width C"]) -> Float[Array, "L B N T T"]:
        """Attention probabilities of every block, one array `[L, B, N, T, T]` (layer, batch, head, query, key).

        `maps[i]` equals transformers' `outputs.attentions[i]` (`output_attentions=True`). Always computed through
        the explicit XLA path whatever `attention_fn` the model uses (kernels never expose the probabilities), so
        it costs `L * B * N * T * T` memory; call it in eval mode. Class token first on the T axes.
        """
        return self.encoder.attention_maps(x)

    def __call__(self, x: Float[Array, "B height width C"]) -> Float[Array, "B C"]:
        """Logits `[B, num_classes]`, or the pooled class token `[B, D]` when `do_classification=False`."""
        return self.forward_head(self.forward_features(x))

    @classmethod
    def from_config(
        cls,
        config: dict[str, Any] | ViTConfig,
        *,
        rngs: nnx.Rngs | None = None,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        sharding: ShardingSpec | None = ViTSharding,
        use_gradient_checkpointing: bool = False,
        attention_fn: Callable[..., Any] | None = None,
        do_classification: bool = True,
        remat_policy: str | None = None,
        scan_layers: bool = True,
    ) -> VisionTransformer:
        """A randomly initialised model (in eval mode) from an HF config dict or a `ViTConfig`.

        Every HF field that changes the maths is honoured; an unsupported non-default field is an error.
        """
        if not isinstance(config, ViTConfig):
            config = ViTConfig.from_hf_dict(config)
        return cls(
            config=config,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
            sharding=sharding,
            use_gradient_checkpointing=use_gradient_checkpointing,
            attention_fn=attention_fn,
            do_classification=do_classification,
            remat_policy=remat_policy,
            scan_layers=scan_layers,
        )

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str | os.PathLike,
        use_pytorch: bool = False,
        rngs: nnx.Rngs | None = None,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        sharding: ShardingSpec | None = ViTSharding,
        use_gradient_checkpointing: bool = False,
        attention_fn: Callable[..., Any] | None = None,
        *,
        num_classes: int | None = None,
        id2label: dict[int, str] | None = None,
        do_classification: bool | None = None,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        remat_policy: str | None = None,
        scan_layers: bool = True,
        img_size: int | tuple[int, int] | None = None,
        config: ViTConfig | str | None = None,
    ) -> VisionTransformer:
        """Load a ViT checkpoint strictly: HF (ViT, DeiT), timm, or vit_jax / big_vision `.npz`.

        The layout is detected from the tensor names (docs/formats.md); an unknown layout is an error.

        Args:
            model_name_or_path: A directory with `config.json` and weights, or a hub repo id.
            use_pytorch: Prefer `pytorch_model.bin` over safetensors (needs torch).
            rngs: Random streams for a new head and dropout; None means `nnx.Rngs(0)`.
            dtype: Computation dtype.
            param_dtype: Parameter dtype; stored tensors (f32, bf16, f16) are cast to it.
            sharding: Parameter specs, used under a mesh; each tensor is placed directly on its sharding.
            use_gradient_checkpointing: Rematerialise each block in the backward pass.
            attention_fn: Attention kernel; None is jax.nn's XLA path.
            num_classes: Replace the checkpoint's head with a new random one of this many classes.
            id2label: Class names for the new head (implies `num_classes=len(id2label)`).
            do_classification: Keep a classifier; None follows the checkpoint (headless `ViTModel` gives features).
            revision, token, cache_dir: Passed to `huggingface_hub` for repo ids.
            remat_policy: A `jax.checkpoint_policies` name; see `VisionTransformer`.
            scan_layers: Stacked, scanned blocks (default) or a python list of blocks; both load the same files.
            img_size: Resample the position embeddings once, to this image size (an int or `(height, width)`);
                the model's config (and a later `save_pretrained`) records the new size.
            config: The architecture, as a `ViTConfig` or a variant name like "B/16"; None reads an HF
                `config.json` or, for timm and npz files, infers it from the tensor shapes.

        Returns:
            The model, in eval mode.
        """
        from .params import load_pretrained

        return load_pretrained(
            cls,
            model_name_or_path,
            prefer_pytorch=use_pytorch,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
            sharding=sharding,
            use_gradient_checkpointing=use_gradient_checkpointing,
            attention_fn=attention_fn,
            num_classes=num_classes,
            id2label=id2label,
            do_classification=do_classification,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            remat_policy=remat_policy,
            scan_layers=scan_layers,
            config=config,
            img_size=img_size,
        )

    @classmethod
    def from_variant(cls, variant: str, *, rngs: nnx.Rngs | None = None, **kwargs: Any) -> VisionTransformer:
        """A randomly initialised model of a named size, e.g. `from_variant("S/16", num_labels=10)`.

        `variant` is one of `Ti S M B L H g G` with an optional `/patch` (big_vision's names); keyword
        arguments that are `ViTConfig` fields go to the config, the rest (dtype, sharding, ...) to `from_config`.
        """
        from .variants import config_for

        fields = set(ViTConfig.__dataclass_fields__)
        config = config_for(variant, **{k: v for k, v in kwargs.items() if k in fields})
        return cls.from_config(config, rngs=rngs, **{k: v for k, v in kwargs.items() if k not in fields})

    def save_pretrained(self, save_directory: str | os.PathLike, *, max_shard_size: int | str = "5GB") -> None:
        """Write `config.json`, `model.safetensors` (sharded past `max_shard_size`) and `preprocessor_config.json`.

        The output loads in transformers' `ViTForImageClassification.from_pretrained` (or `ViTModel` when
        headless) with no missing or unexpected keys. Each file is replaced atomically after all are written.
        """
        from .params import save_pretrained

        save_pretrained(self, save_directory, max_shard_size=max_shard_size)
