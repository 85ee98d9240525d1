"""Two local CPU processes joined by `jax.distributed` train like one process (examples/distributed_train.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "distributed_train.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # the script sets its own device count
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), e.get("PYTHONPATH", "")])
    e["JAX_PLATFORMS"] = "cpu"
    return e


def run(args: list[str], out: Path) -> list[subprocess.Popen]:
    cmd = [sys.executable, str(SCRIPT), "--steps", "3", "--out", str(out), *args]
    return [subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)]


def wait(procs: list[subprocess.Popen], timeout: float = 180) -> None:
    try:
        for p in procs:
            output, _ = p.communicate(timeout=timeout)
            assert p.returncode == 0, output[-4000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def read_tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(path / "model" / "model.safetensors")


def test_two_processes_match_one(tmp_path):
    port = free_port()
    multi = tmp_path / "multi"
    common = ["--num-processes", "2", "--port", str(port)]
    procs = run([*common, "--process-id", "0"], multi) + run([*common, "--process-id", "1"], multi)
    wait(procs)
    single = tmp_path / "single"
    wait(run(["--num-processes", "1"], single))

    np.testing.assert_allclose(
        json.loads((multi / "losses.json").read_text()), json.loads((single / "losses.json").read_text()), atol=1e-5
    )
    # save_pretrained gathered the shards of both processes and wrote once, from process 0
    assert sorted(p.name for p in (multi / "model").iterdir()) == sorted(p.name for p in (single / "model").iterdir())
    got, want = read_tensors(multi), read_tensors(single)
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-5, err_msg=name)
    assert not any(p.name.startswith(".jimm-save-") for p in (multi / "model").iterdir())
