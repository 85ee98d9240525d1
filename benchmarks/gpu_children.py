"""What runs in `gpu_throughput.py`'s child processes: the batch search of each step, and the jimm and torch
measurements. The parent imports this module without jax or torch; each child imports one of them.
"""

from __future__ import annotations

import gc
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _report
from gpu_models import REGISTRY

GiB = 2**30


def predicted_bytes(plan: tuple[int, int, int], batch: int) -> int:
    """XLA's plan `(batch0, total bytes, argument bytes)` scaled to a smaller batch, all but the arguments linearly.

    Part of the temporaries does not grow with the batch (gradients), so this is a lower bound: a batch predicted
    not to fit does not fit."""
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
            note = f"predicted {predicted_bytes(plan, batch) / GiB:.3g} GiB from batch {plan[0]}'s plan"
            return {"status": "does not fit", "note": f"{note} > {limit / GiB:.3g} GiB usable"}
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
                note = f"XLA plans {need / GiB:.3g} GiB > {limit / GiB:.3g} GiB usable"
                return {"status": "does not fit", "plan_bytes": need, "note": note}

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
