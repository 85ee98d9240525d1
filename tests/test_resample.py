"""Any image size: torch-exact bicubic position-embedding resampling, per call and at load time."""

import json

import numpy as np
import pytest
import torch
from conftest import hf_model, images, to_torch

from jimm import VisionTransformer
from jimm.common.resample import bicubic_matrix, resample_grid, resample_pos_embed


def torch_bicubic(grid: np.ndarray, size, antialias: bool = False, mode: str = "bicubic", **kwargs) -> np.ndarray:
    t = torch.from_numpy(grid).permute(2, 0, 1)[None]
    if "scale_factor" not in kwargs:
        kwargs["size"] = size
    out = torch.nn.functional.interpolate(t, mode=mode, align_corners=False, antialias=antialias, **kwargs)
    return out[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("old,new", [((16, 16), (10, 18)), ((7, 7), (3, 3)), ((4, 6), (9, 5))])
def test_antialiased_bilinear_equals_torch(old, new):
    # SigLIP 2 NaFlex resizes its 16x16 position grid with bilinear + antialias
    grid = np.random.RandomState(4).randn(*old, 5).astype(np.float32)
    ours = np.asarray(resample_grid(grid, new, mode="bilinear_antialias"))
    np.testing.assert_allclose(ours, torch_bicubic(grid, new, antialias=True, mode="bilinear"), atol=1e-5)


@pytest.mark.parametrize("old,new", [((37, 37), (16, 16)), ((37, 37), (23, 31)), ((16, 16), (37, 37))])
def test_interpolate_offset_equals_torch_scale_factor(old, new):
    # DINOv2's legacy torch-hub path: interpolate(scale_factor=((h + 0.1) / H, (w + 0.1) / W)), same output size
    grid = np.random.RandomState(5).randn(*old, 4).astype(np.float32)
    factor = ((new[0] + 0.1) / old[0], (new[1] + 0.1) / old[1])
    theirs = torch_bicubic(grid, None, scale_factor=factor)
    assert theirs.shape[:2] == new
    ours = np.asarray(resample_grid(grid, new, offset=0.1))
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert np.abs(ours - np.asarray(resample_grid(grid, new))).max() > 1e-4  # the offset changes the grid


@pytest.mark.parametrize(
    "old,new",
    [((5, 5), (7, 7)), ((7, 7), (3, 3)), ((5, 7), (9, 4)), ((11, 3), (2, 13)), ((1, 3), (2, 5)), ((4, 4), (4, 9))],
)
def test_resample_grid_equals_torch_bicubic(old, new):
    grid = np.random.RandomState(1).randn(*old, 6).astype(np.float32)
    np.testing.assert_allclose(np.asarray(resample_grid(grid, new)), torch_bicubic(grid, new), atol=1e-5)


@pytest.mark.parametrize(
    "old,new", [((14, 14), (10, 18)), ((7, 7), (3, 3)), ((5, 7), (9, 4)), ((24, 24), (7, 5)), ((3, 1), (2, 5))]
)
def test_antialiased_resample_equals_torch_antialias(old, new):
    # timm's resample_abs_pos_embed (dynamic_img_size, a new img_size) calls interpolate(..., antialias=True)
    grid = np.random.RandomState(3).randn(*old, 6).astype(np.float32)
    ours = np.asarray(resample_grid(grid, new, mode="bicubic_antialias"))
    np.testing.assert_allclose(ours, torch_bicubic(grid, new, antialias=True), atol=1e-5)
    assert np.abs(ours - torch_bicubic(grid, new)).max() > 1e-3  # and it is not HF's kernel


def test_bicubic_is_not_jax_image_resize():
    # the reason this module exists: jax.image.resize's bicubic (a=-0.5, antialias) differs from torch's
    import jax

    grid = np.random.RandomState(2).randn(5, 5, 3).astype(np.float32)
    ours = np.asarray(resample_grid(grid, (8, 8)))
    theirs = np.asarray(jax.image.resize(grid, (8, 8, 3), "bicubic"))
    assert np.abs(ours - theirs).max() > 1e-3


def test_bicubic_matrix_rows_sum_to_one_and_same_size_is_identity():
    m = bicubic_matrix(7, 4)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(bicubic_matrix(6, 6), np.eye(6))


def test_resample_pos_embed_keeps_prefix_rows_and_checks_shape():
    pos = np.random.RandomState(3).randn(1, 2 + 12, 4).astype(np.float32)
    out = np.asarray(resample_pos_embed(pos, (3, 4), (5, 2), num_prefix_tokens=2))
    assert out.shape == (1, 2 + 10, 4)
    np.testing.assert_array_equal(out[:, :2], pos[:, :2])
    np.testing.assert_allclose(
        out[0, 2:].reshape(5, 2, 4), torch_bicubic(pos[0, 2:].reshape(3, 4, 4), (5, 2)), atol=1e-5
    )
    with pytest.raises(ValueError, match="do not match a 3x3 grid"):
        resample_pos_embed(pos, (3, 3), (4, 4), num_prefix_tokens=2)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    hf = hf_model(seed=3)
    path = tmp_path_factory.mktemp("vit")
    hf.save_pretrained(path)
    return hf, VisionTransformer.from_pretrained(path), path


@pytest.mark.parametrize("size", [33, 48, 21, (27, 42), (45, 18), 3])
def test_any_image_size_equals_hf_interpolate_pos_encoding(pair, size):
    hf, model, _ = pair
    x = images(size=size, seed=4)
    with torch.no_grad():
        ref = hf(to_torch(x), interpolate_pos_encoding=True, output_hidden_states=True)
    np.testing.assert_allclose(np.asarray(model(x)), ref.logits.numpy(), atol=1e-4)
    features = np.asarray(model.forward_features(x))
    np.testing.assert_allclose(features, hf.vit.layernorm(ref.hidden_states[-1]).detach().numpy(), atol=1e-4)


def test_from_pretrained_img_size_resamples_once(pair, tmp_path):
    hf, _, path = pair
    model = VisionTransformer.from_pretrained(path, img_size=(42, 27))
    assert model.config.image_hw == (42, 27)
    assert model.encoder.pos_embed.shape == (1, 1 + 14 * 9, 15)
    x = images(size=(42, 27), seed=5)
    with torch.no_grad():
        ref = hf(to_torch(x), interpolate_pos_encoding=True).logits.numpy()
    np.testing.assert_allclose(np.asarray(model(x)), ref, atol=1e-4)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["image_size"] == [42, 27]
    again = VisionTransformer.from_pretrained(tmp_path)
    np.testing.assert_array_equal(np.asarray(again.encoder.pos_embed[...]), np.asarray(model.encoder.pos_embed[...]))


def test_bad_image_sizes_are_clear_errors(pair):
    _, model, _ = pair
    with pytest.raises(ValueError, match=r"2x33 is smaller than one patch \(3x3\)"):
        model(images(size=(2, 33)))
    with pytest.raises(ValueError, match="expected NHWC images"):
        model(np.zeros((33, 33, 3), np.float32))
    with pytest.raises(ValueError, match="NCHW input"):
        model(np.zeros((1, 3, 33, 33), np.float32))
