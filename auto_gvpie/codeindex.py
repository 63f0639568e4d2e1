"""Code index of the target repository: one LanceDB row per symbol, found by hybrid search.

Symbols (functions, classes, methods; structs, enums, traits, impls in Rust; interfaces in
TypeScript) are parsed with tree-sitter from the committed HEAD tree, never the working tree,
so a user's uncommitted edits do not matter. They live beside the memory tables in
`<home>/lancedb`: table `code` holds one row per symbol (path, line range, signature, first doc
line, the `text` that is searched and its all-MiniLM-L6-v2 `vector`), table `code_files` one row
per indexed file with the git blob it was parsed from. `update()` re-parses and re-embeds only
the files whose blob changed (and embeds only their symbols whose text changed), so after the
first run an unchanged repository costs one `git ls-tree` and a changed file costs that file.

The index is derived data: a table written by another version of this module is dropped and
rebuilt, never migrated.
"""

from __future__ import annotations

import ast
import fcntl
import logging
import re
import subprocess
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Iterator

import lancedb
import numpy as np
import tree_sitter
from lancedb.index import FTS
from lancedb.pydantic import LanceModel, Vector
from lancedb.rerankers import RRFReranker

from auto_gvpie.memory import (CLEANUP_AFTER, EMBED_DIM, NPROBES, RRF_K, REFINE_FACTOR, _has_index, _one_line, _retry, _sql, embed,
                               embed_query, housekeep)

log = logging.getLogger(__name__)

TABLE = "code"
FILES_TABLE = "code_files"
# Bumped whenever what parse_symbols extracts or what is embedded changes: files indexed by an
# older version are re-indexed although their blob did not change.
PARSER_VERSION = 1

# What is not worth indexing: vendored and generated trees, and files too big to be hand-written.
MAX_FILE_BYTES = 1_000_000
SKIP_DIRS = frozenset({".git", "node_modules", "vendor", "third_party", "dist", "build", "target", "out",
                       "__pycache__", ".venv", "venv", ".tox", ".nox", ".mypy_cache", ".pytest_cache",
                       "site-packages", ".next", "coverage", ".gvpie", "artifacts", "lancedb"})
SKIP_SUFFIXES = (".min.js", ".bundle.js")

# Files are parsed, embedded and written this many at a time, so memory stays flat on a big
# repository and an interrupted first index keeps what it finished.
CHUNK_FILES = 256
# Signature and doc are cut to this many characters: they are for recognising a symbol, not
# for reading it (the prompt shows the code itself).
MAX_SIGNATURE = 200
MAX_DOC = 200
TEXT_SIGNATURE = 100
SEARCH_CANDIDATES = 30
OPTIMIZE_SMALL_FRAGMENTS = 16
MAX_UNINDEXED_ROWS = 2_000
DELETE_BATCH = 500  # paths per `path IN (...)` delete, to keep the filter short


class CodeIndexError(Exception):
    """The repository or the index store cannot be used; the message says why."""


@dataclass(frozen=True)
class Symbol:
    path: str          # repo-relative POSIX path
    name: str          # e.g. "ordinal"
    qualname: str      # "Inflector.ordinal" for a method (also Rust impl methods), else the name
    kind: str          # function | class | method; Rust: struct, enum, trait, impl, module, macro; TS: interface, enum, type
    start_line: int    # 1-based, inclusive, including decorators, attributes and doc comments
    end_line: int      # 1-based, inclusive
    signature: str     # the definition up to its body, on one line
    doc: str           # first line of the docstring or doc comment, or ""
    language: str      # python | rust | javascript | typescript


# -- parsing -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Grammar:
    language: str
    kinds: dict[str, str]        # definition node type -> symbol kind
    classes: frozenset[str]      # definition node types whose functions are methods
    leading: frozenset[str]      # preceding sibling types that belong to a definition (doc comments, attributes)


_FUNCTION_VALUES = frozenset({"arrow_function", "function_expression", "function", "generator_function"})
_JS_KINDS = {"function_declaration": "function", "generator_function_declaration": "function",
             "class_declaration": "class", "method_definition": "method", "variable_declarator": "function",
             "field_definition": "method"}
_TS_KINDS = {**_JS_KINDS, "abstract_class_declaration": "class", "public_field_definition": "method",
             "abstract_method_signature": "method", "method_signature": "method", "function_signature": "function",
             "interface_declaration": "interface", "enum_declaration": "enum", "type_alias_declaration": "type"}
