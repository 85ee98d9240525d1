"""Preprocessing parity with transformers' ViTImageProcessor on real photos, and image loading."""

import json

import numpy as np
import pytest
from PIL import Image

from jimm.data.preprocess import (
    ImageProcessorConfig,
    ImageReadError,
    load_image,
    preprocess,
    preprocess_files,
    preprocess_images,
)


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


# --- Every processor type jimm reproduces, against transformers on real photos ------------------------------------


def _real_photos():
    """The real photos, plus a grayscale and a translucent RGBA (PIL, as files decode) and a tiny odd-sized crop."""
    from skimage import data
    from sklearn.datasets import load_sample_image

    photos = {name: getattr(data, name)() for name in ("chelsea", "astronaut", "coffee")}
    photos |= {name: load_sample_image(f"{name}.jpg") for name in ("china", "flower")}
    photos["gray"] = Image.fromarray(photos["coffee"]).convert("L")
    alpha = np.linspace(0, 255, photos["chelsea"].shape[1]).astype(np.uint8)[None].repeat(300, 0)
    photos["rgba"] = Image.fromarray(np.dstack([photos["chelsea"], alpha]), "RGBA")
    photos["small"] = photos["astronaut"][100:113, 200:207]  # 13 x 7: upsampled, odd crop offsets
    photos["gray_array"] = np.asarray(photos["gray"])[..., None]
    photos["rgba_array"] = np.asarray(photos["rgba"])
    return photos


REAL = _real_photos()
DINOV2_HUB = {  # facebook/dinov2-base's file
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "BitImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 256},
}
CLIP_LEGACY = {  # openai/clip-vit-base-patch32's file: int sizes, a feature extractor name
    "crop_size": 224,
    "do_center_crop": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": 224,
}
DINOV3_HUB = {  # facebook/dinov3-*'s file, as transformers' fast processors save it (nulls = class defaults)
    "crop_size": None,
    "data_format": "channels_first",
    "default_to_square": True,
    "device": None,
    "disable_grouping": None,
    "do_center_crop": None,
    "do_convert_rgb": None,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "DINOv3ViTImageProcessorFast",
    "image_std": [0.229, 0.224, 0.225],
    "input_data_format": None,
    "resample": 2,
    "rescale_factor": 0.00392156862745098,
    "return_tensors": None,
    "size": {"height": 224, "width": 224},
}
ODD_CROP = {"size": {"shortest_edge": 37}, "crop_size": {"height": 33, "width": 33}}
PAD_CROP = {"size": {"shortest_edge": 33}, "crop_size": {"height": 36, "width": 41}}  # odd zero padding
PILLOW_CASES = {
    "vit-defaults": {"image_processor_type": "ViTImageProcessor"},
    "vit-37x33-bicubic-rgb": {
        "image_processor_type": "ViTImageProcessor",
        "size": {"height": 37, "width": 33},
        "resample": 3,
        "do_convert_rgb": True,
    },
    "deit-legacy-hub": {  # facebook/deit-base-distilled-patch16-224's file
        "crop_size": 224,
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "DeiTFeatureExtractor",
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
        "resample": 3,
        "size": 256,
    },
    "deit-odd-pad": {"image_processor_type": "DeiTImageProcessor", "size": [37, 30], "crop_size": [33, 35]},
    "bit-dinov2-hub": DINOV2_HUB,
    "bit-odd-crop": {"image_processor_type": "BitImageProcessor", **ODD_CROP},
    "bit-pad-crop": {"image_processor_type": "BitImageProcessor", **PAD_CROP, "resample": 2},
    "clip-defaults": {"image_processor_type": "CLIPImageProcessor"},
    "clip-legacy-hub": CLIP_LEGACY,
    "clip-no-crop-37": {"image_processor_type": "CLIPImageProcessor", "size": 37, "do_center_crop": False},
    "siglip-defaults": {"image_processor_type": "SiglipImageProcessor"},
    "siglip-37x33-bilinear": {
        "image_processor_type": "SiglipImageProcessor",
        "size": {"height": 37, "width": 33},
        "resample": 2,
    },
}


def _quiet_transformers():
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


@pytest.fixture(scope="module")
def hf_processors(tmp_path_factory):
    """transformers' processor for each case, loaded from a preprocessor_config.json as a checkpoint's is."""
    _quiet_transformers()
    from transformers import AutoImageProcessor

    out = {}
    for name, raw in PILLOW_CASES.items():
        folder = tmp_path_factory.mktemp(name)
        (folder / "preprocessor_config.json").write_text(json.dumps(raw))
        out[name] = AutoImageProcessor.from_pretrained(folder)
    return out


