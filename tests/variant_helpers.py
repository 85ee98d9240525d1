"""Shared helpers for the variant and format tests: random jimm params and the HF-named tensors of a model."""

import jax
import numpy as np
from flax import nnx

from jimm.models.vit.names import name_table


def randomize(model, seed: int = 0, scale: float = 0.3):
    """Replace every parameter by random values, so a missing LayerNorm or bias cannot pass by luck."""
    rng = np.random.RandomState(seed)
    state = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda a: (rng.randn(*a.shape) * scale).astype(np.float32), state))
    return model


def hf_tensors(model) -> dict[str, np.ndarray]:
    """The model's tensors under jimm's HF names (no `vit.` prefix), through the HF name table."""
    table = name_table(model.config, prefix="", with_head=model.do_classification)
    params = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    return {s.name: np.asarray(s.to_hf(np.asarray(params[s.param][...][s.index]))) for s in table}
