"""The original jimm's sharding usage on 8 virtual CPU devices, under an Auto mesh, an Explicit mesh and no mesh.

Its spec classes and helpers, batch sharding that follows the inputs (`P('data', None)` logits from inputs on
`data`), its examples' patterns (a ViT training step with labels on `P('data')`, CLIP's `img @ txt.T` loss, the
FSDP benchmark's inputs on `P('fsdp', None)`, CLIP with `NoSharding()` on an `(n, 1)` mesh) and models built and
loaded inside `jax.jit`. Every value is compared with the same model run with no mesh.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jimm
from jimm.common import sharding as shd

ARCH = dict(num_classes=8, img_size=8, patch_size=4, num_layers=1, num_heads=4, mlp_dim=64, hidden_size=32)
CLIP_ARCH = dict(
    image_resolution=8,
    vision_layers=1,
    vision_hidden_size=32,
    vision_patch_size=4,
    context_length=8,
    vocab_size=64,
    text_hidden_size=32,
    num_text_heads=4,
    num_text_layers=1,
)
ORIGINAL_FIELDS = [
    "attn_qkv_kernel",
    "attn_qkv_bias",
    "attn_out_kernel",
    "attn_out_bias",
    "mlp_up_kernel",
    "mlp_up_bias",
    "mlp_down_kernel",
    "mlp_down_bias",
    "layernorm",
    "patch_conv_kernel",
    "patch_conv_bias",
    "embed",
    "pos_embed_3d",
    "pos_embed_2d",
    "vision_pos_id",
    "text_pos_embed",
    "cls_token",
    "probe_token",
    "proj_kernel",
    "proj_bias",
    "layer_scale",
]
MESHES = ["none", "auto", "explicit"]


def mesh_of(kind: str, shape=(2, 4), names=("data", "fsdp")) -> Mesh | None:
    devices = np.array(jax.devices()[: int(np.prod(shape))]).reshape(shape)
    if kind == "none":
        return None
    if kind == "auto":  # the original's tests: no axis_types
        return Mesh(devices, names)
    types = {"explicit": (AxisType.Explicit,) * 2, "mixed": (AxisType.Explicit, AxisType.Auto)}[kind]
    return Mesh(devices, names, axis_types=types)


class on:
    """`jax.set_mesh(mesh)` as a context, or nothing for no mesh."""

    def __init__(self, mesh):
        self.cm = jax.set_mesh(mesh) if mesh is not None else None

    def __enter__(self):
        return self.cm.__enter__() if self.cm is not None else None

    def __exit__(self, *exc):
        return self.cm.__exit__(*exc) if self.cm is not None else False


def put(x, mesh, *spec):
    return x if mesh is None else jax.device_put(x, NamedSharding(mesh, P(*spec)))


def padded(spec, ndim):
    return P(*spec, *([None] * (ndim - len(spec))))


def images(n=8, size=8):
    return np.random.RandomState(0).randn(n, size, size, 3).astype(np.float32)


@nnx.jit
def forward(model, x):
    return model(x)


@pytest.fixture(scope="module")
def vit_ref():
    model = jimm.VisionTransformer(**ARCH, rngs=nnx.Rngs(0))
    return np.asarray(forward(model, images())), np.asarray(forward(model, images(2)))


# -- the spec classes and helpers ----------------------------------------------------------------------------------


def test_spec_classes_have_the_originals_fields_and_paths():
    import jimm.models.clip.sharding as clip_mod
    import jimm.models.dinov2.sharding as dinov2_mod
    import jimm.models.dinov3.sharding as dinov3_mod
    import jimm.models.siglip.sharding as siglip_mod
    import jimm.models.vit.sharding as vit_mod

    assert [f.name for f in dataclasses.fields(shd.ShardingSpec) if f.name != "batch"] == ORIGINAL_FIELDS
    classes = [
        vit_mod.ViTSharding,
        clip_mod.CLIPSharding,
        siglip_mod.SigLIPSharding,
        dinov2_mod.DINOv2Sharding,
        dinov3_mod.DINOv3Sharding,
        shd.NoSharding,
    ]
    for cls in classes:
        spec = cls()
        assert dataclasses.is_dataclass(cls) and all(hasattr(spec, f) for f in ORIGINAL_FIELDS), cls
        with pytest.raises(dataclasses.FrozenInstanceError):
            spec.layernorm = ("fsdp",)
    assert vit_mod.ViTSharding().attn_qkv_kernel == ("fsdp", None, None)
    assert vit_mod.ViTSharding().attn_out_kernel == (None, None, None)
    assert clip_mod.CLIPSharding().embed == ("fsdp", None)
    assert dinov2_mod.DINOv2Sharding().layer_scale == ("fsdp",)
    assert all(v in ((None,) * len(v),) for f, v in dataclasses.asdict(shd.NoSharding()).items() if f != "batch")
    custom = dataclasses.replace(vit_mod.ViTSharding(), mlp_up_kernel=(None, "fsdp"))
    assert custom.mlp_up_kernel == (None, "fsdp") and custom.attn_qkv_kernel == ("fsdp", None, None)
    # every field maps to a parameter of ours, but the two the original kept for buffers we do not have
    mapped = {theirs for theirs, _ in shd.PARAMS.values()}
    assert set(ORIGINAL_FIELDS) - mapped == {"pos_embed_2d", "vision_pos_id"}
    # presets are instances of the same classes, on the user's axis names
    assert isinstance(shd.fsdp_sharding(fsdp="shard"), shd.ViTSharding)
    assert shd.fsdp_sharding(fsdp="shard").attn_qkv_kernel == ("shard", None, None)
    assert shd.fsdp_sharding(data="dp", fsdp="shard", shard_batch=True).batch == ("dp", "shard")
    with pytest.raises(TypeError, match="sharding= takes a spec class or instance"):
        jimm.VisionTransformer(**ARCH, sharding="fsdp")


# every per-layer field a ViT uses, sharded where the original's default is not
CUSTOM = dict(
    layernorm=("fsdp",),
    attn_qkv_bias=(None, "fsdp"),
    attn_out_kernel=(None, None, "fsdp"),
    attn_out_bias=("fsdp",),
    mlp_up_kernel=(None, "fsdp"),
    mlp_up_bias=("fsdp",),
    mlp_down_bias=("fsdp",),
    patch_conv_bias=("fsdp",),
    cls_token=(None, None, "fsdp"),
    proj_bias=("fsdp",),
)


def test_class_instance_and_custom_spec_place_parameters(vit_ref):
    mesh = mesh_of("explicit")
    with jax.set_mesh(mesh):
        by_class = jimm.VisionTransformer(**ARCH, sharding=shd.ViTSharding)
        by_instance = jimm.VisionTransformer(**ARCH, sharding=shd.ViTSharding())
        custom = jimm.VisionTransformer(
            **ARCH, rngs=nnx.Rngs(0), sharding=dataclasses.replace(shd.ViTSharding(), **CUSTOM)
        )
        # the batch over both axes, the parameters over one of them: each is gathered where it meets the batch
        logits = forward(custom, put(images(), mesh, ("data", "fsdp")))
    np.testing.assert_allclose(np.asarray(logits), vit_ref[0], atol=1e-5)
    for model in (by_class, by_instance):
        layers = model.encoder.blocks.layers
        assert layers.attn.qkv_kernel[...].sharding.spec == P(None, "fsdp", None, None, None)
        assert layers.mlp.fc1_kernel[...].sharding.spec == P(None, "fsdp", None)
        assert model.encoder.patch_embed.kernel[...].sharding.spec == P(None, None, None, "fsdp")
        assert model.encoder.pos_embed[...].sharding.spec == P(None, None, "fsdp")
    layers = custom.encoder.blocks.layers
    assert layers.mlp.fc1_kernel[...].sharding.spec == P(None, None, "fsdp")
    assert layers.norm1.scale[...].sharding.spec == P(None, "fsdp")
    assert layers.attn.qkv_bias[...].sharding.spec == P(None, None, None, "fsdp")
    assert custom.encoder.cls_token[...].sharding.spec == P(None, None, "fsdp")
    assert custom.classifier.bias[...].sharding.spec == P("fsdp")


def test_original_helpers():
    mesh = mesh_of("explicit")
    with jax.set_mesh(mesh):
        x = put(jnp.ones((8, 4)), mesh, "data", None)
        y = jnp.zeros((8, 4))
        assert shd.sharding_of(x).spec == P("data", None)
        named = shd.named_sharding_like(x, (None, "fsdp"))
        assert named.spec == P(None, "fsdp") and named.mesh.axis_names == mesh.axis_names
        assert shd.reshard_like(y, x).sharding.spec == P("data", None)
        assert shd.replicated_sharding(x).spec == P(None, None)
    assert shd.replicated_sharding() == shd.NoSharding()


# -- forward passes: the batch follows the inputs ------------------------------------------------------------------


@pytest.mark.parametrize("kind", [*MESHES, "mixed"])
def test_default_spec_follows_a_data_sharded_batch(vit_ref, kind):
    mesh = mesh_of(kind)
    traced = {}

    @nnx.jit
    def run(model, x):
        logits = model(x)
        traced["logits"] = shd.sharding_of(logits).spec
        return logits

    with on(mesh):
        model = jimm.VisionTransformer(**ARCH, rngs=nnx.Rngs(0))  # default: the original's ViTSharding
        logits = run(model, put(images(), mesh, "data"))
        tiny = run(model, images(2))  # a batch of 2 on 8 devices, no batch sharding asked for
    np.testing.assert_allclose(np.asarray(logits), vit_ref[0], atol=1e-5)
    np.testing.assert_allclose(np.asarray(tiny), vit_ref[1], atol=1e-5)
    if kind != "none":
        assert padded(logits.sharding.spec, 2) == P("data", None)
    if kind in ("explicit", "mixed"):
        assert traced["logits"] == P(None, None)  # the last trace: a replicated batch stays replicated


def test_shard_batch_option_reshards_replicated_inputs(vit_ref):
    with jax.set_mesh(mesh_of("explicit")):
        model = jimm.VisionTransformer(**ARCH, rngs=nnx.Rngs(0), sharding=shd.fsdp_sharding(shard_batch=True))
        logits = forward(model, images())
    assert logits.sharding.spec == P(("data", "fsdp"), None)
    np.testing.assert_allclose(np.asarray(logits), vit_ref[0], atol=1e-5)


LABELS = np.arange(8, dtype=np.int32) % 8


def train_two_steps(mesh):
    """The original's examples/vit_training.py: cross entropy with labels on P('data') under nnx.jit."""

    def loss_fn(model, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

    @nnx.jit
    def step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
        optimizer.update(model, grads)
        return loss

    with on(mesh):
        model = jimm.VisionTransformer(**ARCH, rngs=nnx.Rngs(0))
        optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
        x, y = put(images(), mesh, "data"), put(LABELS, mesh, "data")
        losses = [float(step(model, optimizer, x, y)) for _ in range(2)]
        return losses, model.encoder.blocks.layers.attn.qkv_kernel[...]


@pytest.fixture(scope="module")
def unsharded_losses():
    return train_two_steps(None)[0]


@pytest.mark.parametrize("kind", ["auto", "explicit"])
def test_vit_training_step_with_labels_on_data(unsharded_losses, kind):
    losses, qkv = train_two_steps(mesh_of(kind))
    want = unsharded_losses
    assert want[1] < want[0]  # it trains
    np.testing.assert_allclose(losses, want, atol=1e-5)
    assert padded(qkv.sharding.spec, 5) == P(None, "fsdp", None, None, None)  # updates stay on their shards


# -- CLIP: the examples' patterns ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_ref():
    model = jimm.CLIP(**CLIP_ARCH, rngs=nnx.Rngs(0))
    ids = np.random.RandomState(1).randint(1, 64, size=(8, 8)).astype(np.int32)
    return model, ids, np.asarray(nnx.jit(lambda m, x, t: m(x, t))(model, images(), ids))


@pytest.mark.parametrize("kind", MESHES)
def test_clip_fsdp_bench_pattern(clip_ref, kind):
    """examples/bench_fsdp.py: default CLIPSharding, inputs on P("fsdp", ...), logits gathered by the loss."""
    _, ids, want = clip_ref
    mesh = mesh_of(kind, (1, 8))

    @nnx.jit
    def loss_and_logits(model, image, text):
        logits = model(image, text)
        if mesh is not None:
            logits = jax.sharding.reshard(logits, NamedSharding(mesh, P(None, None)))
        labels = jnp.arange(logits.shape[0])
        ce = optax.softmax_cross_entropy_with_integer_labels
        return (ce(logits, labels).mean() + ce(logits.T, labels).mean()) / 2, logits

    with on(mesh):
        model = jimm.CLIP(**CLIP_ARCH, rngs=nnx.Rngs(0))
        _, logits = loss_and_logits(model, put(images(), mesh, "fsdp", None, None, None), put(ids, mesh, "fsdp", None))
        if mesh is not None:
            assert padded(model.text_model.token_embed[...].sharding.spec, 2) == P("fsdp", None)
    np.testing.assert_allclose(np.asarray(logits), want, atol=1e-5)


@pytest.mark.parametrize("kind", ["none", "auto"])
def test_clip_contrastive_loss_on_sharded_embeddings(clip_ref, kind):
    """examples/clip_training_nnxjit.py on its Auto mesh: a loss written as `img @ txt.T` on the embeddings."""
    reference, ids, _ = clip_ref
    mesh = mesh_of(kind, (8,), ("fsdp",))

    @nnx.jit
    def loss(model, image, text):
        img, txt = model.encode_image(image), model.encode_text(text)
        img = img / jnp.linalg.norm(img, axis=-1, keepdims=True)
        txt = txt / jnp.linalg.norm(txt, axis=-1, keepdims=True)
        logits = jnp.exp(model.logit_scale[...]) * img @ txt.T
        return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.arange(img.shape[0])).mean()

    with on(mesh):
        model = jimm.CLIP(**CLIP_ARCH, rngs=nnx.Rngs(0), sharding=shd.fsdp_sharding(data=None))
        got = loss(model, put(images(), mesh, "fsdp"), put(ids, mesh, "fsdp"))
    np.testing.assert_allclose(float(got), float(loss(reference, images(), ids)), atol=1e-5)


