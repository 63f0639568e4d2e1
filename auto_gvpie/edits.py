"""Turn an LLM's plain-text answer into file changes in a repository.

Accepted answers: SEARCH/REPLACE blocks, unified diffs (line numbers may be
wrong or missing) and, when asked for, whole files in fenced blocks. Fences are
``` or longer (````, ~~~); lines of a file that start with ``` (a docstring's
example) stay content, and a whole file cut short at one of them is refused
(see "Code fences" below). Applying
is all-or-nothing: every edit is worked out in memory first, and only when all
of them fit are files written. Nothing is ever written outside the repository,
into `.git/` or into the service's own files (the rules live in `paths.py`). A
refusal is an `EditRefused` whose message is written for the model that produced
the answer, because the engine feeds it back on retry.

Run `python -m auto_gvpie.edits --repo DIR [FILE|-]` to apply an answer by hand.
"""

from __future__ import annotations

import argparse
import bisect
import difflib
import json
import logging
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Sequence

from auto_gvpie.paths import PathRefused, clean, confine, protected_by

logger = logging.getLogger(__name__)

FORMATS = ("auto", "whole", "search_replace", "udiff", "symbol")

# A repository walk only serves to map invented paths; a huge tree is not worth
# scanning for that, so the walk gives up (and mapping by basename with it).
_MAX_REPO_FILES = 20000
_SKIP_DIRS = {".git", "node_modules", ".venv", "venv", "__pycache__", "target", ".gvpie"}

_HEAD = re.compile(r"^\s*<{5,9}\s*SEARCH\b.*$", re.IGNORECASE)
_DIVIDER = re.compile(r"^\s*={5,9}\s*$")
_TAIL = re.compile(r"^\s*>{5,9}\s*REPLACE\b.*$", re.IGNORECASE)
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})(.*)$")
_FENCE_PARTS = re.compile(r"^([ \t]*)(`{3,}|~{3,})(.*)$")
_BACKTICK_RUN = re.compile(r"^[ \t]*(`{3,})", re.MULTILINE)
_HUNK_HEADER = re.compile(r"^@@(?:\s*-(\d+)(?:,\d+)?)?.*$")
_FILE_MARKER = re.compile(
    r"^(?:#+|//+|--|;+|/\*+|<!--)?\s*(?:file\s*name|file|path)\s*[:=]\s*(.+?)\s*(?:\*/|-->)?$",
    re.IGNORECASE,
)
_PATHLIKE = re.compile(r"^[\w.~/\\+@-]+$")
_PATH_TOKEN = re.compile(r"[\w./\\-]*[A-Za-z_][\w-]*\.[A-Za-z]\w*")
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
# Small models shorten whole files with placeholders; writing one would delete code.
_PLACEHOLDER = re.compile(
    r"^\s*(?:#|//|/\*|<!--|--)?\s*(?:\.\.\.|…)|"
    r"(?:#|//|/\*|<!--|--).*\b(?:rest of (?:the )?(?:file|code)|existing code|remains? unchanged|"
    r"unchanged code|same as before)\b",
    re.IGNORECASE,
)


class EditRefused(Exception):
    """The answer was not applied; `str(e)` tells the model what to fix."""


@dataclass(frozen=True)
class Applied:
    files: list[str]
    format: str
    notes: list[str]


@dataclass
class _Block:
    """One edit to one file, whatever format it came in.

    A diff hunk is a block whose SEARCH is its context and removed lines; a whole
    file is a block with `whole` set and the new content in `replace`.
    """

    label: str
    path: str | None
    search: list[str]
    replace: list[str]
    whole: bool = False
    creates: bool = False
    hint: int | None = None
    at: int = 0
    diff: bool = False
    # The same hunk read as if the model dropped the space before its context lines.
    unspaced: tuple[list[str], list[str]] | None = None
    notes: list[str] = field(default_factory=list)
    # A whole file's fence, and whether a closing fence ended it (else the answer simply stopped).
    fence: str = "```"
    closed: bool = True
    # Definitions written out whole (format `symbol`): each replaces the file's definition of that name.
    symbol: bool = False

    @property
    def makes_file(self) -> bool:
        return self.creates or self.whole or not any(line.strip() for line in self.search)


@dataclass
class _FileState:
    rel: str
    real: Path
    original: bytes | None
    lines: list[str]
    eol: str
    final_newline: bool
    bom: bool

    def text(self) -> str:
        return "".join(self.lines)


class _Repo:
    """The repository root, the task's input files and the paths no edit may touch."""

    def __init__(self, root: Path, input_files: Sequence[str], protected: Sequence[str] = ()):
        self.root = root.resolve()
        self.input_files = [clean(p) for p in input_files]
        self.protected = tuple(protected)
        self._files: list[str] | None = None

    def files(self) -> list[str]:
        if self._files is None:
            found: list[str] = []
            for dirpath, dirnames, filenames in os.walk(self.root):
                dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
                for name in filenames:
                    found.append(Path(dirpath, name).relative_to(self.root).as_posix())
                if len(found) > _MAX_REPO_FILES:
                    found = []
                    break
            # The service's own files are never a target, so an invented path is not mapped onto one.
            self._files = [rel for rel in found if protected_by(rel, self.protected) is None]
        return self._files

    def known(self, rel: str) -> bool:
        if rel in self.input_files:
            return True
        try:
            return (self.root / rel).exists()
        except OSError:  # a name too long for the file system, say: not a file we know
            return False

    def confine(self, raw: str) -> tuple[str, Path]:
        """The cleaned repo-relative path and the real file, or `PathRefused` with the reason."""
        return confine(self.root, raw, self.protected)

    def map_invented(self, rel: str, block: _Block) -> str | None:
        """A path the model made up (`path/to/calc.py`), mapped to the one real file it must mean."""
        name = PurePosixPath(rel).name
        same_name = [p for p in self.input_files if PurePosixPath(p).name == name]
        if block.makes_file and (self.root / rel).parent.exists() and not (rel == name and len(same_name) == 1):
            # A new file in an existing directory is a legitimate request, not a slip,
            # unless it is an input file's bare name.
            return None
        if len(same_name) == 1:
            return same_name[0]
        if not same_name:
            repo_same = [p for p in self.files() if PurePosixPath(p).name == name]
            if len(repo_same) == 1:
                return repo_same[0]
        if not block.makes_file and len(self.input_files) == 1:
            only = self.input_files[0]
            try:
                target = self.confine(only)[1]
            except (PathRefused, OSError):
                return None
            if target.is_file():
                lines = _split_keep(_decode(target.read_bytes())[0])
                if _locate(lines, block.search, None)[0]:
                    return only
        return None


class _Problem(Exception):
    """One thing wrong with one block; collected so that all are reported at once."""


# ---------------------------------------------------------------------------
# Reading files


def _decode(data: bytes) -> tuple[str, bool]:
    bom = data.startswith(b"\xef\xbb\xbf")
    if bom:
        data = data[3:]
    # surrogateescape keeps any bytes that are not UTF-8 exactly as they were.
    return data.decode("utf-8", errors="surrogateescape"), bom


def _split_keep(text: str) -> list[str]:
    return re.findall(r"[^\n]*\n|[^\n]+$", text)


def _load(repo: _Repo, rel: str) -> _FileState:
    real = repo.confine(rel)[1]
    original = real.read_bytes() if real.exists() else None
    text, bom = _decode(original or b"")
    lines = _split_keep(text)
    crlf = sum(1 for line in lines if line.endswith("\r\n"))
    ended = sum(1 for line in lines if line.endswith("\n"))
    eol = "\r\n" if crlf * 2 > ended else "\n"
    return _FileState(rel, real, original, lines, eol, text.endswith("\n") or not text, bom)


