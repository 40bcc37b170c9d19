"""The vendor's view in the ``lictel`` command (docs/vendor-view.md).

    lictel report vendor-view       what the license server's compliance upload will tell the vendor
    lictel report vendor-diff       the vendor's figures against ours, every difference explained
    lictel report reconcile-vendor  the same for one vendor usage CSV, without importing it
    lictel ids scramble|match       the vendor's scrambled form of a name; which of ours a scrambled ID is
    lictel vendor import|list       the vendor side's files, stored with their origin
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer

from lictel.cli.common import (
    DataDir,
    FeatureOpt,
    Force,
    OrgOpt,
    _deliver,
    _emit,
    _parse_day,
    console,
    esc,
    out,
    settings_for,
)
from lictel.errors import LictelError

ids_app = typer.Typer(no_args_is_help=True, help="The vendor's scrambled identities: scramble a name, or find which "
                                                 "of our users and devices a scrambled ID is (locally).")
vendor_app = typer.Typer(no_args_is_help=True, help="The vendor side's files: the license server's compliance "
                                                    "upload and vendor usage reports.")

ServerOpt = Annotated[str | None, typer.Option("--server", help="Only this license server.")]
FromDay = Annotated[str | None, typer.Option("--from", help="First sample day (YYYY-MM-DD); default: the first "
                                                           "with data.")]
ToDay = Annotated[str | None, typer.Option("--to", help="Day after the last sample day (YYYY-MM-DD, exclusive); "
                                                       "default: after the last with data.")]
WindowStart = Annotated[str, typer.Option("--window-start", envvar="LICTEL_VENDOR_WINDOW_START",
                                          help="When the daily sample window starts (HH:MM in --window-tz).")]
WindowTz = Annotated[str, typer.Option("--window-tz", envvar="LICTEL_VENDOR_WINDOW_TZ",
                                       help="The zone of --window-start (IANA name).")]
Output = Annotated[Path | None, typer.Option("--output", "-o", help="Write here (default: stdout).")]


def _days(start: str | None, end: str | None) -> tuple[dt.date | None, dt.date | None]:
    first = _parse_day(start, "--from") if start else None
    stop = _parse_day(end, "--to") if end else None
    if first and stop and stop <= first:
        raise LictelError("--to must be after --from")
    return first, stop - dt.timedelta(days=1) if stop else None


def report_vendor_view(
    data_dir: DataDir = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv, json or xml (the upload's element "
                                                      "names).")] = "table",
    org: OrgOpt = None, server: ServerOpt = None, feature: FeatureOpt = None, start: FromDay = None,
    end: ToDay = None, window_start: WindowStart = "00:00", window_tz: WindowTz = "UTC",
    detail: Annotated[bool, typer.Option("--detail", help="With --format csv: every column (users and devices of "
                                                          "the licensees, checkouts, rule, SA date, window).")]
    = False,
    output: Output = None, force: Force = False,
) -> None:
    """What the license server's compliance upload will tell the vendor, per server, feature and day:
    count_used_max, ccu_devices, ud_licensees, installed; computed from our own data."""
    from lictel.reports.common import Report
    from lictel.ud import parse_models
    from lictel.vendor.files import to_xml
    from lictel.vendor.view import CSV_COLUMNS, DETAIL_COLUMNS, Boundary, vendor_view
    from lictel.warehouse import open_warehouse

    if fmt not in ("table", "csv", "json", "xml"):
        raise LictelError(f"--format must be table, csv, json or xml, not {fmt!r}")
    boundary = Boundary.parse(window_start, window_tz)
    first, last = _days(start, end)
    settings = settings_for(data_dir)
    client = open_warehouse(settings)
    with console.status("computing the vendor's view"):
        rows = vendor_view(client, settings.clickhouse_database, parse_models(settings.license_models), org, server,
                           feature, first, last, boundary)
    note = (f"sample windows start {boundary.label()}; count_used_max in licenses charged (the DUP_GROUP rule in "
            "dup_group; checkouts where none is known); ccu_devices for concurrent features, ud_licensees (the "
            "vendor's 90-day rule, per server) for user/device features; installed from the license files imported "
            "for the server, else the organisation's (installed_from)")
    if fmt == "xml":
        _deliver(to_xml(rows, boundary.label(), f"computed by lictel from the organisation's own data; {note}"),
                 output, force)
        return
    if fmt == "json":
        docs = [dict(zip(DETAIL_COLUMNS, r.values(DETAIL_COLUMNS), strict=True)) | {"devices": r.devices}
                for r in rows]
        _deliver(json.dumps({"report": "vendor view", "window_start": boundary.label(), "notes": [note],
                             "rows": docs}, indent=1, ensure_ascii=False) + "\n", output, force)
        return
    if fmt == "table":
        cols = ["server", "feature", "day", "count_used_max", "checkouts_max", "dup_group", "ccu_devices",
                "ud_licensees", "ud_users", "ud_devices", "installed", "sa_date"]
    else:
        cols = DETAIL_COLUMNS if detail else CSV_COLUMNS
    if not rows and fmt == "table":
        out.print("no license server usage stored for this selection: nothing the upload would report")
        return
    _emit(Report(f"What the license servers will report to the vendor (windows from {boundary.label()})", cols,
                 [r.values(cols) for r in rows], [note]), fmt, output=output, force=force)


def report_vendor_diff(
    data_dir: DataDir = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    file: Annotated[list[Path] | None, typer.Option("--file", exists=True, dir_okay=False,
                                                    help="Compare this vendor file (upload bundle or usage CSV) "
                                                         "without importing it; repeatable.")] = None,
    org: Annotated[str | None, typer.Option("--org", help="The organisation (default LICTEL_ORG).")] = None,
    server: ServerOpt = None, feature: FeatureOpt = None, start: FromDay = None, end: ToDay = None,
    window_start: WindowStart = "00:00", window_tz: WindowTz = "UTC",
    tolerance: Annotated[int, typer.Option(min=0, help="Differences up to this many licenses are "
                                                       "agreement.")] = 0,
    output: Output = None, force: Force = False,
) -> None:
    """The vendor's figures (imported with `lictel vendor import`, or --file) against ours, per server,
    feature and day, with the cause of every difference our data shows."""
    from lictel.ud import parse_models
    from lictel.vendor import files
    from lictel.vendor.diff import match_server, vendor_diff
    from lictel.vendor.view import Boundary
    from lictel.warehouse import open_warehouse

    boundary = Boundary.parse(window_start, window_tz)
    first, last = _days(start, end)
    settings = settings_for(data_dir)
    who = org or settings.org
    client = open_warehouse(settings)
    db = settings.clickhouse_database
    samples = [s for f in file for s in files.read(f, who)] if file else files.stored(client, db, who)
    if not samples:
        raise LictelError(f"no vendor figures imported for organisation {who!r}: run `lictel vendor import FILE` "
                          "(or give --file FILE)")
    samples = [s for s in samples if (not feature or s.feature == feature) and (first is None or s.day >= first)
               and (last is None or s.day <= last) and (not server or match_server(s.server, [server]))]
    with console.status("lining up the vendor's figures with ours"):
        rep = vendor_diff(client, db, who, samples, parse_models(settings.license_models), boundary, tolerance)
    _emit(rep, fmt, output=output, force=force)


def report_reconcile_vendor(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Vendor usage CSV (date,feature,count"
                                                                           "[,server,...]) or upload bundle.")],
    data_dir: DataDir = None, fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    org: Annotated[str | None, typer.Option("--org", help="The organisation (default LICTEL_ORG).")] = None,
    tolerance: Annotated[int, typer.Option(min=0, help="Differences up to this many licenses are "
                                                       "agreement.")] = 0,
) -> None:
    """The vendor's daily counts of one file against ours: `report vendor-diff --file FILE`."""
    report_vendor_diff(data_dir=data_dir, fmt=fmt, file=[file], org=org, server=None, feature=None, start=None,
                       end=None, window_start="00:00", window_tz="UTC", tolerance=tolerance, output=None,
                       force=False)


