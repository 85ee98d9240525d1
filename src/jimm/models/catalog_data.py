"""The catalog's data: one `CatalogEntry` per hub checkpoint (see `catalog.py` for what each field means).

Facts come from the published hub files as quoted in public sources (hub `config.json` / `preprocessor_config.json`
pages and their copies, the transformers class defaults those minimal files rely on, open_clip's model configs);
each entry's `source` says which, and `unverified` names any field not confirmed from such a quote. The families'
shared fields are written once below; an entry adds what its `config.json` sets. `params` is transformers'
count for the entry's config and class at full depth (tests/test_catalog.py recomputes it on the meta device).
"""

from __future__ import annotations

from .catalog_entry import CatalogEntry, Preprocessing, TokenizerFacts

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
HALF = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
OPENAI = dict(mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711))
HUB = "hub config.json as quoted on huggingface.co"


def _exact(processor: str, size: int, resample: str, norm: dict) -> Preprocessing:
    return Preprocessing(
        processor=processor, size={"height": size, "width": size}, crop_size=None, resample=resample, **norm
    )


def _shortest(processor: str, edge: int, crop: int, resample: str, norm: dict) -> Preprocessing:
    return Preprocessing(processor=processor, size={"shortest_edge": edge}, crop_size=crop, resample=resample, **norm)


# -- ViT (google/vit-*): ViTConfig, ViTImageProcessor (exact resize, bilinear, mean/std 0.5, no crop) -------------

VIT = dict(model_type="vit", hidden_act="gelu", layer_norm_eps=1e-12, qkv_bias=True, num_channels=3)
VIT_SIZES = {
    "tiny": dict(hidden_size=192, intermediate_size=768, num_hidden_layers=12, num_attention_heads=3),
    "small": dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=12, num_attention_heads=6),
    "base": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
    "large": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16),
    "huge": dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16),
}
VIT_SOURCE = (
    f"{HUB} (google/vit-base-patch16-224, google/vit-huge-patch14-224-in21k: ViTModel, eps 1e-12); "
    "preprocessor_config.json: ViTImageProcessor, size = image size, resample 2, mean/std 0.5"
)


def _vit(hub_id: str, size: str, patch: int, image: int, *, in21k: bool, params: int, **extra) -> CatalogEntry:
    head = dict(architectures=["ViTModel"]) if in21k else dict(architectures=["ViTForImageClassification"])
    labels = {} if in21k else {"num_labels": 1000}
    return CatalogEntry(
        name=hub_id.split("/")[1].lower(),
        hub_id=hub_id,
        family="vit",
        config={**VIT, **head, **VIT_SIZES[size], "image_size": image, "patch_size": patch, **labels},
        preprocessing=_exact("ViTImageProcessor", image, "bilinear", HALF),
        tokenizer=None,
        params=params,
        source=VIT_SOURCE,
        **extra,
    )


# -- DeiT (facebook/deit-*): the plain ones are model_type "vit" ViTForImageClassification; distilled ones "deit" --

DEIT_SOURCE = (
    f"{HUB} (facebook/deit-base-patch16-224: model_type vit; facebook/deit-base-distilled-patch16-224: model_type "
    "deit, DeiTForImageClassificationWithTeacher); preprocessor_config.json: DeiTImageProcessor, resize 256 (bicubic), "
    "centre crop 224, ImageNet mean/std (384 px: resize 384, crop 384)"
)


def _deit(hub_id: str, size: str, image: int, *, distilled: bool, params: int) -> CatalogEntry:
    if distilled:
        kind = dict(model_type="deit", architectures=["DeiTForImageClassificationWithTeacher"], encoder_stride=16)
    else:
        kind = dict(model_type="vit", architectures=["ViTForImageClassification"])
    resize = 256 if image == 224 else image
    return CatalogEntry(
        name=hub_id.split("/")[1].lower(),
        hub_id=hub_id,
        family="deit",
        config={**VIT, **kind, **VIT_SIZES[size], "image_size": image, "patch_size": 16, "num_labels": 1000},
        preprocessing=Preprocessing(
            processor="DeiTImageProcessor",
            size={"height": resize, "width": resize},
            crop_size=image,
            resample="bicubic",
            **IMAGENET,
        ),
        tokenizer=None,
        params=params,
        source=DEIT_SOURCE,
    )


