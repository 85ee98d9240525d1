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
import gc
import importlib.util
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _report
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
GiB = 2**30


def device_peak(kind: str) -> tuple[str, float] | None:
    """(description, TFLOP/s) of the dense bf16 peak of a jax `device_kind`, or None when it is not in the table."""
    for name, tflops in PEAK_BF16_TFLOPS:
        if name.lower() in kind.lower():
            return f"{name} dense bf16 {tflops:g} TFLOP/s", tflops
    return None


def predicted_bytes(plan: tuple[int, int, int], batch: int) -> int:
    """XLA's plan `(batch0, total bytes, argument bytes)` at one batch scaled to another (the rest grows linearly)."""
    batch0, total, fixed = plan
    return fixed + (total - fixed) * batch // batch0


def time_per_step(run: Callable[[int], None], *, repeats: int, target_s: float) -> float:
    """Seconds per step; `run(n)` dispatches n steps and blocks once. A warm-up step and a calibration step, then
    the median of `repeats` runs of about `target_s` each."""
    run(1)
    start = time.perf_counter()
    run(1)
    n = max(1, min(50, math.ceil(target_s / max(time.perf_counter() - start, 1e-4))))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(n)
        times.append((time.perf_counter() - start) / n)
    return statistics.median(times)


# --------------------------------------------------------------------------------------------------------------
# Steps: each tries its batches in order and ends at the first that fits. Shared by the children and the parent.


def record(known: dict, row: dict) -> None:
    """Remember which batches fit (and the smallest that did not) per (mode, implementation)."""
    seen = known.setdefault(f"{row['mode']}/{row['impl']}", {"fit": [], "nofit": None})
    if row["status"] == "ok":
        seen["fit"].append(row["batch"])
    elif row["status"] == "does not fit" and row["batch"] is not None:
        seen["nofit"] = min(row["batch"], seen["nofit"] or row["batch"])


def resolve(batches: list[int] | str, known: dict) -> list[int]:
    """A step's batches: a list, or "largest:IMPL" / "chosen:IMPL" (what IMPL's inference / training reached)."""
    if not isinstance(batches, str):
        return list(batches)
    which, impl = batches.split(":")
    fits = known.get(f"{'inference' if which == 'largest' else 'train'}/{impl}", {}).get("fit", [])
    return [max(fits)] if fits else []


def make_row(task: dict, spec: dict, batch: int | None, **fields) -> dict:
    ident = {"model": task["model"], "kind": task["kind"], "mode": spec["mode"], "impl": spec["impl"]}
    return {**ident, "batch": batch, **fields}


def run_steps(task: dict, emit: Callable[[dict], None], try_batch: Callable[[dict, int], dict]) -> None:
    """Run every step of `task` in a child; `try_batch(step, batch)` returns the row's fields (`status` first)."""
    known = task["known"]
    for i, step in enumerate(task["steps"]):
        batches = resolve(step["batches"], known)
        if not batches:
            emit(make_row(task, step, None, status="skipped: no batch fit the first implementation", step=i, last=True))
            continue
        for j, batch in enumerate(batches):
            nofit = known.get(f"{step['mode']}/{step['impl']}", {}).get("nofit")
            fields = (
                {"status": "does not fit", "note": f"batch {nofit} did not"}
                if nofit is not None and batch >= nofit
                else try_batch(step, batch)
            )
            row = make_row(task, step, batch, **fields, step=i, last=fields["status"] == "ok" or j == len(batches) - 1)
            record(known, row)
            emit(row)
            if row["status"] == "ok":
                break


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
# Children.


