"""SigLIP 2 NaFlex (`model_type: siglip2`) against transformers: position resize, config, and the model."""

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# Per-image patch grids: the table's own, beyond it in one axis, a sliver, one patch, and shapes real photos give.
GRIDS = np.array([[16, 16], [2, 128], [23, 11], [1, 1], [40, 25], [13, 19], [3, 5]])


@pytest.mark.parametrize("side", [16, 7])
def test_position_resize_matches_transformers(side):
    import torch
    from transformers.models.siglip2.modeling_siglip2 import Siglip2VisionEmbeddings

    from jimm.common.resample import naflex_pos_embed

    table = np.random.RandomState(side).randn(side, side, 13).astype(np.float32)
    length = 1024
    expected = Siglip2VisionEmbeddings.resize_positional_embeddings(
        torch.from_numpy(table), torch.from_numpy(GRIDS), length
    ).numpy()
    resize = jax.jit(naflex_pos_embed, static_argnums=2)
    ours = np.asarray(resize(jnp.asarray(table), jnp.asarray(GRIDS), length))
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)
    # every image's slots are its own grid (not a shared one): the two largest grids differ
    assert np.abs(ours[0, :256] - ours[4, :256]).max() > 0.1
    # a second mix of grids reuses the compiled program: the sizes are data, not shapes
    compiled = resize._cache_size()
    resize(jnp.asarray(table), jnp.asarray(GRIDS[::-1]), length)
    assert resize._cache_size() == compiled


def test_config_round_trips_transformers(tmp_path):
    import transformers as T

    from jimm.models.siglip2.config import Siglip2Config

    hf = T.Siglip2Config(
        vision_config=dict(hidden_size=39, num_attention_heads=3, intermediate_size=23, num_patches=144, patch_size=8),
        text_config=dict(hidden_size=33, num_attention_heads=3, projection_size=39, vocab_size=99),
    )
    hf.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    config = Siglip2Config.from_hf_dict(raw)
    assert config.vision_config.position_grid == 12 and config.vision_config.tower().grid_hw == (12, 12)
    again = T.Siglip2Config.from_dict(config.to_hf_dict())
    assert again.vision_config.to_dict() == hf.vision_config.to_dict()
    assert again.text_config.to_dict() == hf.text_config.to_dict()
    with pytest.raises(ValueError, match="num_patches=200 is not a square"):
        Siglip2Config.from_hf_dict({**raw, "vision_config": {**raw["vision_config"], "num_patches": 200}})
    with pytest.raises(ValueError, match="no fixed image size"):
        _ = config.image_hw


# -- the model against transformers, on real photos through transformers' own processor ----------------------------


@pytest.fixture(scope="module")
def siglip2(tmp_path_factory):
    from naflex_fixtures import save_siglip2

    path = tmp_path_factory.mktemp("siglip2")
    return path, save_siglip2(path)


