"""Hour/day/month exports equal a recomputation from the minute rows (DESIGN.md rollups), on real chDB."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import pytest

from lictel.config import Settings
from lictel.export import export_row, usage_rows
from lictel.timeutil import DAY_US, HOUR_US, MINUTE_US, from_us, parse_ts, to_us
from sinks.clickhouse import USAGE_COLUMNS, write_minute_rows

pytestmark = pytest.mark.integration


def _period(minute: int, granularity: str) -> tuple[int, int]:
    """Start of the period holding ``minute`` and its length in seconds."""
    if granularity == "hour":
        start = minute - minute % HOUR_US
        return start, 3600
    if granularity == "day":
        start = minute - minute % DAY_US
        return start, 86400
    d = from_us(minute)
    first = d.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    nxt = first.replace(year=first.year + (first.month == 12), month=first.month % 12 + 1)
    return to_us(first), int((nxt - first).total_seconds())


def _expected(rows: list[dict[str, Any]], granularity: str, measure: str = "checkouts") -> list[dict[str, Any]]:
    peak, low, lic = ("charged_peak", "charged_low", "charged_license_us") if measure == "charged" else (
        "peak", "low", "license_us")
    groups: dict[tuple[str, str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        start, _ = _period(r["minute"], granularity)
        groups[(r["org"], r["server"], r["feature"], start)].append(r)
    out = []
    for (org, server, feature, start), items in sorted(groups.items()):
        seconds = _period(start, granularity)[1]
        full = len(items) == seconds // 60
        out.append(export_row(org, server, feature, start, max(i[peak] for i in items),
                              min(i[low] for i in items) if full else 0, sum(i[lic] for i in items),
                              seconds, *(sum(i[c] for i in items) for c in
                                         ("checkouts", "checkins", "forced_releases", "denials", "queued", "orphans"))))
    return out


def test_rollups_equal_recomputation_from_minutes(warehouse: tuple[Settings, Any]) -> None:
    _, client = warehouse
    rnd = random.Random(5)
    start = parse_ts("2026-01-31T22:00:00Z")  # crosses a day and a month boundary
    rows = []
    for server in ("lic01", "lic02"):
        for k in range(3 * 24 * 60):
            if rnd.random() < 0.3:
                continue  # a missing minute: nothing held, no events
            peak = rnd.randrange(1, 40)
            low = rnd.randrange(0, peak + 1)
            rows.append({"level": "pool", "source": "license", "org": "acme", "server": server, "feature": "F",
                         "minute": start + k * MINUTE_US, "peak": peak, "low": low,
                         "license_us": rnd.randrange(low * 60, peak * 60 + 1) * 1_000_000 + rnd.randrange(1_000_000),
                         "checkouts": rnd.randrange(5), "checkins": rnd.randrange(5), "forced_releases": 0,
                         "denials": rnd.randrange(2), "queued": 0, "orphans": rnd.randrange(2), "version": 1,
                         "dup_group": "UH"})
            # Licenses charged: at most the checkouts, and a curve of their own.
            r = rows[-1]
            r["charged_peak"] = rnd.randrange(1, peak + 1)
            r["charged_low"] = rnd.randrange(0, min(low, r["charged_peak"]) + 1)
            r["charged_license_us"] = rnd.randrange(r["charged_low"] * 60, r["charged_peak"] * 60 + 1) * 1_000_000
    # One full hour for lic01 (02:00-03:00 on Feb 1): there the low is the real minimum, not 0.
    full_hour = parse_ts("2026-02-01T02:00:00Z")
    rows = [r for r in rows if not (r["server"] == "lic01" and full_hour <= r["minute"] < full_hour + HOUR_US)]
    rows += [{**rows[0], "server": "lic01", "minute": full_hour + k * MINUTE_US, "peak": 9, "low": 3 + k % 2,
              "license_us": 300_000_000} for k in range(60)]
    cols = [[r[c] // 1_000_000 if c == "minute" else r[c] for r in rows] for c in USAGE_COLUMNS]
    client.insert("lictel.usage_minute", cols, column_names=USAGE_COLUMNS, column_oriented=True)
    for granularity in ("hour", "day", "month"):
        for measure in ("checkouts", "charged"):
            got = usage_rows(client, "lictel", "pool", granularity, measure=measure)
            assert got == _expected(rows, granularity, measure), (granularity, measure)
    # The SQL users' views carry both measures, with the rule.
    view = client.query("SELECT server, toString(day), peak, charged_peak, round(charged_license_hours * 3600e6), "
                        "dup_group FROM lictel.usage_day ORDER BY server, day").result_rows
    want = _expected(rows, "day", "charged")
    assert [(s, d, cp, int(lic)) for s, d, _, cp, lic, _ in view] == [
        (r["server"], r["minute"][:10], r["peak"], round(float(r["license_seconds"]) * 1e6)) for r in want]
    assert {r[5] for r in view} == {"UH"}
    hour = {(r["server"], r["minute"]): r for r in usage_rows(client, "lictel", "pool", "hour")}
    assert hour[("lic01", "2026-02-01T02:00:00Z")]["low"] == 3
    assert hour[("lic02", "2026-02-01T02:00:00Z")]["low"] == 0  # lic02 has gaps in that hour


def test_estate_minutes_missing_a_servers_share_are_found(warehouse: tuple[Settings, Any]) -> None:
    from lictel.engine import compute_rows
    from lictel.events import Event
    from lictel.reports.summary import estate_gaps

    _, client = warehouse
    t0 = parse_ts("2026-03-02T10:00:00Z")
    events = [Event(f"{s}:{i}", t0 + i * 20_000_000, "acme", s, "V", "F", a, "u", "h", None, 1, None, s, i)
              for s in ("a", "b") for i, a in enumerate(["OUT", "IN", "OUT", "IN"])]
    rows = compute_rows(events)

    def insert(selected: list[Any]) -> None:
        write_minute_rows(client, "lictel", selected, version=1)

    insert(rows)
    assert estate_gaps(client, "lictel") is None
    # As if server b's data came after the estate minute was final: the estate row lacks b.
    only_a = compute_rows([e for e in events if e.server == "a"])
    client.command("DELETE FROM lictel.usage_minute WHERE level = 'estate'")
    insert([r for r in only_a if r.level == "estate"])
    gaps = estate_gaps(client, "lictel")
    assert gaps is not None and gaps.minutes == 2 and gaps.first == t0 and gaps.end == t0 + 2 * MINUTE_US
