"""Per-device parameter + optimizer memory under each sharding preset, and scanned vs unrolled compile time.

Memory is computed from abstract arrays (`nnx.eval_shape`): nothing is allocated, so ViT-L/16 on 8 virtual
CPU devices costs seconds. Compile time is measured for a ViT-B/16 forward (and forward+backward) at batch 2,
with the block stack scanned (one compiled body) or unrolled (`scan_layers=False`, a python loop).

    PYTHONPATH=src python benchmarks/sharding_memory.py            # prints tables, adds them to docs/benchmarks.md
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import datetime
import platform
import sys
import time
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import AxisType

import jimm
from jimm.common import sharding as shd

sys.path.insert(0, str(Path(__file__).parent))
from _report import add_section, commit

MODELS = {
    "ViT-B/16": dict(hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072),
    "ViT-L/16": dict(hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096),
}
# preset name -> (mesh shape, axis names, spec)
PRESETS = {
    "replicated": ((1, 8), ("data", "fsdp"), shd.replicated_sharding()),
    "data parallel (8)": ((8, 1), ("data", "fsdp"), shd.data_parallel_sharding(data="data")),
    "FSDP (1x8)": ((1, 8), ("data", "fsdp"), shd.fsdp_sharding(data="data", fsdp="fsdp")),
    "FSDP (2x4)": ((2, 4), ("data", "fsdp"), shd.fsdp_sharding(data="data", fsdp="fsdp")),
    "FSDP 2 + TP 4": ((2, 4), ("fsdp", "tp"), shd.fsdp_tp_sharding(data=None, fsdp="fsdp", tp="tp")),
}
MiB = 2**20


def per_device_bytes(tree) -> tuple[int, int]:
    """(total bytes, bytes on the busiest device) of a tree of abstract arrays."""
    total, per_device = 0, 0
    for leaf in jax.tree.leaves(tree):
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype") or not jnp.issubdtype(leaf.dtype, jnp.floating):
            continue
        nbytes = int(np.prod(leaf.shape)) * leaf.dtype.itemsize
        total += nbytes
        sharding = getattr(leaf, "sharding", None)
        shard = sharding.shard_shape(leaf.shape) if sharding is not None else leaf.shape
        per_device += int(np.prod(shard)) * leaf.dtype.itemsize
    return total, per_device


def memory_table() -> list[str]:
    rows = [
        "| model | preset | mesh | params total MiB | params / device MiB | params + adamw / device MiB |",
        "|---|---|---|---|---|---|",
    ]
    for model_name, arch in MODELS.items():
        for preset, (shape, names, spec) in PRESETS.items():
            mesh = jax.make_mesh(shape, names, axis_types=(AxisType.Explicit,) * 2)
            with jax.set_mesh(mesh):

                def make(arch=arch, spec=spec):
                    model = jimm.VisionTransformer(**arch, sharding=spec, rngs=nnx.Rngs(0))
                    return model, nnx.Optimizer(model, optax.adamw(1e-3), wrt=nnx.Param)

                model, opt = nnx.eval_shape(make)
                total, per_dev = per_device_bytes(nnx.state(model, nnx.Param))
                _, opt_dev = per_device_bytes(nnx.state(opt, nnx.OptState))
                with_opt = per_dev + opt_dev
            shape_text = " x ".join(f"{n}={s}" for n, s in zip(names, shape, strict=True))
            rows.append(
                f"| {model_name} | {preset} | {shape_text} | {total / MiB:.1f} | {per_dev / MiB:.1f} "
                f"| {with_opt / MiB:.1f} |"
            )
    return rows


def compile_times(batch: int = 2) -> list[str]:
    rows = ["| ViT-B/16 stack | forward lower s | forward compile s | fwd+bwd compile s |", "|---|---|---|---|"]
    x = jax.ShapeDtypeStruct((batch, 224, 224, 3), jnp.float32)
    for scan in (True, False):
        abstract = nnx.eval_shape(lambda scan=scan: jimm.VisionTransformer(**MODELS["ViT-B/16"], scan_layers=scan))
        graphdef, state = nnx.split(abstract)
        fwd = jax.jit(lambda state, x, graphdef=graphdef: nnx.merge(graphdef, state)(x))

        def loss(state, x, graphdef=graphdef):
            return nnx.merge(graphdef, state)(x).sum()

        t0 = time.perf_counter()
        lowered = fwd.lower(state, x)
        t1 = time.perf_counter()
        lowered.compile()
        t2 = time.perf_counter()
        jax.jit(jax.grad(loss, allow_int=True)).lower(state, x).compile()
        t3 = time.perf_counter()
        rows.append(f"| {'scanned' if scan else 'unrolled'} | {t1 - t0:.2f} | {t2 - t1:.2f} | {t3 - t2:.2f} |")
    return rows


def main() -> None:
    memory = memory_table()
    compile_rows = compile_times()
    header = (
        f"Date {datetime.date.today()}, {platform.machine()} CPU x{os.cpu_count()} (8 virtual XLA devices), "
        f"jax {jax.__version__}, flax {flax.__version__}, commit {commit()}."
    )
    body = "\n".join(
        [
            header,
            "",
            "### Per-device memory (fp32 parameters; adamw adds mu and nu, sharded like the parameters)",
            "",
            *memory,
            "",
            "### Compile time, scanned vs unrolled block stack (ViT-B/16, batch 2, no mesh)",
            "",
            *compile_rows,
        ]
    )
    print(body)
    add_section("Sharding memory and compile time", body)


if __name__ == "__main__":
    main()
