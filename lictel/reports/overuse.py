"""Periods where use exceeds the entitlement."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from clickhouse_connect.driver.client import Client

from lictel import rollups
from lictel.reports.common import (
    CHARGED_NOTE,
    OVERDRAFT_BAND,
    Entitled,
    Report,
    Scope,
    entitled_on,
    entitlement_segments,
    entitlements,
    sql_local_iso,
    stored_range,
)
from lictel.timeutil import DAY_US, date_us, us_date
from lictel.ud import UD, license_model, ud_report


def overuse(client: Client, db: str, scope: Scope, models: dict[str, str], limit: int | None = None) -> Report:
    """Periods where use exceeds the entitlement: concurrent features minute by minute (estate
    peak), user/device features day by day (licenses assigned under the vendor's rule), in order of
    org, feature and start. With ``limit``, the first ``limit`` periods only: the features after
    them are not computed (a year of a busy estate can hold 100,000 periods)."""
    ents = entitlements(client, db, scope.org)
    rows: list[list[Any]] = []
    rng = stored_range(client, db, scope)
    for (o, f), items in sorted(ents.items()):
        if limit is not None and len(rows) >= limit:
            break
        if scope.feature and f != scope.feature:
            continue
        if license_model(f, models) == UD:
            rows.extend(_ud_overuse(client, db, o, f, items, models, scope))
            continue
        if rng is None:
            continue
        for a, b, n in entitlement_segments(items, *rng):
            left = None if limit is None else limit - len(rows)
            for first, end, minutes, top, in_band in _periods_above(client, db, o, f, a, b, n, scope.tz, left):
                rows.append(_period_row(o, f, "concurrent", first, end, minutes, top, n, in_band))
    # Generated in order of (org, feature) and, within a feature, of time (which the ISO text of a
    # zone with summer time would not sort right).
    if limit is not None:
        del rows[limit:]
    return Report("Overuse: use above the entitlement",
                  ["org", "feature", "model", "start", "end", "duration", "max_use", "entitlement", "max_excess",
                   "in_overdraft_band", "above_band", "kind"], rows,
                  ["duration, in_overdraft_band and above_band count minutes (concurrent) or days (user/device); "
                   f"the overdraft band is up to {OVERDRAFT_BAND:.0%} above the entitlement; kind is overdraft when "
                   "the whole period stays inside it.", CHARGED_NOTE])


def _periods_above(client: Client, db: str, org: str, feature: str, start: int, end: int, n: int,
                   tz: str, limit: int | None = None) -> list[tuple[str, str, int, int, int]]:
    """The runs of consecutive estate minutes in ``[start, end)`` with more than ``n`` licenses charged:
    (start and end, ISO-8601 in ``tz``; minutes, highest use, minutes inside the overdraft band), in
    time order. Runs are found and formatted in ClickHouse (a year can hold 100,000 of them): a
    minute minus 60 s times its rank is constant along a run. Only the days whose rolled-up peak is
    above ``n`` are read minute by minute (lictel.rollups). ``limit``: the first periods only."""
    if limit is not None and limit <= 0:
        return []
    cut = rollups.split(client, db, start, end)
    days = []
    if cut.days:
        days = [d for (d,) in client.query(
            f"SELECT DISTINCT day FROM {db}.usage_daily FINAL WHERE level = 'estate' AND source = 'license' "
            f"AND org = {{org:String}} AND feature = {{feature:String}} AND day >= {{lo:Date}} AND day < {{hi:Date}} "
            f"AND bitShiftRight(charged_peak_first, 32) > {{n:UInt32}}",
            parameters={"org": org, "feature": feature, "lo": cut.day_lo, "hi": cut.day_hi, "n": n}).result_rows]
    if not cut.minute_ranges and not days:
        return []
    minutes, params = rollups.minute_condition(cut.minute_ranges)
    params |= {"days": days, "org": org, "feature": feature, "n": n, "band": n * (1 + OVERDRAFT_BAND), "tz": tz}
    result = client.query(
        f"SELECT {sql_local_iso('min(m)')}, {sql_local_iso('max(m) + 60')}, count(), max(p), "
        f"countIf(p <= {{band:Float64}}) FROM ("
        f"SELECT toInt64(toUnixTimestamp(minute)) AS m, charged_peak AS p, "
        f"m - 60 * toInt64(row_number() OVER (ORDER BY minute)) AS run FROM {db}.usage_minute FINAL "
        f"WHERE level = 'estate' AND source = 'license' AND org = {{org:String}} AND feature = {{feature:String}} "
        f"AND charged_peak > {{n:UInt32}} AND ({minutes} OR toDate(minute) IN {{days:Array(Date)}})) "
        f"GROUP BY run ORDER BY run{'' if limit is None else ' LIMIT {limit:UInt64}'}",
        parameters=params if limit is None else params | {"limit": limit})
    return [(a, b, int(k), int(top), int(inside)) for a, b, k, top, inside in result.result_rows]


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
    band = OVERDRAFT_BAND
    return [_period_row(org, feature, "user/device", us_date(run[0][0]).isoformat(),
                        us_date(run[-1][0] + DAY_US).isoformat(), len(run), max(v for _, v, _ in run), run[0][2],
                        sum(1 for _, v, n in run if v <= n * (1 + band))) for run in _runs(over, DAY_US)]


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


def _period_row(org: str, feature: str, model: str, start: str, end: str, length: int, top: int, ent: int,
                in_band: int) -> list[Any]:
    """One overuse period: ``length`` minutes or days from ``start`` to ``end``, the highest use, the
    entitlement, and how many steps stayed inside the overdraft band."""
    band = ent * (1 + OVERDRAFT_BAND)
    return [org, feature, model, start, end, length, top, ent, top - ent, in_band, length - in_band,
            "overdraft" if top <= band else "overuse"]
