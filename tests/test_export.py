"""`jimm.export`: every family's towers as ONNX (run in onnxruntime) and StableHLO (run through
`jax.export.deserialize`) equal jimm's own outputs at two batch sizes; the facts and files written beside them;
bf16; refusing to overwrite files jimm did not write; the `jimm export` command.

Tiny models with distinct odd sizes; CLIP and SigLIP are saved by transformers with their tokenizer and image
processor (tests/image_text_fixtures.py) so the tokenizer files are copied.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from image_text_fixtures import save_pair

import jimm
from jimm.common.attention import reference_attention
from jimm.data.preprocess import ImageProcessorConfig
from jimm.export import export_model, load_stablehlo
from jimm.io.atomic_save import FolderConflictError

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("jax2onnx")

ATOL = 1e-5
BATCHES = (1, 3)
VISION = dict(hidden_size=15, num_hidden_layers=2, num_attention_heads=3, image_size=21, patch_size=3)
BUILDERS = {
    "vit": lambda tmp: jimm.VisionTransformer.from_config(
        dict(VISION, model_type="vit", intermediate_size=17, num_labels=5, layer_norm_eps=1e-6), sharding=None
    ),
    "deit": lambda tmp: jimm.VisionTransformer.from_config(
        dict(VISION, model_type="deit", intermediate_size=17, num_labels=5), sharding=None
    ),
    "dinov2": lambda tmp: jimm.DINOv2Model.from_config(
        dict(VISION, model_type="dinov2_with_registers", mlp_ratio=3, num_register_tokens=2), sharding=None
    ),
    "dinov3": lambda tmp: jimm.DINOv3Model.from_config(
        dict(VISION, hidden_size=24, model_type="dinov3_vit", intermediate_size=19, num_register_tokens=2),
        sharding=None,
    ),
    "clip": lambda tmp: jimm.CLIP.from_pretrained(_saved("clip", tmp), sharding=None),
    "siglip": lambda tmp: jimm.SigLIP.from_pretrained(_saved("siglip", tmp), sharding=None),
}
FAMILIES = list(BUILDERS)


def _saved(kind, tmp):
    path = tmp / f"{kind}-checkpoint"
    save_pair(kind, path)
    return path


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def models(tmp):
    return {}


def model_of(models, tmp, family):
    if family not in models:
        models[family] = BUILDERS[family](tmp)
    return models[family]


def inputs(model, tower: str, batch: int) -> np.ndarray:
    rng = np.random.RandomState(batch)
    if tower == "image":
        h, w = model.vision_tower.config.image_size
        return rng.randn(batch, h, w, 3).astype(np.float32)
    vocab, length = model.text_model.config.vocab_size, jimm.export.text_length(model)
    return rng.randint(0, vocab - 2, (batch, length)).astype(np.int32)


_references: dict = {}


def reference(model, tower: str, x: np.ndarray) -> np.ndarray:
    """jimm's output (cached: both formats compare against the same one, compiled once)."""
    key = (id(model), tower, x.shape, x.tobytes())
    if key not in _references:
        _references[key] = _run_jimm(model, tower, x)
    return _references[key]


def _run_jimm(model, tower: str, x: np.ndarray) -> np.ndarray:
    if tower == "text":
        return np.asarray(model.encode_text(x), np.float32)
    return np.asarray(model.encode_image(x) if hasattr(model, "encode_text") else model(x), np.float32)


def run_file(path, x: np.ndarray) -> np.ndarray:
    if path.suffix == ".stablehlo":
        return np.asarray(load_stablehlo(path).call(x), np.float32)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options)
    (name,) = [i.name for i in session.get_inputs()]
    return np.asarray(session.run(None, {name: x})[0], np.float32)


