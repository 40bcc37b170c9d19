"""Readable reports over the stored minute usage. Every query is parameterised."""

from __future__ import annotations

from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from lictel.timeutil import US, iso_s

#: One aggregate giving a key's highest minute peak and the first minute that reached it: the peak in
#: the high 32 bits, the minute counted down in the low ones (so the earliest wins). Three times
#: faster than argMax over a (peak, -minute) tuple on a year of rows.
PEAK_AND_FIRST = "max(bitShiftLeft(toUInt64(peak), 32) + (4294967295 - toUnixTimestamp(minute)))"
#: The same over the licenses charged (DUP_GROUP): what reports that compare with entitlements use.
CHARGED_PEAK_AND_FIRST = PEAK_AND_FIRST.replace("(peak)", "(charged_peak)")
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


def peak_and_first(encoded: int) -> tuple[int, int]:
    """Decode :data:`PEAK_AND_FIRST`: (peak, first minute reaching it, in µs)."""
    return int(encoded) >> 32, (4294967295 - (int(encoded) & 0xFFFFFFFF)) * US


@dataclass(frozen=True)
class PeakRow:
    org: str
    feature: str
    server: str  # "(estate)" for the sum over servers (or broker sites)
    peak: int
    peak_at: str
    avg: float
    license_hours: float
    denials: int
    source: str = "license"
    charged_peak: int = 0
    dup_group: str = "NONE"


@dataclass(frozen=True)
class PeakSummary:
    period: str
    rows: list[PeakRow]


def peak_summary(client: Client, db: str, org: str | None = None) -> PeakSummary:
    """Per org and feature: the estate line, then one line per server.

    ``avg`` is time-weighted over the whole stored period (first to last stored minute), so a
    feature idle most of the week shows a low average next to its peak.
    """
    params: dict[str, object] = {}
    where = ""
    if org:
        where = "WHERE org = {org:String}"
        params["org"] = org
    bounds = client.query(
        f"SELECT toUnixTimestamp(min(minute)), toUnixTimestamp(max(minute)) + 60, count() "
        f"FROM {db}.usage_minute FINAL {where}", parameters=params).result_rows[0]
    if not bounds[2]:
        return PeakSummary("(empty)", [])
    start, end = int(bounds[0]), int(bounds[1])
    seconds = max(end - start, 60)
    result = client.query(
        f"SELECT level, org, feature, server, {PEAK_AND_FIRST}, "
        f"sum(license_us), sum(denials), source FROM {db}.usage_minute FINAL {where} "
        f"GROUP BY source, level, org, feature, server "
        f"ORDER BY org, feature, source, level = 'pool', server", parameters=params)
    charged = ruled(client, db, where.removeprefix("WHERE ") or "1", params, extra="max(charged_peak)")
    rows = []
    for level, o, feature, server, encoded, lic_us, denials, source in result.result_rows:
        peak, peak_at = peak_and_first(encoded)
        rules, top = charged.get((source, level, o, feature, server), ("NONE", peak))
        rows.append(PeakRow(o, feature, "(estate)" if level == "estate" else server, peak,
                            iso_s(peak_at), int(lic_us) / US / seconds,
                            int(lic_us) / US / 3600, int(denials), source, int(top), str(rules)))
    return PeakSummary(f"{iso_s(start * US)} to {iso_s(end * US)}", rows)


@dataclass(frozen=True)
class EstateGaps:
    minutes: int
    first: int  # µs
    end: int  # µs, exclusive


def estate_gaps(client: Client, db: str) -> EstateGaps | None:
    """Estate minutes that disagree with the sum of their pool minutes.

    Estate license-seconds and counters are exact sums over servers, so any difference means an
    estate minute became final without some server (one that was idle, or appeared later);
    ``lictel reconcile`` over the range recomputes them.
    """
    row = client.query(
        f"SELECT count(), toUnixTimestamp(min(minute)), toUnixTimestamp(max(minute)) FROM ("
        f"SELECT org, feature, minute, "
        f"sumIf(license_us, level = 'pool') AS pool_us, sumIf(license_us, level = 'estate') AS estate_us, "
        f"sumIf(checkouts + checkins + forced_releases + denials + queued + orphans, level = 'pool') AS pool_n, "
        f"sumIf(checkouts + checkins + forced_releases + denials + queued + orphans, level = 'estate') AS estate_n "
        f"FROM {db}.usage_minute FINAL GROUP BY org, feature, source, minute) "
        f"WHERE pool_us != estate_us OR pool_n != estate_n").result_rows[0]
    if not row[0]:
        return None
    return EstateGaps(int(row[0]), int(row[1]) * US, (int(row[2]) + 60) * US)


@dataclass(frozen=True)
class SeriesComparison:
    """One feature's two series, estate level, minute by minute over the minutes both cover."""

    org: str
    feature: str
    minutes: int  # minutes both series cover
    license_peak: int
    sessions_peak: int
    minutes_sessions_above: int  # minutes whose implied peak exceeds the logged peak
    max_excess: int  # largest (implied - logged) peak in one minute
    max_excess_at: int  # µs


def compare_series(client: Client, db: str, org: str | None = None) -> list[SeriesComparison]:
    """Per org and feature that has both: the license-server series against the session-implied one.

    Compared over the minutes from the later of the two first minutes to the earlier of the two
    last ones, a minute without a row counting as zero.
    """
    where, params = ("AND org = {org:String}", {"org": org}) if org else ("", {})
    result = client.query(
        f"WITH s AS (SELECT org, feature, source, minute, peak FROM {db}.usage_minute FINAL "
        f"WHERE level = 'estate' {where}), "
        f"b AS (SELECT org, feature, max(lo) AS lo, min(hi) AS hi FROM (SELECT org, feature, source, "
        f"min(minute) AS lo, max(minute) AS hi FROM s GROUP BY org, feature, source) GROUP BY org, feature "
        f"HAVING count() = 2) "
        f"SELECT org, feature, count() AS minutes, max(lic) AS lp, max(ses) AS sp, countIf(ses > lic), "
        f"max(toInt64(ses) - toInt64(lic)), toUnixTimestamp(argMax(minute, (toInt64(ses) - toInt64(lic), "
        f"-toUnixTimestamp(minute)))) "
        f"FROM (SELECT s.org AS org, s.feature AS feature, s.minute AS minute, "
        f"maxIf(s.peak, s.source = 'license') AS lic, maxIf(s.peak, s.source = 'sessions') AS ses "
        f"FROM s INNER JOIN b ON s.org = b.org AND s.feature = b.feature "
        f"WHERE s.minute >= b.lo AND s.minute <= b.hi GROUP BY org, feature, minute) "
        f"GROUP BY org, feature ORDER BY org, feature", parameters=params)
    return [SeriesComparison(o, f, int(n), int(lp), int(sp), int(above), int(excess), int(at) * US)
            for o, f, n, lp, sp, above, excess, at in result.result_rows]