def _hf_pixels(processor, image) -> np.ndarray:
    return processor(images=image, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)


@pytest.mark.parametrize("case", sorted(PILLOW_CASES))
def test_pillow_processors_match_transformers(case, hf_processors):
    processor = hf_processors[case]
    config = ImageProcessorConfig.from_dict(PILLOW_CASES[case])
    assert type(processor).__name__ == config.image_processor_type + "Pil"  # what runs without torchvision
    for name, image in REAL.items():
        try:
            expected = _hf_pixels(processor, image)
        except ValueError:  # transformers cannot either (no RGB conversion for a 1- or 4-channel image)
            with pytest.raises(ValueError, match="do_convert_rgb"):
                preprocess(image, config)
            continue
        ours = preprocess(image, config)
        assert ours.dtype == np.float32 and ours.shape == expected.shape, name
        np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0, err_msg=name)
        assert np.abs(ours).max() > 0.5


def _dinov3_reference(image, raw: dict) -> np.ndarray:
    """transformers' DINOv3ViTImageProcessor (a torchvision-only class) step by step, with each torchvision call
    written out in torch: `image * rescale_factor`, `tvF.resize(antialias=True)` = `F.interpolate(antialias=True)`,
    `TorchvisionBackend.center_crop` (pad the smaller half first), `tvF.normalize` = `(x - mean) / std`."""
    import torch
    import torch.nn.functional as F
    from transformers.image_transforms import convert_to_rgb, get_resize_output_image_size

    cfg = {k: v for k, v in raw.items() if v is not None}
    mean = torch.tensor(cfg.get("image_mean", (0.485, 0.456, 0.406))).view(-1, 1, 1)
    std = torch.tensor(cfg.get("image_std", (0.229, 0.224, 0.225))).view(-1, 1, 1)
    is_pil = isinstance(image, Image.Image)
    if is_pil:  # TorchvisionBackend.process_image: PIL's own conversion for PIL images
        image = convert_to_rgb(image, return_numpy=True) if cfg.get("do_convert_rgb") else np.array(image)
    x = torch.from_numpy(np.array(image))
    x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
    if not is_pil and cfg.get("do_convert_rgb"):  # TorchvisionBackend.convert_to_rgb: gray to RGB, alpha on white
        if x.shape[0] == 1:
            x = x.repeat(3, 1, 1)
        elif x.shape[0] == 4:
            f = x.to(torch.float32).mul_(1.0 / 255)
            x = (f[:3] * f[3:] + (1 - f[3:])).mul(255 + 1.0 - 1e-3).to(torch.uint8)
    x = x.contiguous()[None] * cfg.get("rescale_factor", 1 / 255)
    size = cfg.get("size", {"height": 224, "width": 224})
    if "shortest_edge" in size:
        new = get_resize_output_image_size(
            x[0].numpy(), size["shortest_edge"], False, input_data_format="channels_first"
        )
    else:
        new = (size["height"], size["width"])
    if tuple(new) != tuple(x.shape[-2:]):
        mode = {0: "nearest-exact", 2: "bilinear", 3: "bicubic"}[cfg.get("resample", 2)]
        kw = {} if mode == "nearest-exact" else {"align_corners": False, "antialias": True}
        x = F.interpolate(x, size=list(new), mode=mode, **kw)
    if cfg.get("do_center_crop"):
        ch, cw = cfg["crop_size"]["height"], cfg["crop_size"]["width"]
        h, w = x.shape[-2:]
        ltrb = [max(cw - w, 0) // 2, max(ch - h, 0) // 2, (max(cw - w, 0) + 1) // 2, (max(ch - h, 0) + 1) // 2]
        x = F.pad(x, (ltrb[0], ltrb[2], ltrb[1], ltrb[3]))
        top, left = int((x.shape[-2] - ch) / 2.0), int((x.shape[-1] - cw) / 2.0)
        x = x[..., top : top + ch, left : left + cw]
    x = (x - mean) / std
    return x[0].permute(1, 2, 0).numpy()


DINOV3_CASES = {
    "hub-224": DINOV3_HUB,
    "37x33-bicubic": {
        "image_processor_type": "DINOv3ViTImageProcessor",
        "size": {"height": 37, "width": 33},
        "resample": 3,
    },
    "37x33-nearest": {
        "image_processor_type": "DINOv3ViTImageProcessor",
        "size": {"height": 37, "width": 33},
        "resample": 0,
    },
    "odd-crop-rgb": {
        "image_processor_type": "DINOv3ViTImageProcessor",
        **ODD_CROP,
        "do_center_crop": True,
        "do_convert_rgb": True,
    },
    "pad-crop": {"image_processor_type": "DINOv3ViTImageProcessor", **PAD_CROP, "do_center_crop": True},
}


@pytest.mark.parametrize("case", sorted(DINOV3_CASES))
def test_dinov3_processor_matches_its_torch_computation(case):
    raw = DINOV3_CASES[case]
    config = ImageProcessorConfig.from_dict(raw)
    for name, image in REAL.items():
        try:
            expected = _dinov3_reference(image, raw)
        except RuntimeError:  # a 4-channel image against a 3-value mean: torch cannot either
            with pytest.raises(ValueError, match="do_convert_rgb"):
                preprocess(image, config)
            continue
        ours = preprocess(image, config)
        assert ours.dtype == np.float32 and ours.shape == expected.shape, name
        np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0, err_msg=name)


