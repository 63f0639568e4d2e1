"""Writes one benchmark's section of docs/BENCHMARKS.md, leaving the other sections as they are."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"
HEADER = ("# Benchmarks\n\nEach section is written by its script under `bench/` "
          "(machine, date, command, medians, and the ratio to a baseline measured in the same run).\n")


def write_section(key: str, title: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replace (or append) the block between `<!-- key:start -->` and `<!-- key:end -->`."""
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER
    block = f"<!-- {key}:start -->\n## {title}\n\n{body.strip()}\n<!-- {key}:end -->"
    pattern = re.compile(rf"<!-- {re.escape(key)}:start -->.*?<!-- {re.escape(key)}:end -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    """CPU model, cores, memory and Python, for the 'Machine:' line of a section."""
    model = cpu_model()
    try:
        mem_kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        memory = f"{mem_kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        memory = "? GiB"
    return f"{model}, {os.cpu_count()} cores, {memory}, {platform.system()} {platform.machine()}, Python {platform.python_version()}"
