"""Batch recompute: minutes of a time range from the raw events, with the same engine, overwritten.

Used after late events (they are applied from their arrival on, so the minutes between their
time stamp and their arrival were emitted without them). The concurrency at the start of the
range depends on every checkout still held then, so the replay reads each affected server's raw
events from its beginning up to the end of the range; only minutes inside the range are written.
Rows of the range that the recompute no longer produces are deleted, so a minute that should have
no row loses it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client

from lictel.dupgroup import DupRules
from lictel.engine import SessionRule, compute_rows
from lictel.events import Event
from lictel.timeutil import MINUTE_US, US, floor_minute
from sinks.clickhouse import write_minute_rows


@dataclass(frozen=True)
class ReconcileResult:
    start: int
    end: int
    events: int
    rows_before: int
    rows_after: int
    rows_changed: int


def _where(org: str | None) -> tuple[str, dict[str, Any]]:
    return ("AND org = {org:String}", {"org": org}) if org else ("", {})


def reconcile(client: Client, db: str, start_us: int, end_us: int, org: str | None = None,
              sessions: SessionRule | None = None, rules: DupRules | None = None) -> ReconcileResult:
    """Recompute and overwrite every pool and estate minute of both series in ``[start_us, end_us)``,
    licenses charged under ``rules`` (the rules of now, for the whole range)."""
    start = floor_minute(start_us)
    end = floor_minute(end_us + MINUTE_US - 1)
    org_sql, params = _where(org)
    params |= {"start": start, "end": end}
    in_range_us = "ts >= fromUnixTimestamp64Micro({start:Int64}) AND ts < fromUnixTimestamp64Micro({end:Int64})"
    in_range_min = ("minute >= toDateTime(intDiv({start:Int64}, 1000000)) "
                    "AND minute < toDateTime(intDiv({end:Int64}, 1000000))")
    features = client.query(
        f"SELECT DISTINCT org, feature FROM {db}.raw_events FINAL WHERE {in_range_us} AND feature != '' {org_sql} "
        f"UNION DISTINCT SELECT DISTINCT org, feature FROM {db}.usage_minute FINAL WHERE {in_range_min} {org_sql}",
        parameters=params).result_rows
    if not features:
        return ReconcileResult(start, end, 0, 0, 0, 0)
    # Every server that ever served an affected feature: estate minutes sum all of them.
    servers = client.query(
        f"SELECT DISTINCT org, server FROM {db}.raw_events FINAL "
        f"WHERE (org, feature) IN {{keys:Array(Tuple(String, String))}}",
        parameters={"keys": [tuple(f) for f in features]}).result_rows
    result = client.query(
        f"SELECT event_id, toUnixTimestamp64Micro(ts), org, server, vendor, feature, action, user, host, handle, "
        f"count, reason, source, seq FROM {db}.raw_events FINAL "
        f"WHERE (org, server) IN {{servers:Array(Tuple(String, String))}} "
        f"AND ts < fromUnixTimestamp64Micro({{end:Int64}}) ORDER BY ts, seq",
        parameters={"servers": [tuple(s) for s in servers], "end": end})
    events = [Event(*row) for row in result.result_rows]
    wanted = {tuple(f) for f in features}
    rows = [r for r in compute_rows(events, until_us=end, sessions=sessions, rules=rules)
            if start <= r.minute < end and (r.org, r.feature) in wanted]
    key_filter = "(org, feature) IN {keys:Array(Tuple(String, String))}"
    range_params = {"start": start // US, "end": end // US, "keys": [tuple(f) for f in features]}
    range_sql = (f"minute >= toDateTime({{start:Int64}}) AND minute < toDateTime({{end:Int64}}) AND {key_filter}")
    before = client.query(f"SELECT source, level, org, server, feature, toUnixTimestamp(minute), peak, low, "
                          f"license_us, "
                          f"checkouts, checkins, forced_releases, denials, queued, orphans, "
                          f"charged_peak, charged_low, charged_license_us, dup_group "
                          f"FROM {db}.usage_minute FINAL WHERE {range_sql}", parameters=range_params).result_rows
    old = {(*tuple(r[:5]), int(r[5]) * US): (*(int(x) for x in r[6:18]), r[18]) for r in before}
    new = {(r.source, r.level, r.org, r.server, r.feature, r.minute): tuple(r[5:18]) for r in rows}
    changed = sum(1 for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    client.command(f"DELETE FROM {db}.usage_minute WHERE {range_sql}", parameters=range_params)
    if rows:
        write_minute_rows(client, db, rows, version=int(time.time() * US))
    return ReconcileResult(start, end, len(events), len(old), len(new), changed)


def late_range(client: Client, db: str) -> tuple[int, int] | None:
    """From the oldest late event's minute to the end of the stored minutes, if there are late events."""
    row = client.query(f"SELECT count(), toUnixTimestamp64Micro(min(ts)) FROM {db}.late_events FINAL").result_rows[0]
    if not row[0]:
        return None
    end = client.query(f"SELECT toUnixTimestamp(max(minute)) FROM {db}.usage_minute FINAL").result_rows[0][0]
    return floor_minute(int(row[1])), int(end) * US + MINUTE_US
