"""Soak: `lictel up` fed live for a long time; memory must stay flat and every row exact.

What it does, as a user would: starts `lictel up` (embedded broker, stream workers, sink) on a
fresh data dir, and from this process sends the benchmark estate of bench/run_end_to_end.py
(29,000 users, 5 servers) at a constant rate, in compressed time (by default 2,000 events/s for
10 minutes: about 1.2 million events, 16 simulated days; the estate's own busiest minute is
51.5 events/s, so this is about 40 times that, and more than the whole 14-day benchmark in 10
minutes). Meanwhile it samples the resident memory of every process of the stack. Then it closes
the input, waits until every minute is final and stored, stops the stack with SIGTERM, and checks:

- the stack kept up: the last minute was stored within ``--catch-up-s`` of the input's end;
- memory is flat after warm-up: for each process of lictel's (the sink, every stream worker, `up`),
  the median RSS of the last third of the run is at most that of the middle third plus
  ``max(--flat-mib, 10 %)``, and its peak at most 1.25 times the middle third's plus ``--flat-mib``
  (the warehouse's merges make spikes that a leak does not explain). The embedded broker is
  reported, not held to it: Tansu 0.6 keeps every
  message in memory (memory storage; it has no retention and refuses DeleteRecords), so it grows
  with what it was sent (MiB per million events, in the result; docs/operations.md);
- no row was lost or changed: `lictel export usage` (pool and estate) equals the batch recompute of
  every event sent.

Exit status 1 when a check fails. The result goes to docs/benchmarks.md unless ``--no-record``
(tests/integration/test_soak.py runs it so, in `make test-long`).

Run: .venv/bin/python bench/soak.py [--minutes 10 --rate 2000 --workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

from _report import record
from _rss import RssSampler

from lictel.config import Settings
from lictel.engine import compute_rows
from lictel.events import Event
from lictel.export import minute_row, to_csv
from lictel.pipeline import wait_closed_inputs
from producers.base import EventProducer
from producers.simulate import SimSpec, simulate


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0, help="how long to feed the stack")
    ap.add_argument("--rate", type=int, default=2000, help="events per second sent")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--users", type=int, default=29000)
    ap.add_argument("--servers", type=int, default=5)
    ap.add_argument("--flat-mib", type=float, default=48.0, help="growth allowed after warm-up (or 10 %%)")
    ap.add_argument("--catch-up-s", type=float, default=60.0, help="input end to last minute stored, at most")
    ap.add_argument("--no-record", action="store_true", help="do not write docs/benchmarks.md")
    args = ap.parse_args()
    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LICTEL_")}
        env.update({"LICTEL_DATA_DIR": f"{tmp}/data", "LICTEL_TOPIC_PREFIX": f"soak{uuid.uuid4().hex[:8]}",
                    "COLUMNS": "250"})
        os.environ.clear()
        os.environ.update(env)  # this process's producer sees the settings the stack sees
        up = subprocess.Popen([sys.executable, "-m", "lictel.cli", "up", "--workers", str(args.workers)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            bootstrap = _bootstrap(up)
            sampler = RssSampler(up.pid, every_s=2.0)
            sampler.start()
            settings = Settings()
            sent, mark, fed_s, backlog = asyncio.run(_feed(settings, bootstrap, args, seconds))
            t_end = time.monotonic()
            asyncio.run(wait_closed_inputs(settings, bootstrap, {"events": mark}, timeout=900,
                                           check=lambda: _alive(up)))
            caught_up = time.monotonic() - t_end
            sampler.stop()
        finally:
            if up.poll() is None:
                up.send_signal(signal.SIGTERM)
            out, _ = up.communicate(timeout=120)
        if up.returncode not in (0, -signal.SIGTERM):
            print(out[-3000:], file=sys.stderr)
            raise SystemExit(f"lictel up exited {up.returncode}")
        problems = []
        want = compute_rows(sent)
        cli = [sys.executable, "-m", "lictel.cli", "export", "usage", "--format", "csv", "--level"]
        rows = 0
        for level in ("pool", "estate"):
            got = subprocess.run([*cli, level], env=env, text=True, capture_output=True, check=True).stdout
            expected = to_csv(minute_row(r) for r in want if r.level == level)
            rows += expected.count("\n") - 1
            if got != expected:
                problems.append(f"{level} rows differ from the batch recompute "
                                f"({got.count(chr(10)) - 1:,} stored, {expected.count(chr(10)) - 1:,} expected)")
    if caught_up > args.catch_up_s:
        problems.append(f"the stack fell behind: the last minute was stored {caught_up:.0f} s after the input ended")
    third = seconds / 3
    memory = []
    broker_growth = float("nan")
    for name in sorted(sampler.samples):
        values, times = sampler.samples[name], sampler.times[name]
        t0 = times[0]
        middle = [v for v, t in zip(values, times, strict=True) if third <= t - t0 < 2 * third]
        last = [v for v, t in zip(values, times, strict=True) if t - t0 >= 2 * third]
        if not middle or not last:
            continue
        # A leak moves the whole curve: compare the medians of the two thirds. The peaks are held to a
        # looser bound only: the warehouse's merges make spikes that grow with its parts.
        mid_med, last_med = statistics.median(middle), statistics.median(last)
        memory.append(f"{name} {values[0]:,.0f} / {max(middle):,.0f} / {max(last):,.0f} / {values[-1]:,.0f} "
                      f"(medians {mid_med:,.0f} / {last_med:,.0f})")
        if name.startswith("tansu"):
            broker_growth = (values[-1] - values[0]) / (len(sent) / 1e6)
            continue
        if last_med - mid_med > max(args.flat_mib, 0.1 * mid_med) or max(last) > 1.25 * max(middle) + args.flat_mib:
            problems.append(f"{name} kept growing after warm-up: median {mid_med:,.0f} MiB in the middle third, "
                            f"{last_med:,.0f} MiB in the last (peaks {max(middle):,.0f} / {max(last):,.0f})")
    lines = [
        f"- `lictel up` ({args.workers} stream worker(s), embedded Tansu + chDB) fed {len(sent):,} simulated events "
        f"({args.users:,} users, {args.servers} servers) at {args.rate:,} events/s for {fed_s / 60:.1f} min "
        f"(largest send backlog {backlog:.1f} s)",
        f"- input end to last minute stored: {caught_up:.1f} s; {rows:,} minute rows, "
        + ("equal to the batch recompute" if not any("differ" in p for p in problems) else "**NOT** equal"),
        "- resident memory per process, sampled every 2 s (MiB; first sample, peak of the middle third, peak of "
        "the last third, last sample; medians of the two thirds): " + "; ".join(memory),
        f"- the embedded broker grew {broker_growth:,.0f} MiB per million events sent (it keeps every message)",
        "- result: " + ("**flat and exact**" if not problems else "**FAILED**: " + "; ".join(problems)),
    ]
    if args.no_record:
        print("\n".join(lines))
    else:
        record("soak", "Soak: `lictel up` fed live", "bench/soak.py", lines)
    return 1 if problems else 0


def _bootstrap(up: subprocess.Popen[str]) -> str:
    """The broker address `lictel up` prints once its stack runs."""
    assert up.stdout is not None
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = up.stdout.readline()
        if not line:
            break
        seen.append(line)
        found = re.search(r"broker (\S+:\d+)", line)
        if found:
            return found.group(1)
    raise SystemExit("lictel up did not start:\n" + "".join(seen[-30:]))


def _alive(up: subprocess.Popen[str]) -> None:
    if up.poll() is not None:
        raise SystemExit(f"lictel up exited {up.returncode} during the soak")


async def _feed(settings: Settings, bootstrap: str, args: argparse.Namespace,
                seconds: float) -> tuple[list[Event], int, float, float]:
    """Send simulated events at ``args.rate`` for ``seconds``; return them, the closing mark, the
    time taken, and the largest lag behind the schedule."""
    total = int(args.rate * seconds)
    # The simulation makes ~2.5 events per user and day (bench/run_end_to_end.py: 1,016,999 events
    # from 29,000 users in 14 days); a day more than that, so it never runs short.
    days = max(2, math.ceil(total / (2.4 * args.users)) + 1)
    spec = SimSpec(users=args.users, servers=args.servers, days=days)
    producer = await EventProducer(settings, bootstrap, source="soak").start()
    sent: list[Event] = []
    start = 0.0
    backlog = 0.0
    for ev in simulate(spec):
        if not sent:
            start = time.monotonic()  # the simulation has laid out its sessions by now
        await producer.send(ev)
        sent.append(ev)
        if len(sent) % 200 == 0:
            due = start + len(sent) / args.rate
            now = time.monotonic()
            backlog = max(backlog, now - due)
            if due > now:
                await asyncio.sleep(due - now)
            await producer.tick()
        if len(sent) >= total:
            break
    if len(sent) < total:
        raise SystemExit(f"the simulation ran short: {len(sent):,} of {total:,} events")
    await producer.close(final=True)
    mark = producer.closing_mark()
    assert mark is not None
    return sent, mark, time.monotonic() - start, backlog


if __name__ == "__main__":
    raise SystemExit(main())