_JS_CLASSES = frozenset({"class_declaration", "abstract_class_declaration", "interface_declaration"})

_GRAMMARS = {
    "python": _Grammar("python", {"function_definition": "function", "class_definition": "class"},
                       frozenset({"class_definition"}), frozenset()),
    "rust": _Grammar("rust", {"function_item": "function", "function_signature_item": "function",
                              "struct_item": "struct", "enum_item": "enum", "union_item": "struct",
                              "trait_item": "trait", "impl_item": "impl", "mod_item": "module",
                              "macro_definition": "macro"},
                     frozenset({"impl_item", "trait_item"}),
                     frozenset({"line_comment", "block_comment", "attribute_item"})),
    "javascript": _Grammar("javascript", _JS_KINDS, _JS_CLASSES, frozenset({"comment", "decorator"})),
    "typescript": _Grammar("typescript", _TS_KINDS, _JS_CLASSES, frozenset({"comment", "decorator"})),
}

_SUFFIXES = {".py": "python", ".pyi": "python", ".rs": "rust",
             ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
             ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "typescript"}


def language_of(path: str) -> str | None:
    """The language a file is parsed as, by its suffix, or None when it is not one we index."""
    return _SUFFIXES.get(PurePosixPath(path).suffix.lower())


@cache
def _grammar(language: str, tsx: bool) -> tuple[tree_sitter.Language, tree_sitter.Query]:
    """Grammar packages are imported on first use (a repository without Rust never loads it)."""
    if language == "python":
        import tree_sitter_python as grammar
        capsule = grammar.language()
    elif language == "rust":
        import tree_sitter_rust as grammar
        capsule = grammar.language()
    elif language == "javascript":
        import tree_sitter_javascript as grammar
        capsule = grammar.language()
    else:
        import tree_sitter_typescript as grammar
        capsule = grammar.language_tsx() if tsx else grammar.language_typescript()
    lang = tree_sitter.Language(capsule)
    # A query finds the definitions in C; Python only looks at those, not at every node.
    known = [t for t in _GRAMMARS[language].kinds if lang.id_for_node_kind(t, True) is not None]
    query = tree_sitter.Query(lang, "[" + " ".join(f"({t})" for t in known) + "] @def")
    return lang, query


def parse_symbols(path: str, source: bytes) -> list[Symbol]:
    """The symbols of one file, in source order, nested ones included; [] for a language we do
    not index or a file that is not text."""
    language = language_of(path)
    if language is None or b"\0" in source[:8192]:
        return []
    try:
        lang, query = _grammar(language, path.lower().endswith(".tsx"))
        tree = tree_sitter.Parser(lang).parse(source)  # a parser per call: parsers are not thread-safe
        nodes = tree_sitter.QueryCursor(query).captures(tree.root_node).get("def", [])
    except Exception as exc:  # a grammar that cannot load or a parser that gives up: no symbols, not a crash
        log.warning("cannot parse %s: %s", path, _one_line(exc))
        return []
    grammar = _GRAMMARS[language]
    names = {n.id: name for n in nodes if (name := _name(n))}
    symbols = []
    for node in sorted(nodes, key=lambda n: n.start_byte):
        if node.id not in names:
            continue
        scope, enclosing = [], None
        parent = node.parent
        while parent is not None:
            if parent.id in names:
                scope.append(names[parent.id])
                enclosing = enclosing or parent
            parent = parent.parent
        kind = grammar.kinds[node.type]
        if kind == "function" and enclosing is not None and enclosing.type in grammar.classes:
            kind = "method"
        outer = _outer(node)
        leading = _leading(outer, grammar)
        start = leading[0] if leading else outer
        symbols.append(Symbol(
            path=path, name=names[node.id], qualname=".".join([*reversed(scope), names[node.id]]), kind=kind,
            start_line=start.start_point.row + 1, end_line=_last_row(outer) + 1,
            signature=_signature(node, source), language=language,
            doc=_python_doc(node) if language == "python" else _comment_doc(leading)))
    return symbols


