"""Build a tiny ViT in jimm, save it in HF format, reload it with transformers, and compare logits.

Runs offline in seconds: `python examples/parity_demo.py`.
"""

import tempfile

import jax
import numpy as np

import jimm


def main() -> None:
    jax.config.update("jax_default_matmul_precision", "highest")
    model = jimm.VisionTransformer(
        num_classes=10,
        img_size=32,
        patch_size=4,
        num_layers=4,
        num_heads=4,
        mlp_dim=96,
        hidden_size=64,
        id2label={i: f"digit_{i}" for i in range(10)},
    )
    images = np.random.RandomState(0).rand(4, 32, 32, 3).astype(np.float32)
    ours = np.asarray(model(images))
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        import torch
        from transformers import ViTForImageClassification

        hf = ViTForImageClassification.from_pretrained(folder).eval()
        with torch.no_grad():
            theirs = hf(torch.from_numpy(images.transpose(0, 3, 1, 2))).logits.numpy()
        reloaded = jimm.VisionTransformer.from_pretrained(folder)
    print(f"jimm logits[0]:         {np.round(ours[0, :5], 4)}")
    print(f"transformers logits[0]: {np.round(theirs[0, :5], 4)}")
    print(f"max |jimm - transformers| = {np.abs(ours - theirs).max():.2e}")
    print(f"reloaded in jimm, max diff = {np.abs(np.asarray(reloaded(images)) - ours).max():.2e}")
    print(f"labels survive the round trip: {hf.config.id2label[3]!r}")


if __name__ == "__main__":
    main()
