"""Shared benchmark helpers: timing, the child-process protocol, and writing docs/benchmarks.md.

The page has a summary table at the top (one row per measure, keyed by its first cell; a script replaces its own
rows) and the history below it, newest first. `add_section` inserts a section under the history marker and
updates summary rows in one atomic write (temp file + rename), so a crash never leaves the page half-written.

    python benchmarks/_report.py --title "GPU suite: NVIDIA H200" a.json b.json   # fragments -> one section
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

REPORT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
SUMMARY_START = "<!-- summary: start (one row per measure, keyed by its first cell; scripts replace their rows) -->"
SUMMARY_END = "<!-- summary: end -->"
HISTORY = "<!-- history: newest first; benchmarks/_report.py inserts each new section below this line -->"
SUMMARY_HEADER = (
    "| measure | jimm | reference | jimm / reference | measured | commit |",
    "|---|---|---|---|---|---|",
)
SKELETON = f"""# Benchmarks

Written by the scripts in `benchmarks/`. The summary holds the latest value of each measure; the history below
it holds every run, newest first, with date, machine, versions and commit.

## Summary

{SUMMARY_START}
{SUMMARY_HEADER[0]}
{SUMMARY_HEADER[1]}
{SUMMARY_END}

## History

{HISTORY}
"""
OOM_MARKERS = ("RESOURCE_EXHAUSTED", "out of memory", "Out of memory", "OutOfMemoryError", "CUDA_ERROR_OUT_OF_MEMORY")


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


class PeakRss:
    """`with PeakRss() as rss: ...` then `rss.growth`: the peak resident memory above the start, in bytes, sampled
    every 2 ms by a thread (a loader's transient buffers show up; an end-of-block reading would miss them)."""

    def __enter__(self) -> PeakRss:
        import psutil

        self._process = psutil.Process()
        self._base = self._peak = self._process.memory_info().rss
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.002):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._sampler.join()
        self._peak = max(self._peak, self._process.memory_info().rss)
        self.growth = self._peak - self._base


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def today() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")


def environment() -> str:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "-"

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    packages = ", ".join(f"{n} {version(n)}" for n in ("jax", "jaxlib", "flax", "torch", "transformers"))
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{date}; {os.cpu_count()} cores, {cpu}; {packages}; commit {commit()}"


# --------------------------------------------------------------------------------------------------------------
# The page.


@dataclasses.dataclass(frozen=True)
class SummaryRow:
    """One measure's latest value. `ratio` is jimm's value over the reference's (the measure says which is better)."""

    measure: str
    jimm: str
    reference: str
    ratio: str
    measured: str  # date and machine
    commit: str

    def line(self) -> str:
        cells = (self.measure, self.jimm, self.reference, self.ratio, self.measured, self.commit)
        return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"


def _key(line: str) -> str:
    return line.strip().strip("|").split("|", 1)[0].strip()


def insert_section(page: str, section: str, summary: Sequence[SummaryRow] = ()) -> str:
    """The page with `section` first in the history and `summary` rows replacing those with the same measure."""
    for marker in (SUMMARY_START, SUMMARY_END, HISTORY):
        if marker not in page:
            raise ValueError(
                f"docs/benchmarks.md lacks the marker line {marker!r}; restore it (see benchmarks/_report.py)"
            )
    head, rest = page.split(SUMMARY_START, 1)
    table, tail = rest.split(SUMMARY_END, 1)
    rows = [line for line in table.strip().splitlines() if line.startswith("|")][len(SUMMARY_HEADER) :]
    new = {row.measure: row.line() for row in summary}
    rows = [new.pop(_key(line), line) for line in rows] + list(new.values())
    table = "\n".join((SUMMARY_START, *SUMMARY_HEADER, *rows, ""))
    before, after = tail.split(HISTORY, 1)
    return f"{head}{table}{SUMMARY_END}{before}{HISTORY}\n\n{section.strip()}\n\n{after.lstrip()}".rstrip() + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temp file in the same folder and a rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_section(title: str, body: str, *, summary: Sequence[SummaryRow] = (), report: Path = REPORT) -> None:
    """Insert `## date, commit: title`, `body` and the environment newest-first, and update `summary`: one write."""
    report = Path(report)
    page = report.read_text(encoding="utf-8") if report.exists() else SKELETON
    section = f"## {today()}, commit {commit()}: {title}\n\n{body.strip()}\n\n_{environment()}_"
    write_atomic(report, insert_section(page, section, summary))


