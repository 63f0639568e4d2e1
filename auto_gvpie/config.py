"""Settings: defaults < <home>/gvpie.toml < GVPIE_* environment variables < command-line flags."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

CONFIG_FILE = "gvpie.toml"
STATE_DIR = ".gvpie"


class ConfigError(Exception):
    """A setting has a value that cannot be used; the message names where it came from."""


@dataclass(frozen=True)
class Settings:
    home: Path
    tasks_file: Path
    repo: Path
    llm: str = "http"  # "http" (any OpenAI-compatible server) or "embedded"
    llm_url: str = "http://127.0.0.1:1234/v1"
    model: str | None = None
    llm_timeout: float = 180.0
    llm_retries: int = 4
    context_window: int = 8192
    max_answer_tokens: int = 2048
    samples: int = 1  # candidate answers per attempt, each checked by the tests (--samples N)
    llm_parallel: int = 1  # requests sent at once for those samples (a server with several slots)
    code_index: bool = True  # index the repository (LanceDB table `code`) to find files for tasks naming none
    edit_format: str = "auto"  # auto | whole | search_replace | udiff | symbol (changed definitions written out)
    test_timeout: float = 300.0
    apply: str = "checkout"  # checkout | branch | none
    memory: bool = True
    gpu: bool = False  # also run pixel programs on the GPU runner
    model_cache: Path = field(default_factory=lambda: Path.home() / ".cache" / "auto-gvpie" / "models")
    interval: float = 30.0
    workers: int = 1
    sandbox: str = "auto"  # auto | on | off: test commands under bubblewrap
    sandbox_network: bool = False  # let sandboxed test commands use the network
    # A fresh worktree holds only tracked files. `setup` (a shell command, run in the worktree before
    # the baseline tests, like a test command) builds what the tests need; `copy_ignored` names files
    # (glob patterns, relative to the repository) that exist in the user's checkout but git does not
    # track — a `_version.py`, a `.env` — copied into each worktree.
    setup: str = ""
    copy_ignored: tuple[str, ...] = ()
    # The judge (judge.py): a review of each result that passed its real check, by the worker's
    # model unless a judge server or model is named; below the threshold it goes round again.
    judge: bool = False
    judge_url: str = ""
    judge_model: str | None = None
    judge_threshold: int = 8
    # The architect (architect.py): with nothing pending, propose one task toward `goal` or the next
    # unfinished milestone of `roadmap` (a Markdown checklist); `max_iterations` 0 means no limit.
    # A proposed code task's tests must start with one of `test_runners` (the user's allow-list).
    goal: str = ""
    roadmap: Path | None = None
    max_iterations: int = 0
    test_runners: tuple[str, ...] = ("pytest", "python -m pytest", "python3 -m pytest", "python -m unittest",
                                     "python3 -m unittest", "cargo test")
    # The dashboard's access token (--serve): required, and then asked of every request, when it
    # listens on an address other than loopback.
    token: str = ""
    # Several machines (auto_gvpie/jobqueue): the Redis queue (`--queue`), the git URL workers fetch the
    # repository from (empty: the repository's own path, for workers that can see it), how long one
    # job may run, and how often a worker says it is alive (a silent worker's job is handed on).
    queue: str = ""
    queue_git: str = ""
    queue_job_timeout: int = 3600
    queue_heartbeat: int = 10

    @property
    def state_dir(self) -> Path:
        return self.home / STATE_DIR

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"


_CHOICES = {
    "llm": ("http", "embedded"),
    "edit_format": ("auto", "whole", "search_replace", "udiff", "symbol"),
    "apply": ("checkout", "branch", "none"),
    "sandbox": ("auto", "on", "off"),
}
_PATH_KEYS = ("home", "tasks_file", "repo", "model_cache", "roadmap")


def _coerce(name: str, value: Any, source: str) -> Any:
    """Turn a raw value (a string from the environment, or a TOML value) into the field's type."""
    default_type = {f.name: f.type for f in dataclasses.fields(Settings)}[name]
    try:
        if default_type.startswith("tuple"):
            return _patterns(value)
        if name in _PATH_KEYS:
            return Path(os.path.expanduser(str(value)))
        if "bool" in default_type:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if "float" in default_type:
            return float(value)
        if "int" in default_type:
            if isinstance(value, bool):
                raise ValueError("expected an integer")
            return int(value)
        text = str(value)
        if name in _CHOICES and text not in _CHOICES[name]:
            raise ValueError(f"expected one of {', '.join(_CHOICES[name])}")
        return text
    except ValueError as exc:
        raise ConfigError(f"{source}: {name}: {exc} (got {value!r})") from None


def _patterns(value: Any) -> tuple[str, ...]:
    """A list of repository-relative glob patterns: a TOML list, or one comma-separated string."""
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",")]
    elif isinstance(value, (list, tuple)):
        if not all(isinstance(item, str) for item in value):
            raise ValueError("expected a list of strings")
        items = [item.strip() for item in value]
    else:
        raise ValueError("expected a list of strings")
    items = [item for item in items if item]
    for item in items:
        parts = item.replace("\\", "/").split("/")
        if item.startswith(("/", "~")) or ".." in parts:
            raise ValueError(f"{item!r} is not a path inside the repository (write it relative to the "
                             "repository's top directory)")
    return tuple(items)


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(Settings)}
    aliases = {"TASKS": "tasks_file"}
    found = {}
    for key, value in env.items():
        if not key.startswith("GVPIE_") or value == "":
            continue
        name = aliases.get(key[6:], key[6:].lower())
        if name in names:
            found[name] = _coerce(name, value, f"environment variable {key}")
    return found


def _from_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    names = {f.name for f in dataclasses.fields(Settings)} - {"home"}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s): {', '.join(unknown)}")
    return {k: _coerce(k, v, str(path)) for k, v in data.items()}


def load_settings(cli: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Merge the four layers; `cli` holds only the flags the user actually gave (None means not given)."""
    env = os.environ if env is None else env
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    from_env = _from_env(env)
    home = Path(cli.get("home") or from_env.get("home") or Path.cwd()).expanduser().resolve()
    merged: dict[str, Any] = {}
    merged.update(_from_file(home / CONFIG_FILE))
    merged.update(from_env)
    merged.update({k: _coerce(k, v, f"--{k.replace('_', '-')}") for k, v in cli.items()})
    merged["home"] = home
    merged["tasks_file"] = Path(merged.get("tasks_file") or home / "auto_tasks.json")
    merged["repo"] = Path(merged.get("repo") or home)
    for key in ("tasks_file", "repo", "roadmap"):
        if merged.get(key) is not None and not merged[key].is_absolute():
            merged[key] = (home / merged[key]).resolve() if key not in cli else merged[key].resolve()
    if merged.get("max_iterations", 0) < 0:
        raise ConfigError(f"max_iterations: must be 0 (no limit) or more (got {merged['max_iterations']})")
    threshold = merged.get("judge_threshold", 8)
    if not 0 <= threshold <= 10:
        raise ConfigError(f"judge_threshold: expected a score from 0 to 10 (got {threshold})")
    return Settings(**merged)
