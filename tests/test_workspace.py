"""Worktrees are isolated and always removed; patches reach the checkout without clobbering local work."""

from __future__ import annotations

import pytest

from auto_gvpie.workspace import Worktree, WorkspaceError, apply_to_checkout, check_repo, prune_orphans, scratch_name
from conftest import git


def test_worktree_is_isolated_and_removed(repo, tmp_path):
    state = tmp_path / "state"
    with Worktree(repo, state, "t1") as wt:
        (wt.path / "calc.py").write_text("changed\n")
        (wt.path / "new.py").write_text("x = 1\n")
        patch = wt.diff()
        assert (repo / "calc.py").read_text() != "changed\n"
    assert not wt.path.exists()
    assert "worktrees/t1" not in git(repo, "worktree", "list")
    assert "+changed" in patch and "new.py" in patch


def test_worktree_removed_on_exception(repo, tmp_path):
    with pytest.raises(RuntimeError):
        with Worktree(repo, tmp_path / "state", "t2") as wt:
            raise RuntimeError("boom")
    assert not wt.path.exists()


def test_patch_applies_to_a_clean_checkout(repo, tmp_path):
    with Worktree(repo, tmp_path / "state", "t") as wt:
        (wt.path / "calc.py").write_text((wt.path / "calc.py").read_text().replace("a - b", "a + b"))
        patch = wt.diff()
    result = apply_to_checkout(repo, patch)
    assert result.applied and "a + b" in (repo / "calc.py").read_text()


def test_local_changes_are_never_overwritten(repo, tmp_path):
    with Worktree(repo, tmp_path / "state", "t") as wt:
        (wt.path / "calc.py").write_text("patched\n")
        patch = wt.diff()
    (repo / "calc.py").write_text("my own work in progress\n")
    result = apply_to_checkout(repo, patch)
    assert not result.applied and "local changes in calc.py" in result.message
    assert (repo / "calc.py").read_text() == "my own work in progress\n"


def test_branch_mode_commits_without_touching_the_checkout(repo, tmp_path):
    with Worktree(repo, tmp_path / "state", "t") as wt:
        (wt.path / "calc.py").write_text("patched\n")
        patch = wt.diff()
    (repo / "notes.txt").write_text("untracked, mine\n")
    result = apply_to_checkout(repo, patch, mode="branch", branch="gvpie/t")
    assert result.applied
    assert git(repo, "show", "gvpie/t:calc.py") == "patched\n"
    assert (repo / "calc.py").read_text() != "patched\n"
    assert git(repo, "status", "--porcelain") == "?? notes.txt\n"


def test_orphans_are_pruned_but_live_ones_kept(repo, tmp_path):
    state = tmp_path / "state"
    for name in ("dead", "live"):
        git(repo, "worktree", "add", "--detach", str(state / "worktrees" / name))
    removed = prune_orphans(repo, state, lambda: {"live"})
    assert [p.name for p in removed] == ["dead"]
    assert (state / "worktrees" / "live").exists() and not (state / "worktrees" / "dead").exists()


def test_a_live_process_keeps_its_scratch_worktree_a_dead_one_does_not(repo, tmp_path):
    import subprocess
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs
    state = tmp_path / "state"
    mine, theirs = scratch_name("architect-check"), f"architect-check.pid{gone.pid}"
    for name in (mine, theirs):
        git(repo, "worktree", "add", "--detach", str(state / "worktrees" / name))
    removed = prune_orphans(repo, state, lambda: set())
    assert [p.name for p in removed] == [theirs] and (state / "worktrees" / mine).exists()


def test_check_repo_explains(tmp_path):
    with pytest.raises(WorkspaceError, match="not a git repository"):
        (tmp_path / "plain").mkdir()
        check_repo(tmp_path / "plain")
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    with pytest.raises(WorkspaceError, match="no commits yet"):
        check_repo(empty)
