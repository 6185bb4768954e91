"""Charts as inline SVG, drawn on the server: no chart library, no script, and the page is
complete as sent. Colours come from the stylesheet (classes), so dark and light themes
apply; each chart has a text title and description for screen readers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH = 600
HEIGHT = 150
LEFT = 44  # room for the value axis labels
BOTTOM = 18  # room for the time labels
TOP = 8


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    css_class: str
    values: Sequence[float | None]


def _fmt(value: float) -> str:
    if value >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.2g}" if value < 1 else f"{value:.1f}"


def _frame(title: str, summary: str, peak: float, unit: str, labels: Sequence[str]) -> list[str]:
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{_id(title)}-t {_id(title)}-d">',
        f'<title id="{_id(title)}-t">{escape(title)}</title>',
        f'<desc id="{_id(title)}-d">{escape(summary)}</desc>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH}" y2="{TOP + plot_h}"/>',
        f'<text class="tick" x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end">'
        f"{escape(_fmt(peak))}{escape(unit)}</text>",
        f'<text class="tick" x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end">0</text>',
    ]
    if labels:
        parts.append(
            f'<text class="tick" x="{LEFT}" y="{HEIGHT - 4}">{escape(labels[0])}</text>'
            f'<text class="tick" x="{WIDTH}" y="{HEIGHT - 4}" text-anchor="end">'
            f"{escape(labels[-1])}</text>"
        )
    return parts


def _id(title: str) -> str:
    return "c-" + "".join(ch if ch.isalnum() else "-" for ch in title.lower())


def stacked_bars(title: str, labels: Sequence[str], series: Sequence[Series]) -> Markup:
    """Bars per bucket, the series stacked bottom to top (e.g. succeeded, then failed)."""
    n = len(labels)
    totals = [sum(s.values[i] or 0 for s in series) for i in range(n)]
    peak = max([*totals, 1.0])
    summary = ", ".join(f"{s.name}: {_fmt(sum(v or 0 for v in s.values))} in all" for s in series)
    parts = _frame(title, summary, peak, "", labels)
    plot_w, plot_h = WIDTH - LEFT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(n, 1)
    bar_w = max(step * 0.8, 1.0)
    for i in range(n):
        base = 0.0
        for s in series:
            value = s.values[i] or 0
            if value <= 0:
                continue
            h = value / peak * plot_h
            y = TOP + plot_h - base - h
            parts.append(
                f'<rect class="{s.css_class}" x="{LEFT + i * step:.1f}" y="{y:.1f}" '
                f'width="{bar_w:.1f}" height="{h:.1f}"><title>{escape(labels[i])}: '
                f"{escape(s.name)} {value:,.0f}</title></rect>"
            )
            base += h
    parts.append("</svg>")
    return Markup("".join(parts))


def lines(title: str, labels: Sequence[str], series: Sequence[Series], unit: str) -> Markup:
    """One polyline per series; a bucket without a value breaks the line."""
    n = len(labels)
    known = [v for s in series for v in s.values if v is not None]
    peak = max([*known, 0.001])
    summary = "; ".join(
        f"{s.name}: latest {_fmt(last)}{unit}"
        if (last := next((v for v in reversed(s.values) if v is not None), None)) is not None
        else f"{s.name}: no data"
        for s in series
    )
    parts = _frame(title, summary, peak, unit, labels)
    plot_w, plot_h = WIDTH - LEFT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(n - 1, 1)
    for s in series:
        runs: list[list[str]] = [[]]
        for i, value in enumerate(s.values):
            if value is None:
                runs.append([])
                continue
            x = LEFT + i * step
            y = TOP + plot_h - value / peak * plot_h
            runs[-1].append(f"{x:.1f},{y:.1f}")
        for run in runs:
            if len(run) == 1:
                cx, cy = run[0].split(",")
                parts.append(f'<circle class="{s.css_class}" cx="{cx}" cy="{cy}" r="2"/>')
            elif run:
                parts.append(f'<polyline class="{s.css_class}" points="{" ".join(run)}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))
