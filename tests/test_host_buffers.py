"""The loader's host buffers and tiled copies: any layout in, the same values out."""

import ml_dtypes
import numpy as np
import pytest

from jimm.io import state


@pytest.mark.parametrize("nbytes", [4 * 10, state.POPULATE_BYTES + 4 * 7])  # small: np.empty; large: a mapping
def test_aligned_empty_is_aligned_writeable_and_sized(nbytes):
    a = state.aligned_empty((nbytes // 4,), np.float32)
    assert a.ctypes.data % 64 == 0 and a.flags.writeable and a.nbytes == nbytes
    a[...] = 3.0
    assert float(a.sum()) == 3.0 * a.size


def _layouts(rng):
    w = rng.standard_normal((40, 24)).astype(np.float32)
    yield "transposed matrix", lambda: w.T
    yield "heads from a transposed matrix", lambda: w.T.reshape(24, 5, 8)
    yield "transposed heads", lambda: w.reshape(5, 8, 24).transpose(2, 0, 1)
    yield "contiguous", lambda: w
    yield "bf16 to fp32, transposed", lambda: w.astype(ml_dtypes.bfloat16).T
    yield "conv kernel", lambda: rng.standard_normal((6, 3, 4, 4)).astype(np.float32).transpose(2, 3, 1, 0)


@pytest.mark.parametrize("block_bytes", [64, 512, 256 << 10])
def test_blocked_copy_equals_a_plain_copy_for_every_layout(block_bytes):
    rng = np.random.default_rng(0)
    for name, make in _layouts(rng):
        src = make()
        for dest in (np.zeros(src.shape, np.float32), np.zeros((*src.shape, 2), np.float32)[..., 1]):  # and strided
            state.blocked_copy(dest, src, block_bytes=block_bytes)
            np.testing.assert_array_equal(dest, src.astype(np.float32), err_msg=name)
    stacked = np.zeros((3, 24, 2, 5, 8), np.float32)  # a stacked qkv kernel: one layer, one projection
    src = rng.standard_normal((40, 24)).astype(np.float32).T.reshape(24, 5, 8)
    state.blocked_copy(stacked[1, :, 0], src, block_bytes=block_bytes)
    np.testing.assert_array_equal(stacked[1, :, 0], src)
    assert not stacked[0].any() and not stacked[2].any() and not stacked[1, :, 1].any()
