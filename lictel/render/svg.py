"""Charts as self-contained SVG."""

from __future__ import annotations

import datetime as dt

from lictel.reports.common import DAYS, Chart, HourOfWeekChart, LineChart


def svg(chart: Chart) -> str:
    """A chart of a report as SVG text ("" for a line chart without points)."""
    if isinstance(chart, HourOfWeekChart):
        return heatmap_svg(chart.title, chart.grid)
    assert isinstance(chart, LineChart)
    return line_svg(chart.title, chart.series)


def heatmap_svg(title: str, grid: dict[tuple[int, int], tuple[float, int]]) -> str:
    top = max((v[0] for v in grid.values()), default=0.0) or 1.0
    cell, left, head = 26, 44, 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + 24 * cell + 10}" height="{head + 7 * cell + 30}" '
             f'font-family="sans-serif" font-size="11">', f'<text x="4" y="16" font-size="13">{esc(title)}</text>']
    for h in range(24):
        parts.append(f'<text x="{left + h * cell + cell / 2}" y="{head - 6}" text-anchor="middle">{h}</text>')
    for dow in range(7):
        y = head + dow * cell
        parts.append(f'<text x="4" y="{y + cell * 0.65}">{DAYS[dow]}</text>')
        for h in range(24):
            avg, peak = grid.get((dow, h), (0.0, 0))
            shade = int(255 - 200 * avg / top)
            parts.append(f'<rect x="{left + h * cell}" y="{y}" width="{cell - 1}" height="{cell - 1}" '
                         f'fill="rgb({shade},{shade},255)"><title>{DAYS[dow]} {h:02d}:00 avg {avg:.2f}, '
                         f'peak {peak}</title></rect>')
    parts.append(f'<text x="4" y="{head + 7 * cell + 20}">darkest = {top:.2f} licenses on average</text></svg>')
    return "\n".join(parts)


def line_svg(title: str, series: dict[str, list[tuple[dt.date, float]]], width: int = 720, height: int = 260) -> str:
    """A small line chart of daily values (one line per named series)."""
    pts = [p for s in series.values() for p in s]
    if not pts:
        return ""
    d0, d1 = min(p[0] for p in pts), max(p[0] for p in pts)
    span = max((d1 - d0).days, 1)
    top = max(max(p[1] for p in pts), 1.0) * 1.1
    left, bottom, head = 50, 30, 28
    w, h = width - left - 10, height - head - bottom

    def xy(d: dt.date, v: float) -> str:
        return f"{left + w * (d - d0).days / span:.1f},{head + h - h * v / top:.1f}"

    colors = ["#1f5fbf", "#c0392b", "#27ae60", "#8e44ad"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="11">', f'<text x="4" y="16" font-size="13">{esc(title)}</text>',
             f'<line x1="{left}" y1="{head + h}" x2="{left + w}" y2="{head + h}" stroke="#999"/>',
             f'<line x1="{left}" y1="{head}" x2="{left}" y2="{head + h}" stroke="#999"/>',
             f'<text x="{left - 4}" y="{head + 4}" text-anchor="end">{top / 1.1:.0f}</text>',
             f'<text x="{left - 4}" y="{head + h}" text-anchor="end">0</text>',
             f'<text x="{left}" y="{height - 8}">{d0}</text>',
             f'<text x="{left + w}" y="{height - 8}" text-anchor="end">{d1}</text>']
    for i, (name, s) in enumerate(series.items()):
        color = colors[i % len(colors)]
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" '
                     f'points="{" ".join(xy(d, v) for d, v in sorted(s))}"/>')
        parts.append(f'<text x="{left + 8 + 140 * i}" y="{head + 12}" fill="{color}">{esc(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def esc(text: str) -> str:
    """Text for SVG and HTML: markup characters escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


