"""The one loader (`jimm.models.loading`), checked the same way for every family.

One table of classifier-head cases (kept, reordered labels, renamed labels, new classes, headless) runs for every
family with a head; a corrupt depth is refused for every family before a name table is built; a load reads a
checkpoint's config.json and header once (counted); and jimm's modules import one another without a cycle.
"""

import ast
import json
import logging
import pkgutil
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as T
from conftest import TINY as VIT_TINY
from conftest import images, to_torch
from image_text_fixtures import CLIP_TEXT, CLIP_VISION, SIGLIP_TEXT, SIGLIP_VISION, tokenizer_folder
from safetensors.numpy import save_file

import jimm
from jimm.io.safetensors import SafetensorsFile
from jimm.io.state import CheckpointMismatchError

LABELS = {0: "cat", 1: "dog", 2: "bird"}
REORDERED = {0: "bird", 1: "cat", 2: "dog"}  # the same classes: columns [2, 0, 1] of the stored head
ORDER = [2, 0, 1]
DINO_TINY = dict(hidden_size=15, num_hidden_layers=2, num_attention_heads=3, mlp_ratio=3, image_size=21, patch_size=3)
DINOV3_TINY = dict(
    hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=37, image_size=15, patch_size=3
)
VIT = {k: v for k, v in VIT_TINY.items() if k != "num_labels"}
HEADED = {  # family: (transformers model, jimm class, image size)
    "vit": (lambda: T.ViTForImageClassification(T.ViTConfig(**VIT, id2label=LABELS)), jimm.VisionTransformer, 33),
    "dinov2": (
        lambda: T.Dinov2ForImageClassification(T.Dinov2Config(**DINO_TINY, id2label=LABELS)),
        jimm.DINOv2Model,
        21,
    ),
    "clip": (
        lambda: T.CLIPForImageClassification(
            T.CLIPConfig(vision_config=CLIP_VISION, text_config=CLIP_TEXT, id2label=LABELS)
        ),
        jimm.CLIPVisionModel,
        30,
    ),
    "siglip": (
        lambda: T.SiglipForImageClassification(
            T.SiglipConfig(vision_config=SIGLIP_VISION, text_config=SIGLIP_TEXT, id2label=LABELS)
        ),
        jimm.SigLIPVisionModel,
        28,
    ),
}
DEPTH = {  # where each family's config.json keeps its depth
    "vit": ("num_hidden_layers",),
    "dinov2": ("num_hidden_layers",),
    "dinov3": ("num_hidden_layers",),
    "clip": ("vision_config", "num_hidden_layers"),
    "siglip": ("vision_config", "num_hidden_layers"),
    "clip_pair": ("text_config", "num_hidden_layers"),
    "aimv2": ("num_hidden_layers",),
}
CLASSES = {"dinov3": jimm.DINOv3Model, "clip_pair": jimm.CLIP, "aimv2": jimm.AIMv2Model}
AIMV2_TINY = dict(
    hidden_size=20, num_hidden_layers=2, num_attention_heads=4, intermediate_size=13, image_size=15, patch_size=3
)


