"""The ``lictel`` command. Subcommands by noun; every option also reads its ``LICTEL_*`` variable.

    lictel run                  the one-shot job on the embedded stack (simulated or --jsonl input)
    lictel up                   the embedded stack, until Ctrl-C
    lictel produce jsonl|simulate
    lictel stream               one stream worker
    lictel sink                 the ClickHouse sink
    lictel db migrate           apply ClickHouse migrations
    lictel schemas register|check   the message schemas in a Schema Registry
    lictel export usage         minute/hour/day/month rows as CSV or JSON
    lictel report peak          peaks, averages, license-hours, denials per feature
    lictel report ud            user/device licenses over 90-day windows (users, vendor rule, optimum)
    lictel report usage|sizing|overuse|denials|dormant|heatmap|forecast|chargeback|compliance
    lictel report vendor-view|vendor-diff|reconcile-vendor, lictel ids, lictel vendor
    lictel alerts check|test|list   alert rules, a test delivery, what fired
    lictel serve                the HTTP API: JSON and CSV under /api/v1, OpenAPI at /docs
    lictel status               every component up or not, consumer lag, last final minute per server
    lictel config               every setting, its variable and default

One module per command family: ``stack`` (run, up, stream, sink), ``produce``, ``db`` (migrate,
reconcile), ``export``, ``report``, ``entitlements``, ``vendor`` (vendor-view/-diff, ids, vendor),
``alerts``, ``serve``, ``status``, ``schemas``; ``common`` holds what they share and ``summary`` what a run prints.
"""

from __future__ import annotations

import gc

import typer
from rich.table import Table

from lictel.cli import alerts, db, entitlements, export, produce, report, schemas, serve, stack, status, vendor
from lictel.cli.common import console, esc, out
from lictel.config import settings_help
from lictel.errors import LictelError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="lictel: license telemetry, measured by yourself.")
for command in (stack.run, stack.up, stack.stream, stack.sink, db.reconcile):
    app.command()(command)
app.add_typer(produce.produce_app, name="produce")
app.add_typer(db.db_app, name="db")
app.add_typer(schemas.schemas_app, name="schemas")
app.add_typer(export.export_app, name="export")
app.add_typer(report.report_app, name="report")
app.add_typer(entitlements.ent_app, name="entitlements")
app.add_typer(vendor.ids_app, name="ids")
app.add_typer(vendor.vendor_app, name="vendor")
app.command("serve")(serve.serve)
app.command("status")(status.status)
app.add_typer(alerts.alerts_app, name="alerts")
report.report_app.command("vendor-view")(vendor.report_vendor_view)
report.report_app.command("vendor-diff")(vendor.report_vendor_diff)
report.report_app.command("reconcile-vendor")(vendor.report_reconcile_vendor)


@app.command("config")
def config_cmd() -> None:
    """Every setting: its environment variable, default and meaning."""
    table = Table()
    table.add_column("variable")
    table.add_column("default")
    table.add_column("meaning")
    for var, default, doc in settings_help():
        table.add_row(var, default, doc)
    out.print(table)


#: gc.set_threshold() of every lictel process (the default is 700, 10, 10).
GC_THRESHOLDS = (50_000, 20, 20)


def main() -> None:
    from clickhouse_connect.driver.exceptions import DatabaseError

    from lictel.procs import watch_lifeline

    watch_lifeline()  # a worker or sink started by `lictel run`/`up` stops when that process dies
    # Every component makes and drops a tuple or a list per event and per row; collecting the young
    # generation every 700 allocations (the default) spent 7-15 % of a producer's time scanning
    # them (docs/benchmarks.md). Cycles are rare here, and what they hold waits a little longer.
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        app()
    except LictelError as exc:
        console.print(f"[red]error:[/] {esc(exc)}")
        raise SystemExit(2) from None
    except DatabaseError as exc:
        console.print(f"[red]error:[/] ClickHouse refused a query: {esc(str(exc).splitlines()[0][:500])}")
        raise SystemExit(2) from None

