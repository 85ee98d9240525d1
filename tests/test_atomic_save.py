"""Saves are atomic as a whole: a crash at every step leaves exactly the old save or exactly the new one.

A simulated crash stops the process's file operations at the k-th rename / unlink / mkdir / rmdir of a save
(as `kill -9` would, with no cleanup code running), for every k. After each crash the folder must load as
exactly the old save or exactly the new one (parameters and labels), the next save must clean up and
succeed, and files jimm did not write must never be touched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil

import numpy as np
import pytest
from flax import nnx

import jimm
from jimm.io.atomic_save import MANIFEST, STAGING_PREFIX, FolderConflictError
from jimm.io.convert import convert_checkpoint

USER_FILES = {
    "model-best.safetensors": b"the user's best model",
    "model_v1.safetensors.bak": b"a backup",
    "pytorch_model_old.bin": b"an old checkpoint",
    "notes.txt": b"hello",
}


class Crash(BaseException):
    """The process dies here: nothing after this point runs, no cleanup either."""


@contextlib.contextmanager
def crash_at(step: int | None):
    """Count the file-system mutations of a save; die just before the `step`-th (never, for None)."""
    count = [0]
    patched = [(os, "replace"), (os, "unlink"), (os, "rmdir"), (os, "mkdir"), (shutil, "rmtree")]
    originals = [getattr(mod, name) for mod, name in patched]

    def wrap(fn):
        def mutate(*args, **kwargs):
            count[0] += 1
            if step is not None and count[0] == step:
                raise Crash
            return fn(*args, **kwargs)

        return mutate

    for (mod, name), fn in zip(patched, originals, strict=True):
        setattr(mod, name, wrap(fn))
    try:
        yield count
    finally:
        for (mod, name), fn in zip(patched, originals, strict=True):
            setattr(mod, name, fn)


def tiny(seed: int, labels: tuple[str, ...]):
    model = jimm.VisionTransformer(
        num_classes=len(labels),
        img_size=8,
        patch_size=4,
        num_layers=2,
        num_heads=2,
        mlp_dim=6,
        hidden_size=4,
        id2label=dict(enumerate(labels)),
        rngs=nnx.Rngs(seed),
    )
    return model


def params(model) -> dict:
    return {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def same(a, b) -> bool:
    pa, pb = params(a), params(b)
    return pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa) and a.config == b.config


@pytest.fixture(scope="module")
def models():
    return tiny(1, ("cat", "dog", "emu")), tiny(2, ("ant", "bee", "cow")), tiny(3, ("x", "y", "z"))


def _user_files(folder):
    for name, data in USER_FILES.items():
        (folder / name).write_bytes(data)


def _assert_user_files(folder):
    for name, data in USER_FILES.items():
        assert (folder / name).read_bytes() == data, name


SCENARIOS = {
    # name: (old save kwargs, new save kwargs)
    "single over single": ({}, {}),
    "sharded over sharded": ({"max_shard_size": 300}, {"max_shard_size": 500}),
    "sharded over single": ({}, {"max_shard_size": 300}),
    "single over sharded": ({"max_shard_size": 300}, {}),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_crash_at_every_step_leaves_old_or_new(models, tmp_path, scenario):
    old, new, newer = models
    old_kwargs, new_kwargs = SCENARIOS[scenario]
    template = tmp_path / "template"
    template.mkdir()
    _user_files(template)
    old.save_pretrained(template, **old_kwargs)
    probe = tmp_path / "probe"
    shutil.copytree(template, probe)
    with crash_at(None) as count:
        new.save_pretrained(probe, **new_kwargs)
    steps = count[0]
    assert steps >= 4
    seen = set()
    for step in range(1, steps + 1):
        folder = tmp_path / f"crash{step}"
        shutil.copytree(template, folder)
        with pytest.raises(Crash), crash_at(step):
            new.save_pretrained(folder, **new_kwargs)
        loaded = jimm.VisionTransformer.from_pretrained(folder)
        is_old, is_new = same(loaded, old), same(loaded, new)
        assert is_old or is_new, f"crash before step {step}/{steps} left a mix of saves"
        seen.add("old" if is_old else "new")
        _assert_user_files(folder)
        newer.save_pretrained(folder)  # the next save finishes or discards what the crash left
        assert not [p for p in folder.iterdir() if p.name.startswith(STAGING_PREFIX)]
        assert same(jimm.VisionTransformer.from_pretrained(folder), newer)
        stray = (
            {p.name for p in folder.iterdir()}
            - set(USER_FILES)
            - {
                MANIFEST,
                "config.json",
                "model.safetensors",
                "preprocessor_config.json",
            }
        )
        assert not stray, f"stale files after crash {step}: {stray}"
        _assert_user_files(folder)
    assert seen == {"old", "new"}  # crashes before and after the commit point were both exercised


def test_convert_crash_and_user_files(models, tmp_path):
    old, new, _ = models
    src_old, src_new = tmp_path / "a", tmp_path / "b"
    old.save_pretrained(src_old)
    new.save_pretrained(src_new, max_shard_size=300)
    dst = tmp_path / "dst"
    dst.mkdir()
    _user_files(dst)
    convert_checkpoint(src_old, dst)
    shutil.copytree(dst, tmp_path / "probe")
    with crash_at(None) as count:
        convert_checkpoint(src_new, tmp_path / "probe")
    for step in range(1, count[0] + 1):
        folder = tmp_path / f"c{step}"
        shutil.copytree(dst, folder)
        with pytest.raises(Crash), crash_at(step):
            convert_checkpoint(src_new, folder)
        loaded = jimm.VisionTransformer.from_pretrained(folder)
        assert same(loaded, old) or same(loaded, new), step
        _assert_user_files(folder)


def test_foreign_files_of_the_same_name_are_not_replaced_without_overwrite(models, tmp_path):
    old, new, _ = models
    folder = tmp_path / "hf"
    old.save_pretrained(folder)
    (folder / MANIFEST).unlink()  # now it looks like a folder transformers (or the user) wrote
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    conflict = r"config.json, model.safetensors, preprocessor_config.json.*overwrite"
    with pytest.raises(FolderConflictError, match=conflict):
        new.save_pretrained(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    with pytest.raises(FolderConflictError, match="overwrite"):
        convert_checkpoint(_saved(new, tmp_path), folder)
    _user_files(folder)
    new.save_pretrained(folder, overwrite=True)
    assert same(jimm.VisionTransformer.from_pretrained(folder), new)
    _assert_user_files(folder)


def _saved(model, tmp_path):
    path = tmp_path / "src"
    if not path.exists():
        model.save_pretrained(path)
    return path


def test_failed_save_into_a_new_folder_leaves_nothing(models, tmp_path, monkeypatch):
    old, _, _ = models

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("jimm.io.model_folder.write_safetensors", full)
    target = tmp_path / "deep" / "new"
    with pytest.raises(OSError, match=r"no space left on the device while saving to .*new: .*room for both"):
        old.save_pretrained(target)
    assert not target.exists()
    existing = tmp_path / "existing"
    monkeypatch.undo()
    old.save_pretrained(existing)
    before = {p.name: p.read_bytes() for p in existing.iterdir()}
    monkeypatch.setattr("jimm.io.model_folder.write_safetensors", full)
    with pytest.raises(OSError, match="room for both"):
        old.save_pretrained(existing)
    assert {p.name: p.read_bytes() for p in existing.iterdir()} == before  # staging removed, old save intact


def test_a_file_replaced_by_hand_is_refused(models, tmp_path):
    old, new, _ = models
    a, b = tmp_path / "a", tmp_path / "b"
    old.save_pretrained(a)
    new.save_pretrained(b)
    shutil.copyfile(b / "model.safetensors", a / "model.safetensors")  # weights of another save
    with pytest.raises(ValueError, match=r"model.safetensors is not the file jimm's last save wrote there"):
        jimm.VisionTransformer.from_pretrained(a)
