"""SigLIP 2 B/16 NaFlex on CPU, jimm vs transformers (torch) side by side in one run, as ratios.

Random weights, fp32, 8 real photos of mixed aspect ratios (skimage: square, landscape, portrait) at 256 patches:
the image processor (`preprocess_naflex` vs transformers' `Siglip2ImageProcessor`), image encoding of the processed
batch (`encode_image` vs `get_image_features`, same inputs), and the first (compiling) call; then a second batch
of other aspect ratios, which must reuse the compiled program (the grids are data).

    python benchmarks/naflex_cpu.py          # prints a table, adds it to docs/benchmarks.md (needs a quiet machine)
    python benchmarks/naflex_cpu.py --quick  # a tiny model, to check the script itself (no report)
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

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


def photos(batch: int, offset: int = 0) -> list:
    from skimage import data

    pool = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.rocket()[:, 200:420],
            data.coffee()[:, 100:300], data.astronaut()[:300], data.chelsea()[50:, :200]]  # fmt: skip
    return [pool[(i + offset) % len(pool)] for i in range(batch)]


def measure(quick: bool, batch: int, patches: int, repeats: int) -> list[tuple[str, float, float]]:
    import numpy as np
    import torch
    import transformers
    from flax import nnx

    import jimm
    from jimm.data.naflex import NaFlexProcessorConfig, preprocess_naflex

    config = transformers.Siglip2Config(
        vision_config=TINY if quick else {}, text_config={**TINY, "vocab_size": 128} if quick else {}
    )
    torch.manual_seed(0)
    hf = transformers.Siglip2Model(config).eval()
    hf_processor = transformers.Siglip2ImageProcessorPil(max_num_patches=patches)
    processor = NaFlexProcessorConfig(max_num_patches=patches)
    images = photos(batch)
    t_pre = median_time(lambda: preprocess_naflex(images, processor), repeats=repeats)
    t_pre_hf = median_time(lambda: hf_processor(images=images, return_tensors="pt"), repeats=repeats)
    inputs = preprocess_naflex(images, processor)
    hf_inputs = {k: torch.from_numpy(np.asarray(v)) for k, v in inputs._asdict().items()}
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        model = jimm.from_pretrained(folder)

    traces = []

    def encode(m, x):
        traces.append(1)
        return m.encode_image(x)

    image = nnx.jit(encode)
    start = time.perf_counter()
    ours = np.asarray(image(model, inputs))
    first_jimm = time.perf_counter() - start
    with torch.no_grad():
        start = time.perf_counter()
        theirs = hf.get_image_features(**hf_inputs).pooler_output.numpy()
        first_hf = time.perf_counter() - start
        t_image_hf = median_time(lambda: hf.get_image_features(**hf_inputs), repeats=repeats)
    t_image = median_time(lambda: image(model, inputs).block_until_ready(), repeats=repeats)
    other = preprocess_naflex(photos(batch, offset=3), processor)
    image(model, other).block_until_ready()
    grids = sorted({tuple(g) for g in np.concatenate([inputs.spatial_shapes, other.spatial_shapes]).tolist()})
    print(f"max |image embedding diff| {np.abs(ours - theirs).max():.1e}; {len(grids)} grids {grids}")
    print(f"compilations for two batches of mixed aspect ratios: {len(traces)}")
    name = "SigLIP 2 tiny NaFlex" if quick else "SigLIP 2 B/16 NaFlex"
    return [
        (f"{name} image processor, {batch} photos, {patches} patches (s)", t_pre, t_pre_hf),
        (f"{name} image encoding, batch {batch}, {patches} patches (s)", t_image, t_image_hf),
        (f"{name} first image call, incl. compile (s)", first_jimm, first_hf),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny model; checks the script, not the speed")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patches", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-report", action="store_true", help="print only; do not add to docs/benchmarks.md")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.patches, args.repeats = 3, 64, 1
    rows = measure(args.quick, args.batch, args.patches, args.repeats)
    title = f"SigLIP 2 NaFlex on CPU, jimm vs transformers, fp32, random weights{' (quick)' if args.quick else ''}"
    lines = [
        "| measure | jimm | transformers | jimm / transformers |",
        "| --- | ---: | ---: | ---: |",
        *(f"| {label} | {a:.3f} | {b:.3f} | {a / b:.2f} |" for label, a, b in rows),
    ]
    print(f"{title}\n\n" + "\n".join(lines))
    if args.no_report or args.quick:
        return
    measured, sha = f"{today()}, {os.cpu_count()}-core CPU", commit()
    summary = [
        SummaryRow(
            f"{label.replace(' (s)', '')} on CPU, fp32 (s)",
            f"{a:.3f}",
            f"{b:.3f} (transformers)",
            f"{a / b:.2f}",
            measured,
            sha,
        )
        for label, a, b in rows
        if "first" not in label
    ]
    add_section(title, "\n".join(lines), summary=summary)


if __name__ == "__main__":
    main()
