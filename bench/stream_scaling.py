"""Stream workers on a pre-loaded topic: one worker, then two, over the same events.

The events are produced into a real Tansu broker first, under a fresh topic prefix (and so a
fresh consumer group) for each run. Then N `lictel stream` processes start together, and the run
is timed from their first output batch until every partition is final past the last event (read
from the usage topic). Runs go in the order 1 2 2 1 and the best of each is kept, so the ratio
comes from one benchmark run. On a 2-core machine two workers can reach at most 2x.
The watcher reads only each usage batch's head (partition, final mark, row count): it shares the
cores with the workers it times, and decoding every row took a quarter of a core from them.
Also counts, from the worker logs, any consumer-group rebalance after the first join.
The input is several simulated organisations: the topics are keyed by (org, feature), and one
simulated organisation has only 3 features.
Run: .venv/bin/python bench/stream_scaling.py [--users N --servers N --days N --orgs N]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import record
from stream_worker import produce, watch

from lictel.broker import EmbeddedBroker
from lictel.config import Settings
from lictel.pipeline import group_churn, settings_env
from producers.simulate import SimSpec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=27000)
    ap.add_argument("--servers", type=int, default=5)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--orgs", type=int, default=8)
    args = ap.parse_args()
    # A simulated organisation has 3 features; the input is keyed by (org, feature), so one
    # organisation fills at most 3 partitions and could not use a second worker.
    specs = [SimSpec(org=f"org{i}", users=args.users // args.orgs, servers=args.servers, days=args.days, seed=i)
             for i in range(args.orgs)]
    best: dict[int, float] = {}
    every: dict[int, list[float]] = {1: [], 2: []}
    runs: list[str] = []
    churn = 0
    events = 0
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(Path(tmp)) as broker:
        for k, n in enumerate((1, 2, 2, 1)):
            prefix = f"scale-{k}"
            settings = Settings(data_dir=Path(tmp) / prefix, **broker.client_settings(),  # type: ignore[arg-type]
                                topic_prefix=prefix)
            events, target = asyncio.run(produce(settings, broker.bootstrap, *specs))
            logs = Path(tmp) / f"{prefix}-logs"
            logs.mkdir()
            procs = []
            for i in range(n):
                with open(logs / f"stream-{i}.log", "wb") as log:
                    procs.append(subprocess.Popen([sys.executable, "-m", "lictel.cli", "stream", "--worker-id", str(i)],
                                                  env=settings_env(settings), stdout=log, stderr=subprocess.STDOUT))
            started = time.monotonic()
            try:
                first, done, _ = asyncio.run(watch(settings, broker.bootstrap, target, 900))
            finally:
                for p in procs:
                    p.terminate()
                for p in procs:
                    p.wait(30)
            took = done - first
            churn += len(group_churn(logs))
            rate = events / took
            best[n] = max(best.get(n, 0.0), rate)
            every[n].append(rate)
            runs.append(f"{n} worker(s) {rate:,.0f} events/s ({took:.1f} s; {first - started:.1f} s start + join)")
            print(runs[-1], flush=True)
    ratio = best[2] / best[1]
    record("scaling", "Stream workers on a pre-loaded topic: two vs one", "bench/stream_scaling.py", [
        f"- {events:,} simulated events ({args.orgs} organisations, {args.users:,} users, {args.servers} servers "
        f"each, {args.days} days: {3 * args.orgs} (org, feature) keys), 8 partitions, produced before the "
        f"workers start; runs in the order 1 2 2 1: " + "; ".join(runs),
        f"- best of each: one worker **{best[1]:,.0f} events/s**, two workers **{best[2]:,.0f} events/s**: "
        f"**{ratio:.2f}x** (target: at least 1.6x); the mean of each: "
        f"**{sum(every[2]) / len(every[2]) / (sum(every[1]) / len(every[1])):.2f}x**",
        f"- consumer-group rebalances after the first join, all runs: {churn}",
    ])


if __name__ == "__main__":
    main()
