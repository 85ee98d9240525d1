"""Export a model's towers to files other runtimes run with no jimm code: ONNX (through jax2onnx, for
onnxruntime and the runtimes that read ONNX) and serialised StableHLO (`jax.export`, reloaded with
`jax.export.deserialize`). Every artefact has a dynamic batch dimension; image size and text length are fixed.

What a folder holds (written atomically; files of the same names that jimm did not write are refused):

    image.onnx | image.stablehlo   pixels `[B, H, W, C]` float32 (preprocessed, NHWC) -> the vision tower's output
                                   (logits of a classifier, else the pooled / projected embedding)
    text.onnx  | text.stablehlo    `input_ids [B, T]` int32 -> the text embedding (CLIP, SigLIP)
    export.json                    each file's inputs and outputs, the dtype, the preprocessing (mean, std, size)
                                   and the tokenizer's padding; what a deployment needs to feed the files
    preprocessor_config.json       transformers' image processor settings (when the model has a vision tower)
    tokenizer files                copied from the checkpoint (when it has a text tower and a tokenizer)

The export runs a copy of the model with the explicit XLA attention path (softmax of materialised scores, no
shape-dependent kernel choice, no custom call), which both converters express for a symbolic batch; the model
itself is not changed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from .common.attention import reference_attention
from .io.atomic_save import FolderSave

FORMATS = {"onnx": ".onnx", "stablehlo": ".stablehlo"}
FACTS = "export.json"
_ONNX_SINGLE_FILE_LIMIT = 1 << 31  # protobuf's limit on one message, so on a single-file ONNX model


def _towers(model) -> dict[str, Callable[[Any, jax.Array], jax.Array]]:
    """`{tower name: fn(model, input)}`: what each exported file computes for this model's class."""
    towers = getattr(model, "TOWERS", ("vision",))
    out = {}
    if "vision" in towers:  # a vision-only class's own call (a classifier's logits); a pair's image embedding
        out["image"] = (lambda m, x: m(x)) if "text" not in towers else (lambda m, x: m.encode_image(x))
    if "text" in towers:
        out["text"] = lambda m, ids: m.encode_text(ids)
    return out


def _export_copy(model) -> nnx.Module:
    """A copy of `model` that shares its weights, in eval mode, without dropout rng state (constants of a key
    dtype that no converter takes), attending through the explicit XLA path, its blocks unrolled."""
    copy = nnx.merge(*nnx.split(model))
    copy.eval()  # every random layer (dropout, DINOv3's RoPE augmentation) deterministic: its rngs go unused
    for _, module in nnx.iter_graph(copy):
        if isinstance(getattr(module, "rngs", None), nnx.Rngs | nnx.RngStream) and getattr(module, "deterministic", 0):
            module.rngs = nnx.data(None)
        if hasattr(module, "use_attention_fn"):  # the blocks' attention and the MAP pooling head's
            module.use_attention_fn(reference_attention)
        if hasattr(module, "unstack_layers"):
            module.unstack_layers()
    return copy


def _pure(model, fn: Callable[[Any, jax.Array], jax.Array]) -> Callable[[jax.Array], jax.Array]:
    """`fn(model, x)` as a function of `x` alone, the weights closed over as constants (they become the
    artefact's initializers / StableHLO constants)."""
    graphdef, state = nnx.split(_export_copy(model))
    leaves, treedef = jax.tree.flatten(state)
    keyed = [leaf for leaf in leaves if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)]
    if keyed:
        raise ValueError(f"internal error: the export copy still holds {len(keyed)} rng key(s)")

    def run(x):
        return fn(nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves)), x)

    return run


def _input_spec(model, tower: str) -> tuple[str, tuple[int, ...], Any]:
    """(input name, shape after the batch, dtype) of one tower."""
    if tower == "image":
        config = model.vision_tower.config  # the native size: other sizes resample the positions, export one
        return "pixel_values", (*config.image_size, config.num_channels), jnp.float32
    return "input_ids", (text_length(model),), jnp.int32


def text_length(model) -> int:
    """The length `model.tokenize` pads to: the tokenizer's, at most the text tower's positions."""
    limit = model.text_model.config.max_positions
    tokenizer = getattr(model, "tokenizer", None)
    return limit if tokenizer is None else min(tokenizer.max_length, limit)


def _stablehlo(fn, shape, dtype, platforms: Sequence[str] | None) -> bytes:
    (batch,) = jax.export.symbolic_shape("B")
    spec = jax.ShapeDtypeStruct((batch, *shape), dtype)
    exported = jax.export.export(jax.jit(fn), platforms=None if platforms is None else tuple(platforms))(spec)
    return bytes(exported.serialize())


