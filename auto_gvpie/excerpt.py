"""Focused views of a source file for a small model, and whole-symbol answers applied to the real file.

A file too large for the prompt is shown as an excerpt: the symbols that matter
whole and verbatim, the imports and other module-level lines as far as the budget
allows, and every other definition as one marker line naming its signature and the
lines it stands for. Nothing is ever cut inside a symbol. Shown lines carry no
line-number prefixes, so a SEARCH block copied from an excerpt matches the real
file exactly; markers say "not shown", so a SEARCH that copies one fails with a
message rather than matching something else.

`apply_symbol_answer` serves the edit format `symbol` (edits.py): the model writes the
changed function out whole and it replaces exactly that symbol's lines.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Sequence

from auto_gvpie.codeindex import Symbol, language_of, parse_symbols

log = logging.getLogger(__name__)

# Lines before the `def`/`fn` line that belong to a definition, when a symbol has no signature.
_PREAMBLE = re.compile(r"^\s*(@|#\[|///|//!|/\*\*|\*)")
# Definitions whose members are listed one by one; a function's nested helpers stay inside its marker.
_CONTAINERS = {"class", "struct", "enum", "trait", "impl", "interface", "module", "mod", "namespace"}
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
# A one-line string literal; in Rust `'` opens only a char literal (`'a` is a lifetime).
_LITERAL = re.compile(r""""(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'""")
_RUST_LITERAL = re.compile(r""""(?:\\.|[^"\\\n])*"|'(?:\\[^']{1,8}|[^'\\\n])'""")
_CLOSER = re.compile(r"^\s*[}\])]+[;,]?\s*$")
_IMPORT = re.compile(r"^\s*(import\b|from\b|use\b|pub use\b|mod\b|extern\b|#include\b|(const|let|var)\b.*\brequire\()")
_SIGNATURE_MAX = 80  # a marker names the signature; a longer one costs tokens and says little more


# For the prompt, once above the excerpts: what the markers mean and where SEARCH lines come from.
_MARKERS = ("Large files are shown in part: a line like `...  # lines 120-164 not shown (def helper(x))` stands "
            "for lines that are in the file but not here")
NOTE = _MARKERS + ". Copy SEARCH lines only from the lines shown; they are the file's real lines."
NOTE_WHOLE_DEFINITIONS = _MARKERS + "; never write such a line in your answer."
# A marker line (see `_marker`), also as a model copies it back: it stands for lines that were not shown.
NOT_SHOWN = re.compile(r"^\s*(\.\.\.\s*)?(#|//)?\s*\.*\s*lines? \d+(-\d+)? not shown\b")


@dataclass(frozen=True)
class Excerpt:
    text: str
    shown: list[tuple[int, int]]  # 1-based inclusive line ranges shown verbatim
    whole: bool  # the whole file fitted the budget and is shown as it is


@dataclass(eq=False)
class _Piece:
    """A run of lines: shown verbatim, listed as a marker line of its own, or merged with the hidden
    pieces around it into one marker."""
    lo: int  # 1-based inclusive
    hi: int
    # "code" (a focused symbol, module-level lines), "head" (a class's own line), "def", "blank",
    # "closer" (a class's closing brace: shown with its class line)
    kind: str
    # Lower is shown first: (1, rank) a focused symbol; (2, line) the file's first paragraph and its
    # imports; (3, distance) module-level lines the focus uses; (4, distance) other definitions, each
    # on a marker line of its own (a class: its line, verbatim); (5, distance) other module-level lines.
    # None: only shown when `must` (a focused method's class) or, for blank lines, next to shown code.
    priority: tuple | None
    label: str = ""  # what its marker names ("def helper(x)")
    name: str = ""  # the symbol's name, for a marker that stands for many definitions
    depth: int = 0
    parent: "_Piece | None" = None  # the class line a member is listed under: shown first
    must: bool = False  # shown whatever the budget: the top-ranked focus and the classes around it
    shown: bool = False

    @property
    def verbatim(self) -> bool:
        if self.kind == "closer":
            return self.parent is not None and self.parent.shown
        return self.shown and self.kind in ("code", "head")


