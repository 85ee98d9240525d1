"""NaFlex preprocessing parity with transformers' Siglip2ImageProcessor on real photos of mixed aspect ratios."""

import numpy as np
import pytest
from naflex_fixtures import photos, processor_folder

PHOTOS = photos()


def _transformers(max_num_patches, **kwargs):
    import tempfile
    from pathlib import Path

    from transformers import AutoImageProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    return AutoImageProcessor.from_pretrained(processor_folder(Path(tempfile.mkdtemp()), max_num_patches, **kwargs))


@pytest.mark.parametrize("max_num_patches", [64, 256])
def test_matches_transformers_siglip2_processor(max_num_patches):
    from jimm.data.naflex import NaFlexProcessorConfig, preprocess_naflex

    hf = _transformers(max_num_patches)
    assert type(hf).__name__ == "Siglip2ImageProcessorPil"  # what AutoImageProcessor gives without torchvision
    images = list(PHOTOS.values())
    expected = hf(images=images, return_tensors="np")
    ours = preprocess_naflex(images, NaFlexProcessorConfig.from_dict(hf.to_dict()))
    assert ours.pixel_values.dtype == np.float32 and ours.pixel_attention_mask.dtype == np.int32
    np.testing.assert_array_equal(ours.spatial_shapes, expected["spatial_shapes"])
    np.testing.assert_array_equal(ours.pixel_attention_mask, expected["pixel_attention_mask"])
    np.testing.assert_allclose(ours.pixel_values, expected["pixel_values"], atol=1e-5, rtol=0)
    # the batch really mixes aspect ratios and patch counts, with padding
    counts = ours.spatial_shapes.prod(1)
    assert len(set(map(tuple, ours.spatial_shapes))) >= 4
    assert counts.max() <= max_num_patches and counts.min() < max_num_patches
    assert (ours.spatial_shapes[:, 0] > ours.spatial_shapes[:, 1]).any()  # a portrait
    assert np.abs(ours.pixel_values).max() > 0.5


def test_non_default_settings_match_transformers():
    from jimm.data.naflex import NaFlexProcessorConfig, preprocess_naflex

    settings = dict(patch_size=14, resample=3, image_mean=[0.48, 0.45, 0.4], image_std=[0.27, 0.26, 0.28])
    hf = _transformers(97, **settings)
    images = [PHOTOS["chelsea"], PHOTOS["rocket_crop"]]
    expected = hf(images=images, return_tensors="np")
    ours = preprocess_naflex(images, NaFlexProcessorConfig.from_dict(hf.to_dict()))
    assert ours.pixel_values.shape == (2, 97, 14 * 14 * 3)
    np.testing.assert_array_equal(ours.spatial_shapes, expected["spatial_shapes"])
    np.testing.assert_allclose(ours.pixel_values, expected["pixel_values"], atol=1e-5, rtol=0)


def test_size_search_matches_transformers():
    from transformers.models.siglip2.image_processing_pil_siglip2 import get_image_size_for_max_num_patches

    from jimm.data.naflex import size_for_max_num_patches

    rng = np.random.RandomState(0)
    for h, w, p, m in zip(
        rng.randint(1, 3000, 200),
        rng.randint(1, 3000, 200),
        rng.choice([14, 16], 200),
        rng.choice([64, 256, 576, 1024], 200),
        strict=True,
    ):
        ours = size_for_max_num_patches(int(h), int(w), int(p), int(m))
        assert ours == get_image_size_for_max_num_patches(int(h), int(w), int(p), int(m))
        assert ours[0] % p == 0 and ours[1] % p == 0 and (ours[0] // p) * (ours[1] // p) <= m


def test_patch_order_is_row_major_ph_pw_c():
    from jimm.data.naflex import patchify, unpatchify

    image = np.arange(4 * 6 * 3, dtype=np.float32).reshape(4, 6, 3)
    patches = patchify(image, 2)
    assert patches.shape == (6, 12)
    np.testing.assert_array_equal(patches[4], image[2:4, 2:4].reshape(-1))  # grid row 1, column 1
    padded = np.concatenate([patches, np.ones((3, 12), np.float32)])
    np.testing.assert_array_equal(unpatchify(padded, (2, 3), 2), image)


def test_pad_to_bucket_and_errors():
    from jimm.data.naflex import NaFlexProcessorConfig, preprocess_naflex

    config = NaFlexProcessorConfig(max_num_patches=64)
    full = preprocess_naflex([PHOTOS["chelsea"]], config)
    n = int(full.pixel_attention_mask.sum())
    short = preprocess_naflex([PHOTOS["chelsea"]], config, pad_to=n)
    np.testing.assert_array_equal(short.pixel_values[0], full.pixel_values[0, :n])
    with pytest.raises(ValueError, match="pad_to=10 is shorter"):
        preprocess_naflex([PHOTOS["chelsea"]], config, pad_to=10)
    with pytest.raises(ValueError, match="does not implement: \\['crop_size'\\]"):
        NaFlexProcessorConfig.from_dict({"crop_size": 3})
    with pytest.raises(ValueError, match="max_num_patches must be a positive int"):
        NaFlexProcessorConfig(max_num_patches=0)
    with pytest.raises(ValueError, match="must be a multiple of patch_size 16"):
        preprocess_naflex([PHOTOS["chelsea"]], NaFlexProcessorConfig(do_resize=False))


def test_config_round_trips_through_transformers():
    from transformers import Siglip2ImageProcessorPil

    from jimm.data.naflex import NaFlexProcessorConfig

    config = NaFlexProcessorConfig(max_num_patches=1024, resample=3, image_mean=(0.1, 0.2, 0.3))
    reloaded = Siglip2ImageProcessorPil(**config.to_dict())
    assert NaFlexProcessorConfig.from_dict(reloaded.to_dict()) == config
