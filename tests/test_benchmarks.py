"""The benchmark scripts cannot rot unseen: the page layout, the child protocol, the out-of-memory search, and
dry runs of the GPU benchmarks (the same code on CPU with tiny models)."""

import json
import os
import re
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _report  # noqa: E402
import attention_gpu  # noqa: E402
import gpu_children  # noqa: E402
import gpu_throughput  # noqa: E402
from gpu_models import REGISTRY  # noqa: E402


def row(measure: str, jimm: str = "1") -> _report.SummaryRow:
    return _report.SummaryRow(measure, jimm, "2 (ref)", "0.50", "2026-12-01, here", "abc1234")


def test_sections_go_newest_first_and_summary_rows_are_replaced_by_measure():
    page = _report.insert_section(_report.SKELETON, "## old\n\nfirst", [row("a"), row("b")])
    page = _report.insert_section(page, "## new\n\nsecond", [row("b", jimm="9"), row("c")])
    assert page.index("## new") < page.index("## old")
    assert page.index(_report.HISTORY) < page.index("## new")
    summary = page[page.index(_report.SUMMARY_START) : page.index(_report.SUMMARY_END)]
    assert [line.split(" | ")[0] for line in summary.splitlines()[3:]] == ["| a", "| b", "| c"]
    assert "| b | 9 |" in summary and "| b | 1 |" not in summary


def test_a_page_without_markers_is_refused():
    with pytest.raises(ValueError, match="lacks the marker line"):
        _report.insert_section("# Benchmarks\n", "## x", [])


def test_the_real_page_has_the_layout_and_placeholders_for_every_gpu_measure():
    page = _report.REPORT.read_text(encoding="utf-8")
    _report.insert_section(page, "## check", [])  # has the markers
    for name in REGISTRY:
        assert f"| {name} inference on GPU, bf16, 224 px (img/s, best batch) |" in page
        assert f"| {name} training step on GPU, AdamW, bf16, 224 px (img/s, largest batch) |" in page


def test_a_failed_write_leaves_the_old_page_and_no_temp_file(tmp_path, monkeypatch):
    report = tmp_path / "benchmarks.md"
    _report.add_section("first", "body", report=report)
    before = report.read_text()

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        _report.add_section("second", "body", report=report)
    assert report.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["benchmarks.md"]


def test_fragments_combine_into_one_section_and_a_missing_one_is_named(tmp_path):
    report = tmp_path / "benchmarks.md"
    _report.write_fragment(tmp_path / "a.json", "Part A", "| x |", [row("m")])
    _report.combine("GPU suite: X", [tmp_path / "a.json", tmp_path / "b.json"], report=report)
    page = report.read_text()
    assert page.count("\n## ") == 3  # Summary, History and the one new section
    assert "### Part A\n\n| x |" in page and "_b: no result" in page and "| m | 1 |" in page


def test_a_crashed_child_keeps_its_results_and_says_why():
    code = "print('RESULT {\"a\": 1}', flush=True); import sys; sys.exit('RESOURCE_EXHAUSTED: Out of memory')"
    run = _report.run_child([sys.executable, "-c", code], timeout=float("inf"))  # no budget
    assert run.results == [{"a": 1}] and run.error == "does not fit"
    run = _report.run_child([sys.executable, "-c", "raise ValueError('bad size')"], timeout=60)
    assert run.results == [] and run.error == "ValueError: bad size"
    run = _report.run_child([sys.executable, "-c", "import time; time.sleep(30)"], timeout=1)
    assert run.results == [] and run.error == "timed out after 1 s"


def test_the_training_search_moves_down_after_an_out_of_memory_crash(monkeypatch):
    def child(task, emit):  # batch 16 does not fit by XLA's plan; batch 8 aborts the process out of memory
        def try_batch(step, batch):
            if batch == 8:
                raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")
            return {"status": "does not fit"} if batch == 16 else {"status": "ok", "seconds": 1.0}

        gpu_children.run_steps(task, emit, try_batch)

    monkeypatch.setitem(gpu_children.CHILDREN, "fake", child)
    steps = [
        dict(mode="train", impl="xla", batches=[16, 8, 4, 2]),
        dict(mode="train", impl="cudnn", batches="chosen:xla"),
        dict(mode="inference", impl="cudnn", batches="largest:xla"),  # no inference ran: skipped
    ]
    task = dict(kind="fake", model="ViT-B/16", steps=steps, dry_run=True)
    rows = gpu_throughput.run_task(task, in_process=True, deadline=float("inf"))
    got = [(r["impl"], r["batch"], r["status"]) for r in rows]
    assert got == [
        ("xla", 16, "does not fit"),
        ("xla", 8, "does not fit"),
        ("xla", 4, "ok"),
        ("cudnn", 4, "ok"),
        ("cudnn", None, "skipped: no batch fit the first implementation"),
    ]