def _name(node: tree_sitter.Node) -> str | None:
    """A definition's name, or None for what only looks like one (`const x = 1`, a destructuring)."""
    if node.type in ("variable_declarator", "field_definition", "public_field_definition"):
        value = node.child_by_field_name("value")
        if value is None or value.type not in _FUNCTION_VALUES:
            return None
    if node.type == "impl_item":  # `impl<T> fmt::Display for Wrapper<T>` is about Wrapper
        target = node.child_by_field_name("type")
        while target is not None and target.type in ("generic_type", "reference_type", "scoped_type_identifier"):
            target = target.child_by_field_name("name" if target.type == "scoped_type_identifier" else "type")
        name = target
    else:
        name = node.child_by_field_name("name") or node.child_by_field_name("property")
    if name is None or name.type in ("array_pattern", "object_pattern"):
        return None
    return _text(name)


def _outer(node: tree_sitter.Node) -> tree_sitter.Node:
    """The node whose lines the symbol covers: with its decorators, `export` and `const`."""
    parent = node.parent
    if node.type == "variable_declarator" and parent is not None and parent.named_child_count == 1:
        node, parent = parent, parent.parent
    while parent is not None and parent.type in ("decorated_definition", "export_statement"):
        node, parent = parent, parent.parent
    return node


def _leading(node: tree_sitter.Node, grammar: _Grammar) -> list[tree_sitter.Node]:
    """Doc comments, attributes and decorators right above a definition, top first; a blank
    line or an ordinary comment ends them."""
    found: list[tree_sitter.Node] = []
    top = node
    sibling = node.prev_named_sibling
    while (sibling is not None and sibling.type in grammar.leading and _last_row(sibling) >= top.start_point.row - 1
           and (not sibling.type.endswith("comment") or _is_doc_comment(sibling))):
        found.append(sibling)
        top, sibling = sibling, sibling.prev_named_sibling
    return found[::-1]


def _is_doc_comment(node: tree_sitter.Node) -> bool:
    if node.type == "comment":  # JavaScript / TypeScript: JSDoc only
        text = node.text or b""
        return text.startswith(b"/**") and text != b"/**/"
    return any(c.type == "outer_doc_comment_marker" for c in node.children)  # Rust: /// and /** */


def _last_row(node: tree_sitter.Node) -> int:
    """The last line a node has text on (a Rust line comment ends at column 0 of the next)."""
    end = node.end_point
    return end.row - 1 if end.column == 0 and end.row > node.start_point.row else end.row


def _signature(node: tree_sitter.Node, source: bytes) -> str:
    """The definition from its keyword (after decorators and `export`) to its body, one line."""
    start_node = _outer(node) if node.type == "variable_declarator" else node
    if start_node.type == "export_statement":
        start_node = start_node.child_by_field_name("declaration") or node
    body = node.child_by_field_name("body")
    if node.type in ("variable_declarator", "field_definition", "public_field_definition"):
        value = node.child_by_field_name("value")
        body = value.child_by_field_name("body") if value is not None else None
    end = body.start_byte if body is not None else node.end_byte
    for child in node.children:  # `def f():  # comment` — the comment is not the signature
        if child.start_byte >= end:
            break
        if child.type in ("comment", "line_comment", "block_comment"):
            end = child.start_byte
            break
    text = " ".join(source[start_node.start_byte:end].decode("utf-8", "replace").split())
    return _cut(text.rstrip("{;").rstrip(), MAX_SIGNATURE)


def _python_doc(node: tree_sitter.Node) -> str:
    body = node.child_by_field_name("body")
    first = body.named_children[0] if body is not None and body.named_child_count else None
    if first is None or first.type != "expression_statement" or first.named_child_count != 1 \
            or first.named_children[0].type != "string":
        return ""
    try:
        value = ast.literal_eval(_text(first.named_children[0]))
    except (ValueError, SyntaxError):  # an f-string is not a docstring
        return ""
    return _first_line(value if isinstance(value, str) else "")


def _comment_doc(leading: list[tree_sitter.Node]) -> str:
    """The first line of the doc comments among `leading`, without `///`, `/**`, `*`."""
    lines = []
    for node in leading:
        if node.type == "attribute_item" or node.type == "decorator":
            continue
        text = _text(node)
        if node.type == "comment":
            text = text.removeprefix("/**").removesuffix("*/")
        else:
            text = "".join(_text(c) for c in node.children if c.type == "doc_comment")
        lines.extend(line.strip().lstrip("*").strip() for line in text.splitlines())
    return _first_line("\n".join(lines))