# -- DINOv2 (facebook/dinov2-*): Dinov2Config, BitImageProcessor (shortest edge 256, bicubic, crop 224) ----------

DINOV2 = dict(
    hidden_act="gelu",
    layer_norm_eps=1e-6,
    image_size=518,
    patch_size=14,
    mlp_ratio=4,
    layerscale_value=1.0,
    qkv_bias=True,
    num_channels=3,
)
DINOV2_SIZES = {
    "small": dict(hidden_size=384, num_attention_heads=6, num_hidden_layers=12, use_swiglu_ffn=False),
    "base": dict(hidden_size=768, num_attention_heads=12, num_hidden_layers=12, use_swiglu_ffn=False),
    "large": dict(hidden_size=1024, num_attention_heads=16, num_hidden_layers=24, use_swiglu_ffn=False),
    "giant": dict(hidden_size=1536, num_attention_heads=24, num_hidden_layers=40, use_swiglu_ffn=True),
}
DINOV2_SOURCE = (
    f"{HUB} (facebook/dinov2-small, facebook/dinov2-giant: use_swiglu_ffn true); preprocessor_config.json: "
    "BitImageProcessor, shortest edge 256, bicubic, centre crop 224, ImageNet mean/std"
)
DINO_PRE = _shortest("BitImageProcessor", 256, 224, "bicubic", IMAGENET)


def _dinov2(size: str, *, registers: bool = False, classifier: bool = False, params: int) -> CatalogEntry:
    if registers:
        hub_id = f"facebook/dinov2-with-registers-{size}"
        kind = dict(model_type="dinov2_with_registers", architectures=["Dinov2WithRegistersModel"])
        kind["num_register_tokens"] = 4
    elif classifier:
        hub_id = f"facebook/dinov2-{size}-imagenet1k-1-layer"
        kind = dict(model_type="dinov2", architectures=["Dinov2ForImageClassification"], num_labels=1000)
    else:
        hub_id = f"facebook/dinov2-{size}"
        kind = dict(model_type="dinov2", architectures=["Dinov2Model"])
    source = DINOV2_SOURCE + ("; registers: transformers' Dinov2WithRegistersConfig (4 registers)" if registers else "")
    return CatalogEntry(
        name=hub_id.split("/")[1].lower(),
        hub_id=hub_id,
        family="dinov2",
        config={**kind, **DINOV2, **DINOV2_SIZES[size]},
        preprocessing=DINO_PRE,
        tokenizer=None,
        params=params,
        source=source,
        unverified=("num_register_tokens",) if registers else (),
    )


# -- DINOv3 ViT (facebook/dinov3-*-pretrain-*): DINOv3ViTConfig, exact resize 224 (bilinear), ImageNet mean/std ---

