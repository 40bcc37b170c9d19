"""Implied concurrent licenses from session events (DESIGN.md "SessionEvent"), hand-computed."""

from __future__ import annotations

import random

import pytest

from lictel.engine import ESTATE, POOL, Engine, SessionRule, compute_rows
from lictel.events import SESSION_VENDOR, SESSIONS_SOURCE, Event, heartbeat
from lictel.timeutil import US, parse_ts

_seq = iter(range(1, 10**9))


def s(ts: str, action: str, session: str, device: str = "pc1", user: str = "CORP\\Ann", *,
      site: str = "site1", feature: str = "XDT_PLT_CCU") -> Event:
    seq = next(_seq)
    return Event(f"{site}:x:{seq}", parse_ts(f"2026-03-02T{ts}Z"), "acme", site, SESSION_VENDOR, feature,
                 action, user, device, session, 1, None, f"{site}:x", seq)


def curve(events: list[Event], rule: SessionRule | None = None, level: str = POOL) -> dict[str, tuple[int, int, float]]:
    """minute (HH:MM) -> (peak, low, license-seconds) of the session series."""
    rows = [r for r in compute_rows(events, sessions=rule) if r.level == level]
    assert all(r.source == SESSIONS_SOURCE for r in rows)
    out = {}
    for r in rows:
        hhmm = f"{(r.minute // (60 * US)) // 60 % 24:02d}:{(r.minute // (60 * US)) % 60:02d}"
        out[hhmm] = (r.peak, r.low, r.license_us / US)
    return out


def test_one_device_two_sessions_is_one_license() -> None:
    evs = [s("10:00:00", "LOGON", "a", "pc1"), s("10:00:30", "LOGON", "b", "PC1"),
           s("10:01:00", "LOGOFF", "a", "pc1"), s("10:01:30", "LOGOFF", "b", "pc1")]
    assert curve(evs) == {"10:00": (1, 1, 60.0), "10:01": (1, 0, 30.0)}
    rows = [r for r in compute_rows(evs) if r.level == POOL]
    assert (rows[0].checkouts, rows[1].checkins) == (1, 1)  # licenses taken and returned, not sessions


def test_two_devices_are_two_licenses_and_unit_user_merges_them() -> None:
    evs = [s("10:00:00", "LOGON", "a", "pc1", "CORP\\Ann"), s("10:00:30", "LOGON", "b", "tablet", "ann@corp.example"),
           s("10:00:45", "LOGOFF", "a", "pc1"), s("10:00:50", "LOGOFF", "b", "tablet")]
    assert curve(evs) == {"10:00": (2, 0, 30 + 2 * 15 + 5)}
    # By user: one person (domain and case ignored) from 10:00:00 to 10:00:50.
    assert curve(evs, SessionRule(unit="user")) == {"10:00": (1, 0, 50.0)}


def test_disconnected_session_holds_unless_configured_not_to() -> None:
    evs = [s("10:00:00", "LOGON", "a"), s("10:00:20", "DISCONNECT", "a"),
           s("10:00:40", "RECONNECT", "a"), s("10:01:00", "LOGOFF", "a")]
    assert curve(evs) == {"10:00": (1, 1, 60.0), "10:01": (0, 0, 0.0)}
    assert curve(evs, SessionRule(disconnected_holds=False)) == {"10:00": (1, 0, 40.0), "10:01": (0, 0, 0.0)}


def test_reconnect_from_another_device_moves_the_license() -> None:
    # Disconnected at the office, reconnected from home: the home device holds from then on.
    evs = [s("10:00:00", "LOGON", "a", "office"), s("10:00:10", "LOGON", "b", "home", "bob"),
           s("10:00:20", "DISCONNECT", "a", "office"), s("10:00:30", "RECONNECT", "a", "home"),
           s("10:00:40", "LOGOFF", "b", "home", "bob"), s("10:00:50", "LOGOFF", "a", "home")]
    # 0-10: office; 10-30: office+home (the office holds while disconnected); 30-50: home only.
    assert curve(evs) == {"10:00": (2, 0, 10 + 2 * 20 + 20)}


