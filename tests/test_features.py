"""`jimm features` on scikit-image's real photos: the files, their sizes, and their values (patch features equal
`forward_features`, the attention map equals transformers' last-layer CLS attention), for DINOv2 and ViT."""

import numpy as np
import pytest
import torch
import transformers as T
from conftest import hf_model
from flax import nnx
from PIL import Image

import jimm
from jimm.cli import main
from jimm.data import ImageProcessorConfig, preprocess
from jimm.vis.features import extract, pca_rgb

GRID, PATCH, REGISTERS = 4, 7, 2


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from skimage import data

    path = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.chelsea()).save(path / "cat.png")
    Image.fromarray(data.astronaut()).save(path / "astronaut.jpg")
    return [path / "cat.png", path / "astronaut.jpg"]


@pytest.fixture(scope="module")
def dinov2_dir(tmp_path_factory):
    """A tiny random DINOv2 with registers, saved by transformers with its real BitImageProcessor settings."""
    path = tmp_path_factory.mktemp("dinov2")
    torch.manual_seed(0)
    config = T.Dinov2WithRegistersConfig(
        hidden_size=15, num_hidden_layers=2, num_attention_heads=3, mlp_ratio=3, image_size=GRID * PATCH,
        patch_size=PATCH, num_register_tokens=REGISTERS,
    )  # fmt: skip
    hf = T.Dinov2WithRegistersModel(config)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(path)
    size = GRID * PATCH
    T.BitImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": size, "width": size}, image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(path)  # fmt: skip
    return path


def test_jimm_features_writes_the_three_files_per_photo(tmp_path, photos, dinov2_dir, capsys):
    out = tmp_path / "out"
    assert main(["features", str(dinov2_dir), *map(str, photos), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    names = [f"{stem}_{kind}" for stem in ("cat", "astronaut") for kind in ("features.npy", "pca.png", "attention.png")]
    assert printed == [str(out / name) for name in names]
    model = jimm.from_pretrained(dinov2_dir)
    processor = ImageProcessorConfig.for_model(model)
    side = GRID * PATCH
    batch = np.stack([preprocess(photo, processor) for photo in photos])
    tokens = np.asarray(nnx.jit(lambda m, x: m.forward_features(x))(model, batch))
    for photo, features in zip(photos, tokens, strict=True):
        saved = np.load(out / f"{photo.stem}_features.npy")
        assert saved.shape == (GRID, GRID, 15) and saved.dtype == np.float32
        expected = features[1 + REGISTERS :].reshape(GRID, GRID, 15)
        np.testing.assert_allclose(saved, expected, atol=1e-5, rtol=0)
        pca = Image.open(out / f"{photo.stem}_pca.png")
        assert pca.size == (2 * side, side) and pca.mode == "RGB"  # the image, then the PCA map
        left = np.asarray(pca)[:, :side].astype(np.float32) / 255
        view = preprocess(photo, processor) * np.float32([0.229, 0.224, 0.225]) + np.float32([0.485, 0.456, 0.406])
        np.testing.assert_allclose(left, np.clip(view, 0, 1), atol=1 / 255 + 1e-6)  # normalisation undone
        right = np.asarray(pca)[:, side:]
        assert np.array_equal(right[::PATCH, ::PATCH], np.round(pca_rgb(saved) * 255).astype(np.uint8))
        assert Image.open(out / f"{photo.stem}_attention.png").size == (side, side)


def test_attention_map_is_the_class_tokens_last_layer_attention(photos, dinov2_dir):
    model = jimm.from_pretrained(dinov2_dir)
    processor = ImageProcessorConfig.for_model(model)
    pixels = preprocess(photos[0], processor)
    features = extract(model, pixels, processor)
    hf = T.Dinov2WithRegistersModel.from_pretrained(dinov2_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        attentions = hf(torch.from_numpy(pixels.transpose(2, 0, 1)[None].copy()), output_attentions=True).attentions
    expected = attentions[-1][0].mean(0)[0, 1 + REGISTERS :].numpy().reshape(GRID, GRID)
    np.testing.assert_allclose(features.attention, expected, atol=1e-6)
    pca = pca_rgb(features.patches)
    assert pca.shape == (GRID, GRID, 3) and pca.min() == 0 and pca.max() == 1


def test_dinov3_attention_map_uses_its_rope(tmp_path, photos):
    torch.manual_seed(0)
    config = T.DINOv3ViTConfig(
        hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=37, image_size=28,
        patch_size=7, num_register_tokens=REGISTERS,
    )  # fmt: skip
    hf = T.DINOv3ViTModel(config).eval()
    hf.save_pretrained(tmp_path)
    model = jimm.from_pretrained(tmp_path)
    processor = ImageProcessorConfig.for_model(model)  # DINOv3's processor: 28 x 28, no crop
    pixels = preprocess(photos[1], processor)
    features = extract(model, pixels, processor)
    hf.config._attn_implementation = "eager"
    with torch.no_grad():
        out = hf(torch.from_numpy(pixels.transpose(2, 0, 1)[None].copy()), output_attentions=True)
    expected = out.attentions[-1][0].mean(0)[0, 1 + REGISTERS :].numpy().reshape(GRID, GRID)
    np.testing.assert_allclose(features.attention, expected, atol=1e-6)
    np.testing.assert_allclose(
        features.patches, out.last_hidden_state[0, 1 + REGISTERS :].reshape(GRID, GRID, 24), atol=1e-5
    )


def test_any_family_with_patch_tokens_and_one_line_errors(tmp_path, photos):
    folder = tmp_path / "vit"
    hf_model(headless=True, image_size=28, patch_size=7).save_pretrained(folder)
    out = tmp_path / "out"
    assert main(["features", str(folder), str(photos[1]), "--out", str(out)]) == 0
    assert np.load(out / "astronaut_features.npy").shape == (4, 4, 15)
    assert Image.open(out / "astronaut_pca.png").size == (56, 28)
    assert main(["features", str(tmp_path / "missing"), str(photos[1]), "--out", str(out)]) == 2
