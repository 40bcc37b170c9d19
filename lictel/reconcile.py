"""Batch recompute: minutes of a time range from the raw events, with the same engine, overwritten.

Used after late events (they are applied from their arrival on, so the minutes between their
time stamp and their arrival were emitted without them). The concurrency at the start of the
range depends on every checkout still held then, so the replay reads each affected server's raw
events from its beginning up to the end of the range; only minutes inside the range are written.
Rows of the range that the recompute no longer produces are deleted, so a minute that should have
no row loses it.

Two rules keep a recompute from fighting the stream:

- *Versions come from the data, never a clock.* Rows the stream computes are stored with
  ``STREAM_VERSION``; each reconcile writes one more than the highest version stored. A row a
  restarted worker emits again therefore never replaces a reconciled minute, whatever the clocks.
- *Only what the stream has made final.* Each (org, feature) is recomputed up to how far its input
  partition is final (``pipeline_progress``), never further: minutes no source has reached yet are
  the stream's to write, and a checkout still held is not carried into them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client

from lictel import rollups
from lictel.dupgroup import DupRules
from lictel.engine import SessionRule, compute_rows
from lictel.events import LICENSE_SOURCE, SOURCES, Event
from lictel.partitioning import partition_for
from lictel.serde import tuples_of
from lictel.timeutil import MINUTE_US, US, floor_minute
from sinks.clickhouse import STREAM_VERSION, write_minute_rows


@dataclass(frozen=True)
class ReconcileResult:
    start: int
    end: int
    events: int
    rows_before: int
    rows_after: int
    rows_changed: int
    final_end: int = 0  # the latest end of a key's range, where the stream's final minutes end


def _where(org: str | None) -> tuple[str, dict[str, Any]]:
    return ("AND org = {org:String}", {"org": org}) if org else ("", {})


def next_version(client: Client, db: str) -> int:
    """The version of a new recompute: above every stored row's (at least ``STREAM_VERSION + 1``)."""
    top = client.query(f"SELECT max(version) FROM {db}.usage_minute").result_rows[0][0]
    return max(int(top or 0), STREAM_VERSION) + 1


def final_limits(client: Client, db: str, partitions: int) -> Callable[[str, str, str], int]:
    """``limit(source, org, feature)``: every minute before it is final in the stream (the final
    mark of that key's input partition; without one, the lowest mark of its input stream; none: 0)."""
    rows = client.query(f"SELECT stream, partition, toUnixTimestamp64Micro(max(final_upto)) "
                        f"FROM {db}.pipeline_progress FINAL GROUP BY stream, partition").result_rows
    marks = {(str(stream), int(p)): int(f) for stream, p, f in rows}
    lowest: dict[str, int] = {}
    for (stream, _), f in marks.items():
        lowest[stream] = min(f, lowest.get(stream, f))

    def limit(source: str, org: str, feature: str) -> int:
        stream = "events" if source == LICENSE_SOURCE else "sessions"
        mark = marks.get((stream, partition_for(org, feature, partitions)))
        return floor_minute(mark if mark is not None else lowest.get(stream, 0))

    return limit


def reconcile(client: Client, db: str, start_us: int, end_us: int, org: str | None = None,
              sessions: SessionRule | None = None, rules: DupRules | None = None,
              partitions: int = 8) -> ReconcileResult:
    """Recompute and overwrite every pool and estate minute of both series in ``[start_us, end_us)``
    that the stream has made final (input split in ``partitions``), licenses charged under ``rules``
    (the rules of now, for the whole range)."""
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
    events = tuples_of(Event, result.result_columns) if result.row_count else []
    limit = final_limits(client, db, partitions)
    # Each key's range ends where the stream's final minutes end: (source, org, feature) -> end.
    ends = {(source, o, f): min(end, limit(source, o, f)) for o, f in features for source in SOURCES}
    rows = [r for r in compute_rows(events, until_us=end, sessions=sessions, rules=rules)
            if start <= r.minute < ends.get((r.source, r.org, r.feature), start)]
    # One delete per distinct end (usually one): stored rows of the range up to each key's end.
    by_end: dict[int, list[tuple[str, str, str]]] = {}
    for key, key_end in ends.items():
        if key_end > start:
            by_end.setdefault(key_end, []).append(key)
    ranges = [("minute >= toDateTime({start:Int64}) AND minute < toDateTime({end:Int64}) "
               "AND (source, org, feature) IN {keys:Array(Tuple(String, String, String))}",
               {"start": start // US, "end": key_end // US, "keys": keys}) for key_end, keys in by_end.items()]
    old: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for range_sql, range_params in ranges:
        before = client.query(f"SELECT source, level, org, server, feature, toUnixTimestamp(minute), peak, low, "
                              f"license_us, checkouts, checkins, forced_releases, denials, queued, orphans, "
                              f"charged_peak, charged_low, charged_license_us, dup_group "
                              f"FROM {db}.usage_minute FINAL WHERE {range_sql}", parameters=range_params).result_rows
        old |= {(*tuple(r[:5]), int(r[5]) * US): (*(int(x) for x in r[6:18]), r[18]) for r in before}
    new = {(r.source, r.level, r.org, r.server, r.feature, r.minute): tuple(r[5:18]) for r in rows}
    changed = sum(1 for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    version = next_version(client, db)
    for range_sql, range_params in ranges:
        client.command(f"DELETE FROM {db}.usage_minute WHERE {range_sql}", parameters=range_params)
    if rows:
        write_minute_rows(client, db, rows, version=version)
    final_end = max([start, *by_end])
    mark = rollups.watermark(client, db)
    if mark is not None and final_end > start:
        # The day rollups of the days rewritten, where they are kept already.
        last = min(mark, rollups.day_of(final_end - 1) + dt.timedelta(days=1))
        rollups.recompute(client, db, rollups.days_from(rollups.day_of(start), last), replace=True)
    return ReconcileResult(start, end, len(events), len(old), len(new), changed, final_end)


def late_range(client: Client, db: str) -> tuple[int, int] | None:
    """From the oldest late event's minute to the end of the stored minutes, if there are late events."""
    row = client.query(f"SELECT count(), toUnixTimestamp64Micro(min(ts)) FROM {db}.late_events FINAL").result_rows[0]
    if not row[0]:
        return None
    end = client.query(f"SELECT toUnixTimestamp(max(minute)) FROM {db}.usage_minute FINAL").result_rows[0][0]
    return floor_minute(int(row[1])), int(end) * US + MINUTE_US
