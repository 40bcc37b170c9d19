"""FlexNet debug-log parsing on one core: lines/s over the 12 real logs of shared/corpus/flexnet.

The files are read into memory first; the time is the parser's alone (lines to events, dates,
time zone conversion, rereads, repeated blocks, every line classified). Beside it, in the same run,
the floor no parser can beat: matching each line's ``H:MM:SS (daemon)`` prefix and nothing else,
so the ratio says how much of the work is more than reading the line (machines differ by 25%).
Run: .venv/bin/python bench/flexnet_parse.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from _report import record

from lictel.events import Event
from producers.flexnet import _LINE, FlexnetParser

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "flexnet"


def main() -> None:
    corpus = Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS
    files = [(f.name, f.read_text(encoding="utf-8", errors="replace").splitlines())
             for f in sorted(corpus.glob("*.log"))]
    n = sum(len(lines) for _, lines in files)
    best = floor = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _name, lines in files:
            for line in lines:
                _LINE.match(line)
        floor = min(floor, time.perf_counter() - t)
        t = time.perf_counter()
        events = 0
        for name, lines in files:
            parser = FlexnetParser(org="o", server="s", tz="Europe/Madrid")
            for item in parser.parse(lines, name):
                events += type(item) is Event
        best = min(best, time.perf_counter() - t)
    record("flexnet", "FlexNet debug-log parser, one core", "bench/flexnet_parse.py", [
        f"- {len(files)} real logs, {n:,} lines, {events:,} events, time zone Europe/Madrid",
        f"- **{n / best:,.0f} lines/s** (best of 5 runs, {best:.2f} s)",
        f"- the prefix match alone: {n / floor:,.0f} lines/s; the parser takes {best / floor:.1f}x its time",
    ])


if __name__ == "__main__":
    main()
