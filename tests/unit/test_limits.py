"""What an event may carry (lictel.limits): the limits of storage and of plausibility."""

from __future__ import annotations

import json

import pytest

from lictel import limits
from lictel.errors import InputError
from lictel.events import Event, event_from_json, event_from_line
from lictel.timeutil import DAY_US, parse_ts

NOW = parse_ts("2026-11-25T08:00:00Z")


def ev(ts: str = "2026-03-02T09:00:00Z", **kw: object) -> Event:
    base = Event("s:1", parse_ts(ts), "acme", "lic01", "V", "F", "OUT", "ann", "pc1", None, 1, None, "s", 1)
    return base._replace(**kw)


@pytest.mark.parametrize("ts", ["1970-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "1989-12-31T23:59:59Z"])
def test_dates_before_1990_are_refused(ts: str) -> None:
    got = limits.problem(ev(ts), NOW)
    assert got is not None and got[0] == "ts" and "before 1990" in got[1]


@pytest.mark.parametrize("ts", ["2300-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2026-11-26T08:00:01Z"])
def test_dates_more_than_a_day_ahead_of_the_wall_clock_are_refused(ts: str) -> None:
    got = limits.problem(ev(ts), NOW)
    assert got is not None and got[0] == "ts" and "after the wall clock" in got[1]


def test_a_day_ahead_and_the_recent_past_are_accepted() -> None:
    assert limits.problem(ev("2026-11-26T07:59:59Z"), NOW) is None
    assert limits.problem(ev("1990-01-01T00:00:00Z"), NOW) is None


@pytest.mark.parametrize(("field", "value", "why"), [
    ("count", 0, "between 1"), ("count", 2**31, "between 1"), ("count", 2**63, "between 1"),
    ("seq", 2**63, "2^63"), ("seq", -1, "2^63"),
    ("user", "a\ud800b", "lone surrogate"), ("host", "pc\x001", "U+0000"), ("feature", "F\x1b[31m", "U+001B"),
    ("user", "u" * 1025, "longer than 1,024"), ("reason", "r" * 4097, "longer than 4,096"),
])
def test_values_storage_cannot_hold_are_refused(field: str, value: object, why: str) -> None:
    got = limits.problem(ev(**{field: value}), NOW)
    assert got is not None and got[0] == field and why in got[1]


def test_free_text_may_hold_a_tab_names_may_not() -> None:
    assert limits.problem(ev(reason="a\tb"), NOW) is None
    assert limits.problem(ev(user="a\tb"), NOW) == ("user", "contains the control character U+0009")


def test_an_event_years_from_the_rest_of_its_source_is_refused() -> None:
    clock = limits.SourceClock()
    first = ev("2026-03-02T09:00:00Z")
    assert clock.problem(first) is None
    clock.accept(first)
    assert clock.problem(ev("2026-09-01T00:00:00Z")) is None
    far = clock.problem(ev("2000-03-02T09:00:00Z"))
    assert far is not None and "days from the previous event of s" in far[1]
    assert clock.problem(ev("2000-03-02T09:00:00Z", source="other")) is None  # each source its own clock
    assert limits.SourceClock(10 * DAY_US).problem(ev("2026-03-20T00:00:00Z")) is None  # nothing seen yet


def test_json_lines_name_the_line_and_field_of_a_value_storage_cannot_hold() -> None:
    line = {"event_id": "x", "ts": "2026-03-02T09:00:00Z", "org": "a", "server": "s", "vendor": "V",
            "feature": "F", "action": "OUT", "user": "u", "host": "h", "count": 2**40, "source": "s", "seq": 1}
    with pytest.raises(InputError) as err:
        event_from_json(line, source="f.jsonl", line=7)
    assert err.value.field == "count" and err.value.line == 7 and "1,000,000" in err.value.reason
    text = json.dumps({**line, "count": 1, "user": "\ud800"})
    with pytest.raises(InputError) as err2:
        event_from_line(text, source="f.jsonl", line=8)
    assert err2.value.field == "user" and "surrogate" in err2.value.reason


@pytest.mark.parametrize("bad", [
    {"ts": limits.MIN_TS - 1}, {"ts": NOW + limits.MAX_AHEAD_US + 1}, {"count": 0}, {"count": limits.MAX_COUNT + 1},
    {"seq": -1}, {"user": "a\tb"}, {"host": "h" * (limits.MAX_TEXT + 1)}, {"event_id": "x\x00"},
    {"reason": "r" * (limits.MAX_REASON + 1)}, {},
])
@pytest.mark.parametrize("via_reader", [True, False])
def test_a_batch_is_clean_only_when_every_event_is(bad: dict[str, object], via_reader: bool) -> None:
    """columns_clean, with the extremes the columnar reader found (or without, as for a batch read
    by fastavro), never passes a batch holding an event that problem() refuses."""
    from lictel.serde import Serde, event_columns

    serde = Serde()
    events = [ev(seq=i, event_id=f"s:{i}", user=f"u{i}") for i in range(1, 200)]  # past avrocols.WORTH_BYTES
    events[17] = events[17]._replace(**bad)
    cols, _ = serde.decode_event_columns(serde.events.encode({"columns": event_columns(events), "prev": {}}))
    assert ("bounds" in cols) and cols["bounds"]["ts"] == (min(e.ts for e in events), max(e.ts for e in events))
    if not via_reader:
        del cols["bounds"]
    clean = limits.columns_clean(cols, NOW)
    assert clean == (not bad)
    assert clean == all(limits.problem(e, NOW) is None for e in events)
