"""Batch recompute: minutes of a time range from the raw events, with the same engine, overwritten.

Used after late events (they are applied from their arrival on, so the minutes between their
time stamp and their arrival were emitted without them). The concurrency at the start of the
range depends on every checkout still held then, so the replay reads each affected server's raw
events from its beginning up to the end of the range; only minutes inside the range are written.
Rows of the range that the recompute no longer produces are deleted, so a minute that should have
no row loses it.

The recompute runs on columns (:mod:`lictel.recompute`), one organisation at a time (memory holds
the history of one): raw events are read as Arrow columns (strings as dictionary codes, checkout
identities as two independent hashes) and computed with arrays, the keys the arrays decline by the
engine over the same events; the new rows go in as an Arrow table beside the old ones under a
higher version, compared with them in numpy, and old rows are deleted only for minutes that have
none now.

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from clickhouse_connect.driver.client import Client

from lictel import dupgroup, recompute, rollups, warehouse
from lictel.dupgroup import DupRules
from lictel.engine import ESTATE, POOL, MinuteRow, SessionRule, compute_rows
from lictel.events import LICENSE_SOURCE, SOURCES, Event
from lictel.partitioning import partition_for
from lictel.serde import tuples_of
from lictel.timeutil import MINUTE_US, US, floor_minute
from sinks.clickhouse import STREAM_VERSION


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
    # One pass over the raw events: each (org, feature), the servers that ever served it, and
    # whether it has events in the range; each server's newest event; then the features with stored
    # minutes in the range.
    raw = client.query(
        f"SELECT org, feature, server, toUnixTimestamp64Micro(max(ts)), countIf({in_range_us}) > 0 "
        f"FROM {db}.raw_events WHERE 1 {org_sql} GROUP BY org, feature, server", parameters=params).result_rows
    stored = client.query(f"SELECT DISTINCT org, feature FROM {db}.usage_minute WHERE {in_range_min} {org_sql}",
                          parameters=params).result_rows
    served: dict[tuple[str, str], list[str]] = {}
    hit: set[tuple[str, str]] = set()
    # A server's minutes end with the minute of its newest event: the stream never carries what it
    # holds past its own clock (a partition made final further by other servers does not move it).
    clock: dict[tuple[str, str], int] = {}
    for o, f, srv, newest, in_range in raw:
        o, f, srv = str(o), str(f), str(srv)
        clock[(o, srv)] = max(clock.get((o, srv), 0), floor_minute(int(newest)) + MINUTE_US)
        if f:  # (a RESTART has no feature: it moves its server's clock only)
            served.setdefault((o, f), []).append(srv)
            if in_range:
                hit.add((o, f))
    features = sorted(hit | {(str(o), str(f)) for o, f in stored})
    if not features:
        return ReconcileResult(start, end, 0, 0, 0, 0)
    # Every server that ever served an affected feature: estate minutes sum all of them.
    servers = sorted({(o, s) for o, f in features for s in served.get((o, f), [])})
    limit = final_limits(client, db, partitions)
    # Each key's range ends where the stream's final minutes end: (source, org, feature) -> end; an
    # estate's no later than its newest server's clock, a pool's than its server's.
    ends = {(source, o, f): min(end, limit(source, o, f), max((clock[(o, s)] for s in served.get((o, f), [])),
                                                               default=end))
            for o, f in features for source in SOURCES}
    # The stored rows of the range up to each key's end; one condition per distinct end (usually one).
    by_end: dict[int, list[tuple[str, str, str]]] = {}
    for key, key_end in ends.items():
        if key_end > start:
            by_end.setdefault(key_end, []).append(key)
    ranges: list[str] = []
    range_params: dict[str, Any] = {}
    for j, (key_end, keys) in enumerate(by_end.items()):
        ranges.append(f"(minute >= toDateTime({{start:Int64}}) AND minute < toDateTime({{end{j}:Int64}}) "
                      f"AND (source, org, feature) IN {{keys{j}:Array(Tuple(String, String, String))}})")
        range_params |= {f"end{j}": key_end // US, f"keys{j}": keys}
    range_params["start"] = start // US
    # Pool rows only up to their server's clock (a server without raw events: its stored rows go).
    at_server = "indexOf({clock_keys:Array(Tuple(String, String))}, (org, server))"
    range_params |= {"clock_keys": list(clock), "clock_ends": [e // US for e in clock.values()]}
    in_ranges = (f"({' OR '.join(ranges) or '0'}) AND (level != '{POOL}' OR {at_server} = 0 "
                 f"OR toUnixTimestamp(minute) < arrayElement({{clock_ends:Array(Int64)}}, {at_server}))")

    def read_stored() -> tuple[Any, int]:
        # The rows stored now (compared key by key with the new ones below) and the version above them.
        rows = client.query_arrow(f"SELECT {_COLUMNS} FROM {db}.usage_minute FINAL WHERE {in_ranges}",
                                  parameters=range_params, settings=_DICTIONARIES)
        return rows, next_version(client, db)

    # Organisation by organisation (no pool or estate spans two): memory holds one's history at a
    # time. Every feature of its servers is recomputed (only the affected are kept), each by its rule.
    by_org: dict[str, list[tuple[str, str]]] = {}
    for o, srv in servers:
        by_org.setdefault(o, []).append((o, srv))
    tables, declined, n_events = [], set(), 0
    # The warehouse reads the stored rows while the first organisation's arrays compute (numpy and
    # the engine both let go of the interpreter); nothing else uses the client meanwhile (a server
    # session takes one query at a time).
    with ThreadPoolExecutor(1, thread_name_prefix="reconcile-read") as reader:
        # (No server at all: stored rows of features without raw events, to be deleted; one empty pass.)
        for i, (o, org_servers) in enumerate(by_org.items() or [("", [])]):
            cols = read_events(client, db, org_servers, end, [k for k in served if k[0] == o], rules)
            reading = reader.submit(read_stored) if i == 0 else None
            # Computed up to the organisation's newest clock, not the range's end: nothing is kept past
            # it, and a held license carried to a far ``--to`` would make a row of every minute between.
            until = min(end, max((clock[k] for k in org_servers), default=end))
            fast = recompute.compute(cols, until, rules)
            tables.append(_fast_table(fast, cols, start, ends, clock))
            declined |= fast.declined
            n_events += len(cols)
            del cols, fast  # before the next organisation's are read
            if reading is not None:
                old, version = reading.result()
    # One dictionary per column (an Arrow stream may not replace one between batches).
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables).unify_dictionaries().combine_chunks()
    if declined:
        # What arrays decline (sessions, multi-license checkouts under a rule, ...): the engine.
        result = client.query(
            f"SELECT event_id, toUnixTimestamp64Micro(ts), org, server, vendor, feature, action, user, host, "
            f"handle, count, reason, source, seq FROM {db}.raw_events FINAL "
            f"WHERE (org, server) IN {{servers:Array(Tuple(String, String))}} "
            f"AND ts < fromUnixTimestamp64Micro({{end:Int64}}) ORDER BY ts, seq",
            parameters={"servers": [s for s in servers if s[0] in {o for o, _ in declined}], "end": end})
        events = tuples_of(Event, result.result_columns) if result.row_count else []
        until = min(end, max((clock[k] for k in servers if k[0] in {o for o, _ in declined}), default=end))
        rows = [r for r in compute_rows(events, until_us=until, sessions=sessions, rules=rules)
                if (r.org, r.feature) in declined
                and start <= r.minute < ends.get((r.source, r.org, r.feature), start)
                and (r.level != POOL or r.minute < clock.get((r.org, r.server), end))]
        table = pa.concat_tables([table, _engine_table(rows)]).unify_dictionaries().combine_chunks()
    # The new rows go in beside the old under a higher version (what FINAL and merges keep); the old
    # rows of minutes that have no row now are deleted last. A reader sees the old minutes or the
    # new, never a range without rows.
    before, after, changed, vanished = _compare(old, table)
    if table.num_rows:
        # One row per key and minute: nothing for ClickHouse to collapse while it writes.
        warehouse.insert_arrow(client, f"{db}.usage_minute", table.append_column("version", pa.array(
            np.full(table.num_rows, version, dtype=np.uint64))), settings={"optimize_on_insert": 0})
    if vanished:
        client.command(f"DELETE FROM {db}.usage_minute WHERE ({in_ranges}) AND version < {{v:UInt64}}",
                       parameters=range_params | {"v": version})
    final_end = max([start, *by_end])
    mark = rollups.watermark(client, db)
    if mark is not None and final_end > start:
        # The day rollups of the days rewritten, where they are kept already.
        last = min(mark, rollups.day_of(final_end - 1) + dt.timedelta(days=1))
        rollups.recompute(client, db, rollups.days_from(rollups.day_of(start), last), replace=True)
    return ReconcileResult(start, end, n_events, int(before), int(after), int(changed), final_end)


_KEY = ("level", "source", "org", "server", "feature")
_COLUMNS = ", ".join((*_KEY, "toUnixTimestamp(minute) AS minute_s", *recompute.METRICS, "dup_group"))
_DICTIONARIES = {"output_format_arrow_low_cardinality_as_dictionary": 1}


def _compare(old: Any, new: Any) -> tuple[int, int, int, int]:
    """Rows before, rows after, rows that differ (or exist on one side only), old rows without a new
    one: ``old`` and ``new`` are Arrow tables of ``usage_minute`` rows, one per key and minute."""
    if not old.num_rows or not new.num_rows:
        return old.num_rows, new.num_rows, old.num_rows + new.num_rows, old.num_rows
    old, new = old.combine_chunks(), new.combine_chunks()
    strings = {name: _codes(old.column(name).chunk(0), new.column(name).chunk(0)) for name in (*_KEY, "dup_group")}
    minutes = (old.column("minute_s").to_numpy().astype(np.int64), new.column("minute").to_numpy().astype(np.int64))
    # One integer per (key, minute), mixed radix over the codes and the minute's offset.
    first = min(int(minutes[0].min()), int(minutes[1].min()))
    keys = [np.zeros(len(minutes[side]), dtype=np.int64) for side in (0, 1)]
    span = 1
    for name in _KEY:
        size = int(max(strings[name][0].max(), strings[name][1].max())) + 1
        for side in (0, 1):
            keys[side] = keys[side] * size + strings[name][side]
        span *= size
    width = (max(int(minutes[0].max()), int(minutes[1].max())) - first) // 60 + 1
    if span * width >= 1 << 62:  # pragma: no cover - beyond any warehouse
        raise ValueError("too many keys to compare in one recompute: give a shorter range or one --org")
    for side in (0, 1):
        keys[side] = keys[side] * width + (minutes[side] - first) // 60
    _, at_old, at_new = np.intersect1d(keys[0], keys[1], assume_unique=True, return_indices=True)
    same = strings["dup_group"][0][at_old] == strings["dup_group"][1][at_new]
    for name in recompute.METRICS:
        same &= (old.column(name).to_numpy()[at_old].astype(np.int64)
                 == new.column(name).to_numpy()[at_new].astype(np.int64))
    vanished = old.num_rows - len(at_old)
    changed = vanished + (new.num_rows - len(at_new)) + int((~same).sum())
    return old.num_rows, new.num_rows, changed, vanished


def _codes(a: Any, b: Any) -> tuple[Any, Any]:
    """Two string (or dictionary) Arrow arrays as integer codes in one label space."""
    labels: dict[str, int] = {}
    out = []
    for col in (a, b):
        if not pa.types.is_dictionary(col.type):
            col = col.dictionary_encode()
        mapped = np.array([labels.setdefault(x, len(labels)) for x in col.dictionary.to_pylist()], dtype=np.int64)
        out.append(mapped[col.indices.to_numpy()] if len(mapped) else np.zeros(len(col), dtype=np.int64))
    return out[0], out[1]


def read_events(client: Client, db: str, servers: list[tuple[str, str]], end: int,
                features: list[tuple[str, str]], rules: DupRules | None = None) -> recompute.Events:
    """The raw events of ``servers`` before ``end``, as columns: strings as dictionary codes, checkout
    identities and the groups ``rules`` put ``features``' checkouts in as two independent hashes."""
    rules = rules or DupRules()
    identity = "vendor, user, host, ifNull(handle, '')"  # the pool is mixed in below, from its codes
    by: dict[str, list[tuple[str, str]]] = {}
    for org, feature in features:
        by.setdefault(dupgroup.fields(rules.rule(org, feature)), []).append((org, feature))
    # The group of a checkout, with its pool: the fields its feature's rule groups by.
    fields = {"U": "vendor, user", "H": "vendor, host", "UH": "vendor, user, host", "SITE": "vendor"}
    cases = [(f"(org, feature) IN {{g_{name}:Array(Tuple(String, String))}}", cols)
             for name, cols in fields.items() if by.get(name)]

    def group(fn: str, name: str) -> str:
        if not cases:  # no rule groups anything: nothing to send
            return ""
        if len(cases) == 1:  # one way of grouping: every row's (only grouped features read theirs)
            return f"{fn}({cases[0][1]}) AS {name}, "
        return "multiIf(" + ", ".join(f"{cond}, {fn}({args})" for cond, args in cases) + f", toUInt64(0)) AS {name}, "

    table = client.query_arrow(
        f"SELECT toUnixTimestamp64Micro(ts) AS ts_us, seq, count, action, org, server, vendor, feature, "
        f"cityHash64({identity}) AS ident, xxHash64({identity}) AS ident_check, "
        f"{group('cityHash64', 'grp')}{group('xxHash64', 'grp_check')}"
        f"cityHash64(event_id) AS id_hash FROM {db}.raw_events FINAL "
        f"WHERE (org, server) IN {{servers:Array(Tuple(String, String))}} "
        f"AND ts < fromUnixTimestamp64Micro({{end:Int64}})",
        parameters={"servers": servers, "end": end} | ({f"g_{name}": by[name] for name in fields if by.get(name)}
                                                      if len(cases) > 1 else {}),
        settings=_DICTIONARIES)
    table = table.unify_dictionaries().combine_chunks()

    def coded(name: str) -> tuple[Any, list[str]]:
        col = table.column(name)
        arr = col.chunk(0) if col.num_chunks else pa.array([], pa.dictionary(pa.int32(), pa.string()))
        if not pa.types.is_dictionary(arr.type):  # a server that sends plain strings
            arr = arr.dictionary_encode()
        return arr.indices.to_numpy().astype(np.int64), arr.dictionary.to_pylist()

    def number(name: str, dtype: Any) -> Any:
        if name not in table.column_names:
            return np.zeros(table.num_rows, dtype=dtype)
        col = table.column(name)
        return col.to_numpy().astype(dtype) if col.num_chunks else np.zeros(0, dtype=dtype)

    action, actions = coded("action")
    org, orgs = coded("org")
    server, server_names = coded("server")
    vendor, vendors = coded("vendor")
    feature, feature_names = coded("feature")
    u64 = np.uint64
    # Hashes of (vendor, user, host, handle) and of a group's fields, made the pool's: two of
    # different pools meet only where both independent hashes do (recompute declines a clash).
    pool = ((org * len(server_names) + server) * len(feature_names) + feature).astype(u64)
    with np.errstate(over="ignore"):
        mixed = [number(name, u64) + pool * u64(factor) for name, factor in
                 (("ident", 0x9E3779B97F4A7C15), ("ident_check", 0xC2B2AE3D27D4EB4F),
                  ("grp", 0x9E3779B97F4A7C15), ("grp_check", 0xC2B2AE3D27D4EB4F))]
    ident, ident_check, grp, grp_check = mixed
    return recompute.Events(number("ts_us", np.int64), number("seq", u64), number("count", np.int64),
                            recompute.actions_of(actions)[action] if len(action) else action, org, server,
                            vendor, feature, ident, ident_check, grp, grp_check, number("id_hash", u64), orgs,
                            server_names, vendors, feature_names)


