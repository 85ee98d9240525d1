"""HF ViT checkpoints <-> jimm parameters: the name table, strict streaming load, and atomic save.

The table maps each HF tensor (classic transformers names, `vit.encoder.layer.N...`) to a slot of one jimm
parameter with a pair of numpy converters. Layer tensors fill one index of a stacked `[L, ...]` parameter,
and q/k/v fill one index of the fused `[D, 3, N, H]` kernel. transformers-v5 names (`vit.layers.N.attention
.q_proj`, `mlp.fc1`, ...) are normalised to the classic ones first. Saving inverts the same table.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_dtypes
import numpy as np
from flax import nnx

from ...common.sharding import active_mesh
from ...io.checkpoint import SAFETENSORS, SAFETENSORS_INDEX
from ...io.resolve import CONFIG, PREPROCESSOR
from ...io.safetensors import write_safetensors
from .config import ViTConfig

logger = logging.getLogger(__name__)
Converter = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Slot:
    """One HF tensor: where it lives in jimm (`param[index]`) and how to convert it each way."""

    hf_name: str
    param: tuple[str, ...]
    index: tuple[int | slice, ...]
    hf_shape: tuple[int, ...]
    to_jimm: Converter
    to_hf: Converter


def name_table(config: ViTConfig, *, prefix: str, with_head: bool) -> list[Slot]:
    """Every HF tensor of a ViT with this config, in the order transformers saves them."""
    d, n, f, c = config.hidden_size, config.num_attention_heads, config.intermediate_size, config.num_channels
    h = d // n
    ph, pw = config.patch_hw
    same: tuple[Converter, Converter] = (lambda a: a, lambda a: a)
    linear: tuple[Converter, Converter] = (lambda w: w.T, lambda k: k.T)
    qkv_w: tuple[Converter, Converter] = (lambda w: w.T.reshape(d, n, h), lambda k: k.reshape(d, n * h).T)
    qkv_b: tuple[Converter, Converter] = (lambda b: b.reshape(n, h), lambda b: b.reshape(n * h))
    out_w: tuple[Converter, Converter] = (lambda w: w.T.reshape(n, h, d), lambda k: k.reshape(n * h, d).T)
    conv: tuple[Converter, Converter] = (lambda w: w.transpose(2, 3, 1, 0), lambda k: k.transpose(3, 2, 0, 1))

    table: list[Slot] = []

    def add(hf_name, param, index, hf_shape, converters):
        table.append(Slot(prefix + hf_name, tuple(param.split(".")), index, hf_shape, *converters))

    if config.class_token:
        add("embeddings.cls_token", "encoder.cls_token", (), (1, 1, d), same)
    if config.distilled:
        add("embeddings.distillation_token", "encoder.dist_token", (), (1, 1, d), same)
    if config.num_register_tokens:
        add("embeddings.register_tokens", "encoder.reg_token", (), (1, config.num_register_tokens, d), same)
    add("embeddings.position_embeddings", "encoder.pos_embed", (), (1, config.num_pos_embed, d), same)
    add("embeddings.patch_embeddings.projection.weight", "encoder.patch_embed.kernel", (), (d, c, ph, pw), conv)
    add("embeddings.patch_embeddings.projection.bias", "encoder.patch_embed.bias", (), (d,), same)
    blocks = "encoder.blocks.layers"
    for i in range(config.num_hidden_layers):
        hf = f"encoder.layer.{i}"
        for k, name in enumerate(("query", "key", "value")):
            add(
                f"{hf}.attention.attention.{name}.weight",
                f"{blocks}.attn.qkv_kernel",
                (i, slice(None), k),
                (d, d),
                qkv_w,
            )
            if config.qkv_bias:
                add(f"{hf}.attention.attention.{name}.bias", f"{blocks}.attn.qkv_bias", (i, k), (d,), qkv_b)
        add(f"{hf}.attention.output.dense.weight", f"{blocks}.attn.out_kernel", (i,), (d, d), out_w)
        add(f"{hf}.attention.output.dense.bias", f"{blocks}.attn.out_bias", (i,), (d,), same)
        add(f"{hf}.intermediate.dense.weight", f"{blocks}.mlp.fc1_kernel", (i,), (f, d), linear)
        add(f"{hf}.intermediate.dense.bias", f"{blocks}.mlp.fc1_bias", (i,), (f,), same)
        add(f"{hf}.output.dense.weight", f"{blocks}.mlp.fc2_kernel", (i,), (d, f), linear)
        add(f"{hf}.output.dense.bias", f"{blocks}.mlp.fc2_bias", (i,), (d,), same)
        for norm, ours in (("layernorm_before", "norm1"), ("layernorm_after", "norm2")):
            add(f"{hf}.{norm}.weight", f"{blocks}.{ours}.scale", (i,), (d,), same)
            add(f"{hf}.{norm}.bias", f"{blocks}.{ours}.bias", (i,), (d,), same)
        # Variants (issue 7): names follow DINOv2 (layer scale) and timm (qk-norm); see formats/__init__.py.
        if config.layer_scale_init_value is not None:
            add(f"{hf}.layer_scale1.lambda1", f"{blocks}.ls1.gamma", (i,), (d,), same)
            add(f"{hf}.layer_scale2.lambda1", f"{blocks}.ls2.gamma", (i,), (d,), same)
        if config.qk_norm:
            for qk in ("q_norm", "k_norm"):
                add(f"{hf}.attention.attention.{qk}.weight", f"{blocks}.attn.{qk}.scale", (i,), (h,), same)
                add(f"{hf}.attention.attention.{qk}.bias", f"{blocks}.attn.{qk}.bias", (i,), (h,), same)
    final, ours = ("fc_norm", "fc_norm") if config.fc_norm else ("layernorm", "norm")
    add(f"{final}.weight", f"encoder.{ours}.scale", (), (d,), same)
    add(f"{final}.bias", f"encoder.{ours}.bias", (), (d,), same)
    if config.global_pool == "map":
        pool = "encoder.attn_pool"
        add("attn_pool.latent", f"{pool}.probe", (), (1, 1, d), same)
        add("attn_pool.q.weight", f"{pool}.q_kernel", (), (d, d), qkv_w)
        add("attn_pool.q.bias", f"{pool}.q_bias", (), (d,), qkv_b)
        kv_w = (lambda w: w.T.reshape(d, 2, n, h), lambda k: k.reshape(d, 2 * d).T)
        kv_b = (lambda b: b.reshape(2, n, h), lambda b: b.reshape(2 * d))
        add("attn_pool.kv.weight", f"{pool}.kv_kernel", (), (2 * d, d), kv_w)
        add("attn_pool.kv.bias", f"{pool}.kv_bias", (), (2 * d,), kv_b)
        add("attn_pool.proj.weight", f"{pool}.out_kernel", (), (d, d), out_w)
        add("attn_pool.proj.bias", f"{pool}.out_bias", (), (d,), same)
        add("attn_pool.norm.weight", f"{pool}.norm.scale", (), (d,), same)
        add("attn_pool.norm.bias", f"{pool}.norm.bias", (), (d,), same)
        add("attn_pool.mlp.fc1.weight", f"{pool}.mlp.fc1_kernel", (), (f, d), linear)
        add("attn_pool.mlp.fc1.bias", f"{pool}.mlp.fc1_bias", (), (f,), same)
        add("attn_pool.mlp.fc2.weight", f"{pool}.mlp.fc2_kernel", (), (d, f), linear)
        add("attn_pool.mlp.fc2.bias", f"{pool}.mlp.fc2_bias", (), (d,), same)
    if with_head:
        heads = [("cls_classifier", "classifier"), ("distillation_classifier", "classifier_dist")]
        for hf_head, ours in heads if config.distilled else [("classifier", "classifier")]:
            table.append(Slot(f"{hf_head}.weight", (ours, "kernel"), (), (config.num_labels, d), *linear))
            table.append(Slot(f"{hf_head}.bias", (ours, "bias"), (), (config.num_labels,), *same))
    return table


_LAYERS = ("encoder", "blocks", "layers")


def for_layout(table: list[Slot], param_paths) -> list[Slot]:
    """The table for the model's block layout: stacked `layers.attn...[i, ...]` or per-layer `layers.i.attn...[...]`.

    `name_table` indexes stacked parameters; an unscanned model (`scan_layers=False`) keeps each block's
    parameters under its own index, so the layer index moves from the array index into the path.
    """
    paths = set(param_paths)
    out = []
    for slot in table:
        stacked = slot.param[: len(_LAYERS)] == _LAYERS and slot.param not in paths
        if stacked:
            i, *rest = slot.index
            slot = dataclasses.replace(slot, param=(*_LAYERS, i, *slot.param[len(_LAYERS) :]), index=tuple(rest))
        out.append(slot)
    return out


def head_name(config: ViTConfig) -> str:
    """The HF name of the (first) classifier weight: DeiT calls it `cls_classifier`."""
    return "cls_classifier.weight" if config.distilled else "classifier.weight"


def model_prefix(config: ViTConfig) -> str:
    return "deit." if config.distilled else "vit."


# transformers v5 in-memory names -> classic names (v5 itself saves classic names).
_V5_RENAMES = [
    (re.compile(r"(^|\.)layers\.(\d+)\.attention\.q_proj\."), r"\1encoder.layer.\2.attention.attention.query."),
    (re.compile(r"(^|\.)layers\.(\d+)\.attention\.k_proj\."), r"\1encoder.layer.\2.attention.attention.key."),
    (re.compile(r"(^|\.)layers\.(\d+)\.attention\.v_proj\."), r"\1encoder.layer.\2.attention.attention.value."),
    (re.compile(r"(^|\.)layers\.(\d+)\.attention\.o_proj\."), r"\1encoder.layer.\2.attention.output.dense."),
    (re.compile(r"(^|\.)layers\.(\d+)\.mlp\.fc1\."), r"\1encoder.layer.\2.intermediate.dense."),
    (re.compile(r"(^|\.)layers\.(\d+)\.mlp\.fc2\."), r"\1encoder.layer.\2.output.dense."),
    (re.compile(r"(^|\.)layers\.(\d+)\.(layernorm_before|layernorm_after)\."), r"\1encoder.layer.\2.\3."),
]
_POOLER = re.compile(r"^((vit|deit)\.)?pooler\.dense\.(weight|bias)$")


def classic_name(name: str) -> str:
    for pattern, replacement in _V5_RENAMES:
        name = pattern.sub(replacement, name)
    return name


class CheckpointMismatchError(ValueError):
    """The checkpoint's tensors do not match the model: lists every missing, unexpected and wrong-shape one."""


