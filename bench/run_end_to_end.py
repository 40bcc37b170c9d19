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
from _rss import RssSampler


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=29000)
    ap.add_argument("--servers", type=int, default=5)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--ten-million", action="store_true",
                    help="about 10 million events (58,000 users, 70 days), in a section of their own")
    args = ap.parse_args()
    if args.ten_million:
        args.users, args.days = 58000, 70
    with tempfile.TemporaryDirectory() as tmp:
        t = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "lictel.cli", "run", "--data-dir", tmp, "--users", str(args.users),
             "--servers", str(args.servers), "--days", str(args.days), "--workers", str(args.workers)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        sampler = RssSampler(proc.pid)
        sampler.start()
        _, err_text = proc.communicate()
        sampler.stop()
        wall = time.monotonic() - t
        if proc.returncode:
            raise SystemExit(f"lictel run failed:\n{err_text[-3000:]}")
    err = " ".join(err_text.split())
    events = int(re.search(r"produced ([\d,]+) events", err).group(1).replace(",", ""))  # type: ignore[union-attr]
    stored = float(re.search(r"all stored in ([\d.]+) s", err).group(1))  # type: ignore[union-attr]
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    section = ("run-10m", "`lictel run` end to end, 10 million events (target: 5 minutes)",
               "bench/run_end_to_end.py --ten-million") if args.ten_million else (
               "run", "`lictel run` end to end", "bench/run_end_to_end.py")
    record(*section, [
        f"- {events:,} simulated events ({args.users:,} users, {args.servers} servers, {args.days} days), "
        f"{args.workers} stream worker(s), embedded Tansu + chDB",
        f"- whole command: **{wall:.1f} s** wall clock (broker start to report printed)",
        f"- first event produced to last minute stored: {stored:.1f} s ({events / stored:,.0f} events/s)",
        f"- largest child process RSS: {rss:,.0f} MiB",
        "- resident memory per process, sampled every 0.5 s (MiB; first sample after start, peak, last "
        "sample before stop): " + "; ".join(
            f"{name} {first:,.0f} / {peak:,.0f} / {last:,.0f}" for name, (first, peak, last) in sampler.summary()),
        "- CPU seconds per process: " + "; ".join(f"{n} {c:.1f}" for n, c in sorted(sampler.cpu.items())),
    ])


if __name__ == "__main__":
    main()
