"""Bar charts drawn on the server as inline SVG: no script, no external library, works offline
and inside a mailed report."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

COLORS = {"done": "#2f9e44", "failed": "#e03131", "cancelled": "#868e96", "time": "#1c7ed6",
          "attempts": "#7048e8"}


@dataclass(frozen=True)
class Series:
    name: str
    values: list[float]
    color: str


def bar_chart(title: str, labels: list[str], series: list[Series], *, unit: str = "", whole: bool = True,
              width: int = 560, height: int = 230) -> str:
    """Stacked bars, one per label; an empty chart says so instead of drawing nothing."""
    left, right, top, bottom = 44, 12, 28, 56
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {width} {height}"'
             f' width="{width}" height="{height}" aria-label="{escape(title)}">',
             f'<title>{escape(title)}</title>',
             f'<text x="{left}" y="16" class="chart-title" font-size="13" font-weight="600">{escape(title)}</text>']
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    if not labels or max(totals, default=0) <= 0:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#868e96"'
                     f' font-size="12">nothing yet</text></svg>')
        return "".join(parts)
    top_value = _nice(max(totals), whole)
    for step in range(5):  # grid lines with their values
        value = top_value * step / 4
        y = top + plot_h - plot_h * step / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#dee2e6"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="10" fill="#495057">'
                     f'{_fmt(value)}</text>')
    slot = plot_w / len(labels)
    bar = max(2.0, min(48.0, slot * 0.7))
    for i, label in enumerate(labels):
        x = left + slot * i + (slot - bar) / 2
        y = top + plot_h
        for s in series:
            value = s.values[i]
            if value <= 0:
                continue
            h = plot_h * value / top_value
            y -= h
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{s.color}">'
                         f'<title>{escape(label)}: {_fmt(value)}{unit} {escape(s.name)}</title></rect>')
        if len(labels) <= 24 or i % max(1, len(labels) // 12) == 0:
            lx, ly = left + slot * i + slot / 2, top + plot_h + 12
            parts.append(f'<text x="{lx:.1f}" y="{ly:.1f}" font-size="10" fill="#495057" text-anchor="end"'
                         f' transform="rotate(-30 {lx:.1f} {ly:.1f})">{escape(label[:18])}</text>')
    if len(series) > 1:  # a legend, right-aligned above the plot
        x = width - right
        for s in reversed(series):
            x -= 8 + 7 * len(s.name) + 16
            parts.append(f'<rect x="{x}" y="7" width="10" height="10" fill="{s.color}"/>'
                         f'<text x="{x + 14}" y="16" font-size="11" fill="#212529">{escape(s.name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def history_charts(history: dict) -> dict[str, str]:
    """The three history charts from `Home.history()`."""
    hours = list(history["per_hour"])
    per_hour = bar_chart("Tasks finished per hour", hours, [
        Series(status, [history["per_hour"][h][status] for h in hours], COLORS[status])
        for status in ("done", "failed", "cancelled")])
    counts = history["attempts_per_solved"]
    attempts = bar_chart("Attempts per solved task", [f"{n} attempt{'s' if n != 1 else ''}" for n in counts],
                         [Series("tasks", [float(v) for v in counts.values()], COLORS["attempts"])])
    timed = history["time_per_task"]
    per_task = bar_chart("Time per task (seconds)", [t[0] for t in timed],
                         [Series(status, [t[1] if t[2] == status else 0.0 for t in timed], COLORS[status])
                          for status in ("done", "failed", "cancelled")], unit=" s", whole=False)
    return {"per_hour": per_hour, "attempts": attempts, "time": per_task}


def _nice(value: float, whole: bool) -> float:
    """A round number at or above `value` for the top of the axis (at least 4 for counts, so the
    four grid lines fall on whole numbers)."""
    magnitude = 10 ** math.floor(math.log10(value))
    # Steps whose quarters are round too (the grid has four lines).
    top = next(step * magnitude for step in (1, 2, 4, 8, 10) if value <= step * magnitude * 1.0000001)
    return max(4.0, math.ceil(top / 4) * 4.0) if whole else float(top)


def _fmt(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.3g}"