def _bare(line: str) -> str:
    return line.rstrip("\r\n")


# ---------------------------------------------------------------------------
# Finding SEARCH text in a file


@dataclass(frozen=True)
class _Match:
    start: int
    end: int
    trim_head: int = 0
    trim_tail: int = 0
    from_indent: str = ""
    to_indent: str = ""
    column: tuple[int, int] | None = None


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _common_indent(lines: Sequence[str]) -> str | None:
    indents = [_indent(line) for line in lines if line.strip()]
    if not indents:
        return None
    shortest = min(indents, key=len)
    return shortest if all(i.startswith(shortest) for i in indents) else None


def _dedent(lines: Sequence[str], prefix: str) -> list[str]:
    return [line[len(prefix):] if line.strip() else "" for line in lines]


def _trim_blank_edges(lines: list[str]) -> tuple[list[str], int, int]:
    head = 0
    while head < len(lines) and not lines[head].strip():
        head += 1
    tail = 0
    while tail < len(lines) - head and not lines[len(lines) - 1 - tail].strip():
        tail += 1
    return lines[head: len(lines) - tail], head, tail


def _locate(file_lines: list[str], search: list[str], hint: int | None) -> tuple[list[_Match], str]:
    """Every place the SEARCH lines match, at the first tolerance level that matches at all.

    Levels, strictest first: exact; ignoring trailing whitespace; also ignoring
    blank lines at the block's edges; also a uniform indentation shift; and for a
    one-line SEARCH, a unique fragment of one line.
    """
    bare = [_bare(line) for line in file_lines]
    stripped = [line.rstrip() for line in bare]
    search = [_bare(line) for line in search]

    def windows(size: int) -> range:
        return range(0, len(bare) - size + 1) if size else range(0)

    exact = [_Match(i, i + len(search)) for i in windows(len(search))
             if bare[i: i + len(search)] == search]
    if exact:
        return _prefer(exact, hint), "exact"
    rs = [line.rstrip() for line in search]
    loose = [_Match(i, i + len(rs)) for i in windows(len(rs))
             if stripped[i: i + len(rs)] == rs]
    if loose:
        return _prefer(loose, hint), "trailing whitespace"
    core, head, tail = _trim_blank_edges(rs)
    if core and (head or tail):
        edged = [_Match(i, i + len(core), head, tail) for i in windows(len(core))
                 if stripped[i: i + len(core)] == core]
        if edged:
            return _prefer(edged, hint), "blank lines at the block edges"
    search_indent = _common_indent(core)
    if core and search_indent is not None:
        target = _dedent(core, search_indent)
        shifted = []
        for i in windows(len(core)):
            window = stripped[i: i + len(core)]
            window_indent = _common_indent(window)
            if window_indent is not None and window_indent != search_indent \
                    and _dedent(window, window_indent) == target:
                shifted.append(_Match(i, i + len(core), head, tail, search_indent, window_indent))
        if shifted:
            return _prefer(shifted, hint), "a shifted indentation"
    if len(core) == 1 and core[0].strip():
        fragment = core[0].strip()
        hits = [_Match(i, i + 1, column=(at, at + len(fragment)))
                for i, line in enumerate(bare) for at in _word_occurrences(line, fragment)]
        if hits:
            return _prefer(hits, hint), "the rest of the line"
    return [], ""


def _word_occurrences(line: str, fragment: str) -> list[int]:
    """Where `fragment` occurs in `line` without cutting a name or number in two."""
    found = []
    at = line.find(fragment)
    while at >= 0:
        before = line[at - 1] if at else " "
        after = line[at + len(fragment)] if at + len(fragment) < len(line) else " "
        cuts = (_is_word(before) and _is_word(fragment[0])) or (_is_word(after) and _is_word(fragment[-1]))
        if not cuts:
            found.append(at)
        at = line.find(fragment, at + 1)
    return found


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _prefer(matches: list[_Match], hint: int | None) -> list[_Match]:
    """Several matches are ambiguous, unless a diff's line number points at exactly one."""
    if len(matches) > 1 and hint is not None:
        at_hint = [m for m in matches if m.start == hint]
        if len(at_hint) == 1:
            return at_hint
    return matches


def _reindent(line: str, src: str, dst: str) -> str:
    if not line.strip():
        return ""
    if line.startswith(src):
        return dst + line[len(src):]
    # The REPLACE line is less indented than the SEARCH block: shift it by the same amount.
    own = _indent(line)
    chars = set(src + dst + own)
    if len(chars) == 1:
        width = len(own) + len(dst) - len(src)
        return chars.pop() * max(width, 0) + line.lstrip(" \t")
    return dst + line.lstrip(" \t")


def _replacement(match: _Match, replace: list[str], file_lines: list[str]) -> list[str]:
    """The new lines (without line endings) that take the matched lines' place."""
    lines = [_bare(line) for line in replace]
    if match.column is not None:
        line = _bare(file_lines[match.start])
        new = next((x.strip() for x in lines if x.strip()), "")
        return [line[: match.column[0]] + new + line[match.column[1]:]]
    if match.trim_head or match.trim_tail:
        _, head, tail = _trim_blank_edges(lines)
        # Drop as many edge blank lines from REPLACE as SEARCH had in excess.
        lines = lines[min(head, match.trim_head): len(lines) - min(tail, match.trim_tail)]
    if match.from_indent != match.to_indent:
        lines = [_reindent(line, match.from_indent, match.to_indent) for line in lines]
    return lines


# ---------------------------------------------------------------------------
# Code fences
#
# Markdown fences are runs of 3 or more backticks (or tildes); a block closes only at a fence line
# without an info string, of the same character and at least as long as the one that opened it.
# Files are shown to the model with a fence longer than any backtick run at a line start in them,
# so a docstring's ``` example cannot end the block. An answer fenced with plain ``` around such a
# file is still read right when the evidence allows (see `_block_end`), and a whole file that
# looks cut at one of its own ``` lines is refused rather than written (see `_cut_problem`).


def fence_for(text: str) -> str:
    """A backtick fence no line of `text` can close: ``` or one longer than its longest run at a line start."""
    longest = max((len(run) for run in _BACKTICK_RUN.findall(text)), default=0)
    return "`" * max(3, longest + 1)


@dataclass(frozen=True)
class _Opener:
    run: str  # the backticks or tildes that opened the block
    indent: int


def _opener(line: str) -> _Opener | None:
    parts = _FENCE_PARTS.match(line)
    return _Opener(parts.group(2), len(parts.group(1).expandtabs(4))) if parts else None


def _closes(line: str, opener: _Opener, strict: bool = True) -> bool:
    """Whether `line` is a fence that closes a block opened by `opener`.

    Strictly (as in CommonMark), a closing fence is indented at most 3 columns more than the opener,
    which keeps the indented ``` of a function's docstring inside the block.
    """
    parts = _FENCE_PARTS.match(line)
    if not parts or parts.group(3).strip():
        return False
    run = parts.group(2)
    if run[0] != opener.run[0] or len(run) < len(opener.run):
        return False
    return not strict or len(parts.group(1).expandtabs(4)) <= opener.indent + 3


