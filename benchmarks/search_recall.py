"""Recall@10 and query time of the approximate (HNSW) image index against exact search, on random unit vectors.

N random unit vectors of width `--dim` go into an exact index (faiss `IndexFlatIP`) and into the HNSW index
`jimm.search.ImageIndex` builds past its exact limit (`build_hnsw`: M=32, efConstruction=100). For fresh
random unit queries (not from the collection), each `efSearch` step reports recall@10 against the exact top 10
and the time per query, one query at a time (what `jimm search` does) and in one batch. The last line says what
`tune_ef_search` picks (ImageIndex runs it on midpoints of pairs of the collection's vectors): one step above the
smallest reaching recall 0.95 on those, or none (then ImageIndex stays exact).

Uniform random vectors are the hard case for every graph or cluster index: in hundreds of dimensions all points
are nearly equidistant, so it is run at several widths.

    python benchmarks/search_recall.py                      # 200,000 vectors at width 64; docs/benchmarks.md
    python benchmarks/search_recall.py --dims 64 128 512    # several widths
    python benchmarks/search_recall.py --n 20000 --no-report
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from _report import add_section, environment

from jimm.search.index import EF_SEARCH_STEPS, HNSW_EF_CONSTRUCTION, HNSW_M, build_hnsw, faiss_module, tune_ef_search


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def per_query_ms(index, queries: np.ndarray) -> tuple[float, float]:
    """(ms per query one at a time, ms per query in one batch)."""
    start = time.perf_counter()
    for q in queries:
        index.search(q[None], 10)
    single = (time.perf_counter() - start) / len(queries) * 1e3
    start = time.perf_counter()
    index.search(queries, 10)
    return single, (time.perf_counter() - start) / len(queries) * 1e3


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact, strict=True)]))


def run(n: int, dim: int, n_queries: int, seed: int) -> tuple[list[str], str]:
    faiss = faiss_module()
    rng = np.random.default_rng(seed)
    vectors, queries = unit(rng, n, dim), unit(rng, n_queries, dim)
    flat = faiss.IndexFlatIP(dim)
    flat.add(vectors)
    exact = flat.search(queries, 10)[1]
    flat_single, flat_batch = per_query_ms(flat, queries)
    start = time.perf_counter()
    hnsw = build_hnsw(vectors)
    build_s = time.perf_counter() - start
    rows = [f"| {dim} | exact (IndexFlatIP) | - | 1.000 | {flat_single:.2f} | {flat_batch:.3f} | - |"]
    for ef in EF_SEARCH_STEPS:
        hnsw.hnsw.efSearch = ef
        r = recall(hnsw.search(queries, 10)[1], exact)
        single, batch = per_query_ms(hnsw, queries)
        rows.append(f"| {dim} | HNSW | {ef} | {r:.3f} | {single:.2f} | {batch:.3f} | {flat_single / single:.1f}x |")
        print(rows[-1], flush=True)
    tuned = tune_ef_search(hnsw, vectors)
    picked = (
        f"width {dim}: tune_ef_search picks efSearch {tuned[0]} (the step below reached {tuned[1]:.3f} "
        f"on midpoints of pairs of the vectors); HNSW build {build_s:.0f} s"
        if tuned
        else f"width {dim}: no efSearch up to {EF_SEARCH_STEPS[-1]} reaches 0.95, so ImageIndex stays exact; "
        f"HNSW build {build_s:.0f} s"
    )
    print(picked, flush=True)
    return rows, picked


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dims", type=int, nargs="+", default=[64])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=0, help="faiss OpenMP threads (0: faiss's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-report", action="store_true", help="print only; do not write docs/benchmarks.md")
    args = parser.parse_args(argv)
    faiss = faiss_module()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    header = [
        "| width | index | efSearch | recall@10 | ms / query (one at a time) | ms / query (batch) | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    rows, notes = [], []
    for dim in args.dims:
        r, picked = run(args.n, dim, args.queries, args.seed)
        rows += r
        notes.append(picked)
    body = "\n".join(
        [
            f"{args.n:,} random unit vectors, {args.queries} fresh random unit queries, top 10; HNSW M={HNSW_M}, "
            f"efConstruction={HNSW_EF_CONSTRUCTION}; faiss {faiss.__version__}, {faiss.omp_get_max_threads()} "
            f"threads (machine below). Speed-up: exact one-at-a-time time over HNSW's.",
            "",
            *header,
            *rows,
            "",
            *(f"- {note}" for note in notes),
        ]
    )
    print(body + f"\n\n_{environment()}_")
    if not args.no_report:
        add_section("Image search: approximate (HNSW) vs exact recall@10 and query time", body)


if __name__ == "__main__":
    main()
