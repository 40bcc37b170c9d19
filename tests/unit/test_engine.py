"""The concurrency contract of DESIGN.md, case by case, with hand-computed expectations."""

from __future__ import annotations

import json
import random

import pytest

from lictel.engine import ESTATE, POOL, Engine, MinuteRow, compute_rows, sort_rows
from lictel.events import Event, heartbeat
from lictel.timeutil import MINUTE_US, US, floor_minute, parse_ts

_seq = iter(range(1, 10**9))


def ev(ts: str, action: str, user: str = "u1", *, server: str = "lic01", feature: str = "F",
       host: str = "h1", count: int = 1, vendor: str = "CITRIX", handle: str | None = None,
       event_id: str | None = None) -> Event:
    seq = next(_seq)
    return Event(event_id or f"{server}:log:{seq}", parse_ts(f"2026-03-02T{ts}Z"), "acme", server,
                 vendor, feature, action, user, host, handle, count, None, f"{server}:log", seq)


def m(hhmm: str) -> int:
    return parse_ts(f"2026-03-02T{hhmm}:00Z")


def row(hhmm: str, peak: int, low: int, lic_s: float, *, checkouts: int = 0, checkins: int = 0,
        forced: int = 0, denials: int = 0, queued: int = 0, orphans: int = 0,
        level: str = POOL, server: str = "lic01", feature: str = "F") -> MinuteRow:
    # Under no DUP_GROUP rule the licenses charged are the checkouts.
    return MinuteRow(level, "acme", server if level == POOL else "", feature, m(hhmm), peak, low,
                     round(lic_s * US), checkouts, checkins, forced, denials, queued, orphans,
                     peak, low, round(lic_s * US))


def pool_rows(events: list[Event]) -> list[MinuteRow]:
    return [r for r in compute_rows(events) if r.level == POOL]


def test_checkout_inside_one_minute() -> None:
    rows = pool_rows([ev("10:00:15", "OUT"), ev("10:00:45", "IN")])
    assert rows == [row("10:00", 1, 0, 30, checkouts=1, checkins=1)]


def test_checkout_spanning_minutes_carries_level() -> None:
    rows = pool_rows([ev("10:00:30", "OUT"), ev("10:02:30", "IN")])
    assert rows == [
        row("10:00", 1, 0, 30, checkouts=1),
        row("10:01", 1, 1, 60),
        row("10:02", 1, 0, 30, checkins=1),
    ]


def test_event_exactly_at_minute_boundary_belongs_to_new_minute() -> None:
    rows = pool_rows([ev("10:00:30", "OUT"), ev("10:01:00", "IN")])
    # c(10:01:00) is the state after the IN stamped exactly 10:01:00: zero, so peak 0.
    assert rows == [row("10:00", 1, 0, 30, checkouts=1), row("10:01", 0, 0, 0, checkins=1)]


def test_checkout_at_minute_start_counts_from_t0() -> None:
    rows = pool_rows([ev("10:00:00", "OUT"), ev("10:00:30", "IN")])
    assert rows == [row("10:00", 1, 0, 30, checkouts=1, checkins=1)]


def test_zero_length_checkout_never_counts() -> None:
    rows = pool_rows([ev("10:00:10", "OUT"), ev("10:00:10", "IN")])
    assert rows == [row("10:00", 0, 0, 0, checkouts=1, checkins=1)]


def test_simultaneous_events_only_final_state_counts() -> None:
    # At 10:00:20: u2 leaves, u3 and u4 arrive, in arbitrary seq order. Before: u1,u2 (2).
    # Intermediate states (1 or 3) never count; after the instant: u1,u3,u4 (3).
    evs = [ev("10:00:00", "OUT", "u1"), ev("10:00:00", "OUT", "u2"),
           ev("10:00:20", "OUT", "u3"), ev("10:00:20", "IN", "u2"), ev("10:00:20", "OUT", "u4"),
           ev("10:00:40", "IN", "u3"), ev("10:00:40", "OUT", "u5"), ev("10:00:40", "IN", "u4")]
    rows = pool_rows(evs)
    # 0-20 s: 2, 20-40 s: 3, 40-60 s: u1,u5 = 2. low is 2: the 1 inside an instant never counts.
    assert rows == [row("10:00", 3, 2, 40 + 60 + 40, checkouts=5, checkins=3)]


