"""Issue 16's fixes against transformers at fp32: image sizes that are not a multiple of the patch (every family,
in the config and at call time, plus google/siglip-so400m-patch14-384 at its real widths with 2 layers).

transformers' patch conv is VALID: it reads the whole patches and drops the pixels after the last one (384 px at
patch 14: a 27 x 27 grid, 6 pixels dropped). Its `interpolate_pos_encoding=True` then resamples to that grid
(`height // patch`), which jimm does on every call; an image smaller than one patch is refused by both.
"""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers as T
from conftest import hf_model, images, to_torch
from flax import nnx
from image_text_fixtures import CLIP_VISION, SIGLIP_VISION, perturb, quiet_transformers

import jimm

ATOL = 1e-5


def perturbed(model, seed: int = 0):
    """Every parameter moved off its init (tokens, LayerScale, norms), in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def build_vit():
    return hf_model(seed=5, image_size=35)  # patch 3: an 11 x 11 grid, 2 pixels dropped


def build_dinov2():
    config = T.Dinov2Config(hidden_size=15, num_hidden_layers=2, num_attention_heads=3, mlp_ratio=3, image_size=23,
                            patch_size=3)  # fmt: skip
    return perturbed(T.Dinov2Model(config))


def build_dinov2_registers():
    config = T.Dinov2WithRegistersConfig(hidden_size=15, num_hidden_layers=2, num_attention_heads=3, mlp_ratio=3,
                                         image_size=23, patch_size=3, num_register_tokens=2)  # fmt: skip
    return perturbed(T.Dinov2WithRegistersModel(config))


def build_dinov3():
    config = T.DINOv3ViTConfig(hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=37,
                               image_size=17, patch_size=3, num_register_tokens=2)  # fmt: skip
    return perturbed(T.DINOv3ViTModel(config))


def build_clip():
    vision = {k: v for k, v in CLIP_VISION.items() if k != "projection_dim"}
    return perturb(T.CLIPVisionModel(T.CLIPVisionConfig(**{**vision, "image_size": 32})), 1)  # 6 x 6 patches of 5


def build_siglip():
    return perturb(T.SiglipVisionModel(T.SiglipVisionConfig(**{**SIGLIP_VISION, "image_size": 30})), 2)  # 7 x 7 of 4


# family: (builder, the native size, call-time sizes that are not multiples of the patch, HF class kwargs)
FAMILIES = {
    "vit": (build_vit, 35, [(26, 37), (36, 34)]),
    "dinov2": (build_dinov2, 23, [(16, 29), (25, 25)]),
    "dinov2_registers": (build_dinov2_registers, 23, [(17, 28)]),
    "dinov3": (build_dinov3, 17, [(10, 23)]),
    "clip": (build_clip, 32, [(23, 34)]),
    "siglip": (build_siglip, 30, [(30, 31), (21, 38)]),  # (30, 31): the same 7 x 7 grid, not square
}


def pooled_of(model, x):
    return model.encode_image(x, do_projection=False) if hasattr(model, "encode_image") else model(x)


run = nnx.jit(lambda model, xs: [(model.forward_features(x), pooled_of(model, x)) for x in xs])


def reference(hf, x: np.ndarray, native: bool):
    """transformers' `(last_hidden_state, pooled output or logits)`; other sizes through `interpolate_pos_encoding`."""
    kwargs = (
        {}
        if native or isinstance(hf, T.Dinov2PreTrainedModel | T.Dinov2WithRegistersPreTrainedModel)
        else {"interpolate_pos_encoding": True}
    )
    if isinstance(hf, T.DINOv3ViTModel):
        kwargs = {}  # RoPE: any grid, no flag
    with torch.no_grad():
        if isinstance(hf, T.ViTForImageClassification):
            out = hf(to_torch(x), output_hidden_states=True, **kwargs)
            return hf.vit.layernorm(out.hidden_states[-1]).numpy(), out.logits.numpy()
        out = hf(to_torch(x), **kwargs)
        return out.last_hidden_state.numpy(), out.pooler_output.numpy()


