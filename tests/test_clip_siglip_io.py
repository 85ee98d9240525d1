"""CLIP / SigLIP files: every transformers class loads and saves both ways, strictly, with classic and v5 names;
dispatch through `jimm.from_pretrained`; configs with class defaults; sharding on 8 virtual devices.

Models here are built from files (`from_pretrained` builds abstractly: no compile) and run eagerly unscanned or
jitted once, to keep CPU time low.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import torch
import transformers as T
from flax import nnx
from image_text_fixtures import PROMPTS, hf_config, images, nchw, perturb, quiet_transformers, save_pair
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P
from safetensors.numpy import load_file, save_file

import jimm
from jimm.common import sharding as shd
from jimm.io.state import CheckpointMismatchError
from jimm.models.clip import CLIPConfig
from jimm.models.siglip import SiglipConfig

ATOL = 1e-5


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> dict:
    """A tiny transformers CLIP and SigLIP, each saved with its tokenizer and image processor."""
    out = {}
    for kind in ("clip", "siglip"):
        path = tmp_path_factory.mktemp(f"{kind}-pair")
        out[kind] = kind, save_pair(kind, path, seed=11), path
    return out


@pytest.fixture(params=["clip", "siglip"])
def saved(request, pairs):
    return pairs[request.param]


def load(path, **kwargs):
    return jimm.from_pretrained(path, scan_layers=False, **kwargs)  # eager calls run op by op, no scan retrace


def params(model) -> dict[str, np.ndarray]:
    return {".".join(map(str, k)): np.asarray(v[...]) for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def hf_load(cls, path):
    model, info = cls.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model.eval()


def same_state(a, b) -> None:
    """Two transformers models hold bit-identical tensors (so they compute the same outputs)."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name, tensor in sa.items():
        assert torch.equal(tensor, sb[name]), name


def test_pair_round_trips_both_ways(saved, tmp_path):
    """jimm -> transformers with no missing/unexpected keys and the same tensors; jimm -> jimm bit-exact."""
    kind, hf, path = saved
    model = load(path)
    model.save_pretrained(tmp_path / "ours")
    back = hf_load(T.CLIPModel if kind == "clip" else T.SiglipModel, tmp_path / "ours")
    same_state(back, hf)
    again = load(tmp_path / "ours")
    assert all(np.array_equal(a, params(again)[k]) for k, a in params(model).items())
    assert (tmp_path / "ours" / "preprocessor_config.json").read_text() == (
        path / "preprocessor_config.json"
    ).read_text()
    assert np.array_equal(again.tokenize(PROMPTS), model.tokenize(PROMPTS))  # the tokenizer files travel along
    written = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert written["architectures"] == [f"{'CLIP' if kind == 'clip' else 'Siglip'}Model"]


TOWERS = {
    "CLIPVisionModel": jimm.CLIPVisionModel,
    "CLIPVisionModelWithProjection": jimm.CLIPVisionModel,
    "CLIPTextModel": jimm.CLIPTextModel,
    "CLIPTextModelWithProjection": jimm.CLIPTextModel,
    "SiglipVisionModel": jimm.SigLIPVisionModel,
    "SiglipTextModel": jimm.SigLIPTextModel,
}
TOWER_CASES = [("clip" if name.startswith("CLIP") else "siglip", name) for name in TOWERS]