def _balanced_close(lines: list[str], start: int, stop: int, opener: _Opener, strict: bool = True) -> int | None:
    """The first line in lines[start:stop] that closes `opener` once every inner fenced example
    opened with an info string (a docstring's ```python) is closed again; None if there is none."""
    inner: list[str] = []
    for j in range(start, stop):
        parts = _FENCE_PARTS.match(lines[j])
        if not parts:
            continue
        run = parts.group(2)
        if parts.group(3).strip():
            inner.append(run)
        elif inner and run[0] == inner[-1][0] and len(run) >= len(inner[-1]):
            inner.pop()
        elif not inner and _closes(lines[j], opener, strict):
            return j
    return None


def _block_end(lines: list[str], start: int, original: Counter[str] | None, repo: _Repo) -> int | None:
    """The line that closes the fenced block opened at `start`, or None when nothing closes it.

    When the file the block replaces is known (`original`), see `_closest_end`. Otherwise the first
    closing fence ends it, after any ```python ... ``` pair inside (a docstring's example).
    """
    opener = _opener(lines[start])
    if opener is None:
        return None
    if original:
        return _closest_end(lines, start, opener, original, repo)
    for strict in (True, False):
        candidates = [j for j in range(start + 1, len(lines)) if _closes(lines[j], opener, strict)]
        if candidates:
            end = _balanced_close(lines, start + 1, len(lines), opener, strict)
            return candidates[0] if end is None else end
    return None


def _closest_end(lines: list[str], start: int, opener: _Opener, original: Counter[str], repo: _Repo) -> int | None:
    """Where a whole-file block ends, given the stripped lines of the file it replaces, counted.

    Any closing fence before the next file's block could end it, or the end of the answer (None).
    After the real end come only the model's own words and code blocks, whose fences pair up: so
    an end is possible only where an even number of fence lines follows. Of those, the block ends
    where it is most like the file (the earliest of equals), so that the file's own ``` lines
    stay in it and what the model writes after it stays out.
    """
    content: Counter[str] = Counter()
    distance = sum(original.values())  # the lines the block lacks, or has beyond the file's, so far
    ends: list[tuple[int, int]] = []  # (line, distance)
    fences: list[int] = []
    previous, stop = "", len(lines)
    for j in range(start + 1, len(lines)):
        line = lines[j].strip()
        if _is_fence(line):
            if _path_in_line(line, repo) or (not original[previous] and _path_in_line(previous, repo)):
                stop = j  # the next file's block
                break
            fences.append(j)
            if _closes(lines[j], opener, strict=False):
                ends.append((j, distance))
        if line:
            distance += 1 if content[line] >= original[line] else -1
            content[line] += 1
            previous = line
    last = next((j for j in range(len(lines) - 1, start, -1) if lines[j].strip()), start)
    if stop == len(lines) and not (ends and ends[-1][0] == last):
        ends.append((stop, distance))  # the answer stopped inside the block (its last line closes none)
    paired = [(how_far, j) for j, how_far in ends if (len(fences) - bisect.bisect_right(fences, j)) % 2 == 0]
    closest = min(((how_far, j) for j, how_far in ends if j < len(lines)), default=None)
    best = min(paired, default=None)
    if best is None or (best[1] == len(lines) and closest is not None and closest[0] < best[0]):
        # No way to pair the fences up, or only by taking what follows the block into the file.
        best = closest
    return None if best is None or best[1] == len(lines) else best[1]


def _is_fence(line: str) -> bool:
    """A fence line, as Markdown has it: a backtick fence's info string holds no backtick (```x``` is not one)."""
    parts = _FENCE_PARTS.match(line)
    return parts is not None and not (parts.group(2)[0] == "`" and "`" in parts.group(3))


# ---------------------------------------------------------------------------
# Parsing answers


def _path_in_line(line: str, repo: _Repo, prose: bool = False) -> str | None:
    """The file path a line names, if it is a path line (`calc.py`, `**calc.py**`, `# file: calc.py`)."""
    text = line.strip()
    if not text or _HEAD.match(text) or _DIVIDER.match(text) or _TAIL.match(text):
        return None
    fence = _FENCE.match(text)
    if fence:
        for token in fence.group(2).split():
            token = clean(token)
            if _looks_like_path(token, repo):
                return token
        return None
    marker = _FILE_MARKER.match(text)
    if marker and _PATHLIKE.match(clean(marker.group(1))):
        return clean(marker.group(1))
    token = re.sub(r"^#+\s*", "", text).strip().strip("*`'\"").rstrip(":").strip().strip("*`'\"")
    token = clean(token)
    if token and _PATHLIKE.match(token) and _looks_like_path(token, repo):
        return token
    if prose:
        candidates = {clean(t.rstrip(".,:;")) for t in _PATH_TOKEN.findall(text)}
        known = [c for c in candidates if repo.known(c)]
        if len(known) == 1:
            return known[0]
    return None


def _looks_like_path(token: str, repo: _Repo) -> bool:
    if not token or token.startswith(("<", "=", ">")):
        return False
    if "/" in token or repo.known(token):
        return True
    return re.search(r"\.[A-Za-z0-9_]+$", token) is not None and not re.match(r"^[\d.]+$", token)


def _path_before(lines: list[str], index: int, repo: _Repo) -> str | None:
    """The path written just before line `index`, or before the fence that opens there."""
    i = index - 1
    while i >= 0 and not lines[i].strip():
        i -= 1
    if i >= 0 and _FENCE.match(lines[i]):
        found = _path_in_line(lines[i], repo)
        if found:
            return found
        i -= 1
        while i >= 0 and not lines[i].strip():
            i -= 1
        if i >= 0 and _FENCE.match(lines[i]):
            return None
    return _path_in_line(lines[i], repo, prose=True) if i >= 0 else None


def _parse_search_replace(lines: list[str], repo: _Repo) -> tuple[list[_Block], list[str], list[range]]:
    """The blocks, the problems with malformed ones, and the answer lines each block spans."""
    blocks: list[_Block] = []
    problems: list[str] = []
    spans: list[range] = []
    i = 0
    while i < len(lines):
        if not _HEAD.match(lines[i]):
            i += 1
            continue
        label = f"block {len(spans) + 1} (answer line {i + 1})"
        path = _path_before(lines, i, repo)
        j = i + 1
        search: list[str] = []
        while j < len(lines) and not (_DIVIDER.match(lines[j]) or _HEAD.match(lines[j]) or _TAIL.match(lines[j])):
            search.append(lines[j])
            j += 1
        if j >= len(lines) or not _DIVIDER.match(lines[j]):
            problems.append(f"{label}: the SEARCH part has no ======= line after it; write <<<<<<< SEARCH, "
                            f"the current lines, =======, the new lines, >>>>>>> REPLACE")
            spans.append(range(i, j))
            i = j
            continue
        j += 1
        replace: list[str] = []
        notes: list[str] = []
        while j < len(lines) and not (_TAIL.match(lines[j]) or _HEAD.match(lines[j])):
            replace.append(lines[j])
            j += 1
        if j >= len(lines) or not _TAIL.match(lines[j]):
            fence_at = _replace_end(lines, i, replace)
            if fence_at is None:
                problems.append(f"{label}: the block has no >>>>>>> REPLACE line at its end")
                spans.append(range(i, j))
                i = j
                continue
            # The model closed its code fence instead of writing the REPLACE marker.
            j = j - len(replace) + fence_at
            replace = replace[:fence_at]
            notes.append(f"{label}: no >>>>>>> REPLACE line; the block ends at the closing fence")
        blocks.append(_Block(label, path, search, replace, at=i, notes=notes))
        spans.append(range(i, j + 1))
        i = j + 1
    return blocks, problems, spans


