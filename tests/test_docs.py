"""Every python example in docs/ runs as written (except those that need the hub or several processes)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
# hub downloads (checkpoints a test cannot fetch), a multi-host launch
NEEDS_MORE_THAN_THIS_MACHINE = (
    "google/vit-",
    "facebook/dino",
    "openai/clip-",
    "google/siglip",
    "jax.distributed.initialize",
)


def examples():
    for page in sorted(DOCS.glob("*.md")):
        for i, code in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S)):
            if not any(marker in code for marker in NEEDS_MORE_THAN_THIS_MACHINE):
                yield pytest.param(code, id=f"{page.stem}-{i}")


def test_docs_have_examples():
    assert len(list(examples())) >= 6


@pytest.mark.parametrize("code", list(examples()))
def test_doc_example_runs(code, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
