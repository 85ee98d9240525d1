"""The models `gpu_throughput.py` measures: one `Entry` each (jimm builder, transformers reference, FLOPs formula).

A new family (DINOv2, DINOv3, CLIP or SigLIP vision towers) is one more entry in `REGISTRY`: its config (a tiny
one for `--dry-run`), a builder of the jimm model, a builder of the transformers reference and the analytic
forward FLOPs of one image. Builders import lazily: the torch child never imports jax, the jax child never
imports torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

# --dry-run: 2 layers, width 64, 32 px (4 heads of 16, patch 8: 17 tokens), so CPU runs it in seconds.
TINY_VIT = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32, patch_size=8
)


@dataclasses.dataclass(frozen=True)
class Entry:
    """How to build, feed and count one model. Every model maps NHWC images to `[B, C]` (logits or embeddings)."""

    config: Callable[[bool], Any]  # dry_run -> the family's config
    jimm: Callable[..., Any]  # (config, *, dtype, param_dtype, attention_fn, scan_layers) -> nnx.Module
    hf: Callable[[Any], Any]  # config -> torch module, called as module(pixel_values=[B, C, H, W])
    hf_logits: Callable[[Any], Any]  # the torch module's output -> the [B, C] tensor the loss reads
    flops: Callable[[Any], float]  # config -> analytic forward FLOPs of one image (2 per multiply-add)
    image_hw: Callable[[Any], tuple[int, int]]


def vit_forward_flops(
    *, tokens: int, patches: int, patch_pixels: int, width: int, depth: int, mlp: int, classes: int
) -> float:
    """Matmul FLOPs of one image through a pre-norm ViT: patch embedding, `depth` blocks, a linear head.

    Per block: the qkv, output and two MLP projections, and the two attention products (q k^T, then p v).
    Elementwise ops (softmax, GELU, LayerNorm) are left out, as in the usual MFU convention (PaLM, Appendix B).
    """
    block = 2 * tokens * width * (3 * width + width + 2 * mlp) + 2 * 2 * tokens * tokens * width
    return 2 * patches * patch_pixels * width + depth * block + 2 * width * classes


def _vit(variant: str) -> Entry:
    def config(dry_run: bool):
        import jimm
        from jimm.models.vit.variants import config_for

        if dry_run:
            return jimm.ViTConfig(**TINY_VIT, num_labels=10)
        return config_for(variant, image_size=224, num_labels=1000)

    def build_jimm(config, *, dtype, param_dtype, attention_fn, scan_layers):
        import jimm

        return jimm.VisionTransformer(
            config=config,
            dtype=dtype,
            param_dtype=param_dtype,
            attention_fn=attention_fn,
            scan_layers=scan_layers,
            sharding=None,
        )

    def build_hf(config):
        import transformers

        hf_config = transformers.ViTConfig(**config.to_hf_dict(), attn_implementation="sdpa")
        return transformers.ViTForImageClassification(hf_config)

    def flops(c) -> float:
        (ph, pw), (gh, gw) = c.patch_hw, c.grid_hw
        return vit_forward_flops(
            tokens=c.num_tokens,
            patches=gh * gw,
            patch_pixels=ph * pw * c.num_channels,
            width=c.hidden_size,
            depth=c.num_hidden_layers,
            mlp=c.intermediate_size,
            classes=c.num_labels,
        )

    return Entry(
        config=config,
        jimm=build_jimm,
        hf=build_hf,
        hf_logits=lambda out: out.logits,
        flops=flops,
        image_hw=lambda c: c.image_hw,
    )


# Vision towers of the other families, built from one transformers config on both sides (`from_config`).
# name: (transformers config class, its fields, tiny fields for --dry-run, jimm class, transformers model class,
#        the transformers output read as the result, prefix tokens)
B16 = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32)
TOWERS: dict[str, tuple] = {
    "DINOv2-B/14": ("Dinov2Config", dict(B16, mlp_ratio=4, image_size=224, patch_size=14), dict(TINY, patch_size=8),
                    "DINOv2Model", "Dinov2Model", "pooler_output", 1),
    "DINOv3-B/16": ("DINOv3ViTConfig", dict(B16, image_size=224, patch_size=16, num_register_tokens=4),
                    dict(TINY, patch_size=8, num_register_tokens=4), "DINOv3Model", "DINOv3ViTModel",
                    "pooler_output", 5),
    "CLIP-B/16 image": ("CLIPVisionConfig", dict(B16, image_size=224, patch_size=16, projection_dim=512),
                        dict(TINY, patch_size=8, projection_dim=32), "CLIPVisionModel",
                        "CLIPVisionModelWithProjection", "image_embeds", 1),
    "SigLIP-B/16 image": ("SiglipVisionConfig", dict(B16, image_size=224, patch_size=16), dict(TINY, patch_size=8),
                          "SigLIPVisionModel", "SiglipVisionModel", "pooler_output", 0),
}  # fmt: skip


def _tower(name: str) -> Entry:
    config_class, fields, tiny, jimm_class, hf_class, output, prefix = TOWERS[name]

    def config(dry_run: bool):
        import transformers

        chosen = dict(tiny if dry_run else fields)
        if config_class == "Dinov2Config":  # DINOv2 sizes its MLP by mlp_ratio
            chosen.pop("intermediate_size")
        return getattr(transformers, config_class)(**chosen)

    def build_jimm(config, *, dtype, param_dtype, attention_fn, scan_layers):
        import jimm

        return getattr(jimm, jimm_class).from_config(
            config.to_dict(),
            dtype=dtype,
            param_dtype=param_dtype,
            attention_fn=attention_fn,
            scan_layers=scan_layers,
            sharding=None,
        )

    def build_hf(config):
        import transformers

        config._attn_implementation = "sdpa"
        return getattr(transformers, hf_class)(config)

    def flops(c) -> float:
        size, patch = c.image_size, c.patch_size
        patches = (size // patch) ** 2
        mlp = getattr(c, "intermediate_size", None) or int(c.hidden_size * c.mlp_ratio)
        return vit_forward_flops(
            tokens=patches + prefix,
            patches=patches,
            patch_pixels=patch * patch * 3,
            width=c.hidden_size,
            depth=c.num_hidden_layers,
            mlp=mlp,
            classes=0,
        )

    return Entry(
        config=config,
        jimm=build_jimm,
        hf=build_hf,
        hf_logits=lambda out: getattr(out, output),
        flops=flops,
        image_hw=lambda c: (c.image_size, c.image_size),
    )


REGISTRY: dict[str, Entry] = {
    "ViT-B/16": _vit("B/16"),
    "ViT-L/16": _vit("L/16"),
    **{name: _tower(name) for name in TOWERS},
}