@pytest.mark.parametrize(("kind", "name"), TOWER_CASES, ids=[name for _, name in TOWER_CASES])
def test_standalone_towers_v5_names_both_ways(kind, name, pairs, tmp_path):
    """transformers 5 writes a tower it built itself without the `vision_model.`/`text_model.` prefix (and one it
    loaded with it); jimm reads both and writes the classic form (what the hub holds), which transformers loads."""
    path = pairs[kind][2]
    hf_cls = getattr(T, name)
    hf = hf_cls.from_pretrained(path).eval()  # the tower of the pair checkpoint (the rest is unused)
    hf.save_pretrained(tmp_path / "hf")
    prefix = "vision_model." if "Vision" in name else "text_model."
    model = load(tmp_path / "hf")
    assert type(model) is TOWERS[name] and model.hf_architecture == name
    if not name.endswith("WithProjection"):  # these have no prefix in transformers-v5 memory
        tensors = load_file(tmp_path / "hf" / "model.safetensors")
        save_file({k.removeprefix(prefix): v for k, v in tensors.items()}, tmp_path / "hf" / "model.safetensors")
        v5 = params(load(tmp_path / "hf"))
        assert all(np.array_equal(a, v5[k]) for k, a in params(model).items())
    model.save_pretrained(tmp_path / "ours")
    written = load_file(tmp_path / "ours" / "model.safetensors")
    assert all(n.startswith((prefix, "visual_projection", "text_projection")) for n in written)
    same_state(hf_load(hf_cls, tmp_path / "ours"), hf)
    assert all(np.array_equal(a, params(load(tmp_path / "ours"))[k]) for k, a in params(model).items())


def test_vision_model_from_a_pair_checkpoint_and_missing_towers(saved, tmp_path):
    kind, _, path = saved
    cls = jimm.CLIPVisionModel if kind == "clip" else jimm.SigLIPVisionModel
    vision = cls.from_pretrained(path, scan_layers=False)  # the text tower is skipped, the projection kept
    pair = params(load(path))
    assert all(np.array_equal(a, pair[k]) for k, a in params(vision).items())
    assert (vision.visual_projection is not None) == (kind == "clip")
    x = images(kind)
    with pytest.raises(ValueError, match="has no text tower"):
        vision.encode_text(np.zeros((1, 3), np.int32))
    with pytest.raises(ValueError, match="has no text tower"):
        vision.zero_shot([x[0]], ["cat"])
    vision.save_pretrained(tmp_path / "vision")
    pair_cls = jimm.CLIP if kind == "clip" else jimm.SigLIP
    with pytest.raises(ValueError, match=rf"holds no text tower .* loads as jimm\.{pair_cls.__name__}VisionModel"):
        pair_cls.from_pretrained(tmp_path / "vision")


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_classifier_head_saves_as_transformers_classifier(kind, tmp_path):
    """A new head on a pair checkpoint's vision tower -> `...ForImageClassification`, in both directions."""
    quiet_transformers()
    torch.manual_seed(3)
    config = hf_config(kind)
    hf_cls = T.CLIPForImageClassification if kind == "clip" else T.SiglipForImageClassification
    cls = jimm.CLIPVisionModel if kind == "clip" else jimm.SigLIPVisionModel
    perturb(hf_cls(config)).save_pretrained(tmp_path / "hf")
    labels = {0: "cat", 1: "dog", 2: "emu", 3: "yak", 4: "owl"}
    model = cls.from_pretrained(tmp_path / "hf", id2label=labels, scan_layers=False, rngs=nnx.Rngs(1))
    assert model.do_classification and model.num_classes == 5 and model.config.labels == labels
    assert model.visual_projection is None
    model.save_pretrained(tmp_path / "ours")
    back = hf_load(hf_cls, tmp_path / "ours")
    assert back.config.id2label == labels
    x = images(kind, seed=8)
    with torch.no_grad():
        logits = back(pixel_values=nchw(x)).logits.numpy()
    np.testing.assert_allclose(np.asarray(nnx.jit(lambda m, x: m(x))(model, x)), logits, atol=ATOL, rtol=0)
    again = jimm.from_pretrained(tmp_path / "ours", scan_layers=False)
    assert type(again) is cls and again.config.labels == labels
    assert all(np.array_equal(a, params(again)[k]) for k, a in params(model).items())
    reordered = dict(enumerate(["owl", "cat", "dog", "emu", "yak"]))  # the same classes, another order: rows follow
    relabelled = cls.from_pretrained(tmp_path / "ours", id2label=reordered, scan_layers=False)
    kernel = params(model)["classifier.kernel"]
    np.testing.assert_array_equal(params(relabelled)["classifier.kernel"], kernel[:, [4, 0, 1, 2, 3]])
    assert model.config.image_hw == (30, 30) if kind == "clip" else (28, 28)


