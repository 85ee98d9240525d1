"""Image search (issue 21): `jimm index` / `jimm search` and `jimm.search.ImageIndex` on scikit-image's photos with
a tiny CLIP, against an exact numpy search over the same embeddings; the HNSW index, extending, refusing another
model's queries, a vision-only family, and saves that a crash cannot half-write."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import hf_model
from image_text_fixtures import save_pair
from PIL import Image

import jimm
from jimm.cli import main
from jimm.image_text import embed_images, embed_texts
from jimm.search import ImageIndex

pytest.importorskip("faiss")

PHOTOS = ["astronaut", "coffee", "chelsea", "camera", "rocket", "coins", "hubble_deep_field", "immunohistochemistry"]
QUERIES = ["a photo of a cat.", "a rocket", "coins", "a cup of coffee"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from skimage import data

    root = tmp_path_factory.mktemp("photos")
    (root / "more").mkdir()
    for i, name in enumerate(PHOTOS):
        where = root / "more" if i >= 5 else root
        Image.fromarray(getattr(data, name)()).resize((40, 36)).save(where / f"{name}.png")
    return root


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip")
    save_pair("clip", path, seed=11)
    return path


@pytest.fixture(scope="module")
def index_dir(clip_dir, folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("index") / "photos"
    assert main(["index", str(clip_dir), str(folder), "--out", str(out), "--batch-size", "3"]) == 0
    return out


def _files(folder) -> list[str]:
    return sorted((str(p) for p in folder.rglob("*.png")), key=lambda p: p.replace(str(folder), "").split("/"))


def _numpy_top_k(vectors: np.ndarray, query: np.ndarray, files: list[str], k: int) -> tuple[list[str], np.ndarray]:
    scores = vectors @ query
    order = np.argsort(-scores, kind="stable")[:k]
    return [files[i] for i in order], scores[order]


def _search(argv, capsys) -> dict:
    capsys.readouterr()
    assert main(["search", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_text_and_image_search_equal_an_exact_numpy_search(index_dir, clip_dir, folder, capsys):
    model = jimm.from_pretrained(clip_dir)
    files = _files(folder)
    vectors = embed_images(model, files)
    best = []
    for query, text_vector in zip(QUERIES, embed_texts(model, QUERIES), strict=True):
        found = _search([str(index_dir), query, "--top-k", "5"], capsys)
        best.append(found["results"][0]["file"])
        want_files, want_scores = _numpy_top_k(vectors, text_vector, files, 5)
        assert found["query"] == {"text": query}
        assert [r["rank"] for r in found["results"]] == [1, 2, 3, 4, 5]
        np.testing.assert_allclose([r["score"] for r in found["results"]], want_scores, atol=1e-5)
        assert [r["file"] for r in found["results"]] == want_files
    found = _search([str(index_dir), "--image", files[2], "--top-k", "3"], capsys)
    want_files, _ = _numpy_top_k(vectors, vectors[2], files, 3)
    assert [r["file"] for r in found["results"]] == want_files and want_files[0] == files[2]
    assert found["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)

    capsys.readouterr()
    assert main(["search", str(index_dir), QUERIES[0], "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["1", "2"] and lines[0].split()[2] == best[0]


def test_the_index_records_its_model_and_refuses_another(index_dir, clip_dir, folder, tmp_path, capsys):
    meta = json.loads((index_dir / "index.json").read_text())
    assert meta["model_id"] == str(clip_dir) and meta["model_class"] == "CLIP" and meta["kind"] == "exact"
    assert meta["files"] == _files(folder) and meta["count"] == len(PHOTOS) and meta["dim"] == 11
    assert meta["preprocessing"]["crop_size"] == {"height": 30, "width": 30}
    other = tmp_path / "other"
    save_pair("clip", other, seed=12)
    capsys.readouterr()
    assert main(["search", str(index_dir), "a cat", "--model", str(other)]) == 2
    err = capsys.readouterr().err
    assert "not comparable" in err and str(clip_dir) in err and err.count("\n") == 1
    before = (index_dir / "index.json").read_bytes()
    assert main(["index", str(other), str(folder), "--out", str(index_dir)]) == 2
    assert "not comparable" in capsys.readouterr().err
    assert (index_dir / "index.json").read_bytes() == before
    with pytest.raises(ValueError, match="not comparable"):
        ImageIndex.load(index_dir).search_text(jimm.from_pretrained(other), "a cat")


def test_extending_embeds_only_new_files_and_keeps_one_generation(clip_dir, folder, tmp_path, capsys):
    out = tmp_path / "grown"
    assert main(["index", str(clip_dir), str(folder / "more"), "--out", str(out)]) == 0
    assert "indexed 3 new image(s);" in capsys.readouterr().out
    assert main(["index", str(clip_dir), str(folder), "--out", str(out)]) == 0
    assert f"indexed 5 new image(s); 3 already indexed; {out} holds 8" in capsys.readouterr().out
    index = ImageIndex.load(out)
    more = sorted(str(p) for p in (folder / "more").glob("*.png"))
    assert index.files[:3] == more and sorted(index.files[3:]) == sorted(set(_files(folder)) - set(more))
    vectors = embed_images(jimm.from_pretrained(clip_dir), index.files)
    np.testing.assert_allclose(index.vectors, vectors, atol=1e-5)
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "vectors-2.npy"]


def test_hnsw_above_the_exact_limit_saves_loads_and_grows(clip_dir, folder, tmp_path):
    model = jimm.from_pretrained(clip_dir)
    files = _files(folder)
    index = ImageIndex.for_model(model, str(clip_dir), exact_limit=4)
    index.add_images(model, files[:3])
    assert index.kind == "exact"
    index.add_images(model, files[3:])
    assert index.kind == "hnsw" and len(index) == len(files)
    index.save(tmp_path / "hnsw")
    loaded = ImageIndex.load(tmp_path / "hnsw")
    assert loaded.kind == "hnsw" and sorted(p.name for p in (tmp_path / "hnsw").iterdir()) == [
        "hnsw-1.faiss", "index.json", "vectors-1.npy"]  # fmt: skip
    queries = embed_texts(model, QUERIES)
    vectors = embed_images(model, files)
    for query, hits in zip(queries, loaded.search(queries, k=4), strict=True):
        assert [h.file for h in hits] == _numpy_top_k(vectors, query, files, 4)[0]  # 8 vectors: HNSW is exact


def test_a_vision_family_indexes_and_answers_image_queries_only(folder, tmp_path, capsys):
    vit = tmp_path / "vit"
    hf_model(seed=4).save_pretrained(vit)
    out = tmp_path / "vit-index"
    assert main(["index", str(vit), str(folder), "--out", str(out)]) == 0
    found = _search([str(out), "--image", str(folder / "coffee.png"), "--top-k", "1"], capsys)
    assert found["results"][0]["file"] == str(folder / "coffee.png")
    assert main(["search", str(out), "a cat"]) == 2
    assert "has no text tower" in capsys.readouterr().err


def test_a_failed_save_leaves_the_previous_index(index_dir, clip_dir, tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(index_dir, copy)
    index = ImageIndex.load(copy)
    index.add_vectors(["/nowhere/x.png"], index.vectors[:1])

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("jimm.search.index.json.dump", crash)
    with pytest.raises(OSError, match="disk full"):
        index.save(copy)
    monkeypatch.undo()
    assert len(ImageIndex.load(copy)) == len(PHOTOS)  # the old generation, intact
    assert not any(p.name.endswith(".tmp") for p in copy.iterdir())


def test_without_a_good_enough_hnsw_the_index_stays_exact(monkeypatch):
    from jimm.search import ModelRecord
    from jimm.search.index import build_hnsw, tune_ef_search

    rng = np.random.default_rng(0)
    clustered = rng.standard_normal((300, 8)).astype(np.float32)
    clustered /= np.linalg.norm(clustered, axis=1, keepdims=True)
    ef, recall = tune_ef_search(build_hnsw(clustered), clustered)
    assert ef == 64 and recall >= 0.95  # 8 dimensions: the first step finds them; one more is the margin
    assert tune_ef_search(build_hnsw(clustered), clustered, target=1.01) is None

    monkeypatch.setattr("jimm.search.index.tune_ef_search", lambda *args, **kwargs: None)
    index = ImageIndex(ModelRecord("m", "CLIP", "0" * 16, {}), exact_limit=100)
    index.add_vectors([f"{i}.png" for i in range(300)], clustered)
    assert index.kind == "exact" and index.exact_limit == 600  # tried again once the collection doubles
    assert [h.file for h in index.search(clustered[7], k=1)[0]] == ["7.png"]


@pytest.mark.parametrize("family", ["siglip", "dinov2"])
def test_other_families_search_like_an_exact_numpy_search(family, folder, tmp_path):
    import transformers as T

    path = tmp_path / family
    if family == "siglip":
        save_pair("siglip", path, seed=13)
    else:
        config = T.Dinov2Config(hidden_size=15, num_hidden_layers=2, num_attention_heads=3, mlp_ratio=3,
                                image_size=28, patch_size=7)  # fmt: skip
        T.Dinov2Model(config).save_pretrained(path)
        T.BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 28, "width": 28}).save_pretrained(path)
    model = jimm.from_pretrained(path)
    files = _files(folder)
    index = ImageIndex.for_model(model, str(path))
    index.add_images(model, files, batch_size=3)
    from jimm.data import preprocess_images
    from jimm.embed import image_embeddings

    vectors = image_embeddings(model, preprocess_images(files, index.processor()))
    queries = embed_texts(model, QUERIES) if family == "siglip" else vectors[[1, 6]]
    hits = (
        index.search_text(model, QUERIES, k=4)
        if family == "siglip"
        else index.search_image(model, [files[1], files[6]], k=4)
    )
    for query, found in zip(queries, hits, strict=True):
        want_files, want_scores = _numpy_top_k(vectors, query, files, 4)
        assert [h.file for h in found] == want_files
        np.testing.assert_allclose([h.score for h in found], want_scores, atol=1e-5)
    if family == "dinov2":  # the embedding is transformers' pooler_output (the normed class token), unit length
        import torch

        hf = T.Dinov2Model.from_pretrained(path).eval()
        pixels = T.BitImageProcessor.from_pretrained(path)(
            images=[Image.open(f).convert("RGB") for f in files], return_tensors="pt"
        )["pixel_values"]
        with torch.no_grad():
            pooled = hf(pixel_values=pixels).pooler_output.numpy()
        np.testing.assert_allclose(vectors, pooled / np.linalg.norm(pooled, axis=1, keepdims=True), atol=1e-5)
        with pytest.raises(ValueError, match="no text tower"):
            index.search_text(model, "a cat")
