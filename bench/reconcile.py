"""`lictel reconcile` from raw events: events/s end to end, and where the time goes.

Simulated events are stored in an embedded chDB warehouse as the sink stores them (raw_events),
with every input partition final past the last event (pipeline_progress), and the stream's minute
rows beside them (usage_minute), so a reconcile of the whole range recomputes and compares every
minute. The recompute (lictel.reconcile.reconcile, what the CLI calls) is timed end to end (best of
--runs) for each history size, without a DUP_GROUP rule and with ``*=UH`` (licenses charged by
groups); then, on the largest, its parts one by one: the read of the raw events out of chDB, the
column-at-a-time recompute (lictel.recompute), and the engine over the same events (what the
recompute replaces, and what still computes the keys arrays decline: sessions, multi-license
checkouts under a rule). Last, `lictel reconcile` itself runs over each history as a user runs
it, in a process of its own on a warehouse another process prepared, for its peak resident memory.

Run: .venv/bin/python bench/reconcile.py [--users N --servers N --days N [N ...] --runs N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _report import record

from lictel.config import Settings
from lictel.dupgroup import DupRules
from lictel.engine import compute_rows
from lictel.events import HEARTBEAT, Event
from lictel.recompute import compute
from lictel.reconcile import read_events, reconcile
from lictel.timeutil import MINUTE_US, floor_minute
from lictel.warehouse import connect, migrate
from producers.simulate import SimSpec, simulate
from sinks.clickhouse import RAW_COLUMNS, STREAM_VERSION, write_minute_rows


def _best(runs: int, fn: object) -> tuple[float, object]:
    """The best time of ``runs`` calls, and what the first returned."""
    best, first = float("inf"), None
    for i in range(runs):
        t = time.perf_counter()
        out = fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t)
        first = out if i == 0 else first
    return best, first


def prepare(days: int, data_dir: Path, args: argparse.Namespace) -> tuple[Any, str, list[Event], int, int]:
    """A warehouse as the pipeline leaves it after ``days``: raw events, every partition final, the
    stream's minute rows (database ``bench_<days>d`` in ``data_dir``)."""
    events = [e for e in simulate(SimSpec(users=args.users, servers=args.servers, days=days))
              if e.action != HEARTBEAT]
    start = floor_minute(min(e.ts for e in events))
    end = floor_minute(max(e.ts for e in events)) + MINUTE_US
    settings = Settings(data_dir=data_dir, clickhouse_database=f"bench_{days}d")
    client = connect(settings)
    db = settings.clickhouse_database
    migrate(client, settings)
    assert list(Event._fields) == RAW_COLUMNS
    client.insert(f"{db}.raw_events", [list(c) for c in zip(*events, strict=True)], column_names=RAW_COLUMNS,
                  column_oriented=True)
    client.insert(f"{db}.pipeline_progress", [[p, "events", end + 3600 * 10**6] for p in range(8)],
                  column_names=["partition", "stream", "final_upto"])
    # What the stream stored, so the recompute compares with and replaces real rows.
    write_minute_rows(client, db, compute_rows(events, until_us=end), version=STREAM_VERSION)
    return client, db, events, start, end


def command_memory(days: int, data_dir: Path, args: argparse.Namespace) -> str:
    """`lictel reconcile` as a user runs it, in a process of its own on a warehouse prepared by
    another: its peak resident memory (the kernel's count for that child) and its wall time."""
    subprocess.run([sys.executable, __file__, "--prepare", str(data_dir), "--days", str(days),
                    "--users", str(args.users), "--servers", str(args.servers)], check=True)
    span = json.loads((data_dir / "span.json").read_text())
    iso = [dt.datetime.fromtimestamp(span[k] / 1e6, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for k in ("start", "end")]
    env = os.environ | {"LICTEL_CLICKHOUSE_DATABASE": f"bench_{days}d"}
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "lictel.cli", "reconcile", "--data-dir", str(data_dir),
                             "--from", iso[0], "--to", iso[1]], env=env, stdout=subprocess.DEVNULL)
    # The process's own high-water mark, read while it runs (the kernel's count at its exit would
    # also hold this process's size at the fork).
    peak_kib = 0
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak_kib = max(peak_kib, int(status.split("VmHWM:")[1].split()[0]))
        except (OSError, IndexError, ValueError):
            pass
        time.sleep(0.02)
    took = time.perf_counter() - t
    assert proc.returncode == 0, proc.returncode
    return (f"- `lictel reconcile` over the {days} days as a command (a process of its own, Python and chDB "
            f"started): **{peak_kib / 1024:,.0f} MiB** peak resident, {took:.1f} s wall clock "
            f"({span['events']:,} events)")