def test_dinov3_needs_torchvision_in_transformers(tmp_path):
    """Why the DINOv3 reference is written out in torch: transformers has no Pillow DINOv3 processor."""
    _quiet_transformers()
    from transformers import AutoImageProcessor

    (tmp_path / "preprocessor_config.json").write_text(json.dumps(DINOV3_HUB))
    with pytest.raises((ValueError, ImportError), match="(?i)torchvision"):
        AutoImageProcessor.from_pretrained(tmp_path)


@pytest.mark.parametrize("case", sorted(PILLOW_CASES))
def test_to_dict_round_trips_through_transformers(case, hf_processors, tmp_path):
    _quiet_transformers()
    from transformers import AutoImageProcessor

    config = ImageProcessorConfig.from_dict(PILLOW_CASES[case])
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config.to_dict()))
    reloaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(reloaded) is type(hf_processors[case])
    image = REAL["china"]
    np.testing.assert_array_equal(_hf_pixels(reloaded, image), _hf_pixels(hf_processors[case], image))
    assert ImageProcessorConfig.from_dict(reloaded.to_dict()) == config  # and back from transformers' own file
    assert ImageProcessorConfig.from_dict(config.to_dict()) == config


def test_dinov3_round_trip_keeps_the_type_name():
    config = ImageProcessorConfig.from_dict(DINOV3_HUB)
    assert config == ImageProcessorConfig.defaults("DINOv3ViTImageProcessorFast")
    assert config.to_dict()["image_processor_type"] == "DINOv3ViTImageProcessorFast"
    assert ImageProcessorConfig.from_dict(config.to_dict()) == config


def test_class_defaults_fill_minimal_files():
    clip = ImageProcessorConfig.from_dict({"image_processor_type": "CLIPImageProcessor"})
    assert (clip.size, clip.crop_size, clip.resample, clip.do_convert_rgb) == (224, (224, 224), 3, True)
    assert clip.image_mean == (0.48145466, 0.4578275, 0.40821073) and clip.output_hw == (224, 224)
    siglip = ImageProcessorConfig.defaults("SiglipImageProcessor", size=(37, 33))
    assert (siglip.size, siglip.resample, siglip.image_std, siglip.do_center_crop) == ((37, 33), 3, (0.5,) * 3, False)
    dinov3 = ImageProcessorConfig.defaults("DINOv3ViTImageProcessor")
    assert (dinov3.size, dinov3.resample, dinov3.image_mean) == ((224, 224), 2, (0.485, 0.456, 0.406))
    assert ImageProcessorConfig.from_dict({"image_processor_type": "ViTImageProcessor", "size": 31}).size == (31, 31)
    assert ImageProcessorConfig.defaults("CLIPImageProcessor", do_center_crop=False).output_hw is None


