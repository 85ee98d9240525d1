"""The catalog against transformers: every entry's parameter count at full depth (transformers on the meta device, jimm
from shapes alone, and the number recorded in the catalog agree), and every distinct architecture at its real widths
with 2 layers per tower (random non-trivial weights saved by transformers, loaded by `jimm.from_pretrained`) giving
transformers' outputs within 1e-4 relative, for one image of the size the checkpoint's own preprocessor makes (the
config's image size; DINOv2's 224 px crops, which resample its 518 px position table).

Entries whose 2-layer configs are equal share one model (55 models for 69 entries: they differ in hub,
preprocessing, tokenizer or vocabulary size only); the 2-layer models keep every width but cut text vocabularies to
4096 rows (a lookup table: the count test covers the real size). Issue 16's three bugs are covered here too: image
sizes that are not a multiple of the patch (so400m-patch14-384), `ViTModel`'s pooler (the in21k entries) and a
DINOv2 checkpoint without `mask_token`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from flax import nnx
from image_text_fixtures import perturb, quiet_transformers

import jimm
from jimm.models import catalog, factory
from jimm.models.catalog_data import ENTRIES

RTOL = 1e-4  # max |ours - theirs| <= RTOL * max |theirs|, per output


def hf_model_of(config: dict):
    """transformers' model for an entry-style config dict (its `architectures` class), random weights."""
    import transformers

    config = json.loads(json.dumps(config))
    architecture = config.pop("architectures")[0]
    return getattr(transformers, architecture)(transformers.AutoConfig.for_model(config.pop("model_type"), **config))


def hf_param_count(entry) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in hf_model_of(entry.config).parameters())


# -- the catalog itself ----------------------------------------------------------------------------------------------


def test_entries_are_unique_and_named_after_their_hub_ids():
    names = [e.name for e in ENTRIES]
    assert len(set(names)) == len(names) == len(catalog.list_models())
    assert len({e.hub_id for e in ENTRIES}) == len(ENTRIES)
    for entry in ENTRIES:
        assert entry.name == entry.hub_id.split("/")[1].lower()
        assert entry.source and entry.params > 0
        assert (entry.tokenizer is not None) == ("text_config" in entry.config), entry.name
    assert {e.family for e in ENTRIES} == set(catalog.FAMILIES)


def test_list_models_takes_fnmatch_patterns():
    assert catalog.list_models() == sorted(e.name for e in ENTRIES)
    assert jimm.list_models("dinov3-vit7b*") == ["dinov3-vit7b16-pretrain-lvd1689m"]
    siglip2 = jimm.list_models("siglip2-*")
    assert siglip2 and all(catalog.get_entry(n).family == "siglip2" for n in siglip2)
    assert jimm.list_models("CLIP-ViT-*-14-*") == jimm.list_models("clip-vit-*-14-*") != []
    assert jimm.list_models("no-such-model*") == []


def test_unknown_name_is_a_clear_error():
    assert catalog.get_entry("google/vit-base-patch16-224").name == "vit-base-patch16-224"
    with pytest.raises(ValueError, match=r"not in the jimm catalog.*dinov2-small"):
        jimm.create_model("dinov2_small")


def test_7b_is_inspected_without_allocating():
    model = nnx.eval_shape(lambda: jimm.create_model("dinov3-vit7b16-pretrain-lvd1689m"))
    leaves = jax_leaves(nnx.state(model, nnx.Param))
    assert leaves and all(not hasattr(leaf, "addressable_shards") for leaf in leaves)  # shapes only, no arrays
    assert catalog.count_params(model) == 6_716_362_752 == catalog.get_entry("dinov3-vit7b16-pretrain-lvd1689m").params


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)


@pytest.mark.parametrize("entry", [pytest.param(e, id=e.name) for e in ENTRIES])
def test_param_count_at_full_depth(entry):
    theirs = hf_param_count(entry)
    assert theirs == entry.params, f"{entry.name}: transformers counts {theirs:,}, the catalog records {entry.params:,}"
    ours = factory.abstract_param_count(entry.name)
    assert ours == theirs, f"{entry.name}: jimm builds {ours:,} parameters, transformers {theirs:,}"


# -- every distinct architecture at its real widths, 2 layers per tower, against transformers -------------------------


VOCAB = 4096  # token-table rows in the 2-layer models: a lookup, its row count changes no maths (counts use the real)