def jimm_child(task: dict, emit: Callable[[dict], None]) -> None:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jimm.common.attention import jax_attention
    from jimm.train.config import TrainConfig
    from jimm.train.optim import make_optimizer
    from jimm.train.step import train_step

    device = jax.devices()[0]
    if not task["dry_run"] and device.platform != "gpu":
        raise RuntimeError(f"JAX sees no GPU ({jax.devices()}); install jax[cuda12] or use --dry-run")
    entry = REGISTRY[task["model"]]
    config = entry.config(task["dry_run"])
    h, w = entry.image_hw(config)
    limit = task["memory_limit"] or (device.memory_stats() or {}).get("bytes_limit")
    train_config = TrainConfig(steps=10_000, warmup_steps=100, progress=False)  # train_step reads no batch size

    def make(impl: str, mode: str, scan: bool = True):
        attention = None if impl == "xla" else jax_attention(impl)
        model = entry.jimm(
            config, dtype=jnp.bfloat16, param_dtype=jnp.float32, attention_fn=attention, scan_layers=scan
        )
        if mode == "inference":
            return model
        optimizer = nnx.Optimizer(model, make_optimizer(train_config), wrt=nnx.Param)
        model.train()
        return model, optimizer

    box = [nnx.split(make("xla", "train"))[1]]  # the one real state; inference reads its model half
    graphdefs: dict[tuple, nnx.GraphDef] = {}

    def graphdef(impl: str, mode: str, scan: bool = True):
        if (impl, mode, scan) not in graphdefs:
            graphdefs[impl, mode, scan] = nnx.split(nnx.eval_shape(lambda: make(impl, mode, scan)))
        return graphdefs[impl, mode, scan]

    def inputs(mode: str, batch: int):
        x = jax.random.normal(jax.random.key(0), (batch, h, w, 3), jnp.bfloat16)
        return (x,) if mode == "inference" else (x[None], (jnp.arange(batch, dtype=jnp.int32) % classes)[None])

    def lower(mode: str, gd, state, args):
        if mode == "inference":
            return jax.jit(lambda s, x: nnx.merge(gd, s)(x)).lower(state, *args)
        return train_step.lower(gd, train_config, state, *args)

    gd, state = graphdef("xla", "inference")[0], box[0][0]
    classes = jax.eval_shape(lambda s, x: nnx.merge(gd, s)(x), state, jnp.zeros((1, h, w, 3), jnp.bfloat16)).shape[-1]
    per_image: dict[str, float | None] = {}

    def xla_flops(mode: str, batch: int) -> float | None:
        """XLA's count for the unrolled stack (it counts a scanned stack's loop body once), lowered abstractly at
        the first batch that runs, per image; FLOPs are linear in the batch but for the optimizer's few per step."""
        if mode not in per_image:
            gd, abstract = graphdef("xla", mode, scan=False)
            try:
                cost = lower(mode, gd, abstract, jax.eval_shape(lambda: inputs(mode, batch))).cost_analysis()
                cost = cost[0] if isinstance(cost, list | tuple) else cost
                per_image[mode] = float(cost["flops"]) / batch if cost and cost.get("flops", 0) > 0 else None
            except Exception as err:  # the analytic count is still printed; MFU says "-"
                print(f"XLA cost analysis failed: {err}", file=sys.stderr)
                per_image[mode] = None
        return per_image[mode] * batch if per_image[mode] else None

    plans: dict[tuple, tuple[int, int, int]] = {}

    def try_batch(step: dict, batch: int) -> dict:
        mode, impl = step["mode"], step["impl"]
        plan = plans.get((mode, impl))
        if limit and plan and predicted_bytes(plan, batch) > limit:
            note = f"predicted {predicted_bytes(plan, batch) / GiB:.1f} GiB from batch {plan[0]}'s plan"
            return {"status": "does not fit", "note": f"{note} > {limit / GiB:.1f} GiB"}
        gd = graphdef(impl, mode)[0]
        state = box[0] if mode == "train" else box[0][0]
        try:
            args = inputs(mode, batch)
            start = time.perf_counter()
            compiled = lower(mode, gd, state, args).compile()
            compile_s = time.perf_counter() - start
        except Exception as err:
            failure = _report.describe_failure(f"{type(err).__name__}: {err}")
            return {"status": failure if failure == "does not fit" else f"failed: {failure}"}
        memory = compiled.memory_analysis()
        need = None
        if memory is not None:
            fixed = memory.argument_size_in_bytes
            need = fixed + memory.output_size_in_bytes - memory.alias_size_in_bytes + memory.temp_size_in_bytes
            if limit and need > limit:
                plans[mode, impl] = (batch, need, fixed)
                return {"status": "does not fit", "plan_bytes": need, "note": f"XLA plans {need / GiB:.1f} GiB"}

        def run(n: int) -> None:
            out = None
            for _ in range(n):
                if mode == "train":  # donated: the state moves on every step
                    box[0], out = compiled(box[0], *args)
                else:
                    out = compiled(box[0][0], *args)
            jax.block_until_ready((box[0], out))

        if mode == "train":  # a failure here may have consumed the donated state: let the child die, restart
            seconds = time_per_step(run, repeats=task["repeats"], target_s=task["target_s"])
        else:
            try:
                seconds = time_per_step(run, repeats=task["repeats"], target_s=task["target_s"])
            except Exception as err:
                failure = _report.describe_failure(f"{type(err).__name__}: {err}")
                return {"status": failure if failure == "does not fit" else f"failed: {failure}"}
        stats = device.memory_stats() or {}
        return {
            "status": "ok",
            "seconds": seconds,
            "compile_s": compile_s,
            "peak_bytes": stats.get("peak_bytes_in_use"),
            "plan_bytes": need,
            "flops": xla_flops(mode, batch),
            "device": device.device_kind,
        }

    run_steps(task, emit, try_batch)


