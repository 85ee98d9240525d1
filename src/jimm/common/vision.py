"""The ViT-shaped vision tower every family shares: patch embedding, prefix tokens, position scheme, the block
stack, the final norm, pooling, and the feature API (`forward_features`, `forward_intermediates`, maps).

A family maps its HF config onto one `VisionTowerConfig` (architecture only) and its checkpoint onto the
tower's parameters; nothing here knows a family. What the families differ in, and how it is expressed:

| | ViT | DINOv2 (+reg) | DINOv3 | CLIP | SigLIP | AIMv2 |
|---|---|---|---|---|---|---|
| norms (`norm`) | LayerNorm | LayerNorm | LayerNorm | LayerNorm | LayerNorm | RMSNorm |
| prefix tokens | class (+dist, +reg) | class (+reg) | class + reg | class | none | none |
| positions | learned, all | learned, class+patches | RoPE | learned, all | learned, patches | learned / sin-cos |
| extras | | LayerScale, SwiGLU (g) | LayerScale, gated MLP, no k bias | pre-norm, no conv bias | | patch norm, SwiGLU |
| final norm | tokens | tokens | tokens | pooled class token (`fc_norm`) | tokens | tokens |
| pooling | class token | class token | class token | class token | MAP head | probe head or none |

The seams, in call order: `embed(x)` (patches, patch norm, prefix tokens, positions, pre-norm) ->
`trunk(tokens, mask=)` (the blocks; `mask [B, T]`, True = a real token, masks padded keys in every block) ->
`final_norm` -> `pool(features, mask=)` (by `global_pool`; masked mean and the attention heads skip padding).

Dimension letters: B batch, T tokens (prefix + patches), D width, N heads, H head dim, P patch pixels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike
from jaxtyping import Array, Bool, Float

from . import init as initializers
from .attention import AttentionFn
from .placement import batch_like, gathered, like, output, reshape_batched, shard_input, with_sharding
from .pooling import MAPHead
from .positions import sincos_2d
from .resample import RESAMPLE_MODES, resample_pos_embed
from .sharding import Plan
from .transformer import (
    ACTIVATIONS,
    MLPS,
    NORMS,
    Encoder,
    RopeAugment,
    default_kernel_init,
    einsum,
    make_norm,
    rope_2d,
    rope_coords,
)

POSITIONS = ("learned", "rope", "sincos")
POS_EMBED_PREFIX = ("all", "class", "none")
GLOBAL_POOLS = ("token", "avg", "map", "probe", "none")
"""class token; masked mean of the patches; big_vision's MAP head; AIMv2's probe head (no query projection,
no MLP); none (`pool` returns the tokens)."""


def pair(value, field: str) -> tuple[int, int]:
    """A size field (`image_size`, `patch_size`): an int, or `[height, width]`."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"{field} must be an int or [height, width], got {value!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class VisionTowerConfig:
    """The architecture of a vision tower (no HF names, no dtype or sharding: see the module table)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    act: str = "gelu"
    eps: float = 1e-6
    norm: str = "layernorm"  # a `transformer.NORMS` kind: every block, pre-norm, patch norm, final norm, fc_norm
    patch_norm: bool = False  # a norm on the patch tokens before positions are added (AIMv2's `embeddings.rms_norm`)
    image_size: tuple[int, int] = (224, 224)  # the native size: the position table's grid
    patch_size: tuple[int, int] = (16, 16)
    num_channels: int = 3
    patch_bias: bool = True
    qkv_bias: tuple[bool, bool, bool] = (True, True, True)  # query, key, value
    out_bias: bool = True
    mlp: str = "mlp"  # "mlp" or "gated" (SwiGLU / gated SiLU)
    mlp_bias: bool = True
    class_token: bool = True
    distilled: bool = False  # DeiT's distillation token
    num_register_tokens: int = 0
    mask_token: bool = False  # DINO's learned mask token `[1, D]`: stored and saved, unused at inference
    position: str = "learned"  # learned table, "rope" (2-D rotary, DINOv3) or "sincos" (fixed 2-D, AIMv2 native)
    pos_embed_prefix: str = "all"  # prefix tokens with a position row: all, class (+dist) only, or none
    pos_resample: str = "bicubic"  # a `resample.RESAMPLE_MODES` kernel for other image sizes
    pos_interpolate_offset: float = 0.0  # DINOv2's legacy torch-hub scale-factor offset (0.1)
    rope_theta: float = 100.0
    pre_norm: bool = False  # LayerNorm on the embeddings before the blocks (CLIP's `pre_layrnorm`)
    fc_norm: bool = False  # final LayerNorm on the pooled vector instead of on every token
    global_pool: str = "token"  # a `GLOBAL_POOLS` kind
    layer_scale_init_value: float | None = None
    qk_norm: bool = False
    dropout: float = 0.0
    embed_dropout: float | None = None  # dropout on the embeddings when it differs from `dropout` (DINOv2: only here)
    attention_dropout: float = 0.0
    drop_path_rate: float = 0.0
    drop_path_uniform: bool = False  # the same drop-path rate in every block (HF DINO), not timm's linear ramp
    rope_shift: float | None = None  # DINOv3's train-time RoPE coordinate augmentation (`RopeAugment`)
    rope_jitter: float | None = None
    rope_rescale: float | None = None

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size"):
            object.__setattr__(self, name, pair(getattr(self, name), name))
        object.__setattr__(self, "qkv_bias", tuple(bool(b) for b in self.qkv_bias))
        checks = [
            (self.act in ACTIVATIONS, f"act={self.act!r} is not one of {sorted(ACTIVATIONS)}"),
            (self.mlp in MLPS, f"mlp={self.mlp!r} is not one of {sorted(MLPS)}"),
            (self.norm in NORMS, f"norm={self.norm!r} is not one of {sorted(NORMS)}"),
            (
                self.position != "sincos" or (self.pos_embed_prefix == "none" and self.hidden_size % 4 == 0),
                "position='sincos' covers the patches only (pos_embed_prefix='none') and needs a width divisible by 4",
            ),
            (self.position in POSITIONS, f"position={self.position!r} is not one of {POSITIONS}"),
            (self.pos_embed_prefix in POS_EMBED_PREFIX, f"pos_embed_prefix must be one of {POS_EMBED_PREFIX}"),
            (self.pos_resample in RESAMPLE_MODES, f"pos_resample must be one of {RESAMPLE_MODES}"),
            (self.global_pool in GLOBAL_POOLS, f"global_pool must be one of {GLOBAL_POOLS}"),
            (self.hidden_size % self.num_heads == 0, f"width {self.hidden_size} is not divisible by {self.num_heads}"),
            (self.global_pool != "token" or self.class_token, "global_pool='token' needs a class token"),
            (len(self.qkv_bias) == 3, "qkv_bias needs three flags (query, key, value)"),
        ]
        for ok, problem in checks:
            if not ok:
                raise ValueError(f"VisionTowerConfig: {problem}")
        # transformers' (and big_vision's VALID) patch conv takes the whole patches only: 384 px at patch 14 is a
        # 27 x 27 grid, the last 6 pixels dropped. Less than one patch is what the conv refuses.
        for (img, patch), axis in zip(zip(self.image_size, self.patch_size, strict=True), "hw", strict=True):
            if patch <= 0 or img < patch:
                raise ValueError(f"VisionTowerConfig: image {axis} {img} is smaller than one patch ({patch})")

    @property
    def grid_hw(self) -> tuple[int, int]:
        (ih, iw), (ph, pw) = self.image_size, self.patch_size
        return ih // ph, iw // pw

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def num_prefix_tokens(self) -> int:
        """Class, distillation and register tokens, in that order, before the patch tokens."""
        return int(self.class_token) + int(self.distilled) + self.num_register_tokens

    @property
    def num_pos_prefix(self) -> int:
        """Prefix tokens that have a row in the position table."""
        return {
            "all": self.num_prefix_tokens,
            "class": int(self.class_token) + int(self.distilled),
            "none": 0,
        }[self.pos_embed_prefix]

    @property
    def num_pos_embed(self) -> int:
        gh, gw = self.grid_hw
        return gh * gw + self.num_pos_prefix

    @property
    def num_tokens(self) -> int:
        gh, gw = self.grid_hw
        return gh * gw + self.num_prefix_tokens

    def replace(self, **changes) -> VisionTowerConfig:
        return dataclasses.replace(self, **changes)

    def param_shapes(self, num_labels: int = 0) -> dict[str, tuple[int, ...]]:
        """Per-layer parameter shapes by `Plan` field, to check a spec against a mesh before building."""
        d, n, f = self.hidden_size, self.num_heads, self.mlp_dim
        ph, pw = self.patch_size
        return {
            "patch_kernel": (ph, pw, self.num_channels, d),
            "patch_bias": (d,),
            "cls_token": (1, 1, d),
            "pos_embed": (1, self.num_pos_embed, d),
            "qkv_kernel": (d, 3, n, d // n),
            "qkv_bias": (sum(self.qkv_bias), n, d // n),
            "attn_out_kernel": (n, d // n, d),
            "attn_out_bias": (d,),
            "mlp_in_kernel": (d, f),
            "mlp_in_bias": (f,),
            "mlp_out_kernel": (f, d),
            "mlp_out_bias": (d,),
            "norm": (d,),
            "proj_kernel": (d, max(num_labels, 1)),
            "proj_bias": (max(num_labels, 1),),
        }


class PatchEmbed(nnx.Module):
    """Non-overlapping patches, flattened and projected: the conv of HF/timm written as one matmul."""

    def __init__(
        self,
        config: VisionTowerConfig,
        *,
        sharding: Plan,
        dtype: DTypeLike,
        param_dtype: DTypeLike,
        rngs: nnx.Rngs,
    ):
        ph, pw = config.patch_size
        shape = (ph, pw, config.num_channels, config.hidden_size)
        self.kernel = nnx.Param(
            with_sharding(default_kernel_init, sharding.patch_kernel)(rngs.params(), shape, param_dtype)
        )
        zeros = with_sharding(initializers.zeros, sharding.patch_bias)
        self.bias = nnx.Param(zeros(rngs.params(), (config.hidden_size,), param_dtype)) if config.patch_bias else None
        self.patch_hw, self.dtype = (ph, pw), dtype

    def __call__(self, x: Float[Array, "B height width C"]) -> Float[Array, "B T D"]:
        b, h, w, c = x.shape
        ph, pw = self.patch_hw
        gh, gw = h // ph, w // pw
        if (h, w) != (gh * ph, gw * pw):  # a VALID conv: pixels past the last whole patch are not read
            x = x[:, : gh * ph, : gw * pw]
        patches = reshape_batched(x, (b, gh, ph, gw, pw, c)).transpose(0, 1, 3, 2, 4, 5)
        return self.project(reshape_batched(patches, (b, gh * gw, ph * pw * c)))

    def project(self, patches: Float[Array, "B T P"]) -> Float[Array, "B T D"]:
        """Patches flattened in (p_h, p_w, C) order -> tokens (NaFlex inputs arrive already cut this way)."""
        kernel = self.kernel[...].reshape(patches.shape[-1], -1).astype(self.dtype)
        out = einsum("BTP,PD->BTD", patches.astype(self.dtype), kernel)
        return out if self.bias is None else out + like(self.bias[...], out).astype(self.dtype)


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


class VisionTower(nnx.Module):
    """Patch embedding, prefix tokens, positions, the block stack, the final norm and the pooling.

    Prefix tokens come in the order class, distillation, registers, then the patches (timm, DeiT, DINO).
    """

    def __init__(
        self,
        config: VisionTowerConfig,
        *,
        attention_fn: AttentionFn | None,
        use_gradient_checkpointing: bool,
        sharding: Plan,
        remat_policy: str | None = None,
        scan_layers: bool = True,
        dtype: DTypeLike,
        param_dtype: DTypeLike,
        rngs: nnx.Rngs,
    ):
        d, c = config.hidden_size, config
        self.config, self.dtype, self.sharding = config, dtype, sharding
        self.patch_embed = PatchEmbed(config, sharding=sharding, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

        def token(shape, spec=None, init=default_kernel_init):
            return nnx.Param(with_sharding(init, spec)(rngs.params(), shape, param_dtype))

        self.cls_token = token((1, 1, d), sharding.cls_token) if c.class_token else None
        self.dist_token = token((1, 1, d), sharding.cls_token) if c.distilled else None
        self.reg_token = token((1, c.num_register_tokens, d), sharding.reg_token) if c.num_register_tokens else None
        self.mask_token = token((1, d), init=initializers.zeros) if c.mask_token else None
        self.pos_embed = token((1, c.num_pos_embed, d), sharding.pos_embed) if c.position == "learned" else None
        self.pos_drop = nnx.Dropout(
            c.dropout if c.embed_dropout is None else c.embed_dropout, deterministic=True, rngs=rngs
        )
        augments = (c.rope_shift, c.rope_jitter, c.rope_rescale)
        rope_train = c.position == "rope" and any(a is not None for a in augments)
        self.rope_augment = RopeAugment(*augments, rngs=rngs) if rope_train else None
        norm = dict(eps=c.eps, spec=sharding.norm, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.patch_norm = make_norm(c.norm, d, **norm) if c.patch_norm else None
        self.pre_norm = make_norm(c.norm, d, **norm) if c.pre_norm else None
        self.blocks = Encoder(
            c.num_layers,
            remat=use_gradient_checkpointing,
            remat_policy=remat_policy,
            scan_layers=scan_layers,
            drop_path_uniform=c.drop_path_uniform,
            rngs=rngs,
            dim=d,
            num_heads=c.num_heads,
            mlp_dim=c.mlp_dim,
            act=c.act,
            eps=c.eps,
            qkv_bias=c.qkv_bias,
            dropout=c.dropout,
            attention_dropout=c.attention_dropout,
            attention_fn=attention_fn,
            sharding=sharding,
            dtype=dtype,
            param_dtype=param_dtype,
            layer_scale_init_value=c.layer_scale_init_value,
            drop_path_rate=c.drop_path_rate,
            qk_norm=c.qk_norm,
            out_bias=c.out_bias,
            mlp=c.mlp,
            mlp_bias=c.mlp_bias,
            norm=c.norm,
        )
        # timm / CLIP: with fc_norm the final norm moves from the tokens to the pooled vector.
        self.norm = make_norm(c.norm, d, **norm) if not c.fc_norm else None
        self.fc_norm = make_norm(c.norm, d, **norm) if c.fc_norm else None
        probe = c.global_pool == "probe"  # AIMv2: no query projection, no MLP, key / value bias as the blocks'
        self.attn_pool = (
            MAPHead(
                d,
                c.num_heads,
                c.mlp_dim,
                act=c.act,
                eps=c.eps,
                sharding=sharding,
                dtype=dtype,
                param_dtype=param_dtype,
                rngs=rngs,
                attention_fn=attention_fn,
                query_proj=not probe,
                kv_bias=c.qkv_bias[1] if probe else True,
                residual_mlp=not probe,
            )
            if c.global_pool in ("map", "probe")
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
        (h, w), (ph, pw) = x.shape[1:3], c.patch_size
        if h < ph or w < pw:  # transformers' patch conv refuses it too
            raise ValueError(f"image size {h}x{w} is smaller than one patch ({ph}x{pw}); resize to at least {ph}x{pw}")
        return h // ph, w // pw  # whole patches only: trailing rows / columns are dropped, as transformers does

    def pos_embed_for(self, grid_hw: tuple[int, int]) -> Float[Array, "1 T D"]:
        """Learned position embeddings for a `grid_hw` patch grid, resampled (the family's kernel) when it differs."""
        c = self.config
        return resample_pos_embed(
            gathered(self.pos_embed[...]),
            c.grid_hw,
            grid_hw,
            num_prefix_tokens=c.num_pos_prefix,
            mode=c.pos_resample,
            offset=c.pos_interpolate_offset,
        )

    def rope_for(self, grid_hw: tuple[int, int]) -> tuple[jax.Array, jax.Array] | None:
        """`(cos, sin)` of the 2-D rotary embedding for a patch grid (RoPE towers), else None; in train mode with
        coordinates augmented by `rope_augment` (a new draw per call)."""
        if self.config.position != "rope":
            return None
        coords = None
        if self.rope_augment is not None and not self.rope_augment.deterministic:
            coords = self.rope_augment(rope_coords(grid_hw))
        cos, sin = rope_2d(grid_hw, self.config.head_dim, self.config.rope_theta, coords)
        return jnp.asarray(cos), jnp.asarray(sin)

    def embed(self, x: Float[Array, "B height width C"]) -> Float[Array, "B T D"]:
        c = self.config
        grid = self.check_images(x)
        tokens = self.patch_embed(shard_input(x, self.sharding.batch, "images"))
        if self.patch_norm is not None:
            tokens = self.patch_norm(tokens)
        b, _, d = tokens.shape

        def expand(t):
            return batch_like(jnp.broadcast_to(like(t[...], tokens).astype(tokens.dtype), (b, t.shape[1], d)), tokens)

        leading = [expand(t) for t in (self.cls_token, self.dist_token) if t is not None]
        registers = [expand(self.reg_token)] if self.reg_token is not None else []
        if c.position == "rope":
            tokens = jnp.concatenate([*leading, *registers, tokens], axis=1)
        elif c.position == "sincos":
            pos = jnp.asarray(sincos_2d(grid, d), tokens.dtype)[None]
            tokens = jnp.concatenate([*leading, *registers, tokens + pos], axis=1)
        else:
            pos = self.pos_embed_for(grid).astype(tokens.dtype)
            if c.pos_embed_prefix == "all":  # HF ViT, CLIP: every prefix token has a position row
                tokens = jnp.concatenate([*leading, *registers, tokens], axis=1) + pos
            elif c.pos_embed_prefix == "class":  # DINOv2 with registers: registers go in after the positions
                with_pos = jnp.concatenate([*leading, tokens], axis=1) + pos
                n = len(leading)
                tokens = jnp.concatenate([with_pos[:, :n], *registers, with_pos[:, n:]], axis=1)
            else:  # big_vision / DeiT-3 / SigLIP: positions for the patches only, then the prefix
                tokens = jnp.concatenate([*leading, *registers, tokens + pos], axis=1)
        if self.pre_norm is not None:
            tokens = self.pre_norm(tokens)
        return self.pos_drop(tokens)

    def trunk(
        self,
        tokens: Float[Array, "B T D"],
        *,
        mask: Bool[Array, "B T"] | None = None,
        rope: tuple[jax.Array, jax.Array] | None = None,
        **kwargs,
    ):
        """The block stack on embedded tokens; `mask` (True = a real token) hides padded keys in every block;
        `kwargs` are `Encoder.__call__`'s extras (`return_hidden_states`, `num_layers`, ...)."""
        return self.blocks(tokens, mask=key_mask(mask), rope=rope, **kwargs)

    def encode(self, x: Float[Array, "B height width C"], *, mask: Bool[Array, "B T"] | None = None, **kwargs):
        """`trunk(embed(x))` with this image's RoPE; `mask [B, T]` as `trunk`'s."""
        grid = self.check_images(x)
        return self.trunk(self.embed(x), mask=mask, rope=self.rope_for(grid), **kwargs)

    def final_norm(self, x: Float[Array, "B T D"]) -> Float[Array, "B T D"]:
        return self.norm(x) if self.norm is not None else x

    def forward_features(
        self, x: Float[Array, "B height width C"], *, mask: Bool[Array, "B T"] | None = None
    ) -> Float[Array, "B T D"]:
        """All tokens after the final norm (HF `last_hidden_state`); `mask` as `trunk`'s."""
        return self.final_norm(self.encode(x, mask=mask))

    def hidden_states(
        self, x: Float[Array, "B height width C"], *, mask: Bool[Array, "B T"] | None = None
    ) -> list[Float[Array, "B T D"]]:
        """The embeddings and every block's output, un-normalised (HF `output_hidden_states=True`)."""
        tokens = self.embed(x)
        rope = self.rope_for(self.check_images(x))
        _, per_layer = self.trunk(tokens, mask=mask, rope=rope, return_hidden_states=True)
        return [tokens, *per_layer]

    def attention_maps(self, x: Float[Array, "B height width C"]) -> Float[Array, "L B N T T"]:
        """Every block's attention probabilities `[L, B, N, T, T]`, always through the explicit XLA path."""
        _, weights = self.encode(x, return_attention_weights=True)
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
        """Outputs of chosen blocks, timm's `forward_intermediates` (see `VisionFeatures.forward_intermediates`)."""
        if output_fmt not in ("NHWC", "NLC"):
            raise ValueError(
                f"output_fmt={output_fmt!r} is not supported; choose 'NHWC' (spatial maps) or 'NLC' (tokens)"
            )
        c = self.config
        taken = take_indices(c.num_layers, indices)
        grid = self.check_images(x)
        run = max(taken) + 1 if stop_early else c.num_layers
        last, per_layer = self.encode(x, return_hidden_states=True, num_layers=run)
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

    def patch_tokens(self, features: Float[Array, "B T D"]) -> Float[Array, "B P D"]:
        return features[:, self.config.num_prefix_tokens :]

    def pool(
        self, features: Float[Array, "B T D"], *, mask: Bool[Array, "B T"] | None = None
    ) -> Float[Array, "B D"] | Float[Array, "B T D"]:
        """One vector per image from the final tokens, by `config.global_pool` (then `fc_norm` if set).

        `mask [B, T]` (True = a real token) keeps padded patches out of the mean and the attention heads;
        `global_pool="none"` returns the tokens themselves.
        """
        c = self.config
        patch_mask = None if mask is None else self.patch_tokens(mask)
        if c.global_pool in ("map", "probe"):
            pooled = self.attn_pool(self.patch_tokens(features), patch_mask)
        elif c.global_pool == "avg":
            pooled = masked_mean(self.patch_tokens(features), patch_mask)
        elif c.global_pool == "none":
            pooled = features
        elif c.distilled:  # DeiT / timm: the mean of the class and distillation tokens
            pooled = (features[:, 0] + features[:, 1]) / 2
        else:
            pooled = features[:, 0]
        return output(self.fc_norm(pooled) if self.fc_norm is not None else pooled)

    def __call__(
        self, x: Float[Array, "B height width C"], *, mask: Bool[Array, "B T"] | None = None
    ) -> Float[Array, "B D"]:
        """The pooled representation (the class token after the final LayerNorm, for plain ViT)."""
        return self.pool(self.forward_features(x, mask=mask), mask=mask)


def key_mask(mask: Bool[Array, "B T"] | None) -> Bool[Array, "B 1 1 T"] | None:
    """A token mask `[B, T]` (True = real) as the blocks' attention mask: every query sees the real keys only."""
    if mask is None:
        return None
    if mask.ndim != 2:
        raise ValueError(f"mask must be [batch, tokens] booleans (True = a real token), got shape {mask.shape}")
    return mask.astype(bool)[:, None, None, :]


def masked_mean(tokens: Float[Array, "B T D"], mask: Bool[Array, "B T"] | None) -> Float[Array, "B D"]:
    """The mean over the real tokens (all of them without a mask)."""
    if mask is None:
        return tokens.mean(axis=1)
    weights = mask.astype(tokens.dtype)[..., None]
    return (tokens * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), 1)


class VisionFeatures:
    """The feature API of every model with a vision tower: delegates to the `VisionTower` at `self.vision_tower`."""

    vision_tower: VisionTower

    def export(self, out, *, format: str = "onnx", **kwargs):
        """Write this model's towers as ONNX or StableHLO files into the folder `out`, with the preprocessing
        facts beside them; keyword arguments go to `jimm.export.export_model`. Returns the paths written."""
        from ..export import export_model

        return export_model(self, out, format=format, **kwargs)

    def forward_features(self, x: Float[Array, "B height width C"]) -> Float[Array, "B T D"]:
        """All tokens after the final norm, `[B, T, D]` (prefix tokens first), as HF's `last_hidden_state`."""
        return self.vision_tower.forward_features(x)

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
            x: NHWC images of any size of at least one patch (whole patches only, as transformers).
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
        return self.vision_tower.forward_intermediates(
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
        it costs `L * B * N * T * T` memory; call it in eval mode. Prefix tokens first on the T axes.
        """
        return self.vision_tower.attention_maps(x)

    def hidden_states(self, x: Float[Array, "B height width C"]) -> list[Float[Array, "B T D"]]:
        """The embeddings and every block's output (HF `output_hidden_states=True`), un-normalised."""
        return self.vision_tower.hidden_states(x)


__all__ = ["VisionFeatures", "VisionTower", "VisionTowerConfig", "key_mask", "masked_mean", "take_indices"]
