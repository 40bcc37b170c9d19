"""``lictel db migrate`` (the ClickHouse schema) and ``lictel reconcile`` (recompute stored minutes from
raw events)."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from lictel.cli.common import (
    DataDir,
    DupGroup,
    esc,
    out,
    settings_for,
    with_dup_group,
)
from lictel.errors import LictelError

db_app = typer.Typer(no_args_is_help=True, help="ClickHouse schema.")


@db_app.command("migrate")
def db_migrate(
    data_dir: DataDir = None,
    cluster: Annotated[str | None, typer.Option(
        help="A ClickHouse cluster (remote_servers): ON CLUSTER DDL and Replicated engines, one shard with "
             "every replica holding the whole history (docs/deploy.md).")] = None,
    print_only: Annotated[bool, typer.Option(
        "--print", help="Print the whole script (database, migration table, every migration and its record) "
                        "instead of applying it; it is idempotent, so applying it to a partly migrated "
                        "database is harmless.")] = False,
) -> None:
    """Apply pending ClickHouse migrations. The only command that changes a ClickHouse server's
    schema: run it before starting sinks of a new lictel version (they refuse a schema behind them)."""
    from lictel.warehouse import connect, migrate, script, where

    settings = settings_for(data_dir)
    if print_only:
        # Plain print: rich would wrap long lines and read [..] as markup.
        print(f"-- lictel schema for {settings.clickhouse_database}" + (f" on cluster {cluster}" if cluster else ""))
        for stmt in script(settings, cluster):
            print(stmt + ";\n")
        return
    client = connect(settings)
    try:
        applied = migrate(client, settings, cluster)
    finally:
        client.close()
    out.print(esc(f"{where(settings)}: applied {', '.join(applied)}" if applied
                  else f"{where(settings)}: the schema is up to date"))


def reconcile(
    data_dir: DataDir = None,
    start: Annotated[str | None, typer.Option("--from", help="First minute to recompute (ISO-8601 UTC).")] = None,
    end: Annotated[str | None, typer.Option("--to", help="End of the range, exclusive (ISO-8601 UTC).")] = None,
    org: Annotated[str | None, typer.Option(help="Only this organisation.")] = None,
    late: Annotated[bool, typer.Option("--late", help="The range of the stored late events.")] = False,
    dup_group: DupGroup = None,
) -> None:
    """Recompute minutes from raw events, exactly as the stream engine would, and overwrite them
    (after late data, or to charge history under the current DUP_GROUP rules)."""
    from lictel.entitlements import license_rules
    from lictel.reconcile import late_range
    from lictel.reconcile import reconcile as run_reconcile
    from lictel.timeutil import DAY_US, MINUTE_US, US, floor_minute, iso_s, parse_ts
    from lictel.warehouse import open_warehouse

    settings = with_dup_group(settings_for(data_dir), dup_group)
    client = open_warehouse(settings)
    settings = settings.model_copy(update={"dup_group_licenses": license_rules(client, settings.clickhouse_database)})
    if late:
        found = late_range(client, settings.clickhouse_database)
        if found is None:
            out.print("no late events stored: nothing to reconcile")
            return
        t1, t2 = found
    else:
        if not start or not end:
            raise LictelError("give --from and --to (e.g. --from 2026-03-02T09:00:00Z), or --late")
        try:
            t1, t2 = parse_ts(start), parse_ts(end)
        except ValueError as exc:
            raise LictelError(f"--from/--to: {exc}") from None
    if t2 <= t1:
        raise LictelError("--to must be after --from")
    if settings.raw_ttl_days:
        # Raw events older than the retention are gone: a recompute from what is left would replace
        # right minutes with wrong ones, so it is refused.
        horizon = floor_minute(int(time.time() * US) - settings.raw_ttl_days * DAY_US) + MINUTE_US
        if t1 < horizon:
            raise LictelError(f"raw events before about {iso_s(horizon)} have expired (LICTEL_RAW_TTL_DAYS="
                              f"{settings.raw_ttl_days}); their minutes cannot be recomputed: give --from "
                              f"{iso_s(horizon)} or later")
    res = run_reconcile(client, settings.clickhouse_database, t1, t2, org, settings.session_rule,
                        settings.dup_rules, settings.partitions)
    upto = ""
    if res.final_end < res.end:
        upto = (f" (the stream has made minutes final up to {iso_s(res.final_end)}; later ones are left "
                f"for it to write)" if res.final_end > res.start else " (no minute of the range is final yet)")
    out.print(f"recomputed {iso_s(res.start)} to {iso_s(res.end)} from {res.events:,} raw events: "
              f"{res.rows_before:,} rows before, {res.rows_after:,} after, {res.rows_changed:,} changed{upto}")
