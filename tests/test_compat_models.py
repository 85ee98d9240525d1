"""Compatibility: every family loaded, built from a config, saved and reloaded the way the original jimm's tests do,
under an Auto mesh, an Explicit mesh and no mesh (see compat_support for how to run this against the original)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from compat_support import (
    ATOL,
    CASES,
    MESH_KINDS,
    call,
    loaded,
    make_mesh,
    model_class,
    put,
    saved_models,
    using,
)
from flax import nnx
from jax.sharding import PartitionSpec as P

import jimm


def _forward(case: str):
    return nnx.jit(call(case))


@pytest.mark.parametrize("mesh_kind", MESH_KINDS)
@pytest.mark.parametrize("case", CASES)
def test_from_pretrained_matches_transformers(case, mesh_kind):
    """`Class.from_pretrained(path, rngs=nnx.Rngs(0))`, inputs sharded on `data`, a forward under `nnx.jit`."""
    saved = saved_models()
    model = loaded(case, mesh_kind)
    mesh = make_mesh(mesh_kind)
    with using(mesh):
        out = _forward(case)(model, put(saved.images, mesh), put(saved.tokens, mesh))
    np.testing.assert_allclose(np.asarray(out), saved.refs[case], atol=ATOL, rtol=1e-3)
    if mesh_kind == "explicit":  # the original's sharding assertion: batch stays on `data`, nothing else sharded
        assert out.sharding.spec == P("data", None), out.sharding.spec


@pytest.mark.parametrize("mesh_kind", MESH_KINDS)
@pytest.mark.parametrize("case", ["vit", "clip", "clip_text", "siglip", "dinov3"])
def test_save_pretrained_round_trip(case, mesh_kind, tmp_path):
    """test_checkpointing's pattern: save to `<tmp>/checkpoint`, reload, same outputs to 1e-6."""
    saved = saved_models()
    model = loaded(case, mesh_kind)
    mesh = make_mesh(mesh_kind)
    x, t = saved.images, saved.tokens
    with using(mesh):
        before = np.asarray(call(case)(model, x, t))
        path = tmp_path / "checkpoint"
        model.save_pretrained(str(path))
        assert (path / "model.safetensors").exists() and (path / "config.json").exists()
        reloaded = model_class(case).from_pretrained(str(path), rngs=nnx.Rngs(42))
        reloaded.eval()
        after = np.asarray(call(case)(reloaded, x, t))
    np.testing.assert_allclose(after, before, atol=1e-6)


@pytest.mark.parametrize("case, jit", [("vit", jax.jit), ("clip", nnx.jit), ("siglip", jax.jit)])
@pytest.mark.parametrize("mesh_kind", MESH_KINDS)
def test_load_inside_jit_with_sharding_constraint(case, jit, mesh_kind):
    """The original's `create_model()`: load inside `jax.jit` / `nnx.jit`, constrain the state to its partition
    specs, return the model; run `with mesh:` as its tests do. With no mesh (which the original cannot run) the
    constraint line is left out: jax itself refuses PartitionSpecs without a mesh."""
    saved = saved_models()
    cls, folder = model_class(case), saved.dirs[CASES[case][0]]
    mesh = make_mesh(mesh_kind)

    @jit
    def create_model():
        model = cls.from_pretrained(folder, rngs=nnx.Rngs(0))
        if mesh is not None:
            state = nnx.state(model)
            nnx.update(model, jax.lax.with_sharding_constraint(state, nnx.get_partition_spec(state)))
        return model

    with using(mesh):
        if mesh is None:
            model = create_model()
        else:
            with mesh:
                model = create_model()
        model.eval()
        out = _forward(case)(model, put(saved.images, mesh), put(saved.tokens, mesh))
    np.testing.assert_allclose(np.asarray(out), saved.refs[case], atol=ATOL, rtol=1e-3)


def _ones_image(size: int, batch: int = 1):
    return jnp.ones((batch, size, size, 3))


