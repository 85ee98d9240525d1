"""Where the CPU training step's time goes, per op: jimm (XLA's CPU profiler) and transformers (torch.profiler).

    PYTHONPATH=src python benchmarks/train_step_profile.py [--size s/16 --batch 16] [--threads 1] [--out ...]

Both steps (forward, loss, backward, AdamW) run in one process, alternately. Each op's cost is the fastest of its
calls over `--steps` profiled steps times its calls per step: on a shared machine the minimum is what the op
costs, the rest is waiting for a core. One thread by default: ops then run one after another, so their times add
up to the step and the shares are exact; `--threads 2` profiles the threaded step as it runs.

XLA ops are named from the compiled HLO: the einsum or primitive they came from (`metadata.op_name`),
"fwd"/"bwd", and a category (matmul, attention softmax, scan residual save/read, copy/transpose, elementwise);
torch ops by aten name and input shapes. Writes the top ops and the categories of each side to the report.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import os
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report import add_section

SKIP_EVENTS = ("ThunkExecutor", "SlinkyThreadPool", "end:", "Pjit", "$")


@dataclasses.dataclass
class Op:
    name: str
    calls_per_step: int
    min_ms: float  # fastest single call
    category: str = ""

    @property
    def ms(self) -> float:
        return self.calls_per_step * self.min_ms


# --------------------------------------------------------------------------------------------------------------
# XLA: the trace's per-op events, named and grouped with the compiled HLO.


def hlo_index(text: str) -> dict[str, dict]:
    """`{instruction name: {shape, opcode, op_name, ops inside (fusions)}}` of the optimised HLO text."""
    computations: dict[str, set[str]] = {}
    info: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        head = re.match(r"^(?:ENTRY )?%(\S+) .*\{$", line)
        if head and not line.startswith(" "):
            current = head.group(1)
            computations[current] = set()
            continue
        inst = re.match(r"^\s+(?:ROOT )?%(\S+) = (\S+(?: \S+)*?) ([\w-]+)\((.*)$", line)
        if inst and current:
            name, shape, opcode, rest = inst.groups()
            computations[current].add(opcode)
            op_name = re.search(r'op_name="([^"]*)"', rest)
            calls = re.search(r"calls=%([\w.-]+)", rest)
            info[name] = dict(
                shape=shape.split("{")[0],
                opcode=opcode,
                op_name=op_name.group(1) if op_name else "",
                calls=calls.group(1) if calls else None,
            )
    for entry in info.values():
        entry["ops"] = computations.get(entry["calls"], set()) | {entry["opcode"]}
    return info


def xla_category(entry: dict | None) -> str:
    if entry is None:
        return "other"
    ops, op_name = entry["ops"], entry["op_name"]
    if "dot" in ops or "convolution" in ops:
        return "attention softmax (fused with a matmul)" if {"reduce", "exponential"} & ops else "matmul"
    if "dynamic-update-slice" in ops and "dynamic_update_slice" in op_name:
        return "scan: save residuals (dynamic-update-slice)"
    if "dynamic-slice" in ops and "dynamic_slice" in op_name:
        return "scan: read residuals (dynamic-slice)"
    if entry["opcode"] == "fusion" and ops <= {"fusion", "broadcast", "constant", "parameter"}:
        return "fill (broadcast)"
    if entry["opcode"] == "copy" or "transpose" in ops or ops <= {"fusion", "copy", "bitcast", "parameter"}:
        return "copy/transpose"
    return "elementwise/reduction"


def xla_label(name: str, entry: dict | None) -> str:
    """`fwd|bwd [einsum equation] primitive -> shape`, from the op's `metadata.op_name`."""
    if entry is None:
        return name
    op_name = entry["op_name"]
    phase = "bwd" if "transpose(" in op_name else "fwd"
    equation = re.search(r"[A-Z]+,[A-Z]+->[A-Z]+", op_name)
    primitive = re.sub(r"\W+$", "", op_name.rsplit("/", 1)[-1]) or name.split(".")[0]
    what = f"{equation.group(0)} {primitive}" if equation else primitive
    return f"{phase} {what} -> {entry['shape']}"


def xla_ops(trace_dir: str, hlo_text: str, steps: int) -> list[Op]:
    import jax

    (path,) = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)
    plane = jax.profiler.ProfileData.from_file(path).find_plane_with_name("/host:CPU")
    durations: dict[str, list[float]] = collections.defaultdict(list)
    for line in plane.lines:
        if line.name == "python":
            continue
        for event in line.events:
            if not event.name.startswith(SKIP_EVENTS) and "::" not in event.name:
                durations[event.name].append(event.duration_ns / 1e6)
    info = hlo_index(hlo_text)
    # Pool the calls of identical ops (the scan body's ops run once per layer; the unrolled stack has one copy of
    # each op per layer): same label and same fused ops.
    pooled: dict[tuple, list[float]] = collections.defaultdict(list)
    for name, times in durations.items():
        entry = info.get(name)
        key = (xla_label(name, entry), xla_category(entry), tuple(sorted(entry["ops"])) if entry else ())
        pooled[key] += times
    ops = [Op(label, max(1, round(len(t) / steps)), min(t), category) for (label, category, _), t in pooled.items()]
    return sorted(ops, key=lambda o: -o.ms)


