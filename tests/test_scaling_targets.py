"""jimm's FSDP recipe compiled for multi-chip targets without the chips (`pytest -m targets`, run by
scripts/check_targets.sh in its own environments; skipped elsewhere). docs/scaling.md has the tables.

A training step (forward, backward, adamw update, the state donated) of ViT-B/16 and a DINOv2-L/14-sized backbone
under `fsdp_sharding(shard_batch=True)` on a ("data", "fsdp") = (1, N) Explicit mesh of compile-only devices:
TPU v5e 2x2 (N = 4, libtpu) and 8 x H100 (N = 8, the CUDA PJRT plugin), 8 images per device. From the compiled
executable:
- parameters and optimizer state are sharded: per-device bytes ~ total / N (only vectors and the position table
  stay whole) and `memory_analysis()`'s argument bytes are exactly that state plus the batch's share;
- gradients are reduce-scattered: no tensor as large as a sharded parameter is all-reduced whole (except the
  known, recorded TPU case below), and every layer runs reduce-scatters;
- activations are batch-sharded: the HLO's token tensors carry B / N rows, none the global batch.
Collectives are counted in the optimised HLO per step (a loop body's ops times its trip count).
"""

from __future__ import annotations

import collections
import functools
import os
import re
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytestmark = [
    pytest.mark.targets,
    pytest.mark.skipif("JIMM_TARGETS_LEG" not in os.environ, reason="run by scripts/check_targets.sh"),
]

LEG = os.environ.get("JIMM_TARGETS_LEG", "")
PER_DEVICE_BATCH = 8
MODELS = tuple(os.environ.get("JIMM_TARGETS_SCALING_MODELS", "vit_b16,vit_b16_remat,dinov2_l14").split(","))
# Gradients the target's compiler all-reduces whole and then slices (no reduce-scatter), found by this check.
# TPU v5e (libtpu 0.0.42 / 0.0.50): the fused qkv kernel's gradient [3, N, H, D]: its all-reduce feeds a
# transpose + slice fused into the scan's gradient accumulator, which XLA's reduce-scatter rewrite does not match
# (the other three block kernels are reduce-scattered). Doubles that kernel's gradient traffic.
KNOWN_WHOLE_ALL_REDUCES = {"tpu": ("qkv",)}
ROWS: list[dict] = []


def h100_target_config() -> str:
    sys.path.insert(0, os.path.dirname(__file__))
    from test_attention_targets import H100_SXM

    return H100_SXM


@pytest.fixture(scope="module")
def meshes():
    from jax.experimental import topologies
    from jax.sharding import AxisType, Mesh

    def mesh(devices):
        return Mesh(np.array(devices).reshape(1, -1), ("data", "fsdp"), axis_types=(AxisType.Explicit,) * 2)

    gpu = topologies.get_topology_desc(platform="cuda", target_config=h100_target_config(), topology="1x1x8")
    return {"tpu": mesh(topologies.get_topology_desc("v5e:2x2", "tpu").devices), "h100x8": mesh(gpu.devices)}


# name -> (builder under the mesh, image size, tokens, layers, loss on the model's output)
def vit_b16(remat: str | None = None):
    import jimm
    from jimm.common.sharding import fsdp_sharding

    config = jimm.ViTConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                            patch_size=16, image_size=224, num_labels=1000)  # fmt: skip
    return jimm.VisionTransformer(
        config=config, dtype=jnp.bfloat16, sharding=fsdp_sharding(shard_batch=True), remat_policy=remat
    )


def dinov2_l14():
    import jimm
    from jimm.common.sharding import fsdp_sharding

    return jimm.DINOv2Model(img_size=224, patch_size=14, hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096,
                            dtype=jnp.bfloat16, sharding=fsdp_sharding(shard_batch=True))  # fmt: skip


def classification_loss(out, labels):
    import optax

    return optax.softmax_cross_entropy_with_integer_labels(out.astype(jnp.float32), labels).mean()


def embedding_loss(out, labels):  # a stand-in objective on the backbone's [B, D] embedding
    return jnp.mean(jnp.square(out.astype(jnp.float32)))


CASES = {
    "vit_b16": (vit_b16, 224, 197, 12, classification_loss),
    "vit_b16_remat": (functools.partial(vit_b16, remat="nothing_saveable"), 224, 197, 12, classification_loss),
    "dinov2_l14": (dinov2_l14, 224, 257, 24, embedding_loss),
}


