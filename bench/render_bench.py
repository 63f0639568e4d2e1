"""CPU render benchmark: NumPy `render` against a pure-Python per-pixel baseline.

    python bench/render_bench.py [--runs 7] [--large-runs 3] [--baseline-runs 3] [--skip-large] [--no-write]

Cases (programs from bench/programs.py, seeded):
  small  512x512, 2,000 mixed ops   target <= 100 ms; the baseline is measured on this case in the same run
  large  4096x4096, 10,000 mixed ops  reported (the GPU benchmark compares against it)

Writes its section of docs/BENCHMARKS.md (between the render_bench markers).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import numpy as np  # noqa: E402

from auto_gvpie.pixels.program import PixelProgram, parse_program  # noqa: E402
from auto_gvpie.pixels.render import render, render_reference  # noqa: E402
from bench_report import BENCHMARKS, cpu_model, write_section  # noqa: E402
from programs import mixed_program  # noqa: E402

SMALL = (512, 512, 2000, 1)
LARGE = (4096, 4096, 10000, 2)
TARGET_MS = 100.0


def timed_runs(label: str, fn: Callable[[], object], runs: int) -> list[float]:
    """Seconds for each of `runs` calls, with a live status line on stderr."""
    times = []
    for i in range(runs):
        print(f"\r{label}: run {i + 1}/{runs}" + (f", last {times[-1]:.3f} s" if times else ""),
              end="", file=sys.stderr, flush=True)
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    print(f"\r{label}: median {statistics.median(times):.3f} s over {runs} runs" + " " * 20, file=sys.stderr)
    return times


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def case_program(case: tuple[int, int, int, int]) -> PixelProgram:
    return parse_program(mixed_program(*case))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="runs of the small case (default 7)")
    parser.add_argument("--large-runs", type=int, default=3, help="runs of the large case (default 3)")
    parser.add_argument("--baseline-runs", type=int, default=3, help="runs of the pure-Python baseline (default 3)")
    parser.add_argument("--skip-large", action="store_true", help="leave out the 4096x4096 case")
    parser.add_argument("--no-write", action="store_true", help="print the section; do not update BENCHMARKS.md")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()[0]
    small = case_program(SMALL)
    render(small)  # warm-up: imports, font table
    fast = timed_runs("small, numpy render", lambda: render(small), args.runs)
    base_image: list[np.ndarray] = []
    slow = timed_runs("small, pure-Python baseline", lambda: base_image.append(render_reference(small)),
                      args.baseline_runs)
    identical = bool(np.array_equal(render(small), base_image[-1]))
    large_times: list[float] = []
    if not args.skip_large:
        large = case_program(LARGE)
        large_times = timed_runs("large, numpy render", lambda: render(large), args.large_runs)
    load_after = os.getloadavg()[0]

    fast_med, slow_med = statistics.median(fast), statistics.median(slow)
    rows = [
        f"| 512×512, 2,000 mixed ops — pure-Python per-pixel baseline (`render_reference`) | {args.baseline_runs} "
        f"| {fmt(slow_med)} | {fmt(min(slow))} | 1× |",
        f"| 512×512, 2,000 mixed ops — NumPy `render` | {args.runs} | **{fmt(fast_med)}** | {fmt(min(fast))} "
        f"| {slow_med / fast_med:.0f}× faster |",
    ]
    if large_times:
        rows.append(f"| 4096×4096, 10,000 mixed ops — NumPy `render` | {args.large_runs} "
                    f"| **{fmt(statistics.median(large_times))}** | {fmt(min(large_times))} | — |")
    command = " ".join(["python", "bench/render_bench.py", *(argv if argv is not None else sys.argv[1:])])
    verdict = "met" if fast_med * 1000 <= TARGET_MS else "NOT met"
    text = "\n".join([
        f"- Date: {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"- Machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, NumPy {np.__version__}; "
        f"load average {load_before:.1f} before, {load_after:.1f} after (the cores are shared)",
        f"- Command: `{command}`",
        "- Programs: `bench/programs.py: mixed_program(width, height, n_ops, seed)` — seeds "
        f"{SMALL[3]} (small) and {LARGE[3]} (large); an opaque background FILL, then rects, lines, circles "
        "(filled and outline), pixels, text and a few translucent full-canvas FILLs, about a third translucent, "
        "some clipped at the edges.",
        "",
        "| case | runs | median | min | vs baseline |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Target ≤ {TARGET_MS:.0f} ms for the small case: **{verdict}**. "
        f"The NumPy and the baseline images are {'identical' if identical else 'DIFFERENT (a bug)'}.",
    ])
    if args.no_write:
        print(text)
    else:
        write_section("render_bench", "CPU renderer (`bench/render_bench.py`)", text)
        print(text)
        print(f"\nupdated {BENCHMARKS}", file=sys.stderr)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