@pytest.mark.parametrize("name", FAMILIES)
def test_image_sizes_not_a_multiple_of_the_patch_equal_transformers(tmp_path, name):
    quiet_transformers()
    builder, native, others = FAMILIES[name]
    torch.manual_seed(0)
    hf = builder()
    hf.save_pretrained(tmp_path)
    model = jimm.from_pretrained(tmp_path)
    patch = model.vision_tower.config.patch_size[0]
    assert model.vision_tower.config.grid_hw == (native // patch,) * 2 and native % patch
    sizes = [(native, native), *others]
    xs = [images(batch=2, size=size, seed=i) for i, size in enumerate(sizes)]
    for size, x, (features, pooled) in zip(sizes, xs, run(model, [jnp.asarray(x) for x in xs]), strict=True):
        ref_features, ref_pooled = reference(hf, x, native=size == (native, native))
        grid = (size[0] // patch) * (size[1] // patch)
        assert features.shape[1] == grid + model.vision_tower.config.num_prefix_tokens, size
        np.testing.assert_allclose(np.asarray(features), ref_features, atol=ATOL, rtol=0, err_msg=f"{name} {size}")
        np.testing.assert_allclose(np.asarray(pooled), ref_pooled, atol=ATOL, rtol=0, err_msg=f"{name} {size}")


def test_less_than_one_patch_is_refused_like_transformers():
    model = jimm.VisionTransformer(
        num_classes=3, img_size=14, patch_size=4, num_layers=1, num_heads=2, mlp_dim=8, hidden_size=8
    )
    assert model.config.grid_hw == (3, 3) and model.encoder.pos_embed.shape == (1, 10, 8)
    with pytest.raises(ValueError, match=r"image size 3x12 is smaller than one patch \(4x4\)"):
        model(jnp.zeros((1, 3, 12, 3)))
    with pytest.raises(RuntimeError):  # transformers' conv refuses it too
        hf_model(image_size=12, patch_size=4)(torch.zeros(1, 3, 3, 12), interpolate_pos_encoding=True)
    with pytest.raises(ValueError, match=r"image height 3 is smaller than one patch \(height 4\)"):
        jimm.VisionTransformer(img_size=(3, 8), patch_size=4, num_layers=1, num_heads=2, mlp_dim=8, hidden_size=8)
    with pytest.raises(ValueError, match=r"image h 10 is smaller than one patch \(14\)"):
        jimm.SigLIPVisionModel.from_config(T.SiglipVisionConfig(image_size=10, patch_size=14).to_dict())


SO400M = dict(hidden_size=1152, num_attention_heads=16, intermediate_size=4304, image_size=384, patch_size=14,
              num_hidden_layers=2)  # fmt: skip


def test_siglip_so400m_patch14_384_at_real_widths(tmp_path):
    """google/siglip-so400m-patch14-384 (PaliGemma's vision tower) with 2 of its 27 layers: 27 x 27 patches."""
    quiet_transformers()
    torch.manual_seed(0)
    hf = perturb(T.SiglipVisionModel(T.SiglipVisionConfig(**SO400M)), 3)
    hf.save_pretrained(tmp_path)
    model = jimm.from_pretrained(tmp_path)
    assert isinstance(model, jimm.SigLIPVisionModel)
    assert model.vision_tower.config.grid_hw == (27, 27) and model.vision_tower.config.num_tokens == 729
    x = images(batch=1, size=384, seed=7)
    features, pooled = run(model, [jnp.asarray(x)])[0]
    with torch.no_grad():
        ref = hf(to_torch(x))
    assert ref.last_hidden_state.shape[1] == 729
    np.testing.assert_allclose(np.asarray(features), ref.last_hidden_state.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.asarray(pooled), ref.pooler_output.numpy(), atol=ATOL, rtol=0)


# -- a checkpoint without the tensors only masked-image training reads ----------------------------------------------


def build_dinov2_classifier():
    config = T.Dinov2Config(hidden_size=15, num_hidden_layers=1, num_attention_heads=3, mlp_ratio=3, image_size=21,
                            patch_size=3, num_labels=4)  # fmt: skip
    return perturbed(T.Dinov2ForImageClassification(config))


MASKLESS = {  # name: (builder, the mask token's name in the checkpoint, the HF class that reloads it)
    "dinov2": (build_dinov2, "embeddings.mask_token", T.Dinov2Model),
    "dinov2_classifier": (build_dinov2_classifier, "dinov2.embeddings.mask_token", T.Dinov2ForImageClassification),
    "dinov3": (build_dinov3, "embeddings.mask_token", T.DINOv3ViTModel),
}


def drop_tensors(folder, *names):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    for name in names:
        del tensors[name]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize("name", MASKLESS)
def test_a_checkpoint_without_its_mask_token_loads_with_one_warning(tmp_path, caplog, name):
    from jimm.io.state import CheckpointMismatchError

    quiet_transformers()
    builder, mask, hf_class = MASKLESS[name]
    torch.manual_seed(0)
    hf = builder()
    assert hf.state_dict()[mask].abs().sum() > 0  # perturbed: a loader that kept it would not give zeros
    hf.save_pretrained(tmp_path)
    drop_tensors(tmp_path, mask)
    reloaded = hf_class.from_pretrained(tmp_path).eval()  # transformers loads it too, with its init for the token
    with caplog.at_level("WARNING", logger="jimm"):
        model = jimm.from_pretrained(tmp_path, param_dtype=jnp.float32)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and mask in warnings[0] and "masked-image" in warnings[0], warnings
    theirs = reloaded.state_dict()[mask].numpy()
    np.testing.assert_array_equal(np.asarray(model.encoder.mask_token[...]).reshape(theirs.shape), theirs)
    assert not theirs.any()  # transformers' init: zeros
    x = images(batch=2, size=hf.config.image_size, seed=3)
    with torch.no_grad():
        ref = reloaded(to_torch(x))
    expected = ref.logits if model.do_classification else ref.pooler_output
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(x))), expected.numpy(), atol=ATOL, rtol=0)
    bf16 = jimm.from_pretrained(tmp_path, param_dtype=jnp.bfloat16)
    assert bf16.encoder.mask_token.dtype == jnp.bfloat16  # the fresh token takes the model's param_dtype
    # any other missing tensor stays a strict error, and the mask token is not among the problems
    norm = next(n for n in hf.state_dict() if re.fullmatch(r"(dinov2\.)?(layernorm|norm)\.weight", n))  # the final one
    drop_tensors(tmp_path, norm)
    caplog.clear()
    with pytest.raises(CheckpointMismatchError, match=rf"1 missing tensor\(s\):\n    {norm}$"):
        jimm.from_pretrained(tmp_path)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]  # the error alone, no warning before it


