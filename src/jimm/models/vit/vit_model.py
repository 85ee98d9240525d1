"""VisionTransformer: the original jimm API over an HF-exact ViT. Maths only: no file or hub I/O here.

Dimension letters: B batch, T tokens (patches + class token), D width, N heads, H head dim, F MLP hidden,
C classes, P patch pixels. Inputs are NHWC images `[B, height, width, channels]`.

Train/eval mode: a freshly built or loaded model is in eval mode (dropout off, deterministic outputs).
`model.train()` turns dropout on, drawing from the model's `dropout` rng stream; `model.eval()` turns it off.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike
from jaxtyping import Array, Float

from ...common.attention import AttentionFn
from ...common.sharding import ShardingSpec, ViTSharding, resolve_sharding, shard, with_sharding
from ...common.transformer import Encoder, LayerNorm, default_kernel_init, einsum
from .config import ViTConfig

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
        patches = x.reshape(b, gh, ph, gw, pw, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, gh * gw, ph * pw * c)
        kernel = self.kernel[...].reshape(ph * pw * c, -1).astype(self.dtype)
        return einsum("BTP,PD->BTD", patches.astype(self.dtype), kernel, self.out_spec) + self.bias[...].astype(
            self.dtype
        )


class VisionTransformerBase(nnx.Module):
    """Patch embedding, class token, position embeddings, the block stack and the final LayerNorm."""

    def __init__(
        self,
        config: ViTConfig,
        *,
        attention_fn: AttentionFn | None,
        use_gradient_checkpointing: bool,
        sharding: ShardingSpec,
        dtype: DTypeLike,
        param_dtype: DTypeLike,
        rngs: nnx.Rngs,
    ):
        d = config.hidden_size
        self.config, self.dtype, self.sharding = config, dtype, sharding
        self.patch_embed = PatchEmbed(config, sharding=sharding, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.cls_token = nnx.Param(
            with_sharding(default_kernel_init, sharding.cls_token)(rngs.params(), (1, 1, d), param_dtype)
        )
        self.pos_embed = nnx.Param(
            with_sharding(default_kernel_init, sharding.pos_embed)(
                rngs.params(), (1, config.num_tokens, d), param_dtype
            )
        )
        self.pos_drop = nnx.Dropout(config.hidden_dropout_prob, deterministic=True, rngs=rngs)
        self.blocks = Encoder(
            config.num_hidden_layers,
            remat=use_gradient_checkpointing,
            rngs=rngs,
            dim=d,
            num_heads=config.num_attention_heads,
            mlp_dim=config.intermediate_size,
            act=config.hidden_act,
            eps=config.layer_norm_eps,
            qkv_bias=config.qkv_bias,
            dropout=config.hidden_dropout_prob,
            attention_dropout=config.attention_probs_dropout_prob,
            attention_fn=attention_fn,
            sharding=sharding,
            dtype=dtype,
            param_dtype=param_dtype,
        )
        self.norm = LayerNorm(
            d, eps=config.layer_norm_eps, spec=sharding.norm, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def check_images(self, x: jax.Array) -> None:
        """Raise a clear error for anything but `[B, height, width, channels]` at the model's size."""
        c = self.config
        if x.ndim != 4:
            raise ValueError(
                f"expected NHWC images [batch, height, width, {c.num_channels}], got shape {tuple(x.shape)}"
            )
        if x.shape[-1] != c.num_channels:
            hint = " (NCHW input? jimm takes NHWC: use x.transpose(0, 2, 3, 1))" if x.shape[1] == c.num_channels else ""
            raise ValueError(f"expected {c.num_channels} channels in the last axis, got shape {tuple(x.shape)}{hint}")
        if tuple(x.shape[1:3]) != c.image_hw:
            raise ValueError(f"expected {c.image_hw[0]}x{c.image_hw[1]} images, got {x.shape[1]}x{x.shape[2]}")

    def embed(self, x: Float[Array, "B height width C"]) -> Float[Array, "B T D"]:
        self.check_images(x)
        tokens = self.patch_embed(x)
        cls = jnp.broadcast_to(self.cls_token[...].astype(tokens.dtype), (tokens.shape[0], 1, tokens.shape[-1]))
        tokens = jnp.concatenate([cls, tokens], axis=1) + self.pos_embed[...].astype(tokens.dtype)
        return shard(self.pos_drop(tokens), self.sharding.act_btd)

    def forward_features(self, x: Float[Array, "B height width C"]) -> Float[Array, "B T D"]:
        """All tokens after the final LayerNorm (HF `ViTModel(...).last_hidden_state`)."""
        return self.norm(self.blocks(self.embed(x)))

    def hidden_states(self, x: Float[Array, "B height width C"]) -> list[Float[Array, "B T D"]]:
        """The embeddings and every block's output, un-normalised (HF `output_hidden_states=True`)."""
        tokens = self.embed(x)
        _, per_layer = self.blocks(tokens, return_hidden_states=True)
        return [tokens, *per_layer]

    def __call__(self, x: Float[Array, "B height width C"]) -> Float[Array, "B D"]:
        """The pooled representation: the class token after the final LayerNorm."""
        return self.forward_features(x)[:, 0]


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
        self.config = config
        self.do_classification = do_classification
        self.preprocessor_json: str | None = None  # the checkpoint's preprocessor_config.json, kept for saving
        self.dtype = dtype
        self.encoder = VisionTransformerBase(
            config,
            attention_fn=attention_fn,
            use_gradient_checkpointing=use_gradient_checkpointing,
            sharding=sharding,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.logits_spec = sharding.act_bc
        if do_classification:
            if config.num_labels < 1:
                raise ValueError("do_classification=True needs num_classes >= 1")
            self.classifier = nnx.Linear(
                config.hidden_size,
                config.num_labels,
                dtype=dtype,
                param_dtype=param_dtype,
                kernel_init=with_sharding(default_kernel_init, sharding.proj_kernel),
                bias_init=with_sharding(nnx.initializers.zeros_init(), sharding.proj_bias),
                rngs=rngs,
            )

    @property
    def num_classes(self) -> int:
        return self.config.num_labels

    def forward_features(self, x: Float[Array, "B height width C"]) -> Float[Array, "B T D"]:
        """All tokens after the final LayerNorm, `[B, T, D]` (class token first)."""
        return self.encoder.forward_features(x)

    def forward_head(self, features: Float[Array, "B T D"], pre_logits: bool = False) -> Float[Array, "B C"]:
        """Pool the class token and apply the classifier (or return the pooled token with `pre_logits`)."""
        pooled = features[:, 0]
        if pre_logits or not self.do_classification:
            return pooled
        logits = einsum("BD,DC->BC", pooled, self.classifier.kernel[...].astype(self.dtype), self.logits_spec)
        return shard(logits + self.classifier.bias[...].astype(self.dtype), self.logits_spec)

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
    ) -> VisionTransformer:
        """Load an HF ViT checkpoint from a local directory or a hub repo id, strictly.

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
        )

    def save_pretrained(self, save_directory: str | os.PathLike, *, max_shard_size: int | str = "5GB") -> None:
        """Write `config.json`, `model.safetensors` (sharded past `max_shard_size`) and `preprocessor_config.json`.

        The output loads in transformers' `ViTForImageClassification.from_pretrained` (or `ViTModel` when
        headless) with no missing or unexpected keys. Each file is replaced atomically after all are written.
        """
        from .params import save_pretrained

        save_pretrained(self, save_directory, max_shard_size=max_shard_size)
