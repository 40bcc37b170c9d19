"""A report as one self-contained HTML page."""

from __future__ import annotations

from lictel.render.svg import esc, svg
from lictel.reports.common import Report


def to_html(rep: Report, generated: str, pseudonymized: bool) -> str:
    """A self-contained HTML page: the tables and the charts inline, no external resources."""
    def table(r: Report) -> str:
        head = "".join(f"<th>{esc(c)}</th>" for c in r.columns)
        body = "".join("<tr>" + "".join(f"<td>{esc('' if v is None else str(v))}</td>" for v in row) + "</tr>"
                       for row in r.rows) or f'<tr><td colspan="{len(r.columns)}">none</td></tr>'
        notes = "".join(f"<p class=note>{esc(n)}</p>" for n in r.notes)
        return f"<h2>{esc(r.title)}</h2><table><tr>{head}</tr>{body}</table>{notes}"

    drawn = {name: svg(chart) for name, chart in rep.charts.items()}
    charts = "".join(f"<figure>{text}<figcaption>{esc(name)}</figcaption></figure>"
                     for name, text in drawn.items() if text)
    privacy = "User and device names are pseudonymized (keyed SHA-256)." if pseudonymized else ""
    return ("<!DOCTYPE html><html><head><meta charset=utf-8><title>" + esc(rep.title) + "</title><style>"
            "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0}"
            "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}th{background:#eef}"
            ".note{color:#555;font-size:12px}figure{display:inline-block;margin:1em}</style></head><body>"
            f"<h1>{esc(rep.title)}</h1><p class=note>Measured by lictel from the organisation's own license "
            f"server logs; generated {esc(generated)}. {privacy}</p>"
            + table(rep) + "".join(table(p) for p in rep.parts) + "<h2>Charts</h2>" + charts + "</body></html>")