def _mismatch_report(source: str, missing, unexpected, wrong_shape, wrong_dtype) -> str:
    lines = [f"checkpoint {source} does not match the model:"]
    for title, items in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("wrong shape", wrong_shape),
        ("wrong dtype", wrong_dtype),
    ):
        if items:
            lines.append(f"  {len(items)} {title} tensor(s):")
            lines.extend(f"    {item}" for item in items)
    return "\n".join(lines)


def _decide_head(
    config: ViTConfig,
    stored_classes: int | None,
    *,
    num_classes: int | None,
    id2label: dict[int, str] | None,
    do_classification: bool | None,
    source: str,
) -> tuple[ViTConfig, bool, bool]:
    """`(config, do_classification, head_from_checkpoint)` for the requested head, said out loud when replaced."""
    if id2label is not None:
        id2label = {int(k): str(v) for k, v in id2label.items()}
        if num_classes is not None and num_classes != len(id2label):
            raise ValueError(f"num_classes={num_classes} disagrees with the {len(id2label)} entries of id2label")
        num_classes = len(id2label)
    wants_new_head = num_classes is not None
    if do_classification is None:
        do_classification = stored_classes is not None or wants_new_head
        if not do_classification:
            logger.info("%s has no classifier head: returning a feature model (do_classification=False)", source)
    if not do_classification:
        if stored_classes is not None:
            logger.info("%s: classifier head not loaded (do_classification=False)", source)
        return config, False, False
    if stored_classes is None and not wants_new_head:
        raise ValueError(
            f"{source} has no classifier head; pass num_classes=... (or id2label=...) to add a new one, "
            "or do_classification=False for features"
        )
    if wants_new_head and num_classes != stored_classes:
        logger.warning(
            "%s: replacing the classifier head (%s -> %d classes) with a new randomly initialised one",
            source,
            "none" if stored_classes is None else stored_classes,
            num_classes,
        )
        return config.replace(num_labels=num_classes, id2label=id2label), True, False
    if id2label is not None:
        config = config.replace(id2label=id2label)
    return config, True, True


