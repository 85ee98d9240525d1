"""DINOv2 forward on CPU, jimm vs transformers (torch) side by side: S/14 and B/14 at 224 and 518 px, batch 8, fp32.

Each size is built once with random weights by transformers, saved, and loaded by jimm from that folder, so both
run the same weights; 518 px is the checkpoints' native grid (37 x 37), 224 px the standard pipeline (the
position embeddings resampled to 16 x 16 on every call, as transformers does). Times are medians of steady-state
calls (jimm jitted once per shape); the first call (jimm: tracing and compiling) is reported too.

    python benchmarks/dinov2_cpu.py            # prints a table and adds it to docs/benchmarks.md
    python benchmarks/dinov2_cpu.py --quick    # a tiny model, to check the script itself (no report)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report import SummaryRow, add_section, commit, median_time, today

SIZES = {  # name: (width, depth, heads), facebook/dinov2-{small,base}
    "S/14": (384, 12, 6),
    "B/14": (768, 12, 12),
}
QUICK = {"tiny/14": (64, 2, 4)}


def jitted_forward(graphdef):
    """The model's forward, jitted over its state (one compile per input shape)."""
    import jax
    from flax import nnx

    return jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))


def first_call(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model and images; checks the script, not speed")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-report", action="store_true", help="print only; do not add to docs/benchmarks.md")
    args = parser.parse_args()

    import jax
    import numpy as np
    import torch
    from flax import nnx
    from transformers import Dinov2Config, Dinov2Model

    import jimm

    sizes, resolutions = (QUICK, (28, 70)) if args.quick else (SIZES, (224, 518))
    rows = []  # (size, resolution, jimm first, hf first, jimm s, hf s, max diff)
    for name, (width, depth, heads) in sizes.items():
        config = Dinov2Config(
            hidden_size=width, num_hidden_layers=depth, num_attention_heads=heads, image_size=518, patch_size=14
        )
        torch.manual_seed(0)
        hf = Dinov2Model(config).eval()
        with tempfile.TemporaryDirectory() as folder:
            hf.save_pretrained(folder)
            model = jimm.DINOv2Model.from_pretrained(folder, sharding=None)
        graphdef, state = nnx.split(model)
        forward = jitted_forward(graphdef)
        for res in resolutions:
            x = np.random.RandomState(0).rand(args.batch, res, res, 3).astype(np.float32)
            x_torch = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
            x_jax = jax.device_put(x)
            with torch.no_grad():
                hf_first = first_call(lambda: hf(x_torch))  # noqa: B023 (called here, in this iteration)
                jimm_first = first_call(lambda: forward(state, x_jax).block_until_ready())  # noqa: B023
                diff = float(np.abs(np.asarray(forward(state, x_jax)) - hf(x_torch).pooler_output.numpy()).max())
                t_hf = median_time(lambda: hf(x_torch), repeats=args.repeats)  # noqa: B023
            t_jimm = median_time(lambda: forward(state, x_jax).block_until_ready(), repeats=args.repeats)  # noqa: B023
            rows.append((name, res, jimm_first, hf_first, t_jimm, t_hf, diff))
            print(f"{name} {res}px: jimm {t_jimm:.3f} s, transformers {t_hf:.3f} s, ratio {t_jimm / t_hf:.2f}")

    title = f"DINOv2 forward on CPU, jimm vs transformers: batch {args.batch}, fp32, random weights"
    if args.quick:
        title += " (quick check)"
    lines = [
        "Steady-state forward time (median of repeats; jimm jitted) and the first call (jimm: trace and compile). "
        "`max diff` is the largest |pooler_output difference|.",
        "",
        "| model | image | jimm (s) | transformers (s) | jimm / transformers | first call jimm / transformers (s) "
        "| max diff |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| DINOv2-{n} | {r} px | {a:.3f} | {b:.3f} | {a / b:.2f} | {fa:.2f} / {fb:.2f} | {d:.1e} |"
            for n, r, fa, fb, a, b, d in rows
        ),
    ]
    print(f"\n{title}\n\n" + "\n".join(lines))
    if args.quick or args.no_report:
        return
    measured, sha = f"{today()}, {os.cpu_count()}-core CPU", commit()
    summary = [
        SummaryRow(
            f"DINOv2-{n} forward on CPU, fp32, batch {args.batch}, {r} px (s)",
            f"{a:.3f}",
            f"{b:.3f} (transformers)",
            f"{a / b:.2f}",
            measured,
            sha,
        )
        for n, r, _, _, a, b, _ in rows
    ]
    add_section(title, "\n".join(lines), summary=summary)


if __name__ == "__main__":
    main()