def compile_fsdp_step(mesh, build, image: int, loss_of):
    """Abstract model + adamw state on `mesh` (nothing allocated), one jitted training step lowered and compiled
    for the mesh's devices: (compiled, state, its parameters, batch), as ShapeDtypeStructs with shardings."""
    import optax
    from flax import nnx
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    n = mesh.size
    with jax.set_mesh(mesh):
        model, opt = nnx.eval_shape(lambda: (m := build(), nnx.Optimizer(m, optax.adamw(1e-3), wrt=nnx.Param)))
        graphdef, state = nnx.split((model, opt))
        place = lambda tree: jax.tree.map(  # noqa: E731
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, x.sharding.spec)), tree
        )
        state, params = place(state), place(nnx.state(model, nnx.Param))
        batch = NamedSharding(mesh, P(("data", "fsdp")))
        images = jax.ShapeDtypeStruct((PER_DEVICE_BATCH * n, image, image, 3), jnp.bfloat16, sharding=batch)
        labels = jax.ShapeDtypeStruct((PER_DEVICE_BATCH * n,), jnp.int32, sharding=batch)

        def step(state, x, y):
            model, opt = nnx.merge(graphdef, state)
            value, grads = nnx.value_and_grad(lambda m: loss_of(m(x), y))(model)
            opt.update(model, grads)
            return nnx.state((model, opt)), value

        compiled = jax.jit(step, donate_argnums=0).lower(state, images, labels).compile()
    return compiled, state, params, (images, labels)


# -- the optimised HLO's collectives -------------------------------------------------------------------------------

DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4, "s32": 4, "u32": 4}
DTYPE_BYTES |= {"f64": 8, "s64": 8, "u64": 8, "f8e4m3fn": 1, "f8e5m2": 1}
SHAPE = re.compile(r"\b(" + "|".join(DTYPE_BYTES) + r")\[([\d,]*)\]")
INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = (.*?) ([a-z][a-z0-9\-]*)\((.*)$")
CALLEE = re.compile(r"\b(?:calls|body|condition|to_apply|true_computation|false_computation)=%([\w.\-]+)")
# sync ops and the `-done` half of async ones (whose type is the result)
KINDS = {op: kind for kind in ("all-gather", "reduce-scatter", "all-reduce") for op in (kind, f"{kind}-done")}


def hlo_shapes(text: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(dtype, tuple(int(d) for d in dims.split(",") if d)) for dtype, dims in SHAPE.findall(text)]


def shape_bytes(shape: tuple[str, tuple[int, ...]]) -> int:
    return DTYPE_BYTES[shape[0]] * int(np.prod(shape[1], dtype=np.int64))


def collectives(hlo: str) -> list[tuple[str, list, int]]:
    """Every all-gather, reduce-scatter and all-reduce of the optimised HLO: (kind, result shapes, runs per step).

    GPU: sync ops and async `-done` ops. TPU: its `all-reduce-scatter` fusions are reduce-scatters (the all-reduce
    inside is their implementation), and one async all-gather split over several fusions (same channel id, same
    shape) counts once. Runs: loop bodies times their trip count (XLA's `known_trip_count`, or the condition's
    `i < N` on TPU).
    """
    comps: dict[str, list] = {}
    entry = current = None
    for line in hlo.splitlines():
        if line.endswith("{") and not line.startswith(" "):
            words = line.split()
            current = (words[1] if words[0] == "ENTRY" else words[0]).lstrip("%")
            comps[current] = []
            entry = current if words[0] == "ENTRY" else entry
        elif current is not None and (m := INSTRUCTION.match(line)):
            comps[current].append(m.groups())
    callers = collections.defaultdict(list)
    for caller, instructions in comps.items():
        for _, _, op, rest in instructions:
            for callee in CALLEE.findall(rest):
                times = trip_count(rest, comps) if op == "while" and f"body=%{callee}" in rest else 1
                callers[callee].append((caller, times))

    @functools.cache
    def runs(comp: str) -> int:
        return 1 if comp == entry else sum(runs(c) * t for c, t in callers[comp])

    found = {}
    for comp, instructions in comps.items():
        for name, type_text, op, rest in instructions:
            kind = KINDS.get(op)
            if op == "fusion" and "calls=%all-reduce-scatter" in rest:
                kind = "reduce-scatter"
            elif kind == "all-reduce" and comp.startswith("all-reduce-scatter"):
                continue
            if kind and runs(comp):
                channel = re.search(r"channel_id=(\d+)", rest)
                key = (kind, channel[1] if channel else name, type_text.split("{")[0], runs(comp))
                found[key] = (kind, hlo_shapes(type_text), runs(comp))
    return list(found.values())


def trip_count(while_rest: str, comps: dict[str, list]) -> int:
    known = re.search(r'"known_trip_count":\{"n":"(\d+)"', while_rest)
    if known:
        return int(known[1])
    condition = re.search(r"condition=%([\w.\-]+)", while_rest)[1]
    bounds = [
        int(m[1]) for _, _, op, rest in comps[condition] if op == "constant" and (m := re.match(r"(\d+)\)", rest))
    ]
    assert len(bounds) == 1, f"cannot read the trip count of loop {condition}: constants {bounds}"
    return bounds[0]


# -- bytes of the state ----------------------------------------------------------------------------------------------


def state_bytes(tree) -> tuple[int, int, int]:
    """(total bytes, per-device bytes, bytes of leaves left whole) of ShapeDtypeStructs with shardings."""
    total = per_device = whole = 0
    for x in jax.tree.leaves(tree):
        size = x.dtype.itemsize
        total += size * int(np.prod(x.shape, dtype=np.int64))
        per_device += size * int(np.prod(x.sharding.shard_shape(x.shape), dtype=np.int64))
        if x.sharding.is_fully_replicated:
            whole += size * int(np.prod(x.shape, dtype=np.int64))
    return total, per_device, whole


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


# -- the check -------------------------------------------------------------------------------------------------------

GRID = [(target, model) for target in ("tpu", "h100x8") for model in MODELS]


@pytest.mark.parametrize(("target", "model"), GRID, ids=[f"{t}-{m}" for t, m in GRID])
def test_fsdp_step_is_sharded(meshes, target, model):
    from flax import nnx

    mesh = meshes[target]
    n = mesh.size
    build, image, tokens, layers, loss_of = CASES[model]
    start = time.perf_counter()
    compiled, state, params, batch = compile_fsdp_step(mesh, build, image, loss_of)
    seconds = time.perf_counter() - start
    memory, hlo = compiled.memory_analysis(), compiled.as_text()
    p_total, p_device, p_whole = state_bytes(params)
    s_total, s_device, _ = state_bytes(state)
    batch_device = sum(state_bytes(x)[1] for x in batch)
    found = collectives(hlo)
    per_kind = {k: [0, 0] for k in ("all-gather", "reduce-scatter", "all-reduce")}
    for kind, shapes, runs in found:
        per_kind[kind][0] += runs
        per_kind[kind][1] += runs * sum(map(shape_bytes, shapes))

    # the largest all-reduced tensors (whole), and which of them are gradients of sharded parameters
    sharded_sizes = [int(np.prod(x.shape)) for x in jax.tree.leaves(params) if not x.sharding.is_fully_replicated]
    qkv = next(x.shape for path, x in nnx.to_flat_state(params) if path[-1] == "qkv_kernel")  # [L, D, 3, N, H]
    names = {(qkv[2], qkv[3], qkv[4], qkv[1]): "qkv", (qkv[1], qkv[2], qkv[3], qkv[4]): "qkv"}
    whole = [
        (names.get(shape[1], str(shape)), shape)
        for kind, shapes, _ in found
        if kind == "all-reduce"
        for shape in shapes
        if int(np.prod(shape[1])) >= min(sharded_sizes)
    ]
    known = KNOWN_WHOLE_ALL_REDUCES.get(target.removesuffix("x8"), ())
    row = dict(
        leg=LEG, target=f"{target} ({n} devices)", model=model, tokens=tokens, batch=PER_DEVICE_BATCH * n,
        params=(p_total, p_device), state=(s_total, s_device), memory=memory, collectives=per_kind,
        whole=sorted({w for w, _ in whole}), seconds=seconds,
    )  # fmt: skip
    ROWS.append(row)
    print(f"\n[{LEG}] {format_row(row)}", flush=True)

    # parameters (and adamw's moments) sharded: each device holds ~1/N; only vectors and the position table whole
    assert p_device <= p_total / n + p_whole and p_whole < 0.02 * p_total, row
    assert s_device < 1.1 * s_total / n, row
    # the executable's arguments are that per-device state and the batch's share (no hidden replication; XLA drops
    # a few unused scalars); TPU lays arrays out in (8, 128) tiles, so narrow dimensions take up to ~15% more there
    logical = s_device + batch_device
    assert 0.999 * logical <= memory.argument_size_in_bytes <= logical * (1.15 if target == "tpu" else 1.01), row
    # gradients reduce-scattered: every layer reduce-scatters, and nothing parameter-sized is all-reduced whole
    assert per_kind["reduce-scatter"][0] >= layers, row
    assert all(name in known for name, _ in whole), f"all-reduced whole: {whole}; {row}"
    # kernels gathered in every layer (forward, and again in the backward under remat)
    assert per_kind["all-gather"][0] >= layers * (2 if "remat" in model else 1), row
    # activations batch-sharded: token tensors carry B / N rows, none the global batch
    assert re.search(rf"\[{PER_DEVICE_BATCH},{tokens},", hlo), "no batch-sharded [B/N, T, ...] activation"
    assert not re.search(rf"\[{PER_DEVICE_BATCH * n},{tokens},", hlo), "a [B, T, ...] activation is not sharded"


def format_row(row: dict) -> str:
    m, c = row["memory"], row["collectives"]
    counts = " | ".join(f"{c[k][0]} / {mib(c[k][1])}" for k in ("all-gather", "reduce-scatter", "all-reduce"))
    whole = ", ".join(row["whole"]) or "none"
    cells = (
        row["target"], row["model"], row["batch"], f"{mib(row['params'][0])} / {mib(row['params'][1])}",
        f"{mib(row['state'][0])} / {mib(row['state'][1])}", mib(m.argument_size_in_bytes),
        mib(m.output_size_in_bytes), mib(m.temp_size_in_bytes), counts, whole, f"{row['seconds']:.0f}",
    )  # fmt: skip
    return "| " + " | ".join(map(str, cells)) + " |"


def teardown_module():
    print(f"\n### FSDP, leg {LEG}: jax {jax.__version__}\n")
    print(
        "| target | model | global batch | params MiB total / per device | params + adamw MiB total / per device | "
        "args MiB | out MiB | temp MiB | all-gather n / MiB | reduce-scatter n / MiB | all-reduce n / MiB | "
        "all-reduced whole | compile s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in ROWS:
        print(format_row(row))
