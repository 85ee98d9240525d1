"""Shared pieces of the compatibility suite (tests/test_compat_*.py): code written for the original jimm must run
unchanged on ours. The suite is written from the original's public usage (its README, docs, examples and tests)
and runs against either library:

    python -m pytest -q -p no:xdist tests/test_compat_*.py                          # ours
    PYTHONPATH=/tmp/orig/src python -m pytest -q -p no:xdist tests/test_compat_*.py  # the original 0.4.0 wheel

(`pip download jax-image-models==0.4.0 --no-deps` and unzip into /tmp/orig/src; it needs nothing the shared venv
lacks.) Tests of a deliberate difference (strict loads, honoured config fields, SigLIP's tanh GELU, running with no
mesh) assert our behaviour and carry `ours_only`, which skips them against the original.

Tiny transformers models are built in-process and saved to a temporary folder (no downloads), with the shapes the
original can load: vision towers one head of 64 (it derives heads as width // 64) with a 4x MLP, CLIP's projection
as wide as its text tower. Each case runs under an Auto mesh, an Explicit mesh (both `("data", "fsdp")` over the 8
virtual devices, as the original's conftest builds it) and with no mesh.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jimm

ORIGINAL = jimm.__version__.startswith("0.4")
"""True when the suite runs against the original 0.4.0 wheel (on PYTHONPATH) rather than this tree."""

if ORIGINAL:  # the original's conftest parses absl flags for tokamax (ours guards against pytest's flags itself)
    import sys

    from absl import flags

    flags.FLAGS(sys.argv[:1])

ours_only = pytest.mark.skipif(ORIGINAL, reason="deliberate difference: asserts our behaviour, not the original's")

MESH_KINDS = ("auto", "explicit", pytest.param("none", marks=ours_only))
"""The original cannot build a model without a mesh (a deliberate difference), so `none` is ours only."""

# The original's parity tests allow 2e-2 .. 1e-1 on real checkpoints; test_compat_differences checks ours at 1e-5.
ATOL = 2e-2
BATCH = 8  # divisible by the data axis of the (8, 1) mesh
IMAGE, PATCH, TOKENS, VOCAB = 32, 8, 16, 96  # a vocabulary that divides by the fsdp axis, as real ones do
VISION = dict(hidden_size=64, num_attention_heads=1, intermediate_size=256, num_hidden_layers=2)
TEXT = dict(hidden_size=64, num_attention_heads=2, intermediate_size=256, num_hidden_layers=2)


def make_mesh(kind: str, shape: tuple[int, ...] = (8, 1), names: tuple[str, ...] = ("data", "fsdp")) -> Mesh | None:
    """The original conftest's mesh, with Auto (its default) or Explicit axes; None for `none`."""
    if kind == "none":
        return None
    axis_type = AxisType.Explicit if kind == "explicit" else AxisType.Auto
    devices = mesh_utils.create_device_mesh(shape, devices=jax.devices()[: int(np.prod(shape))])
    return Mesh(devices, names, axis_types=(axis_type,) * len(names))


@contextlib.contextmanager
def using(mesh: Mesh | None):
    """`jax.set_mesh(mesh)` for the block, as the original's tests and examples set it; nothing for None."""
    if mesh is None:
        yield None
        return
    with jax.set_mesh(mesh):
        yield mesh


def put(x: np.ndarray, mesh: Mesh | None, axis: str | None = "data") -> jax.Array:
    """An input placed as the original's tests place it: batch on `axis` of the mesh, or plain without a mesh."""
    if mesh is None:
        return jnp.asarray(x)
    return jax.device_put(x, NamedSharding(mesh, P(axis, *([None] * (x.ndim - 1)))))