def _replace_end(lines: list[str], head: int, replace: list[str]) -> int | None:
    """Where a REPLACE part without its >>>>>>> REPLACE line ends: at the fence closing the one the
    block was opened in (so a docstring's ``` inside REPLACE stays in), else at its first fence line."""
    i = head - 1
    while i >= 0 and not lines[i].strip():
        i -= 1
    opener = _opener(lines[i]) if i >= 0 else None
    if opener is not None:
        for strict in (True, False):
            found = _balanced_close(replace, 0, len(replace), opener, strict)
            if found is None:
                found = next((k for k, line in enumerate(replace) if _closes(line, opener, strict)), None)
            if found is not None:
                return found
    return next((k for k, line in enumerate(replace) if _FENCE.match(line)), None)


def _parse_udiff(lines: list[str], repo: _Repo) -> tuple[list[_Block], list[str]]:
    blocks: list[_Block] = []
    problems: list[str] = []
    fenced = _fence_map(lines)
    section: _DiffFile | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            section = _diff_file(line[4:], lines[i + 1][4:], repo)
            if section.deleted:
                problems.append(f"the diff at answer line {i + 1} deletes {section.path}; deleting files is not "
                                f"supported, change the file's content instead")
            i += 2
            if i < len(lines) and not lines[i].startswith("@@") and lines[i][:1] in (" ", "+", "-"):
                # No @@ line at all: the hunk starts right after the file header.
                i = _add_hunk(blocks, section, lines, i, fenced, None)
            continue
        if line.startswith("@@"):
            if section is None:
                # Hunks without ---/+++ headers: the path is written before them, if anywhere.
                section = _DiffFile(_path_before(lines, _fence_start(lines, i), repo), False, False)
            header = _HUNK_HEADER.match(line)
            hint = int(header.group(1)) - 1 if header and header.group(1) else None
            i = _add_hunk(blocks, section, lines, i + 1, fenced, hint)
            continue
        if line.startswith("diff --git"):
            section = None
        i += 1
    return blocks, problems


@dataclass
class _DiffFile:
    path: str | None
    creates: bool
    deleted: bool
    hunks: int = 0
    shift: int = 0


def _diff_file(old_raw: str, new_raw: str, repo: _Repo) -> _DiffFile:
    old, new = _diff_path(old_raw, repo), _diff_path(new_raw, repo)
    if new is None:
        return _DiffFile(old, False, True)
    # A renamed file is not supported; a model that names the file differently
    # on the two lines usually means the one that exists.
    path = old if old and not repo.known(new) and repo.known(old) else new
    return _DiffFile(path, old is None, False)


def _diff_path(raw: str, repo: _Repo) -> str | None:
    text = clean(raw.split("\t")[0])
    if text == "/dev/null":
        return None
    if text.startswith(("a/", "b/")) and not repo.known(text):
        return text[2:]
    return text


def _add_hunk(blocks: list[_Block], section: _DiffFile, lines: list[str], i: int, fenced: list[bool | None],
              hint: int | None) -> int:
    block, i = _read_hunk(lines, i, fenced, section, hint, len(blocks) + 1)
    if section.deleted:
        return i
    if section.creates and section.hunks:
        blocks[-1].replace.extend(block.replace)
    else:
        blocks.append(block)
    section.hunks += 1
    # Later hunks' line numbers count the lines earlier hunks added or removed.
    section.shift += len(block.replace) - len(block.search)
    return i


def _fence_map(lines: list[str]) -> list[bool | None]:
    """For each line: None for a fence that opens or closes a block, else whether it lies inside one.

    A block closes at a bare fence at least as long as its opener, so a shorter ``` line inside a
    ```` block is content; so is a closing fence that a hunk line follows at once, with another
    closing fence later: a context line ``` whose leading space the model dropped.
    """
    opener: _Opener | None = None
    result: list[bool | None] = []
    for n, line in enumerate(lines):
        starts = line.startswith(("```", "~~~"))
        if opener is None:
            if starts:
                opener = _opener(line)
            result.append(None if starts else False)
        elif _closes(line, opener) and starts and not _hunk_goes_on(lines, n, opener):
            opener = None
            result.append(None)
        elif starts and line.startswith(opener.run) and _FENCE_PARTS.match(line).group(3).strip():
            opener = _opener(line)  # a new block opened before the last one was closed
            result.append(None)
        else:
            result.append(True)
    return result


def _hunk_goes_on(lines: list[str], n: int, opener: _Opener) -> bool:
    """Whether the fence at line n is followed at once by a hunk line, and the block closes later."""
    if n + 1 >= len(lines) or not lines[n + 1][:1] in (" ", "+", "-", "@"):
        return False
    return any(_closes(line, opener) and line.startswith(opener.run) for line in lines[n + 2:])


def _fence_start(lines: list[str], index: int) -> int:
    i = index - 1
    while i >= 0 and not lines[i].startswith(("```", "~~~", "--- ", "+++ ")):
        i -= 1
    return i if i >= 0 and lines[i].startswith(("```", "~~~")) else index


def _read_hunk(lines: list[str], i: int, fenced: list[bool | None], section: _DiffFile, hint: int | None,
               number: int) -> tuple[_Block, int]:
    label = f"hunk {number} (answer line {i})"
    first = i
    body: list[str] = []
    while i < len(lines):
        line = lines[i]
        if fenced[i] is None or line.startswith(("@@", "diff --git")):
            break
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            break
        # Outside a fence, an unprefixed line ends the hunk; inside one, it is a
        # context line whose leading space the model dropped.
        if not (line[:1] in (" ", "+", "-", "\\") or line == "" or fenced[i]):
            break
        body.append(line)
        i += 1
    while body and body[-1] == "":
        # Blank lines after a hunk are usually the gap before the prose that follows.
        body.pop()
        i -= 1
    before, after = _hunk_sides(body, strip_space=True)
    unspaced = None
    if any(line[:1] not in (" ", "+", "-", "\\") and line for line in body):
        unspaced = _hunk_sides(body, strip_space=False)
    if hint is not None:
        hint += section.shift
    return _Block(label, section.path, [] if section.creates else before, after, creates=section.creates,
                  hint=hint, at=first, diff=True, unspaced=unspaced), i


def _hunk_sides(body: list[str], strip_space: bool) -> tuple[list[str], list[str]]:
    before: list[str] = []
    after: list[str] = []
    for line in body:
        if line.startswith("\\"):
            continue
        if line.startswith("+"):
            after.append(line[1:])
        elif line.startswith("-"):
            before.append(line[1:])
        else:
            text = line[1:] if strip_space and line.startswith(" ") else line
            before.append(text)
            after.append(text)
    return before, after


def _parse_whole(lines: list[str], repo: _Repo, symbol: bool = False) -> tuple[list[_Block], list[str]]:
    fences: list[tuple[int, int, str | None, bool]] = []
    i = 0
    while i < len(lines):
        if not _FENCE.match(lines[i]):
            i += 1
            continue
        path = _path_before(lines, i + 1, repo)
        end = _block_end(lines, i, _original_lines(repo, path), repo)
        # Unclosed, the block runs to the end of the answer (not counting the empty line after its last newline).
        j = (len(lines) - (lines[-1] == "")) if end is None else end
        fences.append((i, j, path, end is not None))
        i = j + 1
    blocks: list[_Block] = []
    for start, end, path, closed in fences:
        content = lines[start + 1: end]
        notes: list[str] = []
        if path is None and content:
            marker = _FILE_MARKER.match(content[0].strip())
            if marker and _PATHLIKE.match(clean(marker.group(1))):
                path = clean(marker.group(1))
                if not _file_starts_with(repo, path, content[0]):
                    content = content[1:]
        if path is None:
            if len(fences) == 1 and len(repo.input_files) == 1:
                path = repo.input_files[0]
                notes.append(f"the code block has no file path; used the only input file {path}")
            else:
                continue
        label = f"the {'code' if symbol else 'file'} block for {path} (answer line {start + 1})"
        blocks.append(_Block(label, path, [], content, whole=True, at=start, notes=notes,
                             fence=_FENCE.match(lines[start]).group(1), closed=closed, symbol=symbol))
    return blocks, []


