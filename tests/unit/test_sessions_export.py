"""Session exports (Citrix Monitor OData JSON, the two CSV layouts) → session events → implied licenses.

The four files in tests/data/sessions describe the same morning at one site (written by us from the
documented formats): ann on ANN-PC 08:00-08:30 and again 08:15-08:45, bob on BOB-LAPTOP from 08:10,
disconnected 08:20, reconnected from BOB-HOME 08:40-09:00, dan on ANN-PC 08:20-08:25, cat on KIOSK-1
from 08:50, still running. Each file also holds records that cannot be used.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lictel.engine import POOL, SessionRule, compute_rows
from lictel.errors import ConfigError
from lictel.events import SESSIONS_SOURCE
from lictel.timeutil import US, parse_ts
from producers.sessions import SessionExportReader

DATA = Path(__file__).parent.parent / "data" / "sessions"
FILES = {"monitor_sessions.json": 2, "monitor_connections.json": 0, "sessions_events.csv": 2,
         "sessions_connections.csv": 1}


def read(name: str, tz: str = "UTC") -> tuple[list, list, SessionExportReader]:
    reader = SessionExportReader("acme", "ddc01", "XDT_PLT_CCU", tz=tz)
    events, errors = reader.read(DATA / name)
    return events, errors, reader


def series(events: list, rule: SessionRule | None = None) -> tuple[int, float]:
    """(peak, license-seconds) of the site's implied series from 08:00 to 09:01."""
    rows = [r for r in compute_rows(events, sessions=rule, until_us=parse_ts("2026-03-02T09:01:00Z"))
            if r.level == POOL]
    assert rows and all(r.source == SESSIONS_SOURCE and r.server == "ddc01" for r in rows)
    assert rows[0].minute == parse_ts("2026-03-02T08:00:00Z")
    return max(r.peak for r in rows), sum(r.license_us for r in rows) / US


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_layout_gives_the_hand_computed_series(name: str) -> None:
    events, errors, reader = read(name)
    assert len(errors) == FILES[name], [e.describe() for e in errors]
    assert reader.stats.sessions == 5 and reader.stats.still_running == 1
    assert reader.stats.events == {"LOGON": 5, "DISCONNECT": 1, "RECONNECT": 1, "LOGOFF": 4}
    # Devices, disconnected sessions holding: 1 (08:00-08:10), 2 (-08:45), 1 (-08:50), 2 (-09:00), 1.
    assert series(events) == (2, 600 + 35 * 60 * 2 + 300 + 600 * 2 + 60)
    # Disconnected sessions free their license: BOB-LAPTOP 08:20-08:40 no longer counts.
    assert series(events, SessionRule(disconnected_holds=False)) == (2, 6360 - 1200)
    # Users (CORP\ann = ann, dan@corp.example = dan): dan shares ANN-PC, so three users 08:20-08:25.
    assert series(events, SessionRule(unit="user")) == (3, 600 + 1200 + 900 + 2400 + 300 + 1200 + 60)


def test_ids_are_stable_and_events_are_in_time_order() -> None:
    first, _, _ = read("monitor_sessions.json")
    again, _, _ = read("monitor_sessions.json")
    assert first == again
    assert [e.ts for e in first] == sorted(e.ts for e in first)
    assert len({e.event_id for e in first}) == len(first)
    reconnect = next(e for e in first if e.action == "RECONNECT")
    assert (reconnect.host, reconnect.user, reconnect.ts) == ("BOB-HOME", "CORP\\bob", parse_ts("2026-03-02T08:40:00Z"))


def test_overlapping_exports_change_nothing() -> None:
    a, _, _ = read("monitor_sessions.json")
    b, _, _ = read("monitor_connections.json")
    assert series(a + b) == series(a)


def test_bad_records_name_where_and_why() -> None:
    _, errors, reader = read("monitor_sessions.json")
    text = [e.describe() for e in errors]
    assert any("record 6" in t and "'SessionKey'" in t for t in text), text
    assert any("6f0c1a52-0006" in t and "ends before it starts" in t for t in text), text
    _, errors, _ = read("sessions_events.csv")
    assert {(e.line, e.field) for e in errors} == {(13, "event"), (14, "session_key")}
    _, errors, _ = read("sessions_connections.csv")
    assert [(e.line, e.field) for e in errors] == [(8, "start")]
    assert "'yesterday' is not a date" in errors[0].reason
    assert sum(reader.stats.skipped.values()) == 2


def test_naive_csv_times_are_in_the_given_zone() -> None:
    utc, _, _ = read("sessions_connections.csv")
    berlin, _, _ = read("sessions_connections.csv", tz="Europe/Berlin")
    assert [e.ts - b.ts for e, b in zip(utc, berlin, strict=True)] == [3600 * US] * len(utc)


def test_not_an_export_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    got, errs = SessionExportReader("acme", "s", "F").read(path)
    assert got == [] and "session_key,user,device,ts,event" in errs[0].reason
    path.write_text('{"value": [')
    got, errs = SessionExportReader("acme", "s", "F").read(path)
    assert got == [] and "malformed JSON" in errs[0].reason
    with pytest.raises(ConfigError, match="IANA"):
        SessionExportReader("acme", "s", "F", tz="Mars/Base")


@pytest.mark.parametrize("name", ["sessions_events.csv", "sessions_connections.csv"])
def test_a_damaged_csv_record_costs_only_itself(name: str, tmp_path: Path) -> None:
    # A stray quote and a byte that is not UTF-8, each on a record of its own, inserted after line 3:
    # every other record is read as before, the two are dead letters naming their lines.
    clean, clean_errors, _ = read(name)
    lines = (DATA / name).read_bytes().split(b"\n")
    damaged = [*lines[:3], b's9,"CORP\\eve,EVE-PC,2026-03-02T09:05:00+01:00,logon', b"s8,CORP\\fr\xe9d,FRED-PC,x,y",
               *lines[3:]]
    path = tmp_path / name
    path.write_bytes(b"\n".join(damaged))
    reader = SessionExportReader("acme", "ddc01", "XDT_PLT_CCU", tz="UTC")
    events, errors = reader.read(path)
    assert [(e.event_id.split(":", 2)[-1], e.ts, e.action, e.user, e.host) for e in events] == [
        (e.event_id.split(":", 2)[-1], e.ts, e.action, e.user, e.host) for e in clean]
    new = sorted((e.line, e.reason.split(" (")[0]) for e in errors if e.line in (4, 5))
    assert new == [(4, "damaged CSV record"), (5, "not UTF-8")]
    assert len(errors) == len(clean_errors) + 2