# Pruning the budget search: showing a piece saves at most one merged marker of about this length;
# and after this many pieces in a row did not fit, the budget is spent (each try renders the excerpt).
_MARKER_MAX = 300
_MISSES = 24


def render(path: str, text: str, focus: Sequence[Symbol], budget_chars: int, lead: bool = True) -> Excerpt:
    """The file as the model should see it within `budget_chars`: whole when it fits, else the
    focused symbols whole (in rank order; the first always, even over the budget), then the top
    lines, then module-level lines the focus uses, then a marker line per other definition (nearest
    to the focus first), then the other module-level lines; what does not fit is merged into one
    marker per run of hidden lines.

    `lead=False` ranks the top of the file with the other module-level lines, so the excerpt opens
    on a marker and then the focused definition: small models asked to write out the definitions
    they change copy the block from its first line (seen: the module's docstring and tables, then
    the answer budget was spent)."""
    lines = text.splitlines(keepends=True)
    if len(text) <= budget_chars or not lines:
        return Excerpt(text, [(1, len(lines))] if lines else [], True)
    symbols = _parse(path, text)
    ranks = _focus_ranks(focus, symbols)
    language = language_of(path)
    comment = "#" if language in (None, "python") else "//"
    pieces = _pieces(lines, symbols, ranks, language, lead)
    for piece in pieces:
        piece.shown = piece.must
    size = len(_join(lines, pieces, comment))
    misses = 0
    for piece in sorted((p for p in pieces if p.priority is not None and not p.shown), key=lambda p: p.priority):
        if misses >= _MISSES:
            break
        flip = [piece]
        while flip[-1].parent is not None and not flip[-1].parent.shown:
            flip.append(flip[-1].parent)  # a method is listed under its class line, never alone
        if size + sum(_length(lines, p, comment) for p in flip) - _MARKER_MAX > budget_chars:
            misses += 1
            continue  # cannot fit, whatever markers it saves: no need to render to know
        for p in flip:
            p.shown = True
        new_size = len(_join(lines, pieces, comment))
        if new_size > budget_chars:
            misses += 1
            for p in flip:
                p.shown = False
        else:
            misses, size = 0, new_size
    body = _join(lines, pieces, comment)
    shown = _merge([(p.lo, p.hi) for i, p in enumerate(pieces) if p.verbatim or _blank_shown(pieces, i)])
    log.debug("excerpt of %s: %d of %d chars, %d ranges shown", path, len(body), len(text), len(shown))
    return Excerpt(body, shown, False)


def _length(lines: list[str], piece: _Piece, comment: str) -> int:
    if piece.kind == "def":
        return len(_marker(lines, piece.lo, piece.hi, piece.label, comment)) + 1
    return sum(len(line) for line in lines[piece.lo - 1: piece.hi])


def _parse(path: str, text: str) -> list[Symbol]:
    try:
        return parse_symbols(path, text.encode("utf-8"))
    except Exception as error:  # a parser failure must not lose the prompt: no structure, paragraphs only
        log.warning("cannot parse %s for an excerpt: %s", path, error)
        return []


def _focus_ranks(focus: Sequence[Symbol], symbols: list[Symbol]) -> dict[tuple[int, int], int]:
    """Rank by line range of each focused symbol, found in this parse of the text: the focus may
    come from the index, parsed from another version, so by qualified name, the nearest one."""
    ranks: dict[tuple[int, int], int] = {}
    for rank, wanted in enumerate(focus):
        same = [s for s in symbols if s.qualname == wanted.qualname and s.kind == wanted.kind]
        if not same:
            log.debug("focus %s not found in the file as it is now", wanted.qualname)
            continue
        found = min(same, key=lambda s: abs(s.start_line - wanted.start_line))
        ranks.setdefault((found.start_line, found.end_line), rank)
    return ranks


