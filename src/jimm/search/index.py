"""An image collection's embeddings in a faiss index, searchable by text or by image: `ImageIndex`.

Vectors are the model's unit embeddings (`jimm.embed`), so inner product is cosine similarity. Up to
`EXACT_LIMIT` images the index is exact (`IndexFlatIP`: a brute-force scan); above it, HNSW (`IndexHNSWFlat`,
M=32) with its search depth `efSearch` tuned on the collection's own vectors to reach recall@10 >= 0.95 against
exact search. When no depth reaches it (vectors without the structure HNSW needs) the index stays exact and
tries again once the collection has doubled. Recall and query times: `benchmarks/search_recall.py`
(docs/benchmarks.md). faiss is an optional extra: `pip install 'jimm[search]'`.

On disk an index is a folder: `index.json` (the model's id, class and fingerprint, its preprocessing, the kind
of index and the file list), `vectors-G.npy` (every embedding, so the index can be rebuilt or grow past
`EXACT_LIMIT`) and, for HNSW, `hnsw-G.faiss`. A save writes generation G's files first and `index.json` last
(each through a temporary file and a rename), then deletes older generations: a crash at any point leaves the
previous index or the new one, never a mix. Files are identified by their absolute path; adding a folder again
embeds only the files the index does not hold.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..io.tables import atomic_file

FORMAT = 1
META = "index.json"
EXACT_LIMIT = 50_000  # an exact scan of 50k x 512 floats is a few ms a query; HNSW is tried past it
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 100
TARGET_RECALL = 0.95  # recall@10 against exact search that an approximate index must reach on its own vectors
EF_SEARCH_STEPS = (32, 64, 128, 256, 512, 1024)


def faiss_module():
    try:
        import faiss
    except ModuleNotFoundError as err:
        raise ImportError("image search needs faiss: pip install 'jimm[search]' (faiss-cpu)") from err
    return faiss


@dataclasses.dataclass(frozen=True)
class Hit:
    """One search result: the file, its cosine similarity to the query, and its rank (1 = best)."""

    file: str
    score: float
    rank: int


@dataclasses.dataclass(frozen=True)
class ModelRecord:
    """Which model embedded an index: the id it was loaded from, its class and fingerprint, its preprocessing."""

    model_id: str
    model_class: str
    fingerprint: str
    preprocessing: dict[str, Any]

    @classmethod
    def of(cls, model, model_id: str, *, max_num_patches: int | None = None) -> ModelRecord:
        from ..data.stream import processor_for
        from ..embed import model_fingerprint

        return cls(
            str(model_id),
            type(model).__name__,
            model_fingerprint(model),
            processor_for(model, max_num_patches=max_num_patches).to_dict(),
        )


class ImageIndex:
    """Embeddings of image files, searchable by vector, text or image (module docstring)."""

    def __init__(self, record: ModelRecord, *, exact_limit: int = EXACT_LIMIT):
        faiss_module()  # the missing extra is an error now, not after the images are embedded
        self.record, self.exact_limit = record, int(exact_limit)
        self.files: list[str] = []
        self.vectors: np.ndarray | None = None  # [N, dim] from the first add
        self._faiss = None

    @property
    def dim(self) -> int | None:
        """The embedding width (None while the index is empty)."""
        return None if self.vectors is None else self.vectors.shape[1]

    # -- building ----------------------------------------------------------------------------------------------

    @classmethod
    def for_model(cls, model, model_id: str, *, max_num_patches: int | None = None, **kwargs) -> ImageIndex:
        """An empty index for `model`'s image embeddings; `model_id` is what `load_model` reloads it from;
        `max_num_patches` is SigLIP 2 NaFlex's patch budget per image (default: the checkpoint's)."""
        from ..embed import has_image_encoder

        if not has_image_encoder(model):
            raise ValueError(f"{type(model).__name__} has no vision tower; an image index needs an image model")
        return cls(ModelRecord.of(model, model_id, max_num_patches=max_num_patches), **kwargs)

    @property
    def kind(self) -> str:
        """`"exact"` (IndexFlatIP) or `"hnsw"`."""
        return "hnsw" if self._faiss is not None and hasattr(self._faiss, "hnsw") else "exact"

    def __len__(self) -> int:
        return len(self.files)

    def add_vectors(self, files: Sequence[str | os.PathLike], vectors: np.ndarray) -> None:
        """Add unit embeddings `[N, dim]` of `files`; the index turns approximate once it holds more than
        `exact_limit` vectors."""
        vectors = np.ascontiguousarray(vectors, np.float32)
        width = self.dim or (vectors.shape[-1] if vectors.ndim == 2 else None)
        if vectors.ndim != 2 or vectors.shape[1] != width or len(vectors) != len(files):
            raise ValueError(f"expected {len(files)} vectors of width {width}, got shape {vectors.shape}")
        self.files += [os.fspath(f) for f in files]
        self.vectors = vectors if self.vectors is None else np.concatenate([self.vectors, vectors])
        if self._faiss is None:
            self._faiss = faiss_module().IndexFlatIP(width)
        if self.kind == "exact" and len(self.vectors) > self.exact_limit:
            hnsw = build_hnsw(self.vectors)
            if tune_ef_search(hnsw, self.vectors) is not None:
                self._faiss = hnsw
                return
            self.exact_limit = 2 * len(self.vectors)  # no structure HNSW can use: stay exact, retry when doubled
        self._faiss.add(vectors)

    def add_images(self, model, images: Sequence[str | os.PathLike], *, batch_size: int = 32, **stream_kwargs):
        """Embed and add the image files not yet in the index (absolute paths); returns the `ImageStream` that read
        them (its `skipped` names the unreadable ones), or None when every file is already indexed."""
        from ..data.stream import ImageStream
        from ..embed import embed_stream

        self.check_model(model)
        held = set(self.files)
        new = [p for p in dict.fromkeys(os.path.abspath(p) for p in images) if p not in held]
        if not new:
            return None
        stream = ImageStream(new, self.processor(), batch_size=batch_size, **stream_kwargs)
        for paths, vectors in embed_stream(model, stream):
            self.add_vectors(paths, vectors)
        return stream

    # -- searching ---------------------------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int = 10) -> list[list[Hit]]:
        """The `k` nearest files to each query vector `[Q, dim]` (or one `[dim]`), best first."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if self._faiss is None:
            raise ValueError("the index is empty; add images first")
        queries = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
        if queries.shape[1] != self.dim:
            raise ValueError(f"query vectors have width {queries.shape[1]}, the index holds width {self.dim}")
        scores, ids = self._faiss.search(queries, min(k, len(self.files)))
        return [
            [
                Hit(self.files[i], float(s), r)
                for r, (i, s) in enumerate(zip(row_ids, row_scores, strict=True), 1)
                if i >= 0
            ]
            for row_ids, row_scores in zip(ids, scores, strict=True)
        ]

    def search_text(self, model, texts: str | Sequence[str], k: int = 10) -> list[list[Hit]]:
        """The `k` images nearest each text (CLIP, SigLIP: a model with `encode_text`)."""
        from ..embed import text_embeddings

        self.check_model(model)
        return self.search(text_embeddings(model, [texts] if isinstance(texts, str) else texts), k)

    def search_image(self, model, images, k: int = 10) -> list[list[Hit]]:
        """The `k` images nearest each query image (files, PIL images or uint8 arrays), preprocessed as the index's."""
        from ..data.stream import ImageStream
        from ..embed import embed_stream
        from ..image_text import as_image_list

        self.check_model(model)
        stream = ImageStream(as_image_list(images), self.processor(), num_threads=0, strict=True)
        return self.search(np.concatenate([vectors for _, vectors in embed_stream(model, stream)]), k)

    # -- the model it was built with ---------------------------------------------------------------------------

    def processor(self):
        """The preprocessing the index's images went through (its model's `preprocessor_config.json`; SigLIP 2
        NaFlex's with the index's `max_num_patches`)."""
        from ..data.naflex import PROCESSOR_TYPES, NaFlexProcessorConfig
        from ..data.preprocess import ImageProcessorConfig

        if self.record.preprocessing.get("image_processor_type") in PROCESSOR_TYPES:
            return NaFlexProcessorConfig.from_dict(self.record.preprocessing)
        return ImageProcessorConfig.from_dict(self.record.preprocessing)

    def check_model(self, model) -> None:
        """A ValueError when `model` is not the model that built the index (its vectors would not be comparable)."""
        from ..embed import model_fingerprint

        fingerprint = model_fingerprint(model)
        if fingerprint != self.record.fingerprint:
            r = self.record
            raise ValueError(
                f"this index was built with {r.model_id} ({r.model_class}, fingerprint {r.fingerprint}), not with "
                f"the given {type(model).__name__} (fingerprint {fingerprint}); embeddings of different models are "
                "not comparable: query with the index's own model, or build a new index with this one"
            )

    def load_model(self, **kwargs):
        """The model the index was built with, from its recorded id (a folder or hub id)."""
        from ..models.registry import from_pretrained

        try:
            model = from_pretrained(self.record.model_id, sharding=None, **kwargs)
        except (OSError, ValueError) as err:
            raise ValueError(
                f"cannot load the index's model {self.record.model_id} ({err}); pass the same model explicitly "
                "(--model / model=)"
            ) from err
        self.check_model(model)
        return model

    # -- files -------------------------------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the index into `folder` atomically (module docstring); returns the folder."""
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{folder} is a file; an index is a folder, choose another path")
        if folder.is_dir() and any(folder.iterdir()) and not (folder / META).is_file():
            raise ValueError(f"{folder} holds files but no {META}; choose an empty or new folder for the index")
        folder.mkdir(parents=True, exist_ok=True)
        old = _read_meta(folder) if (folder / META).is_file() else {}
        generation = int(old.get("generation", 0)) + 1
        data = {"vectors": f"vectors-{generation}.npy"}
        with atomic_file(folder / data["vectors"]) as f:
            np.save(f, self.vectors if self.vectors is not None else np.zeros((0, 0), np.float32))
        if self.kind == "hnsw":
            data["faiss"] = f"hnsw-{generation}.faiss"
            with atomic_file(folder / data["faiss"]) as f:
                f.write(faiss_module().serialize_index(self._faiss).tobytes())
        meta = {
            "format": FORMAT,
            "generation": generation,
            **dataclasses.asdict(self.record),
            "dim": self.dim,
            "kind": self.kind,
            "exact_limit": self.exact_limit,
            **({"ef_search": self._faiss.hnsw.efSearch} if self.kind == "hnsw" else {}),
            "count": len(self.files),
            "data": data,
            "files": self.files,
        }
        with atomic_file(folder / META, "w") as f:
            json.dump(meta, f, indent=1)
        for stale in folder.glob("*-*.*"):
            if stale.name not in data.values() and stale.name.split("-")[0] in ("vectors", "hnsw"):
                stale.unlink(missing_ok=True)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> ImageIndex:
        """An index `save` wrote."""
        folder = Path(folder)
        meta = _read_meta(folder)
        record = ModelRecord(*(meta[f.name] for f in dataclasses.fields(ModelRecord)))
        index = cls(record, exact_limit=meta["exact_limit"])
        if not meta["files"]:
            return index
        vectors = np.load(folder / meta["data"]["vectors"])
        if vectors.shape != (len(meta["files"]), meta["dim"]):
            raise ValueError(f"{folder}: {META} lists {len(meta['files'])} files but the vectors are {vectors.shape}")
        index.files, index.vectors = list(meta["files"]), vectors
        if "faiss" in meta["data"]:
            raw = np.fromfile(folder / meta["data"]["faiss"], dtype=np.uint8)
            index._faiss = faiss_module().deserialize_index(raw)
            index._faiss.hnsw.efSearch = meta["ef_search"]
        else:
            index._faiss = faiss_module().IndexFlatIP(meta["dim"])
            index._faiss.add(vectors)
        return index


