"""Compatibility: where ours deliberately differs from the original jimm (docs/migrating.md), these assert our
behaviour; every test here is `ours_only` and is skipped when the suite runs against the original."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from compat_support import CASES, call, images, loaded, ours_only, saved_models
from flax import nnx
from safetensors.numpy import load_file, save_file

import jimm

pytestmark = ours_only


@pytest.mark.parametrize("case", CASES)
def test_outputs_equal_transformers_to_1e5(case):
    """The original is within 2e-2 .. 1e-1 (SigLIP's exact GELU where transformers uses the tanh one, eps
    hard-coded); ours computes what transformers computes, at fp32."""
    saved = saved_models()
    out = call(case)(loaded(case, "none"), saved.images, saved.tokens)
    np.testing.assert_allclose(np.asarray(out), saved.refs[case], atol=1e-5, rtol=1e-5)


def test_a_partial_checkpoint_is_an_error_that_names_the_tensor(tmp_path):
    """The original loads a checkpoint with a missing tensor silently (that tensor stays random)."""
    from jimm.io.state import CheckpointMismatchError  # ours only: imported here so the original can collect

    saved = saved_models()
    folder = saved.dirs["vit"]
    tensors = load_file(f"{folder}/model.safetensors")
    dropped = next(name for name in tensors if "layer.1.output.dense.bias" in name)
    del tensors[dropped]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    shutil.copy(f"{folder}/config.json", tmp_path / "config.json")
    with pytest.raises(CheckpointMismatchError, match=r"layer\.1\.output\.dense\.bias"):
        jimm.VisionTransformer.from_pretrained(str(tmp_path), rngs=nnx.Rngs(0))


def test_config_fields_the_original_hard_codes_are_honoured(tmp_path):
    """LayerNorm eps, qkv bias and the activation come from config.json (the original: 1e-12, on, exact GELU)."""
    import transformers as T

    torch.manual_seed(0)
    config = T.ViTConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96, image_size=32, patch_size=8,
        num_labels=3, layer_norm_eps=1e-6, qkv_bias=False, hidden_act="gelu_new",
    )  # fmt: skip
    hf = T.ViTForImageClassification(config).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "layernorm" in name:
                p.mul_(0.0).add_(torch.rand(p.shape) * 1e-3)  # tiny scales: the eps matters
    hf.save_pretrained(tmp_path)
    x = images(batch=2)
    with torch.no_grad():
        want = hf(pixel_values=torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).logits.numpy()
    model = jimm.VisionTransformer.from_pretrained(str(tmp_path), rngs=nnx.Rngs(0))
    np.testing.assert_allclose(np.asarray(model(x)), want, atol=1e-5, rtol=1e-5)


def test_from_config_builds_in_eval_mode():
    """The original's `from_config` leaves dropout on (outputs random until `.eval()`); ours builds in eval mode."""
    config = saved_models().config("vit")
    model = jimm.VisionTransformer.from_config({**config, "hidden_dropout_prob": 0.5}, rngs=nnx.Rngs(0))
    x = images(batch=2)
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(model(x)))
    model.train()
    assert not np.allclose(np.asarray(model(x)), np.asarray(model(x)))


def test_tokamax_is_optional():
    """The original imports tokamax with jimm; ours works without it and says how to install it when asked for."""
    import subprocess
    import sys

    code = """
import sys
sys.modules["tokamax"] = None  # as if not installed
import jimm
names = {}
exec("from jimm import *", names)
assert "autotune" in names and "AutotuningResult" not in names
try:
    jimm.autotune(lambda x: x, 1.0)
except ImportError as err:
    assert "pip install 'jimm[tokamax]'" in str(err), err
else:
    raise AssertionError("no ImportError")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
