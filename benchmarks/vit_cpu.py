"""jimm vs transformers (torch) on CPU, side by side in one run: forward time, load time, peak RSS while loading.

ViT-B/16 at 224 px, random weights, batch 8, fp32. Each loader runs in a fresh subprocess so its peak RSS is
its own; RSS is reported above the process's baseline after imports, and as a ratio to the checkpoint size.

    python benchmarks/vit_cpu.py            # prints a table and appends it to docs/benchmarks.md
    python benchmarks/vit_cpu.py --quick    # a tiny model, to check the script itself
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report import SummaryRow, add_section, commit, median_time, today

LOAD_SCRIPT = r"""
import gc, json, sys, time
which, path, benchmarks = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, benchmarks)
from _report import PeakRss
if which == "jimm":
    import jax, jimm
    from flax import nnx
    jax.numpy.zeros(1).block_until_ready()
else:
    import torch, transformers
gc.collect()
with PeakRss() as rss:
    start = time.perf_counter()
    if which == "jimm":
        model = jimm.VisionTransformer.from_pretrained(path)
        jax.block_until_ready(jax.tree.leaves(nnx.state(model)))
    else:
        model = transformers.ViTForImageClassification.from_pretrained(path)
    seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_above_base": rss.growth}))
"""


def measure_load(which: str, path: str, repeats: int) -> dict[str, float]:
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", LOAD_SCRIPT, which, path, str(Path(__file__).parent)],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {
        "seconds": sorted(r["seconds"] for r in runs)[len(runs) // 2],
        "peak": max(r["peak_above_base"] for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model; checks the script, not the speed")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-report", action="store_true", help="print only; do not append to docs/benchmarks.md")
    args = parser.parse_args()

    import jax
    import numpy as np
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    import jimm

    kwargs = dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32, patch_size=8
    )
    config = ViTConfig(**kwargs) if args.quick else ViTConfig()
    size = config.image_size
    torch.manual_seed(0)
    hf = ViTForImageClassification(config).eval()
    x = np.random.RandomState(0).rand(args.batch, size, size, 3).astype(np.float32)
    x_torch = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())

    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        ckpt_bytes = (Path(folder) / "model.safetensors").stat().st_size
        model = jimm.VisionTransformer.from_pretrained(folder)
        forward = jax.jit(lambda state, x: __import__("flax").nnx.merge(graphdef, state)(x))
        graphdef, state = __import__("flax").nnx.split(model)
        x_jax = jax.device_put(x)

        with torch.no_grad():
            diff = float(np.abs(np.asarray(forward(state, x_jax)) - hf(x_torch).logits.numpy()).max())
            t_hf = median_time(lambda: hf(x_torch), repeats=args.repeats)
        t_jimm = median_time(lambda: forward(state, x_jax).block_until_ready(), repeats=args.repeats)
        load_jimm = measure_load("jimm", folder, repeats=3)
        load_hf = measure_load("hf", folder, repeats=3)

    name = "tiny (quick check)" if args.quick else "ViT-B/16 224px"
    mb = 1024 * 1024
    rows = [
        (f"forward, batch {args.batch} (s)", t_jimm, t_hf),
        ("from_pretrained (s)", load_jimm["seconds"], load_hf["seconds"]),
        ("peak RSS above baseline while loading (MiB)", load_jimm["peak"] / mb, load_hf["peak"] / mb),
    ]
    title = f"jimm vs transformers on CPU: {name}, fp32, random weights"
    lines = [
        f"Checkpoint {ckpt_bytes / mb:.0f} MiB; max |logits difference| {diff:.1e}.",
        "",
        "| measure | jimm | transformers | jimm / transformers |",
        "| --- | ---: | ---: | ---: |",
        *(f"| {label} | {a:.3f} | {b:.3f} | {a / b:.2f} |" for label, a, b in rows),
        f"| jimm peak RSS / checkpoint size | {load_jimm['peak'] / ckpt_bytes:.2f} | "
        f"{load_hf['peak'] / ckpt_bytes:.2f} | |",
    ]
    print(f"{title}\n\n" + "\n".join(lines))
    measures = (  # the summary rows of docs/benchmarks.md this run replaces, one per row above
        f"ViT-B/16 forward on CPU, fp32, batch {args.batch} (s)",
        "ViT-B/16 from_pretrained on CPU, page cache warm (s)",
        "ViT-B/16 peak RSS growth while loading on CPU (MiB)",
    )
    measured, sha = f"{today()}, {os.cpu_count()}-core CPU", commit()
    summary = [
        SummaryRow(measure, f"{a:.3f}", f"{b:.3f} (transformers)", f"{a / b:.2f}", measured, sha)
        for measure, (_, a, b) in zip(measures, rows, strict=True)
    ]
    if not args.no_report and not args.quick:
        add_section(title, "\n".join(lines), summary=summary)


if __name__ == "__main__":
    main()
