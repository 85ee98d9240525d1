"""Folders in, tables out (issue 21): `jimm predict / embed / zero-shot / features` over a folder with nested
subfolders, a corrupt JPEG, a text file and a PNG with alpha (scikit-image's photos). Every good image is listed
once, in a stable order, with the values jimm gives for the same files one by one; the bad ones are named (one
warning line each) and counted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import hf_model
from image_text_fixtures import save_pair
from PIL import Image

import jimm
from jimm.cli import main
from jimm.data import ImageProcessorConfig, preprocess
from jimm.data.stream import ImageStream
from jimm.image_text import embed_images
from jimm.io.inputs import expand_inputs
from jimm.io.tables import read_embeddings, read_table

GOOD = ["a/astronaut.jpg", "a/b/coffee.png", "alpha.png", "z.png"]  # the sorted walk, bad files left out
BAD = ["a/b/c/corrupt.jpg", "a/notes.txt"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from skimage import data

    root = tmp_path_factory.mktemp("collection")
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / ".cache").mkdir()
    small = lambda image: Image.fromarray(image).resize((48, 40))  # noqa: E731
    small(data.astronaut()).save(root / "a" / "astronaut.jpg", quality=90)
    small(data.coffee()).save(root / "a" / "b" / "coffee.png")
    small(data.chelsea()).convert("RGBA").save(root / "alpha.png")
    rgba = np.asarray(Image.open(root / "alpha.png")).copy()
    rgba[..., 3] = np.linspace(0, 255, rgba.shape[1], dtype=np.uint8)  # a real alpha ramp
    Image.fromarray(rgba).save(root / "alpha.png")
    small(data.camera()).save(root / "z.png")  # grayscale
    jpeg = (root / "a" / "astronaut.jpg").read_bytes()
    (root / "a" / "b" / "c" / "corrupt.jpg").write_bytes(jpeg[: len(jpeg) // 3])  # the header reads, the data does not
    (root / "a" / "notes.txt").write_text("not an image\n")
    small(data.camera()).save(root / ".cache" / "hidden.png")  # hidden folders are not walked
    return root


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    from transformers import ViTImageProcessor

    path = tmp_path_factory.mktemp("vit")
    model = hf_model(seed=5)
    model.config.id2label = {i: f"class_{i}" for i in range(13)}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    model.save_pretrained(path)
    ViTImageProcessor(size={"height": 33, "width": 33}).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip")
    save_pair("clip", path, seed=7)
    return path


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("jimm: warning: skipped ")]


def _assert_bad_files_named(err: str, root) -> None:
    lines = _warnings(err)
    assert [line.split()[3].rstrip(":") for line in lines[:-1]] == [str(root / b) for b in BAD]
    assert lines[-1] == f"jimm: warning: skipped 2 of {len(GOOD) + len(BAD)} files (named above)"
    assert "Traceback" not in err


def test_inputs_expand_folders_globs_and_files_once_in_a_stable_order(folder, tmp_path, monkeypatch):
    walk = sorted([*GOOD, *BAD], key=lambda p: tuple(p.split("/")))
    assert expand_inputs([folder]) == [folder / p for p in walk]
    monkeypatch.chdir(folder)
    listed = expand_inputs(["z.png", "a", "**/*.png", "z.png"])  # a file, a folder, a glob, a repeat
    assert [str(p) for p in listed] == ["z.png", *[f"a/{p}" for p in ("astronaut.jpg", "b/c/corrupt.jpg",
                                        "b/coffee.png", "notes.txt")], "alpha.png"]  # fmt: skip
    with pytest.raises(ValueError, match="no such file or folder: nowhere.png, gone"):
        expand_inputs(["z.png", "nowhere.png", "gone"])
    (tmp_path / "void").mkdir()
    with pytest.raises(ValueError, match="no files in .*void"):
        expand_inputs([tmp_path / "void", str(tmp_path / "*.jpg")])


def test_stream_batches_in_order_and_names_the_bad_files(folder):
    processor = ImageProcessorConfig(size=(12, 12))
    warnings = []
    stream = ImageStream(expand_inputs([folder]), processor, batch_size=3, num_threads=3, warn=warnings.append)
    batches = list(stream)
    assert [b.n for b in batches] == [3, 1] and all(len(b.pixels) == 3 for b in batches)  # padded to one shape
    assert [p for b in batches for p in b.paths] == [folder / p for p in GOOD]
    for batch in batches:
        for path, pixels in zip(batch.paths, batch.pixels, strict=False):
            np.testing.assert_array_equal(pixels, preprocess(path, processor))
    assert [s.path for s in stream.skipped] == [folder / p for p in BAD]
    assert [w.split(":")[0] for w in warnings] == [f"skipped {folder / p}" for p in BAD]
    assert "truncated" in stream.skipped[0].reason and "cannot identify image" in stream.skipped[1].reason
    assert stream.summary() == "read 4 image(s); skipped 2 unreadable file(s) (named above)"

    warnings.clear()
    only_bad = ImageStream([folder / p for p in BAD], processor, warn=warnings.append)
    with pytest.raises(ValueError, match=r"none of the 2 file\(s\) could be read as an image: .*corrupt.jpg"):
        list(only_bad)
    assert warnings == []  # all bad: one error, no warnings before it


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_predict_folder_to_a_table(suffix, folder, vit_dir, tmp_path, capsys):
    out = tmp_path / f"predictions{suffix}"
    args = ["predict", str(vit_dir), str(folder), "--top-k", "2", "--batch-size", "3", "--output", str(out)]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.out == f"wrote 4 predictions to {out}\n"
    _assert_bad_files_named(captured.err, folder)
    rows = read_table(out)
    assert [row["image"] for row in rows] == [str(folder / p) for p in GOOD]
    model = jimm.from_pretrained(vit_dir)
    from jimm.train.evaluate import predict_files

    expected = predict_files(model, [folder / p for p in GOOD], ImageProcessorConfig.for_model(model), top_k=2)
    for row, top in zip(rows, expected, strict=True):
        assert [row["label_1"], row["label_2"]] == [label for label, _ in top]
        np.testing.assert_allclose([float(row["prob_1"]), float(row["prob_2"])], [p for _, p in top], atol=1e-6)


def test_predict_prints_without_output_and_refuses_an_unknown_suffix(folder, vit_dir, tmp_path, capsys):
    assert main(["predict", str(vit_dir), str(folder / "a"), "--top-k", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[::2] == [str(folder / "a" / p) for p in ("astronaut.jpg", "b/coffee.png")]
    assert len(_warnings(captured.err)) == 3  # corrupt.jpg, notes.txt, the count
    assert main(["predict", str(vit_dir), str(folder), "--output", str(tmp_path / "p.xlsx")]) == 2
    assert "name it .csv / .jsonl / .parquet" in capsys.readouterr().err
    assert not (tmp_path / "p.xlsx").exists()


@pytest.mark.parametrize("suffix", [".npy", ".parquet"])
def test_embed_folder_with_the_file_of_each_row(suffix, folder, clip_dir, tmp_path, capsys):
    out = tmp_path / f"embeddings{suffix}"
    assert main(["embed", str(clip_dir), str(folder), "--batch-size", "3", "--output", str(out)]) == 0
    captured = capsys.readouterr()
    _assert_bad_files_named(captured.err, folder)
    names, vectors = read_embeddings(out)
    assert names == [str(folder / p) for p in GOOD]
    if suffix == ".npy":
        assert (tmp_path / "embeddings.files.txt").read_text().splitlines() == names
    expected = embed_images(jimm.from_pretrained(clip_dir), [str(folder / p) for p in GOOD])
    np.testing.assert_allclose(vectors, expected, atol=1e-5)


def test_embed_a_vision_family_and_zero_shot_to_a_table(folder, vit_dir, clip_dir, tmp_path, capsys):
    out = tmp_path / "vit.npy"
    assert main(["embed", str(vit_dir), str(folder / "*.png"), "--output", str(out)]) == 0
    names, vectors = read_embeddings(out)
    assert names == [str(folder / "alpha.png"), str(folder / "z.png")]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    capsys.readouterr()

    table = tmp_path / "zero_shot.jsonl"
    labels = ["cat", "coffee", "astronaut"]
    args = ["zero-shot", str(clip_dir), str(folder), "--labels", ",".join(labels), "--output", str(table)]
    assert main(args) == 0
    _assert_bad_files_named(capsys.readouterr().err, folder)
    rows = [json.loads(line) for line in table.read_text().splitlines()]
    assert [list(row) for row in rows] == [["image", *labels]] * len(GOOD)
    model = jimm.from_pretrained(clip_dir)
    expected = model.zero_shot([str(folder / p) for p in GOOD], labels)
    np.testing.assert_allclose([[row[label] for label in labels] for row in rows], expected, atol=1e-6)


def test_features_over_a_folder(folder, clip_dir, tmp_path, capsys):
    out = tmp_path / "features"
    assert main(["features", str(clip_dir), str(folder), "--batch-size", "3", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    _assert_bad_files_named(captured.err, folder)
    stems = ["astronaut", "coffee", "alpha", "z"]
    assert captured.out.split() == [str(out / f"{s}_{k}") for s in stems for k in ("features.npy", "pca.png",
                                                                                  "attention.png")]  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(p).name for p in captured.out.split())


def test_stream_progress_bar_counts_every_file_with_a_rate(folder, capsys):
    stream = ImageStream(expand_inputs([folder]), ImageProcessorConfig(size=(12, 12)), progress=True, desc="embed")
    list(stream)
    err = capsys.readouterr().err
    assert "embed: 100%" in err and "6/6" in err and "img/s" in err  # bad files count as done too
