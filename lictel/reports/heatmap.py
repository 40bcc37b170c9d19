"""Average and peak concurrency by hour of week."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Any

from clickhouse_connect.driver.client import Client

from lictel.reports.common import DAYS, HourOfWeekChart, Report, Scope, stored_range
from lictel.timeutil import MINUTE_US, US, from_us, iso_in, zone


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
        rep.charts[f"{o}-{f}"] = HourOfWeekChart(
            f"{o} {f}: average licenses in use by hour of week ({scope.tz})", grid)
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