def test_clip_no_sharding_on_an_explicit_n_by_1_mesh(clip_ref):
    """The original's test_clip_explicit_sharding: NoSharding() and CLIPSharding() on an explicit mesh."""
    _, ids, want = clip_ref
    mesh = mesh_of("explicit", (8, 1))
    traced = {}

    @nnx.jit
    def run(model, image, text):
        logits = model(image, text)
        traced["logits"] = shd.sharding_of(logits).spec
        traced["proj"] = shd.sharding_of(model.text_projection.kernel[...]).spec
        return logits

    for spec, proj in ((shd.NoSharding(), P(None, None)), (shd.CLIPSharding(), P("fsdp", None))):
        with jax.set_mesh(mesh):
            model = jimm.CLIP(**CLIP_ARCH, rngs=nnx.Rngs(0), sharding=spec)
            logits = run(model, put(images(), mesh, "data"), put(ids, mesh, "data", None))
        assert traced["logits"] == P("data", None) and traced["proj"] == proj
        np.testing.assert_allclose(np.asarray(logits), want, atol=1e-5)


FAMILIES = {  # tiny models with their family's default spec; `run` gives the output the original's tests compare
    "dinov2": lambda: jimm.DINOv2Model(img_size=8, patch_size=4, hidden_size=32, num_layers=1, num_heads=4, mlp_dim=64),
    "dinov3": lambda: jimm.DINOv3Model(
        img_size=8, patch_size=4, hidden_size=32, num_layers=1, num_heads=4, mlp_dim=64, use_gated_mlp=True
    ),
    "siglip": lambda: jimm.SigLIP(**{**CLIP_ARCH, "text_hidden_size": 32}),
}