def _is_float(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.floating) or dtype == np.dtype(ml_dtypes.bfloat16)


def load_pretrained(
    cls,
    name_or_path,
    *,
    prefer_pytorch: bool,
    rngs: nnx.Rngs | None,
    dtype,
    param_dtype,
    sharding,
    use_gradient_checkpointing: bool,
    attention_fn,
    num_classes: int | None,
    id2label: dict[int, str] | None,
    do_classification: bool | None,
    revision: str | None,
    token: str | bool | None,
    cache_dir,
    remat_policy: str | None = None,
    scan_layers: bool = True,
    config: ViTConfig | str | None = None,
    img_size: int | tuple[int, int] | None = None,
):
    """Strictly load a ViT checkpoint (HF, timm or npz layout), streaming each tensor onto its target sharding."""
    from .formats import ResampledPosEmbed
    from .formats.detect import open_model

    source = os.fspath(name_or_path)
    checkpoint, config, preprocessor, _ = open_model(
        name_or_path, config=config, prefer_pytorch=prefer_pytorch, revision=revision, token=token, cache_dir=cache_dir
    )
    if img_size is not None:  # resample once at load time: the saved config then records the new size
        old_grid = config.grid_hw
        config = config.replace(image_size=tuple(img_size) if isinstance(img_size, list | tuple) else img_size)
        pos_prefix = 0 if config.no_embed_class else config.num_prefix_tokens
        pos_name = next((n for n in checkpoint.entries() if n.endswith("embeddings.position_embeddings")), None)
        if pos_name is not None and config.grid_hw != old_grid:
            checkpoint = ResampledPosEmbed(
                checkpoint, pos_name, old_grid, config.grid_hw, pos_prefix, config.pos_embed_antialias
            )
    with checkpoint:
        stored = {classic_name(name): name for name in checkpoint.entries()}
        entries = checkpoint.entries()
        prefix = next((p for p in ("vit.", "deit.") if any(name.startswith(p) for name in stored)), "")
        head = stored.get(head_name(config))
        stored_classes = entries[head][0][0] if head is not None and len(entries[head][0]) == 2 else None
        config, do_classification, head_from_checkpoint = _decide_head(
            config,
            stored_classes,
            num_classes=num_classes,
            id2label=id2label,
            do_classification=do_classification,
            source=source,
        )
        table = name_table(config, prefix=prefix, with_head=head_from_checkpoint)

        expected = {slot.hf_name for slot in table}
        ignored = {name for name in stored if _POOLER.match(name)}
        if not head_from_checkpoint:
            heads = ("classifier.", "cls_classifier.", "distillation_classifier.")
            ignored |= {name for name in stored if name.startswith(heads)}
        missing = sorted(expected - stored.keys())
        unexpected = sorted(stored.keys() - expected - ignored)
        wrong_shape, wrong_dtype = [], []
        for slot in table:
            if slot.hf_name not in stored:
                continue
            shape, stored_dtype = entries[stored[slot.hf_name]]
            if tuple(shape) != slot.hf_shape:
                wrong_shape.append(
                    f"{stored[slot.hf_name]}: checkpoint {list(shape)}, model expects {list(slot.hf_shape)}"
                )
            if not _is_float(stored_dtype):
                wrong_dtype.append(f"{stored[slot.hf_name]}: {stored_dtype} (expected a floating-point tensor)")
        if missing or unexpected or wrong_shape or wrong_dtype:
            raise CheckpointMismatchError(_mismatch_report(source, missing, unexpected, wrong_shape, wrong_dtype))
        if ignored & {name for name in stored if _POOLER.match(name)}:
            logger.info("%s: skipped ViTModel's pooler (dense+tanh), which VisionTransformer does not use", source)

        def build(model_rngs):
            return cls(
                config=config,
                rngs=model_rngs,
                dtype=dtype,
                param_dtype=param_dtype,
                sharding=sharding,
                use_gradient_checkpointing=use_gradient_checkpointing,
                attention_fn=attention_fn,
                do_classification=do_classification,
                remat_policy=remat_policy,
                scan_layers=scan_layers,
            )

        abstract = nnx.eval_shape(lambda: build(nnx.Rngs(0)))
        graphdef, abstract_state = nnx.split(abstract)
        variables = dict(nnx.to_flat_state(abstract_state))
        table = for_layout(table, variables)
        loaded = _read_params(checkpoint, table, stored, variables)

    # Everything the checkpoint does not hold (dropout rng state, a new head) comes from a jitted
    # constructor; XLA drops the parameter initialisers whose results are unused.
    fresh_filter = (
        nnx.Not(nnx.Param) if head_from_checkpoint else nnx.Any(nnx.Not(nnx.Param), nnx.PathContains("classifier"))
    )
    fresh = nnx.jit(lambda r: nnx.state(build(r), fresh_filter))(rngs if rngs is not None else nnx.Rngs(0))
    for path, variable in nnx.to_flat_state(fresh):
        loaded[path] = variable
    left = sorted(".".join(map(str, p)) for p in variables.keys() - loaded.keys())
    if left:  # a bug in the name table, never a user error
        raise RuntimeError(f"internal error: parameters not filled by the loader: {left}")
    model = nnx.merge(graphdef, nnx.from_flat_state([(path, loaded[path]) for path in variables]))
    model.preprocessor_json = preprocessor.read_text(encoding="utf-8") if preprocessor and img_size is None else None
    return model


