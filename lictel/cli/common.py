"""What every ``lictel`` command shares: the consoles, the common options, settings from the
environment, report scopes, and one way to print or write a report (table, CSV or JSON).

Each command family is a module of this package (``stack``, ``produce``, ``report``, ``vendor``, ...);
they import from here (and the run summary from ``summary``, the input readers from ``produce``), so
a family can change without touching the others. ``lictel.cli`` puts them together.
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

from lictel import limits
from lictel.config import Settings
from lictel.errors import LictelError
from lictel.render.text import visible

console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

# Reports are read in terminals and in files/CI logs alike: never squeeze them to 80 columns.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)

DataDir = Annotated[Path | None, typer.Option("--data-dir", envvar="LICTEL_DATA_DIR",
                                              help="Data directory (chDB, logs, embedded broker).")]

CreateTopics = Annotated[bool | None, typer.Option(
    "--create-topics/--no-create-topics", show_default=False,
    help="Create missing topics at start (default: LICTEL_KAFKA_CREATE_TOPICS, on). --no-create-topics for a "
         "cluster whose ACLs forbid it: the topics of docs/deploy.md must exist.")]

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
    from lictel.reports.common import Scope
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


def _report_inputs(settings: Settings) -> tuple[Any, str, dict[str, str]]:
    from lictel.ud import parse_models
    from lictel.warehouse import open_warehouse

    return open_warehouse(settings), settings.clickhouse_database, parse_models(settings.license_models)


def _emit(report: Any, fmt: str, part: int | None = None, output: Path | None = None, force: bool = False) -> None:
    """Print a report as a table (with its further tables and notes), CSV (one table) or JSON."""
    from lictel.render.text import report_csv, report_json, tables

    _check_format(fmt)
    if fmt == "csv":
        _deliver(report_csv(report, part), output, force)
    elif fmt == "json":
        _deliver(report_json(report), output, force)
    else:
        for r, table in tables(report):
            if table is None:
                out.print(f"[bold]{esc(r.title)}[/]: none")
            else:
                out.print(table)
            for n in r.notes:
                out.print(f"[dim]{esc(n)}[/]")


def esc(value: object) -> str:
    """Data inside a rich message: control characters made visible, markup escaped."""
    return rich_escape(visible(limits.storable(str(value)) or ""))


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


Workers = Annotated[int, typer.Option("--workers", envvar="LICTEL_WORKERS", min=1,
                                      help="Stream worker processes.")]
DupGroup = Annotated[list[str] | None, typer.Option(
    "--dup-group", metavar="FEATURE=RULE",
    help="Charge FEATURE's checkouts under this DUP_GROUP rule (NONE, SITE, U, H, UH, UHD, ...; '*' = every "
         "feature without a more specific rule); repeatable; added to LICTEL_DUP_GROUP and overriding the "
         "imported license files for the features it names.")]
Users = Annotated[int, typer.Option(envvar="LICTEL_SIM_USERS", min=1, help="Simulated users.")]
Servers = Annotated[int, typer.Option(envvar="LICTEL_SIM_SERVERS", min=1, help="Simulated license servers.")]
Days = Annotated[int, typer.Option(envvar="LICTEL_SIM_DAYS", min=1, help="Simulated days.")]
Seed = Annotated[int, typer.Option(envvar="LICTEL_SIM_SEED", help="Simulation seed (same seed, same events).")]
Start = Annotated[str, typer.Option(envvar="LICTEL_SIM_START", help="First simulated UTC day (YYYY-MM-DD).")]


def with_dup_group(settings: Settings, dup_group: list[str] | None) -> Settings:
    """``--dup-group`` options on top of ``LICTEL_DUP_GROUP`` (a later entry for a feature wins)."""
    if not dup_group:
        return settings
    from lictel import dupgroup

    rules = dupgroup.parse(settings.dup_group)
    for item in dup_group:
        rules |= dupgroup.parse(item, "--dup-group")
    return settings.model_copy(update={"dup_group": dupgroup.render(rules)})


def _sim_spec(org: str, users: int, servers: int, days: int, seed: int, start: str) -> Any:
    from producers.simulate import SimSpec

    try:
        first = dt.date.fromisoformat(start)
    except ValueError:
        raise LictelError(f"--start {start!r} is not a date like 2026-03-02") from None
    return SimSpec(org=org, users=users, servers=servers, days=days, seed=seed, start=first)
