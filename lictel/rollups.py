"""Day rollups of the minute rows (``usage_daily``), and where they can stand in for them.

A year of minute rows is 50 million rows; a question over the whole history (the peaks of every
feature, the licenses that cover 99 % of the minutes, the minutes above the entitlement) reads
them all. ``usage_daily`` keeps, per key and UTC day, what those questions aggregate: the number
of minutes, the first and last, the peak with the first minute reaching it (both measures), the
license-seconds, the denials, the rules charged under, and how many minutes had each charged peak.
Each day is computed from ``usage_minute FINAL``, so it says what the minute rows say.

The **watermark** (table ``rollup_watermark``) is the day before which every day's rollup is
written. The sink advances it when every partition is final past a day's end (a final minute is
not written again, except by a restarted worker with the same figures or by reconcile) and
recomputes any day below it that still receives rows; ``lictel reconcile`` recomputes the days it
rewrites. A query takes whole days below the watermark from here and everything else (days at or
after it, and the partial days at the edges of its range) from the minute rows: :func:`split`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from lictel.timeutil import DAY_US, US

#: One aggregate giving a key's highest minute peak and the first minute that reached it: the peak in
#: the high 32 bits, the minute counted down in the low ones (so the earliest wins). Three times
#: faster than argMax over a (peak, -minute) tuple on a year of rows.
PEAK_AND_FIRST = "max(bitShiftLeft(toUInt64(peak), 32) + (4294967295 - toUnixTimestamp(minute)))"
#: The same over the licenses charged (DUP_GROUP): what reports that compare with entitlements use.
CHARGED_PEAK_AND_FIRST = PEAK_AND_FIRST.replace("(peak)", "(charged_peak)")

NAME = "usage_daily"
_EPOCH = dt.date(1970, 1, 1)

def _recompute_sql(db: str, days: str) -> str:
    """One day's rollup of each key, from the minute rows in ``{lo}``..``{hi}`` (Unix seconds) and the
    condition ``days``."""
    return (f"INSERT INTO {db}.usage_daily SELECT level, org, feature, server, source, toDate(minute) AS day, "
            f"count(), min(minute), max(minute), {PEAK_AND_FIRST}, {CHARGED_PEAK_AND_FIRST}, sum(license_us), "
            f"sum(charged_license_us), sum(denials), arraySort(groupUniqArray(dup_group)), "
            f"(sumMap([charged_peak], [toUInt64(1)]) AS lv).1, lv.2, max(version) FROM {db}.usage_minute FINAL "
            f"WHERE minute >= toDateTime({{lo:Int64}}, 'UTC') AND minute < toDateTime({{hi:Int64}}, 'UTC') {days} "
            f"GROUP BY level, org, feature, server, source, day")


def peak_and_first(encoded: int) -> tuple[int, int]:
    """Decode :data:`PEAK_AND_FIRST`: (peak, first minute reaching it, in µs)."""
    return int(encoded) >> 32, (4294967295 - (int(encoded) & 0xFFFFFFFF)) * US


def day_of(us: int) -> dt.date:
    return _EPOCH + dt.timedelta(days=us // DAY_US)


def day_us(day: dt.date) -> int:
    return (day - _EPOCH).days * DAY_US


def days_from(first: dt.date, end: dt.date) -> list[dt.date]:
    """The days ``first`` .. ``end`` - 1."""
    return [first + dt.timedelta(days=k) for k in range((end - first).days)]


def watermark(client: Client, db: str) -> dt.date | None:
    """The first day whose rollup may be missing or stale (every day before it is rolled up)."""
    rows = client.query(f"SELECT upto FROM {db}.rollup_watermark FINAL WHERE name = {{n:String}}",
                        parameters={"n": NAME}).result_rows
    return rows[0][0] if rows else None


def recompute(client: Client, db: str, days: Iterable[dt.date], replace: bool = False) -> int:
    """Write the rollups of ``days`` afresh from the minute rows; return how many days. With
    ``replace``, the days' rollups are deleted first: a key whose minute rows of a day were deleted
    (reconcile) has none that day any more."""
    wanted = sorted(set(days))
    if not wanted:
        return 0
    lo, hi = day_us(wanted[0]) // US, day_us(wanted[-1] + dt.timedelta(days=1)) // US
    contiguous = (wanted[-1] - wanted[0]).days + 1 == len(wanted)
    cond = "" if contiguous else "AND toDate(minute) IN {days:Array(Date)}"
    params: dict[str, object] = {"lo": lo, "hi": hi}
    if not contiguous:
        params["days"] = wanted
    if replace:
        client.command(f"DELETE FROM {db}.usage_daily WHERE day IN {{days:Array(Date)}}", parameters={"days": wanted})
    client.command(_recompute_sql(db, cond), parameters=params)
    return len(wanted)


def advance(client: Client, db: str, final_us: int, touched: Iterable[dt.date] = ()) -> dt.date | None:
    """Every minute before ``final_us`` is final: roll up the whole days newly before it, and again
    the days in ``touched`` (days that received rows) that were rolled up already; move the
    watermark. Returns the new watermark."""
    upto = day_of(final_us)
    mark = watermark(client, db)
    again = [d for d in touched if mark is not None and d < mark]
    if again:
        recompute(client, db, again)
    if mark is not None and upto <= mark:
        return mark
    start = mark
    if start is None:
        (first, n), = client.query(f"SELECT toUnixTimestamp(min(minute)), count() FROM {db}.usage_minute "
                                   f"WHERE minute < toDateTime({{hi:Int64}}, 'UTC')",
                                   parameters={"hi": day_us(upto) // US}).result_rows
        start = day_of(int(first) * US) if n else upto
    if start < upto:
        recompute(client, db, days_from(start, upto))
    client.insert(f"{db}.rollup_watermark", [[NAME, upto, dt.datetime.now(dt.UTC)]],
                  column_names=["name", "upto", "updated_at"])
    return upto


@dataclass(frozen=True)
class Split:
    """A time range ``[start, end)`` (µs) cut where the day rollups can stand in: whole UTC days
    ``[day_lo, day_hi)`` come from ``usage_daily``; the minutes in ``minute_ranges`` from
    ``usage_minute``. Without rollups for the range, ``day_lo == day_hi`` and the whole range is
    one minute range."""

    day_lo: dt.date
    day_hi: dt.date
    minute_ranges: tuple[tuple[int | None, int | None], ...]

    @property
    def days(self) -> bool:
        return self.day_hi > self.day_lo


def split(client: Client, db: str, start: int | None, end: int | None) -> Split:
    """Cut ``[start, end)`` (µs; ``None``: open) into rolled-up days and minute ranges."""
    mark = watermark(client, db)
    if mark is None:
        return Split(_EPOCH, _EPOCH, ((start, end),))
    lo = _EPOCH if start is None else day_of(start + DAY_US - 1)  # the first whole day
    hi = mark if end is None else min(mark, day_of(end))  # whole days end before ``end``
    if hi <= lo:
        return Split(_EPOCH, _EPOCH, ((start, end),))
    ranges: list[tuple[int | None, int | None]] = []
    if start is not None and start < day_us(lo):
        ranges.append((start, day_us(lo)))
    if end is None or day_us(hi) < end:
        ranges.append((day_us(hi), end))
    return Split(lo, hi, tuple(ranges))


def minute_condition(ranges: Iterable[tuple[int | None, int | None]], col: str = "minute",
                     prefix: str = "r") -> tuple[str, dict[str, object]]:
    """A parameterised SQL condition: ``col`` inside any of ``ranges`` (µs, half-open)."""
    parts: list[str] = []
    params: dict[str, object] = {}
    for k, (a, b) in enumerate(ranges):
        cond = []
        if a is not None:
            cond.append(f"{col} >= toDateTime({{{prefix}{k}a:Int64}}, 'UTC')")
            params[f"{prefix}{k}a"] = a // US
        if b is not None:
            cond.append(f"{col} < toDateTime({{{prefix}{k}b:Int64}}, 'UTC')")
            params[f"{prefix}{k}b"] = b // US
        parts.append("(" + (" AND ".join(cond) or "1") + ")")
    return ("(" + " OR ".join(parts) + ")") if parts else "0", params


def last_minutes(client: Client, db: str, org: str | None = None, servers: Iterable[str] | None = None,
                 source: str | None = "license") -> dict[str, int]:
    """The start (Unix seconds) of each server's newest stored pool minute, of ``source`` (``None``:
    any), optionally of one organisation and some servers: whole days below the watermark from the
    day rollups, the minutes after it from ``usage_minute`` (no scan of the whole history)."""
    mark = watermark(client, db)
    cond, params = "level = 'pool'", {"mark": mark or day_of(0), "since": day_us(mark) // US if mark else 0}
    if source is not None:
        cond += " AND source = {source:String}"
        params["source"] = source
    if org is not None:
        cond += " AND org = {org:String}"
        params["org"] = org
    if servers is not None:
        cond += " AND server IN {servers:Array(String)}"
        params["servers"] = sorted(set(servers))
    return {str(s): int(m) for s, m in client.query(
        f"SELECT server, toInt64(toUnixTimestamp(max(m))) FROM (SELECT server, last_minute AS m FROM {db}.usage_daily "
        f"WHERE {cond} AND day < {{mark:Date}} UNION ALL SELECT server, minute AS m FROM {db}.usage_minute "
        f"WHERE {cond} AND minute >= toDateTime({{since:Int64}}, 'UTC')) GROUP BY server ORDER BY server",
        parameters=params).result_rows}
