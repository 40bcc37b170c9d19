"""Entitlements: what an organisation may use, from FlexNet license files or a contract CSV.

License files: every ``INCREMENT`` and ``FEATURE`` line (with ``\\`` continuation lines and quoted
strings) becomes one entitlement:

    INCREMENT feature vendor version expiry count [KEYWORD=value ...]

``expiry`` is ``dd-mmm-yyyy`` or ``permanent`` (also ``0`` / ``1-jan-0``); ``count`` is a number, or
``uncounted`` / ``0`` (no limit, stored as count 0 with ``uncounted = 1``). Keywords kept:
``START``, ``ISSUED``, ``VENDOR_STRING``, ``DUP_GROUP``, ``SUPERSEDE`` (and ``SUPERSEDE=`` with a
list), ``OVERDRAFT``; the rest are ignored. A line that cannot be read is an error naming the file
and line.

Contract CSV (for entitlements bought outside license files), with a header line:

    feature,count,start,expiry,vendor,note

``start`` and ``expiry`` are ``YYYY-MM-DD`` (``expiry`` may be empty: no end); ``vendor`` and
``note`` may be empty.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from lictel.errors import InputError

_MONTHS = {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct",
                                       "nov", "dec"), 1)}
PERMANENT = dt.date(9999, 12, 31)
COLUMNS = ["org", "source", "line", "feature", "vendor", "version", "count", "uncounted", "start", "expiry",
           "issued", "dup_group", "supersede", "overdraft", "vendor_string", "kind", "note", "server"]


@dataclass(frozen=True)
class Entitlement:
    org: str
    source: str
    line: int
    feature: str
    vendor: str
    version: str
    count: int
    uncounted: bool
    start: dt.date | None
    expiry: dt.date
    issued: dt.date | None
    dup_group: str
    supersede: str
    overdraft: int
    vendor_string: str
    kind: str  # license-file or contract
    note: str = ""
    server: str = ""  # the license server whose files these are; "" = the organisation's

    def sa_date(self) -> str:
        """The Customer Success Services (SA) date a Citrix license line carries in its version
        field (``2026.0301``), or "" when the version is not one."""
        v = self.version.strip()
        if len(v) == 9 and v[4] == "." and v[:4].isdigit() and v[5:].isdigit():
            return v
        return ""

    def row(self) -> list[Any]:
        return [self.org, self.source, self.line, self.feature, self.vendor, self.version, self.count,
                int(self.uncounted), self.start, self.expiry, self.issued, self.dup_group, self.supersede,
                self.overdraft, self.vendor_string, self.kind, self.note, self.server]


def _flex_date(text: str, what: str, source: str, line: int) -> dt.date:
    t = text.strip().lower()
    if t in ("permanent", "0", "1-jan-0", "1-jan-00", "1-jan-0000"):
        return PERMANENT
    parts = t.split("-")
    if len(parts) != 3 or parts[1][:3] not in _MONTHS:
        raise InputError(f"{what} {text!r} is not a date like 31-dec-2026 or 'permanent'", source=source, line=line)
    try:
        year = int(parts[2])
        return dt.date(year if year > 99 else 2000 + year, _MONTHS[parts[1][:3]], int(parts[0]))
    except ValueError:
        raise InputError(f"{what} {text!r} is not a valid date", source=source, line=line) from None


#: The most licenses one entitlement line may count (ClickHouse UInt32 holds them; no real contract
#: comes near).
MAX_LICENSES = 100_000_000


def _check_count(value: int, what: str, source: str, line: int, field: str | None = None) -> None:
    if not 0 <= value <= MAX_LICENSES:
        raise InputError(f"{what} {value} is not between 0 and {MAX_LICENSES:,}", source=source, line=line,
                         field=field)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Join backslash continuations; return (first physical line number, text)."""
    out: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not buf:
            start = n
        if line.endswith("\\"):
            buf.append(line[:-1])
            continue
        buf.append(line)
        out.append((start, " ".join(part.strip() for part in buf)))
        buf = []
    if buf:
        out.append((start, " ".join(part.strip() for part in buf)))
    return out