def _original_lines(repo: _Repo, path: str | None) -> Counter[str] | None:
    """The stripped lines of the file a whole-file block replaces, counted, when it can be told which one."""
    names = [path] if path else repo.input_files[:1] if len(repo.input_files) == 1 else []
    if path and not repo.known(path):
        same = [p for p in repo.input_files if PurePosixPath(p).name == PurePosixPath(path).name]
        names = same if len(same) == 1 else []
    for name in names:
        try:
            target = repo.confine(name)[1]
            if target.is_file():
                return Counter(line.strip() for line in _split_keep(_decode(target.read_bytes())[0]) if line.strip())
        except (OSError, PathRefused):
            pass
    return None


def _file_starts_with(repo: _Repo, rel: str, line: str) -> bool:
    try:
        with open(repo.confine(rel)[1], "rb") as handle:
            first = handle.readline()
    except (OSError, PathRefused):
        return False
    return _decode(first)[0].strip() == line.strip()


def _has_udiff(lines: list[str]) -> bool:
    pairs = any(a.startswith("--- ") and b.startswith("+++ ") for a, b in zip(lines, lines[1:]))
    return pairs or any(re.match(r"^@@.*@@|^@@\s*$", line) for line in lines)


def _parse(text: str, fmt: str, repo: _Repo) -> tuple[str, list[_Block], list[str], list[str]]:
    """The format found, the blocks in answer order, problems, and notes about the answer as a whole."""
    # Reasoning models think aloud first; edits sketched there are not the answer.
    text = _THINK.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    lines = re.split(r"\r?\n", text)
    sr_blocks, sr_problems, spans = _parse_search_replace(lines, repo)
    # A diff is looked for only outside the SEARCH/REPLACE blocks, whose content may be anything.
    consumed = {n for span in spans for n in span}
    rest = ["" if n in consumed else line for n, line in enumerate(lines)]
    has_sr, has_diff = bool(spans), _has_udiff(rest)
    if fmt in ("whole", "symbol") and not has_sr and not has_diff:
        blocks, problems = _parse_whole(lines, repo, symbol=fmt == "symbol")
        return fmt, blocks, problems, []
    blocks, problems, notes, found = [], [], [], []
    if has_sr and fmt != "udiff":
        blocks += sr_blocks
        problems += sr_problems
        found.append("search_replace")
    if has_diff and fmt != "search_replace":
        diff_blocks, diff_problems = _parse_udiff(rest, repo)
        blocks += diff_blocks
        problems += diff_problems
        found.append("udiff")
    if found and has_sr and has_diff:
        if len(found) == 2:
            notes.append("the answer mixes SEARCH/REPLACE blocks and a unified diff")
        else:
            other = "a unified diff" if found == ["search_replace"] else "SEARCH/REPLACE blocks"
            problems.append(f"your answer also contains {other}, which this format does not accept; write every "
                            f"change as {'SEARCH/REPLACE blocks' if fmt == 'search_replace' else 'a unified diff'}")
    if fmt == "whole" and found:
        notes.append(f"whole files were asked for; the answer is in the {found[0]} format")
    blocks.sort(key=lambda block: block.at)
    return (found[0] if found else fmt), blocks, problems, notes


# ---------------------------------------------------------------------------
# Applying


