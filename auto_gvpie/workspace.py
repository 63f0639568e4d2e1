"""Isolated git worktrees for tasks, and bringing a finished patch back to the user's checkout.

The user's checkout is only ever touched by `apply_to_checkout`, which applies a
patch in one `git apply` (all or nothing) and only to files without local changes.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from auto_gvpie.paths import PathRefused, confine
from auto_gvpie.state import pid_alive

log = logging.getLogger(__name__)


class WorkspaceError(Exception):
    """The target repository cannot be used; the message says why."""


def git(repo: Path, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    # Its own session: a Ctrl-C meant for the worker must not kill a git step halfway.
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, input=input,
                          start_new_session=True)
    if check and proc.returncode != 0:
        raise WorkspaceError(f"git {' '.join(args)} failed in {repo}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def check_repo(repo: Path) -> str:
    """The commit tasks start from (HEAD); a clear error when there is none, or when `repo` is not
    the repository's top directory (paths in tasks are relative to that, and so are local changes)."""
    if not repo.is_dir():
        raise WorkspaceError(f"target repository {repo} does not exist (pass --repo DIR)")
    top = git(repo, "rev-parse", "--show-toplevel", check=False)
    if top.returncode != 0:
        raise WorkspaceError(f"{repo} is not a git repository (pass --repo DIR, or run `git init` there)")
    root = Path(top.stdout.strip())
    if root.resolve() != repo.resolve():
        raise WorkspaceError(f"{repo} is a subdirectory of the git repository {root}; pass --repo {root} "
                             "(task inputs and tests are paths relative to the repository's top directory)")
    head = git(repo, "rev-parse", "--verify", "HEAD", check=False)
    if head.returncode != 0:
        raise WorkspaceError(f"{repo} has no commits yet; commit once so tasks have a base to start from")
    return head.stdout.strip()


@functools.lru_cache(maxsize=64)
def _lock_path(repo: Path) -> Path:
    common = Path(git(repo, "rev-parse", "--git-common-dir").stdout.strip())
    return (common if common.is_absolute() else repo / common) / "gvpie.lock"


