"""More workers never cost a rebalance storm: `lictel run` with 1, 2 and 4 workers, each twice
(storms come and go, so one fast run proves nothing), on an input shaped like a real estate's
(1,500+ users, 4 servers, 72 h, disorder up to 55 s). Every run is exact against the batch
recompute, no worker or sink log shows the group moving after its first join (the `lictel`
fixture checks), and no multi-worker run costs more than its start-up over the best one-worker run.
The ratios themselves are measured by bench/stream_scaling.py."""

from __future__ import annotations

import random
import re
import shutil
import uuid
from pathlib import Path

import pytest

from lictel.engine import compute_rows
from lictel.events import event_to_line
from lictel.export import minute_row, to_csv
from lictel.pipeline import group_churn
from lictel.timeutil import US
from producers.simulate import SimSpec, simulate
from tests.integration.conftest import Lictel

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# A storm costs 5-20x; start-up is ~5 s of a ~15 s run. Generous bounds, as CI machines are noisy.
BOUND = {2: 1.6, 4: 2.0}


def _stored_seconds(stderr: str) -> float:
    m = re.search(r"all stored in ([0-9.]+) s", stderr)
    assert m, stderr[-2000:]
    return float(m.group(1))


@pytest.mark.timeout(1200)
def test_one_two_and_four_workers_twice_each(lictel: Lictel, tmp_path: Path) -> None:
    events = list(simulate(SimSpec(users=12000, servers=4, days=3, seed=5)))
    rnd = random.Random(1)
    shuffled = sorted(events, key=lambda e: e.ts + rnd.randrange(55 * US))
    path = tmp_path / "estate.jsonl"
    path.write_text("".join(event_to_line(e) + "\n" for e in shuffled))
    expected = compute_rows(events)
    want = {level: to_csv(minute_row(r) for r in expected if r.level == level) for level in ("pool", "estate")}
    took: dict[int, list[float]] = {1: [], 2: [], 4: []}
    for k, workers in enumerate((1, 2, 4, 4, 2, 1)):
        # A fresh data dir, topics and group each time, as a new `lictel run` on its own broker has.
        shutil.rmtree(lictel.data_dir, ignore_errors=True)
        lictel.env["LICTEL_TOPIC_PREFIX"] = f"scale{k}{uuid.uuid4().hex[:8]}"
        run = lictel("run", "--jsonl", str(path), "--workers", str(workers), timeout=600)
        took[workers].append(_stored_seconds(run.stderr))
        churn = group_churn(lictel.data_dir / "logs")
        assert not churn, f"{workers} workers: the group moved after its first join:\n" + "\n".join(churn[:10])
        for level in ("pool", "estate"):
            got = lictel("export", "usage", "--level", level, "--format", "csv").stdout
            assert got == want[level], f"{workers} workers: {level} rows differ"
    base = min(took[1])
    for workers, bound in BOUND.items():
        worst = max(took[workers])
        assert worst <= bound * base, f"{workers} workers took {took[workers]} s, one worker {took[1]} s"
