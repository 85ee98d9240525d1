"""SigLIP 2 NaFlex through the folder commands: `ImageStream` decodes each file to its own patch grid and pads each
batch to `max_num_patches`, so `jimm embed`, `jimm zero-shot`, `jimm features` and `jimm index` / `jimm search`
give what the Python API gives image by image, with bad files skipped."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def siglip2_dir(tmp_path_factory):
    from naflex_fixtures import save_siglip2

    path = tmp_path_factory.mktemp("siglip2")
    save_siglip2(path)
    return path


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """Five photos of mixed aspect ratios (square, landscapes, a portrait, a sliver) in nested folders, one bad file."""
    from naflex_fixtures import photos
    from PIL import Image

    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    names = ["astronaut", "coffee", "rocket_crop", "sliver", "chelsea"]
    for i, name in enumerate(names):
        Image.fromarray(photos()[name]).save(root / ("sub" if i % 2 else ".") / f"{name}.png")
    (root / "broken.jpg").write_bytes(b"not a jpeg")
    return root


def test_embed_folder_equals_embed_images_per_image(siglip2_dir, photo_folder, tmp_path, capsys):
    import jimm
    from jimm.cli import main
    from jimm.image_text import embed_images
    from jimm.io.tables import read_embeddings

    out = tmp_path / "e.npy"
    args = ["embed", str(siglip2_dir), str(photo_folder), "--output", str(out), "--max-num-patches", "64"]
    assert main([*args, "--batch-size", "2", "--quiet"]) == 0  # 5 images: the last batch is padded
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "skipped 1 of 6" in err
    names, vectors = read_embeddings(out)
    assert len(names) == 5 and vectors.shape == (5, 39)
    model = jimm.from_pretrained(siglip2_dir)
    for name, vector in zip(names, vectors, strict=True):  # one image at a time, through the Python API
        np.testing.assert_allclose(vector, embed_images(model, [name], max_num_patches=64)[0], atol=1e-5, rtol=0)
    default = embed_images(model, names[:1])  # the checkpoint's budget (256) is a different picture
    assert np.abs(default[0] - vectors[0]).max() > 1e-3


def test_zero_shot_and_features_folder(siglip2_dir, photo_folder, tmp_path, capsys):
    import jimm
    from jimm.cli import main
    from jimm.data.naflex import NaFlexProcessorConfig, preprocess_naflex

    labels = ["cat", "rocket"]
    assert main(["zero-shot", str(siglip2_dir), str(photo_folder), "--labels", ",".join(labels), "--json",
                 "--max-num-patches", "64", "--batch-size", "3", "--quiet"]) == 0  # fmt: skip
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    files = [row["image"] for row in rows]
    model = jimm.from_pretrained(siglip2_dir)
    expected = model.zero_shot(files, labels, max_num_patches=64)
    got = np.array([[row["probs"][label] for label in labels] for row in rows])
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)

    out = tmp_path / "features"
    assert main(["features", str(siglip2_dir), str(photo_folder), "--out", str(out), "--max-num-patches", "64",
                 "--batch-size", "2", "--quiet"]) == 0  # fmt: skip
    inputs = preprocess_naflex(files, NaFlexProcessorConfig.for_model(model, max_num_patches=64))
    tokens = np.asarray(model.forward_features(inputs))
    for i, file in enumerate(files):
        h, w = (int(n) for n in inputs.spatial_shapes[i])
        saved = np.load(out / f"{file.rsplit('/', 1)[-1][:-4]}_features.npy")
        np.testing.assert_allclose(saved, tokens[i, : h * w].reshape(h, w, 39), atol=1e-5, rtol=0)


def test_index_and_image_search_keep_the_patch_budget(siglip2_dir, photo_folder, tmp_path, capsys):
    from jimm.cli import main
    from jimm.search import ImageIndex

    index = tmp_path / "idx"
    assert main(["index", str(siglip2_dir), str(photo_folder), "--out", str(index), "--max-num-patches", "64",
                 "--quiet"]) == 0  # fmt: skip
    assert ImageIndex.load(index).processor().max_num_patches == 64
    capsys.readouterr()
    query = str(photo_folder / "astronaut.png")
    assert main(["search", str(index), "--image", query, "--json", "--top-k", "1"]) == 0
    hit = json.loads(capsys.readouterr().out)["results"][0]
    assert hit["file"] == query and hit["score"] == pytest.approx(1.0, abs=1e-5)
    assert main(["index", str(siglip2_dir), str(photo_folder), "--out", str(index), "--max-num-patches", "100"]) == 2
    assert "max_num_patches=64" in capsys.readouterr().err


def test_max_num_patches_on_a_fixed_size_model_is_a_clear_error(photo_folder, tmp_path, capsys):
    from image_text_fixtures import save_pair

    from jimm.cli import main

    clip = tmp_path / "clip"
    save_pair("clip", clip)
    for command in (["embed", "--output", str(tmp_path / "e.npy")], ["features", "--out", str(tmp_path / "f")]):
        assert main([command[0], str(clip), str(photo_folder), *command[1:], "--max-num-patches", "64"]) == 2
        assert "max_num_patches (--max-num-patches) is for SigLIP 2 NaFlex models" in capsys.readouterr().err