def _read_params(checkpoint, table: list[Slot], stored: dict[str, str], variables: dict) -> dict:
    """Fill each parameter from its slots on host, then place it on its sharding; one parameter at a time."""
    by_param: dict[tuple[str, ...], list[Slot]] = {}
    for slot in table:
        by_param.setdefault(slot.param, []).append(slot)
    mesh = active_mesh()
    out = {}
    for param, slots in by_param.items():
        variable = variables[param]
        shape, param_dtype = variable.get_value().shape, variable.get_value().dtype
        host = _aligned_empty(shape, param_dtype)
        for slot in slots:
            host[slot.index] = slot.to_jimm(checkpoint.read(stored[slot.hf_name])).astype(param_dtype)
        spec = variable.get_metadata().get("out_sharding")
        array = place(host, spec) if mesh is not None and spec is not None else jax.device_put(host)
        del host
        out[param] = variable.replace(value=array)
    return out


def _aligned_empty(shape: tuple[int, ...], dtype, alignment: int = 64) -> np.ndarray:
    """An uninitialised array whose data is `alignment`-byte aligned: jax on CPU then adopts it without a copy."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + alignment, np.uint8)
    offset = (-raw.ctypes.data) % alignment
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def place(host: np.ndarray, spec) -> jax.Array:
    """Put a host array on `spec` under the active mesh, copying to each device only its own shard.

    `make_array_from_callback` touches only this process's devices, so it also works when the mesh spans
    processes (each process reads the same checkpoint).
    """
    spec = spec if isinstance(spec, jax.sharding.PartitionSpec) else jax.sharding.PartitionSpec(*spec)  # vmap: a tuple
    sharding = jax.sharding.NamedSharding(jax.sharding.get_mesh(), spec)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


# -- saving ---------------------------------------------------------------------------------------------------


_SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def _parse_size(size: int | str) -> int:
    """Bytes from an int or a string like '5GB' / '500MiB' (the forms transformers accepts)."""
    if isinstance(size, int) and size > 0:
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?I?B)\s*", str(size).upper())
    if not match:
        raise ValueError(f"max_shard_size must be a positive byte count or like '5GB' / '500MiB', got {size!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


DEFAULT_PREPROCESSOR = {
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "ViTImageProcessor",
    "image_std": [0.5, 0.5, 0.5],
    "resample": 2,
    "rescale_factor": 1 / 255,
}


def save_pretrained(model, save_directory, *, max_shard_size: int | str = "5GB") -> None:
    """Write HF-format files to a staging folder, then move each into place (no half-written files)."""
    limit = _parse_size(max_shard_size)
    config: ViTConfig = model.config
    with_head = model.do_classification
    table = name_table(config, prefix=model_prefix(config) if with_head else "", with_head=with_head)
    params = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    table = for_layout(table, params)
    for slot in table:
        if slot.param not in params:
            raise RuntimeError(f"internal error: model has no parameter {'.'.join(slot.param)} for {slot.hf_name}")

    def producer(slot: Slot):
        return lambda: slot.to_hf(to_host(params[slot.param].get_value()[slot.index]))

    tensors = [(s.hf_name, s.hf_shape, np.dtype(params[s.param].get_value().dtype), producer(s)) for s in table]
    shards: list[list] = [[]]
    size = 0
    for tensor in tensors:
        nbytes = int(np.prod(tensor[1])) * tensor[2].itemsize
        if shards[-1] and size + nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += nbytes

    target = Path(save_directory)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target} exists and is not a directory")
    if jax.process_index() != 0:
        # Gathering a tensor that spans processes is a collective: every process runs it, in process 0's order.
        for *_, produce in tensors:
            produce()
        return
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".jimm-save-", dir=target))
    try:
        names = []
        if len(shards) == 1:
            names.append(SAFETENSORS)
            write_safetensors(staging / SAFETENSORS, shards[0], metadata={"format": "pt"})
        else:
            weight_map, total = {}, 0
            for i, shard in enumerate(shards):
                name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
                write_safetensors(staging / name, shard, metadata={"format": "pt"})
                names.append(name)
                for hf_name, shape, dtype, _ in shard:
                    weight_map[hf_name] = name
                    total += int(np.prod(shape)) * dtype.itemsize
            _write_json(staging / SAFETENSORS_INDEX, {"metadata": {"total_size": total}, "weight_map": weight_map})
            names.append(SAFETENSORS_INDEX)
        family = "DeiT" if config.distilled else "ViT"
        head = "ForImageClassificationWithTeacher" if config.distilled else "ForImageClassification"
        hf_config = config.to_hf_dict(architecture=family + (head if with_head else "Model"))
        hf_config["dtype"] = {"bfloat16": "bfloat16", "float16": "float16"}.get(tensors[0][2].name, "float32")
        _write_json(staging / CONFIG, hf_config)
        preprocessor = getattr(model, "preprocessor_json", None)
        if preprocessor is None:
            h, w = config.image_hw
            preprocessor = json.dumps({**DEFAULT_PREPROCESSOR, "size": {"height": h, "width": w}}, indent=2)
        (staging / PREPROCESSOR).write_text(preprocessor, encoding="utf-8")
        names += [PREPROCESSOR, CONFIG]  # config last: a reader sees new weights before it sees a new config
        stale = {p.name for p in target.glob("model*.safetensors*")} - set(names)
        for name in names:
            os.replace(staging / name, target / name)
        for name in stale:
            (target / name).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def to_host(x: jax.Array) -> np.ndarray:
    """A numpy copy of a (possibly sharded) array; gathers across processes when it is not fully addressable."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


__all__ = ["CheckpointMismatchError", "load_pretrained", "name_table", "save_pretrained"]
