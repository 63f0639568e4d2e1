"""The morning report: the dashboard's views as one static HTML file (images inlined, no
script), for mail or a CI artifact, and a few lines of text for the terminal."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from auto_gvpie.config import Settings
from auto_gvpie.inbox import Status
from auto_gvpie.web.charts import history_charts
from auto_gvpie.web.render import render
from auto_gvpie.daemon import duration
from auto_gvpie.web.views import Home, QueueRow

log = logging.getLogger(__name__)


@dataclass
class Report:
    summary: str  # the text for stdout
    html: str
    finished: list[QueueRow]


def build_report(settings: Settings, since_s: float | None = None) -> Report:
    """What happened in the last `since_s` seconds (everything when None), and what is still queued."""
    home = Home(settings)
    now = time.time()
    since = now - since_s if since_s else None
    rows = home.queue()
    finished = [r for r in rows if r.status in (Status.DONE, Status.FAILED, Status.CANCELLED)
                and (since is None or (r.updated or 0) >= since)]
    open_rows = [r for r in rows if r.status in (Status.PENDING, Status.IN_PROGRESS)]
    summary = _summary(settings, finished, open_rows, rows, since_s, home)
    views = [v for v in (home.task(r.id) for r in finished + open_rows) if v is not None]
    gallery = [g for g in home.gallery() if g.id in {r.id for r in finished + open_rows}]
    html = render("report.html", nav="report", summary=summary, generated=now, since=since, home=settings.home,
                  health=home.daemon(), counts=home.counts(rows), rows=finished + open_rows, views=views,
                  items=gallery, charts=history_charts(home.history(since)),
                  task_href=lambda task_id: f"#task-{task_id}", image_src=lambda name: home.data_uri(name) or "",
                  csrf="", message=None)
    return Report(summary, html, finished)


def write_report(settings: Settings, path: Path, since_s: float | None = None) -> Report:
    report = build_report(settings, since_s)
    path.write_text(report.html, encoding="utf-8")
    log.info("report written to %s", path)
    return report


def _summary(settings: Settings, finished: list[QueueRow], open_rows: list[QueueRow], rows: list[QueueRow],
             since_s: float | None, home: Home) -> str:
    when = f"in the last {duration(since_s)}" if since_s else "so far"
    by = {s: [r for r in finished if r.status == s] for s in (Status.DONE, Status.FAILED, Status.CANCELLED)}
    lines = [f"Auto-GVPIE report for {settings.home}",
             f"{when}: {len(finished)} task(s) finished: {len(by[Status.DONE])} done, {len(by[Status.FAILED])} failed,"
             f" {len(by[Status.CANCELLED])} cancelled",
             f"still queued: {sum(r.status == Status.PENDING for r in open_rows)} pending, "
             f"{sum(r.status == Status.IN_PROGRESS for r in open_rows)} running"]
    solved = by[Status.DONE]
    if solved:
        lines.append(f"attempts per solved task: {sum(r.attempts for r in solved) / len(solved):.1f} on average")
    for row in by[Status.DONE]:
        lines.append(f"  done    {row.id} after {row.attempts} attempt(s): {row.title}")
    for row in by[Status.FAILED]:
        error = (row.error or "").strip().splitlines()[0][:120] if row.error else ""
        lines.append(f"  failed  {row.id} after {row.attempts} attempt(s): {error}")
    for row in by[Status.CANCELLED]:
        lines.append(f"  cancelled {row.id}: {row.title}")
    health = home.daemon()
    lines.append(f"daemon: running, pid {health.pid}, up {duration(health.uptime_s)}" if health.running
                 else f"daemon: not running ({health.note})")
    return "\n".join(lines)
