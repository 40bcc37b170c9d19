"""Holding segments (lictel.holdings) against the engine's contract, on generated event streams:
at every instant the segments that cover it hold exactly the open checkouts of every identity."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings

from lictel.events import Event
from lictel.holdings import segments
from tests.unit.test_engine_property import _open, event_streams


def _rows(events: list[Event]) -> list[tuple[object, ...]]:
    seen: set[str] = set()
    out = []
    for e in sorted(events, key=lambda e: (e.ts, e.seq)):
        if e.event_id in seen:
            continue
        seen.add(e.event_id)
        out.append((e.org, e.server, e.vendor, e.feature, e.action, e.user, e.host, e.handle or "", e.count, e.ts))
    return out


@settings(max_examples=300, deadline=None)
@given(event_streams())
def test_segments_hold_the_open_checkouts_at_every_instant(events: list[Event]) -> None:
    segs = list(segments(_rows(events)))
    assert all(s.end is None or s.end > s.start for s in segs), "a segment that held nothing"
    for t in sorted({e.ts for e in events}):
        held: dict[tuple[object, ...], int] = defaultdict(int)
        for s in segs:
            if s.start <= t and (s.end is None or t < s.end):
                held[(s.org, s.server, s.vendor, s.feature, s.user, s.host, s.handle)] += s.count
        want = {k: sum(v) for k, v in _open(events, t).items() if sum(v)}
        assert dict(held) == want, f"at {t}"


def test_partial_check_in_and_restart() -> None:
    rows = [("o", "s", "V", "F", "OUT", "u", "h", "", 3, 10), ("o", "s", "V", "F", "OUT", "u", "h", "", 1, 20),
            ("o", "s", "V", "F", "IN", "u", "h", "", 2, 30), ("o", "s", "V", "G", "OUT", "u", "h2", "", 1, 30),
            ("o", "s", "V", "G", "IN", "u", "h2", "", 1, 30), ("o", "s", "V", "", "RESTART", "", "", "", 1, 40),
            ("o", "s", "V", "F", "IN", "u", "h", "", 1, 50)]
    got = sorted((s.feature, s.count, s.start, s.end, s.ended_by) for s in segments(rows))
    # The partial IN closes 2 of the oldest checkout's 3; the rest and the newer one end at the restart.
    # G's checkout opened and closed at one instant: it held nothing; the IN after the restart is an orphan.
    assert got == [("F", 1, 10, 40, "RESTART"), ("F", 1, 20, 40, "RESTART"), ("F", 2, 10, 30, "IN")]