def measure(days: int, data_dir: Path, args: argparse.Namespace) -> list[str]:
    """Result lines for a history of ``days`` (a database of its own in the process's chDB)."""
    client, db, events, start, end = prepare(days, data_dir, args)
    n = len(events)
    label = f"{n:,} events ({args.users:,} users, {args.servers} servers, {days} days)"
    lines = []
    for rule in ("", "UH"):
        rules = DupRules({"*": rule}) if rule else None
        whole, result = _best(args.runs, lambda r=rules: reconcile(client, db, start, end, rules=r))
        assert result is not None and result.events == n, result  # type: ignore[attr-defined]
        changed = result.rows_changed  # type: ignore[attr-defined]  # the first run's: against the stream's rows
        if not rule:
            assert changed == 0, f"the recompute changed {changed} rows of a clean stream"
        else:
            assert changed > 0, "charged under a rule, no row changed"  # dup_group at least
        lines.append(f"- {label}, {'`*=UH` (licenses charged by group)' if rule else 'no DUP_GROUP rule'}: "
                     f"**{n / whole:,.0f} events/s** end to end ({whole:.2f} s, best of {args.runs}; "
                     f"{result.rows_after:,} minute rows, {changed:,} changed)")  # type: ignore[attr-defined]
        client.command(f"OPTIMIZE TABLE {db}.usage_minute FINAL")  # the next run finds one version
    servers = [tuple(r) for r in client.query(f"SELECT DISTINCT org, server FROM {db}.raw_events").result_rows]
    features = [tuple(r) for r in client.query(
        f"SELECT DISTINCT org, feature FROM {db}.raw_events WHERE feature != ''").result_rows]
    t_read, cols = _best(args.runs, lambda: read_events(client, db, servers, end, features))
    t_arrays, rows = _best(args.runs, lambda: compute(cols, end))  # type: ignore[arg-type]
    t_engine, out = _best(1, lambda: compute_rows(events, until_us=end))
    assert len(rows) == len(out), (len(rows), len(out))  # type: ignore[arg-type]
    client.command(f"DROP DATABASE {db}")
    lines.append(f"  - its parts: read from chDB {t_read:.2f} s ({n / t_read:,.0f} events/s); recompute by "
                 f"arrays {t_arrays:.2f} s ({n / t_arrays:,.0f} events/s); the engine over the same events "
                 f"{t_engine:.2f} s ({n / t_engine:,.0f} events/s, what keys the arrays decline still take)")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--servers", type=int, default=4)
    ap.add_argument("--days", type=int, nargs="+", default=[4, 28])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--prepare", type=Path, help=argparse.SUPPRESS)  # for command_memory's child
    args = ap.parse_args()
    if args.prepare:
        _, _, events, start, end = prepare(args.days[0], args.prepare, args)
        (args.prepare / "span.json").write_text(json.dumps({"start": start, "end": end, "events": len(events)}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        lines = [line for days in args.days for line in measure(days, Path(tmp), args)]
    for days in args.days:
        with tempfile.TemporaryDirectory() as tmp:
            lines.append(command_memory(days, Path(tmp), args))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    record("reconcile", "`lictel reconcile` from raw events", "bench/reconcile.py", [
        "Simulated events in embedded chDB, every partition final, the stream's rows stored; the whole "
        "range recomputed, compared and written (target: 1,000,000 events/s):",
        "",
        *lines,
        f"- peak resident memory of this benchmark's process: {peak_mib:,.0f} MiB (its simulation and the "
        "engine's run over the largest history included)",
    ])


if __name__ == "__main__":
    main()
