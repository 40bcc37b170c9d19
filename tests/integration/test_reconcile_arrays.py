"""``lictel reconcile`` through a real chDB warehouse: what it stores equals the engine's rows.

The recompute reads raw events as Arrow columns with hashed identities, computes most keys with
arrays (lictel.recompute) and the rest with the engine, compares with the stored rows and writes a
new version. Here the stored history is messy on purpose: a session series and a multi-license
checkout under a rule (both left to the engine), an event id stored twice with two times, a date a
year off, RESTARTs, check-ins of nothing; and the stored minutes disagree with it (rows missing,
altered, extra). After the reconcile, the minutes read back (FINAL) are exactly the engine's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from lictel.config import Settings
from lictel.dupgroup import DupRules
from lictel.engine import MinuteRow, compute_rows, sort_rows
from lictel.errors import WarehouseError
from lictel.events import HEARTBEAT, IN, LOGOFF, LOGON, OUT, RESTART, Event
from lictel.recompute import compute
from lictel.reconcile import read_events, reconcile
from lictel.timeutil import MINUTE_US, US, floor_minute
from lictel.warehouse import insert_arrow
from producers.simulate import SimSpec, simulate
from sinks.clickhouse import RAW_COLUMNS, STREAM_VERSION, USAGE_COLUMNS, write_minute_rows

BASE = 1_772_409_600 * US  # 2026-03-02T00:00:00Z, the simulation's first day


def _messy() -> list[Event]:
    events = [e for e in simulate(SimSpec(users=300, servers=2, days=1, seed=11)) if e.action != HEARTBEAT]
    base = dict(org="acme", server="lic01", vendor="V", user="u1", host="h1", handle=None, count=1, reason=None,
                source="extra")

    def ev(i: int, minute: int, **kw: Any) -> Event:
        fields = base | {"event_id": f"x:{i}", "ts": BASE + minute * MINUTE_US + 7 * US, "feature": "CAD",
                         "action": OUT, "seq": i} | kw
        return Event(*(fields[name] for name in Event._fields))

    events += [
        ev(1, 60), ev(2, 61, count=3), ev(3, 90, action=IN, count=2),  # CAD: a checkout of 3 under a rule
        ev(4, 100, action=IN, user="nobody"),  # a check-in of nothing
        ev(5, 120, action=RESTART, feature=""),  # releases what V holds on lic01
        ev(6, 200, feature="CAE"), ev(7, 210, feature="CAE", user="u2"), ev(8, 230, feature="CAE", action=IN),
        ev(9, 300, feature="CAE", event_id="x:9"), ev(10, 305, feature="CAE", event_id="x:9", action=IN),  # id twice
        ev(11, 400, feature="CAF", server="lic02"), ev(12, 400 - 400 * 1440, feature="CAF", server="lic02",
                                                      action=IN),  # a date a year off
        ev(13, 500, vendor="SESSIONS", feature="Desktop", action=LOGON, handle="s1", server="vda01"),
        ev(14, 540, vendor="SESSIONS", feature="Desktop", action=LOGOFF, handle="s1", server="vda01"),
    ]
    return events


@pytest.mark.parametrize(("rule_of", "declined"), [
    # Two ways of grouping (a choice per row in the read); a checkout of 3 under a rule: the engine's.
    ({"CAD": "UH", "*": "U"}, {"CAD", "CAE", "CAF", "Desktop"}),
    # One way, on one simulated feature (every row hashed, only that feature's read): the arrays'.
    ({"XDT_PLT_CCU": "UH"}, {"CAE", "CAF", "Desktop"}),
], ids=["two-groupings", "one-grouping"])
def test_reconcile_stores_exactly_the_engines_rows(warehouse: tuple[Settings, Any], rule_of: dict[str, str],
                                                   declined: set[str]) -> None:
    settings, client = warehouse
    db = settings.clickhouse_database
    events = _messy()
    end = floor_minute(max(e.ts for e in events)) + MINUTE_US
    client.insert(f"{db}.raw_events", [list(c) for c in zip(*events, strict=True)], column_names=RAW_COLUMNS,
                  column_oriented=True)
    client.insert(f"{db}.pipeline_progress", [[p, s, end + 3600 * US] for p in range(8)
                                               for s in ("events", "sessions")],
                  column_names=["partition", "stream", "final_upto"])
    rules = DupRules(rule_of)
    # Reconcile goes as far as the stream makes minutes final: a pool to its server's clock (the
    # minute of its newest event), an estate to its newest server's. Beyond, stored rows stay.
    clock: dict[tuple[str, str], int] = {}
    for e in events:
        clock[(e.org, e.server)] = max(clock.get((e.org, e.server), 0), floor_minute(e.ts) + MINUTE_US)

    newest: dict[tuple[str, str], int] = {}  # (org, feature) -> its newest server's clock
    for e in events:
        newest[(e.org, e.feature)] = max(newest.get((e.org, e.feature), 0), clock[(e.org, e.server)])

    def reach(r: MinuteRow) -> int:
        return clock[(r.org, r.server)] if r.server else newest[(r.org, r.feature)]

    engine = sort_rows(compute_rows([e for e in events if e.ts < end], until_us=end, rules=rules))
    want = [r for r in engine if r.minute < reach(r)]
    assert {r.source for r in want} == {"license", "sessions"} and len(want) < len(engine)
    # What the stream stored: the same minutes without rules (carried to the end: rows past a
    # server's clock), one in ten missing, one altered, one extra before the first event of its key.
    stored = [r for i, r in enumerate(compute_rows([e for e in events if e.ts < end], until_us=end)) if i % 10]
    stored[3] = stored[3]._replace(peak=stored[3].peak + 5)
    first = next(r for r in stored if r.minute > BASE + MINUTE_US)
    stored.append(first._replace(minute=first.minute - MINUTE_US, peak=9, low=9))
    write_minute_rows(client, db, stored, version=STREAM_VERSION)
    beyond = [r for r in stored if r.minute >= reach(r)]
    assert beyond

    # What arrays leave to the engine here, read as reconcile reads it.
    servers = sorted({(e.org, e.server) for e in events})
    features = sorted({(e.org, e.feature) for e in events if e.feature})
    assert compute(read_events(client, db, servers, end, features, rules), end, rules).declined == {
        ("acme", f) for f in declined}

    res = reconcile(client, db, BASE, end, rules=rules)
    assert res.events == len(events)

    columns = ", ".join(c if c != "minute" else "toUnixTimestamp(minute) * 1000000" for c in USAGE_COLUMNS[:-1])
    got = [MinuteRow(level, org, server, feature, minute, *metrics, dup_group, source)
           for level, source, org, server, feature, minute, *metrics, dup_group in client.query(
               f"SELECT {columns} FROM {db}.usage_minute FINAL").result_rows]
    assert sort_rows(got) == sort_rows(want + beyond)

    def keyed(rows: list[MinuteRow]) -> dict[tuple[Any, ...], MinuteRow]:
        return {(r.source, r.level, r.org, r.server, r.feature, r.minute): r for r in rows}

    before, after = keyed([r for r in stored if r.minute < reach(r)]), keyed(want)
    assert res.rows_after == len(after) and res.rows_before == len(before)
    assert res.rows_changed == sum(before.get(k) != after.get(k) for k in before.keys() | after.keys())
    # Every row under a rule changed (the stream stored them without one: dup_group at least).
    ruled = {k for k, r in after.items() if r.dup_group != "NONE"}
    assert ruled and all(before.get(k) != after[k] for k in ruled)

    # Again, with nothing to change: nothing changes, and nothing is lost.
    again = reconcile(client, db, BASE, end, rules=rules)
    assert again.rows_changed == 0 and again.rows_after == len(want)
    assert sort_rows(MinuteRow(level, org, server, feature, minute, *metrics, dup_group, source)
                     for level, source, org, server, feature, minute, *metrics, dup_group in client.query(
                         f"SELECT {columns} FROM {db}.usage_minute FINAL").result_rows) == sort_rows(want + beyond)


def test_a_range_past_the_raw_retention_is_refused(tmp_path: Path) -> None:
    # Raw events older than LICTEL_RAW_TTL_DAYS are gone: recomputing their minutes from what is
    # left would overwrite right figures with wrong ones. (A process of its own: chDB serves one
    # data directory per process.)
    env = {**os.environ, "LICTEL_RAW_TTL_DAYS": "30", "COLUMNS": "200"}
    args = [sys.executable, "-m", "lictel.cli", "reconcile", "--data-dir", str(tmp_path),
            "--to", "2099-01-02T00:00:00Z"]
    subprocess.run([sys.executable, "-m", "lictel.cli", "db", "migrate", "--data-dir", str(tmp_path)], env=env,
                   check=True, capture_output=True, timeout=120)
    refused = subprocess.run([*args, "--from", "2026-03-02T00:00:00Z"], env=env, capture_output=True, text=True,
                             timeout=120)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "LICTEL_RAW_TTL_DAYS=30" in said and "give --from" in said, said
    assert "Traceback" not in said
    taken = subprocess.run([*args, "--from", "2099-01-01T00:00:00Z"], env=env, capture_output=True, text=True,
                           timeout=120)
    assert taken.returncode == 0, taken.stdout + taken.stderr


def test_arrow_rows_go_in_alike_by_both_paths(warehouse: tuple[Settings, Any]) -> None:
    # The embedded engine reads an Arrow table in place; a server gets the Arrow file. Both store the
    # same rows (strings as dictionaries, minutes as seconds, the widest counters); a table that does
    # not fit says which table and how many rows.
    settings, client = warehouse
    db = settings.clickhouse_database
    n = 5000
    rows = pa.table({
        "level": pa.array(["pool", "estate"] * (n // 2)).dictionary_encode(),
        "source": pa.array(["license"] * n).dictionary_encode(),
        "org": pa.array(["acme"] * n), "server": pa.array(["lic01", ""] * (n // 2)).dictionary_encode(),
        "feature": pa.array([f"F{i % 7}" for i in range(n)]).dictionary_encode(),
        "minute": pa.array([1_772_409_600 + 60 * i for i in range(n)], pa.uint32()),
        "peak": pa.array([i % 4_000_000_000 for i in range(n)], pa.uint32()),
        "license_us": pa.array([(-1) ** i * 2**62 // (i + 1) for i in range(n)], pa.int64()),
        "checkouts": pa.array([2**64 - 1 - i for i in range(n)], pa.uint64()),
        "dup_group": pa.array(["UH", "NONE"] * (n // 2)).dictionary_encode(),
        "version": pa.array([7] * n, pa.uint64()),
    })
    columns = ", ".join(rows.column_names)
    client.command(f"CREATE TABLE {db}.by_server AS {db}.usage_minute")
    insert_arrow(client, f"{db}.usage_minute", rows, settings={"optimize_on_insert": 0})  # in place
    client.insert_arrow(f"{db}.by_server", rows)  # what a server gets
    got = [client.query(f"SELECT {columns} FROM {db}.{t} ORDER BY minute").result_rows
           for t in ("usage_minute", "by_server")]
    assert len(got[0]) == n and got[0] == got[1]
    assert got[0][1][7] == rows.column("license_us")[1].as_py() and got[0][0][8] == 2**64 - 1
    with pytest.raises(WarehouseError, match=r"5,000 rows into .*usage_minute"):
        insert_arrow(client, f"{db}.usage_minute", rows.append_column("nope", pa.array([1] * n)))


def test_organisations_are_recomputed_one_at_a_time_and_rows_without_events_go(
        warehouse: tuple[Settings, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # Two organisations with servers of the same names, each read and computed on its own (memory
    # holds one history at a time): the rows are the engine's over both; an organisation with stored
    # minutes and no raw events left has its rows deleted.
    settings, client = warehouse
    db = settings.clickhouse_database
    events = [e for org, seed in (("acme", 11), ("globex", 12))
              for e in simulate(SimSpec(org=org, users=200, servers=2, days=1, seed=seed)) if e.action != HEARTBEAT]
    end = floor_minute(max(e.ts for e in events)) + MINUTE_US
    client.insert(f"{db}.raw_events", [list(c) for c in zip(*events, strict=True)], column_names=RAW_COLUMNS,
                  column_oriented=True)
    client.insert(f"{db}.pipeline_progress", [[p, "events", end + 3600 * US] for p in range(8)],
                  column_names=["partition", "stream", "final_upto"])
    want = sort_rows(compute_rows(events, until_us=end))
    assert {r.org for r in want} == {"acme", "globex"}
    ghost = [r._replace(org="initech") for r in want[:50]]  # minutes whose raw events are gone
    write_minute_rows(client, db, [*want[::3], *ghost], version=STREAM_VERSION)

    reads: list[set[str]] = []
    real = read_events

    def spy(*args: Any, **kw: Any) -> Any:
        reads.append({org for org, _ in args[2]})
        return real(*args, **kw)

    monkeypatch.setattr("lictel.reconcile.read_events", spy)
    res = reconcile(client, db, BASE, end)
    assert reads == [{"acme"}, {"globex"}]
    assert res.events == len(events) and res.rows_after == len(want)
    columns = ", ".join(c if c != "minute" else "toUnixTimestamp(minute) * 1000000" for c in USAGE_COLUMNS[:-1])
    got = [MinuteRow(level, org, server, feature, minute, *metrics, dup_group, source)
           for level, source, org, server, feature, minute, *metrics, dup_group in client.query(
               f"SELECT {columns} FROM {db}.usage_minute FINAL").result_rows]
    assert sort_rows(got) == want


def test_minutes_without_any_raw_event_are_deleted(warehouse: tuple[Settings, Any]) -> None:
    settings, client = warehouse
    db = settings.clickhouse_database
    end = BASE + 10 * MINUTE_US
    client.insert(f"{db}.pipeline_progress", [[p, "events", end] for p in range(8)],
                  column_names=["partition", "stream", "final_upto"])
    rows = [MinuteRow("pool", "initech", "lic01", "CAD", BASE + i * MINUTE_US, 2, 1, 90 * US, 1, 0, 0, 0, 0, 0,
                      2, 1, 90 * US, "NONE", "license") for i in range(5)]
    write_minute_rows(client, db, rows, version=STREAM_VERSION)
    res = reconcile(client, db, BASE, end)
    assert (res.events, res.rows_before, res.rows_after, res.rows_changed) == (0, 5, 0, 5)
    assert client.query(f"SELECT count() FROM {db}.usage_minute FINAL").result_rows[0][0] == 0