@contextmanager
def repo_lock(repo: Path) -> Iterator[None]:
    """Serialises our git operations on one repository (several workers, or a worker and --once)."""
    with open(_lock_path(repo.resolve()), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def worktrees_dir(state_dir: Path) -> Path:
    return state_dir / "worktrees"


class Worktree:
    """A detached worktree of HEAD for one task; removed on exit whatever happened."""

    def __init__(self, repo: Path, state_dir: Path, name: str, copy_ignored: Sequence[str] = (),
                 protected: Sequence[str] = ()):
        self.repo = repo
        self.path = worktrees_dir(state_dir) / name
        self.base: str | None = None  # a commit, or the tree `settle()` recorded
        self.copy_ignored = tuple(copy_ignored)  # glob patterns of untracked files to bring from the checkout
        self.protected = tuple(protected)  # the service's own files: never copied
        self.copied: list[str] = []  # what was copied, repo-relative

    def __enter__(self) -> "Worktree":
        self.base = check_repo(self.repo)
        if self.path.exists():
            self.remove()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with repo_lock(self.repo):
            git(self.repo, "worktree", "add", "--detach", str(self.path), self.base)
        try:
            self.copied = copy_untracked(self.repo, self.path, self.copy_ignored, self.protected)
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        with repo_lock(self.repo):
            removed = git(self.repo, "worktree", "remove", "--force", str(self.path), check=False).returncode == 0
            if not removed:  # half-made or already deleted: clean up by hand, then let git forget it
                shutil.rmtree(self.path, ignore_errors=True)
                git(self.repo, "worktree", "prune", check=False)

    def diff(self, since: str | None = None) -> str:
        """Everything changed since the base (or since the `snapshot` `since`), new files included, as one patch."""
        git(self.path, "add", "-A")
        return git(self.path, "diff", "--cached", "--binary", since or self.base or "HEAD").stdout

    def tracked(self) -> set[str]:
        """The files git tracks in the worktree (repo-relative)."""
        return {name for name in git(self.path, "ls-files", "-z").stdout.split("\0") if name}

    def settle(self) -> None:
        """What the worktree holds now (what a setup command built, copied files git does not ignore)
        becomes the base: `diff()` leaves it out, so it never reaches the user's checkout."""
        git(self.path, "add", "-A")
        self.base = git(self.path, "write-tree").stdout.strip()

    def snapshot(self) -> str:
        """The tree as it is now, as a git tree id: each candidate answer of an attempt starts from it."""
        git(self.path, "add", "-A")
        return git(self.path, "write-tree").stdout.strip()

    def reset_to(self, tree: str) -> None:
        """The worktree's files exactly as in `tree` (a `snapshot`): changed ones put back, added ones
        removed. Files copied from the checkout are copied again, since git may ignore them; other
        ignored files (what a setup command built) stay as they are."""
        git(self.path, "add", "-A")
        git(self.path, "read-tree", "--reset", "-u", tree)
        for rel in self.copied:
            shutil.copy2(confine(self.repo, rel)[1], confine(self.path, rel)[1])


def copy_untracked(checkout: Path, target: Path, patterns: Sequence[str], protected: Sequence[str] = ()) -> list[str]:
    """Copy the files matching `patterns` (globs relative to the repository) that git does not track
    from the user's checkout into the worktree `target`; a directory brings the files below it.
    Each path is confined on both sides (inside the repository, no symlink out of it, not `.git/`,
    none of the service's own files); a tracked file is never copied, so the user's local changes
    stay theirs. Returns the repo-relative paths copied."""
    if not patterns:
        return []
    root = checkout.resolve()
    tracked = set(git(root, "ls-files", "-z").stdout.split("\0"))
    copied: list[str] = []
    for pattern in patterns:
        try:
            matches = sorted(root.glob(pattern))
        except (ValueError, NotImplementedError) as exc:  # "." or an absolute pattern
            log.warning("copy_ignored: %r is not a usable pattern: %s", pattern, exc)
            continue
        if not matches:
            log.warning("copy_ignored: %r matches nothing in %s", pattern, root)
        for match in matches:
            for path in _files_below(match):
                rel = path.relative_to(root).as_posix()
                if rel in tracked or rel in copied:
                    continue
                try:
                    _, source = confine(root, rel, protected)
                    _, dest = confine(target, rel, protected)
                except PathRefused as exc:
                    log.warning("copy_ignored: %s not copied: %s", rel, exc)
                    continue
                if not source.is_file():
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, dest)
                copied.append(rel)
    if copied:
        log.info("copied %d untracked file(s) into %s: %s", len(copied), target, ", ".join(copied[:10]))
    return copied


