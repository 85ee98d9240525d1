"""`VisionTransformer.from_pretrained` / `save_pretrained`: ViT's layouts and head rules over the shared loader.

Any supported layout (HF, timm, vit_jax / big_vision npz; see `formats/`) is presented under classic HF
names, checked strictly against the ViT name table (`names.py`) and streamed onto the model's shardings
(`jimm.models.loading`). Saving writes transformers' format through the atomic folder save (`jimm.io.save`).
"""

from __future__ import annotations

import json
import logging
import os

from flax import nnx

from ...common.transformer import default_kernel_init
from ...io.resolve import CONFIG, PREPROCESSOR
from ...io.save import save_model_folder
from ...io.state import CheckpointMismatchError, tensors_to_save
from ..loading import check_depth, decide_head, fresh_params_of, head_permutation, load_model, permute_rows
from ..views import Renamed
from .config import ViTConfig
from .names import LAYERS, POOLER, classic_name, head_name, model_prefix, name_table

logger = logging.getLogger(__name__)


def load_pretrained(
    cls,
    name_or_path,
    *,
    prefer_pytorch: bool,
    rngs: nnx.Rngs | None,
    dtype,
    param_dtype,
    sharding,
    use_gradient_checkpointing: bool,
    attention_fn,
    num_classes: int | None,
    id2label: dict[int, str] | None,
    do_classification: bool | None,
    revision: str | None,
    token: str | bool | None,
    cache_dir,
    remat_policy: str | None = None,
    scan_layers: bool = True,
    config: ViTConfig | str | None = None,
    img_size: int | tuple[int, int] | None = None,
):
    """Strictly load a ViT checkpoint (HF, timm or npz layout), streaming each tensor onto its target sharding."""
    from .formats import ResampledPosEmbed
    from .formats.detect import open_model

    source = os.fspath(name_or_path)
    checkpoint, config, preprocessor, _ = open_model(
        name_or_path, config=config, prefer_pytorch=prefer_pytorch, revision=revision, token=token, cache_dir=cache_dir
    )
    with checkpoint:
        view = Renamed(checkpoint, classic_name)
        if img_size is not None:  # resample once at load time: the saved config then records the new size
            old_grid = config.grid_hw
            config = config.replace(image_size=tuple(img_size) if isinstance(img_size, list | tuple) else img_size)
            pos_prefix = 0 if config.no_embed_class else config.num_prefix_tokens
            pos_name = next((n for n in view.entries() if n.endswith("embeddings.position_embeddings")), None)
            if pos_name is not None and config.grid_hw != old_grid:
                view = ResampledPosEmbed(
                    view, pos_name, old_grid, config.grid_hw, pos_prefix, config.pos_embed_antialias
                )
        entries = view.entries()
        check_depth(entries, r"(?:^|\.)encoder\.layer\.(\d+)\.", config.num_hidden_layers, source=source)
        prefix = next((p for p in ("vit.", "deit.") if any(name.startswith(p) for name in entries)), "")
        head = entries.get(head_name(config))
        stored_classes = head[0][0] if head is not None and len(head[0]) == 2 else None
        stored_labels = config.id2label
        config, do_classification, head_from_checkpoint = decide_head(
            config,
            stored_classes,
            num_classes=num_classes,
            id2label=id2label,
            do_classification=do_classification,
            source=source,
        )
        has_pooler = any(POOLER.match(name) for name in entries)
        if config.add_pooling_layer and (do_classification or not has_pooler):  # a classifier, or a pooler-less save
            config = config.replace(add_pooling_layer=False)
        table = name_table(config, prefix=prefix, with_head=head_from_checkpoint)
        if head_from_checkpoint:
            heads = [s.name for s in table if s.param[0] in ("classifier", "classifier_dist")]
            table = permute_rows(table, heads, head_permutation(stored_labels, config.id2label))
        ignored = set() if config.add_pooling_layer else {name for name in entries if POOLER.match(name)}
        if not head_from_checkpoint:
            heads = ("classifier.", "cls_classifier.", "distillation_classifier.")
            ignored |= {name for name in entries if name.startswith(heads)}
        if has_pooler and not config.add_pooling_layer:
            logger.info("%s: skipped ViTModel's pooler (dense+tanh): this model is not a ViTModel", source)

        def new_heads(model_rngs: nnx.Rngs) -> dict:
            out = {}
            for attr in ("classifier", "classifier_dist") if config.distilled else ("classifier",):
                head = nnx.Linear(
                    config.hidden_size, config.num_labels, kernel_init=default_kernel_init, rngs=model_rngs
                )
                out |= fresh_params_of(head, (attr,))
            return out

        build_kwargs = dict(
            config=config,
            dtype=dtype,
            param_dtype=param_dtype,
            sharding=sharding,
            use_gradient_checkpointing=use_gradient_checkpointing,
            attention_fn=attention_fn,
            do_classification=do_classification,
            remat_policy=remat_policy,
            scan_layers=scan_layers,
        )
        model = load_model(
            cls,
            build_kwargs,
            table,
            view,
            source=source,
            layers=LAYERS,
            rngs=rngs,
            ignored=ignored,
            fresh_params=new_heads if do_classification and not head_from_checkpoint else None,
        )
    model.preprocessor_json = preprocessor.read_text(encoding="utf-8") if preprocessor and img_size is None else None
    return model


DEFAULT_PREPROCESSOR = {
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "ViTImageProcessor",
    "image_std": [0.5, 0.5, 0.5],
    "resample": 2,
    "rescale_factor": 1 / 255,
}


def save_pretrained(model, save_directory, *, max_shard_size: int | str = "5GB", overwrite: bool = False) -> None:
    """Write transformers' ViT / DeiT format as one atomic save (see `jimm.io.saved`)."""
    config: ViTConfig = model.config
    with_head = model.do_classification
    table = name_table(config, prefix=model_prefix(config) if with_head else "", with_head=with_head)
    tensors = tensors_to_save(model, table, LAYERS)
    family = "DeiT" if config.distilled else "ViT"
    head = "ForImageClassificationWithTeacher" if config.distilled else "ForImageClassification"
    hf_config = config.to_hf_dict(architecture=family + (head if with_head else "Model"))
    hf_config["dtype"] = {"bfloat16": "bfloat16", "float16": "float16"}.get(tensors[0][2].name, "float32")
    preprocessor = getattr(model, "preprocessor_json", None)
    if preprocessor is None:
        h, w = config.image_hw
        preprocessor = json.dumps({**DEFAULT_PREPROCESSOR, "size": {"height": h, "width": w}}, indent=2)
    save_model_folder(
        save_directory,
        tensors,
        json_files={CONFIG: hf_config},
        other_files={PREPROCESSOR: preprocessor},
        max_shard_size=max_shard_size,
        overwrite=overwrite,
    )


__all__ = ["CheckpointMismatchError", "load_pretrained", "save_pretrained"]