# --------------------------------------------------------------------------- ids


@ids_app.command("scramble")
def ids_scramble(
    values: Annotated[list[str], typer.Argument(help="User or device names, as the license server knows them.")],
    kind: Annotated[str, typer.Option(help="user or device: which other forms --all-forms tries.")] = "user",
    all_forms: Annotated[bool, typer.Option("--all-forms", help="Every form the server might hash (case, domain, "
                                                                "short host name; UTF-8 and UTF-16LE).")] = False,
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
) -> None:
    """The vendor's scrambled form of a name: base64 of the first 16 bytes of SHA-256 of the clear
    text (UTF-8, as written; --all-forms for the other plausible forms)."""
    from lictel.reports.common import Report
    from lictel.vendor.ids import DEVICE, ENCODINGS, USER, forms, scramble

    if kind not in (USER, DEVICE):
        raise LictelError(f"--kind must be user or device, not {kind!r}")
    rows: list[list[Any]] = []
    for v in values:
        if not all_forms:
            rows.append([v, "as written", "utf-8", scramble(v)])
            continue
        for label, text in forms(v, kind).items():
            rows += [[v, f"{label}: {text}", enc, scramble(text, enc)] for enc in ENCODINGS]
    _emit(Report("Scrambled as the license server uploads them", ["value", "form", "encoding", "scrambled"], rows,
                 ["SHA-256 of the clear text, first 16 bytes, base64; computed here, nothing is sent."]), fmt)


_TOKEN = re.compile(r"(?<![A-Za-z0-9+/=])(?:[A-Za-z0-9+/]{22}==|[0-9A-Fa-f]{32})(?![A-Za-z0-9+/=])")


def scrambled_ids(text: str) -> list[str]:
    """Every scrambled ID in a text: one a line, or inside a vendor report of any format."""
    return list(dict.fromkeys(_TOKEN.findall(text)))