def two_layers(config: dict) -> dict:
    """`config` with 2 layers per tower (and a 4096-token vocabulary), every width as it is."""
    config = json.loads(json.dumps(config))
    for tower in (config, config.get("vision_config"), config.get("text_config")):
        if tower is not None and "num_hidden_layers" in tower:
            tower["num_hidden_layers"] = 2
    if "text_config" in config:
        config["text_config"]["vocab_size"] = min(config["text_config"]["vocab_size"], VOCAB)
    return config


def group_key(entry) -> str:
    """One parity test per architecture: entries that differ only in a native image size that is a whole number of
    patches run the same maths on more tokens (a size that is not, so400m's 384 px at patch 14, keeps its own)."""
    config = two_layers(entry.config)
    for tower in (config, config.get("vision_config")):
        size, patch = (tower or {}).get("image_size"), (tower or {}).get("patch_size")
        if isinstance(size, int) and isinstance(patch, int) and size % patch == 0:
            tower["image_size"] = "a multiple of the patch"
    return json.dumps(config, sort_keys=True)


GROUPS: dict[str, list] = {}
for _entry in ENTRIES:
    GROUPS.setdefault(group_key(_entry), []).append(_entry)


def native_size(entry) -> int:
    """The size the checkpoint's own preprocessor produces (DINOv2: 224 crops for its 518 px position table)."""
    pre = entry.preprocessing
    return pre.crop_size or pre.size["height"]


def native_image(entry) -> np.ndarray:
    size = native_size(entry)
    return np.random.RandomState(0).randn(1, size, size, 3).astype(np.float32)


def text_ids(entry) -> np.ndarray:
    text = two_layers(entry.config)["text_config"]
    length = text.get("max_position_embeddings", 64)
    return np.random.RandomState(1).randint(0, text["vocab_size"], size=(1, length)).astype(np.int32)


def reference_outputs(hf, entry) -> dict[str, np.ndarray]:
    """transformers' outputs for the entry's native-size image (and text), from one forward pass."""
    x = torch.from_numpy(native_image(entry).transpose(0, 3, 1, 2).copy())
    seen = {}

    def keep(name, field=None):
        return lambda module, args, out: seen.__setitem__(name, getattr(out, field) if field else out)

    if "text_config" in entry.config:  # the forward normalises image/text embeds: catch them before
        if entry.family in ("clip", "aimv2"):
            towers = [(hf.visual_projection, "image_embeds", None), (hf.text_projection, "text_embeds", None)]
        else:
            towers = [
                (hf.vision_model, "image_embeds", "pooler_output"),
                (hf.text_model, "text_embeds", "pooler_output"),
            ]
    elif not entry.architecture.endswith("Model"):  # a classifier: its backbone's tokens too
        towers = [(hf.base_model, "last_hidden_state", "last_hidden_state")]
    else:
        towers = []
    hooks = [module.register_forward_hook(keep(name, field)) for module, name, field in towers]
    with torch.no_grad():
        if "text_config" in entry.config:
            ids = torch.from_numpy(text_ids(entry)).long()
            mask = {}
            if entry.family == "aimv2":  # jimm's text tower is always causal; transformers' only given a mask, and
                # under SDPA only when the mask pads something (an all-ones one is dropped): eager with a mask is causal
                hf.set_attn_implementation("eager")
                mask = {"attention_mask": torch.ones_like(ids)}
            out = hf(pixel_values=x, input_ids=ids, **mask)
            seen |= {
                "last_hidden_state": out.vision_model_output.last_hidden_state,
                "logits_per_image": out.logits_per_image,
            }
        elif entry.architecture.endswith("Model"):
            out = hf(pixel_values=x)
            seen |= {"last_hidden_state": out.last_hidden_state, "pooled": out.pooler_output}
        else:
            seen["logits"] = hf(pixel_values=x).logits
    for hook in hooks:
        hook.remove()
    return {name: value.numpy() for name, value in seen.items() if value is not None}  # AIMv2 without its head


@nnx.jit
def image_text_outputs(model, x, ids):
    image, text = model.encode_image(x), model.encode_text(ids)
    return {
        "image_embeds": image,
        "last_hidden_state": model.forward_features(x),
        "text_embeds": text,
        "logits_per_image": model.logits(image, text),
    }


@nnx.jit
def vision_outputs(model, x):
    return model.forward_features(x), model(x)