def test_strict_loading_lists_every_problem_and_ignores_position_ids(saved, tmp_path):
    _, _, path = saved
    tensors = load_file(path / "model.safetensors")
    tensors["vision_model.embeddings.position_ids"] = np.arange(10)[None]  # old files: accepted, ignored
    tensors["text_model.embeddings.position_ids"] = np.arange(7)[None]
    (tmp_path / "ok").mkdir()
    save_file(tensors, tmp_path / "ok" / "model.safetensors")
    (tmp_path / "ok" / "config.json").write_text((path / "config.json").read_text())
    load(tmp_path / "ok")
    config = json.loads((path / "config.json").read_text())
    config["vision_config"]["num_hidden_layers"] = 10**9  # a corrupt depth fails before a table is built
    (tmp_path / "ok" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointMismatchError, match="asks for 1000000000 layers but the checkpoint holds 2"):
        load(tmp_path / "ok")
    (tmp_path / "ok" / "config.json").write_text((path / "config.json").read_text())
    del tensors["text_model.final_layer_norm.bias"]
    tensors["vision_model.extra.weight"] = np.zeros(3, np.float32)
    tensors["logit_scale"] = np.zeros((2, 2), np.float32)
    save_file(tensors, tmp_path / "ok" / "model.safetensors")
    with pytest.raises(CheckpointMismatchError) as err:
        load(tmp_path / "ok")
    message = str(err.value)
    assert "1 missing" in message and "text_model.final_layer_norm.bias" in message
    assert "1 unexpected" in message and "vision_model.extra.weight" in message
    assert "1 wrong shape" in message and "logit_scale: checkpoint [2, 2]" in message


def test_both_name_forms_in_one_file_is_an_error(tmp_path):
    quiet_transformers()
    hf = T.SiglipVisionModel(T.SiglipVisionConfig(hidden_size=8, intermediate_size=5, num_hidden_layers=1,
                                                  num_attention_heads=2, image_size=8, patch_size=4))  # fmt: skip
    hf.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["vision_model.post_layernorm.bias"] = tensors["post_layernorm.bias"]
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="both classic and transformers-v5 names for the same tensors"):
        load(tmp_path)


def test_minimal_hub_configs_get_class_defaults():
    """google/siglip-base-patch16-224 ships only the model types; so400m sets widths that are not multiples of 64."""
    base = SiglipConfig.from_hf_dict({"model_type": "siglip", "text_config": {"model_type": "siglip_text_model"},
                                      "vision_config": None, "architectures": ["SiglipModel"]})  # fmt: skip
    assert base == SiglipConfig()
    assert base.vision_config.hidden_act == "gelu_pytorch_tanh" and base.text_config.max_position_embeddings == 64
    so400m = {
        "model_type": "siglip",
        "text_config": {"hidden_size": 1152, "intermediate_size": 4304, "num_attention_heads": 16,
                        "num_hidden_layers": 27, "max_position_embeddings": 16},
        "vision_config": {"hidden_size": 1152, "intermediate_size": 4304, "num_attention_heads": 16,
                          "num_hidden_layers": 27, "patch_size": 14},
    }  # fmt: skip
    model = nnx.eval_shape(lambda: jimm.SigLIP.from_config(so400m, sharding=None))  # shapes only, no memory
    assert model.vision_model.blocks.layers.attn.qkv_kernel.shape == (27, 1152, 3, 16, 72)
    assert model.vision_model.blocks.layers.mlp.fc1_kernel.shape == (27, 1152, 4304)
    assert model.vision_model.pos_embed.shape == (1, 256, 1152) and model.text_model.pos_embed.shape == (16, 1152)
    openai = {"model_type": "clip", "projection_dim": 512, "logit_scale_init_value": 2.6592, "text_config_dict": None,
              "text_config": {"eos_token_id": 2, "dropout": 0.0, "do_sample": False, "id2label": {"0": "LABEL_0"},
                              "bad_words_ids": None, "architectures": None},
              "vision_config": {"hidden_act": "quick_gelu", "num_beams": 1}}  # fmt: skip
    config = CLIPConfig.from_hf_dict(openai)
    assert config.text_config.tower().pooling == "argmax" and config.vision_config.patch_size == 32
    with pytest.raises(ValueError, match=r"rope_theta=1.0 \(unknown field\)"):
        CLIPConfig.from_hf_dict({"model_type": "clip", "vision_config": {"rope_theta": 1.0}})
    with pytest.raises(ValueError, match="model_type='siglip'; jimm.CLIP reads"):
        CLIPConfig.from_hf_dict({"model_type": "siglip"})


