"""Untrusted checkpoint files: seeded mutations of a safetensors file, truncated and hostile `.bin` / `.npz`.

The `safetensors` library is the reference reader of its own format. For every mutation jimm must agree with
it: a file the library rejects is rejected by jimm with a `ValueError` naming the file (no silent load, no
`OverflowError` / `RecursionError` / traceback-only errors), and a file the library accepts either loads with
exactly the library's values or is refused with a `ValueError` (e.g. a tensor of the wrong shape).
"""

from __future__ import annotations

import json
import pickle
import shutil
import struct
import zipfile

import numpy as np
import pytest
import torch
from safetensors import safe_open

import jimm
from jimm.io.convert import convert_checkpoint
from jimm.io.state import tensors_to_save
from jimm.models.vit.names import LAYERS, name_table

CASES = 300


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    model = jimm.VisionTransformer(
        num_classes=3, img_size=8, patch_size=4, num_layers=1, num_heads=2, mlp_dim=6, hidden_size=4
    )
    model.save_pretrained(path)
    return path


def _split(data: bytes) -> tuple[int, dict, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return n, json.loads(data[8 : 8 + n]), data[8 + n :]


def _pack(header: bytes, body: bytes, pad: bool = True) -> bytes:
    if pad:
        header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + body


def _pick(rng: np.random.Generator, options: list):
    return options[int(rng.integers(len(options)))]


def _mutations(data: bytes, rng: np.random.Generator):
    """One mutated file per call: header length, JSON, offsets, dtypes, shapes, metadata, truncation, trailing."""
    n, header, body = _split(data)
    names = [k for k in header if k != "__metadata__"]
    name = names[rng.integers(len(names))]
    kind = rng.integers(16)
    h = json.loads(json.dumps(header))
    if kind == 0:  # header length prefix off by a little
        return struct.pack("<Q", n + int(_pick(rng, [-8, -3, -1, 1, 2, 7]))) + data[8:]
    if kind == 1:  # truncated anywhere
        return data[: int(rng.integers(0, len(data)))]
    if kind == 2:  # bytes appended
        return data + bytes(rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8))
    if kind == 3:  # an offset moved (overlap, gap, past the end)
        i = int(rng.integers(2))
        h[name]["data_offsets"][i] += int(_pick(rng, [-8, -4, -1, 1, 4, 64]))
    elif kind == 4:  # a duplicate key pointing at another tensor's bytes
        other = names[rng.integers(len(names))]
        raw = json.dumps(h)[:-1] + f', "{name}": ' + json.dumps(h[other]) + "}"
        return _pack(raw.encode(), body)
    elif kind == 5:  # dtype changed (valid, invalid or unsupported)
        h[name]["dtype"] = str(_pick(rng, ["F16", "BF16", "I64", "U32", "F8_E4M3", "Q4", "f32", "", "F64"]))
    elif kind == 6:  # shape entries that are not sizes
        h[name]["shape"] = [_pick(rng, [32, "32", -1, 1.5, 10**30, None, [2]]), *h[name]["shape"][1:]]
    elif kind == 7:  # a shape that disagrees with the byte count
        h[name]["shape"] = [*h[name]["shape"], 2]
    elif kind == 8:  # metadata values that are not strings
        h["__metadata__"] = {"format": _pick(rng, [1, None, ["pt"], {"a": 1}])}
    elif kind == 9:  # byte-order mark or another encoding
        text = json.dumps(h)
        raw = b"\xef\xbb\xbf" + text.encode() if rng.integers(2) else text.encode("utf-32")
        return _pack(raw, body)
    elif kind == 10:  # non-JSON numbers
        raw = json.dumps(h).replace(str(h[name]["data_offsets"][1]), str(_pick(rng, ["Infinity", "NaN", "1e30"])), 1)
        return _pack(raw.encode(), body)
    elif kind == 11:  # deeply nested JSON
        depth = int(rng.integers(200, 5000))
        raw = json.dumps(h)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"
        return _pack(raw.encode(), body)
    elif kind == 12:  # a random byte of the header flipped
        i = 8 + int(rng.integers(n))
        return data[:i] + bytes([data[i] ^ (1 << int(rng.integers(8)))]) + data[i + 1 :]
    elif kind == 13:  # a tensor entry missing or an extra one
        if rng.integers(2):
            del h[name]
        else:
            h["extra"] = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    elif kind == 14:  # header not an object / missing fields
        h[name] = _pick(rng, [None, [], {"dtype": "F32"}, {"shape": [1], "data_offsets": [0, 4]}])
    else:  # random bytes of the data flipped: valid file, different values
        b = bytearray(body)
        for _ in range(4):
            b[int(rng.integers(len(b)))] ^= 0xFF
        return data[:8] + data[8 : 8 + n] + bytes(b)
    return _pack(json.dumps(h).encode(), body, pad=bool(rng.integers(2)))


