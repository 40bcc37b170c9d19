"""The answers lictel's users come for, from the stored minute usage, raw events and entitlements.

Every function takes a ClickHouse client and returns a :class:`Report` (title, columns, rows, notes,
optional SVG charts) that the CLI prints as a table, CSV or JSON. Every query is parameterised;
only validated identifiers (database, level, granularity) are formatted in. Time ranges are
half-open ``[start, end)`` in microseconds; without one, a report covers everything stored.

Definitions (README "Reports" and docs/reports.md say the same for users):

- *Use* of a concurrent feature is the estate concurrency ``c_estate(t)`` of the license series;
  a minute's use is its ``peak``. Minutes without a row had no license out (use 0).
- *Entitlement* of a feature on a day is the sum of ``count`` over its imported entitlements active
  that day (``start`` ≤ day ≤ ``expiry``; uncounted ones are not limits).
- The *overdraft band* is use above the entitlement by at most 10 % of it.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import io
import itertools
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from clickhouse_connect.driver.client import Client

from lictel import dupgroup
from lictel.errors import ConfigError, InputError
from lictel.export import rollup_query
from lictel.identity import SQL_DEVICE, SQL_USER, normalize_device, normalize_user
from lictel.reports import CHARGED_PEAK_AND_FIRST, peak_and_first, ruled
from lictel.timeutil import DAY_US, MINUTE_US, US, date_us, from_us, iso_in, us_date, zone
from lictel.ud import UD, license_model, ud_report

OVERDRAFT_BAND = 0.10


@dataclass
class Report:
    title: str
    columns: list[str]
    rows: list[list[Any]]
    notes: list[str] = field(default_factory=list)
    charts: dict[str, str] = field(default_factory=dict)  # name -> SVG text
    parts: list[Report] = field(default_factory=list)  # further tables of the same report

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]


@dataclass(frozen=True)
class Scope:
    """What a report looks at: an org and/or feature, a time range (µs, half-open), and the zone
    (IANA) whose days and hours the report speaks of."""

    org: str | None = None
    feature: str | None = None
    start: int | None = None
    end: int | None = None
    tz: str = "UTC"

    def where(self, time_col: str = "minute", seconds: bool = True, table: str = "") -> tuple[str, dict[str, Any]]:
        """A parameterised condition; ``table`` (``"o."``) qualifies the org and feature columns."""
        parts: list[str] = ["1"]
        params: dict[str, Any] = {}
        if self.org:
            parts.append(f"{table}org = {{org:String}}")
            params["org"] = self.org
        if self.feature:
            parts.append(f"{table}feature = {{feature:String}}")
            params["feature"] = self.feature
        conv = "toDateTime({%s:Int64}, 'UTC')" if seconds else "fromUnixTimestamp64Micro({%s:Int64}, 'UTC')"
        div = US if seconds else 1
        if self.start is not None:
            parts.append(f"{time_col} >= {conv % 'start'}")
            params["start"] = self.start // div
        if self.end is not None:
            parts.append(f"{time_col} < {conv % 'end'}")
            params["end"] = self.end // div
        return " AND ".join(parts), params


def stored_range(client: Client, db: str, scope: Scope) -> tuple[int, int] | None:
    """[first minute, last minute + 1 min) of the license series in scope, clipped to the scope."""
    where, params = scope.where()
    row = client.query(f"SELECT count(), toUnixTimestamp(min(minute)), toUnixTimestamp(max(minute)) "
                       f"FROM {db}.usage_minute WHERE source = 'license' AND {where}", parameters=params).result_rows[0]
    if not row[0]:
        return None
    start = scope.start if scope.start is not None else int(row[1]) * US
    end = scope.end if scope.end is not None else int(row[2]) * US + MINUTE_US
    return start, end


# --------------------------------------------------------------------------- entitlements


@dataclass(frozen=True)
class Entitled:
    feature: str
    count: int
    start: dt.date | None
    expiry: dt.date


def entitlements(client: Client, db: str, org: str | None) -> dict[tuple[str, str], list[Entitled]]:
    where, params = ("AND org = {org:String}", {"org": org}) if org else ("", {})
    result = client.query(f"SELECT org, feature, count, start, expiry FROM {db}.entitlements FINAL "
                          f"WHERE uncounted = 0 {where}", parameters=params)
    out: dict[tuple[str, str], list[Entitled]] = defaultdict(list)
    for o, f, n, start, expiry in result.result_rows:
        out[(o, f)].append(Entitled(f, int(n), start, expiry))
    return out


def entitled_on(items: list[Entitled], day: dt.date) -> int:
    return sum(e.count for e in items if (e.start is None or e.start <= day) and day <= e.expiry)


def _segments(items: list[Entitled], start: int, end: int) -> list[tuple[int, int, int]]:
    """Piecewise-constant entitlement over [start, end): (from µs, to µs, count)."""
    cuts = {start, end}
    for e in items:
        for d in (e.start, e.expiry + dt.timedelta(days=1) if e.expiry < dt.date.max else None):
            if d is not None:
                t = date_us(d)
                if start < t < end:
                    cuts.add(t)
    bounds = sorted(cuts)
    return [(a, b, entitled_on(items, us_date(a))) for a, b in itertools.pairwise(bounds)]


# --------------------------------------------------------------------------- usage, sizing


def usage(client: Client, db: str, scope: Scope, level: str = "estate", granularity: str = "day",
          source: str = "license", measure: str = "checkouts") -> Report:
    """Peak, low, time-weighted average and license-hours per period: lictel.export's rollup,
    with the numbers formatted in ClickHouse (a year of hourly pool rows is a bulk answer)."""
    rollup, params = rollup_query(db, level, granularity, scope.org, scope.feature,
                                  None if scope.start is None else scope.start // US,
                                  None if scope.end is None else scope.end // US, source, measure, scope.tz)
    result = client.query(
        f"SELECT org, if(server = '', '(estate)', server), feature, {_sql_local_iso('start')}, top, bottom, "
        f"round(lic / (secs * 1e6), 6), round(lic / 3.6e9, 6) FROM ({rollup}) ORDER BY org, server, feature, start",
        parameters=params)
    what = "licenses charged" if measure == "charged" else "checkouts"
    return Report(f"Usage by {granularity} ({level}, {source}, {what}, {scope.tz})",
                  ["org", "server", "feature", granularity, "peak", "low", "avg", "license_hours"],
                  [list(r) for r in result.result_rows],
                  [f"{granularity}s of {scope.tz}; avg is time-weighted over the whole period (minutes without a "
                   "row count as 0); low is 0 when some minute of the period had nothing out."])


def _sql_local_iso(col: str) -> str:
    """SQL for Unix seconds ``col`` as ISO-8601 local time of the query's ``{tz:String}`` with its
    offset (``Z`` for UTC), formatted in ClickHouse (reports may be export-sized)."""
    local = f"formatDateTime(toDateTime({col}, {{tz:String}}), '%Y-%m-%dT%H:%i:%S%z', {{tz:String}})"
    return (f"if({{tz:String}} = 'UTC', formatDateTime(toDateTime({col}, 'UTC'), '%Y-%m-%dT%H:%i:%SZ', 'UTC'), "
            f"concat(substring({local}, 1, 22), ':', substring({local}, 23, 2)))")


def key_ranges(client: Client, db: str, scope: Scope,
               level: str = "estate") -> dict[tuple[str, str, str], tuple[int, int]]:
    """Per (org, server, feature) of ``level``: the scope's range clipped to [the feature's first
    stored minute, its last + 1 min). Shares of minutes (percentiles, means) are taken over this
    range: idle minutes between a feature's first and last data count (nothing was held), the part of a
    requested range before its data began or after it ended does not."""
    where, params = Scope(scope.org, scope.feature).where()
    result = client.query(
        f"SELECT org, server, feature, toUnixTimestamp(min(minute)), toUnixTimestamp(max(minute)) "
        f"FROM {db}.usage_minute WHERE level = {{level:String}} AND source = 'license' AND {where} "
        f"GROUP BY org, server, feature", parameters={**params, "level": level})
    out = {}
    for o, s, f, a, b in result.result_rows:
        first = max(int(a) * US, scope.start if scope.start is not None else 0)
        last = min(int(b) * US + MINUTE_US, scope.end if scope.end is not None else 2**62)
        if last > first:
            out[(o, s, f)] = (first, last)
    return out


def sizing(client: Client, db: str, scope: Scope, level: str = "estate") -> Report:
    """Licenses that cover 95 %, 99 % and 100 % of the minutes, and the utilisation histogram; the
    minutes are each feature's from its first to its last stored minute inside the scope."""
    ranges = key_ranges(client, db, scope, level)
    if not ranges:
        return Report("Sizing", _SIZING_COLS, [])
    start = min(a for a, _ in ranges.values())
    end = max(b for _, b in ranges.values())
    where, params = Scope(scope.org, scope.feature, start, end).where()
    result = client.query(
        f"SELECT org, server, feature, charged_peak, count() FROM {db}.usage_minute FINAL "
        f"WHERE level = {{level:String}} AND source = 'license' AND {where} "
        f"GROUP BY org, server, feature, charged_peak ORDER BY org, server, feature, charged_peak",
        parameters={**params, "level": level})
    by_key: dict[tuple[str, str, str], list[tuple[int, int]]] = defaultdict(list)
    for o, s, f, peak, n in result.result_rows:
        by_key[(o, s, f)].append((int(peak), int(n)))
    ents = entitlements(client, db, scope.org)
    rules = rules_used(client, db, Scope(scope.org, scope.feature, start, end), level)
    rows, hist_rows = [], []
    for (o, s, f), levels in sorted(by_key.items()):
        if (o, s, f) not in ranges:
            continue
        first, last = ranges[(o, s, f)]
        total = (last - first) // MINUTE_US
        dist = _with_idle(levels, total)
        mean = sum(p * n for p, n in dist) / total
        ent = entitled_on(ents.get((o, f), []), us_date(last - 1)) or None
        rows.append([o, s or "(estate)", f, total, ent, _cover(dist, total, 0.95), _cover(dist, total, 0.99),
                     dist[-1][0], round(mean, 3), rules.get((o, s, f), "NONE"), iso_in(first, scope.tz),
                     iso_in(last, scope.tz)])
        for label, n in _histogram(dist, ent or dist[-1][0] or 1):
            hist_rows.append([o, s or "(estate)", f, label, n, round(n / total, 6)])
    rep = Report("Sizing: licenses that cover a share of the minutes", _SIZING_COLS, rows,
                 ["minutes: from the feature's first to its last stored minute (columns from, to); cover_95 = "
                  "the fewest licenses that were enough in at least 95 % of those minutes (minute peak <= "
                  "licenses).", CHARGED_NOTE])
    rep.parts.append(Report("Utilisation histogram (minute peak as a share of the entitlement, or of the highest "
                            "peak without one)", ["org", "server", "feature", "utilisation", "minutes", "share"],
                            hist_rows))
    return rep