def _text(node: tree_sitter.Node) -> str:
    return (node.text or b"").decode("utf-8", "replace")


def _first_line(text: str) -> str:
    return next((_cut(line.strip(), MAX_DOC) for line in text.splitlines() if line.strip()), "")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _words(name: str) -> str:
    """`getUserName` -> "get user name": the words that a query uses."""
    return " ".join(re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", name)).lower()


def search_text(symbol: Symbol) -> str:
    """What the full-text index sees of a symbol: names, signature, doc and path."""
    return "\n".join(p for p in (_head(symbol), symbol.signature, symbol.doc, symbol.path) if p)


def embedding_text(symbol: Symbol) -> str:
    """What is embedded for a symbol. Embedding is nearly all of the first index's time and grows
    with the tokens, so this is kept short: the signature's start and the last two parts of the
    path (the directory names say more than the package prefix)."""
    short_path = "/".join(PurePosixPath(symbol.path).with_suffix("").parts[-2:])
    return "\n".join(p for p in (_head(symbol), _cut(symbol.signature, TEXT_SIGNATURE), symbol.doc, short_path) if p)


def _head(symbol: Symbol) -> str:
    """"method Cache.getItem (get item)": a camelCase name also as words, since the full-text
    tokenizer splits only at punctuation (snake_case splits at the underscores by itself)."""
    words = f" ({_words(symbol.name)})" if re.search(r"[a-z0-9][A-Z]", symbol.name) else ""
    return f"{symbol.kind} {symbol.qualname}{words}"


# -- the index -----------------------------------------------------------------------------------

class CodeRow(LanceModel):
    path: str
    name: str
    qualname: str
    kind: str
    start_line: int
    end_line: int
    signature: str
    doc: str
    language: str
    text: str
    vector: Vector(EMBED_DIM)  # type: ignore[valid-type]


class FileRow(LanceModel):
    path: str
    blob: str       # the git blob the symbols were parsed from
    parser: int     # PARSER_VERSION that parsed it
    symbols: int


_SYMBOL_FIELDS = [f for f in Symbol.__dataclass_fields__]


@dataclass(frozen=True)
class _Entry:
    path: str
    blob: str


class CodeIndex:
    """The code index of `repo`, stored in `<home>/lancedb` (tables `code` and `code_files`)."""

    def __init__(self, home: Path, repo: Path) -> None:
        self.home = Path(home)
        self.repo = Path(repo)
        self.path = self.home / "lancedb"
        self._db: Any = None
        self._code: Any = None
        self._files: Any = None

    # -- store ----------------------------------------------------------------------------------

    def _open(self) -> None:
        if self._db is not None:
            return
        try:
            with self._lock():  # another worker may be creating the same tables and index right now
                self._db = lancedb.connect(self.path, read_consistency_interval=timedelta(0))
                self._code = self._table(TABLE, CodeRow)
                self._files = self._table(FILES_TABLE, FileRow)
                if not _has_index(self._code, "text"):
                    _retry("full-text index code", lambda: self._code.create_index("text", config=FTS()))
        except Exception as exc:
            self._db = None
            raise CodeIndexError(f"cannot open the code index in {self.path}: {_one_line(exc)}") from exc

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Held while tables are created and while an update runs: two workers indexing at once
        would add a file's rows twice. (Not re-entrant: flock locks each open of the file.)"""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "code.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _table(self, name: str, schema: type[LanceModel]) -> Any:
        try:
            table = self._db.open_table(name)
        except ValueError:  # not there yet
            table = _retry(f"create {name}", lambda: self._db.create_table(name, schema=schema, exist_ok=True))
        if set(table.schema.names) != set(schema.model_fields):
            log.warning("code index table %s has another layout (older version?); rebuilding it", name)
            table = _retry(f"recreate {name}", lambda: self._db.create_table(name, schema=schema, mode="overwrite"))
        return table

    def close(self) -> None:
        self._db = self._code = self._files = None

    # -- updating -------------------------------------------------------------------------------

    def update(self, progress: Callable[[int, int], None] | None = None) -> dict:
        """Bring the index up to the repository's HEAD: files whose blob changed (or that are new)
        are parsed and embedded again, files gone from HEAD lose their rows.

        Returns {"files", "reindexed", "removed", "symbols", "seconds"}: indexed files at HEAD,
        files parsed this time, files removed, symbols in the index, and the time it took.
        """
        started = time.perf_counter()
        entries = {e.path: e for e in self._head_entries()}
        self._open()
        with self._lock():
            try:
                known = {r["path"]: (r["blob"], r["parser"])
                         for r in self._files.search().select(["path", "blob", "parser"]).limit(None).to_list()}
                stale = [e for p, e in entries.items() if known.get(p) != (e.blob, PARSER_VERSION)]
                gone = [p for p in known if p not in entries]
                self._delete(gone)
                self._reindex(stale, known, progress)
                if stale or gone:
                    self._housekeep()
                count = self._code.count_rows()
            except CodeIndexError:
                raise
            except Exception as exc:
                raise CodeIndexError(f"updating the code index failed: {_one_line(exc)}") from exc
        result = {"files": len(entries), "reindexed": len(stale), "removed": len(gone), "symbols": count,
                  "seconds": round(time.perf_counter() - started, 3)}
        log.info("code index of %s: %s", self.repo, result)
        return result

    def _head_entries(self) -> list[_Entry]:
        """The files of HEAD that are worth indexing, with their blob ids."""
        try:
            listing = subprocess.run(["git", "-C", str(self.repo), "ls-tree", "-r", "-l", "-z", "--full-tree", "HEAD"],
                                     capture_output=True, check=True, timeout=120).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            raise CodeIndexError(f"cannot list HEAD of {self.repo}: "
                                 f"{detail.decode(errors='replace').strip() or _one_line(exc)}") from exc
        entries = []
        for item in listing.split(b"\0"):
            if not item:
                continue
            meta, _, raw_path = item.partition(b"\t")
            mode, kind, blob, size = meta.split()
            try:
                path = raw_path.decode("utf-8")
            except UnicodeDecodeError:  # a name LanceDB cannot store (and no prompt would show)
                log.debug("not indexing %r: the name is not UTF-8", raw_path)
                continue
            if kind == b"blob" and mode != b"120000" and _indexable(path) and int(size) <= MAX_FILE_BYTES:
                entries.append(_Entry(path, blob.decode()))
        return entries

    def _reindex(self, stale: list[_Entry], known: dict, progress: Callable[[int, int], None] | None) -> None:
        total = len(stale)
        if progress:
            progress(0, total)
        blobs = _read_blobs(self.repo, (e.blob for e in stale))
        try:
            for offset in range(0, total, CHUNK_FILES):
                chunk = stale[offset:offset + CHUNK_FILES]
                symbols: list[Symbol] = []
                files = []
                for entry in chunk:
                    found = parse_symbols(entry.path, next(blobs))
                    symbols.extend(found)
                    files.append({"path": entry.path, "blob": entry.blob, "parser": PARSER_VERSION,
                                  "symbols": len(found)})
                replaced = [e.path for e in chunk if e.path in known]
                if symbols:
                    rows = [{**asdict(s), "text": search_text(s), "vector": v}
                            for s, v in zip(symbols, self._vectors(symbols, replaced))]
                self._delete(replaced, files_too=False)
                if symbols:
                    _retry("add to code", lambda: self._code.add(rows))
                # Written last: a run stopped before this line re-indexes the chunk next time.
                _retry("record indexed files", lambda: self._files.merge_insert("path").when_matched_update_all()
                       .when_not_matched_insert_all().execute(files))
                if progress:
                    progress(offset + len(chunk), total)
        finally:
            blobs.close()

    def _vectors(self, symbols: list[Symbol], replaced: list[str]) -> list[np.ndarray]:
        """Embeddings of the symbols; a symbol whose text is unchanged in a re-indexed file keeps
        its vector (an edit to one function of a big file embeds that function only)."""
        texts = [embedding_text(s) for s in symbols]
        kept: dict[str, np.ndarray] = {}
        for i in range(0, len(replaced), DELETE_BATCH):
            where = f"path IN ({', '.join(_sql(p) for p in replaced[i:i + DELETE_BATCH])})"
            for row in self._code.search().where(where).select([*_SYMBOL_FIELDS, "vector"]).limit(None).to_list():
                kept[embedding_text(_symbol(row))] = np.asarray(row["vector"], dtype=np.float32)
        new = sorted({t for t in texts if t not in kept})
        kept.update(zip(new, embed(new)))
        return [kept[t] for t in texts]

    def _delete(self, paths: list[str], files_too: bool = True) -> None:
        for i in range(0, len(paths), DELETE_BATCH):
            where = f"path IN ({', '.join(_sql(p) for p in paths[i:i + DELETE_BATCH])})"
            _retry("delete from code", lambda: self._code.delete(where))
            if files_too:
                _retry("delete from code_files", lambda: self._files.delete(where))

    def _housekeep(self) -> None:
        """Compact once small fragments pile up (each update adds a few) and fold new rows into the
        full-text index once many are outside it (full-text search scans those row by row);
        memory's policy builds the vector index when the table is big enough for it to pay."""
        unindexed = max((i.num_unindexed_rows or 0 for i in self._code.list_indices()), default=0)
        if _small_fragments(self._code) >= OPTIMIZE_SMALL_FRAGMENTS or unindexed >= MAX_UNINDEXED_ROWS:
            housekeep(TABLE, self._code)
        if _small_fragments(self._files) >= OPTIMIZE_SMALL_FRAGMENTS:  # no vectors: compaction only
            _retry(f"optimize {FILES_TABLE}", lambda: self._files.optimize(cleanup_older_than=CLEANUP_AFTER))

    # -- reading --------------------------------------------------------------------------------

    def search(self, query: str, k: int = 10) -> list[tuple[Symbol, float]]:
        """The k symbols that best match `query`, best first by reciprocal-rank fusion of vector and
        full-text search; the float is the cosine similarity of the symbol's text to the query."""
        if not query.strip() or k < 1:
            return []
        try:
            self._open()
            if self._code.count_rows() == 0:
                return []
            vector = embed_query(query)
            search = (self._code.search(query_type="hybrid").vector(vector).text(query)
                      .rerank(RRFReranker(K=RRF_K, return_score="all")))
            rows = (search.distance_type("cosine").nprobes(NPROBES).refine_factor(REFINE_FACTOR)
                    .limit(max(k, SEARCH_CANDIDATES)).to_list())
        except Exception as exc:
            log.warning("code search failed: %s", _one_line(exc))
            return []
        return [(_symbol(row), round(float(np.dot(vector, np.asarray(row["vector"], dtype=np.float32))), 4))
                for row in rows[:k]]

    def symbols(self, path: str) -> list[Symbol]:
        """The symbols of one file as indexed, in source order; a file not indexed (yet) is parsed
        from HEAD; [] when HEAD has no such file."""
        where = f"path = {_sql(path)}"
        try:
            self._open()
            if self._files.count_rows(where):
                rows = self._code.search().where(where).select(_SYMBOL_FIELDS).limit(None).to_list()
                return sorted((_symbol(r) for r in rows), key=lambda s: (s.start_line, -s.end_line))
        except Exception as exc:  # the file itself is still there to parse
            log.warning("code index lookup of %s failed, parsing it from HEAD: %s", path, _one_line(exc))
        shown = subprocess.run(["git", "-C", str(self.repo), "cat-file", "blob", f"HEAD:{path}"], capture_output=True)
        return parse_symbols(path, shown.stdout) if shown.returncode == 0 else []


def _small_fragments(table: Any) -> int:
    return table.stats()["fragment_stats"]["num_small_fragments"]


def _indexable(path: str) -> bool:
    parts = path.split("/")
    return (language_of(path) is not None and not path.endswith(SKIP_SUFFIXES)
            and not any(part in SKIP_DIRS for part in parts[:-1]))


def _read_blobs(repo: Path, blobs: Iterable[str]) -> Iterator[bytes]:
    """Blob contents in order, from one `git cat-file --batch` (one process, not one per file);
    a request is written only after the previous answer is read, so neither pipe can fill."""
    proc = subprocess.Popen(["git", "-C", str(repo), "cat-file", "--batch"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        for blob in blobs:
            proc.stdin.write(blob.encode() + b"\n")
            proc.stdin.flush()
            header = proc.stdout.readline().split()
            if len(header) != 3:  # "<id> missing": the object store changed under us
                raise CodeIndexError(f"git cat-file: {b' '.join(header).decode(errors='replace')}")
            data = proc.stdout.read(int(header[2]))
            proc.stdout.read(1)  # the newline after each object
            yield data
    finally:
        proc.stdin.close()
        proc.stdout.close()
        proc.wait()


def _symbol(row: dict) -> Symbol:
    return Symbol(**{f: row[f] for f in _SYMBOL_FIELDS})
