"""The AIMv2 LiT pair (`jimm.AIMv2`) against a tiny random transformers `Aimv2Model`, fp32: image and text
embeddings, logits (the clamped logit scale on both sides of its range), strict loading, save -> transformers
reload, dispatch, and zero-shot on real photos with an in-process CLIP tokenizer.

Sizes: vision 20 wide (4 heads of 5, SwiGLU 13, 15 px at patch 3), text 12 wide (3 heads of 4, SwiGLU 11, 16
positions), projections to 8. transformers' text tower is causal only when given an attention mask; jimm always
is, so transformers gets one everywhere here.
"""

from __future__ import annotations

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers as T
from conftest import images, to_torch
from image_text_fixtures import quiet_transformers, tokenizer_folder
from PIL import Image
from safetensors.numpy import load_file, save_file

import jimm
from jimm.io.state import CheckpointMismatchError
from jimm.models.aimv2 import AIMv2LiTConfig

ATOL = 1e-5
VISION = dict(
    hidden_size=20,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=13,
    image_size=15,
    patch_size=3,
    use_head=True,
)
TEXT = dict(
    hidden_size=12, intermediate_size=11, num_hidden_layers=2, num_attention_heads=3, max_position_embeddings=16
)
LABELS = ["cat", "dog", "car", "coffee cup"]


@pytest.fixture(scope="module")
def lit(tmp_path_factory):
    """A saved tiny `Aimv2Model` (perturbed weights, logit scale 5 > ln 100: the clamp is live) with a CLIP tokenizer
    and processor; returns (transformers model, folder)."""
    quiet_transformers()
    path = tmp_path_factory.mktemp("aimv2-lit")
    ids = tokenizer_folder("clip", path)
    text = {**TEXT, "vocab_size": ids["vocab_size"], "eos_token_id": ids["eos_token_id"]}
    torch.manual_seed(0)
    hf = T.Aimv2Model(T.Aimv2Config(vision_config=VISION, text_config=text, projection_dim=8))
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.1 * torch.randn_like(p))
        hf.logit_scale.fill_(5.0)
    hf.eval().save_pretrained(path)
    T.CLIPImageProcessor(size={"shortest_edge": 15}, crop_size={"height": 15, "width": 15}).save_pretrained(path)
    return hf, path


def text_batch(eos: int):
    """Ids with the first EOS at different places and text (even another EOS) after it; the mask covers up to it."""
    ids = np.array([[eos - 2, 5, 9, eos, 3, eos, 4, 4], [eos - 2, 11, eos, eos, eos, eos, eos, eos]], np.int64)
    mask = np.array([[1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0, 0]], np.int64)
    return ids, mask


def features(output):
    return getattr(output, "pooler_output", output).numpy()  # transformers 5 returns the output object


def assert_pair_parity(model, hf, x, ids, mask):
    pixels, tids, tmask = to_torch(x), torch.from_numpy(ids), torch.from_numpy(mask)
    with torch.no_grad():
        ref = hf(pixel_values=pixels, input_ids=tids, attention_mask=tmask)
        image = features(hf.get_image_features(pixel_values=pixels))
        text = features(hf.get_text_features(input_ids=tids, attention_mask=tmask))
    errors = {
        "image_embeds": np.abs(np.asarray(model.encode_image(jnp.asarray(x))) - image).max(),
        "text_embeds": np.abs(np.asarray(model.encode_text(jnp.asarray(ids), jnp.asarray(mask))) - text).max(),
        # the logits are cosines times the scale (up to 100): fp32 holds them to 1e-5 of that scale
        "logits_per_image / scale": np.abs(np.asarray(model(x, ids, mask)) - ref.logits_per_image.numpy()).max()
        / float(jnp.exp(model.log_logit_scale())),
    }
    assert max(errors.values()) <= ATOL, errors
    return errors


def test_embeddings_and_logits_match_transformers(lit):
    hf, path = lit
    model = jimm.AIMv2.from_pretrained(path)
    x, (ids, mask) = images(batch=3, size=15), text_batch(hf.config.text_config.eos_token_id)
    assert_pair_parity(model, hf, x, ids, mask)
    # Without a mask jimm is still causal: the texts' embeddings do not change.
    np.testing.assert_allclose(model.encode_text(ids), model.encode_text(ids, mask), atol=1e-6, rtol=0)


@pytest.mark.parametrize("stored", [-0.5, 1.5])
def test_logit_scale_is_clamped(lit, stored):
    """Below 0 the scale is 1, within [0, ln 100] it is exp(stored); above (the fixture's 5) it is 100."""
    hf, path = lit
    model = jimm.AIMv2.from_pretrained(path)
    assert float(jnp.exp(model.log_logit_scale())) == pytest.approx(100.0)
    model.logit_scale[...] = jnp.asarray(stored, jnp.float32)
    assert float(model.log_logit_scale()) == pytest.approx(min(max(stored, 0.0), math.log(100)))
    with torch.no_grad():
        hf.logit_scale.fill_(stored)
    try:
        x, (ids, mask) = images(batch=2, size=15, seed=1), text_batch(hf.config.text_config.eos_token_id)
        assert_pair_parity(model, hf, x, ids, mask)
    finally:
        with torch.no_grad():
            hf.logit_scale.fill_(5.0)