_SIZING_COLS = ["org", "server", "feature", "minutes", "entitlement", "cover_95", "cover_99", "cover_100", "mean",
                "dup_group", "from", "to"]
CHARGED_NOTE = ("use is counted in licenses charged: checkouts that the feature's DUP_GROUP rule (column "
                "dup_group) puts in one group share a license; NONE: every checkout is a license.")


def rules_used(client: Client, db: str, scope: Scope, level: str = "estate") -> dict[tuple[str, str, str], str]:
    """The DUP_GROUP rule(s) each (org, server, feature) of ``level`` was charged under in ``scope``
    (several joined by '+' when the rule changed inside it)."""
    where, params = scope.where()
    found = ruled(client, db, f"level = {{level:String}} AND source = 'license' AND {where}",
                  {**params, "level": level}, ("org", "server", "feature"))
    return {(o, s, f): str(r[0]) for (o, s, f), r in found.items()}


def _with_idle(levels: list[tuple[int, int]], total: int) -> list[tuple[int, int]]:
    """(peak, minutes) pairs, plus the minutes without a row (nothing out) at peak 0, sorted."""
    idle = total - sum(n for _, n in levels)
    return sorted([*([(0, idle)] if idle > 0 else []), *levels])


def _cover(dist: list[tuple[int, int]], total: int, share: float) -> int:
    need = math.ceil(share * total - 1e-9)
    acc = 0
    for peak, n in dist:
        acc += n
        if acc >= need:
            return peak
    return dist[-1][0]


def _histogram(dist: list[tuple[int, int]], base: int) -> list[tuple[str, int]]:
    bins = [0] * 12  # 0 %, (0-10], ..., (90-100], > 100 %
    for peak, n in dist:
        if peak == 0:
            bins[0] += n
        elif peak > base:
            bins[11] += n
        else:
            bins[min(10, math.ceil(peak * 10 / base))] += n
    labels = ["0%"] + [f"{10 * (i - 1)}-{10 * i}%" for i in range(1, 11)] + [">100%"]
    return list(zip(labels, bins, strict=True))


# --------------------------------------------------------------------------- overuse


def overuse(client: Client, db: str, scope: Scope, models: dict[str, str]) -> Report:
    """Periods where use exceeds the entitlement: concurrent features minute by minute (estate
    peak), user/device features day by day (licenses assigned under the vendor's rule)."""
    ents = entitlements(client, db, scope.org)
    rows: list[list[Any]] = []
    rng = stored_range(client, db, scope)
    for (o, f), items in sorted(ents.items()):
        if scope.feature and f != scope.feature:
            continue
        if license_model(f, models) == UD:
            rows.extend(_ud_overuse(client, db, o, f, items, models, scope))
            continue
        if rng is None:
            continue
        for a, b, n in _segments(items, *rng):
            where, params = Scope(o, f, a, b).where()
            minutes = client.query(
                f"SELECT toUnixTimestamp(minute), charged_peak FROM {db}.usage_minute FINAL WHERE level = 'estate' "
                f"AND source = 'license' AND charged_peak > {{n:UInt32}} AND {where} ORDER BY minute",
                parameters={**params, "n": n}).result_rows
            for run in _runs([(int(m) * US, int(p), n) for m, p in minutes], MINUTE_US):
                rows.append(_overuse_row(o, f, "concurrent", run, MINUTE_US, scope.tz))
    rows.sort(key=lambda r: (r[0], r[1], r[3]))
    return Report("Overuse: use above the entitlement",
                  ["org", "feature", "model", "start", "end", "duration", "max_use", "entitlement", "max_excess",
                   "in_overdraft_band", "above_band", "kind"], rows,
                  ["duration, in_overdraft_band and above_band count minutes (concurrent) or days (user/device); "
                   f"the overdraft band is up to {OVERDRAFT_BAND:.0%} above the entitlement; kind is overdraft when "
                   "the whole period stays inside it.", CHARGED_NOTE])


