"""`jimm train --from CLIP_CHECKPOINT`: the vision tower gets a new classifier, trains with the existing trainer,
and the result saves as transformers' `CLIPForImageClassification`; `--head-only` leaves the tower untouched."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from image_text_fixtures import quiet_transformers, save_pair
from PIL import Image

import jimm
from jimm.cli import main
from jimm.io.safetensors import SafetensorsFile


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip")
    save_pair("clip", path, seed=4)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from skimage import data

    root = tmp_path_factory.mktemp("folder")
    for name, image in (("cat", data.chelsea()), ("coffee", data.coffee())):
        (root / name).mkdir()
        for i in range(4):
            Image.fromarray(np.roll(image, 9 * i, axis=1)).save(root / name / f"{i}.png")
    return root


def test_head_only_finetune_saves_a_transformers_classifier(checkpoint, folder, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--from", str(checkpoint), "--data", str(folder), "--val-fraction", "0.25", "--steps", "2",
            "--batch-size", "4", "--lr", "1e-2", "--warmup-steps", "0", "--head-only", "--out", str(out),
            "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert "model saved to" in capsys.readouterr().out
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["architectures"] == ["CLIPForImageClassification"]
    assert config["id2label"] == {"0": "cat", "1": "coffee"}
    saved, original = out / "model" / "model.safetensors", checkpoint / "model.safetensors"
    with SafetensorsFile(saved) as f, SafetensorsFile(original) as g:
        body = "vision_model.encoder.layers.0.self_attn.q_proj.weight"
        assert np.array_equal(f.read(body), g.read(body))  # frozen: a linear probe
        assert f.shape("classifier.weight") == (2, 18) and "visual_projection.weight" not in f.keys()
    from transformers import CLIPForImageClassification, CLIPImageProcessor

    quiet_transformers()
    hf = CLIPForImageClassification.from_pretrained(out / "model").eval()
    pixels = CLIPImageProcessor.from_pretrained(out / "model")(images=Image.open(folder / "cat" / "0.png"))
    with torch.no_grad():
        expected = hf(pixel_values=torch.from_numpy(np.asarray(pixels["pixel_values"]))).logits.softmax(-1).numpy()
    model = jimm.from_pretrained(out / "model")
    assert type(model) is jimm.CLIPVisionModel and model.do_classification
    assert main(["predict", str(out / "model"), str(folder / "cat" / "0.png"), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    shown = {line.split()[1]: float(line.split()[0].rstrip("%")) for line in lines[1:]}
    assert shown == pytest.approx({"cat": 100 * expected[0, 0], "coffee": 100 * expected[0, 1]}, abs=0.006)


def test_text_checkpoints_cannot_be_fine_tuned_as_classifiers(checkpoint, tmp_path, capsys):
    from transformers import CLIPTextModel

    quiet_transformers()
    CLIPTextModel.from_pretrained(checkpoint).save_pretrained(tmp_path / "text")
    args = ["train", "--from", str(tmp_path / "text"), "--data", "digits", "--out", str(tmp_path / "o"), "--quiet"]
    assert main(args) == 2
    assert "is a text model (CLIPTextModel); it has no image tower" in capsys.readouterr().err