def _inputs(path, max_num_patches):
    """transformers' processor output (torch) and ours (NaFlexInputs of numpy) for the same photos."""
    from naflex_fixtures import photos
    from transformers import AutoImageProcessor

    from jimm.data.naflex import NaFlexProcessorConfig, preprocess_naflex

    images = list(photos().values())
    hf = AutoImageProcessor.from_pretrained(path)(images=images, max_num_patches=max_num_patches, return_tensors="pt")
    config = NaFlexProcessorConfig.from_json((path / "preprocessor_config.json").read_text())
    ours = preprocess_naflex(images, config.replace(max_num_patches=max_num_patches))
    np.testing.assert_allclose(ours.pixel_values, hf["pixel_values"].numpy(), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(ours.spatial_shapes, hf["spatial_shapes"].numpy())
    return hf, ours


@pytest.mark.parametrize("max_num_patches", [64, 256])
def test_siglip2_matches_transformers_on_photos(siglip2, max_num_patches):
    import torch

    import jimm
    from jimm.models.siglip2 import SigLIP2

    path, hf_model = siglip2
    hf_inputs, inputs = _inputs(path, max_num_patches)
    model = jimm.from_pretrained(path)
    assert isinstance(model, SigLIP2)
    ids = model.tokenize(["a photo of a cat.", "an astronaut", "a rocket on the pad"])
    with torch.no_grad():
        out = hf_model(**hf_inputs, input_ids=torch.from_numpy(np.asarray(ids)).long(), output_hidden_states=True)
    vision = out.vision_model_output
    hidden = model.vision_model.hidden_states(inputs)
    assert len(hidden) == len(vision.hidden_states) == 3
    for ours, theirs in zip(hidden, vision.hidden_states, strict=True):
        np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), atol=1e-5, rtol=0)
    features = np.asarray(model.forward_features(inputs))
    np.testing.assert_allclose(features, vision.last_hidden_state.numpy(), atol=1e-5, rtol=0)
    pooled = np.asarray(model.encode_image(inputs))
    np.testing.assert_allclose(pooled, vision.pooler_output.numpy(), atol=1e-5, rtol=0)
    text = np.asarray(model.encode_text(ids))
    np.testing.assert_allclose(text, out.text_model_output.pooler_output.numpy(), atol=1e-5, rtol=0)
    logits = np.asarray(model(inputs, ids))
    np.testing.assert_allclose(logits, out.logits_per_image.numpy(), atol=1e-5, rtol=0)
    # the padding really is masked: changing padded pixels changes nothing pooled
    noisy = inputs._replace(
        pixel_values=np.where(inputs.pixel_attention_mask[..., None] == 1, inputs.pixel_values, 7.0)
    )
    assert (inputs.pixel_attention_mask == 0).any()
    np.testing.assert_allclose(np.asarray(model.encode_image(noisy)), pooled, atol=1e-5, rtol=0)