DINOV3 = dict(
    model_type="dinov3_vit",
    architectures=["DINOv3ViTModel"],
    patch_size=16,
    image_size=224,
    num_channels=3,
    layer_norm_eps=1e-5,
    rope_theta=100.0,
    query_bias=True,
    key_bias=False,
    value_bias=True,
    proj_bias=True,
    mlp_bias=True,
    layerscale_value=1.0,
    num_register_tokens=4,
    pos_embed_rescale=2.0,
)
DINOV3_SIZES = {
    "vits16": dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=12, num_attention_heads=6),
    "vits16plus": dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=12, num_attention_heads=6),
    "vitb16": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
    "vitl16": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16),
    "vith16plus": dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20),
    "vit7b16": dict(hidden_size=4096, intermediate_size=8192, num_hidden_layers=40, num_attention_heads=32),
}
GATED = {"vits16plus", "vith16plus", "vit7b16"}
DINOV3_SOURCE = (
    "transformers DINOv3ViTConfig defaults (a DINOv3ViTModel config.json on huggingface.co, "
    "optimum-intel-internal-testing/tiny-random-dinov-3: "
    "key_bias false, layerscale 1.0, rope_theta 100, pos_embed_rescale 2.0, eps 1e-5); sizes from the DINOv3 "
    "release as tabled by jax-ml/bonsai dinov3 (S, S+, B, L, H+, 7B; S+/H+/7B SwiGLU: ffn ratio 6/6/3 x 2/3) and "
    "facebookresearch/dinov3 (4 registers); DINOv3ViTImageProcessorFast: 224 x 224 bilinear"
)
SAT_NORM = dict(mean=(0.430, 0.411, 0.296), std=(0.213, 0.156, 0.143))


def _dinov3(size: str, *, data: str = "lvd1689m", params: int) -> CatalogEntry:
    hub_id = f"facebook/dinov3-{size}-pretrain-{data}"
    gated = (
        dict(use_gated_mlp=True, hidden_act="silu") if size in GATED else dict(use_gated_mlp=False, hidden_act="gelu")
    )
    norm = SAT_NORM if data == "sat493m" else IMAGENET
    return CatalogEntry(
        name=hub_id.split("/")[1].lower(),
        hub_id=hub_id,
        family="dinov3",
        config={**DINOV3, **DINOV3_SIZES[size], **gated},
        preprocessing=_exact("DINOv3ViTImageProcessorFast", 224, "bilinear", norm),
        tokenizer=None,
        params=params,
        source=DINOV3_SOURCE + ("; satellite mean/std from the DINOv3 README" if data == "sat493m" else ""),
        unverified=("config.json not quoted for this size: fields from the release's size table",),
        notes="gated on the hub (accept the licence, pass token=)",
    )


# -- CLIP: CLIPConfig (OpenAI quick_gelu; LAION / open_clip conversions gelu), CLIPImageProcessor -----------------

CLIP_TOKENIZER = TokenizerFacts(
    kind="clip", max_length=77, padding="longest", pad_token="<|endoftext|>", lowercase=True
)
CLIP_TEXT = dict(model_type="clip_text_model", vocab_size=49408, max_position_embeddings=77, eos_token_id=2)


def _widths(hidden: int, mlp: int, layers: int, heads: int, **extra) -> dict:
    return dict(hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers, num_attention_heads=heads, **extra)


# size: (vision tower, text tower, projection_dim)
CLIP_SIZES = {
    "B/32": (_widths(768, 3072, 12, 12, patch_size=32), _widths(512, 2048, 12, 8), 512),
    "B/16": (_widths(768, 3072, 12, 12, patch_size=16), _widths(512, 2048, 12, 8), 512),
    "L/14": (_widths(1024, 4096, 24, 16, patch_size=14), _widths(768, 3072, 12, 12), 768),
    "H/14": (_widths(1280, 5120, 32, 16, patch_size=14), _widths(1024, 4096, 24, 16), 1024),
    "g/14": (_widths(1408, 6144, 40, 16, patch_size=14), _widths(1024, 4096, 24, 16), 1024),
    "bigG/14": (_widths(1664, 8192, 48, 16, patch_size=14), _widths(1280, 5120, 32, 20), 1280),
}
CLIP_SOURCE = {
    "openai": f"{HUB} (openai/clip-vit-*: quick_gelu, eps 1e-5, text eos_token_id 2); CLIPImageProcessor "
    "shortest edge = image size, bicubic, centre crop, OpenAI mean/std; tokenizer_config: model_max_length 77, "
    "pad <|endoftext|>",
    "laion": "open_clip_config.json on the hub repo (widths, layers, head_width -> heads, mean/std) and the HF "
    "conversions' config.json as quoted in copies (CLIPTextModelWithProjection of laion/CLIP-ViT-bigG-14: gelu, "
    "eps 1e-5, intermediate 5120, 20 heads); open_clip mlp_ratio 4.3637 x 1408 = 6144, 4.9231 x 1664 = 8192",
    "metaclip": f"{HUB} (facebook/metaclip-b32-400m: only the model types and projection_dim 512; "
    "facebook/metaclip-l14-400m: the L/14 widths), CLIP class defaults (quick_gelu) for the rest",
}


