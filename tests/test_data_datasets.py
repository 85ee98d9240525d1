"""Datasets and grain loaders: image folders (layout, splits, bad files), digits, and iterator state."""

import logging

import numpy as np
import pytest
from PIL import Image

from jimm.data import Augment, DatasetError, ImageProcessorConfig, digits, eval_batches, image_folder, train_dataset


def _write(path, color, size=(11, 7), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def make_folder(root, per_class=5, classes=("cat", "dog", "emu")):
    for c, name in enumerate(classes):
        for i in range(per_class):
            ext = "png" if i % 2 else "jpg"
            _write(root / name / f"{i}.{ext}", (40 * c + i, 100, 200 - 30 * c), size=(11 + i, 7 + c))
    return root


def test_image_folder_split_and_labels(tmp_path):
    splits = image_folder(make_folder(tmp_path / "data", per_class=10), val_fraction=0.2, seed=3)
    train, val = splits["train"], splits["validation"]
    assert train.labels == val.labels == ("cat", "dog", "emu")
    assert len(train) == 24 and len(val) == 6
    assert sorted(np.bincount(val.label_ids).tolist()) == [2, 2, 2]  # stratified
    assert not set(train.paths) & set(val.paths)
    image, label = val[0]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3
    assert val.paths[0].parent.name == val.labels[label]
    again = image_folder(tmp_path / "data", val_fraction=0.2, seed=3)
    assert again["validation"].paths == val.paths  # seeded


def test_image_folder_with_split_dirs(tmp_path):
    make_folder(tmp_path / "d" / "train", per_class=3)
    make_folder(tmp_path / "d" / "val", per_class=2)
    splits = image_folder(tmp_path / "d")
    assert sorted(splits) == ["train", "validation"]
    assert len(splits["train"]) == 9 and len(splits["validation"]) == 6


def test_unreadable_files_are_skipped_with_a_warning(tmp_path, caplog):
    root = make_folder(tmp_path / "data", per_class=3)
    (root / "cat" / "notes.txt").write_text("hello")
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8garbage")
    (root / "dog" / ".DS_Store").write_bytes(b"\x00\x01")
    with caplog.at_level(logging.WARNING, logger="jimm.data.datasets"):
        splits = image_folder(root, val_fraction=0.0)
    assert len(splits["train"]) == 9
    assert "notes.txt" in caplog.text and "broken.jpg" in caplog.text and ".DS_Store" not in caplog.text


def test_empty_class_and_missing_folder_are_clear_errors(tmp_path):
    root = make_folder(tmp_path / "data", per_class=2)
    (root / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty"):
        image_folder(root)
    (root / "empty" / "junk.jpg").write_text("x")
    with pytest.raises(DatasetError, match=r"no readable images.*empty"):
        image_folder(root)
    with pytest.raises(DatasetError, match="does not exist"):
        image_folder(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    _write(tmp_path / "flat" / "a.png", (1, 2, 3))
    with pytest.raises(DatasetError, match="no class folders"):
        image_folder(tmp_path / "flat")


def test_digits_splits_are_fixed_and_disjoint():
    splits = digits()
    sizes = {k: len(v) for k, v in splits.items()}
    assert sizes == {"train": 1259, "validation": 179, "test": 359}
    assert sum(sizes.values()) == 1797
    test = splits["test"]
    assert test.images.shape[1:] == (8, 8, 3) and test.images.dtype == np.uint8 and test.images.max() == 255
    assert np.bincount(test.label_ids).min() >= 35  # stratified: every digit held out
    again = digits()["test"]
    np.testing.assert_array_equal(again.images, test.images)
    flat = {s: {v.images[i].tobytes() + bytes([v.label_ids[i]]) for i in range(len(v))} for s, v in splits.items()}
    assert len(flat["test"] & flat["train"]) < 5  # only true duplicates in the raw data may coincide


def test_train_stream_shapes_and_resumable_state():
    split = digits()["train"]
    cfg = ImageProcessorConfig(size=(16, 16))
    ds = train_dataset(split, cfg, batch_size=8, seed=5, augment=Augment(shift=2, hflip=True))
    it = iter(ds)
    x, y = next(it)
    assert x.shape == (8, 16, 16, 3) and x.dtype == np.float32 and y.dtype == np.int32
    assert x.min() >= -1.0 and x.max() <= 1.0
    for _ in range(200):  # past one epoch (157 batches): the stream is endless
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(3)]
    restored = iter(train_dataset(split, cfg, batch_size=8, seed=5, augment=Augment(shift=2, hflip=True)))
    restored.set_state(state)
    for (ex, ey), (gx, gy) in zip(expected, [next(restored) for _ in range(3)], strict=True):
        np.testing.assert_array_equal(ex, gx)
        np.testing.assert_array_equal(ey, gy)
    other = next(iter(train_dataset(split, cfg, batch_size=8, seed=6)))
    assert not np.array_equal(other[1], y) or not np.array_equal(other[0], x)


def test_augment_shift_translates():
    image = np.zeros((6, 6, 1), np.float32)
    image[2, 3] = 1.0
    out, label = Augment(shift=1)((image, 4), np.random.default_rng(0))
    assert label == 4 and out.shape == image.shape
    (r, c) = np.argwhere(out[..., 0] == 1.0)[0]
    assert abs(r - 2) <= 1 and abs(c - 3) <= 1


def test_eval_batches_pad_the_last_batch():
    split = digits()["validation"]
    batches = list(eval_batches(split, ImageProcessorConfig(size=(8, 8)), batch_size=64))
    assert [n for _, _, n in batches] == [64, 64, 51]
    assert all(x.shape == (64, 8, 8, 3) for x, _, _ in batches)
    np.testing.assert_array_equal(np.concatenate([y[:n] for _, y, n in batches]), split.label_ids)