def _pieces(lines: list[str], symbols: list[Symbol], ranks: dict[tuple[int, int], int],
            language: str | None, lead: bool = True) -> list[_Piece]:
    """The file cut into pieces at symbol boundaries and, outside symbols, at blank lines."""
    comment = "#" if language in (None, "python") else "//"
    ordered = sorted(symbols, key=lambda s: (s.start_line, -s.end_line))
    first = min((s.start_line for s in ordered), default=len(lines) + 1)
    pieces: list[_Piece] = []

    def focused_inside(symbol: Symbol) -> bool:
        return any(symbol.start_line <= lo and hi <= symbol.end_line and (lo, hi) != (symbol.start_line, symbol.end_line)
                   for lo, hi in ranks)

    def kids_of(symbol: Symbol | None, lo: int, hi: int) -> list[Symbol]:
        """The outermost symbols inside lines lo..hi (excluding `symbol` itself), not overlapping."""
        kids: list[Symbol] = []
        for s in ordered:
            if s is symbol or not (lo <= s.start_line and s.end_line <= hi):
                continue
            if kids and s.start_line <= kids[-1].end_line:
                continue  # nested in (or overlapping) the previous kid
            kids.append(s)
        return kids

    # Lines outside definitions that the focused code uses (a constant, a table) come before the rest.
    focused = [lines[lo - 1: hi] for lo, hi in ranks]
    used = set(_IDENTIFIER.findall("".join(line for block in focused for line in block)))

    def distance(lo: int) -> int:
        return min((abs(lo - start) for start, _ in ranks), default=lo)

    def priority(lo: int, hi: int) -> tuple:
        if lead and lo < first and (not any(line.strip() for line in lines[: lo - 1]) or _IMPORT.match(lines[lo - 1])):
            return (2, lo)  # the top of the file: its first paragraph (a docstring, a licence) and imports
        starts = {m.group(0) for line in lines[lo - 1: hi] if (m := _IDENTIFIER.match(line.lstrip()))}
        return (3 if starts & used else 5, distance(lo))

    def gap(lo: int, hi: int, depth: int, parent: _Piece | None) -> None:
        """Lines outside any definition, as paragraphs: split at blank lines, but never inside
        brackets or a multi-line string (a marker there would read as part of the string)."""
        starts = _statement_starts(lines, lo, hi, comment, language == "rust")
        start = lo
        for number in range(lo, hi + 2):
            boundary = number > hi or (number in starts and
                                       (lines[number - 1].strip() == "") != (lines[start - 1].strip() == ""))
            if not boundary:
                continue
            if parent is not None and all(_CLOSER.match(line) for line in lines[start - 1: number - 1]):
                pieces.append(_Piece(start, number - 1, "closer", None, depth=depth, parent=parent))
            elif lines[start - 1].strip():
                pieces.append(_Piece(start, number - 1, "code", priority(start, number - 1), depth=depth,
                                     parent=parent))
            else:
                pieces.append(_Piece(start, number - 1, "blank", None, depth=depth, parent=parent))
            start = number

    def walk(symbol: Symbol | None, lo: int, hi: int, depth: int, parent: _Piece | None) -> None:
        cursor = lo
        for kid in kids_of(symbol, lo, hi):
            if kid.start_line > cursor:
                gap(cursor, kid.start_line - 1, depth, parent)
            rank = ranks.get((kid.start_line, kid.end_line))
            label = _signature(lines, kid)
            inner = kids_of(kid, kid.start_line, kid.end_line)
            head_end = _def_line(lines, kid)
            if rank is not None:
                pieces.append(_Piece(kid.start_line, kid.end_line, "code", (1, rank), label, kid.name, depth, parent,
                                     must=rank == min(ranks.values())))
            elif inner and inner[0].start_line > head_end and (kid.kind in _CONTAINERS or focused_inside(kid)):
                # A class: its own line, verbatim (as long as a marker would be, and real), then each
                # member on a line of its own; always shown around a focused method.
                around = focused_inside(kid)
                head = _Piece(kid.start_line, head_end, "head", None if around else (4, distance(kid.start_line)),
                              label, kid.name, depth, parent, must=around)
                pieces.append(head)
                walk(kid, head_end + 1, kid.end_line, depth + 1, head)
            else:
                # A one-line definition is no longer than its marker: shown as it is, when listed.
                kind = "code" if kid.start_line == kid.end_line else "def"
                pieces.append(_Piece(kid.start_line, kid.end_line, kind, (4, distance(kid.start_line)), label,
                                     kid.name, depth, parent))
            cursor = kid.end_line + 1
        if cursor <= hi:
            gap(cursor, hi, depth, parent)

    walk(None, 1, len(lines), 0, None)
    return pieces


