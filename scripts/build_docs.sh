#!/usr/bin/env bash
# Builds the documentation site (mkdocs.yml) strictly: any warning fails (a broken link or anchor, a cross-reference
# to nothing, a docstring griffe cannot parse). It runs in its own small environment, .venv-docs (or DOCS_VENV),
# holding only the `docs` extra of pyproject.toml: mkdocstrings reads src/ without importing jimm, so jax, flax and
# torch are not needed. Usage: bash scripts/build_docs.sh [SITE_DIR]   (default: site/)
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${DOCS_VENV:-.venv-docs}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
mapfile -t requirements < <("$venv/bin/python" -c '
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["optional-dependencies"]["docs"]))
')
"$venv/bin/python" -m pip install -q "${requirements[@]}"
NO_MKDOCS_2_WARNING=1 "$venv/bin/python" -m mkdocs build --strict --site-dir "${1:-site}"
