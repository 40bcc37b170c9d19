"""Fuzzing every parser with hypothesis: no input crashes one, and every input line or record ends
as an event, a counted skip or a dead letter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lictel import limits
from lictel.errors import InputError
from lictel.events import Event, event_from_line
from producers.flexnet import FlexnetParser, Skipped
from producers.sessions import SessionExportReader

# Pieces of real FlexNet lines, recombined and damaged: the parser meets what logs hold, and worse.
_CLOCKS = st.sampled_from([" 8:15:20", "23:59:59", " 0:00:01", "12:00:00", "25:61:61", " 6:15:20", "", "9:9:9"])
_DAEMONS = st.sampled_from(["(lmgrd)", "(CITRIX)", "(MLM)", "(MLM_2)", "()", "(", "(x y)"])
_BODIES = st.sampled_from([
    'OUT: "F" ann@pc1', 'IN: "F" ann@pc1', 'OUT: "F" ann@pc1  (3 licenses)', 'IN: "F" ann@pc1  (SHUTDOWN)',
    'DENIED: "F" bob@pc2  (Licensed number of users already reached. (-4,342:10054 ""))',
    'UNSUPPORTED: "G" (PORT_AT_HOST_PLUS   ) cy@pc3  (No such feature exists. (-5,346))',
    'QUEUED: "F" di@pc4', 'DEQUEUED: "F" di@pc4', 'OUT: "F" [proj] ed@pc5', "TIMESTAMP 3/2/2026",
    "TIMESTAMP 1/1/1970", "TIMESTAMP 13/45/2026", "Rereading license file...", "...Finished rereading",
    "Server started on lic01 for: F G", "EXITING DUE TO SIGNAL 15", "(lmgrd) MLM exited with status 0",
    'OUT: "F"', 'IN: F ann@pc1', "IN\ufffd\ufffd: \"F\" ann@pc1", 'OUT: "F" a\x00n@pc1', "^^^ 1 2 3 ^^^",
    "FlexNet Licensing (v11.19.6.0 build 1 x64_n6) started on lic01 (IBM PC) (3/2/2026)",
    "Server's System Date and Time: Mon Mar 02 2026 08:00:00 Eastern Standard Time", "", "\ufeff",
])


@st.composite
def flexnet_lines(draw: st.DrawFn) -> list[str]:
    lines = []
    for _ in range(draw(st.integers(1, 40))):
        if draw(st.integers(0, 9)) == 0:
            lines.append(draw(st.text(max_size=60)))
        else:
            lines.append(f"{draw(_CLOCKS)} {draw(_DAEMONS)} {draw(_BODIES)}{draw(st.text(max_size=3))}")
    return lines


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flexnet_lines())
def test_flexnet_parser_never_crashes_and_accounts_for_every_line(lines: list[str]) -> None:
    p = FlexnetParser(org="o", server="s", tz="UTC")
    items = [*p.parse(lines, "f.log"), *p.finish()]
    events = {i.seq // 16 for i in items if isinstance(i, Event)}
    skipped = {i.line for i in items if isinstance(i, Skipped)}
    assert events | skipped == set(range(1, len(lines) + 1))
    assert p.stats.lines == len(lines)


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    st.text(max_size=200),
    st.dictionaries(st.sampled_from(["event_id", "ts", "org", "server", "vendor", "feature", "action", "user",
                                     "host", "handle", "count", "reason", "source", "seq", "extra"]),
                    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                              st.text(max_size=20), st.sampled_from(["OUT", "IN", "RESTART", "HEARTBEAT",
                                                                     "2026-03-02T09:00:00Z", "9999-12-31T00:00:00Z",
                                                                     "\ud800"])),
                    max_size=15).map(lambda d: json.dumps(d)),
))
def test_json_lines_give_an_event_within_the_limits_or_an_input_error(text: str) -> None:
    try:
        ev = event_from_line(text, source="f.jsonl", line=1)
    except InputError as err:
        assert err.line == 1 and err.reason
        return
    assert limits.value_problem(ev) is None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.booleans())
def test_session_exports_never_crash(data: bytes, as_csv: bool) -> None:
    import tempfile

    head = b"session_key,user,device,ts,event\n" if as_csv else b""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("x.csv" if as_csv else "x.json")
        path.write_bytes(head + data)
        reader = SessionExportReader("o", "site", "F", tz="UTC")
        events, errors = reader.read(path)
    assert all(isinstance(e, InputError) for e in errors)
    assert all(isinstance(e, Event) for e in events)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["flexnet", "jsonl", "sessions"])
def test_coverage_guided_fuzzing_finds_no_crash(target: str) -> None:
    # libFuzzer (atheris) for a bounded time per parser: it stops at the first crash with its input.
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent.parent
    run = subprocess.run([sys.executable, str(root / "tests" / "fuzz" / "fuzz_parsers.py"), target,
                          "-max_total_time=60", "-rss_limit_mb=2048", "-print_final_stats=1"],
                         cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True,
                         timeout=300)
    tail = "\n".join(run.stderr.splitlines()[-30:])
    assert run.returncode == 0, f"the {target} parser crashed under fuzzing:\n{tail}"
    assert "Done " in run.stderr