def apply_answer(repo: Path, text: str, fmt: str = "auto", input_files: Sequence[str] = (),
                 protected: Sequence[str] = ()) -> Applied:
    """Apply every edit in `text` to the files under `repo`, or none of them.

    `protected`: repo-relative paths (files, or directories with all below them) of the
    service's own files, which no edit may touch (see `paths.confine`).
    Raises EditRefused (nothing on disk changed) when the answer holds no edit,
    when any edit does not fit the files, or when any path is not allowed.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown edit format {fmt!r}; expected one of {', '.join(FORMATS)}")
    root = _Repo(Path(repo), input_files, protected)
    found, blocks, problems, notes = _parse(text, fmt, root)
    if not blocks and not problems:
        raise EditRefused(_no_edit_message(text, fmt, root))
    states: dict[str, _FileState] = {}
    order: list[str] = []
    previous_path: str | None = None
    spliced: set[str] = set()  # files changed by fragments, not written out whole
    for block in blocks:
        notes.extend(block.notes)
        try:
            rel = _block_path(block, root, previous_path, notes)
            previous_path = rel
            if block.symbol or not block.whole:
                spliced.add(rel)
            state = states.get(rel)
            if state is None:
                state = states[rel] = _load(root, rel)
                order.append(rel)
            _apply_block(block, state, notes)
        except (_Problem, PathRefused) as problem:
            problems.append(f"{block.label}: {problem}")
        except OSError as error:
            problems.append(f"{block.label}: cannot use {error.filename or block.path}: "
                            f"{error.strerror or error}")
    if problems:
        raise EditRefused(_refusal(problems, len(blocks)))
    changed = [rel for rel in order if _encode(states[rel]) != states[rel].original]
    if not changed:
        raise EditRefused(_no_op_message(found, order))
    clashes = [f"{a} is written as a file, but {b} needs it to be a directory"
               for a in changed for b in changed if b.startswith(a + "/")]
    clashes += [broken for rel in changed if rel in spliced and (broken := _python_broken(states[rel]))]
    if clashes:
        raise EditRefused(_refusal(clashes, len(blocks)))
    _write(root, [states[rel] for rel in changed])
    logger.debug("applied %s edit to %s", found, ", ".join(changed))
    return Applied(files=changed, format=found, notes=notes)


def _block_path(block: _Block, repo: _Repo, previous: str | None, notes: list[str]) -> str:
    if block.path is None:
        if previous is not None:
            return previous
        if len(repo.input_files) == 1:
            notes.append(f"{block.label}: no file path given; used the only input file {repo.input_files[0]}")
            return repo.confine(repo.input_files[0])[0]
        raise _Problem("no file path is given; write the file's path on the line just before the block, "
                       "exactly as it appears in the repository")
    rel = repo.confine(block.path)[0]
    if (repo.root / rel).exists() or (repo.root / rel).is_symlink():
        return rel
    mapped = repo.map_invented(rel, block)
    if mapped is not None and mapped != rel:
        notes.append(f"mapped invented path {block.path} -> {mapped}")
        return repo.confine(mapped)[0]
    if not block.makes_file:
        hint = f"; the input files are: {', '.join(repo.input_files)}" if repo.input_files else ""
        raise _Problem(f"{rel} does not exist{hint}. Use the exact path of an existing file, or an empty "
                       f"SEARCH to create a new file")
    return rel


def _apply_block(block: _Block, state: _FileState, notes: list[str]) -> None:
    rel = state.rel
    if block.symbol:
        _apply_definitions(block, state)
        return
    if block.whole:
        _check_whole(block, state)
        new = [_bare(line) + state.eol for line in block.replace]
        if new and not state.final_newline:
            new[-1] = _bare(new[-1])
        state.lines = new
        return
    if block.makes_file:
        if state.text().strip():
            if block.diff and not block.creates:
                raise _Problem(f"the hunk has no unchanged or '-' lines, so nothing tells where in {rel} its "
                               f"lines go; include a few unchanged lines around the change, each starting "
                               f"with a space")
            what = "the diff creates a new file" if block.diff else "SEARCH is empty, which means a new file"
            raise _Problem(f"{what}, but {rel} already exists and is not empty; put the current lines you want "
                           f"to change in {'the hunk' if block.diff else 'SEARCH'}")
        state.lines = [_bare(line) + "\n" for line in block.replace]
        state.eol, state.final_newline = "\n", True
        return
    matches, how = _locate(state.lines, block.search, block.hint)
    if not matches and block.unspaced:
        unspaced = _Block(block.label, block.path, *block.unspaced, hint=block.hint, diff=True)
        matches, how = _locate(state.lines, unspaced.search, block.hint)
        if len(matches) == 1:
            notes.append(f"{block.label}: read its context lines as missing their leading space")
            block = unspaced
    if len(matches) > 1:
        where = ", ".join(f"line {m.start + 1}" if m.end - m.start == 1 else f"lines {m.start + 1}-{m.end}"
                          for m in matches[:5])
        raise _Problem(f"{_search_word(block)} matches {len(matches)} places in {rel} ({where}); "
                       f"include more of the surrounding lines so that it matches exactly one place")
    if not matches:
        raise _Problem(_not_found(block, state))
    match = matches[0]
    if match.column is not None and sum(1 for line in block.replace if line.strip()) > 1:
        raise _Problem(f"{_search_word(block)} is only part of line {match.start + 1} of {rel}; copy "
                       f"whole lines into it")
    if how != "exact":
        notes.append(f"{block.label}: matched {rel} ignoring {how}")
    new = [line + state.eol for line in _replacement(match, block.replace, state.lines)]
    if match.column is not None:
        new = [_bare(new[0]) + _eol_of(state.lines[match.start])]
    elif new and match.end == len(state.lines) and not state.lines[-1].endswith("\n"):
        new[-1] = _bare(new[-1])
    state.lines[match.start: match.end] = new
    if state.lines and not state.final_newline and state.lines[-1].endswith("\n"):
        state.lines[-1] = _bare(state.lines[-1])


def _eol_of(line: str) -> str:
    return line[len(_bare(line)):]


def _search_word(block: _Block) -> str:
    return "the old side of your hunk (its ' ' and '-' lines)" if block.diff else "your SEARCH text"


def _apply_definitions(block: _Block, state: _FileState) -> None:
    """Each top-level definition written out in the block replaces the file's definition of the same
    name (the one most like it, when the name is defined more than once), from the last up, so the
    line numbers of the others stay right. A definition may not hold a line an excerpt marked "not
    shown": those lines are not in the answer, and replacing the definition would delete them."""
    # Imported here: tree-sitter and the excerpt machinery are needed by this format only.
    from auto_gvpie.excerpt import apply_symbol_answer

    rel = state.rel
    code = block.replace  # lines outside the definitions (an echoed marker, a note) are not applied
    if not block.closed:
        raise _Problem(f"the code block for {rel} is not closed: the answer stopped; write out only the "
                       f"functions you change, so the answer stays short")
    parsed = _parse_code(rel, code)
    written = _written_definitions(rel, code, parsed)
    if not written:
        raise _Problem(f"the code block for {rel} holds no function or class definition; write out the "
                       f"whole function you change, from its def line to its last line")
    text = "".join(state.lines)
    existing = _parse_code(rel, state.lines)
    placed = []
    for new in written:
        # A method written at column 0 reads as a function: matched by name. One written inside its
        # class is matched by its qualified name first (two classes may both define `__init__`).
        same = ([s for s in existing if s.qualname == new.qualname] if new.qualname != new.name else []) \
            or [s for s in existing if s.name == new.name]
        if not same:
            names = ", ".join(s.name for s in existing if s.qualname == s.name)[:300]
            raise _Problem(f"{rel} defines no {new.name}; write out a definition the file has ({names}), "
                           f"or create new code in a SEARCH/REPLACE block")
        body = code[new.start_line - 1: new.end_line]
        rewrite = [line.strip() for line in body]
        old = max(same, key=lambda s: difflib.SequenceMatcher(
            None, [line.strip() for line in state.lines[s.start_line - 1: s.end_line]], rewrite).ratio())
        placed.append((old, body))
    for old, body in sorted(placed, key=lambda pair: -pair[0].start_line):
        try:
            text = apply_symbol_answer(text, old, "\n".join(body))
        except ValueError as error:
            raise _Problem(str(error)) from None
    state.lines = _split_keep(text)


def _written_definitions(rel: str, code: list[str], parsed: list) -> list:
    """The top-level definitions of an answer's code block, each to replace its namesake whole. A
    class holding a line an excerpt marked "not shown" cannot replace the class (those lines are not
    in the answer and would be deleted), but the methods written out whole inside it can replace
    theirs: seen, a small model echoes the class around the one method it fixed."""
    from auto_gvpie.excerpt import NOT_SHOWN

    def hidden_line(symbol) -> int | None:
        body = code[symbol.start_line - 1: symbol.end_line]
        return next((n for n, line in enumerate(body, symbol.start_line) if NOT_SHOWN.match(line)), None)

    written = []
    for top in (s for s in parsed if s.qualname == s.name):
        hidden = hidden_line(top)
        if hidden is None:
            written.append(top)
            continue
        members = [s for s in parsed if s.qualname == f"{top.name}.{s.name}" and hidden_line(s) is None]
        if not members:
            raise _Problem(f"the code for {top.name} has a line marked 'not shown' (line {hidden} of the block), "
                           f"which would delete those lines; write out a smaller definition inside it whole instead")
        written.extend(members)
    return written


def _parse_code(rel: str, lines: list[str]) -> list:
    from auto_gvpie.codeindex import parse_symbols

    try:
        return parse_symbols(rel, "\n".join(_bare(line) for line in lines).encode("utf-8"))
    except Exception as error:  # a file tree-sitter cannot read: this format cannot place the code
        raise _Problem(f"cannot find the definitions in {rel} ({error}); use SEARCH/REPLACE blocks") from None


def _check_whole(block: _Block, state: _FileState) -> None:
    cut = _cut_problem(block, state)
    if cut:
        raise _Problem(cut)
    old = {line.strip() for line in state.lines}
    if state.text().strip() and not any(line.strip() for line in block.replace):
        raise _Problem(f"the block for {state.rel} is empty; send the complete new content of the file")
    for line in block.replace:
        if _HEAD.match(line) or _TAIL.match(line):
            raise _Problem(f"the new content of {state.rel} contains SEARCH/REPLACE markers; send the complete "
                           f"new file instead, without markers")
        if _PLACEHOLDER.search(line) and line.strip() not in old:
            raise _Problem(f"the new content of {state.rel} contains the placeholder {line.strip()!r}; send the "
                           f"complete file with every line written out, not '...' or 'rest of the code'")