def _read_meta(folder: Path) -> dict[str, Any]:
    path = folder / META
    if not path.is_file():
        raise ValueError(f"{folder} is not an image index (no {META}); build one with `jimm index MODEL FOLDER --out`")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); rebuild the index") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a format-{FORMAT} jimm image index; rebuild it with this version of jimm")
    return meta


def build_hnsw(vectors: np.ndarray, *, ef_construction: int = HNSW_EF_CONSTRUCTION):
    """An inner-product HNSW index (M=`HNSW_M`) holding `vectors` `[N, dim]`."""
    faiss = faiss_module()
    index = faiss.IndexHNSWFlat(vectors.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.add(np.ascontiguousarray(vectors, np.float32))
    return index


def tune_ef_search(hnsw, vectors: np.ndarray, *, target: float = TARGET_RECALL, probes: int = 200, seed: int = 0):
    """Set `hnsw.hnsw.efSearch` one step of `EF_SEARCH_STEPS` above the smallest whose recall@10 against exact
    search reaches `target`, measured with `probes` queries drawn from the collection: midpoints of random pairs of
    its vectors (in its distribution, yet not in the index, so no query finds itself). The extra step is a margin:
    on 200,000 random unit vectors these probes read ~0.03 higher than fresh queries (docs/benchmarks.md).

    Returns `(ef_search, recall at the step below)`, or None when no step reaches it: data without the
    low-dimensional structure HNSW relies on (uniform random vectors in hundreds of dimensions, for one) is better
    searched exactly.
    """
    rng = np.random.default_rng(seed)
    pairs = rng.integers(0, len(vectors), size=(probes, 2))
    queries = vectors[pairs[:, 0]] + vectors[pairs[:, 1]]
    queries = np.ascontiguousarray(queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12))
    exact = faiss_module().IndexFlatIP(vectors.shape[1])
    exact.add(np.ascontiguousarray(vectors, np.float32))
    k = min(10, len(vectors))
    want = exact.search(queries, k)[1]
    for step, ef in enumerate(EF_SEARCH_STEPS[:-1]):
        hnsw.hnsw.efSearch = ef
        got = hnsw.search(queries, k)[1]
        recall = float(np.mean([len(set(g) & set(w)) / k for g, w in zip(got, want, strict=True)]))
        if recall >= target:  # one step deeper: real queries (text) sit further from the data than these probes
            hnsw.hnsw.efSearch = EF_SEARCH_STEPS[step + 1]
            return hnsw.hnsw.efSearch, recall
    return None


__all__ = ["EXACT_LIMIT", "TARGET_RECALL", "Hit", "ImageIndex", "ModelRecord", "build_hnsw", "tune_ef_search"]
