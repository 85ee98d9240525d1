"""CLIP B/16 and SigLIP B/16 on CPU, jimm vs transformers (torch) side by side in one run, as ratios.

Per family, random weights, fp32: image encoding of a batch of 8 at 224 px (`encode_image` vs
`get_image_features`), text encoding of 64 prompts padded to the tower's length (`encode_text` vs
`get_text_features`), and what a user feels first: `from_pretrained` and the first (compiling) image call.

    python benchmarks/clip_cpu.py            # prints a table and adds it to docs/benchmarks.md (needs a quiet machine)
    python benchmarks/clip_cpu.py --quick    # tiny models, to check the script itself (no report)
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

TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32)
TINY_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=128)


def configs(quick: bool) -> dict:
    from transformers import CLIPConfig, SiglipConfig

    if quick:
        return {
            "CLIP tiny": CLIPConfig(vision_config={**TINY_VISION, "patch_size": 8}, text_config=TINY_TEXT),
            "SigLIP tiny": SiglipConfig(vision_config={**TINY_VISION, "patch_size": 8}, text_config=TINY_TEXT),
        }
    return {"CLIP B/16": CLIPConfig(vision_config={"patch_size": 16}), "SigLIP B/16": SiglipConfig()}


def measure(name: str, config, *, batch: int, prompts: int, repeats: int) -> list[tuple[str, float, float]]:
    import jax
    import numpy as np
    import torch
    import transformers
    from flax import nnx

    import jimm

    torch.manual_seed(0)
    hf = (transformers.CLIPModel if name.startswith("CLIP") else transformers.SiglipModel)(config).eval()
    size, length = config.vision_config.image_size, config.text_config.max_position_embeddings
    rs = np.random.RandomState(0)
    x = rs.rand(batch, size, size, 3).astype(np.float32)
    ids = rs.randint(0, config.text_config.vocab_size - 1, (prompts, length)).astype(np.int32)
    ids[:, -1] = config.text_config.vocab_size - 1
    x_torch, ids_torch = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(ids).long()

    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        start = time.perf_counter()
        model = jimm.from_pretrained(folder)
        jax.block_until_ready(jax.tree.leaves(nnx.state(model)))
        load_jimm = time.perf_counter() - start
        start = time.perf_counter()
        getattr(transformers, type(hf).__name__).from_pretrained(folder)
        load_hf = time.perf_counter() - start

    image = nnx.jit(lambda m, x: m.encode_image(x))
    text = nnx.jit(lambda m, t: m.encode_text(t))
    x_jax, ids_jax = jax.device_put(x), jax.device_put(ids)
    start = time.perf_counter()
    ours = np.asarray(image(model, x_jax))
    first_jimm = time.perf_counter() - start
    with torch.no_grad():
        start = time.perf_counter()
        theirs = hf.get_image_features(pixel_values=x_torch).pooler_output.numpy()
        first_hf = time.perf_counter() - start
        text_diff = np.abs(
            np.asarray(text(model, ids_jax)) - hf.get_text_features(input_ids=ids_torch).pooler_output.numpy()
        )
        print(f"{name}: max |image embedding diff| {np.abs(ours - theirs).max():.1e}, text {text_diff.max():.1e}")
        t_image_hf = median_time(lambda: hf.get_image_features(pixel_values=x_torch), repeats=repeats)
        t_text_hf = median_time(lambda: hf.get_text_features(input_ids=ids_torch), repeats=repeats)
    t_image = median_time(lambda: image(model, x_jax).block_until_ready(), repeats=repeats)
    t_text = median_time(lambda: text(model, ids_jax).block_until_ready(), repeats=repeats)
    return [
        (f"{name} image encoding, batch {batch}, {size} px (s)", t_image, t_image_hf),
        (f"{name} text encoding, {prompts} prompts of {length} tokens (s)", t_text, t_text_hf),
        (f"{name} from_pretrained (s)", load_jimm, load_hf),
        (f"{name} first image call, incl. compile (s)", first_jimm, first_hf),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny models; checks the script, not the speed")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-report", action="store_true", help="print only; do not add to docs/benchmarks.md")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.prompts, args.repeats = 2, 4, 1

    rows = []
    for name, config in configs(args.quick).items():
        rows += measure(name, config, batch=args.batch, prompts=args.prompts, repeats=args.repeats)
    title = (
        f"CLIP and SigLIP on CPU, jimm vs transformers, fp32, random weights{' (quick check)' if args.quick else ''}"
    )
    lines = [
        "| measure | jimm | transformers | jimm / transformers |",
        "| --- | ---: | ---: | ---: |",
        *(f"| {label} | {a:.3f} | {b:.3f} | {a / b:.2f} |" for label, a, b in rows),
    ]
    print(f"{title}\n\n" + "\n".join(lines))
    if args.no_report or args.quick:
        return
    measured, sha = f"{today()}, {os.cpu_count()}-core CPU", commit()
    summary = []
    for label, a, b in rows:
        if "encoding" in label:
            what = f"{label.replace(' (s)', '')} on CPU, fp32 (s)"
            summary.append(SummaryRow(what, f"{a:.3f}", f"{b:.3f} (transformers)", f"{a / b:.2f}", measured, sha))
    add_section(title, "\n".join(lines), summary=summary)


if __name__ == "__main__":
    main()
