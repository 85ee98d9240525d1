"""Compatibility: the original jimm's public names, module paths, sharding spec classes and helpers, attention
functions with `causal=`, `Transformer` / `TransformerEncoder`, and the autotuning API (see compat_support)."""

from __future__ import annotations

import dataclasses
import importlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from compat_support import ATOL, MESH_KINDS, call, loaded, make_mesh, put, saved_models, using
from flax import nnx
from jax.sharding import PartitionSpec as P

import jimm

# The original 0.4.0's `jimm.__all__` (AIMv2 arrived later, on master).
ORIGINAL_ALL = [
    "tokamax_attention",
    "make_tokamax_attention",
    "autotune",
    "cached_autotune",
    "autotuned_fn",
    "load_autotune_result",
    "AutotuningResult",
    "VisionTransformer",
    "DINOv2Model",
    "DINOv2Sharding",
    "DINOv3Model",
    "DINOv3Sharding",
    "CLIP",
    "CLIPTextModel",
    "CLIPVisionModel",
    "SigLIP",
    "SigLIPTextModel",
    "SigLIPVisionModel",
]

# module -> names the original's code, tests and examples import from it
MODULES = {
    "jimm.models": ["VisionTransformer", "CLIP", "SigLIP", "DINOv2Model", "DINOv2Sharding", "DINOv3Sharding"],
    "jimm.models.vit": ["VisionTransformer"],
    "jimm.models.clip": ["CLIP", "CLIPTextModel", "CLIPVisionModel"],
    "jimm.models.siglip": ["SigLIP", "SigLIPTextModel", "SigLIPVisionModel"],
    "jimm.models.dinov2": ["DINOv2Model", "DINOv2Sharding"],
    "jimm.models.dinov3": ["DINOv3Model", "DINOv3Sharding"],
    "jimm.models.vit.vit_model": ["VisionTransformer"],
    "jimm.models.clip.clip_model": ["CLIP", "CLIPTextModel", "CLIPVisionModel"],
    "jimm.models.siglip.siglip_model": ["SigLIP", "SigLIPTextModel", "SigLIPVisionModel"],
    "jimm.models.dinov2.dinov2_model": ["DINOv2Model"],
    "jimm.models.dinov3.dinov3_model": ["DINOv3Model"],
    "jimm.models.vit.sharding": ["ViTSharding"],
    "jimm.models.clip.sharding": ["CLIPSharding"],
    "jimm.models.siglip.sharding": ["SigLIPSharding"],
    "jimm.models.dinov2.sharding": ["DINOv2Sharding"],
    "jimm.models.dinov3.sharding": ["DINOv3Sharding"],
    "jimm.common.sharding": [
        "ShardingSpec",
        "NoSharding",
        "sharding_of",
        "named_sharding_like",
        "replicated_sharding",
        "reshard_like",
    ],
    "jimm.common.tokamax_attention": ["tokamax_attention_fn", "make_tokamax_attention"],
    "jimm.common.autotuning": [
        "AutotuningResult",
        "autotune",
        "autotuned_fn",
        "cached_autotune",
        "load_autotune_result",
    ],
    "jimm.common.transformer": ["Transformer", "TransformerEncoder"],
}

# The original's ShardingSpec protocol: one field per parameter role.
SPEC_FIELDS = {
    "attn_qkv_kernel": 3,
    "attn_qkv_bias": 2,
    "attn_out_kernel": 3,
    "attn_out_bias": 1,
    "mlp_up_kernel": 2,
    "mlp_up_bias": 1,
    "mlp_down_kernel": 2,
    "mlp_down_bias": 1,
    "layernorm": 1,
    "patch_conv_kernel": 4,
    "patch_conv_bias": 1,
    "embed": 2,
    "pos_embed_3d": 3,
    "pos_embed_2d": 2,
    "vision_pos_id": 2,
    "text_pos_embed": 2,
    "cls_token": 3,
    "probe_token": 3,
    "proj_kernel": 2,
    "proj_bias": 1,
    "layer_scale": 1,
}
SPEC_CLASSES = {
    "NoSharding": "jimm.common.sharding",
    "ViTSharding": "jimm.models.vit.sharding",
    "CLIPSharding": "jimm.models.clip.sharding",
    "SigLIPSharding": "jimm.models.siglip.sharding",
    "DINOv2Sharding": "jimm.models.dinov2.sharding",
    "DINOv3Sharding": "jimm.models.dinov3.sharding",
}


@pytest.mark.parametrize("name", ORIGINAL_ALL)
def test_top_level_name(name):
    namespace: dict = {}
    exec("from jimm import *", namespace)
    assert name in namespace, f"`from jimm import *` lacks {name}"


