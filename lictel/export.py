"""Minute usage out of ClickHouse: exports and rollups (DESIGN.md, hour/day/month rollups).

Rollups are computed from the final minute rows: peak = max of minute peaks; low = min of minute
lows, or 0 when some minute of the period has no row (no row means nothing was held);
license_seconds = sum; avg = license_seconds / seconds in the period. Every query is
parameterised; only validated identifiers (database, level, granularity) are formatted in.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from clickhouse_connect.driver.client import Client

from lictel.engine import MinuteRow
from lictel.errors import ConfigError
from lictel.events import SOURCES
from lictel.timeutil import US, iso_in, zone

COLUMNS = ["org", "server", "feature", "minute", "peak", "low", "avg", "license_seconds", "checkouts",
           "checkins", "forced_releases", "denials", "queued", "orphans"]
LEVELS = ("pool", "estate")
#: The two measures of the same usage (DESIGN.md): the columns that hold peak, low and license-µs.
MEASURES = {"checkouts": ("peak", "low", "license_us"),
            "charged": ("charged_peak", "charged_low", "charged_license_us")}
# Periods are taken in the zone {tz:String} (UTC unless a report or export says otherwise): a day
# is a local day, 23 or 25 hours long when the clocks change, so its seconds are counted, not assumed.
_PERIOD = {
    "minute": "minute",
    "hour": "toStartOfHour(minute, {tz:String})",
    "day": "toStartOfDay(minute, {tz:String})",
    "week": "toDateTime(toMonday(minute, {tz:String}), {tz:String})",
    "month": "toDateTime(toStartOfMonth(minute, {tz:String}), {tz:String})",
}
_SECONDS = {
    "minute": "60",
    "hour": "3600",
    "day": "dateDiff('second', p, p + INTERVAL 1 DAY)",
    "week": "dateDiff('second', p, p + INTERVAL 1 WEEK)",
    "month": "dateDiff('second', p, p + INTERVAL 1 MONTH)",
}
_SIX = Decimal("0.000001")


def usage_rows(client: Client, db: str, level: str, granularity: str,
               org: str | None = None, feature: str | None = None,
               start_s: int | None = None, end_s: int | None = None,
               source: str = "license", measure: str = "checkouts", tz: str = "UTC",
               server: str | None = None) -> list[dict[str, Any]]:
    """Rows of ``level`` at ``granularity`` (periods of zone ``tz``, printed in its local time) of one
    series (``license``: what license servers logged;
    ``sessions``: what session exports imply, ``server`` being the broker site), sorted by org,
    server, feature, period. ``measure``: ``checkouts`` or ``charged`` (licenses charged under the
    DUP_GROUP rules) for peak, low, avg and license_seconds; the event counters are the same.
    ``server`` keeps one server's rows (pool level)."""
    sql, params = rollup_query(db, level, granularity, org, feature, start_s, end_s, source, measure, tz, server)
    result = client.query(f"{sql} ORDER BY org, server, feature, start", parameters=params)
    return [export_row(o, server, feat, int(p) * US, int(peak), int(low), int(lic_us), int(secs),
                       int(co), int(ci), int(fr), int(de), int(qu), int(orph), tz)
            for (o, server, feat, p, peak, low, lic_us, secs, co, ci, fr, de, qu, orph) in result.result_rows]


