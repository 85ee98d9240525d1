"""The `jimm` command end to end through `jimm.cli.main` (and a subprocess), against transformers."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import hf_model
from PIL import Image

import jimm
from jimm.cli import main
from jimm.io.safetensors import SafetensorsFile

SRC = str(Path(jimm.__file__).resolve().parents[1])
CLASSES = ("cat", "dog", "emu")


def _processor():
    from transformers import ViTImageProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    return ViTImageProcessor(
        size={"height": 33, "width": 33}, resample=3, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.25]
    )


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A tiny random transformers ViT (13 labels, 33 px) saved with its preprocessor config."""
    path = tmp_path_factory.mktemp("hf")
    model = hf_model(seed=1)
    model.config.id2label = {i: f"class_{i}" for i in range(13)}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    model.save_pretrained(path)
    _processor().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from skimage.data import chelsea
    from sklearn.datasets import load_sample_image

    path = tmp_path_factory.mktemp("photos")
    china = Image.fromarray(load_sample_image("china.jpg"))
    cat = Image.fromarray(chelsea())
    china.save(path / "china.jpg")
    cat.convert("L").save(path / "gray.png")
    cat.convert("RGBA").resize((61, 47)).save(path / "rgba.png")
    return [path / "china.jpg", path / "gray.png", path / "rgba.png"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, photos):
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    base = np.asarray(Image.open(photos[0]).convert("RGB").resize((40, 40)))
    for c, name in enumerate(CLASSES):
        (root / name).mkdir()
        for i in range(8):
            tint = np.clip(base.astype(int) + rng.integers(-20, 20, base.shape) + 60 * (c - 1), 0, 255).astype(np.uint8)
            Image.fromarray(tint).save(root / name / f"{i}.png")
    return root