@pytest.mark.parametrize("format", ["onnx", "stablehlo"])
@pytest.mark.parametrize("family", FAMILIES)
def test_export_equals_jimm(models, tmp, family, format):
    model = model_of(models, tmp, family)
    out = tmp / f"{family}-{format}"
    written = {p.name for p in model.export(out, format=format)}
    modules = [m for _, m in nnx.iter_graph(model)]  # the export changed a copy, not the model
    assert not any(getattr(m, "attention_fn", None) is reference_attention for m in modules)
    assert all(m.scan_layers for m in modules if hasattr(m, "unstack_layers"))
    towers = ["image", "text"] if family in ("clip", "siglip") else ["image"]
    assert {f"{t}.{format}" for t in towers} | {"export.json", "preprocessor_config.json"} <= written
    facts = json.loads((out / "export.json").read_text())
    for tower in towers:
        entry = facts["files"][f"{tower}.{format}"]
        assert entry["input"]["shape"][0] == entry["output"]["shape"][0] == "B"
        for batch in BATCHES:
            x = inputs(model, tower, batch)
            got, want = run_file(out / f"{tower}.{format}", x), reference(model, tower, x)
            assert got.shape == want.shape == (batch, *entry["output"]["shape"][1:])
            np.testing.assert_allclose(got, want, atol=ATOL, rtol=0, err_msg=f"{family} {tower} batch {batch}")


@pytest.mark.parametrize("family", ["vit", "clip"])
def test_facts_beside_the_files(models, tmp, family):
    model = model_of(models, tmp, family)
    out = tmp / f"{family}-facts"
    platforms = ("cpu", "cuda") if family == "vit" else None  # lowered for a GPU too, here on a CPU
    export_model(model, out, format="stablehlo", platforms=platforms)
    if platforms:
        assert load_stablehlo(out / "image.stablehlo").platforms == platforms
    facts = json.loads((out / "export.json").read_text())
    proc = ImageProcessorConfig.for_model(model)
    pre = facts["preprocessing"]
    assert (pre["mean"], pre["std"]) == (list(proc.image_mean), list(proc.image_std))
    assert pre["layout"] == "NHWC"
    assert facts["files"]["image.stablehlo"]["input"]["shape"] == ["B", *model.vision_tower.config.image_size, 3]
    assert ImageProcessorConfig.from_json((out / "preprocessor_config.json").read_text()) == proc
    if family == "clip":
        text = facts["text"]
        assert text["length"] == facts["files"]["text.stablehlo"]["input"]["shape"][1] == model.tokenizer.max_length
        assert text["tokenizer"]["files"] == [p.name for p in model.tokenizer.files]
        for path in model.tokenizer.files:
            assert (out / path.name).read_bytes() == path.read_bytes()
        ids = model.tokenize(["a photo of a cat."])
        np.testing.assert_allclose(run_file(out / "text.stablehlo", ids), reference(model, "text", ids), atol=ATOL)


def test_bf16_export(tmp):
    """bf16 runs as StableHLO; as ONNX it is refused with the reason (ONNX's Einsum has no bfloat16 type, so
    onnxruntime would refuse the file) rather than written unloadable."""
    model = jimm.VisionTransformer.from_config(
        dict(VISION, model_type="vit", intermediate_size=17, num_labels=5),
        dtype=jnp.bfloat16,
        param_dtype=jnp.bfloat16,
        sharding=None,
    )
    x = inputs(model, "image", 3)
    out = tmp / "bf16-stablehlo"
    export_model(model, out, format="stablehlo")
    facts = json.loads((out / "export.json").read_text())
    assert facts["files"]["image.stablehlo"]["output"]["dtype"] == "bfloat16"
    exported = load_stablehlo(out / "image.stablehlo")
    assert exported.out_avals[0].dtype == jnp.bfloat16
    # a few bf16 steps (2^-9 at 0.1): the export attends through the explicit path, jimm through its CPU kernel
    np.testing.assert_allclose(run_file(out / "image.stablehlo", x), np.asarray(model(x), np.float32), atol=2e-3)
    with pytest.raises(ValueError, match="no bfloat16 type.*format='stablehlo'"):
        export_model(model, tmp / "bf16-onnx", format="onnx")
    assert not (tmp / "bf16-onnx").exists()


