"""What a run prints: peaks per feature and server, estate minutes that miss a server, and the
sessions series against the license series."""

from __future__ import annotations

from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from lictel import rollups
from lictel.rollups import CHARGED_PEAK_AND_FIRST, PEAK_AND_FIRST, peak_and_first
from lictel.timeutil import US, iso_s


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
    cut = rollups.split(client, db, None, None)
    minutes, params = rollups.minute_condition(cut.minute_ranges)
    org_sql = ""
    if org:
        org_sql = "AND org = {org:String}"
        params["org"] = org
    keys = "source, level, org, feature, server"
    days = (f"SELECT {keys}, minutes AS n, first_minute AS a, last_minute AS b, peak_first AS pf, "
            f"charged_peak_first AS cpf, license_us AS lic, denials AS den, rules AS r FROM {db}.usage_daily FINAL "
            f"WHERE day < {{dhi:Date}} {org_sql} UNION ALL ") if cut.days else ""
    params["dhi"] = cut.day_hi
    result = client.query(
        f"SELECT level, org, feature, server, max(pf), sum(lic), sum(den), source, max(cpf), "
        f"arraySort(groupUniqArrayArray(r)), sum(n), toUnixTimestamp(min(a)), toUnixTimestamp(max(b)) FROM ("
        f"{days}SELECT {keys}, count() AS n, min(minute) AS a, max(minute) AS b, toUInt64({PEAK_AND_FIRST}) AS pf, "
        f"toUInt64({CHARGED_PEAK_AND_FIRST}) AS cpf, sum(license_us) AS lic, sum(denials) AS den, "
        f"groupUniqArray(dup_group) AS r FROM {db}.usage_minute FINAL "
        f"WHERE {minutes} {org_sql} GROUP BY {keys}) GROUP BY {keys} HAVING sum(n) > 0 "
        f"ORDER BY org, feature, source, level = 'pool', server", parameters=params).result_rows
    if not result:
        return PeakSummary("(empty)", [])
    start, end = min(int(r[11]) for r in result), max(int(r[12]) for r in result) + 60
    seconds = max(end - start, 60)
    rows = []
    for level, o, feature, server, encoded, lic_us, denials, source, charged, rules, *_ in result:
        peak, peak_at = peak_and_first(encoded)
        named = "+".join(rules)
        top = peak if named == "NONE" else peak_and_first(charged)[0]
        rows.append(PeakRow(o, feature, "(estate)" if level == "estate" else server, peak,
                            iso_s(peak_at), int(lic_us) / US / seconds,
                            int(lic_us) / US / 3600, int(denials), source, int(top), named))
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
