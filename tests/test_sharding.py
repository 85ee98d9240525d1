"""Sharding on 8 virtual CPU devices: every preset on 1x8, 2x4 and 8x1 meshes equals the unsharded model.

Sizes are divisible by 8 where a preset splits them: D=64, N=8 heads of H=8, F=128, 16 px images of 4 px
patches (T=17), C=16 classes, batch 8.
"""

from __future__ import annotations

import re

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

import jimm
from jimm.common import sharding as shd
from jimm.common.transformer import per_layer_to_stacked, stacked_to_per_layer

ARCH = dict(
    num_classes=16, img_size=16, patch_size=4, num_layers=2, num_heads=8, mlp_dim=128, hidden_size=64, dropout_rate=0.0
)
BATCH = 8


def make_mesh(shape, names):
    return jax.make_mesh(shape, names, axis_types=(AxisType.Explicit,) * len(shape))


def build(sharding=shd.ViTSharding, **kw):
    return jimm.VisionTransformer(**ARCH, rngs=nnx.Rngs(0), sharding=sharding, **{**kw})


def batch():
    rs = np.random.RandomState(1)
    return rs.randn(BATCH, 16, 16, 3).astype(np.float32), rs.randint(0, 16, size=BATCH).astype(np.int32)


def loss_fn(model, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


@nnx.jit
def logits_and_grads(model, x, y):
    return model(x), nnx.grad(loss_fn)(model, x, y)


def flat(state):
    return {".".join(map(str, k)): v for k, v in nnx.to_flat_state(state)}


@pytest.fixture(scope="module")
def reference():
    x, y = batch()
    model = build()
    logits, grads = logits_and_grads(model, x, y)
    return x, y, np.asarray(logits), {k: np.asarray(v[...]) for k, v in flat(grads).items()}


def padded(spec, ndim):
    return P(*spec, *([None] * (ndim - len(spec))))


# shard_batch=True: these cases keep the batch resharding our presets did before inputs were followed
PRESETS = {
    "fsdp": lambda a, b: shd.fsdp_sharding(data=a, fsdp=b, shard_batch=True),
    "data_parallel": lambda a, b: shd.data_parallel_sharding(data=(a, b)),
    "fsdp_tp": lambda a, b: shd.fsdp_tp_sharding(data=None, fsdp=a, tp=b, shard_batch=True),
    "replicated": lambda a, b: shd.replicated_sharding(),
}
CASES = [(shape, ("data", "fsdp"), preset) for shape in ((1, 8), (2, 4), (8, 1)) for preset in PRESETS]
CASES += [(shape, ("batch", "shard"), "fsdp") for shape in ((1, 8), (2, 4), (8, 1))]
CASES += [((2, 4), ("dp", "model"), "fsdp_tp")]


@pytest.mark.parametrize(
    ("shape", "names", "preset"), CASES, ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else v
)
def test_preset_matches_unsharded(reference, shape, names, preset):
    x, y, ref_logits, ref_grads = reference
    spec = PRESETS[preset](*names)
    with jax.set_mesh(make_mesh(shape, names)):
        model = build(spec)
        labels = jax.device_put(y, P(spec.batch))
        logits, grads = logits_and_grads(model, x, labels)
        params = flat(nnx.state(model, nnx.Param))
        for name, g in flat(grads).items():
            np.testing.assert_allclose(np.asarray(g[...]), ref_grads[name], atol=1e-5, err_msg=name)
            assert g[...].sharding.spec == params[name][...].sharding.spec, name  # grads land on the params' shards
    np.testing.assert_allclose(np.asarray(logits), ref_logits, atol=1e-5)
    assert padded(logits.sharding.spec, 2) == P(spec.batch, None)
    # stacked block parameters carry the per-layer spec behind a leading None (the layer axis); our fused q/k/v
    # kernel [D, 3, N, H] has the original's [D, N, H] entries around its unsharded q/k/v axis
    qkv = params["encoder.blocks.layers.attn.qkv_kernel"][...]
    d, n, h = spec.attn_qkv_kernel
    assert qkv.sharding.spec == P(None, d, None, n, h)
    assert params["classifier.kernel"][...].sharding.spec == P(*spec.proj_kernel)


def test_spec_recipe_global_mesh():
    """The documented recipe verbatim: a global ("data", "fsdp") mesh, then the default constructor."""
    from jax.experimental import mesh_utils
    from jax.sharding import Mesh

    mesh = Mesh(mesh_utils.create_device_mesh((1, 8)), ("data", "fsdp"), axis_types=(AxisType.Explicit,) * 2)
    jax.set_mesh(mesh)
    try:
        model = jimm.VisionTransformer(**ARCH)
        params = flat(nnx.state(model, nnx.Param))
        assert params["encoder.blocks.layers.attn.qkv_kernel"][...].sharding.spec == P(None, "fsdp", None, None, None)
        assert params["encoder.blocks.layers.mlp.fc1_kernel"][...].sharding.spec == P(None, "fsdp", None)
        assert params["encoder.blocks.layers.mlp.fc2_kernel"][...].sharding.spec == P(None, "fsdp", None)
        assert params["classifier.kernel"][...].sharding.spec == P("fsdp", None)
        # the batch follows the input (deliberate change, issue 17): a replicated one stays replicated ...
        assert padded(model(batch()[0]).sharding.spec, 2) == P(None, None)
        # ... and one sharded over both axes keeps that sharding to the logits
        logits = model(jax.device_put(batch()[0], P(("data", "fsdp"))))
        assert logits.sharding.spec == P(("data", "fsdp"), None)
    finally:
        jax.set_mesh(None)  # back to no mesh for the other tests
    assert shd.active_mesh() is None


def per_device_bytes(model):
    total = per_device = unsharded = 0
    for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        a = v[...]
        total += a.nbytes
        per_device += a.addressable_shards[0].data.nbytes
        if all(e is None for e in a.sharding.spec):
            unsharded += a.nbytes
    return total, per_device, unsharded


def test_fsdp_per_device_bytes():
    with jax.set_mesh(make_mesh((1, 8), ("data", "fsdp"))):
        # our FSDP preset (the original's default ViTSharding leaves the attention output kernel whole)
        total, per_device, unsharded = per_device_bytes(build(shd.fsdp_sharding()))
    assert per_device <= total / 8 + unsharded
    assert unsharded < 0.05 * total  # only biases, norms, the class token and position embeddings stay whole
    assert per_device < total / 6


def test_optimizer_state_sharded_like_params():
    # adamw's eps sits far above the key-bias gradients (zero in exact arithmetic, ~1e-8 here), whose sign is noise.
    x, y = batch()
    with jax.set_mesh(make_mesh((2, 4), ("data", "fsdp"))):
        model = build()
        opt = nnx.Optimizer(model, optax.adamw(1e-2, eps=1e-3), wrt=nnx.Param)
        params = flat(nnx.state(model, nnx.Param))
        moments = {
            k: v for k, v in flat(nnx.state(opt, nnx.OptState)).items() if ".mu." in f".{k}." or ".nu." in f".{k}."
        }
        assert len(moments) == 2 * len(params)
        for name, moment in moments.items():
            param_name = name.split(".mu.")[-1] if ".mu." in name else name.split(".nu.")[-1]
            assert moment[...].sharding.spec == params[param_name][...].sharding.spec, name

        @nnx.jit
        def step(model, opt, x, y):
            opt.update(model, nnx.grad(loss_fn)(model, x, y))

        step(model, opt, jax.device_put(x, P(("data", "fsdp"))), jax.device_put(y, P(("data", "fsdp"))))
        after = flat(nnx.state(model, nnx.Param))
        for name, v in after.items():
            assert v[...].sharding.spec == params[name][...].sharding.spec, name

    ref = build()
    ref_opt = nnx.Optimizer(ref, optax.adamw(1e-2, eps=1e-3), wrt=nnx.Param)
    ref_opt.update(ref, nnx.grad(loss_fn)(ref, x, y))
    for name, v in flat(nnx.state(ref, nnx.Param)).items():
        np.testing.assert_allclose(np.asarray(after[name][...]), np.asarray(v[...]), atol=1e-5, err_msg=name)


def test_missing_axis_names_axis_and_mesh():
    with jax.set_mesh(make_mesh((2, 4), ("data", "fsdp"))), pytest.raises(ValueError) as err:
        build(shd.fsdp_sharding(data="data", fsdp="model"))
    assert "['model']" in str(err.value) and "['data', 'fsdp']" in str(err.value)


def test_batch_not_divisible_is_clear():
    with jax.set_mesh(make_mesh((2, 4), ("data", "fsdp"))):
        model = build(shd.fsdp_sharding(shard_batch=True))
        with pytest.raises(ValueError) as err:
            model(np.zeros((6, 16, 16, 3), np.float32))
    message = str(err.value)
    assert "images of shape (6, 16, 16, 3)" in message
    assert "{'data': 2, 'fsdp': 4}" in message and "not divisible by 8" in message


def test_spec_not_dividing_a_parameter_is_clear():
    with jax.set_mesh(make_mesh((1, 8), ("data", "tp"))), pytest.raises(ValueError) as err:
        jimm.VisionTransformer(
            **{**ARCH, "num_heads": 4}, sharding=shd.fsdp_tp_sharding(data="data", fsdp=None, tp="tp")
        )
    message = str(err.value)
    assert "parameter `qkv_kernel` of shape (64, 3, 4, 16)" in message and "{'data': 1, 'tp': 8}" in message


def test_no_mesh_and_no_sharding():
    model = build(shd.fsdp_tp_sharding())  # axes that exist nowhere: ignored without a mesh
    qkv = model.encoder.blocks.layers.attn.qkv_kernel[...]
    assert len(qkv.sharding.device_set) == 1
    with jax.set_mesh(make_mesh((1, 8), ("data", "fsdp"))):
        model = build(jimm.NoSharding())
        qkv = model.encoder.blocks.layers.attn.qkv_kernel[...]
        assert all(e is None for e in qkv.sharding.spec)
        np.testing.assert_allclose(np.asarray(model(batch()[0])), np.asarray(build(None)(batch()[0])), atol=1e-6)


def test_scanned_and_unscanned_layouts_agree(reference):
    x, y, ref_logits, ref_grads = reference
    scanned = build()
    loop = build(scan_layers=False)
    state = nnx.to_pure_dict(nnx.state(scanned, nnx.Param))
    per_layer = stacked_to_per_layer(state)
    nnx.update(loop, per_layer)
    logits, grads = logits_and_grads(loop, x, y)
    np.testing.assert_allclose(np.asarray(logits), ref_logits, atol=1e-5)
    back = per_layer_to_stacked(nnx.to_pure_dict(nnx.state(grads)))
    for name in flat(nnx.state(scanned, nnx.Param)):
        got = back
        for key in name.split("."):
            got = got[key]
        np.testing.assert_allclose(np.asarray(got), ref_grads[name], atol=1e-5, err_msg=name)
    # the converters are exact inverses
    restored = per_layer_to_stacked(per_layer)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    hs_scan = scanned.encoder.hidden_states(x)
    hs_loop = loop.encoder.hidden_states(x)
    for a, b in zip(hs_scan, hs_loop, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_unscanned_under_mesh(reference):
    x, _, ref_logits, _ = reference
    with jax.set_mesh(make_mesh((2, 4), ("data", "fsdp"))):
        loop = build(scan_layers=False)
        nnx.update(loop, stacked_to_per_layer(nnx.to_pure_dict(nnx.state(build()))))
        assert loop.encoder.blocks.layers[1].attn.qkv_kernel[...].sharding.spec == P("fsdp", None, None, None)
        logits = loop(x)
    np.testing.assert_allclose(np.asarray(logits), ref_logits, atol=1e-5)


@pytest.mark.parametrize("policy", ["dots_with_no_batch_dims_saveable", None])
def test_remat_policy_gives_the_same_gradients(reference, policy):
    x, y, _, ref_grads = reference
    model = build(use_gradient_checkpointing=True, remat_policy=policy)
    assert model.encoder.blocks.remat_policy == (policy or "nothing_saveable")
    _, grads = logits_and_grads(model, x, y)
    for name, g in flat(grads).items():
        np.testing.assert_allclose(np.asarray(g[...]), ref_grads[name], atol=1e-5, err_msg=name)


def test_unknown_remat_policy():
    with pytest.raises(ValueError, match=r"unknown remat_policy 'dots'.*nothing_saveable"):
        build(remat_policy="dots")


def test_compute_kernel_spec_rules():
    # FSDP: the kernel's contracting axis is also the batch axis of x -> gathered.
    assert shd.compute_kernel_spec("BTD,DF->BTF", P(("data", "fsdp"), None, None), P("fsdp", None)) == P(None, None)
    # TP: heads sharded on both sides of the contraction stay sharded; FSDP on the output dim is gathered.
    assert shd.compute_kernel_spec("BTNH,NHD->BTD", P("fsdp", None, "tp", None), P("tp", None, "fsdp")) == P(
        "tp", None, None
    )
    # Column-parallel: output axis kept.
    assert shd.compute_kernel_spec("BTD,DF->BTF", P("fsdp", None, None), P("fsdp", "tp")) == P(None, "tp")


# -- loading and saving ---------------------------------------------------------------------------------------

HF_ARCH = dict(hidden_size=64, num_attention_heads=8, intermediate_size=128, image_size=16, patch_size=4, num_labels=16)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    import torch
    from conftest import hf_model, to_torch

    model = hf_model(**HF_ARCH)
    path = tmp_path_factory.mktemp("hf")
    model.save_pretrained(path)
    x = batch()[0]
    with torch.no_grad():
        logits = model(pixel_values=to_torch(x)).logits.numpy()
    return path, x, logits


@pytest.mark.parametrize("scan_layers", [True, False])
def test_load_under_mesh_places_each_shard(hf_dir, monkeypatch, scan_layers):
    path, x, torch_logits = hf_dir
    requested = []
    original = jax.make_array_from_callback

    def recording(shape, sharding, callback, *args, **kwargs):
        requested.append((shape, sharding.spec))
        return original(
            shape, sharding, lambda index: requested.append((shape, index)) or callback(index), *args, **kwargs
        )

    monkeypatch.setattr(jax, "make_array_from_callback", recording)
    with jax.set_mesh(make_mesh((1, 8), ("data", "fsdp"))):
        model = jimm.VisionTransformer.from_pretrained(path, scan_layers=scan_layers)
        logits = model(x)
    np.testing.assert_allclose(np.asarray(logits), torch_logits, atol=1e-5)
    # every sharded parameter was copied shard by shard: no device ever received the whole tensor
    qkv = model.encoder.blocks.layers.attn.qkv_kernel if scan_layers else model.encoder.blocks.layers[0].attn.qkv_kernel
    assert qkv[...].sharding.spec == (P(None, "fsdp", None, None, None) if scan_layers else P("fsdp", None, None, None))
    assert {s.data.shape[-4] for s in qkv[...].addressable_shards} == {64 // 8}
    indices = [entry for entry in requested if isinstance(entry[1], tuple)]
    sharded = [(shape, index) for shape, index in indices if any(i != slice(None) for i in index)]
    assert len(sharded) >= 5  # patch, qkv, out, fc1, fc2, classifier kernels
    for shape, index in sharded:
        sizes = [len(range(*i.indices(n))) for i, n in zip(index, shape, strict=False)]
        assert np.prod(sizes) * 8 == np.prod(shape[: len(sizes)]), (shape, index)


def test_save_sharded_writes_the_same_files(hf_dir, tmp_path):
    path, _, _ = hf_dir
    jimm.VisionTransformer.from_pretrained(path).save_pretrained(tmp_path / "plain")
    with jax.set_mesh(make_mesh((2, 4), ("data", "fsdp"))):
        jimm.VisionTransformer.from_pretrained(path).save_pretrained(tmp_path / "sharded")
        jimm.VisionTransformer.from_pretrained(path, scan_layers=False).save_pretrained(tmp_path / "loop")
    names = sorted(p.name for p in (tmp_path / "plain").iterdir())
    assert "model.safetensors" in names

    def content(path):  # each save records its own id (in the manifest and the safetensors header)
        return re.sub(rb'"(jimm_save_id|id|save_id|staging)": ?"[^"]*"', b"", path.read_bytes())

    for other in ("sharded", "loop"):
        assert sorted(p.name for p in (tmp_path / other).iterdir()) == names
        for name in names:
            assert content(tmp_path / other / name) == content(tmp_path / "plain" / name), (other, name)


def test_layer_by_layer_placement_equals_whole_parameters(hf_dir, monkeypatch):
    # accelerators: stacked parameters go to the devices one layer at a time (host memory of one tensor)
    path, x, torch_logits = hf_dir
    monkeypatch.setattr("jimm.io.state.STACK_ON_DEVICE", True)
    with jax.set_mesh(make_mesh((2, 4), ("data", "fsdp"))):
        model = jimm.VisionTransformer.from_pretrained(path)
        logits = model(x)
        qkv = model.encoder.blocks.layers.attn.qkv_kernel[...]
    assert qkv.sharding.spec == P(None, "fsdp", None, None, None)
    np.testing.assert_allclose(np.asarray(logits), torch_logits, atol=1e-5)
