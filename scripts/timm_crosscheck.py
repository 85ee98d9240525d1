"""Cross-check jimm against real timm: timm builds each ViT variant, jimm loads its state dict, outputs compare.

timm is not a jimm dependency (it needs torchvision, whose PyPI wheels are CUDA builds that do not load next to
the CPU torch jimm's tests use), so this is a script, not a test. Run it where timm imports:

    pip install timm && python scripts/timm_crosscheck.py          # e.g. on a GPU machine's image
    pip install --no-deps timm && python scripts/timm_crosscheck.py --stub-torchvision   # CPU torch only

`--stub-torchvision` imports `torchvision` (and its submodules) as empty stand-ins whose every name is a
placeholder that raises when used: timm imports torchvision symbols at start-up (datasets, transforms,
`FrozenBatchNorm2d`) but no ViT code path calls them, so a wrong stub fails loudly rather than silently.
Every parameter is redrawn at random (std 0.1, so LayerScale and norms matter), the state
dict goes through `safetensors`, and jimm infers the config from the tensor names and shapes.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

# (timm model name, create_model overrides, image height, image width)
CASES = [
    ("vit_tiny_patch16_224", dict(depth=3), 224, 224),
    ("vit_small_patch16_224", dict(depth=2, global_pool="avg", fc_norm=True), 224, 224),
    ("vit_small_patch16_224", dict(depth=2, qk_norm=True), 224, 224),
    ("vit_small_patch14_reg4_dinov2", dict(depth=2, img_size=126), 126, 126),
    ("deit_tiny_distilled_patch16_224", dict(depth=2), 224, 224),
    ("vit_base_patch16_siglip_224", dict(depth=2), 224, 224),
    ("vit_tiny_patch16_224", dict(depth=2, dynamic_img_size=True), 160, 288),  # any resolution, non-square
]


class _PlaceholderMeta(type):
    def __getattr__(cls, attr):  # enum members and class attributes: distinct placeholders of their own
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _placeholder(f"{cls.__name__}.{attr}")


def _placeholder(name: str) -> type:
    """A stand-in for a torchvision class, function or constant; calling it is an error (no ViT path does)."""

    def refuse(*args, **kwargs):
        raise NotImplementedError(f"torchvision stub: {name} is not available in this run")

    return _PlaceholderMeta(name, (), {"__init__": refuse})


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports `torchvision` and every submodule as empty modules whose attributes are `_Placeholder`."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = lambda attr: _placeholder(attr) if not attr.startswith("__") else _missing(spec.name, attr)
        return module

    def exec_module(self, module):
        pass


def _missing(module: str, attr: str):
    raise AttributeError(f"module {module!r} has no attribute {attr!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stub-torchvision", action="store_true", help="run without torchvision (see module doc)")
    args = parser.parse_args()
    if args.stub_torchvision:
        sys.meta_path.insert(0, _StubFinder())

    import jax
    import jax.numpy as jnp
    import timm
    import torch
    from safetensors.torch import save_file

    import jimm

    jax.config.update("jax_default_matmul_precision", "highest")
    torch.manual_seed(0)
    print(f"timm {timm.__version__}, torch {torch.__version__}, jax {jax.__version__}, jimm {jimm.__version__}")
    print("| timm model | overrides | image | max abs diff logits | features | intermediates | verdict |")
    print("|---|---|---|---|---|---|---|")
    failures = 0
    for name, overrides, h, w in CASES:
        ref = timm.create_model(name, pretrained=False, num_classes=7, **overrides).eval()
        with torch.no_grad():
            for p in ref.parameters():
                p.normal_(0.0, 0.1)
        x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            ref_logits = ref(x).numpy()
            ref_features = ref.forward_features(x).numpy()
            depth = len(ref.blocks)
            ref_inter = ref.forward_intermediates(x, indices=[0, depth - 1], output_fmt="NCHW", intermediates_only=True)
            ref_inter = [t.permute(0, 2, 3, 1).numpy() for t in ref_inter]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.safetensors"
            save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, path)
            model = jimm.VisionTransformer.from_pretrained(path)
        images = jnp.asarray(x.permute(0, 2, 3, 1).numpy())
        diffs = [
            float(np.abs(np.asarray(model(images)) - ref_logits).max()),
            float(np.abs(np.asarray(model.forward_features(images)) - ref_features).max()),
            max(
                float(np.abs(np.asarray(a) - b).max())
                for a, b in zip(
                    model.forward_intermediates(images, indices=[0, depth - 1], intermediates_only=True),
                    ref_inter,
                    strict=True,
                )
            ),
        ]
        ok = max(diffs) <= 1e-4
        failures += not ok
        extra = ", ".join(f"{k}={v}" for k, v in overrides.items())
        cells = " | ".join(f"{d:.1e}" for d in diffs)
        print(f"| {name} | {extra} | {h}x{w} | {cells} | {'ok' if ok else 'FAIL'} |")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
