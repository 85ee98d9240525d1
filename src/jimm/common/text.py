"""The text tower CLIP and SigLIP share: token + position embeddings, the shared `Encoder`, a final LayerNorm,
one pooled vector per text, and SigLIP's optional `head` projection.

| | CLIP (`CLIPTextModel`) | SigLIP, SigLIP 2 (`SiglipTextModel`) |
|---|---|---|
| attention mask | causal (`causal=True`), and the padding mask when given | none, or the padding mask when given |
| pooling | `argmax(ids)` if the config's `eos_token_id == 2` (legacy), else the first `eos_token_id` | the last token |
| head | none (the projection belongs to the two-tower model) | `head`: Linear(D -> projection_size), bias |

AIMv2's LiT text tower is the same tower with `norm="rmsnorm"`, `mlp="gated"` (SwiGLU) and the biases off, causal,
pooled at the first `eos_token_id`.

Both pool the final-normed tokens. The pooling rules are transformers' (5.24), so padding changes nothing for
CLIP (the causal mask hides it from the EOS token) and everything for SigLIP: pad to the trained length.

Dimension letters: B batch, T tokens, D width, V vocabulary, P head output width.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike
from jaxtyping import Array, Float, Int

from . import init as initializers
from .attention import AttentionFn
from .placement import einsum, gathered, like, output, shard_input, take_rows, with_sharding
from .sharding import Plan
from .transformer import ACTIVATIONS, MLPS, NORMS, Encoder, default_kernel_init, make_norm

POOLINGS = ("last", "eos", "argmax")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TextTowerConfig:
    """The architecture of a text tower (no HF names, no dtype or sharding: see the module table)."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    max_positions: int
    act: str = "gelu"
    eps: float = 1e-5
    causal: bool = False
    pooling: str = "last"  # "last" position, first "eos" (== eos_token_id), or "argmax" of the ids
    eos_token_id: int | None = None
    head_size: int | None = None  # SigLIP's `head` Linear(D -> head_size) after pooling; None: no head
    attention_dropout: float = 0.0
    norm: str = "layernorm"  # a `transformer.NORMS` kind: every block and the final norm
    mlp: str = "mlp"  # "mlp" or "gated" (SwiGLU)
    qkv_bias: bool = True  # query, key and value projections
    out_bias: bool = True  # the attention output projection
    mlp_bias: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.act in ACTIVATIONS, f"act={self.act!r} is not one of {sorted(ACTIVATIONS)}"),
            (self.norm in NORMS, f"norm={self.norm!r} is not one of {sorted(NORMS)}"),
            (self.mlp in MLPS, f"mlp={self.mlp!r} is not one of {sorted(MLPS)}"),
            (self.pooling in POOLINGS, f"pooling={self.pooling!r} is not one of {POOLINGS}"),
            (self.hidden_size % self.num_heads == 0, f"width {self.hidden_size} is not divisible by {self.num_heads}"),
            (self.pooling != "eos" or isinstance(self.eos_token_id, int), "pooling='eos' needs an int eos_token_id"),
            (self.max_positions >= 1 and self.vocab_size >= 1, "max_positions and vocab_size must be positive"),
        ]
        for ok, problem in checks:
            if not ok:
                raise ValueError(f"TextTowerConfig: {problem}")

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-layer parameter shapes by `Plan` field, to check a spec against a mesh before building."""
        d, n, f = self.hidden_size, self.num_heads, self.mlp_dim
        shapes = {
            "qkv_kernel": (d, 3, n, d // n),
            "qkv_bias": (3, n, d // n),
            "attn_out_kernel": (n, d // n, d),
            "attn_out_bias": (d,),
            "mlp_in_kernel": (d, f),
            "mlp_in_bias": (f,),
            "mlp_out_kernel": (f, d),
            "mlp_out_bias": (d,),
            "norm": (d,),
        }
        if self.head_size is not None:
            shapes |= {"proj_kernel": (d, self.head_size), "proj_bias": (self.head_size,)}
        return shapes


class TextTower(nnx.Module):
    """Token and position embeddings, the block stack, the final LayerNorm, pooling and the optional head."""

    def __init__(
        self,
        config: TextTowerConfig,
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
        c, d = config, config.hidden_size
        self.config, self.dtype, self.sharding = config, dtype, sharding
        # Stored on their specs (the original's `embed`, `text_pos_embed`), gathered whole for each lookup.
        self.token_embed = nnx.Param(
            with_sharding(default_kernel_init, sharding.token_embed)(rngs.params(), (c.vocab_size, d), param_dtype)
        )
        self.pos_embed = nnx.Param(
            with_sharding(default_kernel_init, sharding.text_pos_embed)(
                rngs.params(), (c.max_positions, d), param_dtype
            )
        )
        self.blocks = Encoder(
            c.num_layers,
            remat=use_gradient_checkpointing,
            remat_policy=remat_policy,
            scan_layers=scan_layers,
            rngs=rngs,
            dim=d,
            num_heads=c.num_heads,
            mlp_dim=c.mlp_dim,
            act=c.act,
            eps=c.eps,
            qkv_bias=c.qkv_bias,
            out_bias=c.out_bias,
            mlp=c.mlp,
            mlp_bias=c.mlp_bias,
            norm=c.norm,
            dropout=0.0,
            attention_dropout=c.attention_dropout,
            attention_fn=attention_fn,
            causal=c.causal,
            sharding=sharding,
            dtype=dtype,
            param_dtype=param_dtype,
        )
        self.norm = make_norm(c.norm, d, eps=c.eps, spec=sharding.norm, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.head = (
            nnx.Linear(
                d,
                c.head_size,
                dtype=dtype,
                param_dtype=param_dtype,
                kernel_init=with_sharding(default_kernel_init, sharding.proj_kernel),
                bias_init=with_sharding(initializers.zeros, sharding.proj_bias),
                rngs=rngs,
            )
            if c.head_size is not None
            else None
        )

    @property
    def output_size(self) -> int:
        """The width of the pooled vector `__call__` returns."""
        return self.config.head_size or self.config.hidden_size

    def check_ids(self, input_ids: jax.Array) -> None:
        """A clear error for ids that are not `[batch, length]` integers or are longer than the position table."""
        limit = self.config.max_positions
        if input_ids.ndim != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
            raise ValueError(
                f"expected integer input_ids [batch, length], got {input_ids.dtype} of shape {tuple(input_ids.shape)}"
            )
        if input_ids.shape[1] > limit:
            raise ValueError(
                f"input_ids have {input_ids.shape[1]} tokens but this text tower has {limit} positions; "
                f"tokenize with max_length <= {limit} (model.tokenize and jimm.Tokenizer truncate to it)"
            )

    def attention_mask(self, input_ids: Int[Array, "B T"], padding: Int[Array, "B T"] | None) -> jax.Array | None:
        """`[B, 1, T, T]` True-means-attend over the keys `padding` marks as real; None: attend all. The causal
        mask (CLIP) is not in it: the blocks add it and pass `causal=True` to the attention_fn."""
        b, t = input_ids.shape
        if padding is None:
            return None
        if padding.shape != input_ids.shape:
            raise ValueError(f"attention_mask has shape {tuple(padding.shape)} but input_ids {tuple(input_ids.shape)}")
        return jnp.broadcast_to(padding.astype(bool)[:, None, None, :], (b, 1, t, t))

    def embed(self, input_ids: Int[Array, "B T"]) -> Float[Array, "B T D"]:
        self.check_ids(input_ids)
        t = input_ids.shape[1]
        input_ids = shard_input(input_ids, self.sharding.batch, "input_ids")
        tokens = take_rows(self.token_embed[...], input_ids).astype(self.dtype)
        return tokens + gathered(self.pos_embed[...])[:t].astype(self.dtype)

    def encode(self, input_ids: Int[Array, "B T"], attention_mask: Int[Array, "B T"] | None = None, **kwargs):
        """The block stack on `embed(input_ids)` (`Encoder.__call__`'s extras via `kwargs`)."""
        mask = self.attention_mask(input_ids, attention_mask)
        return self.blocks(self.embed(input_ids), mask=mask, **kwargs)

    def forward_features(
        self, input_ids: Int[Array, "B T"], attention_mask: Int[Array, "B T"] | None = None
    ) -> Float[Array, "B T D"]:
        """All tokens after the final LayerNorm (HF `last_hidden_state`)."""
        return self.norm(self.encode(input_ids, attention_mask))

    def hidden_states(
        self, input_ids: Int[Array, "B T"], attention_mask: Int[Array, "B T"] | None = None
    ) -> list[Float[Array, "B T D"]]:
        """The embeddings and every block's output, un-normalised (HF `output_hidden_states=True`)."""
        tokens = self.embed(input_ids)
        mask = self.attention_mask(input_ids, attention_mask)
        _, per_layer = self.blocks(tokens, mask=mask, return_hidden_states=True)
        return [tokens, *per_layer]

    def pool(self, features: Float[Array, "B T D"], input_ids: Int[Array, "B T"]) -> Float[Array, "B D"]:
        """The token each text is represented by, by `config.pooling` (before the head)."""
        c = self.config
        if c.pooling == "last":
            return features[:, -1]
        # jnp.argmax returns the first maximum, as torch does: padding with the EOS id is safe.
        where = input_ids if c.pooling == "argmax" else (input_ids == c.eos_token_id).astype(jnp.int32)
        index = jnp.argmax(where, axis=-1)
        return jnp.take_along_axis(features, index[:, None, None], axis=1)[:, 0]

    def project(self, pooled: Float[Array, "B D"]) -> Float[Array, "B P"]:
        """SigLIP's `head`; the identity without one."""
        if self.head is None:
            return pooled
        out = einsum("BD,DP->BP", pooled, self.head.kernel[...].astype(self.dtype))
        return out + like(self.head.bias[...], out).astype(self.dtype)

    def __call__(
        self, input_ids: Int[Array, "B T"], attention_mask: Int[Array, "B T"] | None = None
    ) -> Float[Array, "B P"]:
        """One vector per text (HF `pooler_output`)."""
        return output(self.project(self.pool(self.forward_features(input_ids, attention_mask), input_ids)))


__all__ = ["TextTower", "TextTowerConfig"]