def _clip(hub_id: str, size: str, *, origin: str, image: int = 224, params: int, **extra) -> CatalogEntry:
    vision, text, projection = CLIP_SIZES[size]
    act = "quick_gelu" if origin in ("openai", "metaclip") else "gelu"
    common = dict(hidden_act=act, layer_norm_eps=1e-5)
    return CatalogEntry(
        name=hub_id.split("/")[1].lower(),
        hub_id=hub_id,
        family="clip",
        config=dict(
            model_type="clip",
            architectures=["CLIPModel"],
            projection_dim=projection,
            logit_scale_init_value=2.6592,
            vision_config={"model_type": "clip_vision_model", **vision, "image_size": image, **common},
            text_config={**CLIP_TEXT, **text, **common},
        ),
        preprocessing=_shortest("CLIPImageProcessor", image, image, "bicubic", OPENAI),
        tokenizer=CLIP_TOKENIZER,
        params=params,
        source=CLIP_SOURCE[origin],
        **extra,
    )


# -- SigLIP / SigLIP 2 fixed resolution: SiglipConfig (both model_type "siglip"), SiglipImageProcessor ----------

SIGLIP_SIZES = {
    "base": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
    "large": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16),
    "so400m": dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16),
    "giant-opt": dict(hidden_size=1536, intermediate_size=6144, num_hidden_layers=40, num_attention_heads=16),
}
SIGLIP_COMMON = dict(hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
SIGLIP_SOURCE = (
    f"{HUB} (google/siglip-so400m-patch14-384 and its SiglipVisionModel copy, google/siglip-large-patch16-384, "
    "google/siglip-base-patch16-512: minimal files over SiglipConfig defaults, gelu_pytorch_tanh, eps 1e-6, "
    "vocab 32000, 64 text positions); open_clip ViT-*-SigLIP-* configs (text context 64, 16 for so400m-224); "
    "preprocessor_config.json: SiglipImageProcessor, exact resize, bicubic, mean/std 0.5; tokenizer: "
    "SiglipTokenizer (spiece.model), pad </s>, padding max_length, lower-cased, punctuation stripped"
)
SIGLIP2_SOURCE = (
    f"{HUB} (google/siglip2-base-patch16-512: model_type siglip, text vocab_size 256000, else SiglipConfig "
    "defaults); open_clip ViT-*-SigLIP2-* configs (widths, ViT-gopt-16: vision 1536 wide, 40 layers, text "
    "so400m-wide, embed_dim 1536); preprocessor_config.json (a mirror of google/siglip2-base-patch16-512@a89f5c50): "
    "SiglipImageProcessor, exact resize, resample 2 (bilinear), mean/std 0.5; tokenizer: Gemma tokenizer.json, "
    "lower-cased, pad <pad>, max length 64"
)


def _siglip(
    hub_id: str,
    size: str,
    patch: int,
    image: int,
    *,
    version: int = 1,
    text_size: str | None = None,
    vocab: int | None = None,
    text_length: int = 64,
    params: int,
    **extra,
) -> CatalogEntry:
    text = {"model_type": "siglip_text_model", **SIGLIP_SIZES[text_size or size], **SIGLIP_COMMON}
    text["vocab_size"] = vocab or (256000 if version == 2 else 32000)
    text["max_position_embeddings"] = text_length
    if text_size is not None:  # the text head maps to the vision width (SigLIP 2 giant-opt)
        text["projection_size"] = SIGLIP_SIZES[size]["hidden_size"]
    vision = {"model_type": "siglip_vision_model", **SIGLIP_SIZES[size], **SIGLIP_COMMON}
    vision |= {"image_size": image, "patch_size": patch}
    if version == 1:
        tokenizer = TokenizerFacts(kind="siglip", max_length=text_length, padding="max_length", pad_token="</s>",
                                   lowercase=True)  # fmt: skip
    else:
        tokenizer = TokenizerFacts(
            kind="siglip2", max_length=64, padding="max_length", pad_token="<pad>", lowercase=True
        )
    return CatalogEntry(
        name=hub_id.split("/")[1].lower(),
        hub_id=hub_id,
        family="siglip" if version == 1 else "siglip2",
        config=dict(model_type="siglip", architectures=["SiglipModel"], text_config=text, vision_config=vision),
        preprocessing=_exact("SiglipImageProcessor", image, "bicubic" if version == 1 else "bilinear", HALF),
        tokenizer=tokenizer,
        params=params,
        source=SIGLIP_SOURCE if version == 1 else SIGLIP2_SOURCE,
        **extra,
    )


# -- AIMv2 vision (apple/aimv2-*): Aimv2VisionConfig, CLIPImageProcessor, OpenAI CLIP mean/std -------------------

AIMV2_SIZES = {  # patch 14, 24 layers at every scale: width, SwiGLU width, heads
    "large": dict(hidden_size=1024, intermediate_size=2816, num_attention_heads=8),
    "huge": dict(hidden_size=1536, intermediate_size=4096, num_attention_heads=12),
    "1B": dict(hidden_size=2048, intermediate_size=5632, num_attention_heads=16),
    "3B": dict(hidden_size=3072, intermediate_size=8192, num_attention_heads=24),
}
AIMV2_SOURCE = (
    "an AIMv2 config snapshot of the hub files (config.json / preprocessor_config.json fetched 2026-05-13 with "
    "their HF API parameter counts: large 224/336/448, huge 224, 1B 224, 3B 224, large native; vision-only repos: "
    "Aimv2VisionModel, learned table, no head; processor CLIPImageProcessorFast with resize, centre crop, CLIP "
    "mean/std; native: no resize, no crop); transformers' convert_aimv2_original_pytorch_to_hf.py (use_head False "
    "for every checkpoint but the LiT one, is_native for -native); the original jimm's AIMv2 docs (widths of every "
    "size at 224/336/448 and the distilled large); Apple's remote-code preprocessor_config.json (bicubic)"
)
AIMV2_SNAPSHOT = {"large-patch14-224", "large-patch14-336", "large-patch14-448", "huge-patch14-224",
                  "1B-patch14-224", "3B-patch14-224", "large-patch14-native"}  # fmt: skip


def _aimv2(size: str, image: int, *, tag: str = "", native: bool = False, params: int) -> CatalogEntry:
    repo = f"{size}-patch14-{'native' if native else image}{tag}"
    config = dict(model_type="aimv2_vision_model", architectures=["Aimv2VisionModel"], **AIMV2_SIZES[size])
    config |= dict(num_hidden_layers=24, patch_size=14, image_size=image, use_head=False, is_native=native)
    unverified = ("preprocessing size and crop (the checkpoint's own size assumed)",) if not native else ()
    if repo not in AIMV2_SNAPSHOT:
        unverified = ("config.json not quoted: widths from the original jimm's AIMv2 table", *unverified)
    return CatalogEntry(
        name=f"aimv2-{repo}".lower(),
        hub_id=f"apple/aimv2-{repo}",
        family="aimv2",
        config=config,
        preprocessing=_shortest("CLIPImageProcessor", image, image, "bicubic", OPENAI)
        if not native
        else _exact("CLIPImageProcessor", image, "bicubic", OPENAI),
        tokenizer=None,
        params=params,
        source=AIMV2_SOURCE,
        unverified=unverified,
        notes="no resize, no crop: any image whose sides are multiples of 14 (2-D sin-cos positions)" if native else "",
    )


AIMV2_LIT_SOURCE = (
    "Apple's ml-aim aim/v2/torch/models.py and aim/v2/jax/models.py, aimv2_large_lit (projection_dim 768; vision "
    "1024 wide, SwiGLU 2816, 24 blocks, 8 heads, patch 14 at 224; text 768 wide, SwiGLU 2048, 12 blocks, 6 heads, "
    "vocab 49408, eos 49407, context 77); transformers' convert_aimv2_original_pytorch_to_hf.py (use_head True for "
    "the LiT checkpoint only); transformers' Aimv2Config defaults (logit_scale_init_value 2.6592, max_logit_scale "
    "100), documented with this checkpoint"
)


def _aimv2_lit(params: int) -> CatalogEntry:
    vision = dict(model_type="aimv2_vision_model", **AIMV2_SIZES["large"], num_hidden_layers=24, patch_size=14)
    text = dict(model_type="aimv2_text_model", vocab_size=49408, hidden_size=768, intermediate_size=2048)
    text |= dict(num_hidden_layers=12, num_attention_heads=6, max_position_embeddings=77, eos_token_id=49407)
    return CatalogEntry(
        name="aimv2-large-patch14-224-lit",
        hub_id="apple/aimv2-large-patch14-224-lit",
        family="aimv2",
        config=dict(
            model_type="aimv2",
            architectures=["Aimv2Model"],
            projection_dim=768,
            logit_scale_init_value=2.6592,
            max_logit_scale=100.0,
            vision_config=dict(vision, image_size=224, use_head=True, is_native=False),
            text_config=text,
        ),
        preprocessing=_shortest("CLIPImageProcessor", 224, 224, "bicubic", OPENAI),
        tokenizer=CLIP_TOKENIZER,
        params=params,
        source=AIMV2_LIT_SOURCE,
        unverified=(
            "config.json not quoted: widths from Apple's ml-aim aimv2_large_lit, the rest transformers' defaults",
            "preprocessing size and crop (the checkpoint's own size assumed)",
            "tokenizer files not quoted: CLIP's BPE, padding and pad token assumed (Apple's vocab, EOS and context)",
        ),
    )


NOT_MULTIPLE = "image size not a multiple of the patch: transformers' patch convolution drops the last pixels"

ENTRIES: tuple[CatalogEntry, ...] = (
    # ViT: ImageNet-1k classifiers (fine-tuned from in21k) and the in21k backbones (ViTModel, pooler included)
    _vit("google/vit-base-patch16-224", "base", 16, 224, in21k=False, params=86_567_656),
    _vit("google/vit-base-patch16-384", "base", 16, 384, in21k=False, params=86_859_496),
    _vit("google/vit-base-patch32-384", "base", 32, 384, in21k=False, params=88_297_192),
    _vit("google/vit-large-patch16-224", "large", 16, 224, in21k=False, params=304_326_632),
    _vit("google/vit-large-patch16-384", "large", 16, 384, in21k=False, params=304_715_752),
    _vit("google/vit-large-patch32-384", "large", 32, 384, in21k=False, params=306_632_680),
    _vit("google/vit-base-patch16-224-in21k", "base", 16, 224, in21k=True, params=86_389_248),
    _vit("google/vit-base-patch32-224-in21k", "base", 32, 224, in21k=True, params=88_045_824),
    _vit("google/vit-large-patch16-224-in21k", "large", 16, 224, in21k=True, params=304_351_232),
    _vit("google/vit-large-patch32-224-in21k", "large", 32, 224, in21k=True, params=306_560_000),
    _vit("google/vit-huge-patch14-224-in21k", "huge", 14, 224, in21k=True, params=632_404_480),
    # AugReg (How to train your ViT) Ti/S in transformers' layout, converted from timm
    _vit(
        "WinKawaks/vit-tiny-patch16-224",
        "tiny",
        16,
        224,
        in21k=False,
        params=5_717_416,
        unverified=("layer_norm_eps (timm's models use 1e-6; the conversion may have kept ViTConfig's 1e-12)",),
    ),
    _vit(
        "WinKawaks/vit-small-patch16-224",
        "small",
        16,
        224,
        in21k=False,
        params=22_050_664,
        unverified=("layer_norm_eps (timm's models use 1e-6; the conversion may have kept ViTConfig's 1e-12)",),
    ),
    # DeiT
    _deit("facebook/deit-tiny-patch16-224", "tiny", 224, distilled=False, params=5_717_416),
    _deit("facebook/deit-small-patch16-224", "small", 224, distilled=False, params=22_050_664),
    _deit("facebook/deit-base-patch16-224", "base", 224, distilled=False, params=86_567_656),
    _deit("facebook/deit-base-patch16-384", "base", 384, distilled=False, params=86_859_496),
    _deit("facebook/deit-tiny-distilled-patch16-224", "tiny", 224, distilled=True, params=5_910_800),
    _deit("facebook/deit-small-distilled-patch16-224", "small", 224, distilled=True, params=22_436_432),
    _deit("facebook/deit-base-distilled-patch16-224", "base", 224, distilled=True, params=87_338_192),
    _deit("facebook/deit-base-distilled-patch16-384", "base", 384, distilled=True, params=87_630_032),
    # DINOv2: backbones, with registers, and the ImageNet linear classifiers
    _dinov2("small", params=22_056_576),
    _dinov2("base", params=86_580_480),
    _dinov2("large", params=304_368_640),
    _dinov2("giant", params=1_136_480_768),
    _dinov2("small", registers=True, params=22_058_112),
    _dinov2("base", registers=True, params=86_583_552),
    _dinov2("large", registers=True, params=304_372_736),
    _dinov2("giant", registers=True, params=1_136_486_912),
    _dinov2("small", classifier=True, params=22_825_576),
    _dinov2("base", classifier=True, params=88_117_480),
    _dinov2("large", classifier=True, params=306_417_640),
    _dinov2("giant", classifier=True, params=1_139_553_768),
    # DINOv3 ViT
    _dinov3("vits16", params=21_596_544),
    _dinov3("vits16plus", params=28_692_864),
    _dinov3("vitb16", params=85_660_416),
    _dinov3("vitl16", params=303_129_600),
    _dinov3("vith16plus", params=840_592_640),
    _dinov3("vit7b16", params=6_716_362_752),
    _dinov3("vitl16", data="sat493m", params=303_129_600),
    # CLIP
    _clip("openai/clip-vit-base-patch32", "B/32", origin="openai", params=151_277_313),
    _clip("openai/clip-vit-base-patch16", "B/16", origin="openai", params=149_620_737),
    _clip("openai/clip-vit-large-patch14", "L/14", origin="openai", params=427_616_513),
    _clip("openai/clip-vit-large-patch14-336", "L/14", origin="openai", image=336, params=427_944_193),
    _clip(
        "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
        "H/14",
        origin="laion",
        params=986_109_441,
        unverified=("eos_token_id",),
    ),
    _clip(
        "laion/CLIP-ViT-g-14-laion2B-s12B-b42K",
        "g/14",
        origin="laion",
        params=1_366_678_273,
        unverified=("eos_token_id",),
    ),
    _clip(
        "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k",
        "bigG/14",
        origin="laion",
        params=2_539_567_105,
        unverified=("eos_token_id",),
    ),
    _clip("facebook/metaclip-b32-400m", "B/32", origin="metaclip", params=151_277_313),
    _clip(
        "facebook/metaclip-b16-400m",
        "B/16",
        origin="metaclip",
        params=149_620_737,
        unverified=("config.json not quoted",),
    ),
    _clip("facebook/metaclip-l14-400m", "L/14", origin="metaclip", params=427_616_513),
    _clip(
        "facebook/metaclip-h14-fullcc2.5b",
        "H/14",
        origin="metaclip",
        params=986_109_441,
        unverified=("config.json not quoted: H/14 widths from open_clip ViT-H-14-quickgelu",),
    ),
    # SigLIP
    _siglip("google/siglip-base-patch16-224", "base", 16, 224, params=203_155_970),
    _siglip("google/siglip-base-patch16-256", "base", 16, 256, params=203_202_050),
    _siglip("google/siglip-base-patch16-384", "base", 16, 384, params=203_447_810),
    _siglip("google/siglip-base-patch16-512", "base", 16, 512, params=203_791_874),
    _siglip("google/siglip-large-patch16-256", "large", 16, 256, params=652_150_786),
    _siglip("google/siglip-large-patch16-384", "large", 16, 384, params=652_478_466),
    _siglip("google/siglip-so400m-patch14-224", "so400m", 14, 224, text_length=16, params=877_360_306),
    _siglip("google/siglip-so400m-patch14-384", "so400m", 14, 384, params=877_960_498, notes=NOT_MULTIPLE),
    _siglip("google/siglip-base-patch16-256-multilingual", "base", 16, 256, vocab=250000, params=370_626_050),
    # SigLIP 2, fixed resolution
    _siglip("google/siglip2-base-patch16-224", "base", 16, 224, version=2, params=375_187_970),
    _siglip("google/siglip2-base-patch16-512", "base", 16, 512, version=2, params=375_823_874),
    _siglip(
        "google/siglip2-large-patch16-256",
        "large",
        16,
        256,
        version=2,
        params=881_526_786,
    ),
    _siglip(
        "google/siglip2-large-patch16-384",
        "large",
        16,
        384,
        version=2,
        params=881_854_466,
    ),
    _siglip(
        "google/siglip2-so400m-patch14-224",
        "so400m",
        14,
        224,
        version=2,
        params=1_135_463_602,
    ),
    _siglip(
        "google/siglip2-so400m-patch14-384",
        "so400m",
        14,
        384,
        version=2,
        params=1_136_008_498,
        notes=NOT_MULTIPLE,
    ),
    _siglip(
        "google/siglip2-so400m-patch16-384",
        "so400m",
        16,
        384,
        version=2,
        params=1_136_039_602,
    ),
    _siglip(
        "google/siglip2-giant-opt-patch16-256",
        "giant-opt",
        16,
        256,
        version=2,
        text_size="so400m",
        params=1_871_393_906,
    ),
    _siglip(
        "google/siglip2-giant-opt-patch16-384",
        "giant-opt",
        16,
        384,
        version=2,
        text_size="so400m",
        params=1_871_885_426,
    ),
    # AIMv2 vision (jimm.AIMv2Model; a LiT pair's vision tower loads into it too)
    _aimv2("large", 224, params=309_197_824),
    _aimv2("large", 336, params=309_525_504),
    _aimv2("large", 448, params=309_984_256),
    _aimv2("huge", 224, params=680_851_968),
    _aimv2("huge", 336, params=681_343_488),
    _aimv2("huge", 448, params=682_031_616),
    _aimv2("1B", 224, params=1_234_958_336),
    _aimv2("1B", 336, params=1_235_613_696),
    _aimv2("1B", 448, params=1_236_531_200),
    _aimv2("3B", 224, params=2_720_658_432),
    _aimv2("3B", 336, params=2_721_641_472),
    _aimv2("3B", 448, params=2_723_017_728),
    _aimv2("large", 224, tag="-distilled", params=309_197_824),
    _aimv2("large", 336, tag="-distilled", params=309_525_504),
    _aimv2("large", 224, native=True, params=308_935_680),
    # AIMv2 LiT: the image-text pair (jimm.AIMv2)
    _aimv2_lit(params=436_680_193),
)