@ids_app.command("match")
def ids_match(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Scrambled IDs, one a line, or a vendor "
                                                                           "report (XML, JSON, CSV) holding them.")],
    data_dir: DataDir = None,
    org: Annotated[str | None, typer.Option("--org", help="Match against this organisation's users and devices "
                                                          "(default: every organisation).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    store: Annotated[bool, typer.Option("--store/--no-store", help="Keep the matches in ClickHouse (table "
                                                                   "vendor_ids) for reports.")] = True,
) -> None:
    """Which of our users and devices the vendor's scrambled IDs are, and in which form the server
    hashed them. Runs locally over the names in the warehouse; nothing is sent anywhere."""
    from lictel.reports.common import Report
    from lictel.vendor.ids import DEVICE, USER, Dictionary
    from lictel.warehouse import open_warehouse

    found = scrambled_ids(file.read_text(encoding="utf-8-sig", errors="replace"))
    if not found:
        raise LictelError(f"{file}: no scrambled ID found (24 base64 characters ending '==', or 32 hex digits)")
    settings = settings_for(data_dir)
    client = open_warehouse(settings)
    db = settings.clickhouse_database
    where, params = ("AND org = {org:String}", {"org": org}) if org else ("", {})
    names = client.query(f"SELECT groupUniqArray(user), groupUniqArray(host) FROM {db}.raw_events WHERE "
                         f"vendor != 'SESSIONS' {where}", parameters=params).result_rows[0]
    book = Dictionary()
    with console.status(f"hashing {len(names[0]) + len(names[1]):,} names in every form"):
        book.add((str(x) for x in names[0] if x), USER)
        book.add((str(x) for x in names[1] if x), DEVICE)
    rows: list[list[Any]] = []
    matches = []
    for sid in found:
        m = book.match(sid)
        if m is None:
            rows.append([sid, "", "(no match)", "", ""])
        else:
            matches.append(m)
            rows.append([sid, m.kind, m.name, m.form, m.encoding])
    forms = Counter(f"{m.kind}: {m.form}, {m.encoding}" for m in matches)
    notes = [f"{len(matches)} of {len(found)} ID(s) are names we have seen (among {book.names:,} names in "
             f"{len(book):,} forms)."]
    if forms:
        notes.append("forms that matched: " + "; ".join(f"{k} ({n})" for k, n in forms.most_common()))
    if store and matches:
        stamp = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        client.insert(f"{db}.vendor_ids", [[org or settings.org, m.scrambled, m.kind, m.name, m.form, m.encoding,
                                            stamp] for m in matches],
                      column_names=["org", "scrambled", "kind", "name", "form", "encoding", "matched_at"])
        notes.append(f"kept in {db}.vendor_ids")
    _emit(Report("The vendor's scrambled IDs, matched locally", ["scrambled", "kind", "name", "form", "encoding"],
                 rows, notes), fmt)


# --------------------------------------------------------------------------- vendor files


@vendor_app.command("import")
def vendor_import(
    paths: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False,
                                                help="Upload bundles (.xml, .json) or vendor usage CSVs.")],
    data_dir: DataDir = None,
    org: Annotated[str | None, typer.Option("--org", help="The organisation (default LICTEL_ORG).")] = None,
    server: Annotated[str | None, typer.Option("--server", help="The license server the figures are of (overrides "
                                                                "the file's FQDN; gives a CSV without a server "
                                                                "column one).")] = None,
) -> None:
    """Store the vendor side's figures with the file they came from; importing a file again replaces
    what it gave before."""
    from lictel.vendor import files
    from lictel.warehouse import connect, ensure_schema

    settings = settings_for(data_dir)
    found = {p: files.read(p, org or settings.org, server) for p in paths}
    client = connect(settings)
    ensure_schema(client, settings)
    for p, samples in found.items():
        files.store(client, settings.clickhouse_database, samples)
        days = sorted({s.day for s in samples})
        servers = sorted({s.server or "(estate)" for s in samples})
        out.print(esc(f"{p}: {len(samples):,} figure set(s) ({samples[0].kind}), server(s) {', '.join(servers)}, "
                      f"{len({s.feature for s in samples})} feature(s), {days[0]} to {days[-1]}"))


@vendor_app.command("list")
def vendor_list(data_dir: DataDir = None, org: OrgOpt = None,
                fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table") -> None:
    """The imported vendor files: origin, kind, servers, features and days."""
    from lictel.reports.common import Report
    from lictel.warehouse import open_warehouse

    settings = settings_for(data_dir)
    where, params = ("WHERE org = {org:String}", {"org": org}) if org else ("", {})
    result = open_warehouse(settings).query(
        f"SELECT org, origin, any(kind), arrayStringConcat(arraySort(groupUniqArray(server)), ' '), "
        f"uniqExact(feature), toString(min(day)), toString(max(day)), count(), toString(max(imported_at)) "
        f"FROM {settings.clickhouse_database}.vendor_samples FINAL {where} GROUP BY org, origin ORDER BY org, origin",
        parameters=params)
    _emit(Report("Imported vendor figures", ["org", "origin", "kind", "servers", "features", "first_day", "last_day",
                                             "figure_sets", "imported_at"], [list(r) for r in result.result_rows]),
          fmt)