def _onnx(fn, tower: str, input_name: str, shape, dtype, opset: int) -> bytes:
    try:
        from jax2onnx import to_onnx
    except ImportError as err:
        raise ImportError(
            f"ONNX export needs jax2onnx, onnx and onnxruntime ({err}): pip install 'jimm[export]'"
        ) from err
    # jax2onnx reports every optional plugin (equinox, dm_pix) it skips; onnx_ir every untyped shape constant.
    quiet = [logging.getLogger(name) for name in ("jax2onnx", "onnx_ir")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        proto = to_onnx(
            fn,
            [jax.ShapeDtypeStruct(("B", *shape), dtype)],
            model_name=tower,
            opset=opset,
            input_names=[input_name],
            output_names=["output"],
            return_mode="proto",
        )
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
    if proto.ByteSize() >= _ONNX_SINGLE_FILE_LIMIT:
        raise ValueError(f"the {tower} tower is over 2 GB, ONNX's single-file limit; export it as StableHLO instead")
    _check_onnx(proto, tower)
    return proto.SerializeToString()


def _check_onnx(proto, tower: str) -> None:
    """Refuse to write a graph onnxruntime would refuse to load (ONNX's type rules and shape inference)."""
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        reason = str(err).strip().splitlines()[0]
        hint = (
            "; ONNX's Einsum has no bfloat16 type, so a bf16 graph cannot be loaded: export bf16 models as StableHLO "
            "(format='stablehlo'), or build the model in float32 for ONNX"
            if "bfloat16" in reason
            else ""
        )
        raise ValueError(f"the ONNX graph of the {tower} tower is not valid ONNX ({reason}){hint}") from None


def _preprocessing(model) -> tuple[dict[str, Any], str]:
    """(the facts a deployment needs, transformers' preprocessor_config.json text) for a vision model."""
    from .data.preprocess import ImageProcessorConfig

    proc = ImageProcessorConfig.for_model(model)
    hf = proc.to_dict()
    facts = {
        "layout": "NHWC",
        "size": hf["size"],
        "crop_size": hf.get("crop_size"),
        "resample": hf["resample"],
        "rescale_factor": hf["rescale_factor"] if hf["do_rescale"] else 1.0,
        "mean": hf["image_mean"] if hf["do_normalize"] else [0.0, 0.0, 0.0],
        "std": hf["image_std"] if hf["do_normalize"] else [1.0, 1.0, 1.0],
    }
    return facts, json.dumps(hf, indent=2, sort_keys=True) + "\n"


def export_model(
    model,
    out: str | os.PathLike,
    *,
    format: str = "onnx",
    towers: Sequence[str] | None = None,
    platforms: Sequence[str] | None = None,
    opset: int = 21,
    overwrite: bool = False,
) -> list[Path]:
    """Write `model`'s towers into the folder `out` (see the module docstring); returns the paths written.

    Args:
        model: Any jimm model (ViT / DeiT, DINOv2, DINOv3, CLIP, SigLIP and their single towers). The export
            computes in the model's own dtype (build or load it with `dtype=jnp.bfloat16` for a bf16 export);
            images go in as float32 in both cases.
        format: "onnx" or "stablehlo".
        towers: Which of "image" / "text" to export; None: every tower the model has.
        platforms: StableHLO only: the platforms to lower for (e.g. ("cpu", "cuda")); None: the default backend.
        opset: ONNX only: the opset version.
        overwrite: Replace same-named files that jimm did not write.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose one of {sorted(FORMATS)}")
    available = _towers(model)
    chosen = list(available) if towers is None else list(dict.fromkeys(towers))
    unknown = [t for t in chosen if t not in available]
    if unknown or not chosen:
        raise ValueError(
            f"{type(model).__name__} has the tower(s) {sorted(available)}; cannot export {unknown or 'nothing'}"
        )
    if platforms is not None and format != "stablehlo":
        raise ValueError("platforms= applies to the StableHLO format only (an ONNX file runs wherever it is loaded)")

    files: dict[str, bytes | str] = {}
    facts: dict[str, Any] = {"format": format, "model_type": getattr(model.config, "model_type", None), "files": {}}
    for tower in chosen:
        input_name, shape, dtype = _input_spec(model, tower)
        fn = _pure(model, available[tower])
        out_aval = jax.eval_shape(fn, jax.ShapeDtypeStruct((1, *shape), dtype))
        name = f"{tower}{FORMATS[format]}"
        if format == "stablehlo":
            files[name] = _stablehlo(fn, shape, dtype, platforms)
        else:
            files[name] = _onnx(fn, tower, input_name, shape, dtype, opset)
        facts["files"][name] = {
            "input": {"name": input_name, "shape": ["B", *shape], "dtype": jnp.dtype(dtype).name},
            "output": {"name": "output", "shape": ["B", *out_aval.shape[1:]], "dtype": out_aval.dtype.name},
        }
    copies: dict[str, Path] = {}
    if "image" in chosen:
        facts["preprocessing"], files["preprocessor_config.json"] = _preprocessing(model)
    if "text" in chosen:
        facts["text"] = _text_facts(model)
        tokenizer = getattr(model, "tokenizer", None)
        copies = {} if tokenizer is None else {p.name: p for p in tokenizer.files}
    files[FACTS] = json.dumps(facts, indent=2) + "\n"

    with FolderSave(out, [*files, *copies], overwrite=overwrite) as save:
        for name, data in files.items():
            save.path(name).write_bytes(data.encode() if isinstance(data, str) else data)
        for name, src in copies.items():
            save.path(name).write_bytes(Path(src).read_bytes())
        save.commit()
    return [Path(out) / name for name in [*files, *copies]]


def _text_facts(model) -> dict[str, Any]:
    tokenizer = getattr(model, "tokenizer", None)
    facts: dict[str, Any] = {"length": text_length(model), "padding": "max_length (right)"}
    if tokenizer is None:
        facts["tokenizer"] = None  # built with from_config: the ids come from the user's own tokenizer
        return facts
    facts["tokenizer"] = {
        "family": tokenizer.family,
        "files": [p.name for p in tokenizer.files],
        "pad_id": tokenizer.pad_id,
        "bos_id": tokenizer.bos_id,
        "eos_id": tokenizer.eos_id,
    }
    return facts


def load_stablehlo(path: str | os.PathLike) -> jax.export.Exported:
    """A StableHLO artefact reloaded (`jax.export.deserialize`); call it with `.call(x)`."""
    return jax.export.deserialize(bytearray(Path(path).read_bytes()))


__all__ = ["FACTS", "FORMATS", "export_model", "load_stablehlo", "text_length"]
