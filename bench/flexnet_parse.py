"""FlexNet debug-log parsing on one core: lines/s over the 12 real logs of shared/corpus/flexnet.

The files are read into memory first; the time is the parser's alone (lines to events, dates,
time zone conversion, every line classified). Run: .venv/bin/python bench/flexnet_parse.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from _report import record

from producers.flexnet import FlexnetParser

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "flexnet"


def main() -> None:
    corpus = Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS
    files = [(f.name, f.read_text(encoding="utf-8", errors="replace").splitlines())
             for f in sorted(corpus.glob("*.log"))]
    n = sum(len(lines) for _, lines in files)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        events = 0
        for name, lines in files:
            parser = FlexnetParser(org="o", server="s", tz="Europe/Madrid")
            for item in parser.parse(lines, name):
                events += item.__class__.__name__ == "Event"
        best = min(best, time.perf_counter() - t)
    record("flexnet", "FlexNet debug-log parser, one core", "bench/flexnet_parse.py", [
        f"- {len(files)} real logs, {n:,} lines, {events:,} events, time zone Europe/Madrid",
        f"- **{n / best:,.0f} lines/s** (best of 5 runs, {best:.2f} s)",
    ])


if __name__ == "__main__":
    main()