def test_multi_count_checkout_and_partial_release() -> None:
    evs = [ev("10:00:00", "OUT", count=3), ev("10:00:20", "IN", count=2), ev("10:00:40", "IN", count=5)]
    # 3 for 20 s, 1 for 20 s, 0 for 20 s; the second IN releases only the 1 still held.
    assert pool_rows(evs) == [row("10:00", 3, 0, 80, checkouts=3, checkins=3)]


def test_orphan_in_is_counted_and_changes_nothing() -> None:
    evs = [ev("10:00:00", "OUT", "u1"), ev("10:00:30", "IN", "u2")]
    rows = pool_rows(evs)
    assert rows[0] == row("10:00", 1, 1, 60, checkouts=1, orphans=1)


def test_identity_includes_host_and_handle() -> None:
    evs = [ev("10:00:00", "OUT", host="a"), ev("10:00:00", "OUT", host="b", handle="7"),
           ev("10:00:30", "IN", host="b")]  # wrong handle: orphan
    assert pool_rows(evs) == [row("10:00", 2, 2, 120, checkouts=2, orphans=1)]


def test_restart_releases_every_feature_of_the_vendor() -> None:
    evs = [ev("10:00:00", "OUT", "u1", feature="A"), ev("10:00:00", "OUT", "u2", feature="A"),
           ev("10:00:00", "OUT", "u3", feature="B"),
           ev("10:00:00", "OUT", "u4", feature="C", vendor="OTHER"),
           ev("10:00:30", "RESTART", feature="")]
    rows = {(r.feature, r.minute): r for r in compute_rows(evs, until_us=m("10:02")) if r.level == POOL}
    assert rows[("A", m("10:00"))] == row("10:00", 2, 0, 60, checkouts=2, forced=2, feature="A")
    assert rows[("B", m("10:00"))] == row("10:00", 1, 0, 30, checkouts=1, forced=1, feature="B")
    # Another vendor's daemon keeps its checkouts.
    assert rows[("C", m("10:00"))] == row("10:00", 1, 1, 60, checkouts=1, feature="C")
    assert ("A", m("10:01")) not in rows and ("C", m("10:01")) in rows


def test_restart_that_releases_nothing_is_not_an_event_of_the_key() -> None:
    evs = [ev("10:00:00", "OUT", feature="A"), ev("10:00:10", "IN", feature="A"),
           ev("10:05:00", "RESTART", feature="")]
    rows = pool_rows(evs)
    assert [r.minute for r in rows] == [m("10:00")]


def test_denied_queued_dequeued_count_but_hold_nothing() -> None:
    evs = [ev("10:00:05", "DENIED"), ev("10:00:06", "DENIED"), ev("10:00:07", "QUEUED"),
           ev("10:00:08", "DEQUEUED")]
    assert pool_rows(evs) == [row("10:00", 0, 0, 0, denials=2, queued=1)]


def test_row_exists_only_with_events_or_carried_level() -> None:
    evs = [ev("10:00:00", "OUT"), ev("10:00:10", "IN"), ev("10:03:00", "DENIED")]
    assert [r.minute for r in pool_rows(evs)] == [m("10:00"), m("10:03")]


def test_duplicates_apply_once() -> None:
    out = ev("10:00:00", "OUT", count=2)
    evs = [out, out, ev("10:00:30", "IN", count=2), out]
    assert pool_rows(evs) == [row("10:00", 2, 0, 60, checkouts=2, checkins=2)]


def test_estate_peak_is_peak_of_the_sum() -> None:
    evs = [ev("10:00:00", "OUT", server="a"), ev("10:00:30", "IN", server="a"),
           ev("10:00:30", "OUT", server="b"), ev("10:01:00", "IN", server="b")]
    rows = compute_rows(evs)
    estate = [r for r in rows if r.level == ESTATE]
    pools = [r for r in rows if r.level == POOL and r.minute == m("10:00")]
    assert sum(r.peak for r in pools) == 2
    assert estate == [
        row("10:00", 1, 1, 60, checkouts=2, checkins=1, level=ESTATE),
        row("10:01", 0, 0, 0, checkins=1, level=ESTATE),
    ]


