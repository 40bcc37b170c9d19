"""`lictel run` end to end over >= 1,000,000 simulated events on the embedded stack.

Times the real command as a user runs it: broker start, stream worker and sink start, producing,
waiting until every minute is final and stored, stopping, printing the report.
Run: .venv/bin/python bench/run_end_to_end.py [--users N --servers N --days N --workers N]
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import tempfile
import time

from _report import record


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=29000)
    ap.add_argument("--servers", type=int, default=5)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "lictel.cli", "run", "--data-dir", tmp, "--users", str(args.users),
             "--servers", str(args.servers), "--days", str(args.days), "--workers", str(args.workers)],
            capture_output=True, text=True, check=True)
        wall = time.monotonic() - t
    err = " ".join(proc.stderr.split())
    events = int(re.search(r"produced ([\d,]+) events", err).group(1).replace(",", ""))  # type: ignore[union-attr]
    stored = float(re.search(r"all stored in ([\d.]+) s", err).group(1))  # type: ignore[union-attr]
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    record("run", "`lictel run` end to end", "bench/run_end_to_end.py", [
        f"- {events:,} simulated events ({args.users:,} users, {args.servers} servers, {args.days} days), "
        f"{args.workers} stream worker(s), embedded Tansu + chDB",
        f"- whole command: **{wall:.1f} s** wall clock (broker start to report printed)",
        f"- first event produced to last minute stored: {stored:.1f} s ({events / stored:,.0f} events/s)",
        f"- largest child process RSS: {rss:,.0f} MiB",
    ])


if __name__ == "__main__":
    main()