def _fast_table(rows: recompute.Rows, ev: recompute.Events, start: int, ends: dict[tuple[str, str, str], int],
                clock: dict[tuple[str, str], int]) -> Any:
    """The rows arrays computed, each key up to its end (a pool's also up to its server's ``clock``),
    as an Arrow table of ``usage_minute``."""
    n_feat, n_srv = max(len(ev.features), 1), max(len(ev.servers), 1)
    key_end = np.full(max(len(ev.orgs), 1) * n_feat, start, dtype=np.int64)
    for (source, o, f), e in ends.items():
        if source == LICENSE_SOURCE and o in ev.orgs and f in ev.features:
            key_end[ev.orgs.index(o) * n_feat + ev.features.index(f)] = e
    srv_end = np.full(max(len(ev.orgs), 1) * n_srv, np.iinfo(np.int64).max, dtype=np.int64)
    for (o, srv), e in clock.items():
        if o in ev.orgs and srv in ev.servers:
            srv_end[ev.orgs.index(o) * n_srv + ev.servers.index(srv)] = e
    row_end = key_end[rows.org * n_feat + rows.feature]
    pool = rows.server >= 0  # (estate rows have server -1)
    row_end[pool] = np.minimum(row_end[pool], srv_end[rows.org[pool] * n_srv + rows.server[pool]])
    keep = (rows.minute >= start) & (rows.minute < row_end)
    n = int(keep.sum())

    def dictionary(codes: Any, labels: list[str]) -> Any:
        return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(labels, pa.string()))

    servers = list(ev.servers)
    if "" not in servers:
        servers.append("")
    blank = servers.index("")  # the server of estate rows (code -1)
    columns = {
        "level": dictionary(rows.level[keep], [POOL, ESTATE]),
        "source": dictionary(np.zeros(n, dtype=np.int32), [LICENSE_SOURCE]),
        "org": dictionary(rows.org[keep], list(ev.orgs)),
        "server": dictionary(np.where(rows.server[keep] < 0, blank, rows.server[keep]), servers),
        "feature": dictionary(rows.feature[keep], list(ev.features)),
        "minute": pa.array(rows.minute[keep] // US, pa.uint32()),
    }
    for name, typ in _METRIC_TYPES.items():
        columns[name] = pa.array(rows.metrics[name][keep], typ)
    columns["dup_group"] = dictionary(rows.rule[keep], rows.rules)
    return pa.table(columns)


def _engine_table(rows: list[MinuteRow]) -> Any:
    columns: dict[str, Any] = {c: pa.array([getattr(r, c) for r in rows], pa.string()).dictionary_encode()
                               for c in ("level", "source", "org", "server", "feature")}
    columns["minute"] = pa.array([r.minute // US for r in rows], pa.uint32())
    for name, typ in _METRIC_TYPES.items():
        columns[name] = pa.array([getattr(r, name) for r in rows], typ)
    columns["dup_group"] = pa.array([r.dup_group for r in rows], pa.string()).dictionary_encode()
    return pa.table(columns)


_METRIC_TYPES = {m: pa.uint32() if m in ("peak", "low", "charged_peak", "charged_low") else
                 pa.int64() if m.endswith("license_us") else pa.uint64() for m in recompute.METRICS}


def late_range(client: Client, db: str) -> tuple[int, int] | None:
    """From the oldest late event's minute to the end of the stored minutes, if there are late events."""
    row = client.query(f"SELECT count(), toUnixTimestamp64Micro(min(ts)) FROM {db}.late_events FINAL").result_rows[0]
    if not row[0]:
        return None
    end = client.query(f"SELECT toUnixTimestamp(max(minute)) FROM {db}.usage_minute FINAL").result_rows[0][0]
    return floor_minute(int(row[1])), int(end) * US + MINUTE_US