def _library_tensors(path) -> dict[str, np.ndarray] | None:
    try:
        with safe_open(path, "numpy") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception:
        return None


def test_safetensors_mutations_agree_with_the_library(saved, tmp_path):
    original = (saved / "model.safetensors").read_bytes()
    rng = np.random.default_rng(0)
    folder = tmp_path / "m"
    shutil.copytree(saved, folder)
    (folder / ".jimm-save.json").unlink()  # hand-edited files: read as a folder jimm did not write
    target = folder / "model.safetensors"
    outcomes = {"rejected by both": 0, "loaded, same values": 0, "accepted, refused by jimm": 0}
    for case in range(CASES):
        target.write_bytes(_mutations(original, rng))
        reference = _library_tensors(target)
        try:
            model = jimm.VisionTransformer.from_pretrained(folder)
        except ValueError as err:
            assert str(target) in str(err) or "does not match the model" in str(err), (case, str(err))
            outcomes["rejected by both" if reference is None else "accepted, refused by jimm"] += 1
            continue
        except Exception as err:  # anything but a clear ValueError is a failure
            pytest.fail(f"case {case}: unclear {type(err).__name__}: {err}")
        assert reference is not None, f"case {case}: jimm loaded a file the safetensors library rejects"
        table = name_table(model.config, prefix="vit.", with_head=True)
        for name, _, _, produce in tensors_to_save(model, table, LAYERS):
            np.testing.assert_array_equal(produce(), reference[name], err_msg=f"case {case}: {name}")
        outcomes["loaded, same values"] += 1
    assert min(outcomes.values()) > 0, outcomes  # every branch was exercised


def test_unsupported_dtype_is_named(saved, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(saved, folder)
    (folder / ".jimm-save.json").unlink()
    _, header, body = _split((folder / "model.safetensors").read_bytes())
    name = next(k for k in header if k.endswith("classifier.bias"))
    header[name]["dtype"] = "U32"
    header[name]["shape"] = [3]
    (folder / "model.safetensors").write_bytes(_pack(json.dumps(header).encode(), body))
    with pytest.raises(ValueError, match=r"wrong dtype.*\n.*classifier.bias: uint32"):
        jimm.VisionTransformer.from_pretrained(folder)


@pytest.fixture(scope="module")
def torch_folder(saved, tmp_path_factory):
    path = tmp_path_factory.mktemp("bin")
    convert_checkpoint(saved, path, to_format="pytorch")
    (path / ".jimm-save.json").unlink()
    return path


def test_truncated_and_hostile_pytorch_bin(torch_folder, tmp_path):
    folder = tmp_path / "b"
    shutil.copytree(torch_folder, folder)
    weights = folder / "pytorch_model.bin"
    data = weights.read_bytes()
    for cut in (len(data) // 3, len(data) - 10):
        weights.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="could not be read as a weights-only PyTorch checkpoint"):
            jimm.VisionTransformer.from_pretrained(folder)

    class Evil:
        def __reduce__(self):
            return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))

    torch.save({"x": Evil()}, weights, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(ValueError, match="never unpickles"):
        jimm.VisionTransformer.from_pretrained(folder)
    state = torch.load(torch_folder / "pytorch_model.bin", weights_only=True)
    state["vit.embeddings.cls_token"] = state["vit.embeddings.cls_token"].to(torch.complex64)
    torch.save(state, weights)
    with pytest.raises(ValueError, match=r"wrong dtype tensor.*\n.*cls_token: complex64"):
        jimm.VisionTransformer.from_pretrained(folder)


def test_hostile_npz(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, **{"embedding/kernel": np.zeros((4, 4, 3, 8), np.float32)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable .npz"):
        jimm.VisionTransformer.from_pretrained(path)
    np.savez(path, **{"embedding/kernel": np.array([object()], dtype=object)})
    with pytest.raises(ValueError, match="object array, which is never unpickled"):
        jimm.VisionTransformer.from_pretrained(path)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("embedding/kernel.npy", b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match="not a readable .npz"):
        jimm.VisionTransformer.from_pretrained(path)
