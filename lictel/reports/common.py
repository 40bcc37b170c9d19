"""What every report shares: the report, its scope, entitlements, and the DUP_GROUP rules a figure was
charged under (the aggregates that find a peak are in :mod:`lictel.rollups`, which keeps them per day)."""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.driver.client import Client

from lictel import rollups
from lictel.timeutil import MINUTE_US, US, date_us, us_date

OVERDRAFT_BAND = 0.10


DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True)
class LineChart:
    """Daily values, one line per named series (:func:`lictel.render.svg.svg` draws it)."""

    title: str
    series: dict[str, list[tuple[dt.date, float]]]


@dataclass(frozen=True)
class HourOfWeekChart:
    """(weekday, hour) -> (average, peak) licenses in use; weekday 0 is Monday."""

    title: str
    grid: dict[tuple[int, int], tuple[float, int]]


Chart = LineChart | HourOfWeekChart


@dataclass
class Report:
    title: str
    columns: list[str]
    rows: list[list[Any]]
    notes: list[str] = field(default_factory=list)
    charts: dict[str, Chart] = field(default_factory=dict)  # name -> chart data
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


def _from_days_and_minutes(client: Client, db: str, scope: Scope, level: str | None, day_cols: str,
                           minute_cols: str, outer: str, group: str = "") -> list[Any]:
    """Rows of ``outer`` (aggregates over the columns ``k0``.. of the inner rows, ``org, server,
    feature`` first) over the license series of ``scope``: whole days rolled up (``usage_daily``,
    ``day_cols``) and the other minutes (``usage_minute``, aggregates ``minute_cols`` grouped by key),
    as :func:`lictel.rollups.split` cuts the scope's range."""
    cut = rollups.split(client, db, scope.start, scope.end)
    where, params = Scope(scope.org, scope.feature).where()
    minutes, mparams = rollups.minute_condition(cut.minute_ranges)
    lvl = "AND level = {level:String}" if level else ""
    params |= mparams | {"level": level or "", "dlo": cut.day_lo, "dhi": cut.day_hi}
    days = (f"SELECT org, server, feature, {day_cols} FROM {db}.usage_daily FINAL WHERE source = 'license' {lvl} "
            f"AND {where} AND day >= {{dlo:Date}} AND day < {{dhi:Date}} UNION ALL ") if cut.days else ""
    sql = (f"SELECT {outer} FROM ({days}SELECT org, server, feature, {minute_cols} FROM {db}.usage_minute FINAL "
           f"WHERE source = 'license' {lvl} AND {where} AND {minutes} GROUP BY org, server, feature) {group}")
    return list(client.query(sql, parameters=params).result_rows)


_EXTENT_DAYS = "minutes AS k0, first_minute AS k1, last_minute AS k2"
_EXTENT_MINUTES = "count() AS k0, min(minute) AS k1, max(minute) AS k2"


def stored_range(client: Client, db: str, scope: Scope) -> tuple[int, int] | None:
    """[first minute, last minute + 1 min) of the license series in scope, clipped to the scope."""
    (n, a, b), = _from_days_and_minutes(client, db, scope, None, _EXTENT_DAYS, _EXTENT_MINUTES,
                                        "sum(k0), toUnixTimestamp(min(k1)), toUnixTimestamp(max(k2))")
    if not n:
        return None
    start = scope.start if scope.start is not None else int(a) * US
    end = scope.end if scope.end is not None else int(b) * US + MINUTE_US
    return start, end


#: For a query that groups ``usage_minute`` rows (without FINAL) by a prefix of its sort key after
#: ``level`` (``org, feature, server``): aggregate part by part in key order, ten times faster than
#: hashing 52 million rows (measured on the benchmark year: 0.12 s against 1.3 s). With FINAL it is
#: slower, so FINAL queries do without.
IN_ORDER = {"optimize_aggregation_in_order": 1}
#: The DUP_GROUP rule(s) a group of minute rows was charged under: one name, or several joined by '+'.
RULES_USED = "arrayStringConcat(arraySort(groupUniqArray(dup_group)), '+')"


def ruled(client: Client, db: str, where: str, params: dict[str, object],
          keys: tuple[str, ...] = ("source", "level", "org", "feature", "server"),
          extra: str = "") -> dict[tuple[str, ...], tuple[str, ...]]:
    """For each key (``keys`` of ``usage_minute``) that has minutes charged under a DUP_GROUP rule
    other than NONE inside ``where``: its rule(s) (:data:`RULES_USED`) and the ``extra`` aggregates.
    A key not returned was charged as NONE throughout, so its charged figures are its checkout
    figures. Finding the ruled keys reads only the rule column's dictionary, so reports pay for the
    second measure only where a rule is known."""
    cols = ", ".join(keys)
    found = client.query(f"SELECT DISTINCT {cols} FROM {db}.usage_minute WHERE dup_group != 'NONE' AND {where}",
                         parameters=params).result_rows
    if not found:
        return {}
    tuple_type = f"Array(Tuple({', '.join(['String'] * len(keys))}))"
    result = client.query(
        f"SELECT {cols}, {RULES_USED}{', ' + extra if extra else ''} FROM {db}.usage_minute FINAL "
        f"WHERE ({cols}) IN {{ruled:{tuple_type}}} AND {where} GROUP BY {cols}",
        parameters={**params, "ruled": [tuple(str(v) for v in r) for r in found]})
    n = len(keys)
    return {tuple(str(v) for v in r[:n]): tuple(r[n:]) for r in result.result_rows}


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