# -- transformers' ViTModel: its pooler, honoured from `architectures` -----------------------------------------------


def params_count(model) -> int:
    return sum(int(np.prod(v.shape)) for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))


def torch_count(cls, config) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in cls(config).parameters())


VIT_H_IN21K = dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, intermediate_size=5120,
                   image_size=224, patch_size=14, architectures=["ViTModel"])  # fmt: skip


def test_vitmodel_configs_build_the_pooler_and_count_as_transformers():
    """google/vit-huge-patch14-224-in21k's config: the pooler and no classifier (today's 2-class head is gone)."""
    config = T.ViTConfig(**VIT_H_IN21K)
    model = nnx.eval_shape(lambda: jimm.VisionTransformer.from_config(config.to_dict(), sharding=None))
    assert not model.do_classification and not hasattr(model, "classifier")
    assert model.pooler.kernel.shape == (1280, 1280)
    assert params_count(model) == torch_count(T.ViTModel, config) == 632_404_480
    classifier = T.ViTConfig(**{**VIT_H_IN21K, "architectures": ["ViTForImageClassification"], "num_labels": 21843})
    for explicit in ({}, {"do_classification": True}):  # a classifier config, or ViTModel's asked for a classifier
        hf_config = (classifier if not explicit else config).to_dict()
        built = nnx.eval_shape(lambda c=hf_config, e=explicit: jimm.VisionTransformer.from_config(c, **e))
        assert built.do_classification and built.pooler is None
        assert params_count(built) == torch_count(T.ViTForImageClassification, T.ViTConfig(**hf_config))
    # the original jimm constructor: a classifier by default, features (no pooler) with do_classification=False
    small = dict(img_size=12, patch_size=4, num_layers=1, num_heads=2, mlp_dim=8, hidden_size=8)
    assert nnx.eval_shape(lambda: jimm.VisionTransformer(num_classes=3, **small)).classifier.kernel.shape == (8, 3)
    headless = nnx.eval_shape(lambda: jimm.VisionTransformer(do_classification=False, **small))
    assert headless.pooler is None and not hasattr(headless, "classifier")