# --------------------------------------------------------------------------------------------------------------
# Fragments: the GPU suite collects each script's section and writes them as one.


def write_fragment(path: Path, title: str, body: str, summary: Sequence[SummaryRow] = ()) -> None:
    data = {"title": title, "body": body, "summary": [dataclasses.asdict(r) for r in summary]}
    write_atomic(Path(path), json.dumps(data, indent=1))


def temp_report() -> Path:
    """A copy of docs/benchmarks.md in a new temp folder, for dry runs."""
    path = Path(tempfile.mkdtemp(prefix="jimm-dry-run-")) / "benchmarks.md"
    if REPORT.exists():
        shutil.copy(REPORT, path)
    return path


def publish(title: str, body: str, summary: Sequence[SummaryRow], *, fragment: Path | None, report: Path) -> None:
    """A script's result: a fragment for the suite to combine, or a section of its own in the report."""
    if fragment is not None:
        write_fragment(fragment, title, body, summary)
        print(f"wrote fragment {fragment}")
    else:
        add_section(title, body, summary=summary, report=report)
        print(f"wrote {report}")


def combine(title: str, fragments: Sequence[Path], *, report: Path = REPORT, notes: str = "") -> None:
    """One section titled `title` holding every fragment that exists (a missing one is named, not fatal)."""
    parts, summary = [], []
    if notes:
        parts.append(notes.strip())
    for path in fragments:
        if not Path(path).exists():
            parts.append(f"_{Path(path).stem}: no result (the script did not finish; see the suite's log)._")
            continue
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        parts.append(f"### {data['title']}\n\n{data['body'].strip()}")
        summary += [SummaryRow(**row) for row in data["summary"]]
    add_section(title, "\n\n".join(parts), summary=summary, report=report)
    print(f"wrote {report}")


# --------------------------------------------------------------------------------------------------------------
# Child processes: each prints `RESULT {json}` lines; a crash or a timeout is reported, never raised.


@dataclasses.dataclass
class ChildRun:
    results: list[dict]
    error: str | None  # None when the child exited 0


def describe_failure(text: str) -> str:
    """ "does not fit" for an out-of-memory failure, else the last line that names an error (<= 120 chars)."""
    if any(marker in text for marker in OOM_MARKERS):
        return "does not fit"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()] or ["failed"]
    last = next((line for line in reversed(lines) if "Error" in line or "error" in line), lines[-1])
    return last.replace("|", "/")[:120]


def run_child(cmd: Sequence[str], *, timeout: float, env: dict[str, str] | None = None) -> ChildRun:
    """Run `cmd` for at most `timeout` seconds (may be inf); collect its `RESULT` lines even when it crashes."""
    try:
        limit = max(timeout, 1) if math.isfinite(timeout) else None
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=env)
        out, err, code = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as expired:

        def text(x) -> str:
            return x.decode(errors="replace") if isinstance(x, bytes) else (x or "")

        out, err, code = text(expired.stdout), text(expired.stderr) + f"\ntimed out after {timeout:.0f} s", -1
    results = [json.loads(line[len("RESULT ") :]) for line in out.splitlines() if line.startswith("RESULT ")]
    if code != 0:
        sys.stderr.write(err[-4000:])
    return ChildRun(results, None if code == 0 else describe_failure(err))


def emit(result: dict) -> None:
    """What a child prints for each result (flushed, so a later crash keeps it)."""
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fragments", nargs="+", type=Path)
    parser.add_argument("--title", required=True)
    parser.add_argument("--notes", default="", help="a paragraph under the title")
    parser.add_argument("--report", type=Path, default=REPORT)
    args = parser.parse_args()
    combine(args.title, args.fragments, report=args.report, notes=args.notes)


if __name__ == "__main__":
    main()
