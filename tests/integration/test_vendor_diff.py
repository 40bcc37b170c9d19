"""`vendor-diff` causes one by one, on a small hand-built estate in real chDB.

Server lic01, feature F (stored under no DUP_GROUP rule), 2026-03-02 UTC: ann holds two sessions on
pc1 09:00-11:00 and 09:30-10:30, bob pc2 10:00-10:20 (checkout peak 3; under UH 2); the daemon
restarts at 12:00. 2026-03-03 03:00-03:30: five users at once (peak 5; under SITE 1). G_UD: three
users on three devices on 2026-03-02 (the vendor's rule: 3 licenses).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from lictel.config import Settings
from lictel.engine import compute_rows
from lictel.events import Event
from lictel.timeutil import parse_ts
from lictel.vendor.diff import match_server, vendor_diff
from lictel.vendor.files import CSV, Sample
from sinks.clickhouse import RAW_COLUMNS, write_minute_rows

pytestmark = pytest.mark.integration
DB = "lictel"
D2, D3 = dt.date(2026, 3, 2), dt.date(2026, 3, 3)


def _events() -> list[Event]:
    spec: list[tuple[str, str, str, str, str]] = [
        ("2026-03-02T09:00", "OUT", "ann", "pc1", "F"), ("2026-03-02T09:30", "OUT", "ann", "pc1", "F"),
        ("2026-03-02T10:00", "OUT", "bob", "pc2", "F"), ("2026-03-02T10:20", "IN", "bob", "pc2", "F"),
        ("2026-03-02T10:30", "IN", "ann", "pc1", "F"), ("2026-03-02T11:00", "IN", "ann", "pc1", "F"),
        ("2026-03-02T12:00", "RESTART", "", "", ""),
        *(("2026-03-03T03:00", "OUT", f"c{k}", f"pc-c{k}", "F") for k in range(5)),
        *(("2026-03-03T03:30", "IN", f"c{k}", f"pc-c{k}", "F") for k in range(5)),
        ("2026-03-04T12:00", "DENIED", "eve", "pc5", "F"),  # our data runs past 2026-03-03
        *((f"2026-03-02T08:0{k}", "OUT", f"u{k}", f"d{k}", "G_UD") for k in range(3)),
    ]
    return [Event(f"lic01:log:{i}", parse_ts(f"{ts}:00Z"), "acme", "lic01", "CITRIX", f, a, u, h, None, 1, None,
                  "lic01:log", i) for i, (ts, a, u, h, f) in enumerate(spec)]


@pytest.fixture
def client(warehouse: tuple[Settings, Any]) -> Any:
    _, c = warehouse
    events = _events()
    c.insert(f"{DB}.raw_events", [[getattr(e, col) for col in RAW_COLUMNS] for e in events], column_names=RAW_COLUMNS)
    write_minute_rows(c, DB, compute_rows(events), version=1)
    return c


def _sample(day: dt.date, feature: str, count: int | None, line: int = 2, **kw: Any) -> Sample:
    return Sample("acme", "vendor.csv", line, CSV, "lic01", feature, "", day, count_used_max=count, **kw)


def _explain(client: Any, *samples: Sample) -> dict[tuple[str, str, str], str]:
    rep = vendor_diff(client, DB, "acme", list(samples), {})
    return {(r[3], r[2], r[4]): r[8] for r in rep.rows}


def test_a_rule_the_server_applies_and_we_do_not(client: Any) -> None:
    (why,) = _explain(client, _sample(D2, "F", 2)).values()
    assert "charged under DUP_GROUP=UH our peak is 2" in why and "--dup-group F=UH" in why
    assert "restarts and rereads in the window: a vendor daemon restart at 2026-03-02T12:00:00Z" in why
    assert _explain(client, _sample(D2, "F", 3)) == {}  # agreement is not listed


def test_a_shifted_day_found_from_a_csv_that_gives_only_dates(client: Any) -> None:
    (why,) = _explain(client, _sample(D2, "F", 5)).values()
    assert "a different window boundary: with days starting 04:00 UTC our figure agrees" in why


def test_site_sharing_no_data_udadmin_entitlements_and_the_unexplained(client: Any) -> None:
    got = _explain(client, _sample(D3, "F", 1, line=2), _sample(dt.date(2026, 3, 10), "F", 4, line=4),
                   _sample(D2, "G_UD", None, line=5, installed=10, ud_total=1, users_released=2, devices_released=0))
    assert "charged under DUP_GROUP=SITE our peak is 1" in got[("2026-03-03", "F", "count_used_max")]
    assert "a day we lack data for" in got[("2026-03-10", "F", "count_used_max")]
    assert "udadmin: the server released 2 user and 0 device assignment(s)" in got[("2026-03-02", "G_UD",
                                                                                     "ud_licensees")]
    assert "our license files give 0 (none imported)" in got[("2026-03-02", "G_UD", "installed")]
    rep = vendor_diff(client, DB, "acme", [_sample(D3, "F", 4, line=3)], {})
    assert rep.rows[0][8].startswith("unexplained") and "1 unexplained" in rep.notes[0]


def test_servers_are_matched_by_name_without_case_or_domain() -> None:
    ours = ["lic01", "LIC02", "lic03.corp.example"]
    assert match_server("lic01", ours) == "lic01"
    assert match_server("lic02.corp.example", ours) == "LIC02"
    assert match_server("LIC03", ours) == "lic03.corp.example"
    assert match_server("lic04.corp.example", ours) is None


def test_a_rule_found_over_checkouts_held_since_before_the_compared_days(client: Any) -> None:
    """lic02: dan's two checkouts on pc9 open on 2026-02-27 and close on 2026-03-03, so the replay
    that recharges 2026-03-02 must start days before it (NONE charges 2, UH 1); a third
    checkout opened and closed on 2026-02-25 (nothing held between) needs no replay."""
    spec = [("2026-02-25T09:00", "OUT", "eve"), ("2026-02-25T10:00", "IN", "eve"),
            ("2026-02-27T20:00", "OUT", "dan"), ("2026-02-27T20:05", "OUT", "dan"),
            ("2026-03-03T02:00", "IN", "dan"), ("2026-03-03T02:00", "IN", "dan")]
    events = [Event(f"lic02:log:{i}", parse_ts(f"{ts}:00Z"), "acme", "lic02", "CITRIX", "F", a, u, "pc9", None, 1,
                    None, "lic02:log", i) for i, (ts, a, u) in enumerate(spec)]
    client.insert(f"{DB}.raw_events", [[getattr(e, col) for col in RAW_COLUMNS] for e in events],
                  column_names=RAW_COLUMNS)
    write_minute_rows(client, DB, compute_rows(events), version=1)
    got = vendor_diff(client, DB, "acme", [Sample("acme", "v.csv", 2, CSV, "lic02", "F", "", D2,
                                                  count_used_max=1)], {})
    assert [(r[4], r[5], r[6]) for r in got.rows] == [("count_used_max", 1, 2)]
    assert "charged under DUP_GROUP=UH our peak is 1" in got.rows[0][8]
