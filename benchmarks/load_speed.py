"""How fast checkpoints load, against the physical floor (reading the file's bytes once) and transformers.

For ViT-B/16, L/16 and H/14 (random weights, fp32, saved by transformers), each measurement runs in a fresh
process after `import` and a JAX warm-up, with the page cache warm: the time to read the weight file's bytes
once, jimm's first `from_pretrained` (what a user feels: once per process), the median of later loads, and the
peak RSS growth during the first load; transformers' `ViTForImageClassification.from_pretrained` likewise.
Targets (issue 12): first load <= 4x the bytes, later loads <= 2x, RSS growth <= 1.2x the checkpoint.

    python benchmarks/load_speed.py                 # B/16, L/16, H/14; writes docs/benchmarks.md
    python benchmarks/load_speed.py --sizes B/16    # a subset
    python benchmarks/load_speed.py --quick         # a tiny model, to check the script itself
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
from _report import SummaryRow, add_section, commit, today

SIZES = {  # HF ViTConfig fields
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32),
    "B/16": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "L/16": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "H/14": dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, intermediate_size=5120, patch_size=14),
}

CHILD = r"""
import gc, json, statistics, sys, time
import numpy as np
which, path, later, benchmarks = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
sys.path.insert(0, benchmarks)
from _report import PeakRss
weights = sorted(__import__("pathlib").Path(path).glob("*.safetensors"))
total = sum(p.stat().st_size for p in weights)
if which == "jimm":
    import jax, jimm
    from flax import nnx
    jax.numpy.zeros(1).block_until_ready()
    def load():
        model = jimm.VisionTransformer.from_pretrained(path)
        jax.block_until_ready(jax.tree.leaves(nnx.state(model)))
        return model
else:
    import torch, transformers
    def load():
        return transformers.ViTForImageClassification.from_pretrained(path)
# The first touch of fresh memory is slow on VMs; warm the allocator so neither side pays for it.
warm = np.ones(total, np.uint8); del warm; gc.collect()
start = time.perf_counter()
for p in weights:
    with open(p, "rb") as f:
        data = f.read()
    del data
read_bytes = time.perf_counter() - start
gc.collect()
with PeakRss() as rss:
    start = time.perf_counter()
    model = load()
    first = time.perf_counter() - start
del model
gc.collect()
times = []
for _ in range(later):
    start = time.perf_counter()
    model = load()
    times.append(time.perf_counter() - start)
    del model
    gc.collect()
print(json.dumps({"read_bytes": read_bytes, "first": first, "later": statistics.median(times) if times else None,
                  "rss_growth": rss.growth, "bytes": total}))
"""


def measure(which: str, path: Path, later: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, which, str(path), str(later), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{which} load of {path} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def checkpoint(size: str, cache: Path) -> Path:
    """A transformers-saved random-weight ViT of this size (cached between runs)."""
    path = cache / size.replace("/", "-")
    if (path / "config.json").is_file():
        return path
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    ViTForImageClassification(ViTConfig(**SIZES[size])).save_pretrained(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sizes", nargs="+", default=["B/16", "L/16", "H/14"], choices=[s for s in SIZES if s != "tiny"]
    )
    parser.add_argument("--quick", action="store_true", help="tiny model; checks the script, not the speed")
    parser.add_argument("--later", type=int, default=3, help="later loads per process (median)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "jimm-bench-checkpoints")
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args()
    sizes = ["tiny"] if args.quick else args.sizes
    rows, summary = [], []
    for size in sizes:
        path = checkpoint(size, args.cache)
        jimm, hf = measure("jimm", path, args.later), measure("hf", path, args.later)
        mib = jimm["bytes"] / 2**20
        floor = min(jimm["read_bytes"], hf["read_bytes"])
        rows.append(
            f"| ViT-{size} | {mib:.0f} | {floor:.3f} | {jimm['first']:.3f} ({jimm['first'] / floor:.1f}x) | "
            f"{jimm['later']:.3f} ({jimm['later'] / floor:.1f}x) | {jimm['rss_growth'] / jimm['bytes']:.2f} | "
            f"{hf['first']:.3f} | {hf['later']:.3f} | {hf['rss_growth'] / hf['bytes']:.2f} |"
        )
        measured = f"{today()}, {os.cpu_count()}-core CPU"
        summary += [
            SummaryRow(f"ViT-{size} first load / reading the bytes once (x)", f"{jimm['first'] / floor:.2f}",
                       f"{hf['first'] / floor:.2f} (transformers)", f"{jimm['first'] / hf['first']:.2f}",
                       measured, commit()),
            SummaryRow(f"ViT-{size} later loads / reading the bytes once (x)", f"{jimm['later'] / floor:.2f}",
                       f"{hf['later'] / floor:.2f} (transformers)", f"{jimm['later'] / hf['later']:.2f}",
                       measured, commit()),
            SummaryRow(f"ViT-{size} peak RSS growth while loading / checkpoint size",
                       f"{jimm['rss_growth'] / jimm['bytes']:.2f}", f"{hf['rss_growth'] / hf['bytes']:.2f} "
                       "(transformers)", "", measured, commit()),
        ]  # fmt: skip
        print(rows[-1], flush=True)
    body = "\n".join(
        [
            "Fresh process per column, page cache warm, fp32 random weights saved by transformers; `bytes` is the"
            " time to read the weight file once (the floor), ratios are to it. RSS growth is the peak during the"
            " first load over the checkpoint size (jimm holds the parameters in host memory on CPU; transformers"
            " maps the file).",
            "",
            "| model | MiB | read bytes (s) | jimm first (s) | jimm later (s) | jimm RSS / ckpt | transformers first "
            "(s) | transformers later (s) | transformers RSS / ckpt |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(body)
    if not args.no_report and not args.quick:
        add_section("Checkpoint load speed on CPU (issue 12)", body, summary=summary)


if __name__ == "__main__":
    main()
