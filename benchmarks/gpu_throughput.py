"""Images/s, MFU and peak memory on one GPU: inference and a full AdamW training step, bf16 compute over fp32
parameters, jimm next to transformers (torch, CUDA) when that is installed.

    python benchmarks/gpu_throughput.py                        # every model in gpu_models.REGISTRY
    python benchmarks/gpu_throughput.py --models ViT-B/16 --torch-compile
    python benchmarks/gpu_throughput.py --dry-run              # the same code on CPU, tiny sizes, a temp report

Rows:
- inference: the jitted `model(images)` at batch 256, 512 and 1024;
- training: `jimm.train.step.train_step` (forward, cross-entropy, backward, clipping, AdamW; it donates its
  state) at the largest batch that fits, searching down from 1024. Each compiled step's memory plan (XLA's
  memory analysis) is checked against the device's memory before it runs, a run that still runs out of memory is
  caught, and either way the row says "does not fit" and the search goes on;
- jimm runs each kernel of `--attention`: the first (`xla`, today's default) at every batch, the others (`cudnn`:
  cuDNN flash attention) at the largest inference batch and the training batch the first one reached;
- transformers: `ViTForImageClassification` (SDPA attention), bf16 autocast over fp32 weights, fused AdamW and
  the same clipping; `--torch-compile` adds torch.compile rows.
Timing: steps dispatched back to back with one `block_until_ready` at the end, warm-up excluded, the median of 3
repeats; compile time (lower + compile) is a column of its own. FLOPs: XLA's `cost_analysis()["flops"]` of the
same step lowered with the layers unrolled (XLA counts a scanned stack's loop body once), next to the analytic
count from the config. MFU = XLA's FLOPs / time / the device's dense bf16 peak (`PEAK_BF16_TFLOPS`).
Each model runs in child processes (jax and torch never share one GPU process), so a crash or an out-of-memory
costs one row, not the run; whatever `--budget-s` leaves no time for is reported as skipped. The page is
written once, at the end.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _report
from gpu_children import CHILDREN, GiB, make_row, record, resolve
from gpu_models import REGISTRY, TINY_VIT

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, matched in order against jax's `device_kind`.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.5),
    ("H100", 989.4),  # SXM: "NVIDIA H100 80GB HBM3"
    ("H200 NVL", 835.5),
    ("H200", 989.4),  # SXM, and GH200
    ("A100", 312.0),
)
DRY_PEAK = ("nominal 1 TFLOP/s (dry run)", 1.0)
PLANS = {  # batches: inference ascending, training descending (the search order)
    "gpu": dict(infer=(256, 512, 1024), train=(1024, 768, 512, 384, 256, 192, 128, 64, 32), repeats=3, target_s=1.0),
    "dry": dict(infer=(2,), train=(4, 2), repeats=1, target_s=0.0),
}
MIN_CHILD_S = 30  # about what a child needs to start, build a model and compile once


def device_peak(kind: str) -> tuple[str, float] | None:
    """(description, TFLOP/s) of the dense bf16 peak of a jax `device_kind`, or None when it is not in the table."""
    for name, tflops in PEAK_BF16_TFLOPS:
        if name.lower() in kind.lower():
            return f"{name} dense bf16 {tflops:g} TFLOP/s", tflops
    return None


def run_task(task: dict, *, in_process: bool, deadline: float) -> list[dict]:
    """All rows of one task, restarting its child after a crash: an out-of-memory crash moves the search on."""
    rows, steps, known, first = [], list(task["steps"]), {}, True
    while steps:
        left = deadline - time.monotonic()
        if left < MIN_CHILD_S and not in_process:
            rows += [make_row(task, s, None, status="skipped: time budget") for s in steps]
            break
        got, error = execute({**task, "steps": steps, "known": json.loads(json.dumps(known))}, in_process, left)
        rows += got
        for row in got:
            record(known, row)
        finished = {row["step"] for row in got if row["last"]}
        done = next(i for i in range(len(steps) + 1) if i not in finished)
        if done == len(steps):
            break
        step, error = steps[done], error or "child exited without a result"
        tried = {row["batch"] for row in got if row["step"] == done}
        left_over = [b for b in resolve(step["batches"], known) if b not in tried]
        status = error if error == "does not fit" else f"failed: {error}"
        rows.append(make_row(task, step, left_over[0] if left_over else None, status=status))
        record(known, rows[-1])
        if first and not got and error != "does not fit":  # it could not start: the next child would not either
            rows += [make_row(task, s, None, status=status) for s in steps[done + 1 :]]
            break
        retry = [{**step, "batches": left_over[1:]}] if error == "does not fit" and left_over[1:] else []
        steps, first = retry + steps[done + 1 :], False
    return rows


def execute(task: dict, in_process: bool, timeout: float) -> tuple[list[dict], str | None]:
    if in_process:
        got: list[dict] = []
        try:
            CHILDREN[task["kind"]](task, got.append)
        except Exception as err:  # what a crashed child would report
            return got, _report.describe_failure(f"{type(err).__name__}: {err}")
        return got, None
    env = {**os.environ, **({"JAX_PLATFORMS": "cpu"} if task["dry_run"] else {})}
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")  # jax preallocates 75% by default
    run = _report.run_child([sys.executable, __file__, "--child", json.dumps(task)], timeout=timeout, env=env)
    return run.results, run.error


# --------------------------------------------------------------------------------------------------------------
# The page.

LABELS = {
    "eager": "transformers (torch, SDPA, bf16 autocast)",
    "compile": "transformers + torch.compile",
}


def label(row: dict) -> str:
    return f"jimm, {row['impl']} attention" if row["kind"] == "jimm" else LABELS[row["impl"]]


def build_report(rows: list[dict], *, dry_run: bool, peak_tflops: float | None, notes: list[str]):
    """(title, markdown body, summary rows) from every row, in the order they ran."""
    kind = next((r["device"] for r in rows if r["kind"] == "jimm" and r.get("device")), "unknown device")
    peak = ("given by --peak-tflops", peak_tflops) if peak_tflops else (DRY_PEAK if dry_run else device_peak(kind))
    per_image: dict[tuple[str, str], float] = {}
    for r in rows:
        if r["kind"] == "jimm" and r.get("flops"):
            per_image[r["model"], r["mode"]] = r["flops"] / r["batch"]

    def mfu(r: dict) -> float | None:
        per = per_image.get((r["model"], r["mode"]))
        return per * r["batch"] / r["seconds"] / (peak[1] * 1e12) if per and peak and r.get("seconds") else None

    def gib(x) -> str:
        return f"{x / GiB:.3g}" if x else "-"

    table = [
        "| model | step | batch | implementation | img/s | MFU | ms / step | compile s | peak GiB | XLA plan GiB "
        "| note |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ok = r["status"] == "ok"
        m = mfu(r) if ok else None
        cells = [
            r["model"],
            r["mode"],
            str(r["batch"] or "-"),
            label(r),
            f"{r['batch'] / r['seconds']:,.0f}" if ok else r["status"],
            f"{m:.1%}" if m is not None else "-",
            f"{1e3 * r['seconds']:.1f}" if ok else "-",
            f"{r['compile_s']:.1f}" if r.get("compile_s") is not None else "-",
            gib(r.get("peak_bytes")),
            gib(r.get("plan_bytes")),
            r.get("note", ""),
        ]
        table.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")

    flop_rows = [
        "| model | step | XLA GFLOP / image | analytic GFLOP / image | XLA / analytic |",
        "|---|---|---|---|---|",
    ]
    for (model, mode), per in per_image.items():
        entry = REGISTRY[model]
        analytic = entry.flops(entry.config(dry_run)) * (3 if mode == "train" else 1)
        flop_rows.append(f"| {model} | {mode} | {per / 1e9:.4g} | {analytic / 1e9:.4g} | {per / analytic:.3f} |")

    px = TINY_VIT["image_size"] if dry_run else 224
    peak_text = f"MFU against {peak[0]}." if peak else f"No bf16 peak known for {kind!r}: pass --peak-tflops."
    body = "\n".join(
        [
            f"Device: {kind}. {peak_text} bf16 compute, fp32 parameters, {px} px; training is the full AdamW step.",
            "Peak GiB: the device's high-water mark in that child process so far (jax) or per row (torch); XLA plan:",
            "the compiled step's arguments + outputs + temporaries. Analytic training FLOPs are 3x the forward.",
            *notes,
            "",
            *table,
            "",
            *flop_rows,
        ]
    )
    title = "GPU throughput and MFU: " + ("dry run on CPU (tiny models, not a measurement)" if dry_run else kind)
    return title, body, summary_rows(rows, kind, dry_run, mfu)


def summary_rows(rows: list[dict], kind: str, dry_run: bool, mfu: Callable[[dict], float | None]):
    measured = f"{_report.today()}, {'dry run on CPU' if dry_run else kind}"
    summary = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for mode, measure in (
            ("inference", f"{model} inference on GPU, bf16, 224 px (img/s, best batch)"),
            ("train", f"{model} training step on GPU, AdamW, bf16, 224 px (img/s, largest batch)"),
        ):
            ok = [r for r in rows if r["model"] == model and r["mode"] == mode and r["status"] == "ok"]
            first = next((r["impl"] for r in rows if r["model"] == model and r["kind"] == "jimm"), None)
            ours = max((r for r in ok if r["impl"] == first), key=lambda r: r["batch"] / r["seconds"], default=None)
            ref = max((r for r in ok if r["impl"] == "eager"), key=lambda r: r["batch"] / r["seconds"], default=None)
            if ours is None:
                continue
            speed = ours["batch"] / ours["seconds"]
            m = mfu(ours)
            jimm_cell = f"{speed:,.0f} (b{ours['batch']}" + (f", {m:.0%} MFU)" if m is not None else ")")
            ref_cell = f"{ref['batch'] / ref['seconds']:,.0f} (transformers, b{ref['batch']})" if ref else "not run"
            ratio = f"{speed / (ref['batch'] / ref['seconds']):.2f}" if ref else "-"
            summary.append(_report.SummaryRow(measure, jimm_cell, ref_cell, ratio, measured, _report.commit()))
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(REGISTRY), help=f"comma-separated, from {list(REGISTRY)}")
    parser.add_argument("--attention", default="xla,cudnn", help="jimm attention kernels; the first is searched")
    parser.add_argument("--torch-compile", action="store_true", help="add torch.compile rows for transformers")
    parser.add_argument("--no-torch", action="store_true", help="jimm only")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny models, a temp report: checks the script")
    parser.add_argument("--in-process", action="store_true", help="no child processes (dry runs and tests)")
    parser.add_argument("--budget-s", type=float, default=0, help="stop starting children after this long")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, if not in the table")
    parser.add_argument("--memory-limit-gib", type=float, help="usable device memory (default: what jax reports)")
    parser.add_argument("--report", type=Path, help="default docs/benchmarks.md (a temp copy with --dry-run)")
    parser.add_argument("--fragment", type=Path, help="write a fragment for _report.py to combine instead")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        task = json.loads(args.child)
        CHILDREN[task["kind"]](task, _report.emit)
        return
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in REGISTRY]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(REGISTRY)}")
    if args.dry_run:
        os.environ["JAX_PLATFORMS"] = "cpu"  # also for --in-process (jax is imported later)
    plan = PLANS["dry" if args.dry_run else "gpu"]
    impls = [a.strip() for a in args.attention.split(",") if a.strip()]
    first = impls[0]
    jimm_steps = [dict(mode="inference", impl=first, batches=[b]) for b in plan["infer"]]
    jimm_steps.append(dict(mode="train", impl=first, batches=list(plan["train"])))
    for impl in impls[1:]:
        jimm_steps += [
            dict(mode="inference", impl=impl, batches=f"largest:{first}"),
            dict(mode="train", impl=impl, batches=f"chosen:{first}"),
        ]
    torch_steps = [dict(mode="inference", impl="eager", batches=[b]) for b in plan["infer"]]
    torch_steps.append(dict(mode="train", impl="eager", batches=list(plan["train"])))
    if args.torch_compile:
        torch_steps += [
            dict(mode="inference", impl="compile", batches="largest:eager"),
            dict(mode="train", impl="compile", batches="chosen:eager"),
        ]
    notes = []
    with_torch = not args.no_torch and all(importlib.util.find_spec(p) for p in ("torch", "transformers"))
    if not with_torch:
        notes.append(
            "transformers rows skipped: "
            + ("--no-torch." if args.no_torch else "torch or transformers is not installed.")
        )
    common = dict(
        dry_run=args.dry_run,
        target_s=plan["target_s"],
        repeats=plan["repeats"],
        memory_limit=int(args.memory_limit_gib * GiB) if args.memory_limit_gib else None,
    )
    tasks = []
    for model in models:
        tasks.append(dict(kind="jimm", model=model, steps=jimm_steps, **common))
        if with_torch:
            tasks.append(dict(kind="torch", model=model, steps=torch_steps, **common))

    deadline = time.monotonic() + (args.budget_s or math.inf)
    rows = []
    for task in tasks:
        got = run_task(task, in_process=args.in_process, deadline=deadline)
        for r in got:
            speed = f"{r['batch'] / r['seconds']:,.0f} img/s" if r["status"] == "ok" else r["status"]
            print(f"{r['model']} {r['mode']} b{r['batch']} {label(r)}: {speed}", flush=True)
        rows += got
    title, body, summary = build_report(rows, dry_run=args.dry_run, peak_tflops=args.peak_tflops, notes=notes)
    print(f"\n## {title}\n\n{body}\n")
    report = args.report or (_report.temp_report() if args.dry_run and not args.fragment else _report.REPORT)
    _report.publish(title, body, summary, fragment=args.fragment, report=report)


if __name__ == "__main__":
    main()
