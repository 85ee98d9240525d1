"""Forward+backward time and peak device memory of ViT-B/16 per attention backend (needs an NVIDIA GPU).

    python benchmarks/attention_gpu.py                       # both sizes, every backend, bf16
    python benchmarks/attention_gpu.py --dtype float32 --backends xla,triton

Sizes (the issue's): batch 256 at 224 px (197 tokens) and batch 8 at 1024 px (4,097 tokens). Each
(size, backend) runs in a fresh subprocess so `peak_bytes_in_use` is that backend's own peak; the compiled
temp-buffer size (XLA's memory analysis) is reported too. Each backend is pinned alone (no fallback list) so a
backend that cannot run says so instead of silently measuring another. The max |logit| difference against
the default XLA path is measured on 2 images. Prints a table and appends it to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

BACKENDS = ("xla", "jax_cudnn", "cudnn", "triton", "mosaic", "xla_chunked")
SIZES = ((256, 224), (8, 1024))  # (batch, image px): 197 and 4097 tokens at patch 16
VIT_B16 = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, patch_size=16)
COLUMNS = (("ms", ".1f"), ("img_s", ".0f"), ("peak_gib", ".2f"), ("temp_gib", ".2f"), ("max_diff", ".1e"))
OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def attention_fn(name: str):
    from jimm.common.attention import TokamaxAttention, jax_attention

    if name == "xla":
        return None  # the default: jax.nn.dot_product_attention(implementation="xla")
    if name == "jax_cudnn":
        return jax_attention("cudnn")
    return TokamaxAttention([name])


def child(name: str, batch: int, image: int, dtype_name: str) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from _report import median_time
    from flax import nnx

    import jimm

    dtype = jnp.dtype(dtype_name)
    config = jimm.ViTConfig(**VIT_B16, image_size=image, num_labels=1000)
    model = jimm.VisionTransformer(config=config, dtype=dtype, sharding=None, attention_fn=attention_fn(name))
    graphdef, state = nnx.split(model)  # one state: every leaf at the same trace level under jax.grad
    x = jnp.asarray(np.random.RandomState(0).randn(batch, image, image, 3), dtype)

    def loss(state, x):
        return jnp.mean(jnp.square(nnx.merge(graphdef, state)(x).astype(jnp.float32)))

    step = jax.jit(jax.value_and_grad(loss, allow_int=True))  # int leaves (rng counts) get float0 gradients
    compiled = step.lower(state, x).compile()
    analysis = compiled.memory_analysis()
    temp = getattr(analysis, "temp_size_in_bytes", None) if analysis is not None else None

    def run():
        jax.block_until_ready(compiled(state, x))

    seconds = median_time(run, repeats=10, warmup=3)
    stats = jax.devices()[0].memory_stats() or {}

    # accuracy against the default path on 2 images (a separate, small computation)
    ref_model = jimm.VisionTransformer(config=config, dtype=dtype, sharding=None)  # default XLA attention
    nnx.update(ref_model, state)  # same weights; only the attention_fn differs
    small = x[:2]
    logits = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, small).astype(jnp.float32)
    diff = float(jnp.max(jnp.abs(logits - ref_model(small).astype(jnp.float32))))
    return {
        "ms": 1e3 * seconds,
        "img_s": batch / seconds,
        "peak_gib": stats.get("peak_bytes_in_use", float("nan")) / 2**30,
        "temp_gib": (temp or float("nan")) / 2**30,
        "max_diff": diff,
        "device": jax.devices()[0].device_kind,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--child", nargs=3, metavar=("BACKEND", "BATCH", "IMAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, batch, image = args.child
        print("RESULT " + json.dumps(child(name, int(batch), int(image), args.dtype)))
        return

    rows, device = [], "?"
    for batch, image in SIZES:
        tokens = (image // 16) ** 2 + 1
        for name in args.backends.split(","):
            cmd = [sys.executable, __file__, "--dtype", args.dtype, "--child", name, str(batch), str(image)]
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
            found = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
            if run.returncode == 0 and found:
                r = json.loads(found[-1][len("RESULT ") :])
                device = r["device"]
                cells = " | ".join(f"{r[key]:{fmt}}" for key, fmt in COLUMNS)
            else:
                lines = run.stderr.strip().splitlines() or ["failed"]
                last = next((line for line in reversed(lines) if "Error" in line), lines[-1]).replace("|", "/")
                cells = "OOM | - | - | - | -" if "RESOURCE_EXHAUSTED" in run.stderr else f"{last[:80]} | - | - | - | -"
            rows.append(f"| {batch} x {tokens} | {name} | {cells} |")
            print(rows[-1], flush=True)

    from _report import environment

    table = "\n".join(
        [
            f"## Attention backends: ViT-B/16 forward+backward, {args.dtype}, {device}",
            "",
            "| batch x tokens | backend | ms / step | img/s | peak GiB | XLA temp GiB | max logit diff vs xla |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(table)
    args.out.parent.mkdir(exist_ok=True)
    with open(args.out, "a", encoding="utf-8") as f:
        f.write(f"\n{table}\n\n_{environment()}_\n")


if __name__ == "__main__":
    main()