def our_outputs(model, entry) -> dict[str, np.ndarray]:
    """jimm's outputs for the inputs `reference_outputs` uses, from one compiled call."""
    x = native_image(entry)
    if "text_config" in entry.config:
        return image_text_outputs(model, x, text_ids(entry))
    features, out = vision_outputs(model, x)
    if entry.family == "aimv2":  # model(x) is every patch token (the original jimm's AIMv2Model); no head here
        return {"last_hidden_state": features}
    return {"last_hidden_state": features, "pooled" if entry.architecture.endswith("Model") else "logits": out}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """`saved(entry)`: the folder of the entry's 2-layer transformers model and its outputs, made once per group."""
    quiet_transformers()
    folders: dict[str, tuple] = {}

    def make(entry):
        key = group_key(entry)
        if key not in folders:
            torch.manual_seed(0)
            hf = perturb(hf_model_of(two_layers(entry.config)))
            with torch.no_grad():  # LayerScale starts at 1.0 in transformers: make it non-trivial too
                for name, p in hf.named_parameters():
                    if "lambda1" in name:
                        p.add_(0.1 * torch.randn_like(p))
            path = tmp_path_factory.mktemp(entry.name)
            hf.save_pretrained(path)
            folders[key] = (path, reference_outputs(hf, entry))
        return folders[key]

    return make


def assert_close(ours, theirs, what: str) -> None:
    ours = np.asarray(ours)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape}, transformers {theirs.shape}"
    error, scale = float(np.max(np.abs(ours - theirs))), float(np.max(np.abs(theirs)))
    assert error <= RTOL * scale, f"{what}: max |error| {error:.3g} > {RTOL} x max |transformers| {scale:.3g}"


@pytest.mark.parametrize("entry", [pytest.param(group[0], id=group[0].name) for group in GROUPS.values()])
def test_two_layer_model_matches_transformers(entry, saved):
    path, theirs = saved(entry)
    model = jimm.from_pretrained(path)
    ours = our_outputs(model, entry)
    assert set(ours) == set(theirs)
    for name, value in theirs.items():
        assert_close(ours[name], value, f"{entry.name} {name}")


# -- names resolve to hub ids; the command line; a DINOv2 checkpoint without mask_token ------------------------------


def fake_hub_cache(folder, hub_id: str, cache):
    """`folder`'s files as the cached snapshot of `hub_id`, the layout huggingface_hub reads offline."""
    repo = cache / f"models--{hub_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / "0123456789abcdef")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef")


def test_catalog_names_load_their_hub_ids_from_the_offline_cache(saved, tmp_path):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    entry = catalog.get_entry("vit-base-patch16-224")
    folder, theirs = saved(entry)
    fake_hub_cache(folder, entry.hub_id, tmp_path)
    for model in (
        jimm.from_pretrained(entry.name, cache_dir=tmp_path),
        jimm.create_model(entry.name, pretrained=True, cache_dir=tmp_path),
    ):
        assert isinstance(model, jimm.VisionTransformer)
        assert_close(model(native_image(entry)), theirs["logits"], "logits through the hub id")
    random = jimm.create_model(entry.name)  # the full-depth architecture, random weights
    assert random.config.num_hidden_layers == 12 and random.num_classes == 1000
    with pytest.raises(FileNotFoundError, match="not in the cache"):
        jimm.from_pretrained("vit-large-patch16-224", cache_dir=tmp_path)


def test_models_command_lists_the_catalog(capsys):
    from jimm.cli import main

    assert main(["models", "dinov3-*"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "family", "params", "hub", "id"]
    assert len(lines) == 1 + len(jimm.list_models("dinov3-*")) == 8
    assert ["dinov3-vit7b16-pretrain-lvd1689m", "dinov3", "6.72B", "facebook/dinov3-vit7b16-pretrain-lvd1689m"] in [
        line.split() for line in lines
    ]
    assert main(["models", "no-such-*"]) == 2
    assert "no catalog model matches 'no-such-*'" in capsys.readouterr().err


def test_dinov2_without_mask_token_loads(saved, tmp_path):
    from safetensors.numpy import load_file, save_file

    folder, theirs = saved(catalog.get_entry("dinov2-small"))
    shutil.copytree(folder, tmp_path / "no-mask-token")
    weights = tmp_path / "no-mask-token" / "model.safetensors"
    tensors = load_file(weights)
    assert tensors.pop("embeddings.mask_token").shape == (1, 384)
    save_file(tensors, weights)
    model = jimm.from_pretrained(tmp_path / "no-mask-token")
    assert_close(model(native_image(catalog.get_entry("dinov2-small"))), theirs["pooled"], "pooled")


def test_docs_page_lists_every_entry():
    page = (Path(__file__).resolve().parents[1] / "docs" / "catalog.md").read_text(encoding="utf-8")
    assert catalog.markdown_table() in page, "docs/catalog.md is stale: paste jimm.models.catalog.markdown_table()"
