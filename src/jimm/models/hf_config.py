"""Reading HF `config.json` dicts strictly, shared by every family's config class.

Each family lists the fields it implements; `check_fields` accepts those and the bookkeeping fields below,
accepts a field it does not implement only at the value that leaves the maths unchanged, and raises one error
naming every other field (never a silent guess). Labels (`id2label` / `num_labels`) are read and written the
way transformers does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# HF fields that describe bookkeeping, training-only init or outputs: accepted by every family, not used.
IGNORED_HF_KEYS = frozenset(
    {
        "architectures",
        "transformers_version",
        "model_type",
        "torch_dtype",
        "dtype",
        "initializer_range",
        "initializer_factor",
        "problem_type",
        "_name_or_path",
        "_commit_hash",
        "_attn_implementation_autoset",
        "return_dict",
        "output_hidden_states",
        "output_attentions",
        "use_return_dict",
        "torchscript",
        "tie_word_embeddings",
        "chunk_size_feed_forward",
        "is_encoder_decoder",
        "is_decoder",
        "add_cross_attention",
        "finetuning_task",
        "tokenizer_class",
        "prefix",
        "bos_token_id",
        "pad_token_id",
        "eos_token_id",
        "sep_token_id",
        "decoder_start_token_id",
        "task_specific_params",
        "pruned_heads",
    }
)
LABEL_KEYS = frozenset({"id2label", "label2id", "num_labels"})
# What every transformers 4.x `PretrainedConfig.to_dict()` wrote (generation defaults and flags), still in many
# hub configs (e.g. the sub-configs of openai/clip-vit-base-patch32): no encoder's maths reads them.
LEGACY_PRETRAINED_KEYS = frozenset(
    {
        "use_bfloat16",
        "tf_legacy_loss",
        "cross_attention_hidden_size",
        "tie_encoder_decoder",
        "max_length",
        "min_length",
        "do_sample",
        "early_stopping",
        "num_beams",
        "num_beam_groups",
        "diversity_penalty",
        "temperature",
        "top_k",
        "top_p",
        "typical_p",
        "repetition_penalty",
        "length_penalty",
        "no_repeat_ngram_size",
        "encoder_no_repeat_ngram_size",
        "bad_words_ids",
        "num_return_sequences",
        "output_scores",
        "return_dict_in_generate",
        "forced_bos_token_id",
        "forced_eos_token_id",
        "remove_invalid_values",
        "exponential_decay_length_penalty",
        "suppress_tokens",
        "begin_suppress_tokens",
    }
)


def check_fields(
    config: Mapping[str, Any],
    implemented: Iterable[str],
    *,
    family: str,
    fixed: Mapping[str, Any] | None = None,
    ignored: Iterable[str] = (),
) -> None:
    """Raise one `ValueError` naming every field of `config` that `family` does not implement.

    `fixed` maps fields jimm does not implement to the one value it accepts for them.
    """
    implemented, ignored, fixed = set(implemented), set(ignored), dict(fixed or {})
    problems = []
    for key, value in config.items():
        if key in implemented or key in IGNORED_HF_KEYS or key in LABEL_KEYS or key in ignored:
            continue
        if key in fixed:
            if value != fixed[key]:
                problems.append(f"{key}={value!r} (only {fixed[key]!r} is supported)")
            continue
        problems.append(f"{key}={value!r} (unknown field)")
    if problems:
        raise ValueError(
            f"config.json has fields {family} does not implement: "
            + "; ".join(problems)
            + ". Remove them if they are harmless, or use a model that implements them."
        )


def read_labels(config: Mapping[str, Any], *, default_num_labels: int = 2) -> tuple[int, dict[int, str] | None]:
    """`(num_labels, id2label)` as transformers reads them; HF's placeholder names `LABEL_i` become None."""
    id2label = config.get("id2label")
    if id2label is None:
        return int(config.get("num_labels", default_num_labels)), None
    if not isinstance(id2label, Mapping):
        raise ValueError(f"config.json id2label must be an object of id -> name, got {type(id2label).__name__}")
    try:
        id2label = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError):
        raise ValueError("config.json id2label keys must be integers") from None
    num_labels = len(id2label)
    if "num_labels" in config and config["num_labels"] != num_labels:
        raise ValueError(f"config.json has num_labels={config['num_labels']} but {num_labels} id2label entries")
    if id2label == {i: f"LABEL_{i}" for i in range(num_labels)}:
        id2label = None
    return num_labels, id2label


def labels_or_placeholders(num_labels: int, id2label: dict[int, str] | None) -> dict[int, str]:
    return id2label if id2label is not None else {i: f"LABEL_{i}" for i in range(num_labels)}


def write_labels(labels: Mapping[int, str]) -> dict[str, Any]:
    """The `id2label` / `label2id` fields transformers writes."""
    id2label = {str(i): name for i, name in labels.items()}
    return {"id2label": id2label, "label2id": {name: i for i, name in labels.items()}}


__all__ = [
    "IGNORED_HF_KEYS",
    "LEGACY_PRETRAINED_KEYS",
    "check_fields",
    "labels_or_placeholders",
    "read_labels",
    "write_labels",
]