def test_a_child_that_cannot_start_fails_every_row_once(monkeypatch):
    calls = []

    def child(task, emit):
        calls.append(1)
        raise ImportError("No module named 'jax'")

    monkeypatch.setitem(gpu_children.CHILDREN, "fake", child)
    steps = [dict(mode="inference", impl="xla", batches=[2]), dict(mode="train", impl="xla", batches=[4, 2])]
    rows = gpu_throughput.run_task(
        dict(kind="fake", model="m", steps=steps, dry_run=True), in_process=True, deadline=1e9
    )
    assert len(calls) == 1 and {r["status"] for r in rows} == {"failed: ImportError: No module named 'jax'"}


def test_peaks_by_device_name_and_memory_prediction():
    assert gpu_throughput.device_peak("NVIDIA H100 80GB HBM3")[1] == 989.4
    assert gpu_throughput.device_peak("NVIDIA H100 PCIe")[1] == 756.0
    assert gpu_throughput.device_peak("NVIDIA H200")[1] == 989.4
    assert gpu_throughput.device_peak("cpu") is None
    assert gpu_children.predicted_bytes((1024, 100 + 1024 * 3, 100), 512) == 100 + 512 * 3


def test_analytic_flops_are_the_published_vit_numbers():
    # 35.13 and 123.1 GFLOP per 224 px image forward (docs/DESIGN: B/16 and L/16 with 1000 classes)
    for name, gflop in (("ViT-B/16", 35.13), ("ViT-L/16", 123.1)):
        entry = REGISTRY[name]
        assert entry.flops(entry.config(False)) / 1e9 == pytest.approx(gflop, rel=2e-3)


@pytest.mark.slow
def test_gpu_throughput_dry_run(tmp_path):
    report = tmp_path / "benchmarks.md"
    report.write_text(_report.REPORT.read_text(encoding="utf-8"))
    gpu_throughput.main(["--dry-run", "--in-process", "--models", "ViT-B/16", "--report", str(report)])
    page = report.read_text()
    history = page[page.index(_report.HISTORY) :]
    section = history[: history.index("\n## ", len(_report.HISTORY) + 3)]
    assert "GPU throughput and MFU: dry run on CPU" in section
    assert "| ViT-B/16 | inference | 2 | jimm, xla attention | " in section
    assert "| ViT-B/16 | train | 4 | jimm, xla attention | " in section
    assert (
        "| ViT-B/16 | train | 4 | jimm, cudnn attention | failed: RuntimeError: jax_attention('cudnn') needs" in section
    )
    assert "| ViT-B/16 | train | 4 | transformers (torch, SDPA, bf16 autocast) | " in section
    xla_over_analytic = float(re.search(r"\| ViT-B/16 \| train \| [\d.]+ \| [\d.]+ \| ([\d.]+) \|", section)[1])
    assert 1.0 < xla_over_analytic < 1.3  # elementwise ops on top of the matmuls; a scanned count would be ~0.5
    summary = page[: page.index(_report.SUMMARY_END)]
    assert "| ViT-B/16 training step on GPU, AdamW, bf16, 224 px (img/s, largest batch) | " in summary
    assert "dry run on CPU" in summary.split("ViT-B/16 training step on GPU")[1].splitlines()[0]


@pytest.mark.slow
def test_attention_benchmark_dry_run(tmp_path):
    """The GPU suite's attention step on CPU: every row goes through jimm's selection first, so a backend the
    device cannot run is a `refused` row with the reason (no crash, nothing compiled) and a list names its pick."""
    fragment = tmp_path / "attention.json"
    attention_gpu.main(
        [
            "--dry-run",
            "--in-process",
            "--backends",
            "xla,jax_cudnn,mosaic,mosaic+triton+xla",
            "--fragment",
            str(fragment),
        ]
    )
    data = json.loads(fragment.read_text())
    lines = data["body"].splitlines()
    assert [line.split(" | ")[:2] for line in lines[2:]] == [
        [f"| 2 x {t}", name]
        for t in (17, 65)
        for name in ("xla", "jax_cudnn", "mosaic", "mosaic+triton+xla (chose 'xla' (skipped mosaic: needs nvidia "
                     "hardware, not 'cpu'; triton: needs nvidia hardware, not 'cpu'))")]  # fmt: skip
    assert "| refused: cudnn needs nvidia hardware, not 'cpu' |" in lines[3]
    assert "| refused: no attention backend in ['mosaic'] supports q(2, 17, 4, 16) bfloat16 (training)" in lines[4]
    assert float(lines[2].split(" | ")[-1].rstrip(" |")) == 0.0  # xla against itself
    assert float(lines[5].split(" | ")[-1].rstrip(" |")) < 1e-2  # the list ran (tokamax xla), bf16 logits agree
    assert data["summary"][0]["jimm"] == "refused" and data["summary"][0]["reference"].endswith("(XLA)")
