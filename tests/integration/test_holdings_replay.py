"""A replay of holdings that starts late (lictel.holdings.replay_start) holds, at every instant from
the asked one on, exactly what the replay of the whole history holds: generated event streams over
three hours (checkouts of 1-3 licenses, partial check-ins, restarts, orphans, duplicates), their
minute rows and raw events stored in real chDB."""

from __future__ import annotations

import datetime as dt
import itertools
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lictel import rollups
from lictel.config import Settings
from lictel.engine import compute_rows
from lictel.events import Event
from lictel.holdings import Segment, read_rows, replay_start, replay_starts, segments
from lictel.timeutil import parse_ts
from sinks.clickhouse import RAW_COLUMNS, write_minute_rows

pytestmark = pytest.mark.integration
DB = "lictel"
BASE = parse_ts("2026-03-02T08:00:00Z")
US = 1_000_000
_orgs = itertools.count()


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Event], int]:
    events = []
    for seq in range(draw(st.integers(min_value=1, max_value=30))):
        action = draw(st.sampled_from(["OUT", "OUT", "OUT", "IN", "IN", "IN", "RESTART"]))
        minute = draw(st.integers(min_value=0, max_value=180))
        sub = draw(st.sampled_from([0, 0, 30 * US, 59 * US]))
        events.append(Event(
            f"s:{seq}", BASE + minute * 60 * US + sub, "", "s", "V", "" if action == "RESTART" else
            draw(st.sampled_from(["F", "F", "G"])), action, draw(st.sampled_from(["u1", "u2"])),
            draw(st.sampled_from(["h1", "h2"])), None, draw(st.integers(min_value=1, max_value=3)), None, "src", seq))
    events += draw(st.lists(st.sampled_from(events), max_size=3))
    return events, BASE + draw(st.integers(min_value=0, max_value=200)) * 60 * US


def _held(segs: list[Segment], t: int) -> dict[tuple[str, ...], int]:
    out: dict[tuple[str, ...], int] = defaultdict(int)
    for s in segs:
        if s.start <= t and (s.end is None or t < s.end):
            out[(s.feature, s.user, s.host)] += s.count
    return dict(out)


def _check(c: Any, events: list[Event], at: int) -> None:
    n = next(_orgs)
    org = f"o{n}"
    events = [e._replace(org=org) for e in events]
    # A second server with the same history 37 minutes later, for the servers asked at once.
    other = [e._replace(server="t", event_id=f"t{e.event_id}", source="src-t", ts=e.ts + 37 * 60 * US) for e in events]
    c.insert(f"{DB}.raw_events", [[getattr(e, col) for col in RAW_COLUMNS] for e in events + other],
             column_names=RAW_COLUMNS)
    for history in (events, other):  # each server's rows end with its own last event
        write_minute_rows(c, DB, compute_rows(history), version=1)
    # Every other history with its day rolled up, as the sink does once the day is final: the last
    # stored minute of a server then comes from the rollups.
    if n % 2:
        rollups.advance(c, DB, BASE + 2 * 86400 * US, {rollups.day_of(BASE), rollups.day_of(BASE) + dt.timedelta(1)})
    else:
        c.command(f"TRUNCATE TABLE {DB}.rollup_watermark")
    starts = replay_starts(c, DB, org, {"s": ["F", "G"], "t": ["F", "G"]}, at)
    assert starts == {srv: replay_start(c, DB, org, srv, ["F", "G"], at) for srv in ("s", "t")}
    for srv, evs in (("s", events), ("t", other)):
        since = starts[srv]
        assert since is not None and since <= at
        whole = list(segments(read_rows(c, DB, org, srv, ["F", "G"])))
        late = list(segments(read_rows(c, DB, org, srv, ["F", "G"], start_us=since)))
        for t in sorted({at} | {e.ts for e in evs if e.ts >= at}):
            assert _held(late, t) == _held(whole, t), f"{srv} at {t}, replay from {since}"


def test_past_the_last_stored_minute_what_was_held_is_held_still(warehouse: tuple[Settings, Any]) -> None:
    """The minutes after the last event have no rows yet; a checkout open then is still open."""
    out = Event("s:1", BASE, "", "s", "V", "F", "OUT", "u1", "h1", None, 1, None, "src", 1)
    _check(warehouse[1], [out], BASE + 5 * 60 * US)
    _check(warehouse[1], [out], BASE + 5 * 60 * US)  # the other of with and without day rollups


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(histories())
def test_a_late_replay_holds_what_the_whole_history_holds(warehouse: tuple[Settings, Any],
                                                          history: tuple[list[Event], int]) -> None:
    events, at = history
    _check(warehouse[1], events, at)