def test_estate_overlap_adds_up() -> None:
    evs = [ev("10:00:00", "OUT", server="a"), ev("10:00:20", "OUT", server="b", count=2),
           ev("10:00:40", "IN", server="a")]
    estate = [r for r in compute_rows(evs) if r.level == ESTATE]
    # 0-20: 1, 20-40: 3, 40-60: 2 -> 120 license-seconds
    assert estate[0] == row("10:00", 3, 1, 120, checkouts=3, checkins=1, level=ESTATE)


def _estate_with_heartbeats(events: list[Event], lateness: int) -> list[MinuteRow]:
    eng = Engine(lateness_us=lateness * US)
    rows: list[MinuteRow] = []
    for i in range(0, len(events), 7):
        rows += eng.process(events[i:i + 7]).rows
    end = max(e.ts for e in events) + MINUTE_US + lateness * US
    rows += eng.process([heartbeat("acme", s, end, "test", 0) for s in {e.server for e in events}]).rows
    return sort_rows(rows)


def _random_day(seed: int, n: int = 400) -> list[Event]:
    rnd = random.Random(seed)
    base = parse_ts("2026-03-02T08:00:00Z")
    events: list[Event] = []
    held: dict[tuple[str, str], list[str]] = {}
    for i in range(n):
        ts = base + i * 7 * US + rnd.choice([0, 0, 500_000])
        server = rnd.choice(["a", "b"])
        feature = rnd.choice(["F", "G"])
        user = f"u{rnd.randrange(12)}"
        action = rnd.choices(["OUT", "IN", "DENIED", "RESTART"], [10, 9, 1, 0.2])[0]
        events.append(Event(f"{server}:{i}", ts, "acme", server, "CITRIX", feature, action, user,
                            "h", None, rnd.choice([1, 1, 2]), None, server, i))
        held.setdefault((server, feature), []).append(user)
    return events


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_streaming_equals_batch_for_in_order_and_shuffled_arrival(seed: int) -> None:
    events = _random_day(seed)
    expected = compute_rows(events)
    assert _estate_with_heartbeats(events, 60) == expected
    # Shuffle within 30 s windows (inside the 60 s lateness): same rows.
    rnd = random.Random(seed)
    shuffled = sorted(events, key=lambda e: e.ts + rnd.randrange(30 * US))
    assert shuffled != events
    assert _estate_with_heartbeats(shuffled, 60) == expected


def test_state_round_trip_mid_stream() -> None:
    events = _random_day(9)
    end = events[-1].ts + 3 * MINUTE_US
    expected = compute_rows(events, until_us=floor_minute(end - MINUTE_US))
    eng = Engine()
    rows = eng.process(events[:200]).rows
    snap = json.loads(json.dumps(eng.to_state()))
    eng2 = Engine.from_state(snap)
    rows += eng2.process(events[200:]).rows
    rows += eng2.process([heartbeat("acme", s, end, "t", 0)
                          for s in ("a", "b")]).rows
    assert sort_rows(rows) == expected


def test_late_event_is_reported_and_applied_from_now_on() -> None:
    eng = Engine(lateness_us=60 * US)
    eng.process([ev("10:00:00", "OUT", "u1"), ev("10:05:00", "DENIED")])
    # lic01 is final up to 10:04; an OUT stamped 10:01 is late.
    late = ev("10:01:00", "OUT", "u2")
    out = eng.process([late])
    assert out.late == [late] and eng.late_events == 1
    out = eng.process([heartbeat("acme", "lic01", m("10:08"), "t", 0)])
    r = {x.minute: x for x in out.rows if x.level == POOL}
    assert r[m("10:05")].peak == 2  # u1 and the late u2 are held from now on


def test_heartbeat_alone_finalizes_minutes() -> None:
    eng = Engine(lateness_us=60 * US)
    assert eng.process([ev("10:00:10", "OUT")]).rows == []
    out = eng.process([heartbeat("acme", "lic01", m("10:03"), "t", 0)])
    assert [r.minute for r in out.rows if r.level == POOL] == [m("10:00"), m("10:01")]
    assert eng.final_upto() == m("10:02")


def test_replaying_final_events_is_harmless() -> None:
    # A producer restarted from the start of its input sends everything again, long after it is final.
    events = _random_day(5)
    expected = compute_rows(events)
    eng = Engine()
    rows = eng.process(events).rows
    replay = eng.process(events)
    assert replay.late == [] and replay.duplicates == len(events) and replay.rows == []
    end = events[-1].ts + MINUTE_US + 60 * US
    rows += eng.process([heartbeat("acme", s, end, "t", 0) for s in ("a", "b")]).rows
    assert sort_rows(rows) == expected