def _statement_starts(lines: list[str], lo: int, hi: int, comment: str, rust: bool) -> set[int]:
    """The lines in lo..hi that start outside brackets, block comments and multi-line strings, a
    rough scan (string escapes, comments) that starts balanced at `lo`, the line after a definition."""
    starts: set[int] = set()
    depth, quote = 0, ""
    for number in range(lo, hi + 1):
        if depth <= 0 and not quote:
            starts.add(number)
        line, i = lines[number - 1], 0
        while i < len(line):
            if quote:  # inside a multi-line string or comment: look for its end
                end = line.find(quote, i)
                if end < 0:
                    break
                i, quote = end + len(quote), ""
                continue
            opener = next((q for q in ('"""', "'''", "/*", "`") if line.startswith(q, i)), "")
            if opener:
                quote = "*/" if opener == "/*" else opener
                i += len(opener)
                continue
            if line.startswith(comment, i):
                break
            literal = (_RUST_LITERAL if rust else _LITERAL).match(line, i)
            if literal:
                i = literal.end()
                continue
            depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(line[i], 0)
            i += 1
    return starts


def _def_line(lines: list[str], symbol: Symbol) -> int:
    """The line of the `def`/`class`/`fn` keyword: a symbol's range starts at its decorators,
    attributes and doc comments, its signature at the keyword."""
    start = " ".join(symbol.signature.split()[:3])
    for number in range(symbol.start_line, symbol.end_line + 1):
        line = lines[number - 1]
        if (start and start in " ".join(line.split())) or (not start and not _PREAMBLE.match(line)):
            return number
    return symbol.start_line


def _signature(lines: list[str], symbol: Symbol) -> str:
    text = symbol.signature or " ".join(lines[_def_line(lines, symbol) - 1].split())
    text = text.rstrip(":").rstrip()
    return text if len(text) <= _SIGNATURE_MAX else text[: _SIGNATURE_MAX - 1] + "…"


def _blank_shown(pieces: list[_Piece], index: int) -> bool:
    """Blank lines are shown where they separate shown code, so that the excerpt reads like the file."""
    if pieces[index].kind != "blank":
        return False
    before = pieces[index - 1] if index else None
    after = pieces[index + 1] if index + 1 < len(pieces) else None
    return bool(before and before.verbatim) or bool(after and after.verbatim)


def _marker(lines: list[str], lo: int, hi: int, label: str, comment: str, names: Sequence[str] = ()) -> str:
    first = next((lines[n - 1] for n in range(lo, hi + 1) if lines[n - 1].strip()), "")
    indent = first[: len(first) - len(first.lstrip())]
    where = f"line {lo}" if lo == hi else f"lines {lo}-{hi}"
    what = label
    if len(names) > 1:
        what = f"{len(names)} definitions: " + ", ".join(names[:8]) + (", …" if len(names) > 8 else "")
    suffix = f" ({what})" if what else ""
    if comment == "#":
        return f"{indent}...  # {where} not shown{suffix}"
    return f"{indent}{comment} ... {where} not shown{suffix}"


