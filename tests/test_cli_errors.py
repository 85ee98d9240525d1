"""The `jimm` command on bad input, table-driven (issue 13, section 4).

Every case runs `jimm.cli.main(argv)` in-process and asserts: exit status 2, stderr is exactly one
`jimm: error: ...` line naming the problem (and the fix), no traceback, and nothing left behind: the inputs
are unchanged and the output folder holds exactly what it held before (no empty run folder from a failed
`train`, no empty destination from a refused `convert`). Inputs are tiny files built once per module.
"""

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import hf_model
from PIL import Image

import jimm
from jimm.cli import main

SRC = str(Path(jimm.__file__).resolve().parents[1])
ANIMALS = {0: "cat", 1: "dog", 2: "bird"}
TRAIN = ["--model", "micro/4", "--image-size", "16", "--batch-size", "2", "--quiet"]


def _save_hf(path: Path, labels: dict[int, str] | None, headless: bool = False) -> Path:
    model = hf_model(seed=2, num_labels=3, headless=headless)
    if labels is not None:
        model.config.id2label = dict(labels)
        model.config.label2id = {v: k for k, v in labels.items()}
    model.save_pretrained(path)
    return path


def _images(folder: Path, classes, n: int = 4, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for c in classes:
        (folder / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(folder / c / f"{i}.png")
    return folder


def _edit_header(path: Path, edit=None, *, shift: int = 0, tail: bytes = b"") -> None:
    """Rewrite a safetensors header (space-padded, as transformers writes it), optionally editing its JSON,
    declaring it `shift` bytes shorter, or appending bytes."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    if edit is not None:
        edit(header)
    text = json.dumps(header).encode()
    text += b" " * (8 - len(text) % 8)  # at least one padding space, so a shift keeps valid JSON
    path.write_bytes(struct.pack("<Q", len(text) - shift) + text + raw[8 + n :] + tail)


def _first_tensor(header: dict) -> dict:
    return header[next(k for k in sorted(header) if k != "__metadata__")]


def _variant(root: Path, name: str, change) -> None:
    """A copy of the cat/dog/bird model folder with one file changed."""
    shutil.copytree(root / "animal_model", root / name)
    change(root / name)


def _config_edit(edit):
    def change(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        edit(config)
        (folder / "config.json").write_text(json.dumps(config))

    return change


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    _save_hf(root / "animal_model", ANIMALS)
    _save_hf(root / "placeholder_model", None)  # LABEL_0..2
    _save_hf(root / "headless_model", None, headless=True)
    hf_model(seed=3).save_pretrained(root / "model13")  # 13 classes
    _images(root / "xyz", ["x", "y", "z"])
    _images(root / "animals", ["bird", "cat", "dog"])
    _images(root / "single", ["only"])
    _images(root / "broken", ["a", "b"], n=2)
    good = (root / "broken" / "a" / "0.png").read_bytes()
    (root / "broken" / "a" / "cut.png").write_bytes(good[: len(good) // 2])  # header reads, data does not
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "photo.png")
    (root / "notes.txt").write_text("not an image\n")
    (root / "empty").mkdir()

    weights = "model.safetensors"
    _variant(root, "trailing_bytes", lambda f: _edit_header(f / weights, tail=b"\0" * 8))
    _variant(root, "shifted_header", lambda f: _edit_header(f / weights, shift=1))
    _variant(root, "truncated", lambda f: (f / weights).write_bytes((f / weights).read_bytes()[:-100]))
    _variant(root, "huge_shape", lambda f: _edit_header(f / weights, lambda h: _first_tensor(h).update(shape=[10**30])))
    _variant(
        root,
        "infinite_offset",
        lambda f: _edit_header(f / weights, lambda h: _first_tensor(h)["data_offsets"].__setitem__(1, float("inf"))),
    )
    _variant(root, "config_list", lambda f: (f / "config.json").write_text("[1, 2]"))
    _variant(root, "config_empty", lambda f: (f / "config.json").write_text(""))
    _variant(root, "config_nested", lambda f: (f / "config.json").write_text("[" * 100_000 + "]" * 100_000))
    _variant(root, "config_no_model_type", _config_edit(lambda c: c.pop("model_type")))
    _variant(root, "id2label_list", _config_edit(lambda c: c.update(id2label=["cat", "dog", "bird"])))
    _variant(root, "dropout_string", _config_edit(lambda c: c.update(hidden_dropout_prob="0.1")))
    _variant(root, "preprocessor_list", lambda f: (f / "preprocessor_config.json").write_text("[]"))
    _variant(root, "no_config", lambda f: (f / "config.json").unlink())

    return root


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (-1, 0)
        for p in sorted(folder.rglob("*"))
    }


RESUME = ["train", *TRAIN, "--data", "xyz", "--out", "{out}/run", "--steps", "1"]


def _finished_run(root: Path) -> Path:
    """A completed 1-step run (trained once, by the first case that needs it). It starts on top of what a start
    killed before its first checkpoint leaves (an empty checkpoints/, a cut metrics.jsonl), which is allowed."""
    run = root / "finished_run"
    if not (run / "model").is_dir():
        (run / "checkpoints").mkdir(parents=True)
        (run / "metrics.jsonl").write_text('{"step": 1, "split": "train", "loss": 1.0, "accuracy": 0.5}\n{"ste')
        assert main([a.replace("{out}/run", str(run)) for a in RESUME]) == 0
        assert [p.name for p in (run / "checkpoints").iterdir()] == ["1"]
    return run


def _resume_case(damage):
    """Copy the finished run to OUT/run and damage its checkpoint; the rerun must refuse and change nothing."""

    def setup(root: Path, out: Path, monkeypatch) -> None:
        shutil.copytree(_finished_run(root), out / "run")
        damage(out / "run" / "checkpoints" / "1")

    return setup


def _rmtree(path: Path) -> None:
    shutil.rmtree(path)


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def _out_of_disk(root: Path, out: Path, monkeypatch) -> None:
    usage = shutil.disk_usage(out)
    monkeypatch.setattr("jimm.train.checkpoint.shutil.disk_usage", lambda _: usage._replace(free=1000))


def _out_of_memory(root: Path, out: Path, monkeypatch) -> None:
    import jax

    def fail(*args, **kwargs):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9.0GiB.")

    monkeypatch.setattr("jimm.train.bench.bench_jimm", fail)


def _empty_out(root: Path, out: Path, monkeypatch) -> None:
    (out / "run").mkdir()


def _foreign_out(root: Path, out: Path, monkeypatch) -> None:
    (out / "run").mkdir()
    (out / "run" / "thesis.tex").write_text("mine\n")


def case(argv, expected, setup=None, *, id, marks=()):
    """argv (`{out}`: the test's empty output folder; other paths are relative to the inputs), the fragments
    the error line must contain, and an optional `setup(root, out, monkeypatch)`."""
    return pytest.param(argv, expected, setup, id=id, marks=marks)


CASES = [
    # -- predict: the model argument -------------------------------------------------------------------------
    case(["predict", "animal_model/model.safetensors", "photo.png"], ["HF-layout weights", "model folder"],
         id="predict-weights-file-as-model"),
    case(["predict", "animal_model/config.json", "photo.png"], ["not a weights file", "model folder"],
         id="predict-config-file-as-model"),
    case(["predict", "{out}/nowhere", "photo.png"], ["no such folder"], id="predict-missing-absolute"),
    case(["predict", "nowhere.safetensors", "photo.png"], ["no such folder"], id="predict-missing-file-name"),
    case(["predict", "animal_model/typo", "photo.png"], ["no such folder"], id="predict-missing-under-folder"),
    case(["predict", "acme/no-such-vit", "photo.png"], ["not a local folder", "not in the cache"],
         id="predict-hub-id-offline"),
    case(["predict", "empty", "photo.png"], ["has no HF config.json"], id="predict-empty-folder"),
    case(["predict", "xyz", "photo.png"], ["has no HF config.json"], id="predict-dataset-as-model"),
    case(["predict", "no_config", "photo.png"], ["no config.json"], id="predict-weights-without-config"),
    case(["predict", "config_no_model_type", "photo.png"], ["has no model_type"],
         id="predict-config-without-model-type"),
    case(["predict", "config_list", "photo.png"], ["config.json holds a JSON list"], id="predict-config-list"),
    case(["predict", "config_empty", "photo.png"], ["config.json is not valid JSON"],
         id="predict-config-empty"),
    case(["predict", "config_nested", "photo.png"], ["config.json", "nested too deeply"],
         id="predict-config-nested"),
    case(["predict", "id2label_list", "photo.png"], ["id2label must map ids to label names"],
         id="predict-id2label-list"),
    case(["predict", "dropout_string", "photo.png"], ["wrong type", "hidden_dropout_prob='0.1'"],
         id="predict-config-wrong-type"),
    case(["predict", "preprocessor_list", "photo.png"], ["preprocessor", "JSON object"],
         id="predict-preprocessor-list"),
    case(["predict", "truncated", "photo.png"], ["model.safetensors is not a valid safetensors file"],
         id="predict-truncated-weights"),
    case(["predict", "trailing_bytes", "photo.png"], ["model.safetensors"],
         id="predict-trailing-bytes"),
    case(["predict", "shifted_header", "photo.png"], ["model.safetensors"],
         id="predict-header-shifted-one-byte"),
    case(["predict", "huge_shape", "photo.png"], ["model.safetensors"],
         id="predict-30-digit-shape"),
    case(["predict", "infinite_offset", "photo.png"], ["model.safetensors"],
         id="predict-infinite-offset"),
    # -- predict: the images and numbers ----------------------------------------------------------------------
    case(["predict", "animal_model", "missing.png"], ["no such file or folder", "missing.png"],
         id="predict-missing-image"),
    case(["predict", "animal_model", "photo.png", "missing.png", "gone"], ["no such file or folder: missing.png, gone"],
         id="predict-missing-images-all-named"),
    case(["predict", "animal_model", "empty"], ["no files in empty"], id="predict-empty-folder-as-images"),
    case(["predict", "animal_model", "*.jpeg"], ["no files in *.jpeg"], id="predict-glob-matches-nothing"),
    case(["predict", "animal_model", "notes.txt"], ["could be read as an image", "notes.txt"],
         id="predict-text-as-image"),
    case(["predict", "animal_model", "notes.txt", "broken/a/cut.png"],
         ["none of the 2 file(s)", "notes.txt (cannot identify", "cut.png ("], id="predict-only-unreadable-files"),
    case(["predict", "animal_model", "photo.png", "--output", "{out}/p.xlsx"], [".csv / .jsonl / .parquet"],
         id="predict-output-suffix"),
    case(["predict", "animal_model", "photo.png", "--output", "{out}/no/p.csv"], ["no/p.csv does not exist"],
         id="predict-output-folder-missing"),
    case(["predict", "animal_model", "photo.png", "--batch-size", "0"], ["--batch-size", "positive integer"],
         id="predict-batch-size-zero"),
    case(["predict", "animal_model", "photo.png", "--workers", "0"], ["--workers", "positive integer"],
         id="predict-workers-zero"),
    case(["predict", "animal_model", "photo.png", "--top-k", "0"], ["--top-k", "positive integer"],
         id="predict-top-k-zero"),
    case(["predict", "animal_model", "photo.png", "--top-k", "1e9"], ["--top-k", "expected an integer"],
         id="predict-top-k-float"),
    case(["predict", "headless_model", "photo.png"], ["no classifier head"], id="predict-headless"),
    # -- embed, zero-shot, features over files and folders ----------------------------------------------------
    case(["embed", "animal_model", "photo.png", "--output", "{out}/e.csv"], [".npy / .parquet"],
         id="embed-output-suffix"),
    case(["embed", "animal_model", "broken/a/cut.png", "notes.txt", "--output", "{out}/e.npy"],
         ["none of the 2 file(s)", "cut.png"], id="embed-only-unreadable-files"),
    case(["embed", "animal_model", "--output", "{out}/e.npy"], ["either image files or --text"], id="embed-nothing"),
    case(["embed", "animal_model", "--text", "a cat", "--output", "{out}/e.npy"], ["no text tower"],
         id="embed-text-with-a-vision-model"),
    case(["zero-shot", "animal_model", "photo.png", "--labels", "cat,dog"], ["no text tower", "CLIP or SigLIP"],
         id="zero-shot-vision-model"),
    case(["zero-shot", "animal_model", "xyz", "--labels", "cat,dog", "--output", "{out}/z.txt"],
         [".csv / .jsonl / .parquet"], id="zero-shot-output-suffix"),
    case(["features", "animal_model", "notes.txt", "--out", "{out}/f"], ["could be read as an image", "notes.txt"],
         id="features-only-unreadable-files"),
    # -- eval -------------------------------------------------------------------------------------------------
    case(["eval", "animal_model", "--data", "xyz"],
         ["do not match", "x, y, z", "cat, dog, bird", "Name the class folders"], id="eval-labels-mismatch"),
    case(["eval", "model13", "--data", "xyz"], ["3 classes", "13 classes"], id="eval-class-count"),
    case(["eval", "animal_model", "--data", "single"], ["1 class (only)", "3 classes"], id="eval-one-class"),
    case(["eval", "animal_model", "--data", "photo.png"], ["photo.png is a file", "class folders"],
         id="eval-data-is-a-file"),
    case(["eval", "animal_model", "--data", "nowhere"], ["does not exist"], id="eval-data-missing"),
    case(["eval", "animal_model", "--data", "animal_model"], ["no class folders"], id="eval-data-flat-folder"),
    case(["eval", "animal_model", "--data", "animals", "--split", "test"], ["no 'test' split"],
         id="eval-missing-split"),
    case(["eval", "animal_model", "--data", "animals", "--val-fraction", "2"], ["--val-fraction", "[0, 1)"],
         id="eval-val-fraction"),
    case(["eval", "headless_model", "--data", "xyz"], ["no classifier head"], id="eval-headless"),
    case(["eval", "{out}/nothing", "--data", "digits"], ["no such folder"], id="eval-missing-model"),
    # -- train: numbers ---------------------------------------------------------------------------------------
    case(["train", *TRAIN, "--data", "xyz", "--out", "{out}/run", "--dropout", "1.5"],
         ["argument --dropout", "[0, 1)"], id="train-dropout-range"),
    case(["train", *TRAIN, "--data", "xyz", "--out", "{out}/run", "--lr", "inf"], ["learning rate must be > 0"],
         id="train-lr-infinite"),
    case(["train", *TRAIN, "--data", "xyz", "--out", "{out}/run", "--lr", "nan"], ["learning rate must be > 0"],
         id="train-lr-nan"),
    case(["train", *TRAIN, "--data", "xyz", "--out", "{out}/run", "--label-smoothing", "1"],
         ["argument --label-smoothing"], id="train-label-smoothing"),
    case(["train", *TRAIN, "--data", "xyz", "--out", "{out}/run", "--seed", "-1"], ["argument --seed"],
         id="train-seed-negative"),
    case(["train", *TRAIN, "--data", "xyz", "--out", "{out}/run", "--image-size", str(10**20)],
         ["argument --image-size", "at most"], id="train-image-size-huge"),
    case(["train", *TRAIN, "--data", "xyz", "--out", "{out}/run", "--steps", str(2**40)],
         ["steps must be at most"], id="train-steps-huge"),
    case(["train", *TRAIN, "--data", "xyz", "--out", "{out}/run", "--steps", "5", "--warmup-steps", "9"],
         ["warmup steps"], id="train-warmup-past-steps"),
    case(["train", *TRAIN, "--data", "xyz", "--out", "{out}/run", "--grad-accum", "3"], ["not divisible"],
         id="train-grad-accum"),
    case(["train", "--model", "huge/16", "--data", "xyz", "--out", "{out}/run"], ["unknown model size"],
         id="train-model-size"),
    case(["train", "--model", "micro/5", "--image-size", "16", "--data", "xyz", "--out", "{out}/run"],
         ["not a multiple of patch size"], id="train-patch-size"),
    case(["train", "--from", "animal_model", "--data", "xyz", "--out", "{out}/run", "--dropout", "0.1"],
         ["apply to --model"], id="train-from-with-dropout"),
    case(["train", "--model", "micro/4", "--data", "xyz"], ["required", "--out"], id="train-no-out"),
    # -- train: data and folders ------------------------------------------------------------------------------
    case(["train", *TRAIN, "--data", "single", "--out", "{out}/run"], ["only one class", "at least two"],
         id="train-one-class"),
    case(["train", *TRAIN, "--data", "xyz", "--out", "{out}/run", "--batch-size", "64"],
         ["fewer than one batch", "--batch-size"], id="train-batch-larger-than-data"),
    case(["train", *TRAIN, "--data", "photo.png", "--out", "{out}/run"], ["photo.png is a file"],
         id="train-data-is-a-file"),
    case(["train", *TRAIN, "--data", "xyz", "--out", "photo.png"], ["photo.png is a file"],
         id="train-out-is-a-file"),
    case(["train", *TRAIN, "--data", "xyz", "--out", "photo.png/run"], ["photo.png is a file"],
         id="train-out-under-a-file"),
    case(["train", *TRAIN, "--data", "xyz", "--out", "animal_model"], ["not empty", "no checkpoints"],
         id="train-out-holds-a-model"),
    case(["train", *TRAIN, "--data", "xyz", "--out", "{out}/run"], ["not empty", "thesis.tex"],
         _foreign_out, id="train-out-holds-user-files"),
    case(["train", "--from", "animal_model/config.json", "--data", "xyz", "--out", "{out}/run"],
         ["not a weights file"], id="train-from-config-file"),
    case(["train", *TRAIN, "--data", "broken", "--val-fraction", "0", "--batch-size", "5", "--out", "{out}/new/run"],
         ["cannot read image", "cut.png"], id="train-corrupt-image-cleans-up"),
    case(["train", *TRAIN, "--data", "broken", "--val-fraction", "0", "--batch-size", "5", "--out", "{out}/run"],
         ["cannot read image"], _empty_out, id="train-fails-in-an-empty-folder-the-user-made"),
    case(["train", *TRAIN, "--data", "xyz", "--out", "{out}/run", "--steps", "1"],
         ["cannot write the checkpoint of step 1", "checkpoints", "MiB free"], _out_of_disk,
         id="train-disk-full-cleans-up"),
    # -- train: resuming a damaged run (the run must be left exactly as it was) -------------------------------
    case(RESUME, ["checkpoints/1", "damaged", "Delete that folder"],
         _resume_case(lambda step: _rmtree(step / "state")), id="resume-state-deleted"),
    case(RESUME, ["checkpoints/1", "damaged"], _resume_case(lambda step: _write(step / "meta/metadata", "garbage")),
         id="resume-meta-garbage"),
    case(RESUME, ["checkpoints/1", "run record"], _resume_case(lambda step: _write(step / "meta/metadata", "[1]")),
         id="resume-meta-list"),
    case(RESUME, ["checkpoints/1", "damaged"], _resume_case(lambda step: _rmtree(step / "state/ocdbt.process_0/d")),
         id="resume-data-deleted"),
    # -- convert ----------------------------------------------------------------------------------------------
    case(["convert", "nowhere", "{out}/dst"], ["not a model directory"], id="convert-missing-source"),
    case(["convert", "animal_model/model.safetensors", "{out}/dst"], ["not a model directory"],
         id="convert-file-as-source"),
    case(["convert", "empty", "{out}/dst"], ["has no config.json"], id="convert-empty-source"),
    case(["convert", "animal_model", "photo.png"], ["photo.png is a file"], id="convert-destination-file"),
    case(["convert", "animal_model", "animal_model"], ["same folder"], id="convert-onto-itself"),
    case(["convert", "animal_model", "{out}/dst"], ["config.json, which jimm did not write", "--overwrite"],
         lambda root, out, mp: ((out / "dst").mkdir(), (out / "dst" / "config.json").write_text("{}")),
         id="convert-onto-files-jimm-did-not-write"),
    case(["convert", "animal_model", "{out}/dst", "--max-shard-size", "abc"], ["max_shard_size"],
         id="convert-shard-size"),
    case(["convert", "animal_model", "{out}/dst", "--to", "onnx"], ["--to", "invalid choice"],
         id="convert-format"),
    case(["convert", "truncated", "{out}/dst"], ["not a valid safetensors file"], id="convert-truncated"),
    case(["convert", "trailing_bytes", "{out}/dst"], ["model.safetensors"],
         id="convert-trailing-bytes"),
    case(["convert", "shifted_header", "{out}/dst"], ["model.safetensors"],
         id="convert-header-shifted-one-byte"),
    case(["convert", "config_list", "{out}/dst"], ["config.json"], id="convert-config-list"),
    case(["convert", "animal_model", "{out}/dst", "--to", "pytorch", "--max-shard-size", "1KB"],
         ["sharded pytorch_model.bin"], id="convert-refused-leaves-no-destination"),
    # -- bench, demo, the command itself ----------------------------------------------------------------------
    case(["bench", "--model", "huge/16"], ["unknown model size"], id="bench-model-size"),
    case(["bench", "--model", "micro/5", "--image-size", "8"], ["not a multiple"], id="bench-patch-size"),
    case(["bench", "--image-size", "0"], ["--image-size", "positive integer"], id="bench-image-size"),
    case(["bench", "--model", "micro/4"], ["out of memory", "lower --batch-size"], _out_of_memory,
         id="bench-out-of-memory"),
    case(["demo", "--out", "photo.png", "--steps", "2"], ["photo.png is a file"], id="demo-out-is-a-file"),
    case(["demo", "--out", "{out}/run", "--steps", "2"], ["not empty", "thesis.tex"], _foreign_out,
         id="demo-out-holds-user-files"),
    case(["demo", "--steps", "0"], ["--steps", "positive integer"], id="demo-steps"),
    case(["frobnicate"], ["invalid choice"], id="unknown-command"),
    case([], ["required"], id="no-command"),
]  # fmt: skip


@pytest.mark.parametrize("argv, expected, setup", CASES)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(argv, expected, setup, root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(root)
    if setup is not None:
        setup(root, tmp_path, monkeypatch)
    inputs, outputs = _tree(root), _tree(tmp_path)
    capsys.readouterr()
    try:
        code = main([a.replace("{out}", str(tmp_path)) for a in argv])
    except SystemExit as exit_info:  # argparse
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jimm: error: "), err
    for fragment in expected:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert "ViTConfig." not in lines[0]  # errors name the flag or file, not an internal field
    assert _tree(root) == inputs, "the inputs changed"
    assert _tree(tmp_path) == outputs, "something was left behind"


def test_eval_matches_class_folders_to_labels_by_name(root, capsys):
    """Folders bird/cat/dog (sorted ids 0/1/2) against a cat/dog/bird model: scored by name, not by position."""
    from jimm.data import image_folder
    from jimm.data.preprocess import ImageProcessorConfig
    from jimm.train.evaluate import predict_files

    assert main(["eval", str(root / "animal_model"), "--data", str(root / "animals"), "--val-fraction", "0"]) == 0
    accuracy = float(capsys.readouterr().out.split("accuracy ")[1].split("%")[0])
    split = image_folder(root / "animals", val_fraction=0)["train"]
    model = jimm.VisionTransformer.from_pretrained(root / "animal_model", sharding=None)
    top = predict_files(model, split.paths, ImageProcessorConfig.for_model(model), top_k=1)
    truth = [split.labels[i] for i in split.label_ids]
    assert accuracy == pytest.approx(100 * np.mean([t[0][0] == y for t, y in zip(top, truth, strict=True)]), abs=0.01)


def test_eval_placeholder_labels_match_by_position(root, capsys):
    assert main(["eval", str(root / "placeholder_model"), "--data", str(root / "xyz"), "--val-fraction", "0"]) == 0
    assert "(12 images)" in capsys.readouterr().out


def test_interrupt_before_the_first_checkpoint_leaves_nothing(root, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("jimm.train.trainer.train_step", interrupted)
    run = tmp_path / "run"
    assert main(["train", *TRAIN, "--data", str(root / "xyz"), "--out", str(run), "--steps", "2"]) == 130
    assert capsys.readouterr().err.splitlines() == [
        "jimm: interrupted; rerun the same command to resume from the last checkpoint"
    ]
    assert not run.exists()


def test_disk_full_during_a_checkpoint_write_is_one_line_in_a_subprocess(root, tmp_path):
    """ENOSPC from tensorstore while orbax writes (simulated for one array, the others still in flight): one
    line naming the folder and the cause, no orbax thread tracebacks, no asyncio noise, and nothing left."""
    script = """
import sys
from orbax.checkpoint._src.serialization import type_handlers
from jimm.cli import main

original = type_handlers.NumpyHandler._open_and_write
calls = []

async def open_and_write(self, value, tspec, ts_context):
    calls.append(1)
    if len(calls) == 3:
        raise ValueError(
            'RESOURCE_EXHAUSTED: Error writing "0/x" in OCDBT database at local file "/ckpt/": Failed writing: '
            '"/ckpt/d/0": Failed to write 4096 bytes to file 14: No space left on device [os_error_code=\\'28\\']'
        )
    await original(self, value, tspec, ts_context)

type_handlers.NumpyHandler._open_and_write = open_and_write
sys.exit(main(sys.argv[1:]))
"""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = tmp_path / "run"
    argv = ["train", *TRAIN, "--data", str(root / "xyz"), "--out", str(run), "--steps", "1"]
    done = subprocess.run(
        [sys.executable, "-c", script, *argv], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"jimm: error: cannot write the checkpoint of step 1 to {run / 'checkpoints'}: No space left on device "
        "(free some space, or use a run folder on another disk)"
    ]
    assert not run.exists()
