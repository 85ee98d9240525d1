"""ViT variants (pooling, registers, class token, LayerScale, qk-norm, no_embed_class, DeiT, drop path) and the
named-size table, against a hand-written reference forward (tests/timm_reference.py) and transformers' DeiT."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import TINY, images, to_torch
from flax import nnx
from timm_reference import timm_forward
from variant_helpers import hf_tensors, randomize

from jimm import VisionTransformer, ViTConfig
from jimm.common.transformer import DropPath
from jimm.models.vit.formats import timm, to_foreign
from jimm.models.vit.variants import SIZES, config_for

BASE = dict(TINY, layer_norm_eps=1e-6)
VARIANTS = {
    "plain": dict(),
    "registers": dict(num_register_tokens=2),
    "registers_no_embed_class": dict(num_register_tokens=2, no_embed_class=True),
    "avg_fc_norm_no_cls": dict(class_token=False, global_pool="avg", fc_norm=True),
    "avg_with_norm": dict(global_pool="avg"),
    "map": dict(class_token=False, global_pool="map", no_embed_class=True),
    "map_with_cls_and_registers": dict(global_pool="map", num_register_tokens=1),
    "layer_scale": dict(layer_scale_init_value=0.1),
    "qk_norm": dict(qk_norm=True),
    "distilled": dict(distilled=True),
    "everything": dict(
        num_register_tokens=3, global_pool="avg", fc_norm=True, layer_scale_init_value=1e-5, qk_norm=True
    ),
}


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("size", [33, (27, 42)])
def test_variant_equals_reference(name, size):
    config = ViTConfig(**{**BASE, **VARIANTS[name]})
    model = randomize(VisionTransformer.from_config(config), seed=len(name))
    state = to_foreign(timm.rules(config, with_head=True), hf_tensors(model))
    x = images(size=size, seed=1)
    np.testing.assert_allclose(np.asarray(model(x)), timm_forward(state, config, x), atol=1e-5)
    pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    np.testing.assert_allclose(np.asarray(pooled), timm_forward(state, config, x, pre_logits=True), atol=1e-5)


def test_token_counts_and_parameter_shapes():
    c = ViTConfig(**{**BASE, "num_register_tokens": 4, "distilled": True, "no_embed_class": True})
    model = VisionTransformer.from_config(c)
    assert c.num_prefix_tokens == 6 and c.num_tokens == 121 + 6 and c.num_pos_embed == 121
    assert model.encoder.reg_token.shape == (1, 4, 15) and model.encoder.pos_embed.shape == (1, 121, 15)
    assert model.forward_features(images()).shape == (2, 127, 15)


def test_distilled_equals_transformers_deit(tmp_path):
    from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher

    torch.manual_seed(0)
    hf = DeiTForImageClassificationWithTeacher(DeiTConfig(**TINY)).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(tmp_path)
    model = VisionTransformer.from_pretrained(tmp_path)
    assert model.config.distilled
    x = images(size=(24, 39), seed=2)
    with torch.no_grad():
        ref = hf(to_torch(x), interpolate_pos_encoding=True).logits.numpy()
    np.testing.assert_allclose(np.asarray(model(x)), ref, atol=1e-5)
    # and it saves back in DeiT's own format, which transformers reads with no missing keys
    model.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["model_type"] == "deit"
    back, info = DeiTForImageClassificationWithTeacher.from_pretrained(tmp_path / "again", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        np.testing.assert_allclose(
            back.eval()(to_torch(x), interpolate_pos_encoding=True).logits.numpy(), ref, atol=1e-6
        )


def test_plain_config_json_has_no_variant_fields_and_variants_round_trip(tmp_path):
    plain = ViTConfig(**TINY).to_hf_dict()
    for field in ("class_token", "num_register_tokens", "global_pool", "fc_norm", "qk_norm", "drop_path_rate"):
        assert field not in plain
    config = ViTConfig(**{**BASE, **VARIANTS["everything"]})
    model = randomize(VisionTransformer.from_config(config), seed=3)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["num_register_tokens"] == 3 and saved["global_pool"] == "avg" and "class_token" not in saved
    again = VisionTransformer.from_pretrained(tmp_path)
    assert again.config == config
    x = images(seed=4)
    np.testing.assert_array_equal(np.asarray(again(x)), np.asarray(model(x)))


def test_bad_variant_configs_are_clear_errors():
    with pytest.raises(ValueError, match="global_pool='token' needs class_token=True"):
        ViTConfig(**TINY, class_token=False)
    with pytest.raises(
        ValueError, match=r"global_pool='max' is not supported; choose one of \('token', 'avg', 'map'\)"
    ):
        ViTConfig(**TINY, global_pool="max")
    with pytest.raises(ValueError, match="distilled=True needs"):
        ViTConfig(**TINY, distilled=True, global_pool="avg")


def test_variant_table_builds_named_sizes():
    c = config_for("S/16")
    assert (c.hidden_size, c.num_hidden_layers, c.intermediate_size, c.num_attention_heads, c.patch_size) == (
        384, 12, 1536, 6, 16,
    )  # fmt: skip
    assert (
        config_for("L/14").patch_size == 14 and config_for("g").hidden_size == 1408 and config_for("B").patch_size == 16
    )
    assert list(SIZES) == ["Ti", "S", "M", "B", "L", "H", "g", "G"]
    model = VisionTransformer.from_variant("Ti/16", image_size=32, num_labels=3, global_pool="avg", fc_norm=True)
    assert model.config.hidden_size == 192 and model(jnp.zeros((1, 32, 32, 3))).shape == (1, 3)
    with pytest.raises(ValueError, match=r"unknown ViT variant 'X/16': choose a size from \['Ti', 'S', 'M', 'B'"):
        config_for("X/16")
    with pytest.raises(ValueError, match="invalid patch size"):
        config_for("B/x")
    with pytest.raises(ValueError, match="fixes"):
        config_for("B/16", hidden_size=10)


def test_drop_path_is_identity_in_eval_and_stochastic_in_train():
    config = ViTConfig(**{**BASE, "drop_path_rate": 0.5, "num_hidden_layers": 3})
    model = randomize(VisionTransformer.from_config(config, rngs=nnx.Rngs(params=0, dropout=1)), seed=5)
    rates = np.asarray(model.encoder.blocks.drop_path_rates)
    np.testing.assert_allclose(rates, [0.0, 0.25, 0.5])  # timm's linear schedule
    plain = VisionTransformer.from_config(ViTConfig(**{**BASE, "num_hidden_layers": 3}))
    nnx.update(plain, nnx.state(model, nnx.Param))
    x = images(batch=8, seed=6)
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(plain(x)))  # eval: exactly the plain model
    model.train()
    a, b = np.asarray(model(x)), np.asarray(model(x))
    assert not np.allclose(a, b)  # fresh masks each call
    model.eval()
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(plain(x)))


def test_drop_path_schedule_in_the_unscanned_layout():
    config = ViTConfig(**{**BASE, "drop_path_rate": 0.5, "num_hidden_layers": 3})
    model = VisionTransformer.from_config(config, scan_layers=False)
    np.testing.assert_allclose(model.encoder.blocks.drop_path_rates, [0.0, 0.25, 0.5])
    model.train()
    x = images(batch=8, seed=6)
    assert not np.allclose(np.asarray(model(x)), np.asarray(model(x)))  # the schedule reaches the loop too


def test_drop_path_drops_whole_samples_and_keeps_the_mean():
    layer = DropPath(0.25, rngs=nnx.Rngs(dropout=0))
    layer.deterministic = False
    x = jnp.ones((4000, 3, 2))
    y = np.asarray(layer(x))
    per_sample = y.reshape(4000, -1)
    kept = np.isclose(per_sample, 1 / 0.75, atol=1e-6)
    assert (kept | (per_sample == 0)).all()  # each value is dropped or scaled by 1/keep
    assert (per_sample.min(axis=1) == per_sample.max(axis=1)).all()
    assert abs(y.mean() - 1.0) < 0.05 and abs((per_sample[:, 0] == 0).mean() - 0.25) < 0.03


def test_drop_path_gradients_flow_in_train_mode():
    config = ViTConfig(**{**BASE, "drop_path_rate": 0.3})
    model = VisionTransformer.from_config(config, rngs=nnx.Rngs(params=0, dropout=1))
    model.train()

    def loss(m):
        return jnp.mean(m(images(seed=7)) ** 2)

    grads = nnx.grad(loss)(model)
    leaves = jax.tree.leaves(nnx.state(grads, nnx.Param))
    assert all(np.isfinite(np.asarray(g)).all() for g in leaves)


def test_drop_path_schedule_survives_save_and_load(tmp_path):
    config = ViTConfig(**{**BASE, "drop_path_rate": 0.2, "num_hidden_layers": 3})
    model = randomize(VisionTransformer.from_config(config), seed=8)
    model.save_pretrained(tmp_path)
    loaded = VisionTransformer.from_pretrained(tmp_path)
    np.testing.assert_allclose(loaded.encoder.blocks.drop_path_rates, [0.0, 0.1, 0.2])
    x = images(seed=9)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
