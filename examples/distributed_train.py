"""Sharded training on several processes with JAX's own runtime: the same code on one host or many.

Each process runs this script with its own `--process-id`; process 0's address is the coordinator. Every
process loads only its slice of the global batch (`jax.make_array_from_process_local_data`), the mesh spans
every device of every process, and `save_pretrained` gathers the shards and writes from process 0 only.

On this machine (CPU, 2 processes of 4 devices each, a ("data", "fsdp") = (2, 4) mesh):

    python examples/distributed_train.py --num-processes 2 --process-id 0 --port 12355 --out /tmp/run &
    python examples/distributed_train.py --num-processes 2 --process-id 1 --port 12355 --out /tmp/run

With `--num-processes 1` it runs the same steps on 8 local devices (the single-process reference).
On a GPU or TPU cluster drop `--devices-per-process` and `--coordinator` (`jax.distributed.initialize()` reads
SLURM / TPU-pod / Kubernetes settings itself); see docs/scaling.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ARCH = dict(
    num_classes=16, img_size=16, patch_size=4, num_layers=2, num_heads=8, mlp_dim=128, hidden_size=64, dropout_rate=0.0
)
GLOBAL_BATCH = 16


def global_batch(step: int):
    """The whole batch of `step`, identical on every process (a real loader would read only its own rows)."""
    import numpy as np

    rs = np.random.RandomState(step)
    return rs.randn(GLOBAL_BATCH, 16, 16, 3).astype(np.float32), rs.randint(0, 16, GLOBAL_BATCH).astype(np.int32)


def train(steps: int, out: Path, mesh_shape=(2, 4)) -> list[float]:
    """Run `steps` adamw steps of a tiny FSDP ViT on a ("data", "fsdp") mesh of every process's devices."""
    import jax
    import optax
    from flax import nnx
    from jax.sharding import AxisType
    from jax.sharding import PartitionSpec as P

    import jimm
    from jimm.common.sharding import fsdp_sharding

    mesh = jax.make_mesh(mesh_shape, ("data", "fsdp"), axis_types=(AxisType.Explicit,) * 2)
    spec = fsdp_sharding(data="data", fsdp="fsdp")
    with jax.set_mesh(mesh):
        model = jimm.VisionTransformer(**ARCH, rngs=nnx.Rngs(0), sharding=spec)
        opt = nnx.Optimizer(model, optax.adamw(1e-3), wrt=nnx.Param)

        @nnx.jit
        def step(model, opt, x, y):
            def loss_fn(model):
                return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

            loss, grads = nnx.value_and_grad(loss_fn)(model)
            opt.update(model, grads)
            return loss

        images_sharding = jax.sharding.NamedSharding(mesh, P(("data", "fsdp"), None, None, None))
        labels_sharding = jax.sharding.NamedSharding(mesh, P(("data", "fsdp")))
        # Rows of the global batch this process feeds: its devices' slice of the batch axis.
        rows = images_sharding.addressable_devices_indices_map((GLOBAL_BATCH, 16, 16, 3))
        start = min(index[0].start or 0 for index in rows.values())
        stop = max(index[0].stop or GLOBAL_BATCH for index in rows.values())
        losses = []
        for i in range(steps):
            x, y = global_batch(i)
            x = jax.make_array_from_process_local_data(images_sharding, x[start:stop], x.shape)
            y = jax.make_array_from_process_local_data(labels_sharding, y[start:stop], y.shape)
            losses.append(float(step(model, opt, x, y)))
        model.save_pretrained(out / "model")
    if jax.process_index() == 0:
        (out / "losses.json").write_text(json.dumps(losses))
    return losses


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-processes", type=int, default=2)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--coordinator", default="127.0.0.1", help="host of process 0")
    parser.add_argument("--port", type=int, default=12355)
    parser.add_argument("--devices-per-process", type=int, default=None, help="CPU only: virtual devices per process")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    devices = args.devices_per_process or 8 // args.num_processes
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
    if args.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes
        jax.distributed.initialize(
            coordinator_address=f"{args.coordinator}:{args.port}",
            num_processes=args.num_processes,
            process_id=args.process_id,
            initialization_timeout=60,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    losses = train(args.steps, args.out)
    print(f"process {jax.process_index()}/{jax.process_count()}: losses {losses}", file=sys.stderr)
    if args.num_processes > 1:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
