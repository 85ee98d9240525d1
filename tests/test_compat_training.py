"""Compatibility: the original jimm's examples' training steps (ViT, CLIP under `nnx.jit`), its FSDP benchmark
pattern on the 8 virtual devices and the sharding assertions of its CLIP test (see compat_support)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from compat_support import MESH_KINDS, make_mesh, put, saved_models, tokens, using
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jimm


@pytest.mark.parametrize("mesh_kind", MESH_KINDS)
def test_vit_training_step(mesh_kind):
    """examples/vit_training.py: a ViT built from constructor arguments (1-channel 28 px images, dropout on),
    images on P('data'), labels on P('data'), adam, loss and accuracy under `nnx.jit`."""
    mesh = make_mesh(mesh_kind)
    rs = np.random.RandomState(0)
    with using(mesh):
        model = jimm.VisionTransformer(
            num_classes=10, in_channels=1, img_size=28, patch_size=7, num_layers=2, num_heads=2, mlp_dim=256,
            hidden_size=64, dropout_rate=0.1, rngs=nnx.Rngs(params=0, dropout=1),
        )  # fmt: skip
        model.train()
        optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

        def loss_and_accuracy(model, images, labels):
            logits = model(images)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, jnp.mean(jnp.argmax(logits, axis=-1) == labels)

        @nnx.jit
        def train_step(model, optimizer, images, labels):
            (loss, accuracy), grads = nnx.value_and_grad(loss_and_accuracy, has_aux=True)(model, images, labels)
            optimizer.update(model, grads)
            return loss, accuracy

        images = put(rs.rand(8, 28, 28, 1).astype(np.float32), mesh)
        labels = put(rs.randint(0, 10, size=8).astype(np.int32), mesh)
        losses = [float(train_step(model, optimizer, images, labels)[0]) for _ in range(6)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses


def clip_loss(image_features, text_features, logit_scale):
    """examples/clip_training_nnxjit.py's contrastive loss, written as a user writes it (`img @ txt.T`)."""
    image_features = image_features / jnp.linalg.norm(image_features, axis=-1, keepdims=True)
    text_features = text_features / jnp.linalg.norm(text_features, axis=-1, keepdims=True)
    logits = jnp.exp(logit_scale) * image_features @ text_features.T
    labels = jnp.arange(image_features.shape[0])
    image_loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    text_loss = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels)
    return (image_loss.mean() + text_loss.mean()) / 2.0


@pytest.mark.parametrize("mesh_kind", [k for k in MESH_KINDS if k != "explicit"])
def test_clip_training_step_under_nnx_jit(mesh_kind):
    """examples/clip_training_nnxjit.py: a 1-D ('fsdp',) mesh over every device, CLIP.from_pretrained, inputs
    on P('fsdp'), `encode_image` / `encode_text`, `model.logit_scale.value`, adam.

    Auto axes only, as the example builds its mesh: under Explicit axes the loss's `img @ txt.T` of two arrays
    sharded on the same axis is `P('fsdp', 'fsdp')`, which JAX itself refuses (DuplicateSpecError, whatever the
    library)."""
    saved = saved_models()
    mesh = make_mesh(mesh_kind, shape=(8,), names=("fsdp",))
    with using(mesh):
        model = jimm.CLIP.from_pretrained(saved.dirs["clip"], rngs=nnx.Rngs(0))
        optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

        def compute_loss(model, images, texts):
            return clip_loss(model.encode_image(images), model.encode_text(texts), model.logit_scale.value)

        @nnx.jit
        def train_step(model, optimizer, images, texts):
            loss, grads = nnx.value_and_grad(compute_loss)(model, images, texts)
            optimizer.update(model, grads)
            return loss

        model.train()
        images, texts = put(saved.images, mesh, "fsdp"), put(tokens(seed=1), mesh, "fsdp")
        losses = [float(train_step(model, optimizer, images, texts)) for _ in range(4)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses


# Two of the four (size, axis type) pairs: each size and each axis type once (the suite's slowest test otherwise).
@pytest.mark.parametrize(("n_fsdp", "mesh_kind"), [(2, "explicit"), (4, "auto")])
def test_fsdp_benchmark_pattern(n_fsdp, mesh_kind):
    """examples/bench_fsdp.py: a (1, n) ('data', 'fsdp') mesh on the first n devices, inputs on P('fsdp'),
    CLIP.from_config, adamw, `nnx.split((model, optimizer))` and `jax.jit` forward / train steps that merge."""
    saved = saved_models()
    config = saved.config("clip")
    batch = 2 * n_fsdp
    mesh = make_mesh(mesh_kind, shape=(1, n_fsdp))
    with using(mesh):
        image = put(saved.images[:batch], mesh, "fsdp")
        text = put(saved.tokens[:batch], mesh, "fsdp")
        model = jimm.CLIP.from_config(config, rngs=nnx.Rngs(0))
        model.eval()
        optimizer = nnx.Optimizer(model, optax.adamw(1e-3), wrt=nnx.Param)
        graphdef, state = nnx.split((model, optimizer))

        @jax.jit
        def forward(state, image, text):
            m, _ = nnx.merge(graphdef, state)
            return m(image, text)

        @jax.jit
        def train_step(state, image, text):
            m, opt = nnx.merge(graphdef, state)

            def loss_fn(m):
                logits = jax.sharding.reshard(m(image, text), NamedSharding(mesh, P(None, None)))
                labels = jnp.arange(logits.shape[0])
                loss_i = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
                loss_t = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels)
                return (loss_i.mean() + loss_t.mean()) / 2

            grads = nnx.grad(loss_fn)(m)
            opt.update(m, grads)
            return nnx.state((m, opt))

        logits = forward(state, image, text)
        new_state = train_step(state, image, text)
        after = forward(new_state, image, text)
    assert logits.shape == (batch, batch) and np.isfinite(np.asarray(after)).all()
    assert not np.allclose(np.asarray(after), np.asarray(logits))


@pytest.mark.parametrize("spec", ["NoSharding", "CLIPSharding"])
def test_clip_explicit_sharding_assertions(spec):
    """test_clip.py's explicit-sharding test: a (2, 4) Explicit mesh, inputs on P('data'); inside `nnx.jit` the
    logits are P('data', None) and the text projection kernel is replicated (NoSharding) or on 'fsdp'."""
    from jimm.common.sharding import NoSharding
    from jimm.models.clip.sharding import CLIPSharding

    saved = saved_models()
    sharding = NoSharding() if spec == "NoSharding" else CLIPSharding()
    mesh = make_mesh("explicit", shape=(2, 4))
    traced = {}

    @nnx.jit
    def forward(model, image, text):
        # the original keeps the projection inside the text tower; ours (like transformers) on the pair
        projection = getattr(model.text_model, "text_projection", None) or model.text_projection
        traced["proj_kernel"] = jax.typeof(projection.kernel[...]).sharding.spec
        traced["image"] = jax.typeof(image).sharding.spec
        logits = model(image, text)
        traced["output"] = jax.typeof(logits).sharding.spec
        return logits

    with using(mesh):
        model = jimm.CLIP.from_config(saved.config("clip"), rngs=nnx.Rngs(0), sharding=sharding)
        model.eval()
        out = forward(model, put(saved.images[:2], mesh), put(saved.tokens[:2], mesh))
    assert out.shape == (2, 2)
    assert traced["image"][0] == "data" and traced["output"] == P("data", None), traced
    assert traced["proj_kernel"] == (P(None, None) if spec == "NoSharding" else P("fsdp", None)), traced
