"""The documentation site (mkdocs.yml, docs/api/): the API reference covers the public API, and it builds strictly.

Public API: `jimm.__all__` and the `__all__` of every module that has one. A module is either rendered whole by a
`::: module` directive (mkdocstrings renders exactly its `__all__`) or, for a module that only re-exports,
`::: module` with `members: false` followed by a link to each name it re-exports.
"""

import ast
import importlib.util
import inspect
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import jimm

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
API = ROOT / "docs" / "api"
# `::: path` and the indented option lines under it
DIRECTIVE = re.compile(r"^::: ([\w.]+)[ \t]*\n((?:[ \t]+\S.*\n)*)", re.M)
NEEDS = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_all(tree: ast.Module, module: str) -> list[str] | None:
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        if isinstance(node, ast.AnnAssign):
            target = node.target
        if isinstance(target, ast.Name) and target.id == "__all__":
            try:
                return list(ast.literal_eval(node.value))
            except ValueError:  # computed (`list(_CLASSES)`): ask the module
                return list(importlib.import_module(module).__all__)
    return None


def bound_names(tree: ast.Module) -> set[str]:
    """Names a module binds one per statement at top level (what griffe, which never imports, can document)."""
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def public_modules() -> dict[str, tuple[list[str], set[str], Path]]:
    """Every module with an `__all__`: (its `__all__`, the names it binds, its file)."""
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        exported = top_level_all(tree, module_name(path))
        if exported is not None:
            bound = bound_names(tree) | {p.stem for p in path.parent.glob("*") if path.name == "__init__.py"}
            found[module_name(path)] = (exported, bound, path)
    return found


def api_directives() -> dict[str, tuple[bool, str]]:
    """Directive path -> (renders its members, the page text up to the next directive)."""
    found = {}
    for page in sorted(API.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        matches = list(DIRECTIVE.finditer(text))
        for match, after in zip(matches, [*matches[1:], None], strict=True):
            section = text[match.end() : after.start() if after else len(text)]
            renders = not re.search(r"^\s+members:\s*(false|no|\[\])\s*$", match.group(2), re.M)
            found[match.group(1)] = (renders, section)
    return found


def hand_anchors() -> set[str]:
    """`[](){#id}` anchors: hand-written entries for names no static reader can see (a module `__getattr__`)."""
    return {m for page in API.glob("*.md") for m in re.findall(r"\[\]\(\)\{#([\w.]+)\}", page.read_text("utf-8"))}


def test_every_module_with_an_all_is_in_the_api_reference():
    missing = sorted(set(public_modules()) - set(api_directives()))
    assert not missing, f"modules with an __all__ but no `::: module` directive in docs/api/*.md: {missing}"


def test_every_exported_name_is_documented():
    directives, anchors = api_directives(), hand_anchors()
    problems = []
    for module, (exported, bound, path) in public_modules().items():
        renders, section = directives.get(module, (True, ""))
        for name in exported:
            if f"{module}.{name}" in anchors:
                continue
            if not renders and f"[`{name}`][" not in section:
                problems.append(f"{module}.{name}: `members: false` in docs/api, but no [`{name}`][...] link after it")
            elif renders and name not in bound:
                problems.append(
                    f"{module}.{name}: not bound by its own statement in {path.relative_to(ROOT)}, so the API "
                    f"reference cannot see it: bind it alone (`{name} = ...`, not tuple unpacking), or add a "
                    f"hand-written `[](){{#{module}.{name}}}` entry to docs/api"
                )
    assert not problems, "\n".join(problems)


def test_top_level_names_are_on_the_api_index_and_have_docstrings():
    renders, _ = api_directives()["jimm"]
    index = (API / "index.md").read_text(encoding="utf-8")
    assert renders and "::: jimm\n" in index
    lazy = {name for name in jimm.__all__ if name not in vars(jimm)}  # resolved by jimm.__getattr__
    assert all(f"{{#jimm.{name}}}" in index for name in lazy), lazy
    undocumented = [name for name in jimm.__all__ if not (inspect.getdoc(getattr(jimm, name)) or "").strip()]
    assert not undocumented, f"public names without a docstring: {undocumented}"


def test_directive_pattern_reads_options():
    """The page parser above: a directive with `members: false` is a re-export list, one without renders all."""
    text = "::: a.b\n    options:\n      members: false\n\nRe-exports [`x`][a.c.x].\n\n::: a.c\n"
    found = {m.group(1): m.group(2) for m in DIRECTIVE.finditer(text)}
    assert set(found) == {"a.b", "a.c"} and "members: false" in found["a.b"] and found["a.c"] == ""


def inventory_names(path: Path) -> set[str]:
    """The object names in a Sphinx `objects.inv` (4 header lines, then a zlib-compressed `name domain:role ...`)."""
    body = zlib.decompress(path.read_bytes().split(b"\n", 4)[4]).decode()
    return {line.split(" ", 1)[0] for line in body.splitlines() if line}


@pytest.mark.slow
def test_site_builds_strictly(tmp_path):
    missing = [name for name in NEEDS if importlib.util.find_spec(name.split(".")[0]) is None]
    if missing:
        pytest.skip(
            f"the docs extra is not installed ({', '.join(missing)} missing): `pip install -e '.[docs]'`; "
            "CI builds the site with `bash scripts/build_docs.sh`"
        )
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    documented = inventory_names(site / "objects.inv")
    directives, anchors = api_directives(), hand_anchors()
    absent = [
        f"{module}.{name}"
        for module, (exported, _, _) in public_modules().items()
        if directives[module][0]
        for name in exported
        if f"{module}.{name}" not in documented | anchors
    ]
    assert not absent, f"exported but not rendered in the API reference: {absent}"
