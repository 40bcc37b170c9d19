"""The FlexNet debug-log parser on logs written by us from the documented formats, a round trip,
and the real corpus in ../shared/corpus/flexnet (every line accounted for)."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from pathlib import Path

import pytest

from lictel.engine import compute_rows
from lictel.events import Event
from lictel.timeutil import parse_ts
from producers.flexnet import FlexnetParser, Skipped, render
from producers.simulate import SimSpec, simulate

DATA = Path(__file__).resolve().parent.parent / "data" / "flexnet"
CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "flexnet"


def parse(name: str, **kw: object) -> tuple[list[Event], list[Skipped], FlexnetParser]:
    kw.setdefault("tz", "UTC")
    p = FlexnetParser(org="acme", server="lic01", **kw)  # type: ignore[arg-type]
    text = (DATA / name).read_text(encoding="utf-8")
    items = [*p.parse(text.splitlines(), name), *p.finish()]
    return ([i for i in items if isinstance(i, Event)], [i for i in items if isinstance(i, Skipped)], p)


def test_every_line_kind_of_the_compact_format() -> None:
    events, skipped, p = parse("basic.log", tz="Europe/Berlin")
    got = [(e.action, e.feature, e.user, e.host, e.handle, e.count, e.ts) for e in events]
    t = lambda hms: parse_ts(f"2026-03-02T{hms}+01:00")  # noqa: E731 - Berlin winter time
    assert got == [
        ("RESTART", "", "", "", None, 1, t("09:00:01")),
        ("OUT", "XDT_PLT_CCU", "alice", "pc-1", None, 1, t("09:15:03")),
        ("OUT", "XDT_PLT_CCU", "Renée Müller", "pc-2", None, 1, t("09:15:03")),
        ("OUT", "XDT_ENT_UD", "bob", "pc-3", "project x", 3, t("09:20:00")),
        ("DENIED", "XDT_PLT_CCU", "carol", "pc-4", None, 1, t("09:21:00")),
        ("UNSUPPORTED", "XDS_PLT_CCS", "dave", "pc-5", None, 1, t("09:21:30")),
        ("QUEUED", "XDT_PLT_CCU", "carol", "pc-4", None, 1, t("09:22:00")),
        ("DEQUEUED", "XDT_PLT_CCU", "carol", "pc-4", None, 1, t("09:23:00")),
        ("IN", "XDT_PLT_CCU", "alice", "pc-1", None, 1, t("09:30:00")),
        ("IN", "XDT_ENT_UD", "bob", "pc-3", "project x", 3, t("09:31:00")),
        ("OUT", "XDT_PLT_CCU", "frank", "pc-7", None, 1, t("23:59:50")),
        ("IN", "XDT_PLT_CCU", "frank", "pc-7", None, 1, parse_ts("2026-03-03T00:00:10+01:00")),
        ("IN", "XDT_PLT_CCU", "Renée Müller", "pc-2", None, 1, parse_ts("2026-03-03T08:00:00+01:00")),
        ("RESTART", "", "", "", None, 1, parse_ts("2026-03-03T08:00:00+01:00")),
        ("RESTART", "", "", "", None, 1, parse_ts("2026-03-03T08:00:00+01:00")),
    ]
    assert events[4].reason == "Licensed number of users already reached. (-4,342)"
    assert {e.vendor for e in events} == {"CITRIX"}
    dead = [(s.line, s.reason.split(" (")[0]) for s in skipped if s.dead]
    assert dead == [(14, "unparseable"), (15, "unparseable")]
    assert p.stats.lines == 21 and len({s.line for s in skipped}) + len({e.seq // 16 for e in events}) == 21
    assert len({e.event_id for e in events}) == len(events)


def test_the_repeated_dst_hour_is_read_as_its_second_pass() -> None:
    events, _, _ = parse("dst.log", tz="America/New_York")
    # 01:30 and 01:50 EDT, then the clock falls back: 01:10 and 01:55 are EST, then 02:05 EST.
    assert [e.ts for e in events] == [parse_ts(x) for x in (
        "2016-11-06T05:30:00Z", "2016-11-06T05:50:00Z", "2016-11-06T06:10:00Z", "2016-11-06T06:55:00Z",
        "2016-11-06T07:05:00Z")]


def test_lines_before_the_first_date_are_dated_backwards() -> None:
    events, _, _ = parse("nodate.log")
    assert [e.ts for e in events] == [parse_ts(x) for x in (
        "2022-06-09T22:00:00Z", "2022-06-09T23:30:00Z", "2022-06-10T01:00:00Z", "2022-06-10T03:00:00Z")]


def test_a_log_without_any_date_says_so_or_takes_date() -> None:
    events, skipped, _ = parse("undated.log")
    assert events == [] and all(s.dead and "give --date" in s.reason for s in skipped)
    events, _, _ = parse("undated.log", date=dt.date(2026, 3, 2))
    assert [e.ts for e in events] == [parse_ts("2026-03-02T10:00:00Z"), parse_ts("2026-03-02T11:00:00Z")]


def test_restart_closes_what_was_held() -> None:
    events, _, _ = parse("basic.log", tz="Europe/Berlin")
    rows = compute_rows(events)
    last = max((r for r in rows if r.level == "pool" and r.feature == "XDT_PLT_CCU"), key=lambda r: r.minute)
    # The SHUTDOWN check-in and the daemon's exit at 08:00 leave nothing held.
    assert last.minute == parse_ts("2026-03-03T07:00:00Z") and last.low == 0 and last.checkins == 1


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin"])
def test_round_trip_render_then_parse_gives_the_same_rows(tz: str) -> None:
    spec = SimSpec(users=60, servers=1, days=3, seed=3)
    events = list(simulate(spec))
    lines = list(render(events, tz))
    p = FlexnetParser(org=spec.org, server=events[0].server, tz=tz)
    parsed = [i for i in p.parse(lines, "sim.log") if isinstance(i, Event)]
    assert not any(isinstance(i, Skipped) and i.dead for i in p.parse(lines, "again.log"))
    assert len(parsed) == len(events)
    assert compute_rows(parsed) == compute_rows(events)


def _corpus_counts(text: str) -> Counter[str]:
    c: Counter[str] = Counter()
    for name, pattern in (("OUT", r'\) OUT: "'), ("IN", r'\) IN: "'), ("DENIED", r'\) DENIED: "'),
                          ("UNSUPPORTED", r'\) UNSUPPORTED: "')):
        c[name] = len(re.findall(pattern, text))
    return c


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus/flexnet is not beside this checkout")
@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.log")) if CORPUS.is_dir() else [], ids=lambda p: p.name[:40])
def test_real_logs_every_line_is_an_event_or_accounted_for(path: Path) -> None:
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    p = FlexnetParser(org="org", server="srv", tz="UTC")
    items = [*p.parse(lines, path.name), *p.finish()]
    accounted = {i.line if isinstance(i, Skipped) else i.seq // 16 for i in items}
    assert accounted == set(range(1, len(lines) + 1))
    events = [i for i in items if isinstance(i, Event)]
    counts = Counter(e.action for e in events)
    # Lines of a block pasted twice count once (talestk logfile: the tail repeats an earlier session).
    repeated = {i.line for i in items if isinstance(i, Skipped) and i.reason.startswith("repeats")}
    assert p.stats.repeated_lines == len(repeated)
    want = _corpus_counts("\n".join(t for n, t in enumerate(lines, 1) if n not in repeated))
    # Every usage line became its event (hand-damaged lines are dead letters, with their reason).
    damaged = sum(1 for i in items if isinstance(i, Skipped) and i.dead and re.search(r'\) (OUT|IN): "', i.raw))
    assert counts["OUT"] + counts["IN"] + damaged == want["OUT"] + want["IN"]
    assert counts["DENIED"] == want["DENIED"]
    assert counts["UNSUPPORTED"] == want["UNSUPPORTED"]
    # A reason is the server's error code, never the socket detail of how the client went away.
    assert not [e.reason for e in events if e.reason and re.search(r"\(-?\d+,-?\d+:", e.reason)]


def test_unsupported_is_its_own_action_and_reasons_drop_the_socket_detail() -> None:
    p = FlexnetParser(org="o", server="s", tz="UTC")
    lines = [' 8:00:00 (lmgrd) TIMESTAMP 3/2/2026',
             ' 9:00:00 (MLM) DENIED: "MATLAB" ann@pc1  (Licensed number of users already reached. (-4,342:10054 ""))',
             ' 9:00:01 (MLM) DENIED: "MATLAB" ann@pc1  (Licensed number of users already reached. '
             '(-4,342:104 "Connection reset by peer"))',
             ' 9:00:02 (MLM) DENIED: "MATLAB" ann@pc1  (Licensed number of users already reached. (-4,342))',
             ' 9:00:03 (MLM) UNSUPPORTED: "NOPE" (PORT_AT_HOST_PLUS   ) bob@pc2  (License server system does not '
             'support this feature. (-18,327:10054 ""))']
    events = [i for i in p.parse(lines, "x.log") if isinstance(i, Event)]
    assert [(e.action, e.reason) for e in events] == [
        ("DENIED", "Licensed number of users already reached. (-4,342)")] * 3 + [
        ("UNSUPPORTED", "License server system does not support this feature. (-18,327)")]
    assert (events[3].user, events[3].host, events[3].feature) == ("bob", "pc2", "NOPE")
    # Not a denial of a licensed feature: no usage key, no denial counted.
    rows = compute_rows(events)
    assert {r.feature for r in rows} == {"MATLAB"} and sum(r.denials for r in rows if r.level == "pool") == 3


def test_verbose_blocks_and_forked_daemons() -> None:
    events, skipped, _ = parse("verbose.log")
    assert not [s for s in skipped if s.dead]
    got = [(e.action, e.vendor, e.user, e.host, e.handle) for e in events]
    assert got == [("OUT", "demo", "alice", "pc-1", "0x12CE"), ("OUT", "demo", "alice", "pc-1", "0x12CF"),
                   ("IN", "demo", "alice", "pc-1", "0x12CE"), ("IN", "demo", "alice", "pc-1", "0x12CF")]
    # Two checkouts by one user on one host, told apart by their handles: the peak is 2.
    assert max(r.peak for r in compute_rows(events)) == 2


def test_datestamp_lines_carry_their_own_date_and_offset() -> None:
    # lmgrd -datestamp across the night the clocks fall back (Europe, 2026-10-25): every line
    # names its offset, so the repeated hour needs no guessing and --tz does not matter.
    events, skipped, p = parse("datestamp.log", tz="America/New_York")
    got = [(e.action, e.vendor, e.user, e.count, e.ts) for e in events]
    assert got == [
        ("RESTART", "CITRIX", "", 1, parse_ts("2026-10-24T21:59:51Z")),
        ("OUT", "CITRIX", "alice", 1, parse_ts("2026-10-24T21:59:58Z")),
        ("OUT", "CITRIX", "bob", 2, parse_ts("2026-10-24T22:00:05Z")),
        ("IN", "CITRIX", "alice", 1, parse_ts("2026-10-25T00:30:00Z")),
        ("DENIED", "CITRIX", "carol", 1, parse_ts("2026-10-25T01:10:00Z")),
        ("IN", "CITRIX", "bob", 2, parse_ts("2026-10-25T01:20:00Z")),
        ("OUT", "CITRIX", "dave", 1, parse_ts("2026-10-25T07:00:00Z")),
        ("IN", "CITRIX", "dave", 1, parse_ts("2026-10-25T07:00:00Z")),
    ]
    assert [(s.line, s.reason.split(" (")[0]) for s in skipped if s.dead] == [(12, "unparseable")]
    assert p.stats.lines == 12 and not p.stats.warnings
    # Mixed with compact lines (a server restarted without -datestamp), the date carries over.
    q = FlexnetParser(org="acme", server="lic01", tz="UTC")
    lines = ["2026-03-02T23:50:00Z (CITRIX) OUT: \"F\" u@h", "0:10:00 (CITRIX) IN: \"F\" u@h"]
    mixed = [i for i in [*q.parse(lines, "x.log"), *q.finish()] if isinstance(i, Event)]
    assert [e.ts for e in mixed] == [parse_ts("2026-03-02T23:50:00Z"), parse_ts("2026-03-03T00:10:00Z")]
