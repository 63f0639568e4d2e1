"""Tests for auto_gvpie.paths: which repository paths may be read or written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from auto_gvpie.paths import PathRefused, clean, confine, protected_by

# The service's own files when the home is the repository (the default layout).
PROTECTED = ("auto_tasks.json", "gvpie.toml", ".gvpie", "artifacts", "lancedb")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A repository whose home is itself: the service's files lie among the project's."""
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / ".git").mkdir()
    (repo / "src" / "calc.py").write_text("x = 1\n")
    (repo / "auto_tasks.json").write_text("[]\n")
    (repo / "artifacts").mkdir()
    (repo / "artifacts" / "a.patch").write_text("patch\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("secret\n")
    return repo


@pytest.mark.parametrize("raw, expected", [
    ("./a//b/./c.py", "a/b/c.py"), ("`calc.py`", "calc.py"), ("'src\\calc.py'", "src/calc.py"),
    ("src/", "src"), ("", ""), ("./", ""), (" . ", ""), ("a/../b", "a/../b"), ("**x.py**", "x.py"),
])
def test_clean(raw, expected):
    assert clean(raw) == expected


def test_confine_accepts_files_inside_and_new_ones(root):
    assert confine(root, "src/calc.py") == ("src/calc.py", root.resolve() / "src" / "calc.py")
    assert confine(root, "./src//calc.py", PROTECTED)[0] == "src/calc.py"
    assert confine(root, "new/dir/mod.py", PROTECTED) == ("new/dir/mod.py", root.resolve() / "new/dir/mod.py")
    # Names that merely start like a protected one are the project's.
    for name in ("auto_tasks.json.bak", "artifacts2/x", "src/artifacts/x", "lancedb.py"):
        assert confine(root, name, PROTECTED)[0] == name


def test_symlink_inside_the_repository_lands_on_its_target(root):
    (root / "alias.py").symlink_to("src/calc.py")
    assert confine(root, "alias.py", PROTECTED) == ("alias.py", root.resolve() / "src" / "calc.py")


@pytest.mark.parametrize("raw, words", [
    ("", "is empty"),
    ("/etc/passwd", "absolute path"),
    ("~/x.py", "absolute path"),
    ("C:/x.py", "absolute path"),
    ("../outside/secret.txt", "leaves the repository"),
    ("src/../../outside/secret.txt", "leaves the repository"),
    ("src/../auto_tasks.json", "leaves the repository"),
    (".git/config", "inside .git/"),
    ("src/.GIT/x", "inside .git/"),
    ("x\0.py", "NUL byte"),
    ("src", "is a directory, not a file"),
    ("src/calc.py/inner.py", "src/calc.py is a file, not a directory"),
    ("auto_tasks.json", "auto_tasks.json is Auto-GVPIE's own file"),
    ("./auto_tasks.json", "auto_tasks.json is Auto-GVPIE's own file"),
    ("artifacts/a.patch", "inside artifacts/, Auto-GVPIE's own directory"),
    ("artifacts", "Auto-GVPIE's own file"),
    (".gvpie/state.db", "inside .gvpie/"),
    ("lancedb/tasks.lance/data", "inside lancedb/"),
    ("gvpie.toml", "Auto-GVPIE's own file"),
])
def test_confine_refuses(root, raw, words):
    with pytest.raises(PathRefused, match=re.escape(words)):
        confine(root, raw, PROTECTED)


def test_protected_message_says_what_to_do(root):
    with pytest.raises(PathRefused) as refused:
        confine(root, "auto_tasks.json", PROTECTED)
    assert str(refused.value) == ("auto_tasks.json is Auto-GVPIE's own file (task inbox, settings, state or "
                                  "artifacts); it is never edited — change the project's files instead")


def test_symlinks_leading_out_into_git_or_to_protected_files_are_refused(root, tmp_path):
    (root / "escape").symlink_to(tmp_path / "outside")
    (root / "passwd").symlink_to("/etc/passwd")
    (root / "hooks").symlink_to(".git")
    (root / "tasks.json").symlink_to("auto_tasks.json")
    (root / "out").symlink_to("artifacts")
    (root / "loop").symlink_to("loop")
    cases = {"escape/secret.txt": "points outside the repository", "passwd": "points outside the repository",
             "hooks/pre-commit": "into .git/", "tasks.json": "leads to auto_tasks.json, which is Auto-GVPIE's own",
             "out/new.patch": "leads to artifacts/new.patch, which is inside artifacts/", "loop": "loops"}
    for raw, words in cases.items():
        with pytest.raises(PathRefused) as refused:
            confine(root, raw, PROTECTED)
        assert words in str(refused.value), raw


def test_hard_link_to_a_protected_file_is_refused(root):
    os.link(root / "auto_tasks.json", root / "copy.json")
    with pytest.raises(PathRefused, match="the same file as auto_tasks.json"):
        confine(root, "copy.json", PROTECTED)
    assert confine(root, "copy.json")[0] == "copy.json"  # only the service's own paths are protected


def test_protected_by_compares_whole_parts_and_ignores_empty_entries():
    assert protected_by("artifacts/x/y", ["artifacts"]) == "artifacts"
    assert protected_by("artifacts", ["./artifacts/"]) == "artifacts"
    assert protected_by("artifactsx", ["artifacts"]) is None
    assert protected_by("src/x.py", ["", "."]) is None