def test_repeated_changes_change_nothing_and_unknown_endings_are_orphans() -> None:
    evs = [s("10:00:00", "LOGON", "a"), s("10:00:00", "LOGON", "a"), s("10:00:10", "RECONNECT", "a"),
           s("10:00:20", "LOGOFF", "zzz"), s("10:00:30", "LOGOFF", "a"), s("10:00:40", "LOGOFF", "a")]
    rows = [r for r in compute_rows(evs) if r.level == POOL]
    assert [(r.peak, r.license_us / US, r.checkouts, r.checkins, r.orphans) for r in rows] == [(1, 30.0, 1, 1, 2)]


def test_session_without_device_counts_as_its_own_device() -> None:
    evs = [s("10:00:00", "LOGON", "a", ""), s("10:00:00", "LOGON", "b", ""),
           s("10:00:30", "LOGOFF", "a", ""), s("10:00:30", "LOGOFF", "b", "")]
    assert curve(evs) == {"10:00": (2, 0, 60.0)}


def test_sessions_are_a_series_apart_from_the_license_server() -> None:
    lic = Event("lic:1", parse_ts("2026-03-02T10:00:00Z"), "acme", "site1", "CITRIX", "XDT_PLT_CCU", "OUT",
                "ann", "pc1", None, 5, None, "lic", 1)
    evs = [lic, s("10:00:00", "LOGON", "a")]
    rows = compute_rows(evs, until_us=parse_ts("2026-03-02T10:01:00Z"))
    by = {(r.source, r.level): r.peak for r in rows}
    # Same org, same name for site and server, same feature: still two series, never summed.
    assert by == {("license", POOL): 5, ("license", ESTATE): 5, ("sessions", POOL): 1, ("sessions", ESTATE): 1}


def test_estate_of_sessions_sums_sites() -> None:
    evs = [s("10:00:00", "LOGON", "a", "pc1", site="east"), s("10:00:00", "LOGON", "b", "pc2", site="west"),
           s("10:00:30", "LOGOFF", "a", "pc1", site="east"), s("10:00:30", "LOGOFF", "b", "pc2", site="west")]
    assert curve(evs, level=ESTATE) == {"10:00": (2, 0, 60.0)}


@pytest.mark.parametrize("unit", ["device", "user"])
@pytest.mark.parametrize("holds", [True, False])
def test_arrival_order_and_snapshots_do_not_change_session_rows(unit: str, holds: bool) -> None:
    rng = random.Random(7)
    evs: list[Event] = []
    for k in range(60):
        t = rng.randrange(0, 3000)
        dev, user = f"pc{rng.randrange(8)}", f"u{rng.randrange(6)}"
        evs.append(s(_hms(t), "LOGON", f"k{k}", dev, user))
        t += rng.randrange(1, 400)
        if rng.random() < 0.5:
            evs.append(s(_hms(t), "DISCONNECT", f"k{k}", dev, user))
            t += rng.randrange(1, 400)
            evs.append(s(_hms(t), "RECONNECT", f"k{k}", f"pc{rng.randrange(8)}", user))
            t += rng.randrange(1, 400)
        evs.append(s(_hms(t), "LOGOFF", f"k{k}", dev, user))
    rule = SessionRule(unit, holds)
    expected = compute_rows(evs, sessions=rule)
    assert max(r.peak for r in expected) >= 3
    shuffled = evs[:]
    rng.shuffle(shuffled)
    eng = Engine(lateness_us=7200 * US, sessions=rule)
    got = []
    for i in range(0, len(shuffled), 17):  # in chunks, through a snapshot each time
        got += eng.process(shuffled[i:i + 17]).rows
        eng = Engine.from_state(eng.to_state(), 7200 * US, sessions=rule)
    end = max(e.ts for e in evs)
    got += eng.process([heartbeat("acme", "site1", end + 7260 * US, "site1:x", 0, SESSION_VENDOR)]).rows
    got += eng.flush(((end // (60 * US)) + 1) * 60 * US).rows
    assert sorted(got) == sorted(expected)


def _hms(t: int) -> str:
    t += 10 * 3600
    return f"{t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}"
