"""What ``lictel run`` and ``lictel report peak`` print: the peaks per feature and server, estate
minutes that miss a server, and the commands to go further."""

from __future__ import annotations

import sys

from rich.table import Table

from lictel.cli.common import (
    esc,
    out,
)
from lictel.config import Settings
from lictel.render.text import cell as _cell


def _print_summary(settings: Settings, org: str | None = None) -> None:
    from lictel.reports.summary import compare_series, estate_gaps, peak_summary
    from lictel.timeutil import iso_s
    from lictel.warehouse import open_warehouse

    client = open_warehouse(settings)
    summary = peak_summary(client, settings.clickhouse_database, org)
    if not summary.rows:
        out.print("no usage stored yet")
        return
    table = Table(title=f"License use {summary.period}", title_justify="left")
    charged = any(r.dup_group != "NONE" for r in summary.rows)
    cols = [("org", "left"), ("feature", "left"), ("series", "left"), ("server", "left"), ("peak", "right"),
            ("peak at (UTC)", "left"), ("avg", "right"), ("license-hours", "right"), ("denials", "right")]
    if charged:
        cols[5:5] = [("charged", "right"), ("DUP_GROUP", "left")]
    for col, just in cols:
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in summary.rows:
        style = "bold" if r.server == "(estate)" else ""
        extra = [f"{r.charged_peak:,}", r.dup_group] if charged else []
        table.add_row(_cell(r.org), _cell(r.feature), r.source, _cell(r.server), f"{r.peak:,}", *extra, r.peak_at,
                      f"{r.avg:,.2f}",
                      f"{r.license_hours:,.1f}", f"{r.denials:,}", style=style)
    out.print(table)
    out.print("avg is time-weighted over the whole period; estate peak is the peak of the summed "
              "concurrency, not the sum of server peaks.")
    if charged:
        out.print("peak counts every checkout; charged is the peak of the licenses charged under the feature's "
                  "DUP_GROUP rule (checkouts of one group share a license; NONE: every checkout is charged).")
    if any(r.source == "sessions" for r in summary.rows):
        rule = settings.session_rule
        out.print(f"series sessions: licenses implied by session exports (server = broker site), one per "
                  f"distinct {rule.unit} with a session, disconnected sessions "
                  f"{'holding' if rule.disconnected_holds else 'not holding'} theirs.")
        for c in compare_series(client, settings.clickhouse_database):
            verdict = (f"[yellow]implied above logged in {c.minutes_sessions_above:,} minute(s), by up to "
                       f"{c.max_excess:,} at {iso_s(c.max_excess_at)}[/]" if c.minutes_sessions_above
                       else "implied never above logged")
            out.print(f"{esc(c.org)} {esc(c.feature)}: logged peak {c.license_peak:,} vs implied peak "
                      f"{c.sessions_peak:,} over {c.minutes:,} minute(s) both cover; {verdict}")
    gaps = estate_gaps(client, settings.clickhouse_database)
    if gaps is not None:
        out.print(f"[yellow]{gaps.minutes:,} estate minute(s) between {iso_s(gaps.first)} and {iso_s(gaps.end)} "
                  f"miss a server's share[/] (a server that was idle, or sent its data after those minutes were "
                  f"final); recompute them with: {_commands()[0]} reconcile --data-dir {settings.data_dir} "
                  f"--from {iso_s(gaps.first)} --to {iso_s(gaps.end)}")
    out.print(f"data: {settings.clickhouse_url or settings.warehouse_dir} (database "
              f"{settings.clickhouse_database}: usage_minute, raw_events, dead_letters)")
    lictel_cmd, python_cmd = _commands()
    out.print(f"reports: {lictel_cmd} report sizing|overuse|denials|dormant|heatmap|forecast|ud|compliance|vendor-view "
              f"--data-dir {settings.data_dir} (docs/reports.md)")
    out.print(f"see it: {lictel_cmd} serve --no-auth --data-dir {settings.data_dir}, then open http://127.0.0.1:8787 "
              "(docs/api.md)")
    out.print(f"query it: {lictel_cmd} export usage --data-dir {settings.data_dir} --level estate "
              "--granularity hour --format csv")
    out.print(f"      or: {python_cmd} -c \"import chdb; print(chdb.query('SELECT * FROM "
              f"{settings.clickhouse_database}.usage_minute FINAL LIMIT 5', 'Pretty', "
              f"path='{settings.warehouse_dir}'))\"")


def _commands() -> tuple[str, str]:
    """How the user can call lictel and this Python again (``.venv/bin/...`` when not on PATH)."""
    import os
    import shutil

    def short(path: str) -> str:
        rel = os.path.relpath(path)
        return rel if not rel.startswith("..") else path

    me = os.path.realpath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    on_path = shutil.which("lictel")
    lictel_cmd = "lictel" if on_path and os.path.realpath(on_path) == me else short(
        os.path.join(os.path.dirname(sys.executable), "lictel"))
    python_cmd = "python" if shutil.which("python") == sys.executable else short(sys.executable)
    return lictel_cmd, python_cmd