def images(batch: int = BATCH, size: int = IMAGE, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randn(batch, size, size, 3).astype(np.float32)


def tokens(batch: int = BATCH, seed: int = 0) -> np.ndarray:
    """Token ids whose largest id (the EOS token) comes last, so argmax pooling (the original's) and transformers'
    first-EOS pooling pick the same position."""
    ids = np.random.RandomState(seed).randint(1, VOCAB - 1, size=(batch, TOKENS)).astype(np.int32)
    ids[:, -1] = VOCAB - 1
    return ids


def _perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial biases, norms and scales (transformers initialises them to 0 / 1), in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "lambda" in name or name in ("logit_scale", "logit_bias"):
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def hf_models() -> dict[str, torch.nn.Module]:
    """One tiny random transformers model per family."""
    import transformers as T
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    vision = dict(**VISION, image_size=IMAGE, patch_size=PATCH)
    text = dict(**TEXT, max_position_embeddings=TOKENS, vocab_size=VOCAB)
    clip_text = dict(**text, eos_token_id=VOCAB - 1, bos_token_id=VOCAB - 2, pad_token_id=VOCAB - 1)
    models = {
        "vit": T.ViTForImageClassification(T.ViTConfig(**vision, num_labels=5)),
        "clip": T.CLIPModel(T.CLIPConfig(vision_config=vision, text_config=clip_text, projection_dim=64)),
        # the original loads SigLIP's text tower with width // 64 heads whatever the config says: heads of 64 here
        "siglip": T.SiglipModel(T.SiglipConfig(vision_config=vision, text_config={**text, "num_attention_heads": 1})),
        "dinov2": T.Dinov2Model(T.Dinov2Config(**{k: v for k, v in vision.items() if k != "intermediate_size"})),
        "dinov3": T.DINOv3ViTModel(T.DINOv3ViTConfig(**vision, num_register_tokens=4)),
    }
    return {name: _perturbed(model, seed) for seed, (name, model) in enumerate(models.items())}


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


@torch.no_grad()
def references(models: dict[str, torch.nn.Module], x: np.ndarray, ids: np.ndarray) -> dict[str, np.ndarray]:
    """transformers' outputs for every case the suite compares against."""
    pixels, text = _nchw(x), torch.from_numpy(ids.astype(np.int64))
    clip, siglip = models["clip"], models["siglip"]
    out = {
        "vit": models["vit"](pixel_values=pixels).logits,
        "clip": clip(pixel_values=pixels, input_ids=text).logits_per_image,
        "clip_vision": clip.vision_model(pixel_values=pixels).pooler_output,
        "clip_text": clip.text_projection(clip.text_model(input_ids=text).pooler_output),
        "siglip": siglip(pixel_values=pixels, input_ids=text).logits_per_image,
        "siglip_vision": siglip.vision_model(pixel_values=pixels).pooler_output,
        "siglip_text": siglip.text_model(input_ids=text).pooler_output,
        "siglip_text_model": siglip.text_model(input_ids=text).pooler_output,
        "dinov2": models["dinov2"](pixel_values=pixels).pooler_output,
        "dinov3": models["dinov3"](pixel_values=pixels).pooler_output,
    }
    return {k: v.numpy() for k, v in out.items()}


# case -> (family folder, class name in jimm, how the original's tests call it)
CASES = {
    "vit": ("vit", "VisionTransformer", lambda m, x, t: m(x)),
    "clip": ("clip", "CLIP", lambda m, x, t: m(x, t)),
    "clip_vision": ("clip", "CLIPVisionModel", lambda m, x, t: m(x, do_projection=False)),
    "clip_text": ("clip", "CLIPTextModel", lambda m, x, t: m(t, do_projection=True)),
    "siglip": ("siglip", "SigLIP", lambda m, x, t: m(x, t)),
    "siglip_vision": ("siglip", "SigLIPVisionModel", lambda m, x, t: m(x)),
    "siglip_text": ("siglip", "SigLIP", lambda m, x, t: m.encode_text(t)),
    "dinov2": ("dinov2", "DINOv2Model", lambda m, x, t: m(x)),
    "dinov3": ("dinov3", "DINOv3Model", lambda m, x, t: m(x)),
}


class Saved:
    """The tiny models saved under one folder each, their configs and transformers' reference outputs."""

    def __init__(self, root: Path):
        self.hf = hf_models()
        self.dirs = {}
        for name, model in self.hf.items():
            model.save_pretrained(root / name)
            self.dirs[name] = str(root / name)
        self.images, self.tokens = images(), tokens()
        self.refs = references(self.hf, self.images, self.tokens)

    def config(self, family: str) -> dict:
        return self.hf[family].config.to_dict()


def model_class(case: str):
    return getattr(jimm, CASES[case][1])


def call(case: str):
    return CASES[case][2]


CASES["siglip_text_model"] = ("siglip", "SigLIPTextModel", lambda m, x, t: m(t, do_projection=True))


_SAVED: list[Saved] = []


def saved_models() -> Saved:
    """The tiny models, built and saved once per process into a temporary folder removed at exit."""
    if not _SAVED:
        import atexit
        import shutil
        import tempfile

        root = Path(tempfile.mkdtemp(prefix="jimm-compat-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _SAVED.append(Saved(root))
    return _SAVED[0]


_LOADED: dict[tuple[str, str], object] = {}


def loaded(case: str, kind: str):
    """`Class.from_pretrained(folder, rngs=nnx.Rngs(0))` in eval mode, built under `kind`'s mesh; cached."""
    from flax import nnx

    if (case, kind) not in _LOADED:
        with using(make_mesh(kind)):
            model = model_class(case).from_pretrained(saved_models().dirs[CASES[case][0]], rngs=nnx.Rngs(0))
            model.eval()
        _LOADED[case, kind] = model
    return _LOADED[case, kind]