def test_save_reloads_in_transformers_and_jimm(siglip2, tmp_path):
    import torch
    import transformers as T

    import jimm
    from jimm.models.siglip2 import SigLIP2

    path, _ = siglip2
    model = jimm.from_pretrained(path)
    model.save_pretrained(tmp_path / "saved")
    hf, info = T.Siglip2Model.from_pretrained(tmp_path / "saved", output_loading_info=True)
    assert {k: v for k, v in info.items() if v} == {}  # no missing, unexpected or mismatched keys
    assert type(T.AutoImageProcessor.from_pretrained(tmp_path / "saved")).__name__ == "Siglip2ImageProcessorPil"
    hf_inputs, inputs = _inputs(tmp_path / "saved", 64)
    ids = model.tokenize(["a photo of a cat.", "a dog"])
    with torch.no_grad():
        expected = hf(**hf_inputs, input_ids=torch.from_numpy(np.asarray(ids)).long()).logits_per_image.numpy()
    np.testing.assert_allclose(np.asarray(model(inputs, ids)), expected, atol=1e-5, rtol=0)
    again = SigLIP2.from_pretrained(tmp_path / "saved")  # ours -> HF -> ours is bit-exact
    for (name, a), (_, b) in zip(
        jax.tree_util.tree_leaves_with_path(nnx_params(model)),
        jax.tree_util.tree_leaves_with_path(nnx_params(again)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(name))


def test_from_config_saves_a_processor_transformers_reads(tmp_path):
    import transformers as T
    from naflex_fixtures import TEXT, VISION

    from jimm.models.siglip2 import SigLIP2, Siglip2Config

    config = Siglip2Config.from_hf_dict(
        {"model_type": "siglip2", "vision_config": VISION, "text_config": {**TEXT, "vocab_size": 99}}
    )
    SigLIP2(config=config).save_pretrained(tmp_path)
    processor = T.AutoImageProcessor.from_pretrained(tmp_path)
    assert (processor.patch_size, processor.max_num_patches) == (8, 256)
    _, info = T.Siglip2Model.from_pretrained(tmp_path, output_loading_info=True)
    assert {k: v for k, v in info.items() if v} == {}


def test_loading_is_strict(siglip2, tmp_path):
    import shutil

    from safetensors.numpy import load_file, save_file

    from jimm.io.state import CheckpointMismatchError
    from jimm.models.siglip2 import SigLIP2

    path, _ = siglip2
    shutil.copytree(path, tmp_path / "bad")
    tensors = load_file(path / "model.safetensors")
    tensors["vision_model.embeddings.patch_embedding.weight"] = tensors[
        "vision_model.embeddings.patch_embedding.weight"
    ][:, :-3]
    del tensors["vision_model.head.probe"]
    tensors["vision_model.extra"] = np.zeros(3, np.float32)
    save_file(tensors, tmp_path / "bad" / "model.safetensors")
    with pytest.raises(CheckpointMismatchError) as err:
        SigLIP2.from_pretrained(tmp_path / "bad")
    for problem in ("vision_model.head.probe", "vision_model.extra", "patch_embedding.weight"):
        assert problem in str(err.value)


def nnx_params(model):
    from flax import nnx

    return nnx.state(model, nnx.Param)


def test_zero_shot_and_embed_compile_once_for_mixed_sizes(siglip2, monkeypatch, tmp_path):
    """Photos of five aspect ratios in batches of 2 (the last padded) trace the image tower once per
    max_num_patches; probabilities equal transformers' on the same photos."""
    import torch
    from naflex_fixtures import photos
    from PIL import Image

    import jimm
    from jimm.data.stream import processor_for
    from jimm.image_text import embed_images
    from jimm.models.siglip2 import SigLIP2

    path, hf_model = siglip2
    model = jimm.from_pretrained(path)
    traces = []
    encode = SigLIP2.encode_image
    monkeypatch.setattr(SigLIP2, "encode_image", lambda self, *a, **k: traces.append(1) or encode(self, *a, **k))
    images = list(photos().values())[:5]
    files = []
    for i, image in enumerate(images):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(image).save(files[-1])
    labels = ["cat", "rocket", "coffee"]
    probs = model.zero_shot(files, labels, batch_size=2, max_num_patches=64)
    assert probs.shape == (5, 3) and len(traces) == 1
    hf_inputs, _ = _inputs(path, 64)
    ids = model.tokenize([f"a photo of a {label}." for label in labels])
    with torch.no_grad():
        logits = hf_model(
            **{k: v[:5] for k, v in hf_inputs.items()}, input_ids=torch.from_numpy(np.asarray(ids)).long()
        )
    np.testing.assert_allclose(probs, torch.sigmoid(logits.logits_per_image).numpy(), atol=1e-5, rtol=0)
    embeds = embed_images(model, files, batch_size=2, max_num_patches=256)
    assert embeds.shape == (5, 39) and len(traces) == 2
    np.testing.assert_allclose(np.linalg.norm(embeds, axis=1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="max_num_patches .* is for SigLIP 2 NaFlex models"):
        processor_for(types.SimpleNamespace(), max_num_patches=64)  # a fixed-size model


def test_cli_zero_shot_and_embed(siglip2, tmp_path, capsys):
    from naflex_fixtures import photos
    from PIL import Image

    import jimm
    from jimm.cli import main

    path, _ = siglip2
    files = []
    for name in ("rocket_crop", "coffee"):
        files.append(str(tmp_path / f"{name}.png"))
        Image.fromarray(photos()[name]).save(files[-1])
    assert main(["zero-shot", str(path), *files, "--labels", "cat,rocket", "--max-num-patches", "64", "--json",
                 "--quiet"]) == 0  # fmt: skip
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = jimm.from_pretrained(path).zero_shot(files, ["cat", "rocket"], max_num_patches=64)
    got = np.array([[row["probs"][label] for label in ("cat", "rocket")] for row in rows])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    out = tmp_path / "e.npy"
    assert main(["embed", str(path), *files, "--out", str(out), "--max-num-patches", "100", "--quiet"]) == 0
    assert np.load(out).shape == (2, 39)


def test_jimm_features_on_each_images_own_grid(siglip2, tmp_path):
    from naflex_fixtures import photos
    from PIL import Image

    import jimm
    from jimm.cli import main
    from jimm.data.naflex import NaFlexProcessorConfig, preprocess_naflex

    path, _ = siglip2
    files = []
    for name in ("rocket_crop", "coffee"):
        files.append(tmp_path / f"{name}.png")
        Image.fromarray(photos()[name]).save(files[-1])
    assert (
        main(["features", str(path), *map(str, files), "--out", str(tmp_path / "out"), "--max-num-patches", "64"]) == 0
    )
    model = jimm.from_pretrained(path)
    config = NaFlexProcessorConfig.for_model(model, max_num_patches=64)
    inputs = preprocess_naflex([np.asarray(Image.open(f)) for f in files], config)
    tokens = np.asarray(model.forward_features(inputs))
    for i, name in enumerate(("rocket_crop", "coffee")):
        h, w = inputs.spatial_shapes[i]
        saved = np.load(tmp_path / "out" / f"{name}_features.npy")
        assert saved.shape == (h, w, 39)
        np.testing.assert_allclose(saved, tokens[i, : h * w].reshape(h, w, 39), atol=1e-5)
        with Image.open(tmp_path / "out" / f"{name}_pca.png") as pca:
            assert pca.size == (2 * w * 8, h * 8)  # the model's view and the PCA map, side by side
    assert tuple(inputs.spatial_shapes[0]) == (12, 5)  # the portrait stays a portrait


@pytest.mark.parametrize("preset", ["fsdp", "data_parallel"])
def test_sharded_siglip2_matches_unsharded(tmp_path, preset):
    """Under a (2, 4) mesh with the batch (and for fsdp the parameters) sharded, embeddings equal the unsharded
    model's. fsdp splits widths and head dims 4 ways: this model is 48 wide (4 heads of 12), its text 36."""
    from jax.sharding import AxisType
    from naflex_fixtures import save_siglip2

    from jimm import sharding as shd
    from jimm.models.siglip2 import SigLIP2

    text = {"hidden_size": 36, "intermediate_size": 20, "projection_size": 48}
    save_siglip2(tmp_path, hidden_size=48, num_attention_heads=4, intermediate_size=24, text=text)
    _, inputs = _inputs(tmp_path, 64)
    inputs = type(inputs)(*(np.concatenate([a, a[:2]]) for a in inputs))  # 8 images: one per device
    expected = np.asarray(SigLIP2.from_pretrained(tmp_path, sharding=None).encode_image(inputs))
    spec = {
        "fsdp": lambda: shd.fsdp_sharding(shard_batch=True),
        "data_parallel": lambda: shd.data_parallel_sharding(data=("data", "fsdp")),
    }[preset]
    mesh = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(AxisType.Explicit,) * 2)
    with jax.set_mesh(mesh):
        model = SigLIP2.from_pretrained(tmp_path, sharding=spec())
        out = model.encode_image(inputs)
        assert out.sharding.spec[0] == ("data", "fsdp")
        np.testing.assert_allclose(np.asarray(out), expected, atol=1e-5, rtol=0)


def test_standalone_towers_load_save_and_match(siglip2, tmp_path):
    """Each tower loads from the pair (the other skipped), matches transformers, and saves as transformers'
    `Siglip2VisionModel` / `Siglip2TextModel`, which `jimm.from_pretrained` dispatches back to the tower."""
    import torch
    import transformers as T

    import jimm
    from jimm.models.siglip2 import SigLIP2TextModel, SigLIP2VisionModel

    path, hf_model = siglip2
    hf_inputs, inputs = _inputs(path, 64)
    vision = SigLIP2VisionModel.from_pretrained(path)
    with torch.no_grad():
        expected = hf_model.vision_model(**hf_inputs).pooler_output.numpy()
    np.testing.assert_allclose(np.asarray(vision(inputs)), expected, atol=1e-5, rtol=0)
    vision.save_pretrained(tmp_path / "vision")
    hf_vision, info = T.Siglip2VisionModel.from_pretrained(tmp_path / "vision", output_loading_info=True)
    assert {k: v for k, v in info.items() if v} == {}
    with torch.no_grad():
        np.testing.assert_allclose(hf_vision(**hf_inputs).pooler_output.numpy(), expected, atol=1e-5, rtol=0)
    assert isinstance(jimm.from_pretrained(tmp_path / "vision"), SigLIP2VisionModel)

    text = SigLIP2TextModel.from_pretrained(path)
    ids = text.tokenize(["a photo of a cat.", "a rocket"])
    with torch.no_grad():
        expected = hf_model.text_model(input_ids=torch.from_numpy(np.asarray(ids)).long()).pooler_output.numpy()
    np.testing.assert_allclose(np.asarray(text(ids)), expected, atol=1e-5, rtol=0)
    text.save_pretrained(tmp_path / "text")
    _, info = T.Siglip2TextModel.from_pretrained(tmp_path / "text", output_loading_info=True)
    assert {k: v for k, v in info.items() if v} == {}
    assert isinstance(jimm.from_pretrained(tmp_path / "text"), SigLIP2TextModel)


def test_feature_api_on_naflex_inputs(siglip2):
    from naflex_fixtures import photos
    from transformers import AutoImageProcessor

    import jimm
    from jimm.data.naflex import NaFlexInputs

    path, _ = siglip2
    _, inputs = _inputs(path, 64)
    model = jimm.from_pretrained(path)
    maps = np.asarray(model.attention_maps(inputs))  # [L, B, N, M, M]
    assert maps.shape == (2, 6, 3, 64, 64)
    real = inputs.pixel_attention_mask.astype(bool)
    np.testing.assert_allclose(maps.sum(-1), 1, atol=1e-5)
    assert np.abs(maps[..., ~real[1]][:, 1]).max() == 0  # image 1's padded keys get no weight
    hidden = model.hidden_states(inputs)
    last, blocks = model.forward_intermediates(inputs, [0, -1], output_fmt="NLC")
    np.testing.assert_allclose(np.asarray(blocks[0]), np.asarray(hidden[1]), atol=1e-6)
    np.testing.assert_allclose(np.asarray(last), np.asarray(model.forward_features(inputs)), atol=1e-6)
    hf_batch = AutoImageProcessor.from_pretrained(path)(images=list(photos().values()), max_num_patches=64,
                                                        return_tensors="np")  # fmt: skip
    np.testing.assert_allclose(
        np.asarray(model.encode_image(NaFlexInputs(**hf_batch))), np.asarray(model.encode_image(inputs)), atol=1e-6
    )
    own = model.preprocess(list(photos().values()), max_num_patches=64)  # the checkpoint's processor
    np.testing.assert_array_equal(own.pixel_values, inputs.pixel_values)
    with pytest.raises(ValueError, match="use output_fmt='NLC'"):
        model.forward_intermediates(inputs, output_fmt="NHWC")
    with pytest.raises(TypeError, match="takes NaFlexInputs"):
        model.encode_image(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"pixel_values must be \[batch, patches, 192\]"):
        model.encode_image(inputs._replace(pixel_values=inputs.pixel_values[..., :-1]))


def test_classifier_matches_transformers_and_round_trips(tmp_path):
    """transformers' `Siglip2ForImageClassification` (the mean of the real patch tokens, then a linear layer)
    loads as `SigLIP2VisionModel` with its head, gives the same logits, and saves back in its format."""
    import torch
    import transformers as T
    from image_text_fixtures import perturb
    from naflex_fixtures import TEXT, VISION, processor_folder

    import jimm
    from jimm.models.siglip2 import SigLIP2VisionModel

    torch.manual_seed(0)
    config = T.Siglip2Config(vision_config=VISION, text_config={**TEXT, "vocab_size": 99}, num_labels=5)
    hf = perturb(T.Siglip2ForImageClassification(config))
    hf.save_pretrained(tmp_path / "hf")
    processor_folder(tmp_path / "hf", patch_size=8)
    hf_inputs, inputs = _inputs(tmp_path / "hf", 64)
    model = jimm.from_pretrained(tmp_path / "hf")
    assert isinstance(model, SigLIP2VisionModel) and model.do_classification and model.num_classes == 5
    with torch.no_grad():
        expected = hf(**hf_inputs).logits.numpy()
    np.testing.assert_allclose(np.asarray(model(inputs)), expected, atol=1e-5, rtol=0)
    model.save_pretrained(tmp_path / "saved")
    again, info = T.Siglip2ForImageClassification.from_pretrained(tmp_path / "saved", output_loading_info=True)
    assert {k: v for k, v in info.items() if v} == {}
    with torch.no_grad():
        np.testing.assert_allclose(again(**hf_inputs).logits.numpy(), expected, atol=1e-5, rtol=0)
    new_head = SigLIP2VisionModel.from_pretrained(tmp_path / "hf", num_classes=3)
    assert np.asarray(new_head(inputs)).shape == (6, 3)
