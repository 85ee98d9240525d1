"""Forward+backward time and peak device memory of ViT-B/16 per attention backend (needs an NVIDIA GPU).

    python benchmarks/attention_gpu.py                       # both sizes, every backend, bf16
    python benchmarks/attention_gpu.py --dtype float32 --backends xla,triton
    python benchmarks/attention_gpu.py --dry-run             # the same code on CPU, a tiny model, a temp report

Sizes (issue 12's): batch 256 at 224 px (197 tokens) and batch 8 at 1024 px (4,097 tokens). Each
(backend, size) runs in a fresh child process, so `peak_bytes_in_use` is that backend's own peak and a backend
that crashes or runs out of memory costs one row; the compiled temp-buffer size (XLA's memory analysis) is
reported too. Each backend is pinned alone (no fallback list), so one that cannot run says so instead of
silently measuring another. The max |logit| difference against the default XLA path is measured on 2 images.
`jax_cudnn` is cuDNN flash attention through `jax.nn.dot_product_attention`: its rows against `xla` say whether
it should become the default on GPU. A name joined with `+` (`mosaic+triton+xla`, the spec's list) is a fallback
list. Before anything is built, each child runs jimm's own selection for the step's attention call
(`TokamaxAttention.choice(q, training=True)`: documented limits, then a compile on this device; `jax_cudnn` checks
cuDNN's documented limits): a backend refused there gets a `refused: <reason>` row instead of a crash, and a list
row names what it chose. Backends run in the order given (both sizes each) until `--budget-s` runs
out; prints a table and adds it to docs/benchmarks.md in one write.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _report
from gpu_models import TINY_VIT

BACKENDS = ("xla", "jax_cudnn", "mosaic", "triton", "cudnn", "xla_chunked")
SIZES = ((256, 224), (8, 1024))  # (batch, image px): 197 and 4097 tokens at patch 16
DRY_SIZES = ((2, 32), (2, 64))  # 17 and 65 tokens at patch 8
VIT_B16 = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, patch_size=16)
COLUMNS = (("ms", ".1f"), ("img_s", ".0f"), ("peak_gib", ".2f"), ("temp_gib", ".2f"), ("max_diff", ".1e"))
MIN_CHILD_S = 30


def attention_fn(name: str):
    from jimm.common.attention import jax_attention
    from jimm.common.tokamax_attention import TokamaxAttention

    if name == "xla":
        return None  # the default: jax.nn.dot_product_attention(implementation="xla")
    if name == "jax_cudnn":
        return jax_attention("cudnn")
    return TokamaxAttention(name.split("+"))


class Refused(Exception):
    """jimm's selection rules the backend out for this step (the reason is the message)."""


def selection(name: str, query) -> str:
    """What a model's training step will run for `name`, by the selection every model call makes: '' for the
    default path or a plain jax.nn kernel, else `BackendChoice.describe()`; `Refused` with the reason otherwise."""
    import jax

    from jimm.common.tokamax_attention import BACKEND_TABLE, Call

    if name == "xla":
        return ""
    if name == "jax_cudnn":  # one kernel, not a list: cuDNN's documented limits (odd-length training, dtypes, ...)
        call = Call(query, query, query, None, None, is_causal=False, training=True, device=jax.devices()[0])
        reason = BACKEND_TABLE["cudnn"].refusal(call)
        if reason:
            raise Refused(f"cudnn {reason}")
        return ""
    try:
        return attention_fn(name).choice(query, training=True).describe()
    except RuntimeError as err:  # no backend of the list works here: the error lists every reason
        raise Refused(str(err)) from None


