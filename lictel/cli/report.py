"""``lictel report ...``: the readable reports of :mod:`lictel.reports`, printed as a table, CSV or
JSON (the compliance report also as HTML), charts saved as SVG."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import typer

from lictel.cli.common import (
    DataDir,
    FeatureOpt,
    Fmt,
    Force,
    From,
    OrgOpt,
    To,
    TzOpt,
    _check_format,
    _deliver,
    _emit,
    _parse_day,
    _report_inputs,
    _scope,
    console,
    esc,
    out,
    settings_for,
    write_file,
)
from lictel.cli.summary import _print_summary
from lictel.errors import LictelError

report_app = typer.Typer(no_args_is_help=True, help="Readable reports.")


@report_app.command("peak")
def report_peak(data_dir: DataDir = None, fmt: Fmt = "table",
                org: Annotated[str | None, typer.Option(help="Only this organisation.")] = None) -> None:
    """Per feature: estate and per-server peak (checkouts and licenses charged), time-weighted
    average, license-hours, denials."""
    _check_format(fmt)
    settings = settings_for(data_dir)
    if fmt == "table":
        _print_summary(settings, org)
        return
    from lictel.reports.common import Report
    from lictel.reports.summary import peak_summary
    from lictel.warehouse import open_warehouse

    summary = peak_summary(open_warehouse(settings), settings.clickhouse_database, org)
    cols = ["org", "feature", "series", "server", "peak", "charged_peak", "dup_group", "peak_at", "avg",
            "license_hours", "denials"]
    rows = [[r.org, r.feature, r.source, r.server, r.peak, r.charged_peak, r.dup_group, r.peak_at, round(r.avg, 6),
             round(r.license_hours, 6), r.denials] for r in summary.rows]
    _emit(Report(f"License use {summary.period}", cols, rows), fmt)


@report_app.command("ud")
def report_ud(
    data_dir: DataDir = None,
    fmt: Fmt = "table",
    org: Annotated[str | None, typer.Option(help="Only this organisation.")] = None,
    feature: Annotated[str | None, typer.Option(help="Only this feature.")] = None,
    day: Annotated[str | None, typer.Option(help="Only this UTC day (YYYY-MM-DD).")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="List who holds the licenses: the vendor rule's "
                                                            "device and user licenses and the optimal cover.")] = False,
) -> None:
    """User/device licensing: per org, _UD feature and day, the licenses the 90 days ending that day
    need: distinct users, the vendor's shared-device rule, and the optimum (minimum vertex cover)."""
    import json

    from lictel.reports.common import Report
    from lictel.ud import parse_models, ud_report
    from lictel.warehouse import open_warehouse

    _check_format(fmt)
    settings = settings_for(data_dir)
    models = parse_models(settings.license_models)
    when = _parse_day(day, "--day") if day else None
    with console.status("computing 90-day windows"):
        rows = ud_report(open_warehouse(settings), settings.clickhouse_database, models, org, feature, when, explain)
    report = Report("User/device licenses needed over the 90 days ending each day",
                    ["org", "feature", "day", "users_90d", "vendor_rule", "optimal"],
                    [[r.org, r.feature, r.day.isoformat(), r.users_90d, r.vendor_rule, r.optimal] for r in rows])
    if fmt == "csv" and explain:
        # One row per license held: who holds it under which rule.
        held: list[list[Any]] = []
        for r in rows:
            assert r.vendor is not None and r.cover is not None
            for rule, a in (("vendor_rule", r.vendor), ("optimal", r.cover)):
                held += [[r.org, r.feature, r.day.isoformat(), rule, "device", x] for x in a.devices]
                held += [[r.org, r.feature, r.day.isoformat(), rule, "user", x] for x in a.users]
        _emit(Report("", ["org", "feature", "day", "rule", "license", "holder"], held), fmt)
    elif fmt == "csv":
        _emit(report, fmt)
    elif fmt == "json":
        docs = report.dicts()
        for r, doc in zip(rows, docs, strict=True):
            if explain and r.vendor is not None and r.cover is not None:
                doc["vendor_assignment"] = {"devices": r.vendor.devices, "users": r.vendor.users}
                doc["optimal_assignment"] = {"devices": r.cover.devices, "users": r.cover.users}
        _deliver(json.dumps(docs, indent=1, ensure_ascii=False, default=str) + "\n", None)
    else:
        if not rows:
            out.print("no user/device license use stored (features ending in _UD, or set LICTEL_LICENSE_MODELS)")
            return
        _emit(report, fmt)
        for r in rows if explain else []:
            assert r.vendor is not None and r.cover is not None
            out.print(esc(f"{r.org} {r.feature} {r.day}: optimal {r.optimal}: devices "
                          f"{', '.join(r.cover.devices) or '-'}; users {', '.join(r.cover.users) or '-'}"))
            out.print(esc(f"  vendor rule {r.vendor_rule}: shared devices {', '.join(r.vendor.devices) or '-'}; "
                          f"users {', '.join(r.vendor.users) or '-'}"))


