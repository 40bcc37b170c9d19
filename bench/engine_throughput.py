"""Pure engine throughput: simulated events through ``Engine.process`` in 1,000-event batches.

Run: .venv/bin/python bench/engine_throughput.py [--users N --days N]
"""

from __future__ import annotations

import argparse
import time

from _report import record

from lictel.dupgroup import DupRules
from lictel.engine import Engine
from lictel.serde import Serde
from producers.simulate import SimSpec, simulate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--servers", type=int, default=5)
    ap.add_argument("--days", type=int, default=7)
    args = ap.parse_args()
    events = list(simulate(SimSpec(users=args.users, servers=args.servers, days=args.days)))
    serde = Serde()
    batches = [serde.encode_events(events[i:i + 1000]) for i in range(0, len(events), 1000)]
    timings = {}
    for name, rules in (("no DUP_GROUP rule", DupRules()), ("`*=UH`", DupRules({"*": "UH"}))):
        eng = Engine(rules=rules)
        t = time.perf_counter()
        rows = 0
        for b in batches:
            rows += len(eng.process(serde.decode_events(b)).rows)
        timings[name] = (time.perf_counter() - t, rows)
    t = time.perf_counter()
    for b in batches:
        serde.decode_events(b)
    decode = time.perf_counter() - t
    (plain, rows), (uh, _) = timings.values()
    record("engine", "Engine: decode + concurrency engine, one core", "bench/engine_throughput.py", [
        f"- {len(events):,} simulated events ({args.users:,} users, {args.servers} servers, {args.days} days) "
        f"in {len(batches):,} Avro batches of 1,000",
        *(f"- decode + engine, {name}: **{len(events) / took:,.0f} events/s** ({took:.2f} s, {n:,} minute rows)"
          for name, (took, n) in timings.items()),
        f"- licenses charged under `*=UH` cost {1 - plain / uh:.1%} of the throughput without a rule",
        f"- of which Avro decode alone: {len(events) / decode:,.0f} events/s",
    ])


if __name__ == "__main__":
    main()
