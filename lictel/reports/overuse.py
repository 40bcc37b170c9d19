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
    stored_range,
)
from lictel.timeutil import DAY_US, MINUTE_US, US, date_us, iso_in, us_date
from lictel.ud import UD, license_model, ud_report


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
        for a, b, n in entitlement_segments(items, *rng):
            minutes = _minutes_above(client, db, o, f, a, b, n)
            for run in _runs([(int(m) * US, int(p), n) for m, p in minutes], MINUTE_US):
                rows.append(_overuse_row(o, f, "concurrent", run, MINUTE_US, scope.tz))
    rows.sort(key=lambda r: (r[0], r[1], r[3]))
    return Report("Overuse: use above the entitlement",
                  ["org", "feature", "model", "start", "end", "duration", "max_use", "entitlement", "max_excess",
                   "in_overdraft_band", "above_band", "kind"], rows,
                  ["duration, in_overdraft_band and above_band count minutes (concurrent) or days (user/device); "
                   f"the overdraft band is up to {OVERDRAFT_BAND:.0%} above the entitlement; kind is overdraft when "
                   "the whole period stays inside it.", CHARGED_NOTE])


def _minutes_above(client: Client, db: str, org: str, feature: str, start: int, end: int,
                   n: int) -> list[tuple[int, int]]:
    """(minute, licenses charged) of the estate minutes in ``[start, end)`` above ``n``: only the days
    whose rolled-up peak is above ``n`` are read minute by minute (lictel.rollups)."""
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
    minutes = f"({minutes} OR toDate(minute) IN {{days:Array(Date)}})"
    params["days"] = days
    return [(int(m), int(p)) for m, p in client.query(
        f"SELECT toUnixTimestamp(minute), charged_peak FROM {db}.usage_minute FINAL WHERE level = 'estate' "
        f"AND source = 'license' AND org = {{org:String}} AND feature = {{feature:String}} "
        f"AND charged_peak > {{n:UInt32}} AND {minutes} ORDER BY minute",
        parameters={**params, "org": org, "feature": feature, "n": n}).result_rows]


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


