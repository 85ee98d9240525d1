"""What the image commands (`predict`, `features`, `zero-shot`, `embed`, `index`) share: inputs that are files,
folders or glob patterns (`jimm.io.inputs`), decoded in the background in batches (`jimm.data.stream`), with a
progress bar on a terminal and a closing count of the files skipped. Also `jimm predict` and `jimm features`.
"""

from __future__ import annotations

import argparse
import os
import sys

from .cli_args import MAX_NUM_PATCHES_HELP, positive_int

DEFAULT_WORKERS = min(8, os.cpu_count() or 1)


def add_input_args(p: argparse.ArgumentParser, *, batch_size: int = 32, required: bool = True) -> None:
    """The image arguments, `--batch-size`, `--workers` and `--quiet`."""
    p.add_argument(
        "images",
        nargs="+" if required else "*",
        help="image files, folders (searched recursively) and glob patterns such as 'photos/**/*.jpg'",
    )
    p.add_argument("--batch-size", type=positive_int, default=batch_size, help=f"images per model call ({batch_size})")
    p.add_argument(
        "--workers", type=positive_int, default=DEFAULT_WORKERS, help="threads decoding images in the background"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar (there is none when stderr is not a terminal)")


def add_max_num_patches(p: argparse.ArgumentParser) -> None:
    """`--max-num-patches`, SigLIP 2 NaFlex's patch budget per image (an error for a fixed-size model)."""
    p.add_argument("--max-num-patches", type=positive_int, help=MAX_NUM_PATCHES_HELP)


def open_stream(args: argparse.Namespace, model, desc: str):
    """An `ImageStream` over the files `args.images` names, with the model's own preprocessing (SigLIP 2 NaFlex:
    at `args.max_num_patches` when the command has it and it is given)."""
    from .data.stream import ImageStream, processor_for
    from .io.inputs import expand_inputs

    processor = processor_for(model, max_num_patches=getattr(args, "max_num_patches", None))
    return ImageStream(
        expand_inputs(args.images),
        processor,
        batch_size=args.batch_size,
        num_threads=args.workers,
        progress=not args.quiet and sys.stderr.isatty(),
        desc=desc,
    )


def report_skipped(stream) -> None:
    """The closing count, on stderr, when any file was skipped (each was named as it happened)."""
    if stream.skipped:
        total = stream.count + len(stream.skipped)
        print(f"jimm: warning: skipped {len(stream.skipped)} of {total} files (named above)", file=sys.stderr)


def cmd_predict(args: argparse.Namespace) -> None:
    from .io.tables import TABLE_SUFFIXES, check_suffix, write_table
    from .models.registry import from_pretrained
    from .train.evaluate import predict_stream

    if args.output:
        check_suffix(args.output, TABLE_SUFFIXES, "--output")
    model = from_pretrained(args.model, sharding=None)
    stream = open_stream(args, model, "predict")
    rows = []
    for path, top in predict_stream(model, stream, top_k=args.top_k):
        if args.output:
            row = {"image": str(path)}
            for rank, (label, prob) in enumerate(top, 1):
                row |= {f"label_{rank}": label, f"prob_{rank}": prob}
            rows.append(row)
            continue
        print(path)
        for label, prob in top:
            print(f"  {prob:7.2%}  {label}")
    if args.output:
        write_table(args.output, rows)
        print(f"wrote {len(rows)} predictions to {args.output}")
    report_skipped(stream)


def cmd_features(args: argparse.Namespace) -> None:
    from .vis.features import load_vision_model, write_features_stream

    model = load_vision_model(args.model)
    stream = open_stream(args, model, "features")
    for path in write_features_stream(model, stream, args.out):
        print(path)
    report_skipped(stream)


def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="top-k labels for image files, folders or glob patterns")
    p.add_argument("model", help="model folder or hub id")
    add_input_args(p)
    p.add_argument("--top-k", type=positive_int, default=5)
    p.add_argument("--output", help="write a table instead of printing: .csv, .jsonl or .parquet (image, label_1, ...)")
    p.set_defaults(fn=cmd_predict)


def add_features(sub) -> None:
    p = sub.add_parser("features", help="patch features (.npy), their PCA picture and the CLS attention per image")
    p.add_argument("model", help="model folder, weights file or hub id (any family with patch tokens)")
    add_input_args(p, batch_size=8)
    p.add_argument("--out", required=True, help="folder for NAME_features.npy, NAME_pca.png, NAME_attention.png")
    add_max_num_patches(p)
    p.set_defaults(fn=cmd_features)


__all__ = ["add_features", "add_input_args", "add_max_num_patches", "add_predict", "open_stream", "report_skipped"]