def _join(lines: list[str], pieces: list[_Piece], comment: str) -> str:
    eol = "\r\n" if lines[0].endswith("\r\n") else "\n"
    out: list[str] = []
    hidden: list[_Piece] = []  # a run of hidden pieces, merged into one marker

    def flush() -> None:
        real = [p for p in hidden if p.kind != "blank"]
        hidden.clear()
        if not real:
            return
        # Named: the definitions at the run's own level (a hidden class stands for its methods).
        named = [p for p in real if p.name and p.depth == real[0].depth]
        label = named[0].label if len(named) == 1 else ""
        out.append(_marker(lines, real[0].lo, real[-1].hi, label, comment, [p.name for p in named]) + eol)

    for index, piece in enumerate(pieces):
        if piece.verbatim or _blank_shown(pieces, index):
            flush()
            out.extend(lines[piece.lo - 1: piece.hi])
        elif piece.shown:  # a definition listed on a marker line of its own
            flush()
            out.append(_marker(lines, piece.lo, piece.hi, piece.label, comment) + eol)
        else:
            # A run goes on into the members of a hidden class, never out to an outer level.
            if hidden and piece.depth < hidden[0].depth:
                flush()
            hidden.append(piece)
    flush()
    text = "".join(out)
    return text if not text or text.endswith(("\n", "\r")) else text + eol


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def apply_symbol_answer(text: str, symbol: Symbol, new_code: str) -> str:
    """`text` with the lines of `symbol` replaced by `new_code`, the model's rewrite of it.

    The rewrite (the code itself, without its fence) is re-indented to where the symbol stands
    (models often write a method out at column 0), written with the file's line endings, and keeps
    the original decorators when the model left them out. Raises ValueError, in words for the model, when the rewrite is empty, does
    not start with the symbol's definition, or the range is not in the file.
    """
    lines = text.splitlines(keepends=True)
    if not 1 <= symbol.start_line <= symbol.end_line <= len(lines):
        raise ValueError(f"{symbol.qualname}: lines {symbol.start_line}-{symbol.end_line} are not in the file "
                         f"({len(lines)} lines)")
    new = new_code.splitlines()  # unfenced by the caller, which knows which fence closes the block
    while new and not new[0].strip():
        new.pop(0)
    while new and not new[-1].strip():
        new.pop()
    if not new:
        raise ValueError(f"the new code for {symbol.qualname} is empty")
    head = next((line for line in new if not _PREAMBLE.match(line)), "")
    if not re.search(rf"\b{re.escape(symbol.name)}\b", head):
        # Said so that the model can act on it: another function, or the class around the method.
        raise ValueError(f"write {symbol.qualname} out whole, starting with its definition line "
                         f"({_signature(lines, symbol)}); the code given starts with: {head.strip()[:80]}")
    old = lines[symbol.start_line - 1: symbol.end_line]
    first_old = old[0]
    want = first_old[: len(first_old) - len(first_old.lstrip())]
    have = _common_indent(new)
    new = [want + line[len(have):] if line.strip() else "" for line in new]
    decorators = [line.rstrip("\r\n") for line in old[: _def_line(lines, symbol) - symbol.start_line]]
    if decorators and not _PREAMBLE.match(new[0]):
        new = decorators + new
    eol = "\r\n" if first_old.endswith("\r\n") else "\n"
    tail = old[-1][len(old[-1].rstrip("\r\n")):]  # the last line may have had no newline at all
    replaced = [line + eol for line in new]
    replaced[-1] = new[-1] + (tail if tail else "")
    return "".join(lines[: symbol.start_line - 1] + replaced + lines[symbol.end_line:])


def _common_indent(lines: Sequence[str]) -> str:
    indents = [line[: len(line) - len(line.lstrip())] for line in lines if line.strip()]
    common = indents[0] if indents else ""
    for indent in indents[1:]:
        while not indent.startswith(common):
            common = common[:-1]
    return common
