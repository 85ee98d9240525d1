"""The image-text losses against straightforward references: torch's cross-entropy for CLIP, a numpy loop for
SigLIP's pairwise sigmoid loss (big_vision's formulation)."""

import jax
import numpy as np
import pytest
import torch

from jimm.train.losses import clip_contrastive_loss, siglip_sigmoid_loss


def logits(n=5, seed=0, scale=7.0):
    return (scale * np.random.RandomState(seed).randn(n, n)).astype(np.float32)


def test_clip_loss_equals_torch_cross_entropy():
    x = logits()
    target = torch.arange(5)
    t = torch.from_numpy(x)
    expected = (torch.nn.functional.cross_entropy(t, target) + torch.nn.functional.cross_entropy(t.T, target)) / 2
    np.testing.assert_allclose(float(clip_contrastive_loss(x)), expected.item(), rtol=1e-6)


def test_siglip_loss_equals_a_pairwise_loop():
    x = logits(seed=1)
    total = 0.0
    for i in range(5):
        for j in range(5):
            z = 1.0 if i == j else -1.0
            total -= np.log(1 / (1 + np.exp(-z * float(x[i, j]))))
    np.testing.assert_allclose(float(siglip_sigmoid_loss(x)), total / 5, rtol=1e-6)


def test_losses_differentiate_and_reject_unpaired_batches():
    x = logits(seed=2)
    for loss in (clip_contrastive_loss, siglip_sigmoid_loss):
        grad = np.asarray(jax.grad(loss)(x))
        assert np.isfinite(grad).all() and (np.diagonal(grad) < 0).all()  # raising a matching logit lowers the loss
        with pytest.raises(ValueError, match=r"\[N, N\] logits matrix; got shape \(4, 3\)"):
            loss(np.zeros((4, 3), np.float32))
