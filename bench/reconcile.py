"""`lictel reconcile` from raw events: events/s end to end, and where the time goes.

Simulated events are stored in an embedded chDB warehouse as the sink stores them (raw_events),
with every input partition final past the last event (pipeline_progress), so a reconcile of the
whole range recomputes every minute. The recompute (lictel.reconcile.reconcile, what the CLI calls)
is timed end to end (best of --runs), then its parts one by one on the same data: the read of the
raw events out of chDB, the events built from the rows, the engine's batch recompute
(compute_rows), and the write of the rows. Peak resident memory of the process is reported.

Run: .venv/bin/python bench/reconcile.py [--users N --servers N --days N --runs N]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from _report import record

from lictel.config import Settings
from lictel.engine import compute_rows
from lictel.events import HEARTBEAT, Event
from lictel.reconcile import reconcile
from lictel.serde import tuples_of
from lictel.timeutil import MINUTE_US, floor_minute
from lictel.warehouse import connect, migrate
from producers.simulate import SimSpec, simulate
from sinks.clickhouse import RAW_COLUMNS, STREAM_VERSION, write_minute_rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--servers", type=int, default=4)
    ap.add_argument("--days", type=int, default=4)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    events = [e for e in simulate(SimSpec(users=args.users, servers=args.servers, days=args.days))
              if e.action != HEARTBEAT]
    start = floor_minute(min(e.ts for e in events))
    end = floor_minute(max(e.ts for e in events)) + MINUTE_US
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
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
        whole = float("inf")
        result = None
        for _ in range(args.runs):
            t = time.perf_counter()
            result = reconcile(client, db, start, end)
            whole = min(whole, time.perf_counter() - t)
        assert result is not None and result.events == len(events), result
        assert result.rows_changed == 0, f"the recompute changed {result.rows_changed} rows of a clean stream"
        t = time.perf_counter()
        columns = client.query(
            f"SELECT event_id, toUnixTimestamp64Micro(ts), org, server, vendor, feature, action, user, host, handle, "
            f"count, reason, source, seq FROM {db}.raw_events FINAL ORDER BY ts, seq").result_columns
        t_read = time.perf_counter() - t
        t = time.perf_counter()
        evs = tuples_of(Event, columns)  # as lictel.reconcile builds them
        t_build = time.perf_counter() - t
        t = time.perf_counter()
        out = compute_rows(evs, until_us=end)
        t_engine = time.perf_counter() - t
        t = time.perf_counter()
        write_minute_rows(client, db, out, version=STREAM_VERSION + 100)
        t_write = time.perf_counter() - t
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = len(events)
    record("reconcile", "`lictel reconcile` from raw events", "bench/reconcile.py", [
        f"- {n:,} simulated events ({args.users:,} users, {args.servers} servers, {args.days} days) in embedded "
        f"chDB, every partition final; the whole range recomputed ({result.rows_after:,} minute rows, "
        f"{result.rows_changed} changed against the stream's)",
        f"- end to end (lictel.reconcile.reconcile, best of {args.runs}): **{n / whole:,.0f} events/s** "
        f"({whole:.2f} s; target: 1,000,000 events/s)",
        f"- its parts, one by one: read from chDB {t_read:.2f} s ({n / t_read:,.0f} events/s); events built "
        f"{t_build:.2f} s; engine (compute_rows) {t_engine:.2f} s ({n / t_engine:,.0f} events/s); "
        f"{len(out):,} rows written {t_write:.2f} s",
        f"- peak resident memory of the process: {peak_mib:,.0f} MiB",
    ])


if __name__ == "__main__":
    main()