def _perturbed(model):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Each family saved by transformers: the headed ones, DINOv3, and a CLIP pair with its tokenizer."""
    root = tmp_path_factory.mktemp("loader")
    out = {}
    for name, (build, _, size) in HEADED.items():
        torch.manual_seed(0)
        model = _perturbed(build())
        model.save_pretrained(root / name)
        x = images(2, size)
        with torch.no_grad():
            out[name] = (root / name, x, model(pixel_values=to_torch(x)).logits.numpy())
    torch.manual_seed(0)
    _perturbed(T.DINOv3ViTModel(T.DINOv3ViTConfig(**DINOV3_TINY))).save_pretrained(root / "dinov3")
    out["dinov3"] = (root / "dinov3", None, None)
    _perturbed(T.Aimv2VisionModel(T.Aimv2VisionConfig(**AIMV2_TINY))).save_pretrained(root / "aimv2")
    out["aimv2"] = (root / "aimv2", None, None)
    pair = root / "clip_pair"
    pair.mkdir()
    ids = tokenizer_folder("clip", pair)
    torch.manual_seed(0)
    T.CLIPModel(T.CLIPConfig(vision_config=CLIP_VISION, text_config={**CLIP_TEXT, **ids})).save_pretrained(pair)
    out["clip_pair"] = (pair, None, None)
    return out


@pytest.fixture(scope="module")
def stored(folders):
    """Each headed family loaded as stored (the reference for the head cases)."""
    return {name: HEADED[name][1].from_pretrained(folders[name][0]) for name in HEADED}


def _class(name):
    return HEADED[name][1] if name in HEADED else CLASSES[name]


def _head(model) -> np.ndarray:
    return np.asarray(model.classifier.kernel[...])


# -- the head policy: one table of cases, every family with a head -------------------------------------------------

HEAD_CASES = {
    "as stored": {},
    "same labels": {"id2label": LABELS},
    "reordered labels": {"id2label": REORDERED},
    "renamed labels": {"id2label": {0: "ant", 1: "bee", 2: "cow"}},
    "new classes": {"num_classes": 5},
    "headless": {"do_classification": False},
}


@pytest.mark.parametrize("case", HEAD_CASES)
@pytest.mark.parametrize("family", HEADED)
def test_head_policy_for_every_family(folders, stored, family, case, caplog):
    path, x, hf_logits = folders[family]
    ref = stored[family]
    with caplog.at_level(logging.WARNING, logger="jimm"):
        model = _class(family).from_pretrained(path, **HEAD_CASES[case])
    replaced = "replacing the classifier head" in caplog.text
    if case == "headless":
        assert not model.do_classification and getattr(model, "classifier", None) is None
        return
    assert model.do_classification
    if case in ("as stored", "same labels"):
        assert not replaced and model.config.id2label == LABELS
        np.testing.assert_array_equal(_head(model), _head(ref))
        if case == "as stored":  # the anchor: the stored head computes transformers' logits
            np.testing.assert_allclose(np.asarray(model(x)), hf_logits, atol=1e-5)
    elif case == "reordered labels":  # the same classes in another order: the rows follow their names
        assert not replaced and model.config.id2label == REORDERED
        np.testing.assert_array_equal(_head(model), _head(ref)[:, ORDER])
        np.testing.assert_allclose(np.asarray(model(x)), hf_logits[:, ORDER], atol=1e-5)
    else:  # new names or a new class count: a new random head, said out loud
        classes = 5 if case == "new classes" else 3
        assert replaced and model.config.num_labels == classes and _head(model).shape[1] == classes
        assert not np.allclose(_head(model)[:, :3], _head(ref))


@pytest.mark.parametrize("family", HEADED)
def test_reordered_labels_through_jimm_from_pretrained(folders, family):
    path, x, hf_logits = folders[family]
    model = jimm.from_pretrained(path, id2label=REORDERED)
    assert model.config.id2label == REORDERED
    np.testing.assert_allclose(np.asarray(model(x)), hf_logits[:, ORDER], atol=1e-5)


# -- a corrupt depth is refused before any name table is built -----------------------------------------------------


@pytest.fixture
def no_name_tables(monkeypatch):
    """Every family's name table raises: a depth check that ran after one was built would fail differently."""

    def built(*args, **kwargs):
        raise AssertionError("a name table was built before the depth check")

    for module in (
        "vit.pretrained",
        "dinov2.pretrained",
        "dinov3.pretrained",
        "image_text.base",  # the image-text families build theirs through Family.hf_name_table
        "aimv2.pretrained",
    ):
        monkeypatch.setattr(f"jimm.models.{module}.name_table", built)


@pytest.mark.parametrize("depth", [10**9, -1, 2.5])
@pytest.mark.parametrize("family", DEPTH)
def test_corrupt_depth_is_refused_before_a_name_table(folders, tmp_path, family, depth, no_name_tables):
    shutil.copytree(folders[family][0], tmp_path / family)
    config_path = tmp_path / family / "config.json"
    config = json.loads(config_path.read_text())
    *outer, key = DEPTH[family]
    node = config
    for part in outer:
        node = node[part]
    node[key] = depth
    config_path.write_text(json.dumps(config))
    expected = CheckpointMismatchError if depth == 10**9 else ValueError
    for load in (_class(family).from_pretrained, jimm.from_pretrained):
        with pytest.raises(expected, match="num_hidden_layers|layers"):
            load(tmp_path / family)


# -- files are read once per load ----------------------------------------------------------------------------------