LevelOpt = Annotated[str, typer.Option("--level", help="estate (summed over servers) or pool (per server).")]


def _save_charts(report: Any, chart_dir: Path | None, prefix: str) -> None:
    """Each chart of a report as an SVG file in ``chart_dir``."""
    from lictel.render.svg import svg as draw

    if chart_dir is None:
        return
    chart_dir.mkdir(parents=True, exist_ok=True)
    for name, chart in report.charts.items():
        svg = draw(chart)
        if svg:
            path = chart_dir / f"{prefix}-{''.join(c if c.isalnum() or c in '-_' else '_' for c in name)}.svg"
            write_file(path, svg, force=True)  # charts are regenerated in place
            console.print(f"chart: {esc(path)}")


@report_app.command("usage")
def report_usage(data_dir: DataDir = None, fmt: Fmt = "table", org: OrgOpt = None, feature: FeatureOpt = None,
                 start: From = None, end: To = None, tz: TzOpt = "UTC", level: LevelOpt = "estate",
                 granularity: Annotated[str, typer.Option(help="hour, day, week or month.")] = "day",
                 source: Annotated[str, typer.Option(help="license or sessions.")] = "license",
                 measure: Annotated[str, typer.Option(help="checkouts or charged (licenses charged under the "
                                                           "DUP_GROUP rules).")] = "checkouts") -> None:
    """Peak, low, time-weighted average and license-hours per hour, day, week or month."""
    from lictel.reports.usage import usage

    if granularity not in ("hour", "day", "week", "month"):
        raise LictelError(f"--granularity must be hour, day, week or month, not {granularity!r}")
    client, db, _ = _report_inputs(settings_for(data_dir))
    _emit(usage(client, db, _scope(org, feature, start, end, tz), level, granularity, source, measure), fmt)


@report_app.command("sizing")
def report_sizing(data_dir: DataDir = None, fmt: Fmt = "table", org: OrgOpt = None, feature: FeatureOpt = None,
                  start: From = None, end: To = None, tz: TzOpt = "UTC", level: LevelOpt = "estate",
                  histogram: Annotated[bool, typer.Option("--histogram", help="With --format csv: print the "
                                                          "utilisation histogram instead.")] = False) -> None:
    """Licenses needed to cover 95 %, 99 % and 100 % of the minutes, and the utilisation histogram."""
    from lictel.reports.sizing import sizing

    client, db, _ = _report_inputs(settings_for(data_dir))
    _emit(sizing(client, db, _scope(org, feature, start, end, tz), level), fmt, 0 if histogram else None)


@report_app.command("overuse")
def report_overuse(data_dir: DataDir = None, fmt: Fmt = "table", org: OrgOpt = None, feature: FeatureOpt = None,
                   start: From = None, end: To = None, tz: TzOpt = "UTC") -> None:
    """Periods where use exceeds the entitlement (concurrent: estate peak; user/device: licenses assigned),
    with start, duration, magnitude and the 10 % overdraft band apart."""
    from lictel.reports.overuse import overuse

    client, db, models = _report_inputs(settings_for(data_dir))
    _emit(overuse(client, db, _scope(org, feature, start, end, tz), models), fmt)


@report_app.command("denials")
def report_denials(data_dir: DataDir = None, fmt: Fmt = "table", org: OrgOpt = None, feature: FeatureOpt = None,
                   start: From = None, end: To = None, tz: TzOpt = "UTC",
                   by: Annotated[str, typer.Option(help="feature, user, host or hour (user and host: the "
                                                        "most denied first).")] = "feature",
                   within: Annotated[int, typer.Option(help="A denial followed by a checkout of the same user and "
                                                            "feature within this many minutes is not a true "
                                                            "denial.")] = 10) -> None:
    """Denials by feature, user, host or hour, with their reasons and the true denials; then the
    requests for features the server does not serve."""
    from lictel.reports.denials import denials

    client, db, _ = _report_inputs(settings_for(data_dir))
    _emit(denials(client, db, _scope(org, feature, start, end, tz), by, within), fmt)