def _ud_overuse(client: Client, db: str, org: str, feature: str, items: list[Entitled], models: dict[str, str],
                scope: Scope) -> list[list[Any]]:
    lo = -(2**62) if scope.start is None else scope.start
    hi = 2**62 if scope.end is None else scope.end
    days = [r for r in ud_report(client, db, models, org, feature) if lo <= date_us(r.day) < hi]
    over = []
    for r in days:
        n = entitled_on(items, r.day)
        if r.vendor_rule > n:
            over.append((date_us(r.day), r.vendor_rule, n))
    return [_overuse_row(org, feature, "user/device", run, DAY_US) for run in _runs(over, DAY_US)]


def _runs(points: list[tuple[int, int, int]], step: int) -> Iterable[list[tuple[int, int, int]]]:
    """Split (time, use, entitlement) points into runs of consecutive steps under one entitlement."""
    run: list[tuple[int, int, int]] = []
    for p in points:
        if run and (p[0] != run[-1][0] + step or p[2] != run[-1][2]):
            yield run
            run = []
        run.append(p)
    if run:
        yield run


def _overuse_row(org: str, feature: str, model: str, run: list[tuple[int, int, int]], step: int,
                 tz: str = "UTC") -> list[Any]:
    ent = run[0][2]
    band = ent * (1 + OVERDRAFT_BAND)
    top = max(v for _, v, _ in run)
    in_band = sum(1 for _, v, _ in run if v <= band)
    fmt = (lambda t: iso_in(t, tz)) if step == MINUTE_US else (lambda t: us_date(t).isoformat())
    return [org, feature, model, fmt(run[0][0]), fmt(run[-1][0] + step), len(run), top, ent, top - ent, in_band,
            len(run) - in_band, "overdraft" if top <= band else "overuse"]


# --------------------------------------------------------------------------- denials


def denials(client: Client, db: str, scope: Scope, by: str = "feature", within_min: int = 10) -> Report:
    """Denials by feature, user, host or hour, with reasons; a *true* denial is one the same user did
    not overcome with a successful checkout of the same feature within ``within_min`` minutes. By user
    or host, the largest counts come first. Requests for features the server does not serve
    (UNSUPPORTED) are not denials of a licensed feature: they are a table of their own."""
    if by not in DENIAL_KEYS:
        raise ConfigError(f"--by must be one of {', '.join(DENIAL_KEYS)}, not {by!r}")
    where, params = scope.where("ts", seconds=False)
    key = {"feature": "", "user": ", u AS k", "host": ", h AS k",
           "hour": ", toUnixTimestamp(toStartOfHour(t, {tz:String})) AS k"}[by]
    group = ", k" if key else ""
    order = f"count() DESC, org, feature{group}" if by in ("user", "host") else f"org, feature{group}"
    result = client.query(
        f"SELECT org, feature{key}, count(), "
        f"countIf(next_out = 0 OR next_out - toUnixTimestamp64Micro(t) > {{within:Int64}} * 60000000), "
        f"arrayStringConcat(arrayMap(x -> ifNull(x, '(none)'), topK(3)(reason)), '; ') "
        f"FROM (SELECT d.org AS org, d.feature AS feature, d.u AS u, d.h AS h, d.ts AS t, d.reason AS reason, "
        f"toUnixTimestamp64Micro(o.ts) AS next_out "
        f"FROM (SELECT org, feature, {SQL_USER} AS u, {SQL_DEVICE} AS h, ts, reason FROM {db}.raw_events FINAL "
        f"WHERE action = 'DENIED' AND {where}) AS d "
        f"ASOF LEFT JOIN (SELECT org, feature, {SQL_USER} AS u, ts FROM {db}.raw_events FINAL "
        f"WHERE action = 'OUT') AS o ON d.org = o.org AND d.feature = o.feature AND d.u = o.u AND o.ts > d.ts) "
        f"GROUP BY org, feature{group} ORDER BY {order}",
        parameters={**params, "within": within_min, "tz": scope.tz},
        settings={"join_use_nulls": 0})
    rows = []
    for r in result.result_rows:
        r = list(r)
        if by == "hour":
            r[2] = iso_in(int(r[2]) * US, scope.tz)
        rows.append(r)
    cols = ["org", "feature", *([by] if key else []), "denials", "true_denials", "top_reasons"]
    rep = Report(f"Denials by {by}", cols, rows,
                 [f"true_denials: not followed by a checkout of the same user and feature within {within_min} "
                  "minutes (users compared without case and domain, hosts without case); "
                  "reasons are the server's error codes without the socket detail."])
    unsupported = client.query(
        f"SELECT org, feature, count(), uniqExact({SQL_USER}), toUnixTimestamp64Micro(min(ts)), "
        f"toUnixTimestamp64Micro(max(ts)), "
        f"arrayStringConcat(arrayMap(x -> ifNull(x, '(none)'), topK(3)(reason)), '; ') FROM {db}.raw_events FINAL "
        f"WHERE action = 'UNSUPPORTED' AND {where} GROUP BY org, feature ORDER BY count() DESC, org, feature",
        parameters=params).result_rows
    rep.parts.append(Report(
        "Requests for features the server does not serve (UNSUPPORTED; not denials)",
        ["org", "feature", "requests", "users", "first", "last", "top_reasons"],
        [[o, f, int(n), int(u), iso_in(int(a), scope.tz), iso_in(int(b), scope.tz), r]
         for o, f, n, u, a, b, r in unsupported],
        ["a client asked for a feature no license file of the server names (a wrong feature name or "
         "license path on the client); it uses no license and is not a shortage."]))
    return rep


DENIAL_KEYS = ("feature", "user", "host", "hour")


# --------------------------------------------------------------------------- dormant


def dormant(client: Client, db: str, scope: Scope, models: dict[str, str], days: int = 30, ratio: float = 0.5,
            held_hours: float = 24.0, as_of: dt.date | None = None) -> Report:
    """Three kinds of waste: user/device assignments unused for ``days`` (releasable), concurrent
    entitlements whose 99th percentile stays below ``ratio`` of the entitlement, and checkouts held
    longer than ``held_hours`` (phantoms)."""
    rows: list[list[Any]] = []
    rows += [[*r, 1] for r in _releasable(client, db, scope, models, days, as_of)]
    rows += [[*r, 1] for r in _oversized(client, db, scope, models, ratio)]
    rows += _phantoms(client, db, scope, held_hours)
    return Report("Dormant licenses", ["kind", "org", "feature", "who", "detail", "since", "days", "checkouts"], rows,
                  [f"releasable: a user/device assignment (held 90 days after its last use) unused for {days}+ days; "
                   f"oversized: 99th percentile of the minute peaks below {ratio:.0%} of the entitlement; "
                   f"phantom: a checkout held {held_hours:g}+ hours that no check-in ended: never checked in, or "
                   "released only by a daemon restart. A long checkout that ended with a check-in (a multi-day "
                   "job) is use, not a phantom. Identical phantoms (same holder, server and ending) are one row: "
                   "checkouts counts them, since is the first, days the longest held."])