def child(name: str, batch: int, image: int, dtype_name: str, dry_run: bool) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    import jimm

    dtype = jnp.dtype(dtype_name)
    arch = TINY_VIT if dry_run else VIT_B16
    config = jimm.ViTConfig(**{**arch, "image_size": image}, num_labels=10 if dry_run else 1000)

    def build(fn):
        return jimm.VisionTransformer(config=config, dtype=dtype, sharding=None, attention_fn=fn)

    heads = arch["num_attention_heads"]
    tokens = (image // arch["patch_size"]) ** 2 + 1
    try:
        chosen = selection(name, jax.ShapeDtypeStruct((batch, tokens, heads, arch["hidden_size"] // heads), dtype))
    except Refused as err:
        return {"refused": str(err), "device": jax.devices()[0].device_kind}

    graphdef, state = nnx.split(build(attention_fn(name)))  # one state: every leaf at one trace level under grad
    x = jnp.asarray(np.random.RandomState(0).randn(batch, image, image, 3), dtype)

    def loss(state, x):
        return jnp.mean(jnp.square(nnx.merge(graphdef, state)(x).astype(jnp.float32)))

    step = jax.jit(jax.value_and_grad(loss, allow_int=True))  # int leaves (rng counts) get float0 gradients
    compiled = step.lower(state, x).compile()
    analysis = compiled.memory_analysis()
    temp = getattr(analysis, "temp_size_in_bytes", None) if analysis is not None else None

    def run():
        jax.block_until_ready(compiled(state, x))

    seconds = _report.median_time(run, repeats=1 if dry_run else 10, warmup=1 if dry_run else 3)
    stats = jax.devices()[0].memory_stats() or {}

    diff = 0.0  # the default path against itself
    if name != "xla":  # accuracy against the default path on 2 images: the same state through the default graph
        ref_graphdef = nnx.split(nnx.eval_shape(lambda: build(None)))[0]
        forward = jax.jit(lambda g, s, x: nnx.merge(g, s)(x).astype(jnp.float32), static_argnums=0)
        diff = float(jnp.max(jnp.abs(forward(graphdef, state, x[:2]) - forward(ref_graphdef, state, x[:2]))))
    return {
        "ms": 1e3 * seconds,
        "img_s": batch / seconds,
        "peak_gib": stats.get("peak_bytes_in_use", math.nan) / 2**30,
        "temp_gib": (temp or math.nan) / 2**30,
        "max_diff": diff,
        "device": jax.devices()[0].device_kind,
        "chosen": chosen,
    }


def measure(name: str, batch: int, image: int, args, left: float) -> tuple[dict | None, str]:
    """(result, "") or (None, why): in a child process, or here with --in-process."""
    if args.in_process:
        try:
            result = child(name, batch, image, args.dtype, args.dry_run)
        except Exception as err:
            return None, _report.describe_failure(f"{type(err).__name__}: {err}")
    else:
        cmd = [sys.executable, __file__, "--dtype", args.dtype, "--child", name, str(batch), str(image)]
        cmd += ["--dry-run"] if args.dry_run else []
        env = {**os.environ, **({"JAX_PLATFORMS": "cpu"} if args.dry_run else {})}
        env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")  # jax preallocates 75% by default
        run = _report.run_child(cmd, timeout=left, env=env)
        if not run.results:
            return None, run.error or "no result"
        result = run.results[-1]
    if "refused" in result:
        return None, "refused: " + result["refused"].replace("|", "/")[:300]
    return result, ""


def short(why: str) -> str:
    """A summary cell for a row that did not run (the history table has the reason)."""
    if why.startswith("refused"):
        return "refused"
    return why if why in ("does not fit", "not run") or why.startswith("skipped") else "failed"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--dry-run", action="store_true", help="CPU, a tiny model, a temp report: checks the script")
    parser.add_argument("--in-process", action="store_true", help="no child processes (dry runs and tests)")
    parser.add_argument("--budget-s", type=float, default=0, help="stop starting children after this long")
    parser.add_argument("--report", type=Path, help="default docs/benchmarks.md (a temp copy with --dry-run)")
    parser.add_argument("--fragment", type=Path, help="write a fragment for _report.py to combine instead")
    parser.add_argument("--child", nargs=3, metavar=("BACKEND", "BATCH", "IMAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        name, batch, image = args.child
        _report.emit(child(name, int(batch), int(image), args.dtype, args.dry_run))
        return
    if args.dry_run:
        os.environ["JAX_PLATFORMS"] = "cpu"

    patch = TINY_VIT["patch_size"] if args.dry_run else VIT_B16["patch_size"]
    deadline = time.monotonic() + (args.budget_s or math.inf)
    results, device = {}, "?"
    for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
        for batch, image in DRY_SIZES if args.dry_run else SIZES:
            left = deadline - time.monotonic()
            if left < MIN_CHILD_S and not args.in_process:
                results[batch, image, name] = (None, "skipped: time budget")
                continue
            results[batch, image, name] = found = measure(name, batch, image, args, left)
            device = found[0]["device"] if found[0] else device
            print(f"{name} {batch} x {(image // patch) ** 2 + 1}: {found[0] or found[1]}", flush=True)

    rows, summary = [], []
    for batch, image, name in sorted(results, key=lambda k: k[1]):
        r, why = results[batch, image, name]
        cells = " | ".join(f"{r[key]:{fmt}}" for key, fmt in COLUMNS) if r else f"{why} | - | - | - | -"
        label = f"{name} ({r['chosen']})" if r and r.get("chosen") else name
        rows.append(f"| {batch} x {(image // patch) ** 2 + 1} | {label} | {cells.replace('nan', '-')} |")
    for batch, image in DRY_SIZES if args.dry_run else SIZES:
        xla, cudnn = (results.get((batch, image, n), (None, "not run")) for n in ("xla", "jax_cudnn"))
        if xla[0] or cudnn[0]:
            summary.append(
                _report.SummaryRow(
                    f"ViT-B/16 fwd+bwd on GPU, {batch} x {(image // patch) ** 2 + 1} tokens, {args.dtype}: "
                    "cuDNN vs default XLA attention (ms)",
                    f"{cudnn[0]['ms']:.1f} (jax cuDNN)" if cudnn[0] else short(cudnn[1]),
                    f"{xla[0]['ms']:.1f} (XLA)" if xla[0] else short(xla[1]),
                    f"{cudnn[0]['ms'] / xla[0]['ms']:.2f}" if xla[0] and cudnn[0] else "-",
                    f"{_report.today()}, {'dry run on CPU' if args.dry_run else device}",
                    _report.commit(),
                )
            )
    what = "dry run on CPU (tiny model, not a measurement)" if args.dry_run else device
    title = f"Attention backends: ViT-B/16 forward+backward, {args.dtype}, {what}"
    body = "\n".join(
        [
            "| batch x tokens | backend | ms / step | img/s | peak GiB | XLA temp GiB | max logit diff vs xla |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(f"{title}\n\n{body}")
    report = args.report or (_report.temp_report() if args.dry_run and not args.fragment else _report.REPORT)
    _report.publish(title, body, summary, fragment=args.fragment, report=report)


if __name__ == "__main__":
    main()
