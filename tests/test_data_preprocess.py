"""Preprocessing parity with transformers' ViTImageProcessor on real photos, and image loading."""

import numpy as np
import pytest
from PIL import Image

from jimm.data.preprocess import ImageProcessorConfig, ImageReadError, load_image, preprocess, preprocess_files


def _photos():
    from skimage.data import chelsea
    from sklearn.datasets import load_sample_image

    return {"china": load_sample_image("china.jpg"), "chelsea": chelsea()}


PHOTOS = _photos()
CONFIGS = [
    {},  # HF defaults: 224x224, bilinear, mean/std 0.5
    {
        "size": {"height": 97, "width": 131},
        "resample": 3,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
    },
    {"size": {"height": 384, "width": 384}, "resample": 0, "rescale_factor": 0.00392156862745098},
    {"size": {"height": 64, "width": 48}, "resample": 1, "do_normalize": False},
]


@pytest.mark.parametrize("name", sorted(PHOTOS))
@pytest.mark.parametrize(
    "cfg", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items() if k != "image_std") or "defaults"
)
def test_matches_transformers_vit_image_processor(name, cfg):
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    from transformers import ViTImageProcessor

    image = PHOTOS[name]
    expected = ViTImageProcessor(**cfg)(images=image, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
    ours = preprocess(image, ImageProcessorConfig.from_dict(cfg))
    assert ours.dtype == np.float32
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)
    assert np.abs(ours).max() > 0.5  # a real image, not zeros


def test_file_round_trip_matches_transformers(tmp_path):
    from transformers import ViTImageProcessor

    path = tmp_path / "china.jpg"
    Image.fromarray(PHOTOS["china"]).save(path, quality=90)
    batch = preprocess_files([path, path], ImageProcessorConfig())
    expected = ViTImageProcessor()(images=Image.open(path), return_tensors="np")["pixel_values"].transpose(0, 2, 3, 1)
    assert batch.shape == (2, 224, 224, 3)
    np.testing.assert_allclose(batch[:1], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "CMYK"])
def test_load_image_converts_to_rgb(tmp_path, mode):
    rgb = PHOTOS["chelsea"][:40, :57]
    image = Image.fromarray(rgb).convert(mode)
    path = tmp_path / ("x.jpg" if mode in ("L", "CMYK") else "x.png")
    image.save(path)
    out = load_image(path)
    assert out.shape == (40, 57, 3) and out.dtype == np.uint8
    assert np.array_equal(out, np.asarray(Image.open(path).convert("RGB")))
    if mode == "L":
        assert np.array_equal(out[..., 0], out[..., 2])


def test_load_image_errors_name_the_file(tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    with pytest.raises(ImageReadError, match=r"notes\.jpg"):
        load_image(bad)
    with pytest.raises(ImageReadError, match=r"missing\.png"):
        load_image(tmp_path / "missing.png")


def test_config_rejects_unknown_fields_and_sizes():
    with pytest.raises(ValueError, match="do_center_crop"):
        ImageProcessorConfig.from_dict({"do_center_crop": True})
    with pytest.raises(ValueError, match="shortest_edge"):
        ImageProcessorConfig.from_dict({"size": {"shortest_edge": 224}})
    with pytest.raises(ValueError, match="resample"):
        ImageProcessorConfig.from_dict({"resample": 9})
    cfg = ImageProcessorConfig.from_dict(
        {"size": {"height": 5, "width": 7}, "image_processor_type": "ViTImageProcessor"}
    )
    assert cfg.size == (5, 7)
    assert ImageProcessorConfig.from_dict(cfg.to_dict()) == cfg