@pytest.mark.parametrize("module, names", MODULES.items(), ids=list(MODULES))
def test_module_path(module, names):
    mod = importlib.import_module(module)
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, f"{module} lacks {missing}"


@pytest.mark.parametrize("name", SPEC_CLASSES)
def test_sharding_spec_class_fields_and_replace(name):
    """A frozen dataclass with the original's 21 fields (tuples of axis names), customised with `replace`."""
    cls = getattr(importlib.import_module(SPEC_CLASSES[name]), name)
    spec = cls()
    for field, rank in SPEC_FIELDS.items():
        value = getattr(spec, field)
        assert len(tuple(value)) == rank, (field, value)
    custom = dataclasses.replace(spec, attn_qkv_kernel=("custom", None, None))
    assert tuple(custom.attn_qkv_kernel) == ("custom", None, None) and custom.layernorm == spec.layernorm
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.layernorm = (None,)


@pytest.mark.parametrize("mesh_kind", MESH_KINDS)
@pytest.mark.parametrize("as_class", [True, False], ids=["class", "instance"])
def test_sharding_spec_passed_as_class_or_instance(mesh_kind, as_class):
    """The original's defaults are the spec classes themselves; users pass a class or an instance."""
    from jimm.models.vit.sharding import ViTSharding

    sharding = ViTSharding if as_class else dataclasses.replace(ViTSharding(), proj_kernel=(None, None))
    mesh = make_mesh(mesh_kind)
    x = put(np.random.RandomState(0).randn(8, 16, 16, 3).astype(np.float32), mesh)
    with using(mesh):
        model = jimm.VisionTransformer(
            num_classes=3, img_size=16, patch_size=8, num_layers=1, num_heads=1, mlp_dim=256, hidden_size=64,
            sharding=sharding, rngs=nnx.Rngs(0),
        )  # fmt: skip
        model.eval()
        assert nnx.jit(lambda m, x: m(x))(model, x).shape == (8, 3)


def test_sharding_helpers_under_an_explicit_mesh():
    """`sharding_of`, `named_sharding_like`, `replicated_sharding(reference)` and `reshard_like` on traced values."""
    from jimm.common.sharding import named_sharding_like, replicated_sharding, reshard_like, sharding_of

    mesh = make_mesh("explicit")
    x = put(np.ones((8, 4), np.float32), mesh)
    seen = {}

    @jax.jit
    def f(x):
        seen["of"] = sharding_of(x).spec
        seen["like"] = named_sharding_like(x, (None, None)).spec
        seen["replicated"] = replicated_sharding(x).spec
        y = jax.sharding.reshard(x, P())
        seen["reshard_like"] = jax.typeof(reshard_like(y, x)).sharding.spec
        return x

    with using(mesh):
        f(x)
    assert seen == {
        "of": P("data", None),
        "like": P(None, None),
        "replicated": P(None, None),
        "reshard_like": P("data", None),
    }


def _qkv(batch=8, tokens=16, heads=2, dim=32):
    rs = np.random.RandomState(0)
    return [rs.randn(batch, tokens, heads, dim).astype(np.float32) for _ in range(3)]


