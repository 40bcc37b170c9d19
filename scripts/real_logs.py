"""Write docs/real-logs.md: what lictel finds in each real FlexNet log of ../shared/corpus/flexnet.

Per file: lines, events by kind, skipped lines by reason, warnings; per feature, lictel's peak
next to a naive count (+1 per OUT line, -1 per IN line, in file order) and what makes them differ.
Only feature names and counts are written: no user or host names.
Run: .venv/bin/python scripts/real_logs.py [CORPUS_DIR]
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from pathlib import Path

from lictel.engine import compute_rows
from lictel.events import IN, OUT, Event
from producers.flexnet import FlexnetParser, Skipped

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus" / "flexnet"
#: The time zone each log names (SOURCES.md), as an IANA zone.
ZONES = {
    "justbennet": "America/New_York", "sergioedo": "Europe/Madrid", "joseantoniovilar": "Europe/Madrid",
    "talestk": "America/New_York", "ImSukh": "America/New_York", "lutzpeschlow": "Europe/Paris",
    "radixy0": "Europe/Berlin",
}


def analyse(path: Path) -> list[str]:
    tz = ZONES.get(path.name.split("__")[0], "UTC")
    parser = FlexnetParser(org="org", server="server", tz=tz)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    items = [*parser.parse(lines, path.name), *parser.finish()]
    events = [i for i in items if isinstance(i, Event)]
    dead = Counter(i.reason for i in items if isinstance(i, Skipped) and i.dead)
    rows = [r for r in compute_rows(events) if r.level == "pool"]
    peak: dict[str, int] = defaultdict(int)
    orphans: Counter[str] = Counter()
    forced: Counter[str] = Counter()
    for r in rows:
        peak[r.feature] = max(peak[r.feature], r.peak)
        orphans[r.feature] += r.orphans
        forced[r.feature] += r.forced_releases
    naive: dict[str, int] = defaultdict(int)
    running: Counter[str] = Counter()
    multi: Counter[str] = Counter()
    for e in events:
        if e.action == OUT:
            running[e.feature] += 1
            naive[e.feature] = max(naive[e.feature], running[e.feature])
            if e.count > 1:
                multi[e.feature] += 1
        elif e.action == IN:
            running[e.feature] -= 1
    st = parser.stats
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(st.events.items()))
    out = [f"### {path.name}", "",
           f"Time zone {tz}. {st.lines:,} lines: events {kinds}.", ""]
    skipped = ", ".join(f"{reason} {n:,}" for reason, n in st.skipped.most_common())
    out.append(f"Skipped lines: {skipped}.")
    if dead:
        out.append("Dead-lettered: " + ", ".join(f"{r} ({n})" for r, n in dead.items()) + ".")
    out.append(f"Daemon restart events (checkouts released): {st.events.get('RESTART', 0):,}; license rereads "
               f"(checkouts kept): {st.events.get('REREAD', 0):,}.")
    if st.repeats:
        out.append(f"Repeated blocks skipped ({st.repeated_lines:,} event and date lines counted once): "
                   + "; ".join(r.split(": ", 1)[1] for r in st.repeats) + ".")
    if st.out_of_order:
        first = next(w for w in st.warnings if "goes back" in w)
        out.append(f"Warnings: {st.out_of_order} log segment(s) out of order (dates going back), e.g. "
                   f"{first.split(':', 1)[0]}; `lictel run --flexnet` sends such a file's events "
                   "in time order.")
    out += ["", "| feature | lictel peak | naive peak | OUTs of N > 1 licenses | orphan INs | forced releases |",
            "|---|---:|---:|---:|---:|---:|"]
    top = sorted(peak, key=lambda f: (-peak[f], f))[:8]
    for f in top:
        out.append(f"| {f} | {peak[f]:,} | {naive[f]:,} | {multi[f]:,} | {orphans[f]:,} | {forced[f]:,} |")
    if len(peak) > len(top):
        out.append(f"| ({len(peak) - len(top)} more features) | | | | | |")
    return [*out, ""]


def main() -> None:
    corpus = Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS
    body = [
        "# Real FlexNet logs: what lictel finds",
        "",
        "Written by `scripts/real_logs.py` from the 12 public debug logs in `shared/corpus/flexnet/` "
        "(their provenance is in its SOURCES.md). Every line of every file is either an event or counted "
        "below with its reason. Peaks are per feature on the one server of each log.",
        "",
        "Why lictel's peak differs from a naive count (+1 per OUT line, -1 per IN line):",
        "",
        "- **Checkouts of several licenses** (`(N licenses)`, up to 384 here) count N, not 1.",
        "- **Restarts** (the vendor daemon starting, exiting or being restarted by lmgrd) release every "
        "checkout the daemon held; a naive count keeps them forever after a crash, so its running "
        "total drifts upward.",
        "- **Orphan check-ins** (an IN with nothing held, e.g. after a restart or at the start of a log) "
        "change nothing in lictel; a naive count goes down, hiding later peaks.",
        "- **Simultaneous events**: everything stamped with one second counts as one instant, so a "
        "check-in and a checkout in the same second never add up to a momentary extra license.",
        "- **Identity**: a check-in only releases what the same user, host and project tag hold.",
        "",
    ]
    for path in sorted(corpus.glob("*.log")):
        body += analyse(path)
    (ROOT / "docs" / "real-logs.md").write_text("\n".join(body))
    print(f"wrote docs/real-logs.md ({len(body)} lines)")


if __name__ == "__main__":
    main()