@pytest.mark.parametrize("mesh_kind", MESH_KINDS)
def test_vit_from_config(mesh_kind):
    saved = saved_models()
    config = saved.config("vit")
    with using(make_mesh(mesh_kind)):
        model = jimm.VisionTransformer.from_config(config, rngs=nnx.Rngs(0))
        out = model(_ones_image(config["image_size"]))
    assert out.shape == (1, len(config["id2label"]))


@pytest.mark.parametrize("mesh_kind", MESH_KINDS)
def test_clip_from_config(mesh_kind):
    saved = saved_models()
    config = saved.config("clip")
    vision, text = config["vision_config"], config["text_config"]
    ids = jnp.ones((2, text["max_position_embeddings"]), dtype=jnp.int32)
    with using(make_mesh(mesh_kind)):
        assert jimm.CLIP.from_config(config, rngs=nnx.Rngs(0))(_ones_image(vision["image_size"]), ids).shape == (1, 2)
        tower = jimm.CLIPVisionModel.from_config(config, rngs=nnx.Rngs(0))
        assert tower(_ones_image(vision["image_size"]), do_projection=True).shape == (1, text["hidden_size"])
        assert tower(_ones_image(vision["image_size"]), do_projection=False).shape == (1, vision["hidden_size"])
        text_tower = jimm.CLIPTextModel.from_config(config, rngs=nnx.Rngs(0))
        assert text_tower(ids, do_projection=True).shape == (2, text["hidden_size"])


@pytest.mark.parametrize("mesh_kind", MESH_KINDS)
def test_siglip_from_config(mesh_kind):
    saved = saved_models()
    config = saved.config("siglip")
    ids = jnp.ones((2, config["text_config"]["max_position_embeddings"]), dtype=jnp.int32)
    with using(make_mesh(mesh_kind)):
        model = jimm.SigLIP.from_config(config, rngs=nnx.Rngs(0))
        assert model(_ones_image(config["vision_config"]["image_size"]), ids).shape == (1, 2)


@pytest.mark.parametrize("mesh_kind", MESH_KINDS)
def test_dinov2_from_config(mesh_kind):
    saved = saved_models()
    config = saved.config("dinov2")
    with using(make_mesh(mesh_kind)):
        model = jimm.DINOv2Model.from_config(config, rngs=nnx.Rngs(0))
        model.eval()
        assert model(_ones_image(config["image_size"])).shape == (1, config["hidden_size"])


# test_dinov3.py's hand-written config (no model_type), at tiny width
DINOV3 = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=1,
    intermediate_size=256,
    image_size=32,
    patch_size=8,
    num_register_tokens=4,
    rope_theta=100.0,
    layerscale_value=1.0,
    hidden_act="gelu",
    use_gated_mlp=False,
)


@pytest.mark.parametrize("mesh_kind", MESH_KINDS)
@pytest.mark.parametrize("gated", [False, True], ids=["mlp", "gated_mlp"])
def test_dinov3_from_config_sizes_and_checkpointing(mesh_kind, gated):
    """test_dinov3's from_config, variable image size, bad image size and gradient checkpointing cases."""
    config = {**DINOV3, "use_gated_mlp": True, "hidden_act": "silu"} if gated else DINOV3
    with using(make_mesh(mesh_kind)):
        model = jimm.DINOv3Model.from_config(config, rngs=nnx.Rngs(0))
        model.eval()
        for h, w in [(24, 40), (40, 40), (32, 32)]:
            assert model(jnp.ones((1, h, w, 3))).shape == (1, 64)
        # The original refuses a size that is not a multiple of the patch; ours follows transformers' VALID patch
        # convolution (issue 16): the trailing pixels that make no whole patch are dropped.
        odd = jnp.asarray(np.random.RandomState(1).randn(1, 33, 32, 3).astype(np.float32))
        np.testing.assert_allclose(np.asarray(model(odd)), np.asarray(model(odd[:, :32])), atol=1e-6)
        with pytest.raises(ValueError):
            model(jnp.ones((1, 6, 32, 3)))  # less than one patch (8 px)
        checkpointed = jimm.DINOv3Model.from_config(config, use_gradient_checkpointing=True, rngs=nnx.Rngs(1))
        nnx.update(checkpointed, nnx.state(model))
        checkpointed.eval()
        x = jnp.asarray(np.random.RandomState(0).randn(1, 32, 32, 3).astype(np.float32))
        np.testing.assert_allclose(np.asarray(checkpointed(x)), np.asarray(model(x)), atol=1e-5)