@nnx.jit
def family_forward(model, x, ids):
    return model(x, ids) if isinstance(model, jimm.SigLIP) else model(x)


@pytest.fixture(scope="module")
def family_refs(clip_ref):
    ids = clip_ref[1]
    return ids, {name: np.asarray(family_forward(build(), images(), ids)) for name, build in FAMILIES.items()}


@pytest.mark.parametrize("kind", ["auto", "explicit"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_default_specs(family_refs, family, kind):
    """DINOv2/v3 store LayerScale and the MLP's first bias over fsdp, SigLIP its token table and MAP head."""
    ids, refs = family_refs
    mesh = mesh_of(kind)
    with jax.set_mesh(mesh):
        model = FAMILIES[family]()
        got = family_forward(model, put(images(), mesh, "data"), put(ids, mesh, "data"))
    np.testing.assert_allclose(np.asarray(got), refs[family], atol=1e-5)
    assert padded(got.sharding.spec, 2) == P("data", None)
    if family.startswith("dino"):
        assert padded(model.encoder.blocks.layers.ls1.gamma[...].sharding.spec, 2) == P(None, "fsdp")


# -- building and loading inside jax.jit -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    from conftest import hf_model

    path = tmp_path_factory.mktemp("hf_vit")
    hf_model(
        hidden_size=32, num_attention_heads=4, intermediate_size=64, image_size=8, patch_size=4, num_labels=8
    ).save_pretrained(path)
    return path, np.asarray(forward(jimm.VisionTransformer.from_pretrained(path), images()))


@pytest.mark.parametrize("kind", MESHES)
def test_load_inside_jit(hf_dir, kind):
    """The original's tests and examples/saving_example.py: `create_model()` under jax.jit / nnx.jit."""
    path, want = hf_dir
    mesh = mesh_of(kind)

    def create_model():
        model = jimm.VisionTransformer.from_pretrained(path, rngs=nnx.Rngs(0))
        if mesh is not None:  # with_sharding_constraint on the model's own specs needs a mesh
            state = nnx.state(model)
            nnx.update(model, jax.lax.with_sharding_constraint(state, nnx.get_partition_spec(state)))
        return model

    with on(mesh):
        model = (nnx.jit if kind == "explicit" else jax.jit)(create_model)()
        logits = forward(model, put(images(), mesh, "data"))
    np.testing.assert_allclose(np.asarray(logits), want, atol=1e-5)
    if mesh is not None:
        qkv = model.encoder.blocks.layers.attn.qkv_kernel[...]
        assert padded(qkv.sharding.spec, 5) == P(None, "fsdp", None, None, None)