def test_a_late_event_counts_once_even_when_sent_again() -> None:
    eng = Engine(lateness_us=60 * US)
    eng.process([ev("10:00:00", "OUT", "u1"), ev("10:05:00", "DENIED")])
    late = ev("10:01:00", "OUT", "u2")
    assert eng.process([late]).late == [late]
    again = eng.process([late])
    assert again.late == [] and again.duplicates == 1
    out = eng.process([heartbeat("acme", "lic01", m("10:08"), "t", 0)])
    assert {x.minute: x.peak for x in out.rows if x.level == POOL}[m("10:05")] == 2


def test_idle_server_holds_back_estate_minutes_only_until_the_idle_timeout() -> None:
    eng = Engine(lateness_us=60 * US, idle_timeout_us=10 * US)
    wall = 1_000 * US
    eng.process([ev("10:00:00", "OUT", "u1", server="a"), ev("10:00:00", "OUT", "u2", server="b")], wall)
    # Server b falls silent. a goes on: its pool minutes are final, the estate waits for b...
    out = eng.process([ev("10:05:00", "DENIED", server="a")], wall + 5 * US)
    assert {r.minute for r in out.rows if r.level == POOL} == {m("10:00"), m("10:01"), m("10:02"), m("10:03")}
    assert [r for r in out.rows if r.level == ESTATE] == []
    # ...until b has been silent longer than the idle timeout: then a's final minutes decide.
    out = eng.process([ev("10:06:00", "DENIED", server="a")], wall + 11 * US)
    estate = {r.minute: r for r in out.rows if r.level == ESTATE}
    assert sorted(estate) == [m(f"10:0{i}") for i in range(5)]
    assert estate[m("10:01")].peak == 1  # b's share is unknown while it is idle
    assert eng.final_upto(wall + 11 * US) == m("10:05")
    # b comes back with a heartbeat: its pool minutes (still holding u2) are emitted, and the estate
    # minutes already final are reported as late for the estate (reconcile recomputes them).
    out = eng.process([heartbeat("acme", "b", m("10:07"), "t", 0)], wall + 12 * US)
    b_rows = [r for r in out.rows if r.level == POOL and r.server == "b"]
    assert [r.minute for r in b_rows] == [m(f"10:0{i}") for i in range(6)]
    assert all(r.peak == 1 for r in b_rows)
    assert out.estate_late_rows == 5


def test_heartbeats_keep_emitting_minutes_of_a_server_that_holds_licenses() -> None:
    eng = Engine(lateness_us=60 * US)
    eng.process([ev("10:00:30", "OUT", count=3)])
    rows: list[MinuteRow] = []
    for minute in range(2, 7):  # only heartbeats from now on, one a minute
        rows += eng.process([heartbeat("acme", "lic01", m(f"10:0{minute}"), "t", minute)]).rows
    pool = [r for r in rows if r.level == POOL]
    # The 10:06 heartbeat makes every minute before 10:05 final (60 s lateness).
    assert [r.minute for r in pool] == [m(f"10:0{i}") for i in range(5)]
    assert [r.license_us for r in pool] == [90 * US] + [180 * US] * 4


# --------------------------------------------------------------------------- licenses charged


def test_two_sessions_of_one_user_on_one_host_are_charged_one_license_under_uh() -> None:
    from lictel.dupgroup import DupRules

    evs = [ev("10:00:00", "OUT", handle="a"), ev("10:00:20", "OUT", handle="b"),
           ev("10:00:30", "OUT", user="bob", host="h2", handle="c"),
           ev("10:00:40", "IN", handle="a"), ev("10:00:50", "IN", handle="b")]
    got = [r for r in compute_rows(evs, rules=DupRules({"F": "UH"})) if r.level == POOL]
    assert [(r.peak, r.charged_peak, r.license_us, r.charged_license_us, r.dup_group) for r in got] == [
        (3, 2, (20 + 2 * 10 + 3 * 10 + 2 * 10 + 1 * 10) * US, (20 + 1 * 10 + 2 * 10 + 2 * 10 + 1 * 10) * US, "UH")]