def _reference(q, k, v, causal):
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    if causal:
        logits = np.where(np.tril(np.ones((q.shape[1], k.shape[1]), bool)), logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    return np.einsum("bnts,bsnh->btnh", w / w.sum(-1, keepdims=True), v)


@pytest.mark.parametrize("mesh_kind", MESH_KINDS)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_tokamax_attention_functions_take_causal(mesh_kind, causal):
    """`jimm.tokamax_attention(q, k, v, causal=...)`, `make_tokamax_attention(implementation=...)` and the
    original's module `jimm.common.tokamax_attention`, all [B, T, N, H]."""
    from jimm.common.tokamax_attention import make_tokamax_attention, tokamax_attention_fn

    q, k, v = _qkv()
    want = _reference(q, k, v, causal)
    mesh = make_mesh(mesh_kind)
    fns = {
        "tokamax_attention": lambda q, k, v: jimm.tokamax_attention(q, k, v, causal=causal, implementation="xla"),
        "make_tokamax_attention": lambda q, k, v: jimm.make_tokamax_attention(implementation=["xla"])(
            q, k, v, causal=causal
        ),
        "module": lambda q, k, v: make_tokamax_attention("xla")(q, k, v, causal=causal),
        "module_fn": lambda q, k, v: tokamax_attention_fn(
            q, k, v, causal=causal, implementation=["xla_chunked", "xla"]
        ),
    }
    with using(mesh):
        args = [put(a, mesh) for a in (q, k, v)]
        for name, fn in fns.items():
            np.testing.assert_allclose(np.asarray(jax.jit(fn)(*args)), want, atol=1e-5, err_msg=name)


def original_contract_attention(query, key, value, bias=None, mask=None, *, causal=False, **_):
    """A user's attention_fn written to the original's contract: it honours `causal=` and ignores `mask`."""
    return jax.nn.dot_product_attention(query, key, value, is_causal=causal)


@pytest.mark.parametrize("mesh_kind", MESH_KINDS)
@pytest.mark.parametrize("case", ["clip_text", "vit"])
def test_user_attention_fn_gets_causal_from_the_text_tower(case, mesh_kind):
    """The original passes `causal=True` to a custom attention_fn in CLIP's text tower (its mask is not passed);
    a function that relies on it must still give transformers' outputs."""
    saved = saved_models()
    family, class_name, _ = {"clip_text": ("clip", "CLIPTextModel", None), "vit": ("vit", "VisionTransformer", None)}[
        case
    ]
    mesh = make_mesh(mesh_kind)
    with using(mesh):
        model = getattr(jimm, class_name).from_pretrained(
            saved.dirs[family], rngs=nnx.Rngs(0), attention_fn=original_contract_attention
        )
        model.eval()
        out = nnx.jit(call(case))(model, put(saved.images, mesh), put(saved.tokens, mesh))
    np.testing.assert_allclose(np.asarray(out), saved.refs[case], atol=ATOL, rtol=1e-3)


@pytest.mark.parametrize("mesh_kind", MESH_KINDS)
@pytest.mark.parametrize("name", ["Transformer", "TransformerEncoder"])
def test_transformer_gradient_checkpointing_matches_eager(name, mesh_kind):
    """test_transformer.py: build with and without checkpointing, copy the Params across, same outputs."""
    from jimm.common import transformer

    cls = getattr(transformer, name)
    layers = {"num_layers": 2} if name == "Transformer" else {}
    x = jnp.asarray(np.random.RandomState(0).randn(2, 4, 8).astype(np.float32))
    run = nnx.jit(lambda m, x: m(x))
    with using(make_mesh(mesh_kind)):
        sizes = dict(hidden_size=8, mlp_dim=16, num_heads=2, **layers)
        eager = cls(**sizes, use_gradient_checkpointing=False, rngs=nnx.Rngs(0))
        ckpt = cls(**sizes, use_gradient_checkpointing=True, rngs=nnx.Rngs(1))
        assert not np.allclose(np.asarray(run(eager, x)), np.asarray(run(ckpt, x)), atol=1e-3)  # different weights
        nnx.update(ckpt, nnx.state(eager, nnx.Param))
        np.testing.assert_allclose(np.asarray(run(ckpt, x)), np.asarray(run(eager, x)), atol=1e-6)
        assert run(eager, x).shape == x.shape
        grads = nnx.jit(nnx.grad(lambda m, x: jnp.sum(m(x) ** 2)))(ckpt, x)
        assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("mesh_kind", MESH_KINDS)
def test_autotune_on_cpu_gives_an_empty_result(mesh_kind, tmp_path, caplog):
    """The original's autotuning calls on a device with nothing to tune: an empty result usable as a context
    manager, saved and loaded; `cached_autotune` None; `autotuned_fn` runs the function unchanged."""
    model = loaded("vit", mesh_kind)
    mesh = make_mesh(mesh_kind)
    saved = saved_models()

    @nnx.jit
    def forward(model, image):
        return model(image)

    with using(mesh):
        image = put(saved.images, mesh)
        want = np.asarray(forward(model, image))
        with caplog.at_level("INFO"):
            result = jimm.autotune(forward, model, image, save_path=tmp_path / "tuned.json")
        assert isinstance(result, jimm.AutotuningResult) and result.data == ()
        assert any("nothing to tune" in r.getMessage() for r in caplog.records)
        with result:
            np.testing.assert_allclose(np.asarray(forward(model, image)), want, atol=1e-6)
        assert json.loads((tmp_path / "tuned.json").read_text())["data"] == []
        assert jimm.load_autotune_result(tmp_path / "tuned.json") == result
        assert jimm.cached_autotune(forward, model, image, cache_dir=tmp_path / "cache") is None
        tuned = jimm.autotuned_fn(forward, model, image, cache_dir=tmp_path / "cache")
        np.testing.assert_allclose(np.asarray(tuned(model, image)), want, atol=1e-6)
