"""Reading HF `config.json` dicts strictly, shared by every family's config class.

Each family lists the fields it implements; `check_fields` accepts those and the bookkeeping fields below,
accepts a field it does not implement only at the value that leaves the maths unchanged, and raises one error
naming every other field (never a silent guess). Labels (`id2label` / `num_labels`) are read and written the
way transformers does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from ..common.vision import pair

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
# transformers' backbone fields (`*Backbone` feature-map outputs): accepted by families with a backbone class.
BACKBONE_KEYS = frozenset(
    {
        "out_features",
        "out_indices",
        "_out_features",
        "_out_indices",
        "stage_names",
        "apply_layernorm",
        "reshape_hidden_states",
        "return_class_token",
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


# The JSON types a config.json value must have, by the type of the field's default (ints are checked on build).
_JSON_TYPES: dict[type, tuple[tuple[type, ...], str]] = {
    bool: ((bool,), "true or false"),
    float: ((int, float), "a number"),
    str: ((str,), "a string"),
    type(None): ((int, float, type(None)), "a number or null"),
}


def check_types(values: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
    """Raise one `ValueError` naming every value whose JSON type does not fit its field's default."""
    problems = []
    for key, value in values.items():
        kind = type(defaults.get(key))
        if kind not in _JSON_TYPES:
            continue  # ints, sizes and nested configs: checked when the config is built
        types, described = _JSON_TYPES[kind]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            problems.append(f"{key}={value!r} (expected {described})")
    if problems:
        raise ValueError("config.json has fields of the wrong type: " + "; ".join(problems))


def check_values(owner: str, config: Any, *, positive: Iterable[str] = (), unit: Iterable[str] = ()) -> None:
    """Raise naming the field when one of `positive` is not a positive int or one of `unit` is not in [0, 1)."""
    for name in positive:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{owner}.{name} must be a positive int, got {value!r}")
    for name in unit:
        value = getattr(config, name)
        if not isinstance(value, int | float) or not 0.0 <= value < 1.0:
            raise ValueError(f"{owner}.{name} must be in [0, 1), got {value!r}")


def check_labels(owner: str, num_labels: Any, id2label: Mapping | None) -> dict[int, str] | None:
    """`id2label` with int keys, checked against `num_labels` (ids exactly 0..num_labels-1)."""
    if not isinstance(num_labels, int) or isinstance(num_labels, bool) or num_labels < 0:
        raise ValueError(f"{owner}.num_labels must be a non-negative int, got {num_labels!r}")
    if id2label is None:
        return None
    labels = {int(k): str(v) for k, v in id2label.items()}
    if sorted(labels) != list(range(num_labels)):
        raise ValueError(
            f"{owner}.id2label must have exactly the ids 0..{num_labels - 1} (num_labels={num_labels}), "
            f"got {len(labels)} ids"
        )
    return labels


def read_labels(config: Mapping[str, Any], *, default_num_labels: int = 2) -> tuple[int, dict[int, str] | None]:
    """`(num_labels, id2label)` as transformers reads them; HF's placeholder names `LABEL_i` become None."""
    id2label = config.get("id2label")
    if id2label is None:
        return int(config.get("num_labels", default_num_labels)), None
    if not (isinstance(id2label, Mapping) and all(isinstance(v, str) for v in id2label.values())):
        raise ValueError(f"config.json id2label must map ids to label names, got {id2label!r:.200}")
    try:
        id2label = {int(k): v for k, v in id2label.items()}
    except (TypeError, ValueError):
        raise ValueError(f"config.json id2label keys must be integer ids, got {list(id2label)!r:.200}") from None
    num_labels = len(id2label)
    if "num_labels" in config and config["num_labels"] != num_labels:
        raise ValueError(f"config.json has num_labels={config['num_labels']!r} but {num_labels} id2label entries")
    if id2label == {i: f"LABEL_{i}" for i in range(num_labels)}:
        id2label = None
    return num_labels, id2label


def labels_or_placeholders(num_labels: int, id2label: dict[int, str] | None) -> dict[int, str]:
    return id2label if id2label is not None else {i: f"LABEL_{i}" for i in range(num_labels)}


def write_labels(labels: Mapping[int, str]) -> dict[str, Any]:
    """The `id2label` / `label2id` fields transformers writes."""
    id2label = {str(i): name for i, name in labels.items()}
    return {"id2label": id2label, "label2id": {name: i for i, name in labels.items()}}


class LabelledConfig:
    """What the frozen config dataclasses with `num_labels` / `id2label` share.

    A dataclass subclass keeps this hash only with `__hash__ = LabelledConfig.__hash__` in its body: dataclasses
    write their own, which fails on the id2label dict.
    """

    def __hash__(self) -> int:  # id2label is a dict; hash its items so the config can be static jit metadata
        fields = tuple(getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "id2label")
        return hash((fields, tuple(sorted(self.id2label.items())) if self.id2label else None))

    @property
    def labels(self) -> dict[int, str]:
        return labels_or_placeholders(self.num_labels, self.id2label)

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)


class PatchGridConfig(LabelledConfig):
    """A labelled config with `image_size` and `patch_size` fields (ViT, DINOv2, DINOv3)."""

    @property
    def image_hw(self) -> tuple[int, int]:
        return pair(self.image_size, "image_size")

    @property
    def patch_hw(self) -> tuple[int, int]:
        return pair(self.patch_size, "patch_size")

    @property
    def grid_hw(self) -> tuple[int, int]:
        (ih, iw), (ph, pw) = self.image_hw, self.patch_hw
        return ih // ph, iw // pw


__all__ = [
    "BACKBONE_KEYS",
    "IGNORED_HF_KEYS",
    "LEGACY_PRETRAINED_KEYS",
    "LabelledConfig",
    "PatchGridConfig",
    "check_fields",
    "check_labels",
    "check_types",
    "check_values",
    "labels_or_placeholders",
    "pair",
    "read_labels",
    "write_labels",
]
