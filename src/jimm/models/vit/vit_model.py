"""VisionTransformer: the original jimm API over an HF-exact ViT. Maths only: no file or hub I/O here.

Dimension letters: B batch, T tokens (patches + class token), D width, N heads, H head dim, F MLP hidden,
C classes, P patch pixels. Inputs are NHWC images `[B, height, width, channels]`.

Train/eval mode: a freshly built or loaded model is in eval mode (dropout off, deterministic outputs).
`model.train()` turns dropout on, drawing from the model's `dropout` rng stream; `model.eval()` turns it off.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike
from jaxtyping import Array, Float

from ...common import init as initializers
from ...common.placement import like, output, with_sharding
from ...common.sharding import ShardingSpec, ViTSharding, resolve_sharding
from ...common.transformer import ACTIVATIONS, default_kernel_init, einsum
from ...common.vision import VisionFeatures, VisionTower
from .config import ViTConfig


class VisionTransformer(VisionFeatures, nnx.Module):
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
        do_classification: bool | None = True,
        rngs: nnx.Rngs | None = None,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        sharding: ShardingSpec | type | None = ViTSharding,
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
            do_classification: Include the classifier (transformers' `ViTForImageClassification`, no pooler);
                otherwise return the pooled class token, or for a `ViTModel` config (`config.add_pooling_layer`) its
                pooler output. None: follow the config (`from_config`'s default).
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
        if do_classification is None:
            do_classification = not config.add_pooling_layer
        if do_classification and config.add_pooling_layer:  # as transformers' ViTForImageClassification of it
            config = config.replace(add_pooling_layer=False)
        if rngs is None:
            rngs = nnx.Rngs(0)
        sharding = resolve_sharding(sharding)
        tower = config.tower()
        sharding.check_shapes(tower.param_shapes(config.num_labels))
        self.config = config
        self.do_classification = do_classification
        self.preprocessor_json: str | None = None  # the checkpoint's preprocessor_config.json, kept for saving
        self.dtype = dtype
        self.encoder = VisionTower(
            tower,
            attention_fn=attention_fn,
            use_gradient_checkpointing=use_gradient_checkpointing,
            remat_policy=remat_policy,
            scan_layers=scan_layers,
            sharding=sharding,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        head = dict(
            dtype=dtype,
            param_dtype=param_dtype,
            kernel_init=with_sharding(default_kernel_init, sharding.proj_kernel),
            bias_init=with_sharding(initializers.zeros, sharding.proj_bias),
            rngs=rngs,
        )
        # ViTModel's pooler: a `[D, P]` layer on the class token, laid out like a head.
        self.pooler = nnx.Linear(config.hidden_size, config.pooler_size, **head) if config.add_pooling_layer else None
        if do_classification:
            if config.num_labels < 1:
                raise ValueError("do_classification=True needs num_classes >= 1")
            self.classifier = nnx.Linear(config.hidden_size, config.num_labels, **head)
            # DeiT's second head reads the distillation token; eval logits average the two (timm, HF WithTeacher).
            self.classifier_dist = (
                nnx.Linear(config.hidden_size, config.num_labels, **head) if config.distilled else None
            )

    @property
    def num_classes(self) -> int:
        return self.config.num_labels

    @property
    def vision_tower(self) -> VisionTower:
        return self.encoder

    def forward_head(self, features: Float[Array, "B T D"], pre_logits: bool = False) -> Float[Array, "B C"]:
        """Pool (by `config.global_pool`) and apply the classifier; `pre_logits=True` returns the pooled vector.

        A `ViTModel` (with `config.add_pooling_layer`) gives transformers' `pooler_output`: `pooler_act` on its
        pooler of the class token (`pre_logits=True`: the class token itself).
        """
        if self.pooler is not None and not pre_logits:
            fn = jnp.tanh if self.config.pooler_act == "tanh" else ACTIVATIONS[self.config.pooler_act]
            return output(fn(self._linear(self.pooler, features[:, 0])))
        if pre_logits or not self.do_classification:
            return self.encoder.pool(features)
        if self.config.distilled:
            cls_logits = self._linear(self.classifier, features[:, 0])
            logits = (cls_logits + self._linear(self.classifier_dist, features[:, 1])) / 2
        else:
            logits = self._linear(self.classifier, self.encoder.pool(features))
        return output(logits)

    def _linear(self, layer: nnx.Linear, x: Float[Array, "B D"]) -> Float[Array, "B C"]:
        logits = einsum("BD,DC->BC", x, layer.kernel[...].astype(self.dtype))
        return logits + like(layer.bias[...], logits).astype(self.dtype)

    def __call__(self, x: Float[Array, "B height width C"]) -> Float[Array, "B C"]:
        """Logits `[B, num_classes]`, or the pooled class token `[B, D]` when `do_classification=False` (a `ViTModel`'s
        `pooler_output` when it has the pooler)."""
        return self.forward_head(self.forward_features(x))

    @classmethod
    def from_config(
        cls,
        config: dict[str, Any] | ViTConfig,
        *,
        rngs: nnx.Rngs | None = None,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        sharding: ShardingSpec | type | None = ViTSharding,
        use_gradient_checkpointing: bool = False,
        attention_fn: Callable[..., Any] | None = None,
        do_classification: bool | None = None,
        remat_policy: str | None = None,
        scan_layers: bool = True,
    ) -> VisionTransformer:
        """A randomly initialised model (in eval mode) from an HF config dict or a `ViTConfig`.

        Every HF field that changes the maths is honoured; an unsupported non-default field is an error.
        `architectures: ["ViTModel"]` (or DeiTModel) builds transformers' headless model with its pooler, unless
        `do_classification=True`; any other config a classifier unless `do_classification=False`.
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
        sharding: ShardingSpec | type | None = ViTSharding,
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
            revision: Passed to `huggingface_hub` for repo ids.
            token: Passed to `huggingface_hub` for repo ids.
            cache_dir: Passed to `huggingface_hub` for repo ids.
            remat_policy: A `jax.checkpoint_policies` name; see `VisionTransformer`.
            scan_layers: Stacked, scanned blocks (default) or a python list of blocks; both load the same files.
            img_size: Resample the position embeddings once, to this image size (an int or `(height, width)`);
                the model's config (and a later `save_pretrained`) records the new size.
            config: The architecture, as a `ViTConfig` or a variant name like "B/16"; None reads an HF
                `config.json` or, for timm and npz files, infers it from the tensor shapes.

        Returns:
            The model, in eval mode.
        """
        from .pretrained import load_pretrained

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

    def save_pretrained(
        self, save_directory: str | os.PathLike, *, max_shard_size: int | str = "5GB", overwrite: bool = False
    ) -> None:
        """Write `config.json`, `model.safetensors` (sharded past `max_shard_size`) and `preprocessor_config.json`.

        The output loads in transformers' `ViTForImageClassification.from_pretrained` (or `ViTModel` when
        headless) with no missing or unexpected keys. The save is atomic as a whole: after a crash at any
        point the folder loads as the old save or the new one (see `docs/safety.md`). Files of the same names
        that jimm did not write are an error unless `overwrite=True`; other files in the folder stay.
        """
        from .pretrained import save_pretrained

        save_pretrained(self, save_directory, max_shard_size=max_shard_size, overwrite=overwrite)
