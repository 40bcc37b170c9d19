"""``lictel status``: is every component up, how far behind is it, and what has been stored."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from lictel.cli.common import DataDir, esc, out, settings_for


def status(
    data_dir: DataDir = None,
    endpoint: Annotated[list[str] | None, typer.Option(
        "--endpoint", help="A component's operations address (http://host:port, its LICTEL_METRICS_PORT), once per "
                           "component of a deployment; default: those the embedded stack wrote into the data dir.")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts and monitoring.")] = False,
) -> None:
    """Per component: up or not, its partitions and counters; per consumer group: its lag; from
    the warehouse: the last final minute per license server, dead letters and late events. Exits 1
    when a component is down or failing, or nothing can be found."""
    from lictel.broker import resolve_bootstrap
    from lictel.errors import LictelError
    from lictel.status import discover, kafka_lag, probe, warehouse_status
    from lictel.warehouse import open_warehouse, where

    settings = settings_for(data_dir)
    named = {f"endpoint {i + 1}": url for i, url in enumerate(endpoint or [])}
    components = {name: probe(url) | {"url": url} for name, url in (named or discover(settings.data_dir)).items()}
    report: dict[str, Any] = {"components": components, "problems": []}
    problems: list[str] = report["problems"]
    for name, c in components.items():
        if c.get("status") in ("down", "failing"):
            problems.append(f"{c.get('component', name)} at {c['url']} is {c['status']}: {c.get('reason', '')}")
    try:
        bootstrap = resolve_bootstrap(settings)
        report["kafka"] = {"bootstrap": bootstrap, "lag": kafka_lag(bootstrap, settings)}
    except (LictelError, OSError, TimeoutError) as exc:
        report["kafka"] = {"error": str(exc) or type(exc).__name__}
        problems.append(f"Kafka: {exc or type(exc).__name__}")
    except Exception as exc:  # the client's own errors (cannot connect, not authorised)
        report["kafka"] = {"error": f"{type(exc).__name__}: {exc}"}
        problems.append(f"Kafka: {type(exc).__name__}: {exc}")
    # The warehouse: read directly where this process may (a server, or an embedded warehouse no
    # sink holds); else what the sink's health carries.
    stored = next((c["warehouse"] for c in components.values() if isinstance(c.get("warehouse"), dict)), None)
    report["warehouse"] = {"where": where(settings)}
    if stored is not None:
        report["warehouse"] |= stored | {"from": "the sink"}
    else:
        try:
            client = open_warehouse(settings)
            try:
                report["warehouse"] |= warehouse_status(client, settings.clickhouse_database)
            finally:
                client.close()
        except Exception as exc:
            report["warehouse"]["error"] = str(exc).splitlines()[0]
            problems.append(f"warehouse: {report['warehouse']['error']}")
    if not components:
        problems.append(f"no component endpoints in {settings.data_dir} (start `lictel up` with "
                        f"LICTEL_METRICS_PORT=0, or give --endpoint URL per component)")
    if as_json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print(report)
    if problems:
        raise typer.Exit(1)


def _print(report: dict[str, Any]) -> None:
    table = Table(title="components")
    for col in ("component", "address", "status", "partitions", "details"):
        table.add_column(col)
    for name, c in report["components"].items():
        counters = c.get("counters", {})
        details = ", ".join(f"{k} {v:,}" for k, v in counters.items() if isinstance(v, int) and v)[:120]
        if c.get("reason"):
            details = c["reason"]
        colour = {"ok": "green", "starting": "yellow"}.get(c.get("status", ""), "red")
        label = c.get("component", name) + (f" {name.split()[-1]}" if name.split()[-1].isdigit() else "")
        table.add_row(esc(label), esc(c["url"]), f"[{colour}]{esc(c.get('status', '?'))}[/]",
                      str(len(c.get("partitions", []))), esc(details))
    out.print(table)
    kafka = report.get("kafka", {})
    if "lag" in kafka:
        for group, lag in kafka["lag"].items():
            out.print(esc(f"group {group}: {sum(lag.values()):,} message(s) behind ("
                          + ", ".join(f"{t} {n:,}" for t, n in lag.items()) + ")"))
    wh = report["warehouse"]
    if "last_final_minute" in wh:
        out.print(esc(f"warehouse {wh['where']}: {wh['dead_letters']:,} dead letter(s), {wh['late_events']:,} late "
                      f"event(s)"))
        for server, minute in wh["last_final_minute"].items():
            out.print(esc(f"  {server}: final up to {minute}"))
    for problem in report["problems"]:
        out.print(f"[red]problem:[/] {esc(problem)}")
