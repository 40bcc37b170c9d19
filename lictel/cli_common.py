"""What every ``lictel`` command shares: the consoles, the common options, settings from the
environment, report scopes, and one way to print or write a report (table, CSV or JSON).

Command modules (``lictel.cli``, ``lictel.cli_vendor``) import from here, never from each other, so
a command family can live in its own module.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape as rich_escape
from rich.table import Table
from rich.text import Text

from lictel import limits
from lictel.config import Settings
from lictel.errors import LictelError

console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

# Reports are read in terminals and in files/CI logs alike: never squeeze them to 80 columns.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)

DataDir = Annotated[Path | None, typer.Option("--data-dir", envvar="LICTEL_DATA_DIR",
                                              help="Data directory (chDB, logs, embedded broker).")]

Force = Annotated[bool, typer.Option("--force", help="Replace the --output file if it exists.")]


def settings_for(data_dir: Path | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, with command-line overrides."""
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(x) for x in first["loc"])
        raise LictelError(f"invalid setting LICTEL_{name.upper()}: {first['msg']}") from None

Fmt = Annotated[str, typer.Option("--format", help="table, csv or json.")]

From = Annotated[str | None, typer.Option("--from", help="Start (YYYY-MM-DD or ISO-8601 with offset); default: "
                                                        "the first stored minute.")]

To = Annotated[str | None, typer.Option("--to", help="End, exclusive (YYYY-MM-DD or ISO-8601); default: after "
                                                    "the last stored minute.")]

OrgOpt = Annotated[str | None, typer.Option("--org", help="Only this organisation.")]

FeatureOpt = Annotated[str | None, typer.Option("--feature", help="Only this feature.")]

TzOpt = Annotated[str, typer.Option("--tz", envvar="LICTEL_TZ", help="The zone (IANA) of the report's days and hours, "
                                                                      "and of --from/--to given as dates.")]


def _scope(org: str | None, feature: str | None, start: str | None, end: str | None, tz: str = "UTC") -> Any:
    from lictel.analysis import Scope
    from lictel.timeutil import zone

    try:
        zone(tz)
    except ValueError as exc:
        raise LictelError(f"--tz: {exc}") from None
    t1 = _parse_time(start, "--from", tz) if start else None
    t2 = _parse_time(end, "--to", tz) if end else None
    if t1 is not None and t2 is not None and t2 <= t1:
        raise LictelError("--to must be after --from")
    return Scope(org, feature, t1, t2, tz)


def _parse_time(text: str, option: str, tz: str = "UTC") -> int:
    """A date (midnight of ``tz``) or an ISO-8601 instant with its offset."""
    from lictel.timeutil import WHEN_HINT, parse_when

    try:
        return parse_when(text, tz)
    except ValueError as exc:
        raise LictelError(f"{option} {text!r}: {exc} ({WHEN_HINT})") from None


def _analysis(settings: Settings) -> tuple[Any, str, dict[str, str]]:
    from lictel.ud import parse_models
    from lictel.warehouse import open_warehouse

    return open_warehouse(settings), settings.clickhouse_database, parse_models(settings.license_models)


def _emit(report: Any, fmt: str, part: int | None = None, output: Path | None = None, force: bool = False) -> None:
    """Print a report as a table (with its further tables and notes), CSV (one table) or JSON."""
    import json

    _check_format(fmt)
    if fmt == "csv":
        chosen = report if part is None else report.parts[part]
        buf = _csv_text([chosen.columns, *chosen.rows])
        _deliver(buf, output, force)
    elif fmt == "json":
        doc: dict[str, Any] = {"report": report.title, "notes": report.notes, "rows": report.dicts()}
        if report.parts:
            doc["parts"] = [{"title": p.title, "notes": p.notes, "rows": p.dicts()} for p in report.parts]
        _deliver(json.dumps(doc, indent=1, ensure_ascii=False, default=str) + "\n", output, force)
    else:
        for r in (report, *report.parts):
            table = Table(title=esc(r.title), title_justify="left")
            for k, c in enumerate(r.columns):
                numeric = r.rows and all(isinstance(row[k], int | float) or row[k] is None for row in r.rows)
                table.add_column(c, justify="right" if numeric else "left")
            for row in r.rows:
                table.add_row(*[_cell(v) for v in row])
            if not r.rows:
                out.print(f"[bold]{esc(r.title)}[/]: none")
            else:
                out.print(table)
            for n in r.notes:
                out.print(f"[dim]{esc(n)}[/]")


def _cell(value: Any) -> Text | str:
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

_CONTROLS = {c: f"\\x{c:02x}" for c in limits.CONTROL if c != 0x0A}


def visible(text: str) -> str:
    """Text with control characters (terminal escapes, NUL, ...) shown as ``\\xNN``: data never drives
    the terminal."""
    return text.translate(_CONTROLS)


def esc(value: object) -> str:
    """Data inside a rich message: control characters made visible, markup escaped."""
    return rich_escape(visible(limits.storable(str(value)) or ""))


def _csv_text(lines: list[list[Any]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(["" if v is None else v for v in line] for line in lines)
    return buf.getvalue()


def _deliver(text: str, output: Path | None, force: bool = False) -> None:
    if output:
        write_file(output, text, force)
        console.print(f"wrote {esc(output)}")
    else:
        sys.stdout.write(text)


def write_file(path: Path, text: str, force: bool = False) -> None:
    """Write an output file whole or not at all: refuse to replace a file without ``force``, never
    write through a symlink (with ``force`` the link itself is replaced), write a temporary file
    beside it and rename it into place; every failure is one line naming the path."""
    import os
    import tempfile

    if path.is_dir():
        raise LictelError(f"{path} is a directory: give a file name")
    if os.path.lexists(path) and not force:
        raise LictelError(f"{path} exists: give --force to replace it")
    parent = path.parent
    if not parent.is_dir():
        raise LictelError(f"cannot write {path}: the directory {parent} does not exist")
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise LictelError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _check_format(fmt: str) -> None:
    if fmt not in ("table", "csv", "json"):
        raise LictelError(f"--format must be table, csv or json, not {fmt!r}")


def _parse_day(text: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise LictelError(f"{option} {text!r} is not a date like 2026-03-02") from None
