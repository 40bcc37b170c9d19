"""Day rollups (lictel.rollups) stand in for the minute rows without changing any answer, on real chDB.

Every report that reads them is computed twice over the same random minute rows: with the
rollups (whole days below the watermark from usage_daily) and without (the watermark removed, so
every minute is read), and the two must be equal; also after a reconcile-style rewrite of a day,
and in a site zone whose days are not UTC days.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest

from lictel import rollups
from lictel.config import Settings
from lictel.engine import MinuteRow
from lictel.entitlements import parse_contract_csv, store
from lictel.reports.common import Scope, key_ranges, rules_used, stored_range
from lictel.reports.dormant import dormant
from lictel.reports.overuse import overuse
from lictel.reports.sizing import sizing
from lictel.reports.summary import peak_summary
from lictel.timeutil import DAY_US, MINUTE_US, iso_s, parse_ts
from lictel.vendor.view import vendor_view
from lictel.warehouse import connect
from sinks.clickhouse import write_minute_rows

pytestmark = pytest.mark.integration
DB = "lictel"
SIM = ("acme", "other")  # the simulated organisation, and one that is not stored
START = parse_ts("2026-03-01T20:00:00Z")  # five days and a bit, starting late in a day


def _rows(rnd: random.Random, version_minutes: range | None = None) -> list[MinuteRow]:
    rows = []
    for org in ("acme", "beta"):
        for feature, rule in (("F", "NONE"), ("G", "UH")):
            for k in range(5 * 1440 + 300):
                if rnd.random() < 0.4 or (version_minutes is not None and k not in version_minutes):
                    continue
                t = START + k * MINUTE_US
                total = charged_total = lic = 0
                for server in ("lic01", "lic02"):
                    peak = rnd.randrange(0, 9)
                    charged = peak if rule == "NONE" else rnd.randrange(0, peak + 1)
                    total, charged_total, lic = total + peak, charged_total + charged, lic + peak * 40_000_000
                    rows.append(_row("pool", org, server, feature, t, peak, charged, rule, rnd))
                rows.append(_row("estate", org, "", feature, t, total, charged_total, rule, rnd))
    return rows


def _row(level: str, org: str, server: str, feature: str, t: int, peak: int, charged: int, rule: str,
         rnd: random.Random) -> MinuteRow:
    return MinuteRow(level, org, server, feature, t, peak, max(peak - 2, 0), peak * 45_000_000, rnd.randrange(3), 0, 0,
                     rnd.randrange(2), 0, 0, charged_peak=charged, charged_low=max(charged - 2, 0),
                     charged_license_us=charged * 45_000_000, dup_group=rule)


def _answers(client: Any, orgs: tuple[str, str] = ("acme", "beta")) -> list[Any]:
    one, other = orgs
    local = Scope(one, None, parse_ts("2026-03-02T05:00:00Z"), parse_ts("2026-03-05T05:00:00Z"),
                  "America/New_York")
    out: list[Any] = [peak_summary(client, DB), peak_summary(client, DB, other)]
    for scope in (Scope(), Scope(one, "G"), local, Scope(other, None, START + 7 * 3_600_000_000, None)):
        out += [stored_range(client, DB, scope), key_ranges(client, DB, scope, "estate"),
                key_ranges(client, DB, scope, "pool"), rules_used(client, DB, scope, "pool"),
                sizing(client, DB, scope).rows, [p.rows for p in sizing(client, DB, scope, "pool").parts],
                overuse(client, DB, scope, {}).rows, dormant(client, DB, scope, {}, ratio=0.9).rows]
    # The vendor view's peaks per server, feature and day (UTC days: the rollups stand in).
    out.append([(r.org, r.server, r.feature, r.day, r.count_used_max, r.checkouts_max, r.dup_group)
                for r in vendor_view(client, DB, {})])
    return out


def _overuse_by_hand(rows: list[MinuteRow], entitled: dict[tuple[str, str], int]) -> list[list[Any]]:
    """Runs of consecutive estate minutes above the entitlement, from the rows in Python."""
    out = []
    for (org, feature), n in sorted(entitled.items()):
        above = sorted((r.minute, r.charged_peak) for r in rows
                       if r.level == "estate" and (r.org, r.feature) == (org, feature) and r.charged_peak > n)
        runs: list[list[tuple[int, int]]] = []
        for m, p in above:
            if runs and m == runs[-1][-1][0] + MINUTE_US:
                runs[-1].append((m, p))
            else:
                runs.append([(m, p)])
        for run in runs:
            top, inside = max(p for _, p in run), sum(1 for _, p in run if p <= n * 1.1)
            out.append([org, feature, "concurrent", iso_s(run[0][0]), iso_s(run[-1][0] + MINUTE_US), len(run), top,
                        n, top - n, inside, len(run) - inside, "overdraft" if top <= n * 1.1 else "overuse"])
    return sorted(out, key=lambda r: (r[0], r[1], r[3]))


def _without_rollups(client: Any, orgs: tuple[str, str] = ("acme", "beta")) -> list[Any]:
    mark = rollups.watermark(client, DB)
    client.command(f"TRUNCATE TABLE {DB}.rollup_watermark")
    try:
        assert rollups.watermark(client, DB) is None
        return _answers(client, orgs)
    finally:
        if mark is not None:
            client.insert(f"{DB}.rollup_watermark", [[rollups.NAME, mark, dt.datetime.now(dt.UTC)]],
                          column_names=["name", "upto", "updated_at"])


def test_rolled_up_days_give_the_answers_of_the_minutes(warehouse: tuple[Settings, Any]) -> None:
    _, client = warehouse
    rnd = random.Random(11)
    rows = _rows(rnd)
    write_minute_rows(client, DB, rows, version=1)
    store(client, DB, parse_contract_csv("feature,count,start,expiry,vendor,note\nF,12,2026-01-01,,V,\n"
                                         "G,7,2026-01-01,,V,\n", org="acme", source="c.csv"))
    store(client, DB, parse_contract_csv("feature,count,start,expiry,vendor,note\nF,13,2026-01-01,,V,\n",
                                         org="beta", source="c.csv"))
    reference = _without_rollups(client)
    assert reference[0].rows and any(reference[6 + 8 * k] for k in range(4)), "the data must have overuse"
    assert reference[8] == _overuse_by_hand(rows, {("acme", "F"): 12, ("acme", "G"): 7, ("beta", "F"): 13})
    # Final up to 2026-03-05 10:00: the days 03-01 .. 03-04 are rolled up, the rest read by minute.
    mark = rollups.advance(client, DB, parse_ts("2026-03-05T10:00:00Z"))
    assert mark == dt.date(2026, 3, 5)
    (days,), = client.query(f"SELECT uniqExact(day) FROM {DB}.usage_daily FINAL").result_rows
    assert days == 4
    assert _answers(client) == reference
    # A page of overuse (the API's limit) is the start of the whole answer, across features and orgs.
    periods = reference[8]
    first_feature = sum(1 for r in periods if r[:2] == periods[0][:2])
    for k in sorted({1, first_feature, first_feature + 1, len(periods) - 1, len(periods), len(periods) + 5}):
        assert overuse(client, DB, Scope(), {}, k).rows == periods[:k], k
    # A rewrite of 03-03 (reconcile: new version, fewer rows, other figures, and nothing left of beta's
    # keys that day), then its rollup again.
    lo, hi = parse_ts("2026-03-03T00:00:00Z"), parse_ts("2026-03-04T00:00:00Z")
    client.command(f"DELETE FROM {DB}.usage_minute WHERE minute >= toDateTime({{a:Int64}}) AND minute < "
                   f"toDateTime({{b:Int64}})", parameters={"a": lo // 1_000_000, "b": hi // 1_000_000})
    first = (lo - START) // MINUTE_US
    rewritten = [r for r in _rows(random.Random(12), range(first, first + 600)) if r.org == "acme"]
    write_minute_rows(client, DB, rewritten, version=5)
    rollups.recompute(client, DB, [dt.date(2026, 3, 3)], replace=True)
    reference = _without_rollups(client)
    assert _answers(client) == reference
    # Rows arriving for a rolled-up day (a restarted worker's re-emission) are rolled up again.
    extra = [r for r in _rows(random.Random(13), range(first + 700, first + 760)) if r.level == "estate"]
    write_minute_rows(client, DB, extra, version=6)
    rollups.advance(client, DB, parse_ts("2026-03-05T10:00:00Z"), {dt.date(2026, 3, 3)})
    assert _answers(client) == _without_rollups(client)
    # A rule that changed during a day (license files reread): the day's rule is its newest busy
    # minute's; at the end of 03-02 and in the middle of 03-04 acme's G minutes were charged under NONE.
    changed = []
    for day, (h0, h1) in ((dt.date(2026, 3, 2), (23, 24)), (dt.date(2026, 3, 4), (11, 12))):
        t0 = rollups.day_us(day)
        for r in _rows(random.Random(14)):
            if r.org == "acme" and r.feature == "G" and t0 + h0 * 3_600_000_000 <= r.minute < t0 + h1 * 3_600_000_000:
                changed.append(r._replace(peak=r.peak + 1, charged_peak=r.peak + 1, dup_group="NONE"))
    write_minute_rows(client, DB, changed, version=7)
    rollups.recompute(client, DB, [dt.date(2026, 3, 2), dt.date(2026, 3, 4)], replace=True)
    with_rollups, reference = _answers(client), _without_rollups(client)
    rules = {(r[1], r[3]): r[6] for r in reference[-1] if r[0] == "acme" and r[2] == "G"}
    assert rules[("lic01", dt.date(2026, 3, 2))] == "NONE" and rules[("lic01", dt.date(2026, 3, 4))] == "UH"
    assert with_rollups == reference


def test_split_takes_whole_days_below_the_watermark(warehouse: tuple[Settings, Any]) -> None:
    _, client = warehouse
    assert rollups.split(client, DB, None, None) == rollups.Split(rollups.day_of(0), rollups.day_of(0),
                                                                  ((None, None),))
    client.insert(f"{DB}.rollup_watermark", [[rollups.NAME, dt.date(2026, 3, 5), dt.datetime.now(dt.UTC)]],
                  column_names=["name", "upto", "updated_at"])
    d = rollups.day_us
    cut = rollups.split(client, DB, d(dt.date(2026, 3, 1)) + 3600 * 10**6, None)
    assert (cut.day_lo, cut.day_hi) == (dt.date(2026, 3, 2), dt.date(2026, 3, 5))
    assert cut.minute_ranges == ((d(dt.date(2026, 3, 1)) + 3600 * 10**6, d(dt.date(2026, 3, 2))),
                                 (d(dt.date(2026, 3, 5)), None))
    cut = rollups.split(client, DB, None, d(dt.date(2026, 3, 3)) + 1)
    assert (cut.day_lo, cut.day_hi, cut.minute_ranges) == (
        rollups.day_of(0), dt.date(2026, 3, 3), ((d(dt.date(2026, 3, 3)), d(dt.date(2026, 3, 3)) + 1),))
    assert not rollups.split(client, DB, d(dt.date(2026, 3, 6)), None).days  # all after the watermark
    assert not rollups.split(client, DB, d(dt.date(2026, 3, 2)) + 1, d(dt.date(2026, 3, 3)) + DAY_US - 1).days


def test_the_sink_rolls_up_each_day_once_it_is_final(lictel: Any) -> None:
    """A real `lictel run` over four simulated days: the sink has rolled up every day the stream
    made final, each day's rollup equals the minute rows, and `lictel reconcile` keeps them equal."""
    lictel("run", "--users", "300", "--servers", "2", "--days", "4", "--start", "2026-03-02")
    client = connect(Settings(data_dir=lictel.data_dir))
    try:
        mark = rollups.watermark(client, DB)
        (last,), = client.query(f"SELECT toDate(max(minute)) FROM {DB}.usage_minute").result_rows
        assert mark is not None and dt.date(2026, 3, 4) <= mark <= last + dt.timedelta(days=1)
        fresh = (f"SELECT level, org, feature, server, source, day, count(), max(peak), sum(license_us), "
                 f"sum(charged_license_us) FROM (SELECT *, toDate(minute) AS day FROM {DB}.usage_minute FINAL) "
                 f"WHERE day < {{mark:Date}} GROUP BY level, org, feature, server, source, day ORDER BY ALL")
        kept = (f"SELECT level, org, feature, server, source, day, minutes, bitShiftRight(peak_first, 32), "
                f"license_us, charged_license_us FROM {DB}.usage_daily FINAL ORDER BY ALL")
        expected = client.query(fresh, parameters={"mark": mark}).result_rows
        assert expected and client.query(kept).result_rows == expected
        assert _answers(client, SIM) == _without_rollups(client, SIM)
    finally:
        client.close()
    lictel("reconcile", "--from", "2026-03-03T00:00:00Z", "--to", "2026-03-04T00:00:00Z", "--dup-group", "*=UH")
    client = connect(Settings(data_dir=lictel.data_dir))
    try:
        assert client.query(kept).result_rows == client.query(fresh, parameters={"mark": mark}).result_rows
        assert _answers(client, SIM) == _without_rollups(client, SIM)
    finally:
        client.close()
