"""The column-at-a-time recompute (lictel.recompute) against the engine, row for row.

Generated streams (hypothesis) cover what the arrays must get right: check-ins of more than is
held, orphans, RESTARTs at the same instant as checkouts of their daemon, several vendors, ties,
counts above one, duplicates and every DUP_GROUP rule; the simulated estate and the damaged and
concatenated inputs of the real-world tests cover size.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lictel.dupgroup import DupRules
from lictel.engine import compute_rows
from lictel.events import HEARTBEAT, IN, OUT, REREAD, RESTART, Event
from lictel.recompute import compute, events_of, recompute_rows
from lictel.timeutil import DAY_US, MINUTE_US, US, floor_minute
from producers.simulate import SimSpec, simulate
from tests.unit.test_engine_property import BASE, RULES, event_streams


def _until(events: list[Event]) -> int:
    return floor_minute(max(e.ts for e in events)) + MINUTE_US


def _unique(events: list[Event]) -> list[Event]:
    """Each event id once, as the warehouse keeps raw events (``raw_events FINAL``)."""
    return list({e.event_id: e for e in events}.values())


@settings(max_examples=400, deadline=None)
@given(event_streams())
def test_equal_to_the_engine_on_generated_streams(events: list[Event]) -> None:
    events = _unique(events)
    until = _until(events)
    cols = events_of(events)
    rows = compute(cols, until)
    assert rows.declined == set()  # no rule, no session, no id twice: all of it by arrays
    assert recompute_rows(events, until) == compute_rows(events, until_us=until)


@st.composite
def ones(draw: st.DrawFn) -> list[Event]:
    """Streams whose checkouts are all of one license (what a rule is charged by arrays for)."""
    return [e._replace(count=1) if e.action == OUT else e for e in _unique(draw(event_streams()))]


@settings(max_examples=300, deadline=None)
@given(ones(), st.sampled_from(RULES), st.sampled_from(RULES))
def test_licenses_charged_under_every_rule(events: list[Event], rule_f: str, rule_g: str) -> None:
    until = _until(events)
    rules = DupRules({"F": rule_f, "G": rule_g})
    assert compute(events_of(events, rules), until, rules).declined == set()
    assert recompute_rows(events, until, rules=rules) == compute_rows(events, until_us=until, rules=rules)


@settings(max_examples=200, deadline=None)
@given(event_streams(), st.sampled_from(RULES))
def test_what_arrays_decline_the_engine_computes(events: list[Event], rule: str) -> None:
    # Ids stored twice and checkouts of several licenses under a rule go to the engine, per
    # (org, feature); the rows together are the engine's.
    until = _until(events)
    rules = DupRules({"*": rule})
    assert recompute_rows(events, until, rules=rules) == compute_rows(events, until_us=until, rules=rules)


def test_an_event_id_twice_and_a_multi_license_checkout_under_a_rule_are_declined() -> None:
    out = Event("a:1", BASE, "acme", "a", "V", "F", OUT, "u1", "h1", None, 2, None, "src", 1)
    other = Event("a:2", BASE + US, "acme", "a", "V", "G", OUT, "u1", "h1", None, 1, None, "src", 2)
    again = Event("a:2", BASE + 2 * US, "acme", "a", "V", "G", IN, "u1", "h1", None, 1, None, "src", 3)
    rows = compute(events_of([out, other, again], DupRules({"F": "UH"})), BASE + MINUTE_US, DupRules({"F": "UH"}))
    assert rows.declined == {("acme", "F"), ("acme", "G")}
    assert len(rows) == 0
    assert compute(events_of([out, other]), BASE + MINUTE_US).declined == set()


def test_a_server_clock_that_jumps_a_year_is_left_to_the_engine() -> None:
    # The engine refuses the event a year off; arrays cannot tell which of the two is damaged.
    good = Event("a:1", BASE, "acme", "a", "V", "F", OUT, "u1", "h1", None, 1, None, "src", 1)
    far = good._replace(event_id="a:2", ts=BASE + 400 * DAY_US, action=IN, seq=2)
    other = good._replace(event_id="b:1", server="b", feature="G")
    events = [good, far, other]
    rows = compute(events_of(events), _until(events))
    assert rows.declined == {("acme", "F")}
    assert recompute_rows(events) == compute_rows(events)


def test_recorded_only_events_and_restarts_without_holdings_make_no_rows() -> None:
    reread = Event("a:1", BASE, "acme", "a", "V", "", REREAD, "", "", None, 1, None, "src", 1)
    restart = reread._replace(event_id="a:2", action=RESTART, seq=2)
    out = Event("a:3", BASE + 5 * MINUTE_US, "acme", "a", "V", "F", OUT, "u1", "h1", None, 1, None, "src", 3)
    events = [reread, restart, out]
    rows = recompute_rows(events, BASE + 7 * MINUTE_US)
    assert rows == compute_rows(events, until_us=BASE + 7 * MINUTE_US)
    assert [r.minute for r in rows if r.level == "pool"] == [BASE + 5 * MINUTE_US, BASE + 6 * MINUTE_US]


def test_a_simulated_estate_reordered_and_concatenated() -> None:
    events = [e for e in simulate(SimSpec(users=400, servers=3, days=1, seed=7)) if e.action != HEARTBEAT]
    until = _until(events)
    want = compute_rows(events, until_us=until)
    assert recompute_rows(events[::-1], until) == want  # any arrival order
    # The same log stored twice under new ids (a concatenated export) is a history of its own:
    # every checkout twice. Both sides agree on it, row for row.
    twice = events + [e._replace(event_id=e.event_id + "#2", seq=e.seq + 10**9) for e in events]
    assert recompute_rows(twice, until) == compute_rows(twice, until_us=until)
    # An IN dropped (a damaged line): the checkout stays held to the end, on both sides.
    cut = [e for i, e in enumerate(events) if not (e.action == IN and i % 97 == 0)]
    assert recompute_rows(cut, until) == compute_rows(cut, until_us=until)


def test_releases_of_restarts_after_the_last_checkout_keep_their_time_order() -> None:
    # Two RESTARTs after every checkout: their forced releases go in after the same last event, the
    # later RESTART's first in identity order. Found by the generated streams above.
    def ev(i: int, ts: int, feature: str, action: str, handle: str | None = None) -> Event:
        return Event(f"a:{i}", ts, "acme", "a", "V", feature, action, "u1", "h1", handle, 1, None, "src", i)

    events = [ev(1, BASE + US, "", RESTART), ev(2, BASE + US, "F", OUT), ev(3, BASE, "F", OUT),
              ev(5, BASE + MINUTE_US, "", RESTART), ev(14, BASE, "", RESTART), ev(15, BASE, "F", OUT),
              ev(21, BASE, "F", OUT, "7")]
    rows = recompute_rows(events)
    assert rows == compute_rows(events)
    assert [(r.minute - BASE, r.forced_releases) for r in rows if r.level == "pool"] == [(0, 3), (MINUTE_US, 1)]