def _files_below(path: Path) -> Iterator[Path]:
    """`path` itself when it is a file (or a symlink, confined later); the files under a directory,
    without following symlinked directories."""
    if path.is_symlink() or not path.is_dir():
        yield path
        return
    for top, dirs, names in os.walk(path, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        for name in sorted(names):
            yield Path(top) / name


def scratch_name(purpose: str) -> str:
    """The name of a worktree that belongs to this process, not to a task (the architect's checks):
    `prune_orphans` leaves it alone while the process lives."""
    return f"{purpose}.pid{os.getpid()}"


def _scratch_alive(name: str) -> bool:
    stem, _, pid = name.rpartition(".pid")
    return bool(stem) and pid.isdigit() and pid_alive(int(pid))


def prune_orphans(repo: Path, state_dir: Path, live: Callable[[], set[str]]) -> list[Path]:
    """Remove worktrees left by a worker that died (kill -9, power loss). `live()` names the tasks
    whose lease is held; it is asked under the repository lock, which a worker also holds while it
    makes its worktree, so a task claimed a moment ago never loses its worktree."""
    root = worktrees_dir(state_dir)
    if not root.is_dir() or not (repo / ".git").exists():
        return []
    removed = []
    with repo_lock(repo):
        keep = live()
        for path in sorted(root.iterdir()):
            if path.name in keep or _scratch_alive(path.name):
                continue
            git(repo, "worktree", "remove", "--force", str(path), check=False)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        git(repo, "worktree", "prune", check=False)
    if removed:
        log.warning("removed %d orphaned worktree(s)", len(removed))
    return removed


def patch_files(patch: str) -> list[str]:
    files = []
    for line in patch.splitlines():
        if line.startswith("diff --git "):
            files.append(line.split(" b/", 1)[-1])
    return files


@dataclass(frozen=True)
class ApplyResult:
    applied: bool
    message: str


def apply_to_checkout(repo: Path, patch: str, mode: str = "checkout", branch: str | None = None) -> ApplyResult:
    """Bring a finished patch to the user: into the working tree (only where they have no local
    changes to the same files), or as a commit on a new branch, or not at all."""
    if mode == "none" or not patch.strip():
        return ApplyResult(False, "patch kept in artifacts only")
    with repo_lock(repo):
        if mode == "branch":
            return _commit_to_branch(repo, patch, branch or "gvpie/task")
        return _apply_to_working_tree(repo, patch)


def _operation_in_progress(repo: Path) -> str | None:
    """A merge, rebase, cherry-pick or revert the user is in the middle of, if any."""
    git_dir = Path(git(repo, "rev-parse", "--absolute-git-dir").stdout.strip())
    for marker, what in (("MERGE_HEAD", "a merge"), ("rebase-merge", "a rebase"), ("rebase-apply", "a rebase or am"),
                         ("CHERRY_PICK_HEAD", "a cherry-pick"), ("REVERT_HEAD", "a revert")):
        if (git_dir / marker).exists():
            return what
    return None


def _apply_to_working_tree(repo: Path, patch: str) -> ApplyResult:
    busy = _operation_in_progress(repo)
    if busy:
        return ApplyResult(False, f"not applied: your checkout is in the middle of {busy}; finish it, then "
                                  "apply the patch from artifacts/ with git apply")
    files = patch_files(patch)
    dirty = git(repo, "status", "--porcelain", "--untracked-files=all", "--", *files).stdout.splitlines()
    if dirty:
        names = ", ".join(sorted({line[3:] for line in dirty}))
        return ApplyResult(False, f"not applied: you have local changes in {names}; your files were left alone")
    check = git(repo, "apply", "--check", "--whitespace=nowarn", "-", check=False, input=patch)
    if check.returncode != 0:
        return ApplyResult(False, f"not applied: the patch no longer applies to your checkout ({check.stderr.strip()})")
    git(repo, "apply", "--whitespace=nowarn", "-", input=patch)
    return ApplyResult(True, f"applied to {repo} ({', '.join(files)})")


def _commit_to_branch(repo: Path, patch: str, branch: str) -> ApplyResult:
    """Commit the patch on a new branch from HEAD without touching the checkout: a scratch index."""
    head = git(repo, "rev-parse", "HEAD").stdout.strip()
    index = Path(git(repo, "rev-parse", "--absolute-git-dir").stdout.strip()) / "gvpie-index"
    env = {**os.environ, "GIT_INDEX_FILE": str(index)}

    def run(*args: str, patch_text: str | None = None) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              input=patch_text, env=env, check=True).stdout.strip()

    try:
        run("read-tree", head)
        run("apply", "--cached", "-", patch_text=patch)
        commit = run("commit-tree", run("write-tree"), "-p", head, "-m", f"auto-gvpie: {branch}")
        run("branch", "--force", branch, commit)
    except subprocess.CalledProcessError as exc:
        return ApplyResult(False, f"not committed: {exc.stderr.strip()}")
    finally:
        index.unlink(missing_ok=True)
    return ApplyResult(True, f"committed to branch {branch}")