def _releasable(client: Client, db: str, scope: Scope, models: dict[str, str], days: int,
                as_of: dt.date | None) -> list[list[Any]]:
    where, params = Scope(scope.org, scope.feature).where()
    result = client.query(
        f"SELECT org, feature, tupleElement(p, 1) AS user, tupleElement(p, 2) AS device, max(day) FROM "
        f"(SELECT org, feature, day, arrayJoin(groupUniqArrayMerge(pairs)) AS p FROM {db}.ud_daily "
        f"WHERE {where} GROUP BY org, feature, day) GROUP BY org, feature, user, device", parameters=params)
    last_user: dict[tuple[str, str, str], dt.date] = {}
    last_dev: dict[tuple[str, str, str], dt.date] = {}
    newest: dict[tuple[str, str], dt.date] = {}
    for o, f, u, d, day in result.result_rows:
        if license_model(f, models) != UD:
            continue
        for table, key in ((last_user, (o, f, u)), (last_dev, (o, f, d))):
            table[key] = max(day, table.get(key, day))
        newest[(o, f)] = max(day, newest.get((o, f), day))
    rows = []
    for kind, table in (("user", last_user), ("device", last_dev)):
        for (o, f, who), day in sorted(table.items()):
            ref = as_of or newest[(o, f)]
            idle = (ref - day).days
            if days <= idle < 90:
                rows.append(["releasable", o, f, who, f"{kind} assignment, free on "
                             f"{(day + dt.timedelta(days=90)).isoformat()} if unused", day.isoformat(), idle])
    return rows


def _oversized(client: Client, db: str, scope: Scope, models: dict[str, str], ratio: float) -> list[list[Any]]:
    rng = stored_range(client, db, scope)
    if rng is None:
        return []
    ranges = key_ranges(client, db, scope)
    rows = []
    for (o, f), items in sorted(entitlements(client, db, scope.org).items()):
        if (scope.feature and f != scope.feature) or license_model(f, models) == UD:
            continue
        # A feature with data: its own stored range; one never used: the whole monitored range.
        start, end = ranges.get((o, "", f), rng)
        total = (end - start) // MINUTE_US
        ent = entitled_on(items, us_date(end - 1))
        if not ent:
            continue
        where, params = Scope(o, f, start, end).where()
        dist = [(int(p), int(n)) for p, n in client.query(
            f"SELECT charged_peak, count() FROM {db}.usage_minute FINAL WHERE level = 'estate' AND source = 'license' "
            f"AND {where} GROUP BY charged_peak ORDER BY charged_peak", parameters=params).result_rows]
        dist = _with_idle(dist, total)
        p99 = _cover(dist, total, 0.99) if dist else 0
        if p99 < ratio * ent:
            rows.append(["oversized", o, f, "", f"99th percentile {p99} of entitlement {ent} "
                         f"(peak {dist[-1][0] if dist else 0}); {ent - max(p99, dist[-1][0] if dist else 0)} "
                         "never used", iso_in(start, scope.tz), total // 1440])
    return rows


def _phantoms(client: Client, db: str, scope: Scope, held_hours: float) -> list[list[Any]]:
    """Checkouts begun in the scope that no check-in ended, held ``held_hours`` or more: from the
    holding segments of :mod:`lictel.holdings` (the engine's rules: an IN closes the identity's
    oldest open checkout, a restart closes them all), so a check-in is never counted twice."""
    from lictel.holdings import read_rows, replay_start, segments, server_features

    where, params = scope.where("ts", seconds=False)
    # The servers with checkouts in the scope, each with its newest event of all.
    servers = client.query(
        f"SELECT org, server, toUnixTimestamp64Micro(max(ts)) FROM {db}.raw_events GROUP BY org, server "
        f"HAVING countIf(vendor != 'SESSIONS' AND {where}) > 0 ORDER BY org, server", parameters=params).result_rows
    limit = int(held_hours * 3600 * US)
    # (org, feature, who, server, how it ended) -> [checkouts, first checkout, longest held]
    groups: dict[tuple[str, str, str, str, str], list[int]] = {}
    for o, server, newest in servers:
        features = [scope.feature] if scope.feature else None
        since = None if scope.start is None else replay_start(client, db, o, server, features or server_features(
            client, db, o, server), scope.start)
        # Every later event counts (a checkout of the scope may be returned after it).
        for seg in segments(read_rows(client, db, o, server, features, None, since)):
            if seg.ended_by == "IN" or (scope.start is not None and seg.start < scope.start) or (
                    scope.end is not None and seg.start >= scope.end):
                continue  # ended with a check-in: use, however long; or begun outside the scope
            forced = seg.ended_by == "RESTART"
            held = (seg.end if forced and seg.end is not None else int(newest)) - seg.start
            if held < limit:
                continue
            how = ("released only by a daemon restart" if forced
                   else "never checked in (still held at the end of the data)")
            g = groups.setdefault((o, seg.feature, f"{seg.user}@{seg.host}", server, how), [0, seg.start, 0])
            g[0] += 1
            g[1] = min(g[1], seg.start)
            g[2] = max(g[2], held)
    rows = [["phantom", o, f, who, f"server {server}; {how}", iso_in(first, scope.tz), round(longest / DAY_US, 2), n]
            for (o, f, who, server, how), (n, first, longest) in groups.items()]
    rows.sort(key=lambda r: (r[1], r[2], r[5], r[3]))
    return rows


# --------------------------------------------------------------------------- heatmap


DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def heatmap(client: Client, db: str, scope: Scope, level: str = "estate") -> Report:
    """Per feature, a 7 x 24 grid (weekday x hour of ``scope.tz``) of the average concurrency, then
    the same grid of the peak, with an SVG chart each."""
    rng = stored_range(client, db, scope)
    if rng is None:
        return Report("Heatmap", _HEAT_COLS, [])
    start, end = rng
    where, params = replace(scope, start=start, end=end).where()
    result = client.query(
        f"SELECT org, feature, toDayOfWeek(minute, 0, {{tz:String}}) - 1 AS dow, toHour(minute, {{tz:String}}) AS h, "
        f"sum(license_us), max(peak) "
        f"FROM {db}.usage_minute FINAL WHERE level = {{level:String}} AND source = 'license' AND {where} "
        f"GROUP BY org, feature, dow, h", parameters={**params, "level": level, "tz": scope.tz})
    minutes = _minutes_per_hour_of_week(start, end, scope.tz)
    cells: dict[tuple[str, str], dict[tuple[int, int], tuple[float, int]]] = defaultdict(dict)
    for o, f, dow, h, lic, peak in result.result_rows:
        n = minutes[int(dow)][int(h)]
        cells[(o, f)][(int(dow), int(h))] = (int(lic) / US / 60 / n if n else 0.0, int(peak))
    rows: list[list[Any]] = []
    peaks: list[list[Any]] = []
    rep = Report(f"Hour of week ({scope.tz}): average licenses in use", _HEAT_COLS, rows,
                 [f"rows: weekdays; columns: hours of {scope.tz} (h09 = 09:00-10:00); the average is over every "
                  f"minute of that hour of the week from {iso_in(start, scope.tz)} to {iso_in(end, scope.tz)}."])
    rep.parts.append(Report(f"Hour of week ({scope.tz}): peak licenses in use", _HEAT_COLS, peaks))
    for (o, f), grid in sorted(cells.items()):
        for dow in range(7):
            rows.append([o, f, DAYS[dow], *(round(grid.get((dow, h), (0.0, 0))[0], 2) for h in range(24))])
            peaks.append([o, f, DAYS[dow], *(grid.get((dow, h), (0.0, 0))[1] for h in range(24))])
        rep.charts[f"{o}-{f}"] = heatmap_svg(f"{o} {f}: average licenses in use by hour of week ({scope.tz})",
                                             grid)
    return rep


_HEAT_COLS = ["org", "feature", "weekday", *(f"h{h:02d}" for h in range(24))]


def _minutes_per_hour_of_week(start: int, end: int, tz: str = "UTC") -> list[list[int]]:
    """How many minutes of [start, end) fall in each (weekday, hour) of ``tz``."""
    counts = [[0] * 24 for _ in range(7)]
    zone_ = zone(tz)
    t = start - start % MINUTE_US
    # Walk in steps that never cross a local hour boundary (zones are whole or half/quarter hours off UTC).
    step = 15 * MINUTE_US
    while t < end:
        nxt = min(t - t % step + step, end)
        local = from_us(t).astimezone(zone_)
        counts[local.weekday()][local.hour] += (nxt - t) // MINUTE_US
        t = nxt
    return counts


def heatmap_svg(title: str, grid: dict[tuple[int, int], tuple[float, int]]) -> str:
    top = max((v[0] for v in grid.values()), default=0.0) or 1.0
    cell, left, head = 26, 44, 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + 24 * cell + 10}" height="{head + 7 * cell + 30}" '
             f'font-family="sans-serif" font-size="11">', f'<text x="4" y="16" font-size="13">{_esc(title)}</text>']
    for h in range(24):
        parts.append(f'<text x="{left + h * cell + cell / 2}" y="{head - 6}" text-anchor="middle">{h}</text>')
    for dow in range(7):
        y = head + dow * cell
        parts.append(f'<text x="4" y="{y + cell * 0.65}">{DAYS[dow]}</text>')
        for h in range(24):
            avg, peak = grid.get((dow, h), (0.0, 0))
            shade = int(255 - 200 * avg / top)
            parts.append(f'<rect x="{left + h * cell}" y="{y}" width="{cell - 1}" height="{cell - 1}" '
                         f'fill="rgb({shade},{shade},255)"><title>{DAYS[dow]} {h:02d}:00 avg {avg:.2f}, '
                         f'peak {peak}</title></rect>')
    parts.append(f'<text x="4" y="{head + 7 * cell + 20}">darkest = {top:.2f} licenses on average</text></svg>')
    return "\n".join(parts)


