"""`lictel reconcile` from raw events: events/s end to end, and where the time goes.

Simulated events are stored in an embedded chDB warehouse as the sink stores them (raw_events),
with every input partition final past the last event (pipeline_progress), and the stream's minute
rows beside them (usage_minute), so a reconcile of the whole range recomputes and compares every
minute. The recompute (lictel.reconcile.reconcile, what the CLI calls) is timed end to end (best of
--runs) for each history size, without a DUP_GROUP rule and with ``*=UH`` (licenses charged by
groups); then, on the largest, its parts one by one: the read of the raw events out of chDB, the
column-at-a-time recompute (lictel.recompute), and the engine over the same events (what the
recompute replaces, and what still computes the keys arrays decline: sessions, multi-license
checkouts under a rule). Peak resident memory of the process is reported.

Run: .venv/bin/python bench/reconcile.py [--users N --servers N --days N [N ...] --runs N]
"""

from __future__ import annotations

import argparse
import gc
import resource
import tempfile
import time
from pathlib import Path

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


def _status_mib(field: str) -> float:
    return int(Path("/proc/self/status").read_text().split(f"{field}:")[1].split()[0]) / 1024


def resident_during(fn: object) -> tuple[float, float]:
    """Resident memory (MiB) of this process before ``fn()`` and at its peak during it: the
    kernel's high-water mark is reset first (Linux ``clear_refs``)."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_mib("VmRSS")
    fn()  # type: ignore[operator]
    return before, _status_mib("VmHWM")


def measure(days: int, data_dir: Path, args: argparse.Namespace) -> list[str]:
    """Result lines for a history of ``days`` (a database of its own in the process's chDB)."""
    events = [e for e in simulate(SimSpec(users=args.users, servers=args.servers, days=days))
              if e.action != HEARTBEAT]
    start = floor_minute(min(e.ts for e in events))
    end = floor_minute(max(e.ts for e in events)) + MINUTE_US
    n = len(events)
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
    # What one reconcile adds to the process at its peak (raw events read, arrays, chDB's work).
    before, peak = resident_during(lambda: reconcile(client, db, start, end))
    client.command(f"OPTIMIZE TABLE {db}.usage_minute FINAL")
    lines.append(f"  - resident memory at a reconcile's peak (no rule): {peak - before:,.0f} MiB above the "
                 f"{before:,.0f} MiB the process held before it ({(peak - before) * 2**20 / n:,.0f} bytes per event)")
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
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lines = [line for days in args.days for line in measure(days, Path(tmp), args)]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    record("reconcile", "`lictel reconcile` from raw events", "bench/reconcile.py", [
        "Simulated events in embedded chDB, every partition final, the stream's rows stored; the whole "
        "range recomputed, compared and written (target: 1,000,000 events/s):",
        "",
        *lines,
        f"- peak resident memory of the process: {peak_mib:,.0f} MiB (its simulation and the engine's run over "
        "the largest history included)",
    ])


if __name__ == "__main__":
    main()
