"""Which repository paths Auto-GVPIE may read into a prompt or write with an edit.

Paths come from the model's answers and from the user's task file, so neither is
trusted: a path is used only when it is relative, stays inside the repository
(also through symlinks), is not inside `.git/`, and is none of the service's own
files (the task inbox, settings, state, artifacts, vector memory), which would
let an answer rewrite its own task or tests. `confine` is the one place these
rules live; a refusal is a `PathRefused` whose message is written for the model
and the user alike.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Sequence

_OWN = "(task inbox, settings, state or artifacts)"


class PathRefused(Exception):
    """The path may not be read or written; `str(e)` says why, in words the model can act on."""


def clean(raw: str) -> str:
    """A path as the model or user wrote it, normalised: no quotes, forward slashes, no `.` parts.

    `..` parts are kept, so that `confine` can refuse them rather than silently resolve them.
    """
    path = raw.strip().strip("`'\"*").strip().replace("\\", "/")
    path = re.sub(r"/{2,}", "/", path)
    if not path:
        return ""
    normal = PurePosixPath(path).as_posix()
    return "" if normal == "." else normal


def protected_by(rel: str, protected: Sequence[str]) -> str | None:
    """The entry of `protected` that `rel` (a cleaned repo-relative path) is, or lies under."""
    parts = PurePosixPath(rel).parts
    for entry in protected:
        own = PurePosixPath(clean(entry)).parts
        # An empty entry would protect the whole repository; it is a caller's slip, not a rule.
        if own and parts[: len(own)] == own:
            return PurePosixPath(*own).as_posix()
    return None


def confine(root: Path, raw: str, protected: Sequence[str] = ()) -> tuple[str, Path]:
    """The cleaned repo-relative path and the real file it names, or PathRefused.

    The real file may not exist yet (an edit may create it); it is never a directory.
    `protected` holds repo-relative POSIX paths of the service's own files and
    directories: a path equal to or under one, or reaching one through a symlink,
    is refused. OSError from the file system (a name too long, say) passes through.
    """
    root = root.resolve()
    rel = clean(raw)
    if not rel:
        raise PathRefused(f"the path {raw!r} is empty")
    if "\0" in rel:
        raise PathRefused(f"{raw!r} contains a NUL byte")
    if rel.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", rel):
        raise PathRefused(f"{raw} is an absolute path; write paths relative to the repository root")
    parts = PurePosixPath(rel).parts
    if ".." in parts:
        raise PathRefused(f"{raw} leaves the repository (it contains '..'); write paths relative to the "
                          f"repository root")
    if any(part.lower() == ".git" for part in parts):
        raise PathRefused(f"{raw} is inside .git/, which is git's own and never edited or read")
    _refuse_protected(rel, rel, protected)
    real = _real_target(root, rel)
    inside = real.relative_to(root).as_posix()
    if inside != rel:
        _refuse_protected(rel, inside, protected)
    _refuse_same_file(root, rel, real, protected)
    return rel, real


def _refuse_protected(rel: str, inside: str, protected: Sequence[str]) -> None:
    entry = protected_by(inside, protected)
    if entry is None:
        return
    subject = rel if inside == rel else f"{rel} leads to {inside}, which"
    what = "Auto-GVPIE's own file" if entry == inside else f"inside {entry}/, Auto-GVPIE's own directory"
    raise PathRefused(f"{subject} is {what} {_OWN}; it is never edited — change the project's files instead")


def _refuse_same_file(root: Path, rel: str, real: Path, protected: Sequence[str]) -> None:
    """Catch what the names do not: another spelling of a protected path on a case-insensitive
    file system, or a hard link to a protected file."""
    own = {clean(entry): root / clean(entry) for entry in protected if clean(entry)}
    own = {entry: path for entry, path in own.items() if path.exists()}
    for candidate in [real, *real.parents]:
        if candidate == root or not own:
            return
        if not candidate.exists():
            continue
        for entry, path in own.items():
            if os.path.samefile(candidate, path):
                raise PathRefused(f"{rel} is the same file as {entry}, which is Auto-GVPIE's own {_OWN}; it is "
                                  f"never edited — change the project's files instead")


def _real_target(root: Path, rel: str) -> Path:
    """Where `rel` really lands, refusing symlinks that lead out of the repository or into .git."""
    current = root
    parts = PurePosixPath(rel).parts
    for depth, part in enumerate(parts):
        current = current / part
        if depth < len(parts) - 1 and current.exists() and not current.is_dir():
            raise PathRefused(f"there is no {rel}: {PurePosixPath(*parts[: depth + 1]).as_posix()} is a file, "
                              f"not a directory")
        if current.is_symlink():
            link = current.relative_to(root).as_posix()
            through = "is a symlink" if link == rel else f"goes through the symlink {link}"
            try:
                resolved = current.resolve()
            except RuntimeError:  # a symlink loop, before Python 3.13
                resolved = current
            if resolved.is_symlink():  # a symlink loop: resolving stopped at a link
                raise PathRefused(f"{rel} {through} that loops")
            if not resolved.is_relative_to(root):
                raise PathRefused(f"{rel} {through} that points outside the repository; it is never edited "
                                  f"or read")
            if any(p.lower() == ".git" for p in resolved.relative_to(root).parts):
                raise PathRefused(f"{rel} {through} that points into .git/, which is git's own and never "
                                  f"edited or read")
            current = resolved
    if current == root or current.is_dir():
        raise PathRefused(f"{rel} is a directory, not a file")
    return current
