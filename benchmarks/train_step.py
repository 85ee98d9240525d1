"""Training step (forward, loss, backward, AdamW update), jimm vs transformers (torch), fp32, side by side.

    PYTHONPATH=src python benchmarks/train_step.py [--iters 5] [--out docs/benchmarks.md]

Runs ViT-S/16 batch 16 and ViT-B/16 batch 8 at 224 px, on whatever CPU/GPU JAX and torch see, and adds a
Markdown table (with date, machine load, versions and commit) to --out, newest first, with its summary rows.
Ratios > 1 in the table mean jimm is faster.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report import REPORT, SummaryRow, add_section, commit, today

CASES = [("s/16", 16), ("b/16", 8)]
UNROLLED = ("s/16", 16)  # also timed with scan_layers=False: the unrolled stack should be no slower


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", default=str(REPORT), help="the report; an empty string prints only")
    args = parser.parse_args()

    import jax
    import torch
    import transformers

    from jimm.train.bench import bench_jimm, bench_torch

    load_before = os.getloadavg()
    rows = []
    for size, batch in CASES:
        kw = dict(batch=batch, image_size=224, num_classes=1000, warmup=args.warmup, iters=args.iters)
        j = bench_jimm(size, **kw)
        t = bench_torch(size, **kw)
        if (size, batch) == UNROLLED:
            j["unrolled_step_s"] = bench_jimm(size, **kw, scan_layers=False)["train_step_s"]
        rows.append((size, batch, j, t))
        print(
            f"ViT-{size.upper()} b{batch}: train step jimm {j['train_step_s']:.3f}s torch {t['train_step_s']:.3f}s "
            f"(x{t['train_step_s'] / j['train_step_s']:.2f}); "
            f"forward jimm {j['forward_s']:.3f}s torch {t['forward_s']:.3f}s"
        )
    load_after = os.getloadavg()

    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, JAX devices {jax.devices()}; "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (other jobs were running; ratios "
        f"from one run side by side are more reliable than the absolute times).  ",
        f"Versions: jax {jax.__version__}, torch {torch.__version__}, transformers {transformers.__version__}; "
        f"commit {commit()}. Median of {args.iters} steps after {args.warmup} warm-up steps; 224 px, 1000 classes.\n",
        "| model | batch | jimm step (s) | torch step (s) | jimm/torch speed "
        "| jimm fwd (s) | torch fwd (s) | fwd speed | jimm step, unrolled stack (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    summary = []
    for size, batch, j, t in rows:
        lines.append(
            f"| ViT-{size.upper()} | {batch} | {j['train_step_s']:.3f} | {t['train_step_s']:.3f} | "
            f"{t['train_step_s'] / j['train_step_s']:.2f}x | {j['forward_s']:.3f} | {t['forward_s']:.3f} | "
            f"{t['forward_s'] / j['forward_s']:.2f}x | "
            + (f"{j['unrolled_step_s']:.3f} |" if "unrolled_step_s" in j else "- |")
        )
        summary.append(
            SummaryRow(
                f"ViT-{size.upper()} training step on {jax.default_backend().upper()}, fp32, batch {batch} (s)",
                f"{j['train_step_s']:.3f}",
                f"{t['train_step_s']:.3f} (transformers)",
                f"{j['train_step_s'] / t['train_step_s']:.2f}",
                f"{today()}, {os.cpu_count()}-core CPU",
                commit(),
            )
        )
    title = "Training step, jimm vs transformers (torch), fp32"
    print(f"{title}\n\n" + "\n".join(lines))
    if args.out:
        add_section(title, "\n".join(lines), summary=summary, report=Path(args.out))


if __name__ == "__main__":
    main()
