"""``lictel export usage``: the stored minute, hour, day or month rows as CSV or JSON."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from lictel.cli.common import (
    DataDir,
    Force,
    From,
    To,
    TzOpt,
    _scope,
    console,
    esc,
    settings_for,
    write_file,
)
from lictel.errors import LictelError

export_app = typer.Typer(no_args_is_help=True, help="Export stored data.")


@export_app.command("usage")
def export_usage(
    data_dir: DataDir = None,
    level: Annotated[str, typer.Option(help="pool (per server) or estate (summed over servers).")] = "pool",
    granularity: Annotated[str, typer.Option(help="minute, hour, day or month.")] = "minute",
    fmt: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    org: Annotated[str | None, typer.Option(help="Only this organisation.")] = None,
    feature: Annotated[str | None, typer.Option(help="Only this feature.")] = None,
    source: Annotated[str, typer.Option(help="license (what license servers logged) or sessions (what "
                                              "session exports imply; server = broker site).")] = "license",
    measure: Annotated[str, typer.Option(help="checkouts (every checkout counts) or charged (licenses charged "
                                               "under the features' DUP_GROUP rules) for peak, low, avg and "
                                               "license_seconds.")] = "checkouts",
    tz: TzOpt = "UTC",
    server: Annotated[str | None, typer.Option(help="Only this license server (or broker site).")] = None,
    start: From = None,
    end: To = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
    force: Force = False,
) -> None:
    """Print usage rows: org,server,feature,minute,peak,low,avg,license_seconds,checkouts,..."""
    from lictel.export import bounds_s, to_csv, to_json, usage_rows
    from lictel.warehouse import open_warehouse

    if fmt not in ("csv", "json"):
        raise LictelError(f"--format must be csv or json, not {fmt!r}")
    scope = _scope(org, feature, start, end, tz)
    settings = settings_for(data_dir)
    rows = usage_rows(open_warehouse(settings), settings.clickhouse_database, level, granularity, org, feature,
                      *bounds_s(scope.start, scope.end), source=source, measure=measure, tz=tz, server=server)
    text = to_csv(rows) if fmt == "csv" else to_json(rows)
    if output:
        write_file(output, text, force)
        console.print(f"wrote {len(rows):,} rows to {esc(output)}")
    else:
        sys.stdout.write(text)