def test_dispatch_and_bad_inputs(saved):
    kind, _, path = saved
    model = load(path)
    assert type(model) is (jimm.CLIP if kind == "clip" else jimm.SigLIP)
    limit = model.text_model.config.max_positions
    with pytest.raises(ValueError, match=f"have {limit + 1} tokens but this text tower has {limit} positions"):
        model.encode_text(np.ones((1, limit + 1), np.int32))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model.encode_text(np.ones((2, 3), np.int32), np.ones((1, 3), np.int32))
    with pytest.raises(TypeError, match="a classifier head is for vision models"):
        type(model).from_pretrained(path, num_classes=3)


# -- sharding on 8 virtual CPU devices ------------------------------------------------------------------------------

EVEN_VISION = dict(hidden_size=16, num_attention_heads=4, intermediate_size=24, num_hidden_layers=2, image_size=16,
                   patch_size=4)  # fmt: skip
EVEN_TEXT = dict(hidden_size=32, num_attention_heads=4, intermediate_size=16, num_hidden_layers=2, vocab_size=64,
                 max_position_embeddings=8)  # fmt: skip
SHARDED = [
    ("clip", (2, 4), ("data", "fsdp"), lambda a, b: shd.fsdp_sharding(data=a, fsdp=b, shard_batch=True)),
    ("siglip", (2, 4), ("dp", "model"), lambda a, b: shd.fsdp_tp_sharding(data=None, fsdp=a, tp=b, shard_batch=True)),
    ("siglip", (8,), ("batch",), lambda a: shd.data_parallel_sharding(data=a)),
]


@pytest.mark.parametrize(
    ("kind", "shape", "names", "preset"), SHARDED, ids=["clip-fsdp", "siglip-fsdp_tp", "siglip-dp"]
)
def test_both_towers_shard_under_the_presets(kind, shape, names, preset, tmp_path):
    quiet_transformers()
    torch.manual_seed(5)
    text = {**EVEN_TEXT, **({"eos_token_id": 63} if kind == "clip" else {"projection_size": 16})}
    if kind == "clip":
        hf = T.CLIPModel(T.CLIPConfig(vision_config=EVEN_VISION, text_config=text, projection_dim=8))
    else:
        hf = T.SiglipModel(T.SiglipConfig(vision_config=EVEN_VISION, text_config=text))
    perturb(hf).save_pretrained(tmp_path)
    x = np.random.RandomState(0).randn(8, 16, 16, 3).astype(np.float32)
    ids = np.random.RandomState(1).randint(0, 64, (8, 8)).astype(np.int32)
    with torch.no_grad():
        expected = hf(pixel_values=nchw(x), input_ids=torch.from_numpy(ids).long()).logits_per_image.numpy()
    spec = preset(*names)
    with jax.set_mesh(jax.make_mesh(shape, names, axis_types=(AxisType.Explicit,) * len(shape))):
        model = jimm.from_pretrained(tmp_path, sharding=spec)
        logits = nnx.jit(lambda m, x, t: m(x, t))(model, x, ids)
        text_qkv = model.text_model.blocks.layers.attn.qkv_kernel[...]
    np.testing.assert_allclose(np.asarray(logits), expected, atol=ATOL, rtol=0)
    assert logits.sharding.spec == P(spec.batch, None)  # the presets reshard the batch (shard_batch=True)
    d, n, h = spec.attn_qkv_kernel  # the original's [D, N, H] entries around our fused q/k/v axis
    assert text_qkv.sharding.spec == P(None, d, None, n, h)
