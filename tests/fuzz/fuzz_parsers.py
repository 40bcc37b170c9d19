"""Coverage-guided fuzzing (atheris, libFuzzer) of the three input parsers, for the long test target:

    python tests/fuzz/fuzz_parsers.py flexnet|jsonl|sessions -max_total_time=60

Every input must end as events, counted skips or dead letters: an exception other than the
parser's own InputError is a crash, and libFuzzer stops with the input that caused it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from lictel import limits
    from lictel.errors import InputError
    from lictel.events import Event, event_from_line
    from producers.flexnet import FlexnetParser, Skipped
    from producers.sessions import SessionExportReader

_TMP = Path(tempfile.mkdtemp(prefix="lictel-fuzz-"))


def flexnet(data: bytes) -> None:
    lines = data.decode("utf-8", "replace").splitlines()
    p = FlexnetParser(org="o", server="s", tz="UTC")
    items = [*p.parse(lines, "f.log"), *p.finish()]
    seen = {i.seq // 16 if isinstance(i, Event) else i.line for i in items if isinstance(i, Event | Skipped)}
    if seen != set(range(1, len(lines) + 1)) or p.stats.lines != len(lines):
        raise AssertionError(f"lines not accounted for: {sorted(set(range(1, len(lines) + 1)) - seen)[:5]}")


def jsonl(data: bytes) -> None:
    for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        try:
            ev = event_from_line(line, source="f.jsonl", line=n)
        except InputError:
            continue
        if limits.value_problem(ev) is not None:
            raise AssertionError(f"an event outside the limits was accepted: {ev!r}")


def sessions(data: bytes) -> None:
    for name in ("x.csv", "x.json"):
        path = _TMP / name
        path.write_bytes((b"session_key,user,device,ts,event\n" if name == "x.csv" else b"") + data)
        SessionExportReader("o", "site", "F", tz="UTC").read(path)


TARGETS = {"flexnet": flexnet, "jsonl": jsonl, "sessions": sessions}

if __name__ == "__main__":
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()