def check_vitmodel(hf, folder, x, atol=ATOL):
    """jimm's outputs of a transformers ViTModel / DeiTModel checkpoint, and its save reloading in transformers."""
    hf.save_pretrained(folder / "hf")
    model = jimm.from_pretrained(folder / "hf")
    assert isinstance(model, jimm.VisionTransformer) and not model.do_classification and model.pooler is not None
    with torch.no_grad():
        ref = hf(to_torch(x))
    features, pooled = run(model, [jnp.asarray(x)])[0]
    np.testing.assert_allclose(np.asarray(features), ref.last_hidden_state.numpy(), atol=atol, rtol=0)
    np.testing.assert_allclose(np.asarray(pooled), ref.pooler_output.numpy(), atol=atol, rtol=0)
    if not model.config.distilled:  # pre-logits: the class token before the pooler (DeiT: the class-distil mean)
        cls_token = model.forward_head(features, pre_logits=True)
        np.testing.assert_allclose(np.asarray(cls_token), ref.last_hidden_state[:, 0].numpy(), atol=atol, rtol=0)
    model.save_pretrained(folder / "ours")
    reloaded, info = type(hf).from_pretrained(folder / "ours", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert reloaded.config.architectures == hf.config.architectures
    for name, tensor in hf.state_dict().items():
        np.testing.assert_array_equal(reloaded.state_dict()[name].numpy(), tensor.numpy(), err_msg=name)
    return model


@pytest.mark.parametrize(
    "cls,fields",
    [
        (T.ViTModel, {}),
        (T.ViTModel, {"pooler_output_size": 11, "pooler_act": "relu"}),
        (T.DeiTModel, {}),
    ],
)
def test_vitmodel_checkpoints_give_transformers_pooler_output(tmp_path, cls, fields):
    quiet_transformers()
    torch.manual_seed(1)
    config_cls = T.DeiTConfig if cls is T.DeiTModel else T.ViTConfig
    tiny = dict(hidden_size=15, num_hidden_layers=2, num_attention_heads=3, intermediate_size=7, image_size=33,
                patch_size=3)  # fmt: skip
    hf = perturbed(cls(config_cls(**tiny, **fields)))
    model = check_vitmodel(hf, tmp_path, images(batch=2, size=33, seed=2))
    assert model.pooler.kernel.shape == (15, fields.get("pooler_output_size", 15))
    # a new classifier on it (fine-tuning an in21k backbone): transformers' ViTForImageClassification, no pooler
    tuned = jimm.VisionTransformer.from_pretrained(tmp_path / "hf", num_classes=3)
    assert tuned.do_classification and tuned.pooler is None and not tuned.config.add_pooling_layer


def test_vit_huge_in21k_at_real_widths(tmp_path):
    """google/vit-huge-patch14-224-in21k with 2 of its 32 layers: features and pooler_output, saved and reloaded."""
    quiet_transformers()
    torch.manual_seed(2)
    hf = perturb(T.ViTModel(T.ViTConfig(**{**VIT_H_IN21K, "num_hidden_layers": 2})), 4)
    check_vitmodel(hf, tmp_path, images(batch=1, size=224, seed=5))


def test_vit_config_round_trips_with_the_pooler_fields():
    for fields in (VIT_H_IN21K, {**VIT_H_IN21K, "architectures": ["ViTForImageClassification"], "pooler_act": "relu"}):
        config = jimm.ViTConfig.from_hf_dict(T.ViTConfig(**fields).to_dict())
        assert config.add_pooling_layer == (fields["architectures"] == ["ViTModel"])
        architecture = fields["architectures"][0]
        assert jimm.ViTConfig.from_hf_dict(config.to_hf_dict(architecture=architecture)) == config
