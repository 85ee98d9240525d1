"""`jimm export`: argument parsing and printing; the work is done by `jimm.export`. Added to the `jimm` command by
`jimm.cli.build_parser`.
"""

from __future__ import annotations

import argparse


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated names with none empty, got {text!r}")
    return names


def cmd_export(args: argparse.Namespace) -> None:
    import jax.numpy as jnp

    from .export import export_model
    from .models.registry import from_pretrained

    dtype = jnp.dtype(args.dtype)
    model = from_pretrained(args.model, sharding=None, dtype=dtype, param_dtype=dtype)
    written = export_model(
        model, args.out, format=args.format, towers=args.towers, platforms=args.platforms, overwrite=args.overwrite
    )
    print(f"wrote {len(written)} file(s) to {args.out}: {', '.join(p.name for p in written)}")


def add_command(sub) -> None:
    p = sub.add_parser("export", help="ONNX or StableHLO files of a model's towers, with its preprocessing beside them")
    p.add_argument("model", help="model folder, hub id or catalog name")
    p.add_argument("out", help="output folder: image/text .onnx or .stablehlo, export.json, preprocessor and tokenizer")
    p.add_argument("--format", choices=["onnx", "stablehlo"], default="onnx")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="weights and compute dtype")
    p.add_argument("--towers", type=_names, help="image,text (default: every tower the model has)")
    p.add_argument("--platforms", type=_names, help="StableHLO only: e.g. cpu,cuda (default: this machine's)")
    p.add_argument("--overwrite", action="store_true", help="replace same-named files jimm did not write in OUT")
    p.set_defaults(fn=cmd_export)


__all__ = ["add_command", "cmd_export"]
