"""``lictel entitlements import|rules|list``: what the organisation may use, from license files and
contracts."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lictel.cli.common import (
    DataDir,
    DupGroup,
    _emit,
    out,
    settings_for,
    with_dup_group,
)
from lictel.render.text import cell as _cell

ent_app = typer.Typer(no_args_is_help=True, help="What the organisation may use: license files and contracts.")


@ent_app.command("import")
def entitlements_import(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False,
                                                help="FlexNet license files (.lic) or contract CSVs (.csv).")],
    org: Annotated[str | None, typer.Option(help="The organisation (default LICTEL_ORG).")] = None,
    server: Annotated[str | None, typer.Option(help="The license server these files are installed on (what "
                                                    "`report vendor-view` counts as that server's installed "
                                                    "licenses); default: the organisation's, not one server's.")]
    = None,
    data_dir: DataDir = None,
) -> None:
    """Import entitlements; importing a file again replaces what it gave before."""
    from lictel.entitlements import load_file, store
    from lictel.warehouse import connect, ensure_schema

    settings = settings_for(data_dir)
    found = [e for f in files for e in load_file(f, org or settings.org, server or "")]
    client = connect(settings)
    ensure_schema(client, settings)
    store(client, settings.clickhouse_database, found)
    out.print(f"imported {len(found):,} entitlement(s) from {len(files)} file(s)")


@ent_app.command("rules")
def entitlements_rules(
    org: Annotated[str | None, typer.Option(help="Only this organisation.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv, json, or env (the LICTEL_DUP_GROUP_LICENSES "
                                                      "value of the license-file rules).")] = "table",
    data_dir: DataDir = None,
    dup_group: DupGroup = None,
) -> None:
    """The DUP_GROUP rule each feature is charged under, and where it comes from."""
    from lictel import dupgroup
    from lictel.entitlements import license_rules
    from lictel.warehouse import open_warehouse

    settings = with_dup_group(settings_for(data_dir), dup_group)
    client = open_warehouse(settings)
    db = settings.clickhouse_database
    from_files = license_rules(client, db)
    if fmt == "env":
        sys.stdout.write(from_files + "\n")
        return
    from lictel.reports.common import Report

    rules = dupgroup.DupRules.from_text(settings.dup_group, from_files)
    # Every feature that has data or an entitlement, and every feature a rule names.
    known = client.query(f"SELECT DISTINCT org, feature FROM {db}.usage_minute WHERE source = 'license' "
                         f"UNION DISTINCT SELECT DISTINCT org, feature FROM {db}.entitlements").result_rows
    keys = sorted({(str(o), str(f)) for o, f in known}
                  | {(k.split("/", 1)[0], k.split("/", 1)[1]) for k in dupgroup.parse(from_files)}
                  | {(org or settings.org, f) for f in dupgroup.parse(settings.dup_group) if f != "*"})
    rows = [[o, f, rules.rule(o, f), rules.origin(o, f), dupgroup.note(rules.rule(o, f))]
            for o, f in keys if org is None or o == org]
    notes = [f"every other feature: {rules.rule('', '')}"] + (
        [] if rules else ["no DUP_GROUP rules: every feature is charged as NONE (licenses charged = checkouts)"])
    _emit(Report("DUP_GROUP rules (licenses charged)", ["org", "feature", "dup_group", "from", "note"], rows,
                 notes), fmt)


@ent_app.command("list")
def entitlements_list(
    org: Annotated[str | None, typer.Option(help="Only this organisation.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    data_dir: DataDir = None,
) -> None:
    """Every stored entitlement."""
    import json as _json

    from lictel.entitlements import PERMANENT, listing
    from lictel.export import to_csv
    from lictel.warehouse import open_warehouse

    settings = settings_for(data_dir)
    rows = listing(open_warehouse(settings), settings.clickhouse_database, org)
    for r in rows:
        r["count"] = "uncounted" if r.pop("uncounted") else r["count"]
        r["expiry"] = "permanent" if r["expiry"] == PERMANENT else str(r["expiry"])
        r["start"] = "" if r["start"] is None else str(r["start"])
    if fmt == "json":
        sys.stdout.write(_json.dumps(rows, default=str) + "\n")
        return
    if fmt == "csv":
        sys.stdout.write(to_csv(rows, list(rows[0]) if rows else ["org", "feature", "count"]))
        return
    table = Table()
    for col in ("org", "feature", "vendor", "count", "start", "expiry", "overdraft", "kind", "source"):
        table.add_column(col)
    for r in rows:
        table.add_row(*(_cell(r[c]) for c in ("org", "feature", "vendor", "count", "start", "expiry", "overdraft",
                                             "kind")), f"{Path(r['source']).name}:{r['line']}")
    out.print(table if rows else "no entitlements stored yet (lictel entitlements import FILE)")