def profile_jimm(size: str, batch: int, steps: int, scan: bool) -> tuple[list[Op], float]:
    import jax
    import numpy as np
    from flax import nnx

    from jimm.models.vit import VisionTransformer
    from jimm.train.config import TrainConfig, parse_size
    from jimm.train.optim import make_optimizer
    from jimm.train.step import train_step

    model = VisionTransformer(
        **parse_size(size, image_size=224), num_classes=1000, dropout_rate=0.0, sharding=None, scan_layers=scan
    )
    cfg = TrainConfig(steps=10_000, warmup_steps=10, batch_size=batch, clip_norm=0.0, weight_decay=0.05, progress=False)
    x = np.random.default_rng(0).standard_normal((1, batch, 224, 224, 3), dtype=np.float32)
    y = (np.arange(batch, dtype=np.int32) % 1000)[None]
    optimizer = nnx.Optimizer(model, make_optimizer(cfg), wrt=nnx.Param)
    model.train()
    graphdef, state = nnx.split((model, optimizer))
    hlo = train_step.lower(graphdef, cfg, state, x, y).compile().as_text()
    box = [state]

    def step():
        box[0], metrics = train_step(graphdef, cfg, box[0], x, y)
        jax.block_until_ready(metrics["loss"])

    step()
    step()
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            for _ in range(steps):
                step()
        ops = xla_ops(trace_dir, hlo, steps)
    return ops, sum(op.ms for op in ops)


# --------------------------------------------------------------------------------------------------------------
# torch: torch.profiler's per-op self time, by aten name and input shapes.


def torch_category(name: str) -> str:
    if name in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul"):
        return "matmul"
    if "scaled_dot_product" in name or "flash_attention" in name:
        return "attention (fused SDPA kernel)"
    if "conv" in name:
        return "matmul"
    if name in ("aten::copy_", "aten::clone", "aten::contiguous", "aten::transpose", "aten::t"):
        return "copy/transpose"
    if name in ("aten::fill_", "aten::zero_", "aten::zeros", "aten::empty"):
        return "fill (broadcast)"
    return "elementwise/reduction"


def profile_torch(size: str, batch: int, steps: int) -> tuple[list[Op], float]:
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import ViTConfig, ViTForImageClassification

    from jimm.train.config import parse_size

    kw = parse_size(size, image_size=224)
    config = ViTConfig(
        hidden_size=kw["hidden_size"],
        num_hidden_layers=kw["num_layers"],
        num_attention_heads=kw["num_heads"],
        intermediate_size=kw["mlp_dim"],
        image_size=224,
        patch_size=kw["patch_size"],
        num_labels=1000,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = ViTForImageClassification(config)
    model.train()
    x, y = torch.randn(batch, 3, 224, 224), torch.arange(batch) % 1000
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)

    def step():
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(pixel_values=x).logits, y).backward()
        optimizer.step()

    step()
    step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step()
    durations: dict[str, list[float]] = collections.defaultdict(list)
    names = {}
    for event in prof.events():
        if event.self_cpu_time_total <= 0 or not event.name.startswith("aten::"):
            continue
        shapes = ", ".join(str(list(s)) for s in event.input_shapes if s)
        key = f"{event.name} {shapes}"
        durations[key].append(event.self_cpu_time_total / 1e3)
        names[key] = event.name
    ops = [Op(k, max(1, round(len(t) / steps)), min(t), torch_category(names[k])) for k, t in durations.items()]
    return ops, sum(op.ms for op in ops)


# --------------------------------------------------------------------------------------------------------------


def tables(title: str, ops: list[Op], total: float, top: int) -> list[str]:
    ops = sorted(ops, key=lambda o: -o.ms)
    lines = [
        f"**{title}**: {total / 1e3:.2f} s of op time per step.\n",
        "| op | calls/step | ms/step | share |",
        "|---|---|---|---|",
    ]
    for op in ops[:top]:
        lines.append(f"| `{op.name[:90]}` | {op.calls_per_step} | {op.ms:.0f} | {100 * op.ms / total:.1f}% |")
    categories: dict[str, float] = collections.defaultdict(float)
    for op in ops:
        categories[op.category] += op.ms
    lines += ["", "| category | ms/step | share |", "|---|---|---|"]
    for name, ms in sorted(categories.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {ms:.0f} | {100 * ms / total:.1f}% |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="s/16")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps per side")
    parser.add_argument("--threads", type=int, default=1, help="threads for XLA's and torch's intra-op pools")
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--unrolled", action="store_true", help="profile jimm with scan_layers=False")
    parser.add_argument("--out", default="", help="a report to add the tables to (default: print only)")
    parser.add_argument("--title", default="", help="the report section's title")
    args = parser.parse_args()
    if args.threads == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    import torch

    torch.set_num_threads(args.threads)
    stack = "unrolled" if args.unrolled else "scanned"
    jimm_ops, jimm_total = profile_jimm(args.size, args.batch, args.steps, scan=not args.unrolled)
    torch_ops, torch_total = profile_torch(args.size, args.batch, args.steps)
    what = f"ViT-{args.size.upper()} batch {args.batch}, fp32, {args.threads} thread(s)"
    lines = [
        f"{what}; fastest call of each op over {args.steps} profiled steps, times its calls per step. "
        f"jimm / torch op time: {jimm_total / torch_total:.2f}.\n",
        *tables(f"jimm ({stack} stack), XLA ops", jimm_ops, jimm_total, args.top),
        *tables("transformers (torch), aten ops", torch_ops, torch_total, args.top),
    ]
    print("\n".join(lines))
    if args.out:
        add_section(args.title or f"Training step op profile, {what}", "\n".join(lines), report=Path(args.out))


if __name__ == "__main__":
    main()
