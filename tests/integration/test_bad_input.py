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


def test_names_that_look_like_markup_or_terminal_escapes_are_shown_as_written(lictel: Lictel,
                                                                             tmp_path: Path) -> None:
    feature = "[link=https://example.invalid]F[/link]"
    lines = [{**x, "feature": feature, "user": "[/]" if x["user"] == "u1" else x["user"]} for x in _good(20, 2)]
    lines.append({**lines[0], "event_id": "lic01:g:esc", "seq": 999, "host": "pc\u001b[31m"})  # an ANSI escape
    path = tmp_path / "markup.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    run = lictel("run", "--jsonl", str(path))
    out = run.stdout + run.stderr
    assert feature in out and "1 bad input line(s) dead-lettered" in " ".join(out.split())
    assert "\u001b[31m" not in out and "U+001B" in out  # the escape is named, never sent to the terminal
    table = lictel("report", "denials", "--by", "user").stdout + lictel("report", "peak").stdout
    assert feature in table
    users = lictel("report", "usage", "--feature", feature, "--format", "csv").stdout
    assert users.splitlines()[1].startswith(f"acme,(estate),{feature},")


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found |= {int(x) for x in text}
    return found


@pytest.mark.group_changes  # the killed run's members linger in the broker's group until they time out
def test_children_die_with_a_killed_parent_and_the_next_run_works(lictel: Lictel, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {**lictel.env, "LICTEL_KAFKA_BOOTSTRAP": ""}  # the embedded broker too: it must die as well
    up = subprocess.Popen([sys.executable, "-m", "lictel.cli", "up"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    assert up.stdout is not None
    deadline = time.monotonic() + 60
    kids: set[int] = set()
    while time.monotonic() < deadline and len(kids) < 3:  # broker, sink, one worker
        time.sleep(0.5)
        kids = _children(up.pid)
    assert len(kids) >= 3, f"lictel up did not start its children: {kids}"
    os.kill(up.pid, signal.SIGKILL)
    up.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{k}").exists() and
                                              "zombie" not in _state(k) for k in kids):
        time.sleep(0.5)
    alive = [k for k in kids if Path(f"/proc/{k}").exists() and "zombie" not in _state(k)]
    assert not alive, f"children outlived their killed parent: {alive}"
    # The warehouse is free again: the next run on the same data dir works.
    path = tmp_path / "after.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in _good(5, 3)))
    lictel("run", "--jsonl", str(path))


def _state(pid: int) -> str:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "zombie"
    return next((line for line in status.splitlines() if line.startswith("State:")), "").lower()
