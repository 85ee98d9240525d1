"""`jimm index` and `jimm search`: argument parsing and printing; the work is done by `jimm.search`."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .cli_args import positive_int
from .cli_folders import add_input_args, add_max_num_patches, report_skipped


def model_id(name: str) -> str:
    """What an index records to reload its model: the absolute path of a local folder or file, else the hub id."""
    return os.path.abspath(name) if os.path.exists(name) else name


def cmd_index(args: argparse.Namespace) -> None:
    from .io.inputs import expand_inputs
    from .models.registry import from_pretrained
    from .search import ImageIndex

    files = expand_inputs(args.images)
    extending = os.path.isfile(os.path.join(args.out, "index.json"))
    index = ImageIndex.load(args.out) if extending else None  # a damaged index fails before the model loads
    model = from_pretrained(args.model, sharding=None)
    if index is None:
        index = ImageIndex.for_model(model, model_id(args.model), max_num_patches=args.max_num_patches)
    elif args.max_num_patches is not None and index.record.preprocessing.get("max_num_patches") != args.max_num_patches:
        recorded = index.record.preprocessing.get("max_num_patches")
        raise ValueError(
            f"{args.out} was indexed with max_num_patches={recorded}; leave --max-num-patches out to extend it "
            "with the same preprocessing"
        )
    before = len(index)
    stream = index.add_images(
        model,
        files,
        batch_size=args.batch_size,
        num_threads=args.workers,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    index.save(args.out)
    added = len(index) - before
    held = len(files) - added - (len(stream.skipped) if stream else 0)
    already = f"; {held} already indexed" if extending else ""
    print(f"indexed {added} new image(s){already}; {args.out} holds {len(index)} ({index.kind} search)")
    if stream is not None:
        report_skipped(stream)


def cmd_search(args: argparse.Namespace) -> None:
    from .models.registry import from_pretrained
    from .search import ImageIndex

    if (args.query is None) == (args.image is None):
        raise ValueError('give a text query or --image FILE (one of them), e.g. jimm search INDEX "a red car"')
    index = ImageIndex.load(args.index)
    model = from_pretrained(args.model, sharding=None) if args.model else index.load_model()
    if args.image is not None:
        hits = index.search_image(model, [args.image], k=args.top_k)[0]
    else:
        hits = index.search_text(model, args.query, k=args.top_k)[0]
    if args.json:
        query = {"image": args.image} if args.image is not None else {"text": args.query}
        results = [{"rank": h.rank, "score": h.score, "file": h.file} for h in hits]
        print(json.dumps({"query": query, "results": results}))
        return
    for hit in hits:
        print(f"{hit.rank:4d}  {hit.score:7.4f}  {hit.file}")


def add_commands(sub) -> None:
    """Add `index` and `search` to the `jimm` command's subparsers."""
    p = sub.add_parser("index", help="embed images into a searchable index (rerun on the same --out to add files)")
    p.add_argument("model", help="model folder or hub id (any family; CLIP / SigLIP for text queries)")
    add_input_args(p)
    p.add_argument("--out", required=True, help="index folder: created, or extended when it holds an index")
    add_max_num_patches(p)
    p.set_defaults(fn=cmd_index)

    p = sub.add_parser("search", help="the images of an index nearest to a text or an image")
    p.add_argument("index", help="index folder written by `jimm index`")
    p.add_argument("query", nargs="?", help='text, e.g. "a red car" (needs a CLIP / SigLIP index)')
    p.add_argument("--image", help="search by this image file instead of text")
    p.add_argument("--top-k", type=positive_int, default=10)
    p.add_argument("--json", action="store_true", help='one JSON object: {"query": ..., "results": [...]}')
    p.add_argument("--model", help="the model to embed the query with (default: the one the index records)")
    p.set_defaults(fn=cmd_search)