def _cut_problem(block: _Block, state: _FileState) -> str | None:
    """Why a whole-file block looks cut short, or None.

    Cut: the block stops right where the file has a fence line that could have closed the answer's
    fence, and hardly any of the file's lines after that one are in it; or the file loses more than
    half its lines while it has such fence lines, or while nothing closed the block (the answer stopped).
    """
    old = [_bare(line) for line in state.lines]
    new = [_bare(line) for line in block.replace]
    run = block.fence
    inner = [q for q, line in enumerate(old)
             if (m := _FENCE_PARTS.match(line)) and m.group(2)[0] == run[0] and len(m.group(2)) >= len(run)]
    if not old or (not inner and block.closed):
        return None  # no line of the file can end this fence
    last = next((line.strip() for line in reversed(new) if line.strip()), "")
    kept = Counter(line.strip() for line in new if line.strip())
    seen: Counter[str] = Counter()
    done, best = 0, None
    for q in inner:
        for line in old[done: q + 1]:
            if line.strip():
                seen[line.strip()] += 1
        done = q + 1
        before = next((old[k].strip() for k in range(q - 1, -1, -1) if old[k].strip()), "")
        if last in (before, old[q].strip()):
            # How far the new content is from being the file up to q (lines it has beyond, or lacks).
            distance = sum(((kept - seen) + (seen - kept)).values())
            if best is None or distance <= best[0]:  # of equals, the latest: the least it may have kept
                best = (distance, q, seen.copy())
    at = None
    if best is not None:
        _, q, seen = best
        rest = Counter(line.strip() for line in old[q + 1:] if line.strip())
        # Hardly any of the file's lines after q are in the new content, beyond those it shares up to q.
        found = sum(min(count, max(kept[line] - seen[line], 0)) for line, count in rest.items())
        if rest and found * 4 < sum(rest.values()):
            at = q
    if at is None and not (len(old) >= 10 and len(new) * 2 < len(old)):
        return None
    rel, lost = state.rel, max(len(old) - len(new), 0 if at is None else len(old) - at)
    fence = fence_for(state.text())
    if not block.closed:
        why = "your code block has no closing fence: the answer stopped before the end of the file"
    elif at is not None:
        why = (f"{rel} has lines that start with {old[at].strip()[:len(run)]} (line {at + 1} is one), and such a "
               f"line ended your {run} code block, so the rest of the file was cut off")
    else:
        why = f"{rel} has lines that start with {run}, and one of them may have ended your {run} code block"
    longer = f", fenced with {fence} (longer than any fence inside {rel}) so that its own lines stay in the block" \
        if len(fence) > 3 else ""
    return (f"{rel} was not replaced: your new content has {len(new)} lines, so the file would lose {lost} of its "
            f"{len(old)} lines; {why}. Send the whole file again, every line{longer}:\n\n{rel}\n"
            f"{fence}{_language(rel)}\n<all of {rel}, with your change made>\n{fence}")


def _not_found(block: _Block, state: _FileState) -> str:
    rel = state.rel
    what = _search_word(block)
    if not state.lines:
        return f"{rel} is empty, so {what} cannot be in it; use an empty SEARCH to write its content"
    replace = _trim_blank_edges([_bare(line) for line in block.replace])[0]
    if replace and _locate(state.lines, replace, None)[0]:
        return (f"{what} is not in {rel}, but your new lines already are: either this change is already "
                f"made, or you swapped SEARCH and REPLACE. The SEARCH part must hold the lines as they are now "
                f"in {rel}, the REPLACE part the new lines")
    search = _trim_blank_edges([_bare(line) for line in block.search])[0]
    bare = [_bare(line) for line in state.lines]
    size = max(len(search), 1)
    best, best_ratio = 0, -1.0
    wanted = "\n".join(line.strip() for line in search)
    for i in range(0, max(len(bare) - size + 1, 1)):
        window = "\n".join(line.strip() for line in bare[i: i + size])
        ratio = difflib.SequenceMatcher(None, wanted, window, autojunk=False).ratio()
        if ratio > best_ratio:
            best, best_ratio = i, ratio
    window, head, _ = _trim_blank_edges(bare[best: best + size])
    first = best + head
    span = f"line {first + 1}" if len(window) <= 1 else f"lines {first + 1}-{first + len(window)}"
    closest = "\n".join(window)
    fence = fence_for(closest)
    return (f"{what} is not in {rel}; the closest lines are ({span}):\n{fence}\n{closest}\n{fence}\n"
            f"Copy the lines exactly as they are in {rel}.")