def test_refuses_files_jimm_did_not_write(models, tmp):
    model = model_of(models, tmp, "vit")
    out = tmp / "foreign"
    out.mkdir()
    (out / "image.stablehlo").write_bytes(b"not ours")
    with pytest.raises(FolderConflictError, match="image.stablehlo"):
        export_model(model, out, format="stablehlo")
    assert (out / "image.stablehlo").read_bytes() == b"not ours"
    export_model(model, out, format="stablehlo", overwrite=True)
    export_model(model, out, format="stablehlo")  # jimm's own export: replaced without asking
    assert load_stablehlo(out / "image.stablehlo").in_avals[0].shape[1:] == (21, 21, 3)


def test_bad_arguments(models, tmp):
    model = model_of(models, tmp, "vit")
    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        export_model(model, tmp / "bad", format="tflite")
    with pytest.raises(ValueError, match=r"has the tower\(s\) \['image'\]; cannot export \['text'\]"):
        export_model(model, tmp / "bad", towers=["text"])
    with pytest.raises(ValueError, match="platforms= applies to the StableHLO format only"):
        export_model(model, tmp / "bad", format="onnx", platforms=["cpu"])
    assert not (tmp / "bad").exists()


def test_cli_export_runs_without_jimm(models, tmp):
    from jimm.cli import main

    model_of(models, tmp, "clip")
    out = tmp / "cli-out"
    argv = ["export", str(tmp / "clip-checkpoint"), str(out), "--format", "stablehlo", "--towers", "image"]
    assert main(argv) == 0
    assert not (out / "text.stablehlo").exists()
    x = inputs(models["clip"], "image", 2)
    np.save(tmp / "x.npy", x)
    script = textwrap.dedent(f"""
        import sys, numpy as np, jax
        exported = jax.export.deserialize(bytearray(open({str(out / "image.stablehlo")!r}, "rb").read()))
        np.save({str(tmp / "y.npy")!r}, np.asarray(exported.call(np.load({str(tmp / "x.npy")!r}))))
        assert not any(m.split(".")[0] == "jimm" for m in sys.modules), "jimm was imported"
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp)
    np.testing.assert_allclose(np.load(tmp / "y.npy"), reference(models["clip"], "image", x), atol=ATOL)


@pytest.mark.parametrize(
    "extra, setup, expected",
    [
        (["--format", "onnx", "--platforms", "cpu"], None, "platforms= applies to the StableHLO format only"),
        (["--towers", "text"], None, "cannot export ['text']"),
        (["--format", "stablehlo"], "image.stablehlo", "which jimm did not write; pass overwrite=True (`--overwrite`"),
        (["--format", "tflite"], None, "invalid choice: 'tflite'"),
    ],
    ids=["platforms-with-onnx", "no-such-tower", "foreign-file", "unknown-format"],
)
def test_cli_bad_input_is_one_line(models, tmp, tmp_path, capsys, extra, setup, expected):
    from jimm.cli import main

    model_of(models, tmp, "vit").save_pretrained(tmp / "vit-checkpoint", overwrite=True)
    out = tmp_path / "out"
    if setup:
        out.mkdir()
        (out / setup).write_bytes(b"theirs")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    try:
        code = main(["export", str(tmp / "vit-checkpoint"), str(out), *extra])
    except SystemExit as exit_info:  # argparse
        code = exit_info.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("jimm: error: ") and expected in err[0], err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("cls, kind", [(jimm.CLIPVisionModel, "clip"), (jimm.SigLIPTextModel, "siglip")])
def test_single_towers(tmp, cls, kind):
    """A tower loaded on its own (here a CLIP image classifier and a SigLIP text tower) exports its one file."""
    from image_text_fixtures import hf_config

    extra = {"do_classification": True, "id2label": {0: "cat", 1: "dog", 2: "car"}} if kind == "clip" else {}
    model = cls.from_config(hf_config(kind).to_dict(), sharding=None, **extra)
    tower = "text" if "text" in cls.TOWERS else "image"
    out = tmp / f"single-{kind}"
    written = {p.name for p in export_model(model, out, format="stablehlo")}
    assert {n for n in written if n.endswith(".stablehlo")} == {f"{tower}.stablehlo"}
    x = inputs(model, tower, 2)
    want = np.asarray(model(x), np.float32)
    assert want.shape == ((2, 3) if kind == "clip" else (2, 21))
    np.testing.assert_allclose(run_file(out / f"{tower}.stablehlo", x), want, atol=ATOL)