def _reference_probs(model_dir, paths):
    from transformers import ViTForImageClassification, ViTImageProcessor

    model = ViTForImageClassification.from_pretrained(model_dir).eval()
    processor = ViTImageProcessor.from_pretrained(model_dir)
    pixels = processor(images=[Image.open(p).convert("RGB") for p in paths], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        return torch.softmax(model(pixel_values=pixels).logits, -1).numpy(), model.config.id2label


def test_predict_matches_transformers(hf_dir, photos, capsys):
    assert main(["predict", str(hf_dir), *map(str, photos), "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    probs, id2label = _reference_probs(hf_dir, photos)
    blocks = out.strip().split("\n")
    assert len(blocks) == 4 * len(photos)
    for i, path in enumerate(photos):
        assert blocks[4 * i] == str(path)
        order = np.argsort(-probs[i])[:3]
        for line, k in zip(blocks[4 * i + 1 : 4 * i + 4], order, strict=True):
            pct, label = line.split()
            assert label == id2label[int(k)]
            assert float(pct.rstrip("%")) == pytest.approx(100 * probs[i][k], abs=0.006)


def test_finetune_new_labels_then_eval_matches_transformers(hf_dir, folder, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--from", str(hf_dir), "--data", str(folder), "--val-fraction", "0.25", "--steps", "4",
            "--batch-size", "6", "--grad-accum", "2", "--lr", "1e-3", "--warmup-steps", "1",
            "--out", str(out), "--quiet"]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "validation accuracy" in text and "model saved to" in text
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "cat", "1": "dog", "2": "emu"}
    with SafetensorsFile(out / "model" / "model.safetensors") as f:
        assert f.shape("classifier.weight") == (3, 15) and f.shape("classifier.bias") == (3,)
        with SafetensorsFile(hf_dir / "model.safetensors") as g:  # the body was fine-tuned, not re-initialised
            body = "vit.embeddings.patch_embeddings.projection.weight"
            delta = np.abs(f.read(body) - g.read(body)).max()
            assert 0 < delta < 0.1
    pre = json.loads((out / "model" / "preprocessor_config.json").read_text())
    assert pre["image_mean"] == [0.4, 0.5, 0.6] and pre["resample"] == 3  # the checkpoint's preprocessing is kept

    assert (
        main(["eval", str(out / "model"), "--data", str(folder), "--val-fraction", "0.25", "--split", "validation"])
        == 0
    )
    line = capsys.readouterr().out
    acc, loss, count = re.search(r"accuracy ([\d.]+)%\s+loss ([\d.]+)\s+\((\d+) images", line).groups()
    from jimm.data import image_folder

    val = image_folder(folder, val_fraction=0.25)["validation"]
    probs, _ = _reference_probs(out / "model", val.paths)
    assert int(count) == len(val) == 6
    assert float(acc) == pytest.approx(100 * np.mean(probs.argmax(-1) == val.label_ids), abs=0.01)
    ref_loss = -np.mean(np.log(probs[np.arange(len(val)), val.label_ids]))
    assert float(loss) == pytest.approx(ref_loss, abs=2e-4)


def test_convert_bin_sharded_and_dtype(hf_dir, tmp_path, capsys):
    from transformers import ViTForImageClassification

    bin_dir, sharded = tmp_path / "bin", tmp_path / "sharded"
    assert main(["convert", str(hf_dir), str(bin_dir), "--to", "pytorch"]) == 0
    assert (bin_dir / "pytorch_model.bin").is_file() and (bin_dir / "preprocessor_config.json").is_file()
    assert main(["convert", str(bin_dir), str(sharded), "--max-shard-size", "2KB", "--dtype", "bfloat16"]) == 0
    assert "weight file(s)" in capsys.readouterr().out
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 3
    reference = ViTForImageClassification.from_pretrained(hf_dir).state_dict()
    restored = ViTForImageClassification.from_pretrained(sharded, dtype=torch.bfloat16).state_dict()
    assert sorted(reference) == sorted(restored)
    for name, value in reference.items():
        assert restored[name].dtype == torch.bfloat16
        assert torch.equal(restored[name], value.to(torch.bfloat16)), name
    assert json.loads((sharded / "config.json").read_text())["dtype"] == "bfloat16"
    model = jimm.VisionTransformer.from_pretrained(sharded, sharding=None)  # jimm reads it back too
    assert model.num_classes == 13


def test_bench_side_by_side(capsys):
    args = [
        "bench",
        "--model",
        "micro/4",
        "--image-size",
        "8",
        "--batch-size",
        "2",
        "--warmup",
        "1",
        "--iters",
        "1",
        "--torch",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:]}
    assert set(rows) == {"jimm", "transformers", "jimm/torch"}
    assert float(rows["jimm"][0]) > 0 and float(rows["transformers"][1]) > 0


def test_demo_short_run(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--steps", "40", "--quiet"]) == 0
    out = capsys.readouterr().out
    accuracy = float(re.search(r"test accuracy: ([\d.]+)% on 359 held-out digits", out).group(1))
    assert 15.0 < accuracy <= 100.0  # 40 steps learn something; the full demo is measured separately
    assert len(re.findall(r"predicted \d \(", out)) == 8
    assert (tmp_path / "demo" / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((tmp_path / "demo" / "samples").glob("*.png"))) == 8
    assert json.loads((tmp_path / "demo" / "model" / "config.json").read_text())["id2label"]["7"] == "7"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "{tmp}", "x.png"], "has no HF config.json"),
        (["train", "--model", "huge/16", "--data", "digits", "--out", "{tmp}/o"], "unknown model size 'huge/16'"),
        (
            ["train", "--model", "micro/4", "--data", "digits", "--out", "{tmp}/o", "--lr", "-1"],
            "learning rate must be > 0",
        ),
        (["train", "--model", "micro/4", "--data", "{tmp}/nowhere", "--out", "{tmp}/o"], "does not exist"),
        (["train", "--model", "micro/5", "--data", "digits", "--out", "{tmp}/o"], "not a multiple of patch size"),
        (["eval", "{tmp}/nothing", "--data", "digits"], "not a model directory"),
        (
            ["train", "--from", "{tmp}", "--data", "digits", "--out", "{tmp}/o", "--image-size", "32"],
            "apply to --model",
        ),
        (["convert", "{tmp}", "{tmp}/out"], "has no config.json"),
    ],
)
def test_user_errors_are_one_line_without_traceback(argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.startswith("jimm: error:")


def test_argparse_rejects_out_of_range_numbers(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--model", "micro/4", "--data", "digits", "--out", "x", "--steps", "0"])
    assert exit_info.value.code == 2
    assert "must be a positive integer" in capsys.readouterr().err


def test_subprocess_entry_point_reports_errors_cleanly(tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, "-m", "jimm.cli", "eval", str(tmp_path), "--data", "digits"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "has no HF config.json" in done.stderr and "Traceback" not in done.stderr
    helped = subprocess.run(
        [sys.executable, "-m", "jimm.cli", "--help"], env=env, capture_output=True, text=True, timeout=60
    )
    assert helped.returncode == 0 and all(
        c in helped.stdout for c in ("predict", "train", "eval", "convert", "bench", "demo")
    )
