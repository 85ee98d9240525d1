"""CLIP, SigLIP and SigLIP 2 (fixed resolution) against transformers at fp32, atol 1e-5: image and text features,
every layer's hidden states and `logits_per_image`, at the native size and resampled to two other sizes.

Each family's outputs come from one jitted call per input size (a compile is the expensive part on CPU), compared
entry by entry with transformers' outputs for the same inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flax import nnx
from image_text_fixtures import KINDS, PROMPTS, images, nchw, perturb, quiet_transformers, save_pair

import jimm

ATOL = 1e-5
# Two sizes besides the native one per family: a smaller square grid and a non-square one (SigLIP 2's vision tower
# is SigLIP's).
RESAMPLED = {"clip": [20, (35, 25)], "siglip": [20, (36, 24)]}


@nnx.jit
def vision_outputs(model, x):
    return {
        "image_embeds": model.encode_image(x),
        "pooled": model.encode_image(x, do_projection=False),
        "last_hidden_state": model.forward_features(x),
        "hidden_states": model.hidden_states(x),
    }


@nnx.jit
def text_and_logits(model, x, ids, mask):
    return {
        "text_embeds": model.encode_text(ids),
        "text_embeds_masked": model.encode_text(ids, mask),
        "text_last_hidden_state": model.text_model.forward_features(ids),
        "text_hidden_states": model.text_model.hidden_states(ids),
        "logits": model(x, ids),
    }


def hf_outputs(hf, x, ids=None, mask=None, interpolate=False):
    with torch.no_grad():
        vision = hf.vision_model(pixel_values=nchw(x), output_hidden_states=True, interpolate_pos_encoding=interpolate)
        out = {
            "image_embeds": hf.get_image_features(pixel_values=nchw(x), interpolate_pos_encoding=interpolate),
            "pooled": vision.pooler_output,
            "last_hidden_state": vision.last_hidden_state,
            "hidden_states": vision.hidden_states,
        }
        out["image_embeds"] = out["image_embeds"].pooler_output
        if ids is None:
            return out
        ids, mask = torch.from_numpy(ids).long(), torch.from_numpy(mask)
        text = hf.text_model(input_ids=ids, output_hidden_states=True)
        return out | {
            "text_embeds": hf.get_text_features(input_ids=ids).pooler_output,
            "text_embeds_masked": hf.get_text_features(input_ids=ids, attention_mask=mask).pooler_output,
            "text_last_hidden_state": text.last_hidden_state,
            "text_hidden_states": text.hidden_states,
            "logits": hf(pixel_values=nchw(x), input_ids=ids).logits_per_image,
        }


@pytest.fixture(scope="module", params=KINDS)
def family(request, tmp_path_factory):
    kind = request.param
    path = tmp_path_factory.mktemp(kind)
    hf = save_pair(kind, path, seed=KINDS.index(kind))
    model = jimm.from_pretrained(path)
    batch = model.tokenizer(PROMPTS, return_attention_mask=True)
    ids, mask, x = batch["input_ids"], batch["attention_mask"], images(kind)
    ours = vision_outputs(model, x) | text_and_logits(model, x, ids, mask)
    return kind, hf, model, ours, hf_outputs(hf, x, ids, mask), ids


def close(ours, theirs, what):
    if isinstance(theirs, tuple | list):
        assert len(ours) == len(theirs) == 3, what  # embeddings + 2 layers
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            close(a, b, f"{what}[{i}]")
        return
    np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), atol=ATOL, rtol=0, err_msg=what)


def test_class_tokenizer_and_padding(family):
    kind, _, model, ours, _, ids = family
    assert type(model) is (jimm.CLIP if kind == "clip" else jimm.SigLIP)
    assert model.tokenizer.family == kind
    assert ids.shape == (3, model.text_model.config.max_positions)
    assert (ids[:, -1] == model.tokenizer.pad_id).any()  # some texts are padded, the long one is truncated
    assert ours["logits"].shape == (2, 3)


@pytest.mark.parametrize("name", ["image_embeds", "pooled", "last_hidden_state", "hidden_states"])
def test_image_features(family, name):
    _, _, _, ours, theirs, _ = family
    close(ours[name], theirs[name], name)


@pytest.mark.parametrize(
    "name",
    ["text_embeds", "text_embeds_masked", "text_last_hidden_state", "text_hidden_states", "logits"],
)
def test_text_features_and_logits(family, name):
    _, _, _, ours, theirs, _ = family
    close(ours[name], theirs[name], name)


@pytest.mark.parametrize("which", [0, 1])
def test_resampled_image_features(family, which):
    """transformers' `interpolate_pos_encoding=True` (bicubic, no antialias) at two other sizes."""
    kind, hf, model, *_ = family
    if kind not in RESAMPLED:
        pytest.skip("the same vision tower as SigLIP's")
    x = images(kind, size=RESAMPLED[kind][which], seed=3)
    ours, theirs = vision_outputs(model, x), hf_outputs(hf, x, interpolate=True)
    for name in ("image_embeds", "last_hidden_state", "hidden_states"):
        close(ours[name], theirs[name], f"{name} at {x.shape[1:3]}")


def test_legacy_eos_id_2_pools_at_the_largest_id(tmp_path):
    """OpenAI hub configs say eos_token_id=2: transformers then pools at argmax(ids), not at the first id 2."""
    import transformers as T

    quiet_transformers()
    torch.manual_seed(0)
    sizes = dict(hidden_size=20, intermediate_size=13, num_hidden_layers=1, num_attention_heads=4)
    hf = perturb(T.CLIPTextModel(T.CLIPTextConfig(vocab_size=99, eos_token_id=2, max_position_embeddings=7, **sizes)))
    hf.save_pretrained(tmp_path)
    model = jimm.from_pretrained(tmp_path)
    assert type(model) is jimm.CLIPTextModel and model.text_model.config.pooling == "argmax"
    ids = np.array([[5, 2, 98, 7, 2, 1, 1], [2, 97, 3, 2, 2, 2, 2]])
    with torch.no_grad():
        pooled = hf(input_ids=torch.from_numpy(ids)).pooler_output
    close(nnx.jit(lambda m, t: m.encode_text(t, do_projection=False))(model, ids), pooled, "argmax pooling")
