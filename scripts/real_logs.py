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

from lictel.dupgroup import DupRules
from lictel.engine import compute_rows
from lictel.events import IN, OUT, RESTART, Event
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
    rows = [r for r in compute_rows(events, rules=DupRules({"*": "UH"})) if r.level == "pool"]
    peak: dict[str, int] = defaultdict(int)
    charged: dict[str, int] = defaultdict(int)
    orphans: Counter[str] = Counter()
    forced: Counter[str] = Counter()
    for r in rows:
        peak[r.feature] = max(peak[r.feature], r.peak)
        charged[r.feature] = max(charged[r.feature], r.charged_peak)
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
    holders = _holders_at_peak(events, peak)
    out += ["", "| feature | lictel peak | user@host at the peak | charged peak under UH | naive peak | "
                "OUTs of N > 1 licenses | orphan INs | forced releases |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    top = sorted(peak, key=lambda f: (-peak[f], f))[:8]
    for f in top:
        out.append(f"| {f} | {peak[f]:,} | {holders.get(f, 0):,} | {charged[f]:,} | {naive[f]:,} | {multi[f]:,} | "
                   f"{orphans[f]:,} | {forced[f]:,} |")
    if len(peak) > len(top):
        out.append(f"| ({len(peak) - len(top)} more features) | | | | | | | |")
    return [*out, ""]


def _holders_at_peak(events: list[Event], peak: dict[str, int]) -> dict[str, int]:
    """Per feature: the distinct user@host pairs holding licenses at the first instant its checkouts
    reach ``peak`` (the engine's OUT/IN/RESTART rules, replayed instant by instant)."""
    held: dict[tuple[str, ...], int] = {}
    level: Counter[str] = Counter()
    found: dict[str, int] = {}
    ordered = sorted(events, key=lambda e: (e.ts, e.seq))
    for i, e in enumerate(ordered):
        if e.action == OUT:
            ident = (e.feature, e.vendor, e.user, e.host, e.handle or "")
            held[ident] = held.get(ident, 0) + e.count
            level[e.feature] += e.count
        elif e.action == IN:
            ident = (e.feature, e.vendor, e.user, e.host, e.handle or "")
            released = min(e.count, held.get(ident, 0))
            if released:
                held[ident] -= released
                level[e.feature] -= released
        elif e.action == RESTART:
            for ident in [k for k in held if k[1] == e.vendor]:
                level[ident[0]] -= held.pop(ident)
        if i + 1 < len(ordered) and ordered[i + 1].ts == e.ts:
            continue  # one instant: only the state after all of its events counts
        for f, n in level.items():
            if f not in found and n == peak.get(f) and n:
                found[f] = len({(k[2], k[3]) for k, v in held.items() if k[0] == f and v})
    return found


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
        "Licenses charged: a feature line's `DUP_GROUP` lets checkouts of one user on one host (UH) share a "
        "license, which the debug log cannot show (it writes every OUT). The tables give, at the first instant of "
        "each feature's peak, how many distinct user@host pairs held it, and the peak of the licenses charged if "
        "the feature were `DUP_GROUP=UH` (`lictel run --dup-group '*=UH'`): where the two differ from the peak, "
        "the license server may count fewer licenses than the log's checkouts.",
        "",
    ]
    for path in sorted(corpus.glob("*.log")):
        body += analyse(path)
    (ROOT / "docs" / "real-logs.md").write_text("\n".join(body))
    print(f"wrote docs/real-logs.md ({len(body)} lines)")


if __name__ == "__main__":
    main()
