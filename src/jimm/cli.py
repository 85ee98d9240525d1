"""The `jimm` command: predict, train, eval, convert, bench and demo. Argument parsing and printing only;
the work is done by `jimm.data`, `jimm.train` and `jimm.io`. The image commands that take folders live in
`jimm.cli_folders`, `jimm.cli_image_text` and `jimm.cli_search`.

User errors (bad paths, bad numbers, incompatible checkpoints, a full disk, too little memory for the batch)
print one `jimm: error: ...` line that names the problem and the fix, and exit with status 2; set
`JIMM_DEBUG=1` to see the traceback. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Sequence

from . import cli_args, cli_folders

TRAIN_EXTRA_MODULES = frozenset({"optax", "grain", "orbax", "PIL", "sklearn", "matplotlib", "tqdm"})
USER_ERRORS = (ValueError, OSError, ImportError)
RESUMABLE = frozenset({"train", "demo"})
# What to do about an OS error on a path, by errno.
_OS_HINTS = {
    errno.ENOSPC: "free some space, or write to another disk",
    errno.EACCES: "check the permissions, or choose another path",
    errno.EPERM: "check the permissions, or choose another path",
    errno.EROFS: "choose a path on a writable disk",
    errno.ENOTDIR: "a file is in the way of that folder path; choose another path",
}
_OUT_OF_MEMORY_HINTS = {
    "predict": "pass fewer images at a time",
    "convert": "free some memory",
}


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as the one `jimm: error: ...` line every other error uses (exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"jimm: error: {message} (see `{self.prog} --help`)\n")


def _quiet_logs() -> None:
    logging.basicConfig(level=logging.WARNING, format="jimm: %(levelname)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.WARNING)
    except ImportError:
        pass


# -- commands ---------------------------------------------------------------------------------------------------


def _load_splits(args: argparse.Namespace):
    from .data.datasets import load_dataset

    return load_dataset(args.data, val_fraction=args.val_fraction, seed=args.seed)


def cmd_train(args: argparse.Namespace) -> None:
    import jax.numpy as jnp
    from flax import nnx

    from .data.preprocess import ImageProcessorConfig
    from .models.registry import image_classifier
    from .models.vit import VisionTransformer
    from .train.config import TrainConfig, parse_size
    from .train.trainer import train

    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=args.lr,
        warmup_steps=args.warmup_steps if args.warmup_steps is not None else min(args.steps // 10, 1000),
        min_lr_ratio=args.min_lr_ratio,
        weight_decay=args.weight_decay,
        clip_norm=args.clip_norm,
        label_smoothing=args.label_smoothing,
        head_only=args.head_only,
        bf16=args.bf16,
        seed=args.seed,
        shift=args.shift if args.shift is not None else 0,
        hflip=args.hflip,
        log_every=args.log_every,
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        progress=not args.quiet,
    )
    splits = _load_splits(args)
    labels = dict(enumerate(splits["train"].labels))
    dtype = jnp.bfloat16 if args.bf16 else jnp.float32
    if args.from_model:
        if args.image_size is not None or args.dropout:
            raise ValueError(
                "--image-size and --dropout apply to --model (from scratch); --from keeps the checkpoint's"
            )
        model = image_classifier(  # CLIP / SigLIP: the vision tower
            args.from_model, id2label=labels, dtype=dtype, rngs=nnx.Rngs(args.seed), sharding=None
        )
        processor = ImageProcessorConfig.for_model(model)
    else:
        image_size = args.image_size or (16 if args.data == "digits" else 224)
        model = VisionTransformer(
            **parse_size(args.model, image_size=image_size),
            num_classes=len(labels),
            dropout_rate=args.dropout,
            id2label=labels,
            rngs=nnx.Rngs(args.seed),
            dtype=dtype,
            sharding=None,
        )
        processor = ImageProcessorConfig(size=(image_size, image_size))
    data_name = "digits" if args.data == "digits" else os.path.abspath(args.data)
    result = train(model, splits, cfg, args.out, processor=processor, data_name=data_name)
    if result.resumed_from:
        print(f"resumed from step {result.resumed_from}")
    if result.validation:
        print(f"validation accuracy {result.validation['accuracy']:.2%} ({result.validation['count']} images)")
    print(f"model saved to {result.model_dir}; metrics and plot in {args.out}")


def cmd_eval(args: argparse.Namespace) -> None:
    from .data.datasets import pick_split
    from .data.preprocess import ImageProcessorConfig
    from .models.registry import from_pretrained
    from .train.evaluate import evaluate

    model = from_pretrained(args.model, sharding=None)
    splits = _load_splits(args)
    name = args.split or next(s for s in ("test", "validation", "train") if s in splits)
    scores = evaluate(
        model, pick_split(splits, name), ImageProcessorConfig.for_model(model), batch_size=args.batch_size
    )
    print(f"{name}: accuracy {scores['accuracy']:.2%}  loss {scores['loss']:.4f}  ({scores['count']} images)")


def cmd_convert(args: argparse.Namespace) -> None:
    from .io.convert import convert_checkpoint

    written = convert_checkpoint(
        args.src,
        args.dst,
        to_format=args.to,
        dtype=args.dtype,
        max_shard_size=args.max_shard_size,
        overwrite=args.overwrite,
    )
    print(f"wrote {len(written)} weight file(s) to {args.dst}: {', '.join(p.name for p in written)}")


def cmd_bench(args: argparse.Namespace) -> None:
    from .train.bench import bench_jimm, bench_torch, torch_available

    kw = dict(batch=args.batch_size, image_size=args.image_size, num_classes=1000, warmup=args.warmup, iters=args.iters)
    rows = [("jimm", bench_jimm(args.model, **kw))]
    if args.torch:
        if not torch_available():
            raise ImportError("--torch needs torch and transformers: pip install torch transformers")
        rows.append(("transformers", bench_torch(args.model, **kw)))
    print(f"ViT {args.model} @ {args.image_size}px, batch {args.batch_size}, fp32")
    print(f"{'':14s}{'forward img/s':>15s}{'train img/s':>15s}")
    for name, r in rows:
        print(f"{name:14s}{args.batch_size / r['forward_s']:15.1f}{args.batch_size / r['train_step_s']:15.1f}")
    if len(rows) == 2:
        (_, a), (_, b) = rows
        print(
            f"{'jimm/torch':14s}{b['forward_s'] / a['forward_s']:14.2f}x{b['train_step_s'] / a['train_step_s']:14.2f}x"
        )


def cmd_demo(args: argparse.Namespace) -> None:
    from .train.demo import run_demo

    print("jimm demo: training a small ViT on scikit-learn's 8x8 digits (offline, CPU)")
    result = run_demo(args.out, steps=args.steps, progress=not args.quiet)
    print("\npredictions on held-out test digits (from the saved model and PNG files):")
    for (path, label, prob), truth in zip(result.predictions, result.true_labels, strict=True):
        mark = "ok" if label == truth else "WRONG"
        print(f"  {os.path.basename(path):28s} predicted {label} ({prob:.1%}), true {truth}  {mark}")
    print(f"\ntest accuracy: {result.test_accuracy:.2%} on {result.test_count} held-out digits")
    print(f"model: {result.model_dir}   plot: {result.plot}   time: {result.seconds:.0f}s")
    print(f"try: jimm predict {result.model_dir} {result.predictions[0][0]}")


def cmd_models(args: argparse.Namespace) -> None:
    from .models.catalog import table

    print(table(args.pattern))


# -- parser -----------------------------------------------------------------------------------------------------


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="'digits' (built-in) or an image folder ROOT/<class>/<image>")
    p.add_argument(
        "--val-fraction",
        type=cli_args.number(0, 1),
        default=0.1,
        help="held-out fraction when a folder has no split dirs",
    )
    p.add_argument("--seed", type=cli_args.seed, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jimm", description="Vision Transformers in JAX: predict, train, evaluate.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cli_folders.add_predict(sub)

    p = sub.add_parser("train", help="train from scratch or fine-tune; rerun the same command to resume")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--model", help="named size SIZE/PATCH: micro/4, tiny/16, small/16, base/16, large/16")
    group.add_argument("--from", dest="from_model", help="fine-tune this checkpoint (folder or hub id) on new labels")
    _data_args(p)
    p.add_argument("--out", required=True, help="run folder: checkpoints, metrics.jsonl, training.png, model/")
    p.add_argument("--image-size", type=cli_args.image_size, help="from scratch only (default 16 for digits, else 224)")
    p.add_argument("--steps", type=cli_args.positive_int, default=1000)
    p.add_argument("--batch-size", type=cli_args.positive_int, default=64)
    p.add_argument("--grad-accum", type=cli_args.positive_int, default=1, help="micro-batches per step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-steps", type=cli_args.nonneg_int, help="default: steps/10 (at most 1000)")
    fraction = cli_args.number(0, 1, high_open=False)
    p.add_argument("--min-lr-ratio", type=fraction, default=0.0, help="final lr as a fraction of --lr")
    p.add_argument("--weight-decay", type=cli_args.number(0), default=0.05)
    p.add_argument("--clip-norm", type=cli_args.number(0), default=1.0, help="0 disables")
    p.add_argument("--label-smoothing", type=cli_args.number(0, 1), default=0.0)
    p.add_argument("--head-only", action="store_true", help="train only the new classifier (a linear probe)")
    p.add_argument("--dropout", type=cli_args.number(0, 1), default=0.0, help="from scratch only")
    p.add_argument("--bf16", action="store_true", help="bf16 compute, fp32 parameters")
    p.add_argument("--shift", type=cli_args.nonneg_int, help="random translation in pixels (default 0)")
    p.add_argument("--hflip", action="store_true", help="random horizontal flips")
    p.add_argument("--log-every", type=cli_args.positive_int, default=10)
    p.add_argument("--eval-every", type=cli_args.nonneg_int, default=0, help="0: only at the end")
    p.add_argument("--checkpoint-every", type=cli_args.positive_int, default=100)
    p.add_argument("--keep-checkpoints", type=cli_args.positive_int, default=2)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("eval", help="accuracy and loss on a dataset split")
    p.add_argument("model")
    _data_args(p)
    p.add_argument("--split", help="default: test, else validation, else train")
    p.add_argument("--batch-size", type=cli_args.positive_int, default=64)
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("convert", help="pytorch_model.bin <-> safetensors (single or sharded), dtype casts")
    p.add_argument("src", help="model folder")
    p.add_argument("dst", help="output folder")
    p.add_argument("--to", choices=["safetensors", "pytorch"], default="safetensors")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--max-shard-size", default="5GB", help="e.g. 500MB; larger checkpoints are sharded")
    p.add_argument("--overwrite", action="store_true", help="replace same-named files jimm did not write in DST")
    p.set_defaults(fn=cmd_convert)

    p = sub.add_parser("bench", help="images/s for forward and training step of a named size")
    p.add_argument("--model", default="s/16")
    p.add_argument("--batch-size", type=cli_args.positive_int, default=16)
    p.add_argument("--image-size", type=cli_args.image_size, default=224)
    p.add_argument("--warmup", type=cli_args.positive_int, default=2)
    p.add_argument("--iters", type=cli_args.positive_int, default=5)
    p.add_argument("--torch", action="store_true", help="also time transformers (torch) side by side")
    p.set_defaults(fn=cmd_bench)

    cli_folders.add_features(sub)

    p = sub.add_parser("demo", help="train a small ViT on the built-in digits, then predict (offline, ~1 min)")
    p.add_argument("--out", default="jimm-demo", help="run folder (rerun to resume)")
    p.add_argument("--steps", type=cli_args.positive_int, help="override the demo's step count")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("models", help="the catalog of hub checkpoints, with parameter counts")
    p.add_argument("pattern", nargs="?", help="fnmatch pattern on catalog names, e.g. 'siglip2-*' or '*dinov3*'")
    p.set_defaults(fn=cmd_models)

    from .cli_image_text import add_commands  # zero-shot, embed

    add_commands(sub)
    from .cli_export import add_command as add_export

    add_export(sub)
    from .cli_search import add_commands as add_search_commands  # index, search

    add_search_commands(sub)
    return parser


def _describe(err: BaseException, command: str) -> str | None:
    """The one-line message for a user error, or None when `err` is not one (a bug: keep its traceback)."""
    if isinstance(err, ModuleNotFoundError) and (err.name or "").split(".")[0] in TRAIN_EXTRA_MODULES:
        return f"`jimm {command}` needs the {err.name!r} package: pip install 'jimm[train]'"
    if isinstance(err, OSError) and err.filename is not None:  # from the OS: name the path and what to do
        path = os.fsdecode(err.filename)
        if isinstance(err, FileExistsError) and not os.path.isdir(path):
            return f"{path} is a file; a folder is needed there, choose another path"
        if err.filename2 is not None:
            path += f" -> {os.fsdecode(err.filename2)}"
        hint = _OS_HINTS.get(err.errno)
        return f"{path}: {err.strerror or err}" + (f"; {hint}" if hint else "")
    if isinstance(err, USER_ERRORS):
        return str(err)
    out_of_memory = isinstance(err, MemoryError) or (
        type(err).__module__.startswith(("jax", "jaxlib")) and str(err).startswith("RESOURCE_EXHAUSTED")
    )
    if out_of_memory:
        hint = _OUT_OF_MEMORY_HINTS.get(command, "lower --batch-size (or use a smaller model or image size)")
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "out of memory"
        return f"out of memory ({reason}); {hint}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_logs()
    try:
        args.fn(args)
    except KeyboardInterrupt:
        resume = "; rerun the same command to resume from the last checkpoint" if args.command in RESUMABLE else ""
        print(f"jimm: interrupted{resume}", file=sys.stderr)
        return 130
    except Exception as err:
        message = _describe(err, args.command)
        if message is None or os.environ.get("JIMM_DEBUG"):
            raise
        print(f"jimm: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
