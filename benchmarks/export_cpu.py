"""Exported models on CPU: ViT-B/16 classification and CLIP B/16 image encoding, side by side in one run: jimm
(JAX jit), the file `jimm export` writes run in onnxruntime, and transformers (torch), as ratios.

Random weights (one transformers model per architecture, saved and loaded by jimm, so all three run the same
weights; the largest output difference is printed), fp32, a batch of 8 images at 224 px. Also the time to export
and the first onnxruntime call (session creation included).

    python benchmarks/export_cpu.py            # prints a table and adds it to docs/benchmarks.md
    python benchmarks/export_cpu.py --quick    # tiny models, to check the script itself (no report)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report import SummaryRow, add_section, commit, median_time, today

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
TINY_IMAGE = dict(TINY, image_size=32, patch_size=8)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return "unknown CPU"


def models(quick: bool) -> dict:
    import transformers as T

    if quick:
        return {
            "ViT tiny": T.ViTForImageClassification(T.ViTConfig(**TINY_IMAGE, num_labels=10)),
            "CLIP tiny": T.CLIPModel(T.CLIPConfig(vision_config=TINY_IMAGE, text_config={**TINY, "vocab_size": 99})),
        }
    return {
        "ViT-B/16": T.ViTForImageClassification(T.ViTConfig(num_labels=1000)),
        "CLIP B/16": T.CLIPModel(T.CLIPConfig(vision_config={"patch_size": 16})),
    }


def measure(name: str, hf, *, batch: int, repeats: int) -> dict:
    import jax
    import numpy as np
    import onnxruntime as ort
    import torch
    from flax import nnx

    import jimm

    hf.eval()
    size = hf.config.vision_config.image_size if hasattr(hf.config, "vision_config") else hf.config.image_size
    x = np.random.RandomState(0).rand(batch, size, size, 3).astype(np.float32)
    x_torch = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    clip = hasattr(hf, "get_image_features")
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(Path(folder) / "model")
        model = jimm.from_pretrained(Path(folder) / "model", sharding=None)
        start = time.perf_counter()
        model.export(Path(folder) / "onnx", format="onnx", towers=["image"])
        export_s = time.perf_counter() - start
        start = time.perf_counter()
        session = ort.InferenceSession(str(Path(folder) / "onnx" / "image.onnx"))
        ort_out = session.run(None, {"pixel_values": x})[0]
        first_ort = time.perf_counter() - start

    forward = nnx.jit(lambda m, v: m.encode_image(v) if clip else m(v))
    x_jax = jax.device_put(x)
    ours = np.asarray(forward(model, x_jax))
    with torch.no_grad():
        run_torch = (lambda: hf.get_image_features(pixel_values=x_torch)) if clip else (lambda: hf(x_torch).logits)
        theirs = run_torch()
        theirs = (theirs.pooler_output if hasattr(theirs, "pooler_output") else theirs).numpy()
        t_torch = median_time(run_torch, repeats=repeats)
    print(
        f"{name}: max |diff| onnxruntime-jimm {np.abs(ort_out - ours).max():.1e}, "
        f"torch-jimm {np.abs(theirs - ours).max():.1e}"
    )
    t_jimm = median_time(lambda: forward(model, x_jax).block_until_ready(), repeats=repeats)
    t_ort = median_time(lambda: session.run(None, {"pixel_values": x}), repeats=repeats)
    return dict(jimm=t_jimm, ort=t_ort, torch=t_torch, export=export_s, first_ort=first_ort, size=size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny models; checks the script, not the speed")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--note", default="", help="a line under the table (e.g. that other jobs were running)")
    parser.add_argument("--no-report", action="store_true", help="print only; do not add to docs/benchmarks.md")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.repeats = 2, 1

    import torch

    results = {
        name: measure(name, hf, batch=args.batch, repeats=args.repeats) for name, hf in models(args.quick).items()
    }
    cpu = cpu_model()
    title = f"Exported image encoders on CPU ({cpu}): jimm vs onnxruntime vs transformers, fp32, batch {args.batch}"
    lines = [
        "| model (image encoding) | jimm, JAX jit (s) | onnxruntime (s) | transformers, torch (s) "
        "| onnxruntime / jimm | torch / jimm | export (s) | first onnxruntime call (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name}, {r['size']} px | {r['jimm']:.3f} | {r['ort']:.3f} | {r['torch']:.3f} | "
            f"{r['ort'] / r['jimm']:.2f} | {r['torch'] / r['jimm']:.2f} | {r['export']:.1f} | {r['first_ort']:.2f} |"
        )
    versions = ", ".join(f"{n} {metadata.version(n)}" for n in ("onnxruntime", "jax2onnx", "onnx"))
    notes = [
        f"Median of {args.repeats} calls after 2 warm-up calls; every runtime uses all {os.cpu_count()} cores "
        f"(torch {torch.get_num_threads()} threads, onnxruntime's default intra-op pool). {versions}.",
        *([args.note] if args.note else []),
    ]
    body = "\n".join(lines) + "\n\n" + "\n".join(notes)
    print(f"{title}\n\n{body}")
    if args.no_report or args.quick:
        return
    measured, sha = f"{today()}, {cpu}", commit()
    summary = [
        SummaryRow(
            f"{name} image encoding on CPU, exported ONNX in onnxruntime, batch {args.batch}, fp32 (s)",
            f"{r['jimm']:.3f} (jimm, JAX)",
            f"{r['ort']:.3f} (onnxruntime)",
            f"{r['jimm'] / r['ort']:.2f}",
            measured,
            sha,
        )
        for name, r in results.items()
    ]
    add_section(title, body, summary=summary)


if __name__ == "__main__":
    main()