def torch_child(task: dict, emit: Callable[[dict], None]) -> None:
    import torch

    cuda = not task["dry_run"]
    if cuda and not torch.cuda.is_available():
        for i, step in enumerate(task["steps"]):
            emit(
                make_row(task, step, None, status=f"skipped: torch {torch.__version__} has no CUDA", step=i, last=True)
            )
        return
    device = "cuda" if cuda else "cpu"
    entry = REGISTRY[task["model"]]
    config = entry.config(task["dry_run"])
    h, w = entry.image_hw(config)
    model = entry.hf(config).to(device)
    with torch.no_grad():
        classes = entry.hf_logits(model(pixel_values=torch.zeros(1, 3, h, w, device=device))).shape[-1]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=cuda)
    compiled: dict[str, torch.nn.Module] = {}

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def try_batch(step: dict, batch: int) -> dict:
        impl, mode = step["impl"], step["mode"]
        module = model if impl == "eager" else compiled.setdefault(impl, torch.compile(model))
        x = torch.randn(batch, 3, h, w, device=device)
        y = torch.arange(batch, device=device) % classes
        model.train(mode == "train")

        def train_once() -> None:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device, dtype=torch.bfloat16):
                logits = entry.hf_logits(module(pixel_values=x))
            torch.nn.functional.cross_entropy(logits.float(), y).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()

        def run(n: int) -> None:
            if mode == "train":
                for _ in range(n):
                    train_once()
            else:
                with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16):
                    for _ in range(n):
                        module(pixel_values=x)
            sync()

        if cuda:
            torch.cuda.reset_peak_memory_stats()
        try:
            start = time.perf_counter()
            run(1)  # torch.compile compiles here
            first = time.perf_counter() - start
            seconds = time_per_step(run, repeats=task["repeats"], target_s=task["target_s"])
        except Exception as err:  # torch.cuda.OutOfMemoryError among others
            failure = _report.describe_failure(f"{type(err).__name__}: {err}")
            optimizer.zero_grad(set_to_none=True)
            del x, y, err
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
            return {"status": failure if failure == "does not fit" else f"failed: {failure}"}
        return {
            "status": "ok",
            "seconds": seconds,
            "compile_s": first if impl == "compile" else None,
            "peak_bytes": torch.cuda.max_memory_allocated() if cuda else None,
            "device": torch.cuda.get_device_name() if cuda else "cpu",
        }

    run_steps(task, emit, try_batch)


CHILDREN: dict[str, Callable[[dict, Callable[[dict], None]], None]] = {"jimm": jimm_child, "torch": torch_child}


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