@pytest.fixture
def reads(monkeypatch):
    """Counts of config.json reads and safetensors header opens."""
    counts = {"config.json": 0, "header": 0}
    read_bytes, read_text, init = Path.read_bytes, Path.read_text, SafetensorsFile.__init__

    def counted(original):
        def read(self, *args, **kwargs):
            if self.name == "config.json":
                counts["config.json"] += 1
            return original(self, *args, **kwargs)

        return read

    def opened(self, *args, **kwargs):
        counts["header"] += 1
        return init(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_bytes", counted(read_bytes))
    monkeypatch.setattr(Path, "read_text", counted(read_text))
    monkeypatch.setattr(SafetensorsFile, "__init__", opened)
    return counts


@pytest.mark.parametrize("entry", ["class", "jimm.from_pretrained"])
@pytest.mark.parametrize("family", [*HEADED, "dinov3", "clip_pair", "aimv2"])
def test_config_and_header_are_read_once_per_load(folders, family, entry, reads):
    load = _class(family).from_pretrained if entry == "class" else jimm.from_pretrained
    model = load(folders[family][0])
    assert reads == {"config.json": 1, "header": 1}
    if family == "clip_pair":
        assert model.tokenizer is not None  # the tokenizer was read too, from the same parsed config


@pytest.fixture(scope="module")
def timm_file(folders, tmp_path_factory):
    """The ViT checkpoint as a timm state dict: one file, no config.json; and the model loaded from HF."""
    from jimm.models.vit.formats import timm, to_foreign
    from jimm.models.vit.names import classic_name

    path = folders["vit"][0]
    vit = jimm.VisionTransformer.from_pretrained(path)
    hf = T.ViTForImageClassification.from_pretrained(path)
    tensors = {classic_name(k).removeprefix("vit."): v.numpy() for k, v in hf.state_dict().items()}
    weights = tmp_path_factory.mktemp("timm") / "vit_timm.safetensors"
    save_file(to_foreign(timm.rules(vit.config, with_head=True), tensors), str(weights))
    return weights, vit


@pytest.mark.parametrize("entry", ["class", "jimm.from_pretrained"])
def test_a_config_less_checkpoint_header_is_read_once(timm_file, entry, monkeypatch):
    weights, vit = timm_file
    counts = {"header": 0}
    init = SafetensorsFile.__init__

    def opened(self, *args, **kwargs):
        counts["header"] += 1
        return init(self, *args, **kwargs)

    monkeypatch.setattr(SafetensorsFile, "__init__", opened)
    load = jimm.VisionTransformer.from_pretrained if entry == "class" else jimm.from_pretrained
    model = load(weights, config=vit.config)  # a tiny width: timm's head count cannot be inferred
    assert counts == {"header": 1}
    np.testing.assert_array_equal(_head(model), _head(vit))


def test_a_config_less_layout_checks_depth_before_its_rules(timm_file):
    weights, vit = timm_file
    with pytest.raises(CheckpointMismatchError, match="asks for 1000000000 layers"):
        jimm.VisionTransformer.from_pretrained(weights, config=vit.config.replace(num_hidden_layers=10**9))


# -- no import cycles ----------------------------------------------------------------------------------------------


def _lazy_aliases(tree: ast.Module) -> set[ast.AST]:
    """The nodes inside a module-level `__getattr__`: it runs only once both modules are fully imported (a name kept
    at an old path, e.g. the original jimm's `jimm.common.transformer.Transformer`), so it cannot make a circle."""
    return {
        node
        for fn in tree.body
        if isinstance(fn, ast.FunctionDef) and fn.name == "__getattr__"
        for node in ast.walk(fn)
    }


def _imports(module: str, path: Path, modules: set[str]) -> set[str]:
    """The jimm modules `module` imports anywhere (top level or inside functions), from its source."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    tree = ast.parse(path.read_text())
    aliases = _lazy_aliases(tree)
    for node in ast.walk(tree):
        if node in aliases:
            continue
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            base = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            submodules = {f"{base}.{alias.name}" for alias in node.names} & modules
            out |= submodules if len(submodules) == len(node.names) else {base, *submodules}
    return {name for name in out if name in modules and name != module}


def test_no_import_cycles():
    root = Path(jimm.__file__).parent
    paths = {"jimm": root / "__init__.py"}
    for info in pkgutil.walk_packages([str(root)], prefix="jimm."):
        rel = Path(*info.name.split(".")[1:])
        paths[info.name] = root / rel / "__init__.py" if info.ispkg else (root / rel).with_suffix(".py")
    modules = set(paths)
    graph = {m: _imports(m, p, modules) for m, p in paths.items()}
    # A package's __init__ importing its own submodules is how packages re-export; only other edges make circles.
    graph = {
        m: {d for d in deps if not (paths[m].name == "__init__.py" and d.startswith(m + "."))}
        for m, deps in graph.items()
    }
    cycles, state, stack = [], {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                cycles.append([*stack[stack.index(d) :], d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
    assert {"jimm.cli", "jimm.models.registry", "jimm.models.loading"} <= modules  # the walk saw the tree
