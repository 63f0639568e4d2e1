"""The Jinja2 templates of the dashboard and the report, with the filters they share."""

from __future__ import annotations

import time
from functools import lru_cache

from jinja2 import Environment, PackageLoader, select_autoescape

from auto_gvpie.daemon import duration


def _clock(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else ""


def _diff_class(line: str) -> str:
    """A diff line's role, for colouring: file headers, hunks, added and removed lines."""
    if line.startswith(("+++", "---", "diff --git", "index ")):
        return "dh"
    if line.startswith("@@"):
        return "dk"
    if line.startswith("+"):
        return "da"
    if line.startswith("-"):
        return "dr"
    return ""


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(loader=PackageLoader("auto_gvpie.web", "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(duration=duration, clock=_clock, diff_class=_diff_class)
    return env


def render(template: str, **context) -> str:
    return environment().get_template(template).render(**context)
