"""Damaged and hostile input through the real pipeline: never a crash, never a silently wrong
figure, never lost data (docs/guarantees.md, "Bad input")."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lictel.engine import compute_rows
from lictel.events import event_from_json
from lictel.export import minute_row, to_csv
from tests.integration.conftest import Lictel

pytestmark = pytest.mark.integration


def _good(n: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        start = rng.randrange(0, 4 * 3600)
        for j, (action, at) in enumerate((("OUT", start), ("IN", start + rng.randrange(60, 3600)))):
            lines.append({"event_id": f"lic01:g:{2 * i + j}", "ts": f"2026-03-02T{8 + at // 3600:02d}:"
                          f"{at // 60 % 60:02d}:{at % 60:02d}Z", "org": "acme", "server": "lic01", "vendor": "V",
                          "feature": "F", "action": action, "user": f"u{i % 7}", "host": f"h{i % 5}",
                          "handle": str(i), "count": 1, "reason": None, "source": "lic01:g", "seq": 2 * i + j})
    return lines


def test_one_bad_record_costs_only_itself(lictel: Lictel, tmp_path: Path) -> None:
    good = _good(120, 1)
    bad_values = [{"ts": "1970-01-01T00:00:00Z"}, {"ts": "0001-01-01T00:00:00Z"}, {"ts": "9999-12-31T00:00:00Z"},
                  {"ts": "2300-01-01T00:00:00Z"}, {"count": 2**40}, {"count": 2**31}, {"seq": 2**63},
                  {"user": "\ud800"}, {"host": "pc\u0000"}, {"ts": "2004-03-02T09:00:00Z"}]
    bad = [{**good[0], **change, "event_id": f"lic01:b:{k}", "seq": change.get("seq", 10_000 + k)}
           for k, change in enumerate(bad_values)]
    lines = good[:100] + bad + good[100:]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))  # ensure_ascii: "\ud800" stays an escape
    run = lictel("run", "--jsonl", str(path), "--workers", "2", timeout=240)
    err = " ".join(run.stderr.split())
    assert f"{len(bad_values)} bad input line(s) dead-lettered" in err
    want = compute_rows([event_from_json(x) for x in good])
    for level in ("pool", "estate"):
        assert lictel("export", "usage", "--level", level, "--format", "csv").stdout == to_csv(
            minute_row(r) for r in want if r.level == level)
    assert "before 1990" in err and "after the wall clock" in err