def parse_license_file(text: str, *, org: str, source: str) -> list[Entitlement]:
    """Every INCREMENT/FEATURE line of a FlexNet license file."""
    found = []
    for n, line in _logical_lines(text.lstrip("\ufeff")):
        words = line.split(None, 1)
        if not words or words[0].startswith("#") or words[0].upper() not in ("INCREMENT", "FEATURE"):
            continue
        try:
            tokens = shlex.split(line, posix=True)
        except ValueError as exc:
            raise InputError(f"cannot split the line ({exc}); check its quotes", source=source, line=n) from None
        if len(tokens) < 6:
            raise InputError(f"{tokens[0]} needs feature, vendor, version, expiry and count", source=source, line=n)
        _, feature, vendor, version, expiry_text, count_text = tokens[:6]
        keywords: dict[str, str] = {}
        for tok in tokens[6:]:
            key, eq, value = tok.partition("=")
            keywords[key.upper()] = value if eq else ""
        count_l = count_text.lower()
        if count_l in ("uncounted", "0"):
            count, uncounted = 0, True
        else:
            try:
                count, uncounted = int(count_text), False
            except ValueError:
                raise InputError(f"license count {count_text!r} is not a number or 'uncounted'",
                                 source=source, line=n) from None
            _check_count(count, "license count", source, n)
        expiry = _flex_date(expiry_text, "expiry", source, n)
        start = _flex_date(keywords["START"], "START", source, n) if keywords.get("START") else None
        issued = _flex_date(keywords["ISSUED"], "ISSUED", source, n) if keywords.get("ISSUED") else None
        overdraft_text = keywords.get("OVERDRAFT", "0") or "0"
        try:
            overdraft = int(overdraft_text)
        except ValueError:
            raise InputError(f"OVERDRAFT {overdraft_text!r} is not a number", source=source, line=n) from None
        _check_count(overdraft, "OVERDRAFT", source, n)
        supersede = keywords.get("SUPERSEDE")
        found.append(Entitlement(
            org, source, n, feature, vendor, version, count, uncounted, start, expiry, issued,
            keywords.get("DUP_GROUP", ""), (supersede or feature) if supersede is not None else "", overdraft,
            keywords.get("VENDOR_STRING", ""), "license-file"))
    return found


def parse_contract_csv(text: str, *, org: str, source: str) -> list[Entitlement]:
    """Rows of the documented contract CSV (header: feature,count,start,expiry,vendor,note)."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    missing = {"feature", "count", "start"} - set(reader.fieldnames or [])
    if missing:
        raise InputError(f"the header must name feature,count,start,expiry,vendor,note (missing: "
                         f"{', '.join(sorted(missing))})", source=source, line=1)
    found = []
    for n, row in enumerate(reader, 2):
        def date(name: str, *, required: bool, row: dict[str, str] = row, n: int = n) -> dt.date | None:
            value = (row.get(name) or "").strip()
            if not value:
                if required:
                    raise InputError("missing (YYYY-MM-DD)", source=source, line=n, field=name)
                return None
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                raise InputError(f"{value!r} is not a date like 2026-03-02", source=source, line=n,
                                 field=name) from None

        feature = (row.get("feature") or "").strip()
        if not feature:
            raise InputError("missing", source=source, line=n, field="feature")
        try:
            count = int((row.get("count") or "").strip())
        except ValueError:
            raise InputError(f"{row.get('count')!r} is not a whole number", source=source, line=n,
                             field="count") from None
        _check_count(count, "count", source, n, field="count")
        start = date("start", required=True)
        expiry = date("expiry", required=False) or PERMANENT
        found.append(Entitlement(org, source, n, feature, (row.get("vendor") or "").strip(), "", count, False,
                                 start, expiry, None, "", "", 0, "", "contract", (row.get("note") or "").strip()))
    return found


def load_file(path: Path, org: str, server: str = "") -> list[Entitlement]:
    """Entitlements of a ``.csv`` contract file or a FlexNet license file (any other name), of one
    license server when ``server`` is given."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() == ".csv":
        found = parse_contract_csv(text, org=org, source=str(path))
    else:
        found = parse_license_file(text, org=org, source=str(path))
        if not found:
            raise InputError("no INCREMENT or FEATURE line found: is this a FlexNet license file? (contract "
                             "entitlements go in a .csv file)", source=str(path))
    return [replace(e, server=server) for e in found] if server else found


def store(client: Client, db: str, entitlements: list[Entitlement]) -> None:
    """Replace what was imported from the same source (a re-import is idempotent). The new rows go in
    first, stamped with this import's time; only then are the older rows of those sources deleted,
    so an import that fails (the file was checked whole before, the insert may still fail) leaves
    the previous entitlements as they were."""
    if not entitlements:
        return
    sources = sorted({(e.org, e.source) for e in entitlements})
    stamp = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    client.insert(f"{db}.entitlements", [[*e.row(), stamp] for e in entitlements],
                  column_names=[*COLUMNS, "imported_at"])
    client.command(f"DELETE FROM {db}.entitlements WHERE (org, source) IN {{s:Array(Tuple(String, String))}} "
                   f"AND imported_at < {{stamp:DateTime64(3)}}", parameters={"s": sources, "stamp": stamp})


def listing(client: Client, db: str, org: str | None = None) -> list[dict[str, Any]]:
    where, params = ("WHERE org = {org:String}", {"org": org}) if org else ("", {})
    result = client.query(
        f"SELECT org, feature, vendor, count, uncounted, start, expiry, overdraft, dup_group, supersede, kind, "
        f"note, source, line FROM {db}.entitlements FINAL {where} ORDER BY org, feature, expiry, source, line",
        parameters=params)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def license_rules(client: Client, db: str) -> str:
    """The DUP_GROUP rules of the imported license files, as ``ORG/FEATURE=RULE,...``
    (:func:`lictel.dupgroup.from_license_lines`)."""
    from lictel import dupgroup

    result = client.query(f"SELECT org, feature, dup_group FROM {db}.entitlements FINAL "
                          f"WHERE kind = 'license-file' AND dup_group != '' ORDER BY org, feature, source, line")
    return dupgroup.render(dupgroup.from_license_lines((str(o), str(f), str(r)) for o, f, r in result.result_rows))