@report_app.command("dormant")
def report_dormant(data_dir: DataDir = None, fmt: Fmt = "table", org: OrgOpt = None, feature: FeatureOpt = None,
                   start: From = None, end: To = None, tz: TzOpt = "UTC",
                   days: Annotated[int, typer.Option(help="User/device assignments unused this many days are "
                                                          "releasable.")] = 30,
                   ratio: Annotated[float, typer.Option(help="Concurrent entitlements whose 99th percentile stays "
                                                           "below this share are oversized.")] = 0.5,
                   held_hours: Annotated[float, typer.Option(help="Checkouts held this long are "
                                                                  "phantoms.")] = 24.0) -> None:
    """Releasable user/device assignments, oversized concurrent entitlements, phantom checkouts."""
    from lictel.reports.dormant import dormant

    client, db, models = _report_inputs(settings_for(data_dir))
    _emit(dormant(client, db, _scope(org, feature, start, end, tz), models, days, ratio, held_hours), fmt)


@report_app.command("heatmap")
def report_heatmap(data_dir: DataDir = None, fmt: Fmt = "table", org: OrgOpt = None, feature: FeatureOpt = None,
                   start: From = None, end: To = None, tz: TzOpt = "UTC", level: LevelOpt = "estate",
                   chart_dir: Annotated[Path, typer.Option(help="Where the SVG charts go.")] = Path(".")) -> None:
    """Hour-of-week (UTC) average and peak per feature; one SVG chart per feature."""
    from lictel.reports.heatmap import heatmap

    client, db, _ = _report_inputs(settings_for(data_dir))
    rep = heatmap(client, db, _scope(org, feature, start, end, tz), level)
    _emit(rep, fmt)
    _save_charts(rep, chart_dir, "heatmap")


@report_app.command("forecast")
def report_forecast(data_dir: DataDir = None, fmt: Fmt = "table", org: OrgOpt = None, feature: FeatureOpt = None,
                    start: From = None, end: To = None, tz: TzOpt = "UTC",
                    horizon: Annotated[int, typer.Option(help="Days ahead to look for the crossing.")] = 365,
                    chart_dir: Annotated[Path | None, typer.Option(help="Save SVG charts here.")] = None) -> None:
    """Daily peak trend with weekly seasonality, the day it reaches the entitlement, and its backtest error."""
    from lictel.reports.forecast import forecast

    client, db, _ = _report_inputs(settings_for(data_dir))
    rep = forecast(client, db, _scope(org, feature, start, end, tz), horizon)
    _emit(rep, fmt)
    _save_charts(rep, chart_dir, "forecast")


@report_app.command("chargeback")
def report_chargeback(groups: Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                                             help="user,group CSV.")],
                      data_dir: DataDir = None, fmt: Fmt = "table", org: OrgOpt = None, feature: FeatureOpt = None,
                      start: From = None, end: To = None, tz: TzOpt = "UTC") -> None:
    """License-hours and share of the peak by group, from a user → group CSV."""
    from lictel.reports.chargeback import chargeback, read_groups

    client, db, _ = _report_inputs(settings_for(data_dir))
    _emit(chargeback(client, db, _scope(org, feature, start, end, tz), read_groups(groups)), fmt)


@report_app.command("compliance")
def report_compliance(
    start: Annotated[str | None, typer.Option("--from", help="Start of the period (YYYY-MM-DD or ISO-8601; "
                                                             "default: the first stored minute).")] = None,
    end: Annotated[str | None, typer.Option("--to", help="End of the period, exclusive (default: after the last "
                                                         "stored minute).")] = None,
    data_dir: DataDir = None,
    fmt: Annotated[str, typer.Option("--format", help="html, table, csv or json.")] = "html",
    org: OrgOpt = None, feature: FeatureOpt = None, tz: TzOpt = "UTC",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here (default: stdout).")] = None,
    force: Force = False,
    pseudonymize: Annotated[bool, typer.Option("--pseudonymize", help="Replace user and device names with a keyed "
                                               "SHA-256 (key: LICTEL_PSEUDONYM_KEY).")] = False,
) -> None:
    """One self-contained period report for audits: per feature entitlement, peak, cover, overuse,
    denials; the periods, dormant licenses and user/device holders; charts embedded."""
    import os

    from lictel.render.html import to_html
    from lictel.reports.compliance import compliance
    from lictel.reports.pseudonyms import pseudonymizer

    if fmt not in ("html", "table", "csv", "json"):
        raise LictelError(f"--format must be html, table, csv or json, not {fmt!r}")
    pseudo = pseudonymizer(os.environ.get("LICTEL_PSEUDONYM_KEY", "")) if pseudonymize else None
    client, db, models = _report_inputs(settings_for(data_dir))
    rep = compliance(client, db, _scope(org, feature, start, end, tz), models, pseudo)
    if fmt == "html":
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        _deliver(to_html(rep, stamp, pseudo is not None), output, force)
    else:
        _emit(rep, fmt, output=output, force=force)