@pytest.mark.parametrize("mesh_kind", MESH_KINDS)
def test_dinov3_save_pretrained_tensor_names(mesh_kind, tmp_path):
    """test_dinov3 reads the saved file back with safetensors and checks transformers' tensor names."""
    from safetensors.numpy import load_file

    config = {**DINOV3, "use_gated_mlp": True, "hidden_act": "silu"}
    with using(make_mesh(mesh_kind)):
        model = jimm.DINOv3Model.from_config(config, rngs=nnx.Rngs(0))
        model.eval()
        x = jnp.asarray(np.random.RandomState(0).randn(1, 32, 32, 3).astype(np.float32))
        before = np.asarray(model(x))
        model.save_pretrained(str(tmp_path))
        saved_tensors = load_file(str(tmp_path / "model.safetensors"))
        for name in ("gate_proj", "up_proj", "down_proj"):
            assert f"layer.0.mlp.{name}.weight" in saved_tensors
        assert saved_tensors["layer.0.attention.q_proj.weight"].shape == (64, 64)
        reloaded = jimm.DINOv3Model.from_pretrained(str(tmp_path), rngs=nnx.Rngs(0))
        reloaded.eval()
        np.testing.assert_allclose(np.asarray(reloaded(x)), before, atol=1e-5)


def test_models_re_exported_from_jimm_models():
    """`from jimm.models import CLIP` (the original's examples) gives the same classes as the top level."""
    import jimm.models as models

    for name in ("VisionTransformer", "CLIP", "SigLIP", "DINOv2Model", "DINOv3Model"):
        assert getattr(models, name) is getattr(jimm, name)


@pytest.mark.parametrize("mesh_kind", MESH_KINDS)
def test_batch_of_one_under_a_mesh_is_not_sharded(mesh_kind):
    """The original's from_config tests call a model on one image under the 8-device mesh: the batch simply
    stays unsharded."""
    saved = saved_models()
    model = loaded("vit", mesh_kind)
    with using(make_mesh(mesh_kind)):
        out = model(jnp.asarray(saved.images[:1]))
    np.testing.assert_allclose(np.asarray(out), saved.refs["vit"][:1], atol=ATOL, rtol=1e-3)


@pytest.mark.parametrize("mesh_kind", MESH_KINDS)
def test_from_pretrained_use_pytorch(mesh_kind, tmp_path):
    """The examples' `from_pretrained(..., use_pytorch=True)`: read `pytorch_model.bin` instead of safetensors."""
    import shutil

    import torch

    saved = saved_models()
    torch.save(saved.hf["vit"].state_dict(), tmp_path / "pytorch_model.bin")
    shutil.copy(f"{saved.dirs['vit']}/config.json", tmp_path / "config.json")
    mesh = make_mesh(mesh_kind)
    with using(mesh):
        model = jimm.VisionTransformer.from_pretrained(str(tmp_path), use_pytorch=True, rngs=nnx.Rngs(0))
        model.eval()
        out = _forward("vit")(model, put(saved.images, mesh), None)
    np.testing.assert_allclose(np.asarray(out), saved.refs["vit"], atol=ATOL, rtol=1e-3)


@pytest.mark.parametrize("mesh_kind", MESH_KINDS)
def test_from_pretrained_bf16_with_gradient_checkpointing(mesh_kind):
    """examples/saving_example.py and quantization.py: `use_gradient_checkpointing=True`, bf16 dtype and params."""
    saved = saved_models()
    mesh = make_mesh(mesh_kind)
    with using(mesh):
        model = jimm.CLIP.from_pretrained(
            saved.dirs["clip"], use_gradient_checkpointing=True, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16,
            rngs=nnx.Rngs(0),
        )  # fmt: skip
        model.eval()
        out = _forward("clip")(model, put(saved.images, mesh), put(saved.tokens, mesh))
    np.testing.assert_allclose(np.asarray(out, np.float32), saved.refs["clip"], atol=0.25, rtol=2e-2)