def _python_broken(state: _FileState) -> str | None:
    """Why fragments spliced into a Python file that was valid leave it unable to even compile, or
    None. Said before anything is written, with the line: cheaper and plainer than the traceback the
    tests would print (seen: a function written out with its body indented one level too deep). A
    file written out whole is not judged: that format writes exactly what was sent."""
    if not state.rel.endswith((".py", ".pyi")):
        return None
    try:
        compile(state.original or b"", state.rel, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return None  # not valid before either (another Python version, a template): not ours to judge
    try:
        compile(_encode(state), state.rel, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as error:
        where = f", line {error.lineno}: {error.text.strip()!r}" if getattr(error, "lineno", None) and error.text else ""
        return (f"the edit would leave {state.rel} invalid Python ({type(error).__name__}: "
                f"{getattr(error, 'msg', error)}{where}); check the indentation and brackets of the code you wrote")
    return None


def _encode(state: _FileState) -> bytes:
    data = state.text().encode("utf-8", errors="surrogateescape")
    return b"\xef\xbb\xbf" + data if state.bom else data


def _write(repo: _Repo, states: list[_FileState]) -> None:
    """Write every changed file, restoring all of them if any write fails."""
    done: list[_FileState] = []
    made_dirs: list[Path] = []
    try:
        for state in states:
            # Checked again right before writing: the tree may differ from when the answer was read.
            real = repo.confine(state.rel)[1]
            missing = []
            parent = real.parent
            while not parent.exists():
                missing.append(parent)
                parent = parent.parent
            for directory in reversed(missing):
                directory.mkdir()
                made_dirs.append(directory)
            _replace_file(real, _encode(state), real.stat().st_mode if state.original is not None else None)
            done.append(state)
    except (OSError, PathRefused) as error:
        for state in reversed(done):
            if state.original is None:
                state.real.unlink(missing_ok=True)
            else:
                _replace_file(state.real, state.original, state.real.stat().st_mode)
        for directory in reversed(made_dirs):
            directory.rmdir()
        raise EditRefused(f"Your edit was not applied; nothing was changed: could not write the files "
                          f"({error}).") from error


def _replace_file(target: Path, data: bytes, mode: int | None) -> None:
    # Written beside the target, then renamed over it: atomic per file, and a hard
    # link shared with a file outside the repository is never written through.
    temp = target.parent / f".gvpie-{os.urandom(6).hex()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        if mode is not None:
            os.chmod(temp, mode & 0o7777)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------
# Messages for the model


def _refusal(problems: list[str], blocks: int) -> str:
    intro = "Your edit was not applied; nothing was changed."
    if blocks > 1:
        intro += " Fix the problems below and send all the edits again."
    return intro + "\n" + "\n".join(f"- {p}" for p in problems)


def _no_op_message(fmt: str, files: list[str]) -> str:
    names = ", ".join(files)
    if fmt == "whole":
        return (f"Your answer changes nothing: the content you sent for {names} is identical to the current "
                f"file. Send the file with the change the task needs.")
    return (f"Your answer changes nothing in {names}: the new lines are the same as the old ones. Write the "
            f"change the task needs.")


def _no_edit_message(text: str, fmt: str, repo: _Repo) -> str:
    shown = "search_replace" if fmt == "auto" else fmt
    example_path, example_text = _example(repo)
    lines = re.split(r"\r?\n", text)
    if not text.strip():
        why = "your answer is empty."
    elif fmt == "search_replace" and _has_udiff(lines):
        why = "your answer is a diff, but SEARCH/REPLACE blocks were asked for."
    elif fmt == "udiff" and any(_HEAD.match(line) for line in lines):
        why = "your answer has SEARCH/REPLACE blocks, but a unified diff was asked for."
    elif any(_FENCE.match(line) for line in lines):
        if fmt == "whole":
            why = "your code block has no file path; write the path on the line before the block."
        else:
            why = "your answer has a code block but no SEARCH/REPLACE block."
    else:
        why = "your answer does not contain a change to any file."
    return f"No edit found: {why}\n\n" + edit_format_instructions(shown, example_path, example_text)


def _example(repo: _Repo) -> tuple[str, str]:
    for rel in repo.input_files:
        try:
            target = repo.confine(rel)[1]
            if target.is_file():
                return rel, _decode(target.read_bytes())[0]
        except (OSError, PathRefused):
            continue
    return "calc.py", "def add(a, b):\n    return a + b\n"


def _comment_prefix(path: str) -> str:
    suffix = PurePosixPath(path).suffix.lower()
    if suffix in {".rs", ".c", ".h", ".cc", ".cpp", ".hpp", ".js", ".ts", ".go", ".java", ".wgsl", ".kt",
                  ".swift", ".cs", ".scala", ".jsx", ".tsx"}:
        return "//"
    if suffix in {".sql", ".lua", ".hs"}:
        return "--"
    return "#"


def _excerpt(text: str) -> list[str]:
    """A few consecutive non-blank lines of the file, preferring the first definition."""
    lines = [_bare(line) for line in _split_keep(text)]
    start = next((i for i, line in enumerate(lines)
                  if re.match(r"^\s*(def|class|fn|pub fn|function|func|async def|impl|struct)\b", line)), None)
    if start is None:
        start = next((i for i, line in enumerate(lines) if line.strip()), 0)
    chunk = []
    for line in lines[start: start + 3]:
        if not line.strip():
            break
        chunk.append(line)
    return chunk


def edit_format_instructions(fmt: str, example_path: str, example_text: str, fence: str | None = None) -> str:
    """How to write an edit in `fmt`, illustrated on the real file the model has to change.

    `fence`: the longest fence the files were shown with (default: the one `example_text` needs, see
    `fence_for`); when longer than ```, the model is told to fence its answer with it too.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown edit format {fmt!r}; expected one of {', '.join(FORMATS)}")
    fence = max(fence or "", fence_for(example_text), key=len)
    long_fence = "" if len(fence) <= 3 else (
        f" Some lines of the files start with ```, so the files are shown fenced with {fence} instead of ```: "
        f"fence your answer with {fence} too, never ```, so that those lines do not end your block (copy them "
        f"as they are).")
    excerpt = _excerpt(example_text)
    indent = _indent(excerpt[-1]) if excerpt else ""
    if excerpt and excerpt[-1].rstrip().endswith((":", "{")):
        indent += "    "
    added = f"{indent}{_comment_prefix(example_path)} your new line"
    if fmt == "whole":
        # A placeholder, not the current file: small models shown the file as the example send it back unchanged.
        lang = _language(example_path)
        return (f"Reply with the complete new content of each file you change: the file's path alone on one "
                f"line, then the whole file in a fenced code block. Write every line, even unchanged ones; "
                f"never shorten with '...'. Use the exact path ({example_path}), not an invented one. Sending a "
                f"file back unchanged does nothing: make the change the task needs.{long_fence}\n"
                f"Like this:\n\n{example_path}\n{fence}{lang}\n<all of {example_path}, with your change made>\n"
                f"{fence}")
    if fmt == "symbol":
        # A placeholder again: an example written out invites small models to send back its code.
        lang = _language(example_path)
        return (f"Reply with each function or class you change written out whole: the file's path alone on one "
                f"line, then a fenced code block with the complete new definition, from its def line to its last "
                f"line. It replaces the definition of the same name in the file; the rest of the file stays as it "
                f"is. Write out only the definitions you change: never the whole file, never the lines marked "
                f"'not shown'. Sending a definition back unchanged does nothing: make the change the task needs."
                f"{long_fence}\nLike this:\n\n{example_path}\n{fence}{lang}\n<the whole function you change, with "
                f"your change made>\n{fence}")
    if fmt == "udiff":
        context = "\n".join(f" {line}" for line in excerpt)
        return (f"Reply with a unified diff. For each file: a '--- {example_path}' line, a '+++ {example_path}' "
                f"line, then hunks that start with '@@ ... @@'. In a hunk, unchanged lines start with a space, "
                f"removed lines with '-', added lines with '+'. Copy the old lines exactly from the file, with "
                f"enough of them to match only one place.{long_fence} For example:\n\n{fence}diff\n"
                f"--- {example_path}\n+++ {example_path}\n@@ ... @@\n{context}\n+{added}\n{fence}")
    search = "\n".join(excerpt)
    return (f"Reply with one SEARCH/REPLACE block per change. Write the file's exact path ({example_path}) alone "
            f"on the line before the block. SEARCH holds lines copied exactly from the current file, enough of "
            f"them to match only one place; REPLACE holds the lines that take their place. To create a new file, "
            f"leave SEARCH empty.{long_fence} For example:\n\n{example_path}\n{fence}\n<<<<<<< SEARCH\n{search}\n"
            f"=======\n{search}\n{added}\n>>>>>>> REPLACE\n{fence}")


def _language(path: str) -> str:
    return {".py": "python", ".rs": "rust", ".js": "javascript", ".ts": "typescript", ".json": "json",
            ".toml": "toml", ".md": "markdown", ".sh": "bash", ".c": "c", ".cpp": "cpp", ".go": "go",
            ".wgsl": "wgsl", ".yaml": "yaml", ".yml": "yaml"}.get(PurePosixPath(path).suffix.lower(), "")


# ---------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m auto_gvpie.edits",
        description="Apply an LLM answer (SEARCH/REPLACE blocks, a unified diff or whole files) to a repository. "
                    "Exit 0 applied, 1 refused (nothing changed), 2 usage error.")
    parser.add_argument("--repo", required=True, help="the repository the paths in the answer are relative to")
    parser.add_argument("--format", default="auto", choices=FORMATS, help="expected edit format (default auto)")
    parser.add_argument("--input", action="append", default=[], metavar="PATH",
                        help="an input file of the task; invented paths may be mapped to it (repeatable)")
    parser.add_argument("--protect", action="append", default=[], metavar="PATH",
                        help="a file or directory no edit may touch, relative to the repository (repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("answer", nargs="?", default="-", help="file holding the answer, or - for stdin")
    args = parser.parse_args(argv)

    def usage(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        if args.json:
            print(json.dumps({"applied": False, "error": message}))
        return 2

    repo = Path(args.repo)
    if not repo.is_dir():
        return usage(f"--repo {args.repo}: not a directory")
    try:
        if args.answer == "-":
            text = sys.stdin.buffer.read().decode("utf-8", errors="replace")
        else:
            text = Path(args.answer).read_bytes().decode("utf-8", errors="replace")
    except OSError as error:
        return usage(f"cannot read the answer {args.answer}: {error.strerror or error}")
    try:
        applied = apply_answer(repo, text, args.format, args.input, args.protect)
    except EditRefused as refused:
        print(str(refused), file=sys.stderr)
        if args.json:
            print(json.dumps({"applied": False, "error": str(refused)}))
        return 1
    if args.json:
        print(json.dumps({"applied": True, "files": applied.files, "format": applied.format,
                          "notes": applied.notes}))
    else:
        for note in applied.notes:
            print(f"note: {note}", file=sys.stderr)
        for name in applied.files:
            print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