def entitlement_segments(items: list[Entitled], start: int, end: int) -> list[tuple[int, int, int]]:
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


def key_ranges(client: Client, db: str, scope: Scope,
               level: str = "estate") -> dict[tuple[str, str, str], tuple[int, int]]:
    """Per (org, server, feature) of ``level``: the scope's range clipped to [the feature's first
    stored minute, its last + 1 min). Shares of minutes (percentiles, means) are taken over this
    range: idle minutes between a feature's first and last data count (nothing was held), the part of a
    requested range before its data began or after it ended does not."""
    rows = _from_days_and_minutes(client, db, Scope(scope.org, scope.feature), level, _EXTENT_DAYS, _EXTENT_MINUTES,
                                  "org, server, feature, toUnixTimestamp(min(k1)), toUnixTimestamp(max(k2))",
                                  "GROUP BY org, server, feature")
    out = {}
    for o, s, f, a, b in rows:
        first = max(int(a) * US, scope.start if scope.start is not None else 0)
        last = min(int(b) * US + MINUTE_US, scope.end if scope.end is not None else 2**62)
        if last > first:
            out[(o, s, f)] = (first, last)
    return out


CHARGED_NOTE = ("use is counted in licenses charged: checkouts that the feature's DUP_GROUP rule (column "
                "dup_group) puts in one group share a license; NONE: every checkout is a license.")


def rules_used(client: Client, db: str, scope: Scope, level: str = "estate") -> dict[tuple[str, str, str], str]:
    """The DUP_GROUP rule(s) each (org, server, feature) of ``level`` was charged under in ``scope``
    (several joined by '+' when the rule changed inside it)."""
    rows = _from_days_and_minutes(client, db, scope, level, "rules AS k0", "groupUniqArray(dup_group) AS k0",
                                  "org, server, feature, arraySort(groupUniqArrayArray(k0))",
                                  "GROUP BY org, server, feature")
    return {(o, s, f): "+".join(rules) for o, s, f, rules in rows if list(rules) != ["NONE"]}


def charged_levels(client: Client, db: str, scope: Scope,
                   level: str) -> dict[tuple[str, str, str], list[tuple[int, int]]]:
    """Per (org, server, feature) of ``level`` in ``scope``: (charged peak, minutes with it), by peak;
    minutes without a row are not counted (:func:`with_idle` adds them)."""
    rows = _from_days_and_minutes(
        client, db, scope, level, "levels AS k0, level_minutes AS k1",
        "(sumMap([charged_peak], [toUInt64(1)]) AS lv).1 AS k0, lv.2 AS k1",
        "org, server, feature, sumMap(k0, k1)", "GROUP BY org, server, feature")
    return {(o, s, f): [(int(p), int(n)) for p, n in zip(*dist, strict=True) if n] for o, s, f, dist in rows}


def with_idle(levels: list[tuple[int, int]], total: int) -> list[tuple[int, int]]:
    """(peak, minutes) pairs, plus the minutes without a row (nothing out) at peak 0, sorted."""
    idle = total - sum(n for _, n in levels)
    return sorted([*([(0, idle)] if idle > 0 else []), *levels])


def cover(dist: list[tuple[int, int]], total: int, share: float) -> int:
    need = math.ceil(share * total - 1e-9)
    acc = 0
    for peak, n in dist:
        acc += n
        if acc >= need:
            return peak
    return dist[-1][0]


def sql_local_iso(col: str) -> str:
    """SQL for Unix seconds ``col`` as ISO-8601 local time of the query's ``{tz:String}`` with its
    offset (``Z`` for UTC), formatted in ClickHouse (reports may be export-sized)."""
    local = f"formatDateTime(toDateTime({col}, {{tz:String}}), '%Y-%m-%dT%H:%i:%S%z', {{tz:String}})"
    return (f"if({{tz:String}} = 'UTC', formatDateTime(toDateTime({col}, 'UTC'), '%Y-%m-%dT%H:%i:%SZ', 'UTC'), "
            f"concat(substring({local}, 1, 22), ':', substring({local}, 23, 2)))")
