"""Code index: the first `CodeIndex.update()` of a 5,000-file repository of real code, then the
per-task cost (one changed file, nothing changed) and search latency.

The repository is built from sources installed on this machine, so the code is real: Python
modules from the venv's site-packages (pandas, sympy, networkx, scikit-learn, NumPy, SciPy, …)
and, when a Cargo registry is present, up to a tenth of Rust crate sources. They are copied into
a fresh git repository and committed; the index is built in a fresh home.

Two runs, because embedding ~100k symbols on two shared cores takes hours:
1. end to end with the real all-MiniLM-L6-v2 on the first `--real-files` files of the set;
2. the whole `--files` set with random unit vectors in place of the embedding (as
   memory_bench.py does for its big tables), which measures git, parsing, LanceDB and the
   per-task costs at full size. The cold time of the full set with real embeddings is then
   projected from run 2 plus its symbol count at run 1's embedding rate.

    .venv/bin/python bench/index_bench.py [--files 5000] [--real-files 300] [--warm 5] [--no-write]
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from auto_gvpie import codeindex  # noqa: E402
from auto_gvpie.codeindex import MAX_FILE_BYTES, CodeIndex, _indexable  # noqa: E402
from auto_gvpie.memory import EMBED_DIM, _disk_bytes, embedding_model  # noqa: E402
from bench_report import machine, write_section  # noqa: E402

PACKAGES = ["pandas", "sympy", "networkx", "sklearn", "numpy", "scipy", "transformers", "torch"]
QUERIES = ["convert a number to its ordinal suffix", "read a CSV file into a data frame", "shortest path in a graph",
           "parse a date string with a timezone", "sparse matrix multiplication", "tokenize text into words",
           "retry a failed HTTP request", "compute the determinant of a matrix", "serialize an object to JSON",
           "random forest classifier fit"]


def progress(message: str) -> None:
    print(f"\r\033[K{message}", end="", file=sys.stderr, flush=True)


def sources(count: int) -> list[tuple[str, Path]]:
    """(repo path, source file) for `count` real source files: Rust first (at most a tenth), then Python."""
    picked: list[tuple[str, Path]] = []
    registry = Path.home() / ".cargo" / "registry" / "src"
    for crate_file in sorted(glob.glob(f"{registry}/*/*/**/*.rs", recursive=True)):
        rel = "rust/" + "/".join(Path(crate_file).relative_to(registry).parts[1:])
        if len(picked) < count // 10 and _indexable(rel) and os.path.getsize(crate_file) <= MAX_FILE_BYTES:
            picked.append((rel, Path(crate_file)))
    site = Path(sysconfig.get_paths()["purelib"])
    for package in PACKAGES:
        for py in sorted((site / package).rglob("*.py")):
            rel = "python/" + py.relative_to(site).as_posix()
            if len(picked) < count and _indexable(rel) and py.stat().st_size <= MAX_FILE_BYTES:
                picked.append((rel, py))
    return picked


def make_repo(root: Path, files: list[tuple[str, Path]]) -> Path:
    for rel, source in files:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "-c", "user.email=bench@example.com", "-c", "user.name=bench", "commit", "-q", "-m", "sources")
    return root


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


class Phases:
    """Wall time spent parsing and embedding during updates (it wraps the module's names); with
    `random_vectors`, the embedding is replaced by random unit vectors."""

    def __init__(self, random_vectors: bool = False) -> None:
        self.parse_s = self.embed_s = 0.0
        self.embedded = 0
        self.random_vectors = random_vectors
        self._rng = np.random.default_rng(0)
        self._parse, self._embed = codeindex.parse_symbols, codeindex.embed
        codeindex.parse_symbols, codeindex.embed = self.parse, self.embed

    def parse(self, *args):
        started = time.perf_counter()
        try:
            return self._parse(*args)
        finally:
            self.parse_s += time.perf_counter() - started

    def embed(self, texts):
        started = time.perf_counter()
        try:
            if not self.random_vectors:
                return self._embed(texts)
            vectors = self._rng.standard_normal((len(texts), EMBED_DIM)).astype(np.float32)
            return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        finally:
            self.embed_s += time.perf_counter() - started
            self.embedded += len(texts)

    def restore(self) -> None:
        codeindex.parse_symbols, codeindex.embed = self._parse, self._embed


def cold_index(repo: Path, home: Path, random_vectors: bool, label: str) -> tuple[CodeIndex, dict, Phases]:
    index = CodeIndex(home, repo)
    phases = Phases(random_vectors)
    try:
        result = index.update(progress=lambda done, total: progress(f"{label}: {done}/{total} files"))
    finally:
        phases.restore()
    return index, result, phases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=5000, help="source files in the repository (default 5000)")
    parser.add_argument("--real-files", type=int, default=300,
                        help="files indexed end to end with real embeddings (default 300)")
    parser.add_argument("--warm", type=int, default=5, help="warm updates of each sort (default 5)")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing BENCHMARKS.md")
    args = parser.parse_args()

    started = time.perf_counter()
    embedding_model()
    load_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="index-bench-") as tmp:
        picked = sources(args.files)
        real_set = picked[:args.real_files // 10] + picked[len(picked) // 10:][:args.real_files - args.real_files // 10]
        progress(f"copying {len(real_set)} + {len(picked)} files")
        real_repo = make_repo(Path(tmp) / "real", real_set)
        repo = make_repo(Path(tmp) / "repo", picked)
        languages = {lang: sum(1 for rel, _ in picked if codeindex.language_of(rel) == lang)
                     for lang in ("python", "rust")}
        source_mb = sum(p.stat().st_size for _, p in picked) / 1e6

        real_index, real, real_phases = cold_index(real_repo, Path(tmp) / "real-home", False, "real embeddings")
        search_ms = []
        for query in QUERIES * 2:
            t = time.perf_counter()
            real_index.search(query, 10)
            search_ms.append((time.perf_counter() - t) * 1000)
        real_index.close()
        rate = real_phases.embedded / max(real_phases.embed_s, 1e-9)
        progress(f"real embeddings: {real}, parse {real_phases.parse_s:.1f} s, embedding {real_phases.embed_s:.0f} s "
                 f"({rate:.0f} texts/s)\n")

        index, cold, phases = cold_index(repo, Path(tmp) / "home", True, "full set, random vectors")
        # Warm updates embed for real: the changed file's new function is what a task pays for.
        one_file, unchanged, listing = [], [], []
        for i in range(args.warm):
            rel = picked[(i * 997) % len(picked)][0]
            with open(repo / rel, "a", encoding="utf-8") as f:
                f.write(f"\n\ndef bench_probe_{i}():\n    return {i}\n" if rel.endswith(".py")
                        else f"\n\nfn bench_probe_{i}() {{}}\n")
            git(repo, "-c", "user.email=b@e.com", "-c", "user.name=b", "commit", "-q", "-am", f"change {i}")
            progress(f"warm update {i + 1}/{args.warm}")
            result = index.update()
            assert result["reindexed"] == 1, result
            one_file.append(result["seconds"])
        for _ in range(args.warm):
            result = index.update()
            assert result["reindexed"] == 0, result
            unchanged.append(result["seconds"])
            t = time.perf_counter()
            git(repo, "ls-tree", "-r", "-l", "-z", "--full-tree", "HEAD")
            listing.append(time.perf_counter() - t)
        full_search_ms = []
        for query in QUERIES * 2:
            t = time.perf_counter()
            index.search(query, 10)
            full_search_ms.append((time.perf_counter() - t) * 1000)
        disk_mb = _disk_bytes(Path(tmp) / "home" / "lancedb") / 1e6
        for table in (index._code, index._files):  # versions younger than a minute are kept until then
            table.optimize(cleanup_older_than=timedelta(0))
        clean_mb = _disk_bytes(Path(tmp) / "home" / "lancedb") / 1e6
        index.close()
    progress("")

    load = os.getloadavg()[0]
    structure_s = cold["seconds"] - phases.embed_s
    projected_s = structure_s + phases.embedded / rate
    body = f"""\
- Machine: {machine()}; load average at the end {load:.1f} (the team's tests share the CPUs, so absolute times are noisy)
- Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC
- Command: `.venv/bin/python bench/index_bench.py --files {args.files} --real-files {args.real_files} --warm {args.warm}`

Repository: {len(picked):,} real source files ({languages['python']:,} Python from site-packages,
{languages['rust']:,} Rust from the Cargo registry; {source_mb:.0f} MB), one commit. Model load
({load_s:.1f} s, once per process) is not counted below.

### First index (cold)

| run | files | symbols | total | parse (tree-sitter) | embedding | git, LanceDB writes, indices |
|---|---|---|---|---|---|---|
| real embeddings, first {len(real_set):,} files | {real['files']:,} | {real['symbols']:,} | **{real['seconds']:.0f} s** | {real_phases.parse_s:.1f} s | {real_phases.embed_s:.0f} s ({rate:.0f} texts/s) | {real['seconds'] - real_phases.parse_s - real_phases.embed_s:.1f} s |
| random vectors, all files | {cold['files']:,} | {cold['symbols']:,} | {cold['seconds']:.0f} s | {phases.parse_s:.1f} s ({cold['files'] / max(phases.parse_s, 1e-9):.0f} files/s) | (random: {phases.embed_s:.1f} s) | {cold['seconds'] - phases.parse_s - phases.embed_s:.1f} s |
| projected: all files, real embeddings | {cold['files']:,} | {cold['symbols']:,} | **{projected_s / 60:.0f} min** | | {phases.embedded:,} texts at {rate:.0f}/s | |

Embedding is nearly all of the first index, and it grows with CPU cores (on these two shared
cores it is the only slow part); tree-sitter, git and LanceDB together take
{structure_s:.0f} s for the whole set. The first index is done once per repository, in chunks
of {codeindex.CHUNK_FILES} files, and a run stopped half way keeps what it finished. Index on disk: {disk_mb:.0f} MB
right after the updates, {clean_mb:.0f} MB once the superseded versions are deleted (a minute later;
the vectors alone are {cold['symbols'] * EMBED_DIM * 4 / 1e6:.0f} MB).

### Per task afterwards (median of {args.warm})

| one changed file committed (s) | nothing changed (s) | of which `git ls-tree -r HEAD` (s) | search top-10, {real['symbols']:,} symbols (ms) | search top-10, {cold['symbols']:,} symbols (ms) |
|---|---|---|---|---|
| {statistics.median(one_file):.2f} | **{statistics.median(unchanged):.3f}** | {statistics.median(listing):.3f} | {statistics.median(search_ms):.0f} / {np.percentile(search_ms, 95):.0f} | {statistics.median(full_search_ms):.0f} / {np.percentile(full_search_ms, 95):.0f} |

A changed file is parsed again and only its symbols whose text changed are embedded (here the
one new function). Search times are median / p95 over {len(search_ms)} queries, hybrid (vector +
full text, fused by reciprocal rank), query embedding included.
"""
    if args.no_write:
        print(body)
    else:
        write_section("index_bench", "Code index (tree-sitter + LanceDB)", body)
        print(f"wrote the index_bench section of docs/BENCHMARKS.md\n\n{body}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
