"""Code index: real tree-sitter grammars, a real git repository, LanceDB on disk, the real MiniLM."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from auto_gvpie import codeindex, memory
from auto_gvpie.codeindex import CodeIndex, CodeIndexError, Symbol, language_of, parse_symbols
from conftest import git, make_repo

PY = '''\
"""Number helpers."""
import functools


def ordinal(number: int) -> str:
    """Return the number with its English suffix: 1st, 2nd, 3rd.

    More text.
    """
    suffix = "th"

    def pick(n):
        return n % 10

    return f"{number}{suffix}"


class Inflector:
    """Inflects English words."""

    @functools.cache
    def plural(self, word: str,
               count: int = 2) -> str:
        # no docstring
        return word + "s"

    class Rules:
        pass


@functools.cache
async def fetch(url):
    return url
'''

RS = '''\
//! Crate docs.
use std::fmt;

/// A point in the plane.
#[derive(Debug, Clone)]
pub struct Point {
    x: i32,
    y: i32,
}

impl Point {
    /// Makes a point.
    pub fn new(x: i32, y: i32) -> Self {
        Point { x, y }
    }

    // plain comment, not a doc
    fn norm(&self) -> i32 {
        self.x.abs() + self.y.abs()
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "({}, {})", self.x, self.y)
    }
}

pub enum Shape { Dot(Point), Line(Point, Point) }

pub trait Area {
    /// The area.
    fn area(&self) -> f64;
}

fn helper() {}
'''

JS = '''\
/**
 * Formats a date.
 */
export function formatDate(d) {
  return d.toISOString();
}

export const parseDate = (s) => new Date(s);
const LIMIT = 10;

class Cache {
  constructor() {
    this.map = new Map();
  }

  get(key) {
    return this.map.get(key);
  }
}
'''

TS = '''\
export interface Shape {
  area(): number;
}

/** A circle. */
@sealed
export class Circle implements Shape {
  constructor(private r: number) {}

  /** The area of the circle. */
  area(): number {
    return Math.PI * this.r ** 2;
  }
}

export type Id = string;

export enum Color { Red, Green }
'''

UNRELATED = '''\
def parse_csv(text):
    """Split comma-separated lines into rows."""
    return [line.split(",") for line in text.splitlines()]


def send_email(to, subject, body):
    """Deliver a message over SMTP."""


def resize_image(img, width, height):
    """Scale a picture to the given size."""


def compute_checksum(data):
    """SHA-256 hex digest of bytes."""


def slugify(title):
    """Lower-case, dash-separated URL slug."""


def retry(fn, attempts=3):
    """Call fn again after a failure."""


def merge_dicts(a, b):
    """Combine two mappings, b wins."""


def read_config(path):
    """Load settings from a TOML file."""


def format_bytes(n):
    """Human-readable file size such as 1.5 MB."""


def flatten(nested):
    """One list from a list of lists."""


def chunked(items, size):
    """Yield successive slices of a sequence."""


def is_prime(n):
    """Whether n has no divisors but 1 and itself."""
'''


def sym(path, name, qualname, kind, start, end, signature, doc, language) -> Symbol:
    return Symbol(path, name, qualname, kind, start, end, signature, doc, language)


@pytest.fixture(scope="session", autouse=True)
def model():
    """The embedding model, loaded once for the whole session."""
    return memory.embedding_model()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "project", {
        "pkg/nums.py": PY, "pkg/__init__.py": "", "src/geometry.rs": RS, "web/util.js": JS, "web/shapes.ts": TS,
        "pkg/helpers.py": UNRELATED, "README.md": "# project\n", "node_modules/lib/index.js": "function vendored() {}\n",
        "web/app.min.js": "function minified(){}\n"})


# -- parsing -------------------------------------------------------------------------------------

def test_python_symbols_with_decorators_docstrings_nesting_and_methods():
    path = "pkg/nums.py"
    assert parse_symbols(path, PY.encode()) == [
        sym(path, "ordinal", "ordinal", "function", 5, 15, "def ordinal(number: int) -> str:",
            "Return the number with its English suffix: 1st, 2nd, 3rd.", "python"),
        sym(path, "pick", "ordinal.pick", "function", 12, 13, "def pick(n):", "", "python"),
        sym(path, "Inflector", "Inflector", "class", 18, 28, "class Inflector:", "Inflects English words.", "python"),
        sym(path, "plural", "Inflector.plural", "method", 21, 25,
            "def plural(self, word: str, count: int = 2) -> str:", "", "python"),
        sym(path, "Rules", "Inflector.Rules", "class", 27, 28, "class Rules:", "", "python"),
        sym(path, "fetch", "fetch", "function", 31, 33, "async def fetch(url):", "", "python"),
    ]


def test_rust_items_impl_methods_doc_comments_and_attributes():
    path = "src/geometry.rs"
    assert parse_symbols(path, RS.encode()) == [
        sym(path, "Point", "Point", "struct", 4, 9, "pub struct Point", "A point in the plane.", "rust"),
        sym(path, "Point", "Point", "impl", 11, 21, "impl Point", "", "rust"),
        sym(path, "new", "Point.new", "method", 12, 15, "pub fn new(x: i32, y: i32) -> Self", "Makes a point.", "rust"),
        sym(path, "norm", "Point.norm", "method", 18, 20, "fn norm(&self) -> i32", "", "rust"),
        sym(path, "Point", "Point", "impl", 23, 27, "impl fmt::Display for Point", "", "rust"),
        sym(path, "fmt", "Point.fmt", "method", 24, 26, "fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result", "",
            "rust"),
        sym(path, "Shape", "Shape", "enum", 29, 29, "pub enum Shape", "", "rust"),
        sym(path, "Area", "Area", "trait", 31, 34, "pub trait Area", "", "rust"),
        sym(path, "area", "Area.area", "method", 32, 33, "fn area(&self) -> f64", "The area.", "rust"),
        sym(path, "helper", "helper", "function", 36, 36, "fn helper()", "", "rust"),
    ]


def test_javascript_functions_arrow_functions_classes_and_methods():
    path = "web/util.js"
    assert parse_symbols(path, JS.encode()) == [
        sym(path, "formatDate", "formatDate", "function", 1, 6, "function formatDate(d)", "Formats a date.",
            "javascript"),
        sym(path, "parseDate", "parseDate", "function", 8, 8, "const parseDate = (s) =>", "", "javascript"),
        sym(path, "Cache", "Cache", "class", 11, 19, "class Cache", "", "javascript"),
        sym(path, "constructor", "Cache.constructor", "method", 12, 14, "constructor()", "", "javascript"),
        sym(path, "get", "Cache.get", "method", 16, 18, "get(key)", "", "javascript"),
    ]


def test_typescript_interfaces_decorated_classes_types_and_enums():
    path = "web/shapes.ts"
    assert parse_symbols(path, TS.encode()) == [
        sym(path, "Shape", "Shape", "interface", 1, 3, "interface Shape", "", "typescript"),
        sym(path, "area", "Shape.area", "method", 2, 2, "area(): number", "", "typescript"),
        sym(path, "Circle", "Circle", "class", 5, 14, "class Circle implements Shape", "A circle.", "typescript"),
        sym(path, "constructor", "Circle.constructor", "method", 8, 8, "constructor(private r: number)", "",
            "typescript"),
        sym(path, "area", "Circle.area", "method", 10, 13, "area(): number", "The area of the circle.", "typescript"),
        sym(path, "Id", "Id", "type", 16, 16, "type Id = string", "", "typescript"),
        sym(path, "Color", "Color", "enum", 18, 18, "enum Color", "", "typescript"),
    ]


def test_tsx_uses_the_tsx_grammar():
    source = b"export function Hello({ name }: Props) {\n  return <b>{name}</b>;\n}\n"
    assert [(s.qualname, s.start_line, s.end_line) for s in parse_symbols("ui/Hello.tsx", source)] == [
        ("Hello", 1, 3)]


def test_unknown_languages_binary_and_broken_files():
    assert language_of("a/b.PY") == "python" and language_of("x.rs") == "rust" and language_of("y.mjs") == "javascript"
    assert language_of("z.tsx") == "typescript" and language_of("README.md") is None and language_of("Makefile") is None
    assert parse_symbols("README.md", b"# def f(): pass\n") == []
    assert parse_symbols("blob.py", b"\x00\x01def f(): pass\n") == []
    # tree-sitter recovers from syntax errors: what parses around the error is still found
    assert [s.qualname for s in parse_symbols("half.py", b"def good():\n    pass\n\ndef broken(:\n")][:1] == ["good"]


# -- the index -----------------------------------------------------------------------------------

def test_update_indexes_head_then_costs_nothing_when_unchanged(project, tmp_path):
    index = CodeIndex(tmp_path / "home", project)
    seen: list[tuple[int, int]] = []
    first = index.update(progress=lambda done, total: seen.append((done, total)))
    # node_modules/ and *.min.js are skipped, README.md is not code
    assert (first["files"], first["reindexed"], first["removed"]) == (6, 6, 0)
    assert first["symbols"] == 6 + 10 + 5 + 7 + 12
    assert seen[0] == (0, 6) and seen[-1] == (6, 6)
    assert (tmp_path / "home" / "lancedb" / "code.lance").is_dir()
    again = index.update()
    assert (again["files"], again["reindexed"], again["removed"], again["symbols"]) == (6, 0, 0, first["symbols"])
    index.close()
    # the per-file state is on disk: a new instance (another process) has nothing to do either
    assert CodeIndex(tmp_path / "home", project).update()["reindexed"] == 0


def test_symbols_come_from_the_index_with_exact_ranges(project, tmp_path):
    index = CodeIndex(tmp_path / "home", project)
    index.update()
    assert index.symbols("src/geometry.rs") == parse_symbols("src/geometry.rs", RS.encode())
    assert index.symbols("pkg/nums.py") == parse_symbols("pkg/nums.py", PY.encode())
    assert index.symbols("pkg/__init__.py") == [] and index.symbols("no/such.py") == []


def test_only_the_changed_file_is_reindexed_and_uncommitted_edits_are_ignored(project, tmp_path):
    index = CodeIndex(tmp_path / "home", project)
    before = index.update()["symbols"]
    (project / "pkg" / "nums.py").write_text(PY + "\n\ndef cardinal(n):\n    return str(n)\n")
    assert index.update()["reindexed"] == 0  # not committed: HEAD did not change
    git(project, "commit", "-q", "-am", "add cardinal")
    result = index.update()
    assert (result["reindexed"], result["removed"], result["symbols"]) == (1, 0, before + 1)
    assert [s.qualname for s in index.symbols("pkg/nums.py")][-1] == "cardinal"
    assert index.symbols("web/util.js") == parse_symbols("web/util.js", JS.encode())  # the others are untouched


def test_a_deleted_file_loses_its_rows(project, tmp_path):
    index = CodeIndex(tmp_path / "home", project)
    before = index.update()["symbols"]
    git(project, "rm", "-q", "src/geometry.rs")
    git(project, "commit", "-q", "-m", "drop rust")
    result = index.update()
    assert (result["files"], result["reindexed"], result["removed"], result["symbols"]) == (5, 0, 1, before - 10)
    assert index.symbols("src/geometry.rs") == []
    assert all(s.path != "src/geometry.rs" for s, _ in index.search("point in the plane", k=20))


def test_search_ranks_the_ordinal_function_first(project, tmp_path):
    index = CodeIndex(tmp_path / "home", project)
    index.update()
    hits = index.search("convert a number to its ordinal suffix", k=5)
    best, score = hits[0]
    assert (best.qualname, best.path, best.start_line, best.end_line) == ("ordinal", "pkg/nums.py", 5, 15)
    assert score > 0.4 and len(hits) == 5
    assert index.search("SMTP mail", k=3)[0][0].name == "send_email"
    assert index.search("Cache.get", k=3)[0][0].qualname == "Cache.get"  # a name finds itself through full text
    assert index.search("   ") == []


def test_a_changed_file_embeds_only_the_symbols_whose_text_changed(project, tmp_path, monkeypatch):
    index = CodeIndex(tmp_path / "home", project)
    index.update()
    embedded: list[str] = []
    real_embed = codeindex.embed
    monkeypatch.setattr(codeindex, "embed", lambda texts: (embedded.extend(texts), real_embed(texts))[1])
    (project / "src" / "geometry.rs").write_text(RS.replace("fn helper() {}", "/// Helps.\nfn helper() {}"))
    git(project, "commit", "-q", "-am", "document helper")
    assert index.update()["reindexed"] == 1
    assert embedded == ["function helper\nfn helper()\nHelps.\nsrc/geometry"]
    # unchanged symbols kept their vectors and moved with their lines
    assert [(s.qualname, s.start_line, s.doc) for s in index.symbols("src/geometry.rs")][-1] == ("helper", 36, "Helps.")
    assert index.search("helps", k=1)[0][0].qualname == "helper"


def test_housekeeping_folds_new_rows_into_the_indices(project, tmp_path, monkeypatch):
    # thresholds lowered so this small repository gets what a big one gets
    monkeypatch.setattr(codeindex, "MAX_UNINDEXED_ROWS", 1)
    monkeypatch.setattr(codeindex, "OPTIMIZE_SMALL_FRAGMENTS", 1)
    monkeypatch.setattr(memory, "VECTOR_INDEX_MIN_ROWS", 30)
    index = CodeIndex(tmp_path / "home", project)
    index.update()
    indices = {i.index_type: i for i in index._code.list_indices()}
    assert set(indices) == {"FTS", "IvfSq"}
    assert indices["FTS"].num_unindexed_rows == 0 and indices["FTS"].num_indexed_rows == 40
    assert index.search("convert a number to its ordinal suffix", k=1)[0][0].qualname == "ordinal"


def test_paths_that_are_not_utf8_are_skipped(project, tmp_path):
    with open(os.path.join(os.fsencode(project), b"pkg", b"caf\xe9.py"), "wb") as f:  # a Latin-1 file name
        f.write(b"def x(): pass\n")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "latin-1 name")
    assert CodeIndex(tmp_path / "home", project).update()["files"] == 6


def test_two_workers_updating_at_once_index_each_file_once(project, tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    indexes = [CodeIndex(tmp_path / "home", project) for _ in range(2)]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda index: index.update(), indexes))
    assert sorted(r["reindexed"] for r in results) == [0, 6]
    assert indexes[0]._code.count_rows() == 40


def test_a_parser_upgrade_reindexes_every_file(project, tmp_path, monkeypatch):
    index = CodeIndex(tmp_path / "home", project)
    index.update()
    monkeypatch.setattr(codeindex, "PARSER_VERSION", codeindex.PARSER_VERSION + 1)
    assert index.update()["reindexed"] == 6


def test_a_table_of_another_layout_is_rebuilt(project, tmp_path):
    import lancedb
    db = lancedb.connect(tmp_path / "home" / "lancedb")
    db.create_table("code_files", data=[{"path": "pkg/nums.py", "sha": "0" * 40}])
    result = CodeIndex(tmp_path / "home", project).update()
    assert result["reindexed"] == 6 and result["symbols"] == 40


def test_search_before_any_update_is_empty(project, tmp_path):
    assert CodeIndex(tmp_path / "home", project).search("ordinal") == []


def test_a_repository_without_commits_is_an_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    subprocess.run(["git", "init", "-q", str(empty)], check=True)
    with pytest.raises(CodeIndexError, match="cannot list HEAD"):
        CodeIndex(tmp_path / "home", empty).update()