@pytest.mark.parametrize(
    "raw, match",
    [
        ({"image_processor_type": "ConvNextImageProcessor"}, "ConvNextImageProcessor"),
        ({"image_processor_type": "CLIPImageProcessor", "crop_pct": 0.875}, "crop_pct"),
        ({"image_processor_type": "CLIPImageProcessor", "do_pad": True}, "do_pad"),
        ({"image_processor_type": "CLIPImageProcessor", "size": {"longest_edge": 9}}, "longest_edge"),
        ({"image_processor_type": "CLIPImageProcessor", "crop_size": {"shortest_edge": 9}}, "crop_size"),
        ({"image_processor_type": "CLIPImageProcessor", "do_resize": "yes"}, "do_resize"),
        ({"image_processor_type": "SiglipImageProcessor", "do_center_crop": True}, "do_center_crop"),
        ({"image_processor_type": "SiglipImageProcessor", "size": 224}, "shortest_edge"),
        ({"image_processor_type": "DINOv3ViTImageProcessor", "resample": 1}, "resample"),
        ({"image_processor_type": "DINOv3ViTImageProcessor", "do_rescale": False}, "do_rescale"),
        ({"size": {"height": 0, "width": 3}}, "size"),
        ({"image_mean": [0.5, 0.5]}, "image_mean"),
    ],
)
def test_bad_configs_name_the_field(raw, match):
    with pytest.raises(ValueError, match=match):
        ImageProcessorConfig.from_dict(raw)


def test_bad_inputs_are_clear_errors(tmp_path):
    vit = ImageProcessorConfig()
    with pytest.raises(ValueError, match="uint8"):
        preprocess(REAL["small"].astype(np.float32), vit)
    with pytest.raises(ValueError, match="uint8"):
        preprocess(REAL["small"][None], vit)
    with pytest.raises(ValueError, match="PIL image or a file path"):
        preprocess([REAL["small"]], vit)
    with pytest.raises(ValueError, match="do_convert_rgb"):
        preprocess(Image.fromarray(REAL["small"]).convert("P"), vit)
    with pytest.raises(ValueError, match=r"do_convert_rgb"):
        preprocess(REAL["rgba_array"], vit)
    with pytest.raises(ImageReadError, match=r"missing\.png"):
        preprocess(tmp_path / "missing.png", vit)
    with pytest.raises(ValueError, match="different sizes"):
        preprocess_images(
            [REAL["chelsea"], REAL["astronaut"]],
            ImageProcessorConfig.defaults("CLIPImageProcessor", do_center_crop=False),
        )
    with pytest.raises(ValueError, match="no images"):
        preprocess_images([], vit)
    with pytest.raises(ValueError, match="list of images"):
        preprocess_images(REAL["small"], vit)


def test_preprocess_images_takes_arrays_pil_and_paths(tmp_path):
    path = tmp_path / "coffee.png"
    Image.fromarray(REAL["coffee"]).save(path)
    config = ImageProcessorConfig.from_dict(DINOV2_HUB)
    batch = preprocess_images([REAL["coffee"], Image.open(path), str(path), path], config)
    assert batch.shape == (4, 224, 224, 3) and batch.dtype == np.float32
    for row in batch[1:]:
        np.testing.assert_array_equal(row, batch[0])


def test_load_image_applies_exif_rotation_like_transformers(tmp_path):
    from transformers.image_utils import load_image as hf_load_image

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(REAL["chelsea"]).save(path, exif=exif)
    ours = load_image(path)
    assert ours.shape == (451, 300, 3)
    np.testing.assert_array_equal(ours, np.asarray(hf_load_image(str(path))))


def test_for_model_uses_the_file_or_the_family_defaults():
    from types import SimpleNamespace

    def model(**config):
        return SimpleNamespace(config=SimpleNamespace(image_hw=(33, 37), **config))

    assert ImageProcessorConfig.for_model(model()) == ImageProcessorConfig(size=(33, 37))
    clip = ImageProcessorConfig.for_model(model(model_type="clip"))
    assert (clip.image_processor_type, clip.size, clip.crop_size, clip.output_hw) == (
        "CLIPImageProcessor",
        37,
        (33, 37),
        (33, 37),
    )
    assert ImageProcessorConfig.for_model(model(model_type="dinov3_vit")).kind.torch
    dino = ImageProcessorConfig.for_model(model(model_type="dinov2"))  # e.g. torch-hub weights: no file
    assert dino.image_processor_type == "BitImageProcessor" and dino.crop_size == (33, 37)
    assert dino == ImageProcessorConfig.from_dict(
        {**DINOV2_HUB, "size": {"shortest_edge": 37}, "crop_size": {"height": 33, "width": 37}}
    )
    saved = model(model_type="clip")
    saved.preprocessor_json = json.dumps(DINOV2_HUB)
    assert ImageProcessorConfig.for_model(saved) == ImageProcessorConfig.from_dict(DINOV2_HUB)
    with pytest.raises(ValueError, match="mystery"):
        ImageProcessorConfig.for_model(model(model_type="mystery"))