def bounds_s(start_us: int | None, end_us: int | None) -> tuple[int | None, int | None]:
    """``[start, end)`` in µs as the whole seconds :func:`usage_rows` takes (the end rounded up)."""
    return (None if start_us is None else start_us // US, None if end_us is None else -(-end_us // US))


def rollup_query(db: str, level: str, granularity: str, org: str | None = None, feature: str | None = None,
                 start_s: int | None = None, end_s: int | None = None,
                 source: str = "license", measure: str = "checkouts",
                 tz: str = "UTC", server: str | None = None) -> tuple[str, dict[str, Any]]:
    """The one rollup of minute rows (the rules in this module's docstring), unsorted, with its
    parameters. Columns: org, server, feature, start (period start, Unix seconds), top (peak), bottom
    (low), lic (license-µs), secs (seconds in the period), checkouts .. orphans; top, bottom and
    lic in ``measure``."""
    if measure not in MEASURES:
        raise ConfigError(f"--measure must be one of {', '.join(MEASURES)}, not {measure!r}")
    peak, low, lic = MEASURES[measure]
    if level not in LEVELS:
        raise ConfigError(f"--level must be one of {', '.join(LEVELS)}, not {level!r}")
    if granularity not in _PERIOD:
        raise ConfigError(f"--granularity must be one of {', '.join(_PERIOD)}, not {granularity!r}")
    if source not in SOURCES:
        raise ConfigError(f"--source must be one of {', '.join(SOURCES)}, not {source!r}")
    try:
        zone(tz)
    except ValueError as exc:
        raise ConfigError(f"--tz: {exc}") from None
    where = ["level = {level:String}", "source = {source:String}"]
    params: dict[str, Any] = {"level": level, "source": source, "tz": tz}
    if org:
        where.append("org = {org:String}")
        params["org"] = org
    if feature:
        where.append("feature = {feature:String}")
        params["feature"] = feature
    if server:
        where.append("server = {server:String}")
        params["server"] = server
    if start_s is not None:
        where.append("minute >= toDateTime({start:Int64}, 'UTC')")
        params["start"] = start_s
    if end_s is not None:
        where.append("minute < toDateTime({end:Int64}, 'UTC')")
        params["end"] = end_s
    inner = f"SELECT * FROM {db}.usage_minute FINAL WHERE {' AND '.join(where)}"
    if granularity == "minute":
        return (f"SELECT org, server, feature, toUnixTimestamp(minute) AS start, {peak} AS top, {low} AS bottom, "
                f"{lic} AS lic, 60 AS secs, checkouts, checkins, forced_releases, denials, queued, orphans "
                f"FROM ({inner})"), params
    period = _PERIOD[granularity]
    seconds = _SECONDS[granularity]
    return (f"SELECT org, server, feature, toUnixTimestamp(p) AS start, max({peak}) AS top, "
            f"if(count() < intDiv({seconds}, 60), 0, min({low})) AS bottom, sum({lic}) AS lic, {seconds} AS secs, "
            f"sum(checkouts), sum(checkins), sum(forced_releases), sum(denials), sum(queued), "
            f"sum(orphans) FROM (SELECT *, {period} AS p FROM ({inner})) "
            f"GROUP BY org, server, feature, p"), params


def export_row(org: str, server: str, feature: str, period_us: int, peak: int, low: int, license_us: int,
               seconds: int, checkouts: int, checkins: int, forced_releases: int, denials: int, queued: int,
               orphans: int, tz: str = "UTC") -> dict[str, Any]:
    """One export row; ``avg`` and ``license_seconds`` exact to six decimals; the period's start in the
    local time of ``tz``."""
    return {
        "org": org, "server": server, "feature": feature, "minute": iso_in(period_us, tz),
        "peak": peak, "low": low,
        "avg": fixed6(Decimal(license_us) / (Decimal(seconds) * US)),
        "license_seconds": fixed6(Decimal(license_us) / US),
        "checkouts": checkouts, "checkins": checkins, "forced_releases": forced_releases,
        "denials": denials, "queued": queued, "orphans": orphans,
    }


def minute_row(r: MinuteRow, measure: str = "checkouts") -> dict[str, Any]:
    """The export form of an engine row, in ``measure``."""
    peak, low, lic = (r.charged_peak, r.charged_low, r.charged_license_us) if measure == "charged" else (
        r.peak, r.low, r.license_us)
    return export_row(r.org, r.server, r.feature, r.minute, peak, low, lic, 60, r.checkouts,
                      r.checkins, r.forced_releases, r.denials, r.queued, r.orphans)


def fixed6(value: Decimal) -> str:
    """A number with exactly six decimals (half-even), as the export columns require."""
    return str(value.quantize(_SIX, rounding=ROUND_HALF_EVEN))


def to_csv(rows: Iterable[dict[str, Any]], columns: Sequence[str] = COLUMNS) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([r[c] for c in columns])
    return buf.getvalue()


def json_row(r: dict[str, Any]) -> dict[str, Any]:
    """An export row as JSON takes it: ``avg`` and ``license_seconds`` as numbers."""
    return {k: (float(v) if k in ("avg", "license_seconds") else v) for k, v in r.items()}


def to_json(rows: Iterable[dict[str, Any]]) -> str:
    return json.dumps([json_row(r) for r in rows], indent=None, ensure_ascii=False) + "\n"
