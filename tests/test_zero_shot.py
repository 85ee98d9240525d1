"""Zero-shot classification and embeddings (Python and `jimm zero-shot` / `jimm embed`) on real photos
(scikit-image's), against the same computation in transformers with its own processor and tokenizer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from image_text_fixtures import quiet_transformers, save_pair
from PIL import Image

import jimm
from jimm.cli import main

LABELS = ["cat", "dog", "car", "coffee cup"]
TIE = 1e-5  # probabilities closer than the parity tolerance have no determined order


def assert_most_likely_first(ordered: list[str], want: np.ndarray) -> None:
    """`ordered` lists LABELS most likely first wherever the order is determined: the tiny SigLIP fixture keeps 7
    text tokens, so different labels can become the same tokens and tie; their order among themselves is free."""
    rank = {label: i for i, label in enumerate(ordered)}
    for a, pa in zip(LABELS, want, strict=True):
        for b, pb in zip(LABELS, want, strict=True):
            if pa > pb + TIE:
                assert rank[a] < rank[b], f"{a} ({pa:.6f}) listed after {b} ({pb:.6f}): {ordered}"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from skimage import data

    path = tmp_path_factory.mktemp("photos")
    files = []
    for name, image in (
        ("chelsea.png", data.chelsea()),
        ("astronaut.jpg", data.astronaut()),
        ("coffee.png", data.coffee()),
    ):
        Image.fromarray(image).save(path / name)
        files.append(str(path / name))
    return files


@pytest.fixture(scope="module", params=["clip", "siglip"])
def family(request, tmp_path_factory):
    kind = request.param
    path = tmp_path_factory.mktemp(f"{kind}-zero-shot")
    hf = save_pair(kind, path, seed=21)
    return kind, hf, path, jimm.from_pretrained(path)


def transformers_probabilities(kind, hf, path, files, labels, template="a photo of a {}."):
    from transformers import AutoImageProcessor, AutoTokenizer

    quiet_transformers()
    processor, tokenizer = AutoImageProcessor.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    pixels = processor(images=[Image.open(f) for f in files], return_tensors="pt")["pixel_values"]
    length = hf.config.text_config.max_position_embeddings
    ids = tokenizer([template.format(label) for label in labels], padding="max_length", max_length=length,
                    truncation=True, return_tensors="pt")["input_ids"]  # fmt: skip
    with torch.no_grad():
        logits = hf(pixel_values=pixels, input_ids=ids).logits_per_image
    return (logits.softmax(-1) if kind == "clip" else logits.sigmoid()).numpy()


def test_zero_shot_equals_transformers(family, photos):
    """Paths, PIL images and uint8 arrays alike; batches of 2 (the last one padded) equal one batch of 3."""
    kind, hf, path, model = family
    expected = transformers_probabilities(kind, hf, path, photos, LABELS)
    mixed = [photos[0], Image.open(photos[1]), np.asarray(Image.open(photos[2]))]
    probs = model.zero_shot(mixed, LABELS, batch_size=2 if kind == "clip" else 3)
    assert probs.shape == (3, 4) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, expected, atol=1e-5, rtol=0)
    if kind == "clip":
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(model.zero_shot(photos, LABELS), probs, atol=1e-6)  # one batch of 3


def test_bad_zero_shot_input_is_a_clear_error(family, photos):
    _, _, _, model = family
    with pytest.raises(ValueError, match="labels is empty"):
        model.zero_shot(photos, [])
    with pytest.raises(TypeError, match="list of strings"):
        model.zero_shot(photos, "cat,dog")
    with pytest.raises(ValueError, match="has no '{}'"):
        model.zero_shot(photos, LABELS, template="a photo")
    with pytest.raises(ValueError, match="no images"):
        model.zero_shot([], LABELS)
    tokenizer, model.tokenizer = model.tokenizer, None
    try:
        with pytest.raises(ValueError, match="has no tokenizer"):
            model.zero_shot(photos, LABELS)
    finally:
        model.tokenizer = tokenizer


def test_cli_zero_shot_and_embed(family, photos, tmp_path, capsys):
    kind, hf, path, model = family
    # a reload has an equal tokenizer, so the same graph: the CLI runs below reuse the compiled functions
    assert jimm.from_pretrained(path).tokenizer == model.tokenizer
    assert main(["zero-shot", str(path), *photos, "--labels", ",".join(LABELS), "--json", "--quiet"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["image"] for row in rows] == photos
    expected = transformers_probabilities(kind, hf, path, photos, LABELS)
    for row, want in zip(rows, expected, strict=True):
        assert sorted(row["probs"]) == sorted(LABELS)
        assert_most_likely_first(list(row["probs"]), want)
        np.testing.assert_allclose([row["probs"][label] for label in LABELS], want, atol=1e-5)
    assert main(["zero-shot", str(path), *photos, "--labels", ",".join(LABELS), "--top-k", "1", "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[::2] == photos and len(lines) == 6
    for line, want in zip(lines[1::2], expected, strict=True):
        tied_best = {LABELS[i].split()[-1] for i in np.flatnonzero(want >= want.max() - TIE)}
        assert line.split()[-1] in tied_best and line.strip().startswith(f"{want.max():.2%}")

    out = tmp_path / "images.npy"
    assert main(["embed", str(path), *photos, "--out", str(out), "--quiet"]) == 0
    embeddings = np.load(out)
    assert embeddings.shape == (3, 11 if kind == "clip" else 21)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=-1), 1.0, atol=1e-5)
    prompts = [arg for label in LABELS for arg in ("--text", f"a photo of a {label}.")]
    assert main(["embed", str(path), *prompts, "--out", str(tmp_path / "t.npy")]) == 0
    texts = np.load(tmp_path / "t.npy")
    assert texts.shape == (4, embeddings.shape[1])
    with torch.no_grad():  # the embeddings give back transformers' zero-shot probabilities
        logits = hf.logit_scale.exp().item() * embeddings @ texts.T
        if kind == "siglip":
            logits = logits + hf.logit_bias.item()
    probs = torch.from_numpy(logits).softmax(-1) if kind == "clip" else torch.from_numpy(logits).sigmoid()
    np.testing.assert_allclose(probs.numpy(), expected, atol=1e-5)
    capsys.readouterr()
    assert main(["embed", str(path), photos[0], "--text", "x", "--out", str(out)]) == 2
    assert "either image files or --text" in capsys.readouterr().err
