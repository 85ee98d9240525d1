"""Find a model's weights in any supported layout and present them under HF names with a `ViTConfig`.

Layouts are told apart by their tensor names: HF (`...embeddings.patch_embeddings.projection.weight`), timm
(`patch_embed.proj.weight`), Google npz (`embedding/kernel`, optionally under `params/`). The config comes
from `config=` (a `ViTConfig` or a variant name like "B/16"), else from an HF `config.json`, else (timm and
npz) it is inferred from the tensor shapes.
"""

from __future__ import annotations

import os
from pathlib import Path

from ....io.files import ModelFiles
from ....io.readers import CheckpointSource, PrefixStripped
from ....io.resolve import CONFIG
from ...loading import check_depth
from ...views import ConvertedSource
from ..config import ViTConfig
from . import big_vision as bv
from . import timm as timm_format

HF_MARKER = "embeddings.patch_embeddings.projection.weight"


def detect_format(names, source: str = "checkpoint") -> str:
    """'hf', 'timm' or 'big_vision' from a checkpoint's tensor names; a clear error naming `source` otherwise."""
    names = list(names)
    if any(n.endswith(HF_MARKER) for n in names):
        return "hf"
    if timm_format.MARKER in names:
        return "timm"
    if any(n.endswith("embedding/kernel") for n in names):
        return "big_vision"
    sample = ", ".join(sorted(names)[:8]) + (", ..." if len(names) > 8 else "")
    raise ValueError(
        f"{source}: unknown checkpoint layout (tensors: {sample}). jimm.VisionTransformer reads HF ViT/DeiT "
        f"('{HF_MARKER}'), timm ('{timm_format.MARKER}') and vit_jax/big_vision npz ('embedding/kernel') layouts"
    )


def _as_config(config: ViTConfig | str | None) -> ViTConfig | None:
    if config is None or isinstance(config, ViTConfig):
        return config
    if isinstance(config, str):
        from ..variants import config_for

        return config_for(config)
    raise TypeError(f"config must be a ViTConfig or a variant name like 'B/16', got {type(config).__name__}")


def _missing_hf_config(path: Path) -> str:
    if path.is_file():
        return (
            f"{path} holds HF-layout weights, which need their config.json: pass the model folder that holds "
            "both (or config= in Python)"
        )
    if not (path / CONFIG).is_file():
        return f"{path} has HF-layout weights but no {CONFIG}; add the model's {CONFIG} (or pass config= in Python)"
    return (
        f"{path / CONFIG} has no model_type, so it is not an HF config; HF-layout weights need one "
        '(with "model_type": "vit"), or config= in Python'
    )


def open_layout(raw: CheckpointSource, files: ModelFiles, config: ViTConfig | str | None, source: str):
    """`(view under HF names, config, format name)` of an open checkpoint; the layout is detected here, once."""
    config = _as_config(config)
    fmt = detect_format(raw.entries(), ", ".join(str(p) for p in files.weights))
    if fmt == "hf":
        if config is None:
            if files.hf_config is None:
                raise FileNotFoundError(_missing_hf_config(Path(os.path.expanduser(source))))
            try:
                config = ViTConfig.from_hf_dict(files.hf_config)
            except (ValueError, TypeError) as err:
                raise ValueError(f"{files.config_path}: {err}") from err
        return raw, config, fmt
    if fmt == "timm":
        entries = raw.entries()
        config = config or timm_format.infer_config(entries)
        check_depth(entries, r"^blocks\.(\d+)\.", config.num_hidden_layers, source=source)  # before its rules
        rules = timm_format.rules(config, with_head=timm_format.has_head(entries))
        return ConvertedSource(raw, rules, format_name="timm"), config, fmt
    stripped = PrefixStripped(raw, bv.strip_prefix(raw.entries()))
    entries = stripped.entries()
    inferred, layout = bv.infer_config(entries)
    config = config or inferred
    if not layout.get("scanned"):  # a scanned file stacks its blocks in one tensor each
        check_depth(entries, r"^Transformer/encoderblock_(\d+)/", config.num_hidden_layers, source=source)
    rules = bv.rules(config, with_head="head/kernel" in entries, **layout)
    return ConvertedSource(stripped, rules, format_name="npz (vit_jax / big_vision)"), config, fmt


__all__ = ["detect_format", "open_layout"]
