"""forward_features / forward_head / forward_intermediates against transformers' hidden states (timm's semantics)."""

import jax
import numpy as np
import pytest
import torch
from conftest import hf_model, images, to_torch

from jimm import VisionTransformer, ViTConfig
from jimm.common.vision import take_indices


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    hf = hf_model(seed=5, num_hidden_layers=4)
    path = tmp_path_factory.mktemp("vit4")
    hf.save_pretrained(path)
    return hf, VisionTransformer.from_pretrained(path)


def reference(hf, x):
    with torch.no_grad():
        out = hf(to_torch(x), interpolate_pos_encoding=True, output_hidden_states=True)
    return out, [h.numpy() for h in out.hidden_states]


@pytest.mark.parametrize("size", [33, (21, 36)])
@pytest.mark.parametrize("indices", [None, 2, [0, 2], [-1], (1, -3)])
def test_intermediates_equal_hf_hidden_states(pair, size, indices):
    hf, model = pair
    x = images(size=size, seed=1)
    _, hidden = reference(hf, x)
    gh, gw = (size // 3, size // 3) if isinstance(size, int) else (size[0] // 3, size[1] // 3)
    final, maps = model.forward_intermediates(x, indices)
    taken = take_indices(4, indices)
    assert len(maps) == len(taken)
    for i, y in zip(taken, maps, strict=True):
        assert y.shape == (2, gh, gw, 15)
        np.testing.assert_allclose(np.asarray(y), hidden[i + 1][:, 1:].reshape(2, gh, gw, 15), atol=1e-5)
    tokens = model.forward_intermediates(x, indices, output_fmt="NLC", intermediates_only=True)
    for i, y in zip(taken, tokens, strict=True):
        np.testing.assert_allclose(np.asarray(y), hidden[i + 1][:, 1:], atol=1e-5)
    with torch.no_grad():
        normed = hf.vit.layernorm(torch.from_numpy(hidden[max(taken) + 1])).numpy()
    np.testing.assert_allclose(np.asarray(final), normed, atol=1e-5)


def test_norm_prefix_tokens_and_no_stop_early(pair):
    hf, model = pair
    x = images(seed=2)
    out, hidden = reference(hf, x)
    maps = model.forward_intermediates(x, [1], norm=True, intermediates_only=True, return_prefix_tokens=True)
    ((spatial, prefix),) = maps
    with torch.no_grad():
        normed = hf.vit.layernorm(torch.from_numpy(hidden[2])).numpy()
    np.testing.assert_allclose(np.asarray(spatial), normed[:, 1:].reshape(2, 11, 11, 15), atol=1e-5)
    np.testing.assert_allclose(np.asarray(prefix), normed[:, :1], atol=1e-5)
    final, _ = model.forward_intermediates(x, [0], stop_early=False)
    np.testing.assert_allclose(np.asarray(final), out.hidden_states[-1].shape and np.asarray(model.forward_features(x)))
    with torch.no_grad():
        np.testing.assert_allclose(np.asarray(final), hf.vit.layernorm(out.hidden_states[-1]).numpy(), atol=1e-5)


def test_forward_features_and_head(pair):
    hf, model = pair
    x = images(size=(18, 30), seed=3)
    out, _hidden = reference(hf, x)
    features = model.forward_features(x)
    with torch.no_grad():
        np.testing.assert_allclose(np.asarray(features), hf.vit.layernorm(out.hidden_states[-1]).numpy(), atol=1e-5)
    np.testing.assert_allclose(np.asarray(model.forward_head(features)), out.logits.numpy(), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(model.forward_head(features, pre_logits=True)), np.asarray(features[:, 0]))


def scan_lengths(model, call, x):
    """The trip counts of every scan in the traced `call(model, x)` (nested jaxprs included)."""
    from flax import nnx

    graphdef, state = nnx.split(model)
    lengths = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "scan":
                lengths.append(eqn.params["length"])
            for value in eqn.params.values():
                for sub in value if isinstance(value, list | tuple) else [value]:
                    if hasattr(sub, "jaxpr"):
                        walk(sub.jaxpr if hasattr(sub.jaxpr, "eqns") else sub.jaxpr.jaxpr)

    walk(jax.make_jaxpr(lambda s, v: call(nnx.merge(graphdef, s), v))(state, x).jaxpr)
    return lengths


def test_stop_early_runs_only_the_needed_blocks(pair):
    _, model = pair
    x = images(seed=4)
    assert scan_lengths(model, lambda m, v: m.forward_intermediates(v, [1], intermediates_only=True), x) == [2]
    assert scan_lengths(model, lambda m, v: m.forward_intermediates(v, [0], stop_early=False), x) == [4]
    assert scan_lengths(model, lambda m, v: m.forward_intermediates(v, 1), x) == [4]  # the last block is needed


def test_intermediates_of_a_variant_drop_every_prefix_token():
    config = ViTConfig(hidden_size=15, num_hidden_layers=2, num_attention_heads=3, intermediate_size=7, image_size=33,
                       patch_size=3, num_labels=5, num_register_tokens=2, distilled=True)  # fmt: skip
    model = VisionTransformer.from_config(config)
    x = images(size=(12, 18))
    ((y, prefix),) = model.forward_intermediates(x, [-1], intermediates_only=True, return_prefix_tokens=True)
    assert y.shape == (2, 4, 6, 15) and prefix.shape == (2, 4, 15)
    features = model.forward_features(x)  # no final norm difference: compare un-normed last block via hidden_states
    last = model.encoder.hidden_states(x)[-1]
    np.testing.assert_array_equal(np.asarray(y).reshape(2, 24, 15), np.asarray(last[:, 4:]))
    assert features.shape == (2, 28, 15)


def test_bad_indices_and_formats_are_clear_errors(pair):
    _, model = pair
    x = images()
    with pytest.raises(ValueError, match=r"block index 4 is out of range: this model has blocks 0..3"):
        model.forward_intermediates(x, [4])
    with pytest.raises(ValueError, match=r"block index -5 is out of range"):
        model.forward_intermediates(x, [-5])
    with pytest.raises(ValueError, match=r"indices=5 asks for the last 5 blocks; choose 1..4"):
        model.forward_intermediates(x, 5)
    with pytest.raises(ValueError, match=r"indices=0"):
        model.forward_intermediates(x, 0)
    with pytest.raises(ValueError, match="output_fmt='NCHW' is not supported"):
        model.forward_intermediates(x, output_fmt="NCHW")


def test_stop_early_in_train_mode_advances_the_dropout_rngs():
    from flax import nnx

    config = ViTConfig(hidden_size=15, num_hidden_layers=3, num_attention_heads=3, intermediate_size=7, image_size=12,
                       patch_size=3, num_labels=5, drop_path_rate=0.5)  # fmt: skip
    model = VisionTransformer.from_config(config, rngs=nnx.Rngs(params=0, dropout=1))
    model.train()
    x = images(batch=8, size=12)
    run = nnx.jit(lambda m, v: m.forward_intermediates(v, [1], intermediates_only=True)[0])
    a, b = np.asarray(run(model, x)), np.asarray(run(model, x))
    assert not np.allclose(a, b)  # the rng counters of the blocks that ran were written back
    c, d = (np.asarray(model.forward_intermediates(x, [1], intermediates_only=True)[0]) for _ in range(2))
    assert not np.allclose(c, d)