def test_an_in_closes_the_oldest_open_checkouts_first_and_a_larger_count_is_charged() -> None:
    from lictel.dupgroup import DupRules

    # One user on one host: a checkout of 3, then of 1. Under UH the group is charged its largest
    # open count: 3. An IN of 3 (same identity) closes the oldest (the 3), leaving 1 charged.
    evs = [ev("10:00:00", "OUT", count=3), ev("10:00:10", "OUT"), ev("10:00:30", "IN", count=3)]
    (r,) = [r for r in compute_rows(evs, rules=DupRules({"*": "UH"})) if r.level == POOL]
    assert (r.peak, r.low, r.charged_peak, r.charged_low) == (4, 1, 3, 1)
    assert r.charged_license_us == (10 * 3 + 20 * 3 + 30 * 1) * US


def test_site_charges_the_largest_checkout_of_the_server_and_estates_sum_servers() -> None:
    from lictel.dupgroup import DupRules

    evs = [ev("10:00:00", "OUT", user="a", count=2), ev("10:00:00", "OUT", user="b"),
           ev("10:00:00", "OUT", user="c", server="lic02")]
    rows = compute_rows(evs, rules=DupRules({"F": "SITE"}))
    assert [(r.level, r.server, r.peak, r.charged_peak, r.dup_group) for r in rows] == [
        ("estate", "", 4, 3, "SITE"), ("pool", "lic01", 3, 2, "SITE"), ("pool", "lic02", 1, 1, "SITE")]


def test_a_snapshot_from_before_licenses_charged_loads_with_charged_equal_to_checkouts() -> None:
    eng = Engine(lateness_us=0)
    eng.process([ev("10:00:00", "OUT"), ev("10:00:00", "OUT", server="lic02"), ev("10:01:30", "OUT")])
    state = eng.to_state()
    # Take the new fields away again, as an older worker wrote them.
    for est in state["estates"]:
        est[3] = [[m, [[[*r[:14], r[18]], [[a, b] for a, b, _ in st]] for r, st in items]] for m, items in est[3]]
        del est[5:]  # and the servers saved with an estate since pools are evicted
    for pool in state["pools"]:
        del pool[10:]  # parts, and the last event time of eviction
    loaded = Engine.from_state(state, lateness_us=0)
    assert loaded.to_state() == eng.to_state()


def _at(e: Event, iso: str) -> Event:
    return e._replace(ts=parse_ts(iso))


def test_an_event_years_from_its_server_clock_is_refused_and_changes_nothing() -> None:
    clean = [ev("10:00:10", "OUT"), ev("10:03:20", "IN"), ev("10:05:00", "OUT", "u2"), ev("10:07:00", "IN", "u2")]
    # A damaged year that the static window lets through (after 1990, before the wall clock):
    # an OUT held from 2004 would otherwise be carried through 22 years of minutes.
    damaged = _at(ev("10:01:00", "OUT", "u3"), "2004-03-02T10:01:00Z")
    eng = Engine()
    out = eng.process(clean[:2])
    late = eng.process([damaged, *clean[2:]])
    assert [e for e, _ in late.refused] == [damaged]
    assert "days from the newest time of server 'lic01'" in late.refused[0][1]
    rows = sort_rows([*out.rows, *late.rows, *eng.flush(m("10:08")).rows])
    assert rows == compute_rows(clean, until_us=m("10:08"))


def test_a_new_server_is_judged_by_the_median_of_its_first_events() -> None:
    clean = [ev(f"10:0{i}:00", "OUT" if i % 2 == 0 else "IN") for i in range(6)]
    damaged = _at(ev("10:00:30", "OUT", "u9"), "1995-06-01T08:00:00Z")
    out = Engine().process([damaged, *clean])  # the damaged one comes first
    assert [e for e, _ in out.refused] == [damaged]
    assert compute_rows([damaged, *clean]) == compute_rows(clean)


def test_a_heartbeat_years_ahead_is_dropped_and_counted_not_a_watermark() -> None:
    eng = Engine()
    eng.process([ev("10:00:10", "OUT")])
    out = eng.process([heartbeat("acme", "lic01", parse_ts("2029-03-02T10:00:00Z"), "hb", 1)])
    assert out.refused_heartbeats == 1 and out.rows == [] and not out.refused
    # An ordinary heartbeat still advances the watermark.
    out = eng.process([heartbeat("acme", "lic01", m("10:03"), "hb", 2)])
    assert [r.minute for r in out.rows if r.level == POOL] == [m("10:00"), m("10:01")]
