"""`jimm zero-shot` and `jimm embed`: argument parsing and printing for image-text models (CLIP, SigLIP, SigLIP 2
NaFlex); the work is done by `jimm.image_text`. Added to the `jimm` command by `jimm.cli.build_parser`.
"""

from __future__ import annotations

import argparse
import json

from .cli_args import MAX_NUM_PATCHES_HELP, positive_int


def _labels(text: str) -> list[str]:
    labels = [label.strip() for label in text.split(",")]
    if not all(labels):
        raise argparse.ArgumentTypeError(f"labels must be comma-separated names with none empty, got {text!r}")
    return labels


def cmd_zero_shot(args: argparse.Namespace) -> None:
    from .image_text import iter_zero_shot
    from .models.registry import from_pretrained

    model = from_pretrained(args.model, sharding=None)
    rows = iter_zero_shot(
        model,
        args.images,
        args.labels,
        template=args.template,
        batch_size=args.batch_size,
        progress=not args.quiet,
        max_num_patches=args.max_num_patches,
    )
    k = min(args.top_k or (len(args.labels) if args.json else 5), len(args.labels))
    paths = iter(args.images)
    for batch in rows:
        for probs in batch:
            path = next(paths)
            top = sorted(zip(args.labels, probs.tolist(), strict=True), key=lambda pair: -pair[1])[:k]
            if args.json:
                print(json.dumps({"image": path, "probs": dict(top)}), flush=True)
            else:
                print(path)
                for label, prob in top:
                    print(f"  {prob:7.2%}  {label}")


def cmd_embed(args: argparse.Namespace) -> None:
    import numpy as np

    from .image_text import embed_images, embed_texts
    from .models.registry import from_pretrained

    if bool(args.images) == bool(args.text):
        raise ValueError("give either image files or --text prompts (not both, not neither)")
    model = from_pretrained(args.model, sharding=None)
    if args.text:
        embeddings = embed_texts(model, args.text, batch_size=args.batch_size)
    else:
        embeddings = embed_images(
            model,
            args.images,
            batch_size=args.batch_size,
            progress=not args.quiet,
            max_num_patches=args.max_num_patches,
        )
    np.save(args.out, embeddings)
    kind = "text" if args.text else "image"
    print(f"wrote {len(embeddings)} L2-normalised {kind} embeddings of width {embeddings.shape[1]} to {args.out}")


def add_commands(sub) -> None:
    """Add `zero-shot` and `embed` to the `jimm` command's subparsers."""
    p = sub.add_parser("zero-shot", help="classify images by label names with a CLIP / SigLIP model")
    p.add_argument("model", help="model folder or hub id (with its tokenizer files)")
    p.add_argument("images", nargs="+", help="JPEG/PNG files")
    p.add_argument("--labels", type=_labels, required=True, help="comma-separated class names, e.g. cat,dog,car")
    p.add_argument("--template", default="a photo of a {}.", help="prompt with {} for the label")
    p.add_argument("--top-k", type=positive_int, help="labels shown per image (default 5; all with --json)")
    p.add_argument("--json", action="store_true", help='one JSON object per line: {"image": PATH, "probs": {...}}')
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--max-num-patches", type=positive_int, help=MAX_NUM_PATCHES_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_zero_shot)

    p = sub.add_parser("embed", help="L2-normalised image or text embeddings to a .npy file")
    p.add_argument("model", help="model folder or hub id")
    p.add_argument("images", nargs="*", help="JPEG/PNG files (or use --text)")
    p.add_argument("--text", action="append", help="a prompt to embed (repeat for more)")
    p.add_argument("--out", required=True, help="output .npy file, [N, width] float32")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--max-num-patches", type=positive_int, help=MAX_NUM_PATCHES_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_embed)
