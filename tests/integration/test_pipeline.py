"""JSONL in, `lictel export usage` out, through a real broker, real Faust workers and real chDB."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lictel.engine import compute_rows
from lictel.events import event_to_line
from lictel.export import COLUMNS, minute_row, to_csv
from lictel.timeutil import US
from producers.simulate import SimSpec, simulate
from tests.integration.conftest import Lictel

DATA = Path(__file__).parent.parent / "data"
pytestmark = pytest.mark.integration


def test_hand_computed_rows(lictel: Lictel) -> None:
    run = lictel("run", "--jsonl", str(DATA / "small.jsonl"))
    assert "produced 8 events" in run.stderr
    assert "XDT_PLT_CCU" in run.stdout and "(estate)" in run.stdout
    pool = lictel("export", "usage", "--level", "pool", "--granularity", "minute", "--format", "csv")
    assert pool.stdout == (DATA / "small_pool.csv").read_text()
    estate = lictel("export", "usage", "--level", "estate", "--format", "csv")
    assert estate.stdout == (DATA / "small_estate.csv").read_text()
    hour = lictel("export", "usage", "--level", "estate", "--granularity", "hour", "--format", "csv")
    assert hour.stdout == (DATA / "small_estate_hour.csv").read_text()
    as_json = json.loads(lictel("export", "usage", "--level", "estate", "--format", "json").stdout)
    assert [list(r) for r in as_json] == [COLUMNS, COLUMNS]
    assert as_json[0]["peak"] == 4 and as_json[1]["license_seconds"] == 90.0


def _simulated(tmp: Path, shuffle: bool) -> tuple[Path, list]:
    events = list(simulate(SimSpec(users=150, servers=2, days=1, seed=7)))
    if shuffle:
        rnd = random.Random(3)
        # Disorder within 40 s, inside the default 60 s lateness.
        events_out = sorted(events, key=lambda e: e.ts + rnd.randrange(40 * US))
        assert events_out != events
    else:
        events_out = events
    path = tmp / "sim.jsonl"
    path.write_text("".join(event_to_line(e) + "\n" for e in events_out))
    return path, events


@pytest.mark.parametrize(("workers", "shuffle"), [(1, False), (1, True), (2, False), (2, True)])
def test_simulated_estate_matches_batch_recompute(lictel: Lictel, tmp_path: Path, workers: int,
                                                   shuffle: bool) -> None:
    path, events = _simulated(tmp_path, shuffle)
    lictel("run", "--jsonl", str(path), "--workers", str(workers))
    expected = compute_rows(events)
    for level in ("pool", "estate"):
        got = lictel("export", "usage", "--level", level, "--format", "csv").stdout
        want = to_csv(minute_row(r) for r in expected if r.level == level)
        assert got.count("\n") > 100
        assert got == want, f"{level} rows differ"


def test_bad_input_is_dead_lettered_and_the_run_goes_on(lictel: Lictel) -> None:
    run = lictel("run", "--jsonl", str(DATA / "bad.jsonl"))
    assert "4 bad input line(s) dead-lettered" in run.stderr
    bad = str(DATA / "bad.jsonl")
    assert f"line 2 of {bad}: malformed JSON" in run.stderr
    assert "field 'action': unknown action 'BORROW'" in run.stderr
    # The good lines still made rows.
    pool = lictel("export", "usage", "--format", "csv").stdout
    assert pool.count("\n") >= 2
    import chdb

    result = chdb.query("SELECT line, field, source FROM lictel.dead_letters FINAL ORDER BY line", "JSONCompact",
                        path=str(lictel.data_dir / "warehouse"))
    rows = json.loads(str(result))["data"]
    assert rows == [[2, None, bad], [3, "action", bad], [4, "server", bad], [5, "ts", bad]]


def test_late_event_is_reported_and_listed(lictel: Lictel) -> None:
    # One event per message, so the watermark has moved on when the 09:55 event arrives last.
    env = {**lictel.env, "LICTEL_BATCH_EVENTS": "1"}
    run = Lictel(lictel.data_dir, env)("run", "--jsonl", str(DATA / "late.jsonl"))
    assert "1 late event(s)" in " ".join(run.stderr.split())
    # Rows of the on-time events are unchanged; the late DENIED made no row of its own.
    assert lictel("export", "usage", "--format", "csv").stdout == (DATA / "small_pool.csv").read_text()
    import chdb

    got = chdb.query("SELECT event_id, action FROM lictel.late_events FINAL", "CSV",
                     path=str(lictel.data_dir / "warehouse"))
    assert str(got).strip() == '"lic02:hand.log:9","DENIED"'


def test_reconcile_makes_late_data_count_as_if_on_time(lictel: Lictel) -> None:
    from lictel.events import event_from_line

    path = DATA / "late_out.jsonl"
    env = {**lictel.env, "LICTEL_BATCH_EVENTS": "1"}
    run = Lictel(lictel.data_dir, env)("run", "--jsonl", str(path))
    assert "1 late event(s)" in " ".join(run.stderr.split())
    events = [event_from_line(line) for line in path.read_text().splitlines()]
    on_time = {level: to_csv(minute_row(r) for r in compute_rows(events) if r.level == level)
               for level in ("pool", "estate")}
    before = lictel("export", "usage", "--level", "pool", "--format", "csv").stdout
    assert before != on_time["pool"]  # the late checkout is missing from 09:59 and 10:00
    rec = lictel("reconcile", "--late")
    assert "changed" in rec.stdout and " 0 changed" not in rec.stdout
    for level in ("pool", "estate"):
        assert lictel("export", "usage", "--level", level, "--format", "csv").stdout == on_time[level], level
    again = lictel("reconcile", "--from", "2026-03-02T09:00:00Z", "--to", "2026-03-02T11:00:00Z")
    assert " 0 changed" in again.stdout  # recomputing final data again changes nothing
    # Past the end of the data: nothing is carried into minutes the stream has not made final.
    rows_before = lictel("export", "usage", "--level", "pool", "--format", "csv").stdout
    far = lictel("reconcile", "--from", "2026-03-02T09:00:00Z", "--to", "2026-03-09T00:00:00Z")
    assert " 0 changed" in far.stdout and "final up to 2026-03-02T10:02:00Z" in " ".join(far.stdout.split())
    assert lictel("export", "usage", "--level", "pool", "--format", "csv").stdout == rows_before


def test_reconcile_never_carries_a_held_license_past_what_is_final(lictel: Lictel, tmp_path: Path) -> None:
    """Licenses still held at the end of the data: a reconcile to a later bound writes no minute the
    stream has not reached (they would read as usage no source has seen)."""
    lines = [{"event_id": f"lic01:h:{i}", "ts": ts, "org": "acme", "server": "lic01", "vendor": "CITRIX",
              "feature": "XDT_PLT_CCU", "action": "OUT", "user": f"u{i}", "host": f"h{i}", "handle": None,
              "count": 1, "reason": None, "source": "lic01:h", "seq": i}
             for i, ts in enumerate(["2026-03-02T10:00:05Z", "2026-03-02T10:20:00Z"])]
    path = tmp_path / "held.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    lictel("run", "--jsonl", str(path))
    stored = lictel("export", "usage", "--level", "pool", "--format", "csv").stdout
    assert stored.count("\n") == 1 + 21  # 10:00 .. 10:20, the last event's minute
    rec = lictel("reconcile", "--from", "2026-03-02T00:00:00Z", "--to", "2026-03-03T00:00:00Z")
    assert "42 rows before, 42 after, 0 changed" in rec.stdout, rec.stdout  # pool and estate
    assert lictel("export", "usage", "--level", "pool", "--format", "csv").stdout == stored
