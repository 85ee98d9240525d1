"""`jimm zero-shot` and `jimm embed`: argument parsing and printing for image-text models (CLIP, SigLIP, SigLIP 2
NaFlex with `--max-num-patches`; `embed` takes any family for images); the work is done by `jimm.image_text` and
`jimm.embed`. Added to the `jimm` command by `jimm.cli.build_parser`.
"""

from __future__ import annotations

import argparse
import json

from .cli_args import positive_int
from .cli_folders import add_input_args, add_max_num_patches, open_stream, report_skipped


def _labels(text: str) -> list[str]:
    labels = [label.strip() for label in text.split(",")]
    if not all(labels):
        raise argparse.ArgumentTypeError(f"labels must be comma-separated names with none empty, got {text!r}")
    return labels


def cmd_zero_shot(args: argparse.Namespace) -> None:
    from .image_text import check_labels, zero_shot_stream
    from .io.tables import TABLE_SUFFIXES, check_suffix, write_table
    from .models.registry import from_pretrained

    check_labels(args.labels, args.template)
    if args.output:
        check_suffix(args.output, TABLE_SUFFIXES, "--output")
    model = from_pretrained(args.model, sharding=None)
    stream = open_stream(args, model, "zero-shot")
    k = min(args.top_k or (len(args.labels) if args.json else 5), len(args.labels))
    rows = []
    for paths, probs in zero_shot_stream(model, stream, args.labels, template=args.template):
        for path, row in zip(paths, probs.tolist(), strict=True):
            if args.output:  # a table: one column per label, in the order given
                rows.append({"image": str(path), **dict(zip(args.labels, row, strict=True))})
                continue
            top = sorted(zip(args.labels, row, strict=True), key=lambda pair: -pair[1])[:k]
            if args.json:
                print(json.dumps({"image": str(path), "probs": dict(top)}), flush=True)
            else:
                print(path)
                for label, prob in top:
                    print(f"  {prob:7.2%}  {label}")
    if args.output:
        write_table(args.output, rows)
        print(f"wrote {len(rows)} rows to {args.output}")
    report_skipped(stream)


def cmd_embed(args: argparse.Namespace) -> None:
    import numpy as np

    from .embed import embed_stream, text_embeddings
    from .io.tables import EMBEDDING_SUFFIXES, check_suffix, write_embeddings
    from .models.registry import from_pretrained

    if bool(args.images) == bool(args.text):
        raise ValueError(
            "give either image files or --text prompts (not both, not neither); images may be folders or glob patterns"
        )
    check_suffix(args.output, EMBEDDING_SUFFIXES, "--output")
    model = from_pretrained(args.model, sharding=None)
    stream = None
    if args.text:
        names, embeddings = args.text, text_embeddings(model, args.text, batch_size=args.batch_size)
    else:
        stream = open_stream(args, model, "embed")
        names, rows = [], []
        for paths, vectors in embed_stream(model, stream):
            names += [str(p) for p in paths]
            rows.append(vectors)
        embeddings = np.concatenate(rows)
    written = write_embeddings(args.output, names, embeddings)
    kind = "text" if args.text else "image"
    print(
        f"wrote {len(embeddings)} L2-normalised {kind} embeddings of width {embeddings.shape[1]} to "
        + " and ".join(map(str, written))
    )
    if stream is not None:
        report_skipped(stream)


def add_commands(sub) -> None:
    """Add `zero-shot` and `embed` to the `jimm` command's subparsers."""
    p = sub.add_parser("zero-shot", help="classify images by label names with a CLIP / SigLIP model")
    p.add_argument("model", help="model folder or hub id (with its tokenizer files)")
    add_input_args(p)
    p.add_argument("--labels", type=_labels, required=True, help="comma-separated class names, e.g. cat,dog,car")
    p.add_argument("--template", default="a photo of a {}.", help="prompt with {} for the label")
    p.add_argument("--top-k", type=positive_int, help="labels shown per image (default 5; all with --json)")
    p.add_argument("--json", action="store_true", help='one JSON object per line: {"image": PATH, "probs": {...}}')
    p.add_argument("--output", help="write a table (.csv, .jsonl, .parquet): image, then one column per label")
    add_max_num_patches(p)
    p.set_defaults(fn=cmd_zero_shot)

    p = sub.add_parser("embed", help="L2-normalised image or text embeddings, with the file of each row")
    p.add_argument("model", help="model folder or hub id (any family for images; CLIP / SigLIP for --text)")
    add_input_args(p, required=False)
    p.add_argument("--text", action="append", help="a prompt to embed (repeat for more)")
    p.add_argument(
        "--output",
        "--out",
        dest="output",
        required=True,
        help="FILE.npy ([N, width] float32, with FILE.files.txt naming each row) or FILE.parquet (file, embedding)",
    )
    add_max_num_patches(p)
    p.set_defaults(fn=cmd_embed)
