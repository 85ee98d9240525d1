"""Shared benchmark helpers: robust timing and appending a dated, versioned section to docs/benchmarks.md."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

REPORT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def median_time(fn: Callable[[], object], *, repeats: int = 5, warmup: int = 2) -> float:
    """Median wall time of `fn()` in seconds, after `warmup` calls (compilation, caches)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def environment() -> str:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "-"

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    packages = ", ".join(f"{n} {version(n)}" for n in ("jax", "flax", "torch", "transformers"))
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{date}; {os.cpu_count()} cores, {cpu}; {packages}; commit {commit}"


def append_report(section: str) -> None:
    """Append a section with its environment line to docs/benchmarks.md."""
    REPORT.parent.mkdir(exist_ok=True)
    if not REPORT.exists():
        REPORT.write_text("# Benchmarks\n\nEach section is appended by a script in `benchmarks/`; newest last.\n")
    with open(REPORT, "a", encoding="utf-8") as f:
        f.write(f"\n{section}\n\n_{environment()}_\n")