def line_svg(title: str, series: dict[str, list[tuple[dt.date, float]]], width: int = 720, height: int = 260) -> str:
    """A small line chart of daily values (one line per named series)."""
    pts = [p for s in series.values() for p in s]
    if not pts:
        return ""
    d0, d1 = min(p[0] for p in pts), max(p[0] for p in pts)
    span = max((d1 - d0).days, 1)
    top = max(max(p[1] for p in pts), 1.0) * 1.1
    left, bottom, head = 50, 30, 28
    w, h = width - left - 10, height - head - bottom

    def xy(d: dt.date, v: float) -> str:
        return f"{left + w * (d - d0).days / span:.1f},{head + h - h * v / top:.1f}"

    colors = ["#1f5fbf", "#c0392b", "#27ae60", "#8e44ad"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="11">', f'<text x="4" y="16" font-size="13">{_esc(title)}</text>',
             f'<line x1="{left}" y1="{head + h}" x2="{left + w}" y2="{head + h}" stroke="#999"/>',
             f'<line x1="{left}" y1="{head}" x2="{left}" y2="{head + h}" stroke="#999"/>',
             f'<text x="{left - 4}" y="{head + 4}" text-anchor="end">{top / 1.1:.0f}</text>',
             f'<text x="{left - 4}" y="{head + h}" text-anchor="end">0</text>',
             f'<text x="{left}" y="{height - 8}">{d0}</text>',
             f'<text x="{left + w}" y="{height - 8}" text-anchor="end">{d1}</text>']
    for i, (name, s) in enumerate(series.items()):
        color = colors[i % len(colors)]
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" '
                     f'points="{" ".join(xy(d, v) for d, v in sorted(s))}"/>')
        parts.append(f'<text x="{left + 8 + 140 * i}" y="{head + 12}" fill="{color}">{_esc(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


# --------------------------------------------------------------------------- forecast


def daily_peaks(client: Client, db: str, scope: Scope) -> dict[tuple[str, str], list[tuple[dt.date, int]]]:
    """Per org and feature: the estate peak (licenses charged) of every day of ``scope.tz`` from its
    first to its last stored day."""
    where, params = scope.where()
    params["tz"] = scope.tz
    result = client.query(
        f"SELECT org, feature, toDate(minute, {{tz:String}}) AS d, max(charged_peak) FROM {db}.usage_minute FINAL "
        f"WHERE level = 'estate' AND source = 'license' AND {where} GROUP BY org, feature, d ORDER BY org, feature, d",
        parameters=params)
    raw: dict[tuple[str, str], dict[dt.date, int]] = defaultdict(dict)
    for o, f, d, p in result.result_rows:
        raw[(o, f)][d] = int(p)
    out = {}
    for key, by_day in raw.items():
        d, last = min(by_day), max(by_day)
        series = []
        while d <= last:
            series.append((d, by_day.get(d, 0)))
            d += dt.timedelta(days=1)
        out[key] = series
    return out


@dataclass(frozen=True)
class Fit:
    intercept: float
    slope: float  # per day
    weekday: tuple[float, ...]  # additive effect of Mon..Sun (Mon = 0)
    origin: dt.date

    def predict(self, d: dt.date) -> float:
        return self.intercept + self.slope * (d - self.origin).days + self.weekday[d.weekday()]


def fit_trend(series: list[tuple[dt.date, float]]) -> Fit:
    """Least squares: y = a + b·t + s[weekday], the weekday effects summing to zero."""
    origin = series[0][0]
    t = np.array([(d - origin).days for d, _ in series], dtype=float)
    y = np.array([v for _, v in series], dtype=float)
    dow = np.array([d.weekday() for d, _ in series])
    # Effects coded against the mean: columns for Mon..Sat, Sunday = -(sum of the others).
    x = np.zeros((len(series), 8))
    x[:, 0] = 1.0
    x[:, 1] = t
    for k in range(6):
        x[:, 2 + k] = np.where(dow == k, 1.0, np.where(dow == 6, -1.0, 0.0))
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    effects = [float(c) for c in coef[2:]]
    effects.append(-sum(effects))
    return Fit(float(coef[0]), float(coef[1]), tuple(effects), origin)


def backtest(series: list[tuple[dt.date, float]], holdout: int = 28) -> tuple[float, float] | None:
    """Fit on all but the last ``holdout`` days, predict them: (mean absolute error, MAPE %)."""
    if len(series) < holdout + 28:
        return None
    fit = fit_trend(series[:-holdout])
    errors = [abs(fit.predict(d) - v) for d, v in series[-holdout:]]
    mae = sum(errors) / holdout
    actual = [v for _, v in series[-holdout:]]
    pct = [e / a for e, a in zip(errors, actual, strict=True) if a > 0]
    return mae, 100 * sum(pct) / len(pct) if pct else float("nan")


def forecast(client: Client, db: str, scope: Scope, horizon_days: int = 365) -> Report:
    """Daily peak trend with weekly seasonality, and the day the forecast first reaches the entitlement."""
    ents = entitlements(client, db, scope.org)
    rows: list[list[Any]] = []
    rep = Report("Forecast of the daily peak", ["org", "feature", "days", "trend_per_30_days", "entitlement",
                                                "reaches_entitlement", "backtest_mae", "backtest_mape_pct"], rows,
                 ["method: least squares on the daily estate peak, a straight trend plus one additive effect per "
                  "weekday; backtest: fitted without the last 28 days, then compared with them."])
    for (o, f), series in sorted(daily_peaks(client, db, scope).items()):
        if len(series) < 14:
            rows.append([o, f, len(series), None, None, "too little history (14 days needed)", None, None])
            continue
        fit = fit_trend([(d, float(v)) for d, v in series])
        last = series[-1][0]
        ent = entitled_on(ents.get((o, f), []), last) or None
        reach = None
        if ent is not None:
            for k in range(0, horizon_days + 1):
                d = last + dt.timedelta(days=k)
                if fit.predict(d) >= ent:
                    reach = d.isoformat() if k else "already"
                    break
        bt = backtest([(d, float(v)) for d, v in series])
        rows.append([o, f, len(series), round(30 * fit.slope, 3), ent,
                     reach or (f"not within {horizon_days} days" if ent else "no entitlement"),
                     None if bt is None else round(bt[0], 3), None if bt is None else round(bt[1], 2)])
        future = [(last + dt.timedelta(days=k), max(fit.predict(last + dt.timedelta(days=k)), 0.0))
                  for k in range(1, min(horizon_days, 180) + 1)]
        lines = {"daily peak": [(d, float(v)) for d, v in series], "forecast": future}
        if ent:
            lines["entitlement"] = [(series[0][0], float(ent)), (future[-1][0], float(ent))]
        rep.charts[f"{o}-{f}"] = line_svg(f"{o} {f}: daily peak and forecast", lines)
    return rep


# --------------------------------------------------------------------------- chargeback


def read_groups(path: Path) -> dict[str, str]:
    """``user,group`` CSV (header required) → {normalized user: group}."""
    text = path.read_text(encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    cols = {c.strip().lower(): c for c in reader.fieldnames or []}
    if "user" not in cols or "group" not in cols:
        raise InputError("a group file needs the header user,group", source=str(path), line=1)
    out = {}
    for row in reader:
        user, group = (row.get(cols["user"]) or "").strip(), (row.get(cols["group"]) or "").strip()
        if not user or not group:
            raise InputError("user and group must not be empty", source=str(path), line=reader.line_num)
        out[normalize_user(user)] = group
    return out


def chargeback(client: Client, db: str, scope: Scope, groups: dict[str, str]) -> Report:
    """License-hours and share of the peak per group, in licenses charged. Checkouts are replayed from
    raw events with the engine's rules (OUT/IN/RESTART; an IN closes the oldest open checkouts of
    its identity first) and charged under the DUP_GROUP rule each pool's newest minute row names;
    the peak is the feature's estate peak instant of licenses charged."""
    rng = stored_range(client, db, scope)
    if rng is None:
        return Report("Chargeback", _CB_COLS, [])
    start, end = rng
    where, params = Scope(scope.org, scope.feature).where()
    pool_rules = {(k[0], k[1], k[2]): str(r[1]) for k, r in ruled(
        client, db, f"level = 'pool' AND source = 'license' AND {where}", params, ("org", "server", "feature"),
        extra="argMax(dup_group, minute)").items()}
    result = client.query(
        f"SELECT org, server, vendor, feature, action, user, host, ifNull(handle, ''), count, "
        f"toUnixTimestamp64Micro(ts) FROM {db}.raw_events FINAL WHERE ((action IN ('OUT', 'IN') AND {where}) "
        f"OR action = 'RESTART') AND vendor != 'SESSIONS' AND ts < fromUnixTimestamp64Micro({{end:Int64}}) "
        f"ORDER BY ts, seq", parameters={**params, "end": end})
    cache: dict[str, str] = {}

    def group_of(user: str) -> str:
        g = cache.get(user)
        if g is None:
            g = cache[user] = groups.get(normalize_user(user), "(unmapped)")
        return g

    replay = _ChargeReplay(pool_rules, group_of, start)
    instant = None
    apply, note_peaks, dirty = replay.apply, replay.note_peaks, replay.dirty
    for row in result.result_rows:
        t = row[9]
        if t != instant:
            if instant is not None and dirty:
                note_peaks(instant)  # events at one instant are simultaneous
            instant = t
            if t >= start and not replay.started:
                replay.begin()
        apply(row)
    if instant is not None:
        replay.note_peaks(instant)
    replay.begin()
    replay.settle_all(end)
    total: dict[tuple[str, str], float] = defaultdict(float)
    for (o, f, _), h in replay.hours.items():
        total[(o, f)] += h
    out = []
    best = replay.best
    for o, f, g in sorted(set(replay.hours) | {(o, f, g) for (o, f), (_, _, sh) in best.items() for g in sh}):
        h = replay.hours.get((o, f, g), 0.0)
        top, at, shares = best.get((o, f), (0.0, start, {}))
        held = shares.get(g, 0.0)
        out.append([o, f, g, round(h, 4), round(h / total[(o, f)], 6) if total[(o, f)] else 0.0,
                    _num(held), round(held / top, 6) if top else 0.0, _num(top), iso_in(at, scope.tz),
                    "+".join(sorted({r for (o2, _, f2), r in pool_rules.items() if (o2, f2) == (o, f)})) or "NONE"])
    return Report("Chargeback by group", _CB_COLS, out,
                  [f"from {iso_in(start, scope.tz)} to {iso_in(end, scope.tz)}, in licenses charged under each "
                   "feature's DUP_GROUP rule (dup_group): checkouts of one group share a license; a license shared "
                   "by several users (rules H and SITE) is split equally among them. share_of_peak: the licenses "
                   "each group held at the feature's estate peak instant (the first, if it recurs); users not in "
                   "the group file are (unmapped)."])


def _num(x: float) -> float | int:
    """A share of licenses: an integer when it is one, else rounded."""
    r = round(x, 4)
    return int(r) if r == int(r) else r


_HOUR_US = 3600 * US


class _ChargeReplay:
    """Licenses charged per chargeback group over time (:func:`chargeback`).

    Open checkouts per identity (oldest first). A DUP group (the rule's projection of an identity;
    under NONE the identity itself, charged the sum of its open checkouts) is charged the largest
    count among its open checkouts, attributed to its users in equal shares, and through them to
    their chargeback groups. Hours accumulate only from ``start``."""

    def __init__(self, rules: dict[tuple[str, str, str], str], group_of: Callable[[str], str], start: int) -> None:
        self.rules = rules
        self.group_of = group_of
        self.start = start
        self.open: dict[tuple[Any, ...], list[int]] = {}
        self.alone: dict[tuple[Any, ...], int] = {}  # rule NONE: what each identity holds
        self.members: dict[tuple[Any, ...], set[tuple[Any, ...]]] = {}
        self.contrib: dict[tuple[Any, ...], dict[str, float]] = {}
        self.rate: dict[tuple[str, str, str], float] = defaultdict(float)
        self.since: dict[tuple[str, str, str], int] = {}
        self.hours: dict[tuple[str, str, str], float] = defaultdict(float)
        self.level: dict[tuple[str, str], float] = defaultdict(float)
        # (org, feature) -> chargeback group -> licenses attributed now
        self.now: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.best: dict[tuple[str, str], tuple[float, int, dict[str, float]]] = {}
        self.dirty: set[tuple[str, str]] = set()
        self._fields: dict[tuple[str, str, str], str] = {}
        self._all_alone = not any(dupgroup.fields(r) for r in rules.values())
        self.started = False

    def _by(self, o: str, server: str, f: str) -> str:
        """What the pool's rule groups by (dupgroup.fields), looked up once per pool."""
        by = self._fields.get((o, server, f))
        if by is None:
            by = self._fields[(o, server, f)] = dupgroup.fields(self.rules.get((o, server, f), dupgroup.NONE))
        return by

    def _key(self, ident: tuple[Any, ...]) -> tuple[Any, ...]:
        """The group of a checkout under a grouping rule (rule NONE never gets here)."""
        o, server, vendor, f, user, host, _ = ident
        by = self._by(o, server, f)
        if by == dupgroup.SITE:
            return (o, server, vendor, f)
        return (o, server, vendor, f, user if "U" in by else "", host if "H" in by else "")

    def apply(self, row: Sequence[Any]) -> None:
        o, server, vendor, f, action, user, host, handle, count, t = row
        if action == "RESTART":
            for i in [i for i in self.alone if i[0] == o and i[1] == server and i[2] == vendor]:
                self._apply_alone(i, "IN", self.alone[i], t)
            gone = [i for i in self.open if i[0] == o and i[1] == server and i[2] == vendor]
            keys = {self._key(i) for i in gone}
            for i in gone:
                del self.open[i]
            for k in keys:
                self.members[k].difference_update(gone)
                self._recharge(k, t)
            return
        ident = (o, server, vendor, f, user, host, handle)
        # Rule NONE, inline: this runs once per checkout and check-in.
        if self._all_alone or self._by(o, server, f) == "":
            alone = self.alone
            had = alone.get(ident, 0)
            new = had + count if action == "OUT" else (had - count if had > count else 0)
            if new == had:
                return
            if new:
                alone[ident] = new
            else:
                del alone[ident]
            k3 = (o, f, self.group_of(user))
            last = self.since.get(k3, self.start)
            if t > last:
                self.hours[k3] += self.rate[k3] * (t - (last if last > self.start else self.start)) / _HOUR_US
            self.since[k3] = t if t > self.start else self.start
            self.rate[k3] += new - had
            key = (o, f)
            self.level[key] += new - had
            self.now[key][k3[2]] += new - had
            self.dirty.add(key)
            return
        opened = self.open.get(ident)
        if action == "OUT":
            if opened is None:
                opened = self.open[ident] = []
                self.members.setdefault(self._key(ident), set()).add(ident)
            opened.append(int(count))
        elif opened:
            n = int(count)
            while n and opened:
                take = min(n, opened[0])
                n -= take
                if take == opened[0]:
                    opened.pop(0)
                else:
                    opened[0] -= take
            if not opened:
                del self.open[ident]
                self.members[self._key(ident)].discard(ident)
        else:
            return  # an orphan check-in changes nothing
        self._recharge(self._key(ident), t)

    def _apply_alone(self, ident: tuple[Any, ...], action: str, count: int, t: int) -> None:
        """Rule NONE (the common case, kept as fast as the replay of checkouts): every checkout is
        charged, so an identity is charged what it holds."""
        had = self.alone.get(ident, 0)
        new = had + count if action == "OUT" else max(had - count, 0)
        if new == had:
            return
        if new:
            self.alone[ident] = new
        else:
            del self.alone[ident]
        o, f = ident[0], ident[3]
        k3 = (o, f, self.group_of(ident[4]))
        self._settle(k3, t)
        self.rate[k3] += new - had
        self.level[(o, f)] += new - had
        self.dirty.add((o, f))

    def _recharge(self, key: tuple[Any, ...], t: int) -> None:
        members = self.members.get(key, set())
        new: dict[str, float] = {}
        if members:
            value = float(max(max(self.open[i]) for i in members))  # the group's largest open checkout
            users = {i[4] for i in members}
            for u in users:
                g = self.group_of(u)
                new[g] = new.get(g, 0.0) + value / len(users)
        old = self.contrib.get(key, {})
        if new == old:
            return
        o, f = key[0], key[3]
        for g in old.keys() | new.keys():
            diff = new.get(g, 0.0) - old.get(g, 0.0)
            if diff:
                k3 = (o, f, g)
                self._settle(k3, t)
                self.rate[k3] += diff
                self.level[(o, f)] += diff
                self.now[(o, f)][g] += diff
        if new:
            self.contrib[key] = new
        else:
            self.contrib.pop(key, None)
        self.dirty.add((o, f))

    def _settle(self, k3: tuple[str, str, str], t: int) -> None:
        last = self.since.get(k3, self.start)
        if t > last:
            self.hours[k3] += self.rate[k3] * (t - max(last, self.start)) / (3600 * US)
        self.since[k3] = max(t, self.start)

    def begin(self) -> None:
        """At the first instant of the range: what is held then counts as a candidate peak."""
        if not self.started:
            self.started = True
            self.dirty.update(k for k, v in self.level.items() if v > 1e-9)
            self.note_peaks(self.start, force=True)

    def note_peaks(self, instant: int, force: bool = False) -> None:
        if not self.started and not force:
            self.dirty.clear()
            return
        best, level = self.best, self.level
        for key in self.dirty:
            lv = level[key]
            top = best.get(key)
            if lv > (top[0] if top else 0.0) + 1e-9:
                shares = {g: r for g, r in self.now[key].items() if r > 1e-9}
                self.best[key] = (lv, max(instant, self.start), shares)
        self.dirty.clear()

    def settle_all(self, end: int) -> None:
        for k3 in list(self.rate):
            self._settle(k3, end)


_CB_COLS = ["org", "feature", "group", "license_hours", "share_of_hours", "held_at_peak", "share_of_peak", "peak",
            "peak_at", "dup_group"]


# --------------------------------------------------------------------------- pseudonyms


class Pseudonyms:
    """Keyed SHA-256 (HMAC) pseudonyms of user and device names: stable for one key, not reversible
    without it. A name is normalised first, as lictel compares names (``CORP\\Ann``, ``ann@corp``
    and ``ann`` are one user; hosts without case), so one person has one pseudonym in a report."""

    def __init__(self, key: str) -> None:
        if not key:
            raise ConfigError("--pseudonymize needs a key: set LICTEL_PSEUDONYM_KEY (keep it secret; the same "
                              "key gives the same pseudonyms in every report)")
        self._secret = key.encode()

    def _hash(self, kind: str, name: str) -> str:
        return "p-" + hmac.new(self._secret, f"{kind}:{name}".encode(), hashlib.sha256).hexdigest()[:16]

    def user(self, name: str) -> str:
        return self._hash("u", normalize_user(name))

    def device(self, name: str) -> str:
        return self._hash("d", normalize_device(name))

    def holder(self, user_at_host: str) -> str:
        user, _, host = user_at_host.rpartition("@")
        return f"{self.user(user)}@{self.device(host)}"


def pseudonymizer(key: str) -> Pseudonyms:
    return Pseudonyms(key)


def reason_code(reason: str) -> str:
    """What a pseudonymised report keeps of a denial reason: the server's error code, never its
    text (which may name users and hosts)."""
    codes = re.findall(r"\((-?\d+(?:,-?\d+)?)\)", reason)
    return f"error {codes[-1]}" if codes else "(reason withheld)"


# --------------------------------------------------------------------------- compliance


def compliance(client: Client, db: str, scope: Scope, models: dict[str, str],
               pseudo: Pseudonyms | None = None) -> Report:
    """One period report: per feature the entitlement, peak (or licenses assigned), the 99 % cover,
    overuse, denials; then the overuse periods, denials, dormant licenses, user/device assignments,
    and charts (daily peak against the entitlement; hour of week)."""
    data = stored_range(client, db, Scope(scope.org, scope.feature))
    if data is None:
        raise ConfigError("no usage stored for this organisation/feature: nothing to report on")
    # Without --from/--to the period is the whole stored range; the title says which data it covers.
    scope = replace(scope, start=data[0] if scope.start is None else scope.start,
                    end=data[1] if scope.end is None else scope.end)
    assert scope.start is not None and scope.end is not None
    covered = (max(scope.start, data[0]), min(scope.end, data[1]))
    ents = entitlements(client, db, scope.org)
    last_day = us_date(scope.end - 1)
    size = {(r[0], r[2]): r for r in sizing(client, db, scope).rows}
    over = overuse(client, db, scope, models)
    den = denials(client, db, scope)
    dorm = dormant(client, db, scope, models, as_of=last_day)
    ud_rows = ud_report(client, db, models, scope.org, scope.feature, day=last_day, explain=True, after_last_use=True)
    where, params = scope.where()
    peaks = client.query(
        f"SELECT org, feature, {CHARGED_PEAK_AND_FIRST}, "
        f"sum(charged_license_us) FROM {db}.usage_minute FINAL WHERE level = 'estate' "
        f"AND source = 'license' AND {where} GROUP BY org, feature ORDER BY org, feature",
        parameters=params).result_rows
    keys = sorted({(o, f) for o, f, *_ in peaks} | {(r.org, r.feature) for r in ud_rows})
    peak_of = {(o, f): (*peak_and_first(e), int(lic)) for o, f, e, lic in peaks}
    rule_of = {(o, f): r for (o, _, f), r in rules_used(client, db, scope).items()}
    den_of = {(r[0], r[1]): (r[2], r[3]) for r in den.rows}
    ud_of = {(r.org, r.feature): r for r in ud_rows}
    rows = []
    for o, f in keys:
        model = license_model(f, models)
        ent = entitled_on(ents.get((o, f), []), last_day) or None
        periods = [r for r in over.rows if r[0] == o and r[1] == f]
        d, true_d = den_of.get((o, f), (0, 0))
        if model == UD:
            u = ud_of.get((o, f))
            use, when, cover = (u.vendor_rule, last_day.isoformat(), u.optimal) if u else (0, "", 0)
        else:
            p, at, _ = peak_of.get((o, f), (0, 0, 0))
            use, when = p, iso_in(at, scope.tz) if at else ""
            cover = size.get((o, f), [None] * 7)[6]
        rows.append([o, f, "user/device" if model == UD else "concurrent", ent, use, when, cover, len(periods),
                     sum(r[5] for r in periods), d, true_d, "" if model == UD else rule_of.get((o, f), "NONE")])
    data_note = (f"data from {iso_in(covered[0], scope.tz)} to {iso_in(covered[1], scope.tz)}"
                 if covered[1] > covered[0] else "no data in this period")
    rep = Report(f"Compliance report {iso_in(scope.start, scope.tz)} to {iso_in(scope.end, scope.tz)} ({data_note})",
                 ["org", "feature", "model", "entitlement", "peak_or_assigned", "at", "cover_99_or_optimal",
                  "overuse_periods", "overuse_minutes_or_days", "denials", "true_denials", "dup_group"], rows,
                 ["concurrent features: peak = the highest estate concurrency; cover_99 = licenses enough in 99 % of "
                  "the minutes. user/device features: assigned = licenses under the vendor's rule on the last day, "
                  "optimal = the fewest that would cover the same 90 days.", CHARGED_NOTE])
    rep.parts.append(over)
    rep.parts.append(den)
    if pseudo is not None:
        for r in dorm.rows:
            if r[0] == "phantom":
                r[3] = pseudo.holder(r[3])
            elif r[0] == "releasable":
                r[3] = pseudo.device(r[3]) if r[4].startswith("device") else pseudo.user(r[3])
        for part in (den, *den.parts):
            k = part.columns.index("top_reasons")
            for r in part.rows:
                r[k] = "; ".join(reason_code(x) for x in str(r[k]).split("; ")) if r[k] else r[k]
    rep.parts.append(dorm)
    from lictel.vendor.evidence import vendor_evidence  # the vendor package builds on this module

    rep.parts.append(vendor_evidence(client, db, scope, pseudo))
    assign: list[list[Any]] = []
    for u in ud_rows:
        for rule, a in (("vendor_rule", u.vendor), ("optimal", u.cover)):
            if a is None:
                continue
            assign += [[u.org, u.feature, rule, "device", pseudo.device(x) if pseudo else x] for x in a.devices]
            assign += [[u.org, u.feature, rule, "user", pseudo.user(x) if pseudo else x] for x in a.users]
    rep.parts.append(Report(f"User/device licenses held on {last_day}", ["org", "feature", "rule", "license",
                                                                          "holder"], assign))
    daily = daily_peaks(client, db, scope)
    for (o, f), series in sorted(daily.items()):
        lines = {"daily peak": [(d, float(v)) for d, v in series]}
        ent_line = [(d, float(entitled_on(ents.get((o, f), []), d))) for d, _ in series]
        if any(v for _, v in ent_line):
            lines["entitlement"] = ent_line
        rep.charts[f"{o} {f}: daily peak"] = line_svg(f"{o} {f}: daily estate peak", lines)
    for name, svg in heatmap(client, db, scope).charts.items():
        rep.charts[f"{name}: hour of week"] = svg
    return rep


def to_html(rep: Report, generated: str, pseudonymized: bool) -> str:
    """A self-contained HTML page: the tables and the charts inline, no external resources."""
    def table(r: Report) -> str:
        head = "".join(f"<th>{_esc(c)}</th>" for c in r.columns)
        body = "".join("<tr>" + "".join(f"<td>{_esc('' if v is None else str(v))}</td>" for v in row) + "</tr>"
                       for row in r.rows) or f'<tr><td colspan="{len(r.columns)}">none</td></tr>'
        notes = "".join(f"<p class=note>{_esc(n)}</p>" for n in r.notes)
        return f"<h2>{_esc(r.title)}</h2><table><tr>{head}</tr>{body}</table>{notes}"

    charts = "".join(f"<figure>{svg}<figcaption>{_esc(name)}</figcaption></figure>"
                     for name, svg in rep.charts.items() if svg)
    privacy = "User and device names are pseudonymized (keyed SHA-256)." if pseudonymized else ""
    return ("<!DOCTYPE html><html><head><meta charset=utf-8><title>" + _esc(rep.title) + "</title><style>"
            "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0}"
            "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}th{background:#eef}"
            ".note{color:#555;font-size:12px}figure{display:inline-block;margin:1em}</style></head><body>"
            f"<h1>{_esc(rep.title)}</h1><p class=note>Measured by lictel from the organisation's own license "
            f"server logs; generated {_esc(generated)}. {privacy}</p>"
            + table(rep) + "".join(table(p) for p in rep.parts) + "<h2>Charts</h2>" + charts + "</body></html>")
