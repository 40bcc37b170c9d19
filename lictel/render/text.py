"""A report as a terminal table, CSV or JSON: what the CLI prints and the HTTP API answers."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator, Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

from lictel import limits
from lictel.reports.common import Report

_CONTROLS = {c: f"\\x{c:02x}" for c in limits.CONTROL if c != 0x0A}


def visible(text: str) -> str:
    """Text with control characters (terminal escapes, NUL, ...) shown as ``\\xNN``: data never drives
    the terminal."""
    return text.translate(_CONTROLS)


def plain(value: Any) -> Any:
    """A value as CSV and JSON carry it: dates and times in ISO-8601."""
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return value


def csv_text(columns: Sequence[str] | None, rows: Sequence[Sequence[Any]]) -> str:
    """Rows as CSV (``None`` is an empty field), after a header when ``columns`` are given."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if columns is not None:
        w.writerow(columns)
    w.writerows(["" if v is None else plain(v) for v in row] for row in rows)
    return buf.getvalue()


def report_csv(report: Report, part: int | None = None) -> str:
    """One table of a report (the main one, or ``parts[part]``) as CSV with its header."""
    chosen = report if part is None else report.parts[part]
    return csv_text(chosen.columns, chosen.rows)


def _records(r: Report) -> list[dict[str, Any]]:
    return [{c: plain(v) for c, v in zip(r.columns, row, strict=True)} for row in r.rows]


def report_json(report: Report) -> str:
    """A report and its further tables as one JSON document (what ``--format json`` prints)."""
    doc: dict[str, Any] = {"report": report.title, "notes": report.notes, "rows": _records(report)}
    if report.parts:
        doc["parts"] = [{"title": p.title, "notes": p.notes, "rows": _records(p)} for p in report.parts]
    return json.dumps(doc, indent=1, ensure_ascii=False, default=str) + "\n"


def api_document(report: Report) -> dict[str, Any]:
    """The main table of a report as the HTTP API answers it: title, columns, rows, notes."""
    return {"title": report.title, "columns": report.columns, "rows": _records(report), "notes": report.notes}


def cell(value: Any) -> Text | str:
    """A table cell: integers with thousands separators, fractions rounded for reading (csv and json
    keep full precision), text as plain text (a name like ``[/]`` or ``[link=...]`` is shown as
    written, never read as markup) with control characters made visible."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.2g}"
    return Text(visible(limits.storable(str(value)) or ""))


def tables(report: Report) -> Iterator[tuple[Report, Table | None]]:
    """Each table of a report (the main one, then its parts) as a terminal table; ``None`` for a
    table without rows (the caller says "none")."""
    for r in (report, *report.parts):
        if not r.rows:
            yield r, None
            continue
        table = Table(title=Text(visible(r.title)), title_justify="left")
        for k, c in enumerate(r.columns):
            numeric = all(isinstance(row[k], int | float) or row[k] is None for row in r.rows)
            table.add_column(c, justify="right" if numeric else "left")
        for row in r.rows:
            table.add_row(*[cell(v) for v in row])
        yield r, table