def test_strict_loading(lit, tmp_path):
    _, path = lit
    tensors = load_file(path / "model.safetensors")
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    broken = {k: v for k, v in tensors.items() if k != "text_model.rms_norm.weight"} | {
        "extra": np.zeros(3, np.float32)
    }
    save_file(broken, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointMismatchError) as err:
        jimm.AIMv2.from_pretrained(tmp_path)
    assert "text_model.rms_norm.weight" in str(err.value) and "extra" in str(err.value)


@pytest.mark.parametrize("tower", ["vision_config", "text_config"])
def test_corrupt_depth_refused(lit, tmp_path, tower):
    _, path = lit
    config = json.loads((path / "config.json").read_text())
    config[tower]["num_hidden_layers"] = 10**9
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointMismatchError, match="layers but the checkpoint holds 2"):
        jimm.AIMv2.from_pretrained(tmp_path)


def test_a_lone_vision_tower_names_its_class(lit, tmp_path):
    hf, _ = lit
    hf.vision_model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="holds no text tower .* it loads as jimm.AIMv2Model"):
        jimm.AIMv2.from_pretrained(tmp_path)


def test_save_reloads_in_transformers(lit, tmp_path):
    hf, path = lit
    model = jimm.AIMv2.from_pretrained(path)
    model.save_pretrained(tmp_path)
    again, info = T.Aimv2Model.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info
    assert load_file(tmp_path / "model.safetensors").keys() == load_file(path / "model.safetensors").keys()
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["architectures"] == ["Aimv2Model"] and AIMv2LiTConfig.from_hf_dict(saved) == model.config
    for name, tensor in again.state_dict().items():
        np.testing.assert_array_equal(tensor.numpy(), hf.state_dict()[name].numpy(), err_msg=name)
    reloaded = jimm.from_pretrained(tmp_path)
    assert reloaded.tokenizer is not None and reloaded.preprocessor_json is not None
    x, (ids, mask) = images(batch=2, size=15), text_batch(hf.config.text_config.eos_token_id)
    np.testing.assert_array_equal(np.asarray(reloaded(x, ids, mask)), np.asarray(model(x, ids, mask)))


def test_dispatch_and_vision_tower(lit):
    """`jimm.from_pretrained` on an `aimv2` checkpoint builds the pair; `jimm.AIMv2Model` takes its vision tower."""
    _, path = lit
    assert jimm.models.registry.model_class(path) is jimm.AIMv2
    pair, vision = jimm.from_pretrained(path), jimm.AIMv2Model.from_pretrained(path)
    assert isinstance(pair, jimm.AIMv2) and isinstance(vision, jimm.AIMv2Model)
    x = images(batch=2, size=15)
    np.testing.assert_allclose(
        np.asarray(pair.vision_model(jnp.asarray(x))), np.asarray(vision.pooled(x)), atol=1e-6, rtol=0
    )


def test_zero_shot_equals_transformers(lit):
    """Real photos through the checkpoint's processor and CLIP tokenizer; transformers gets the attention mask."""
    from skimage import data
    from transformers import AutoImageProcessor, AutoTokenizer

    hf, path = lit
    model = jimm.from_pretrained(path)
    photos = [data.chelsea(), data.astronaut(), data.coffee()]
    processor, tokenizer = AutoImageProcessor.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    pixels = processor(images=[Image.fromarray(p) for p in photos], return_tensors="pt")["pixel_values"]
    text = tokenizer([f"a photo of a {label}." for label in LABELS], padding="max_length", max_length=16,
                     truncation=True, return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        expected = hf(pixel_values=pixels, **text).logits_per_image.softmax(-1).numpy()
    probs = model.zero_shot(photos, LABELS, batch_size=2)
    assert probs.shape == (3, 4) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, expected, atol=ATOL, rtol=0)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)


def test_config_round_trip_and_checks(lit):
    hf, _ = lit
    config = AIMv2LiTConfig.from_hf_dict(hf.config.to_dict())
    assert config.projection_dim == 8 and config.text_config.eos_token_id == hf.config.text_config.eos_token_id
    assert AIMv2LiTConfig.from_hf_dict(config.to_hf_dict()) == config
    with pytest.raises(ValueError, match="use_head"):
        AIMv2LiTConfig(vision_config=config.vision_config.replace(use_head=False))
    with pytest.raises(ValueError, match="eos_token_id must be one int"):
        AIMv2LiTConfig.from_hf_dict({**config.to_hf_dict(), "text_config": {"eos_token_id": [1, 2]}})
