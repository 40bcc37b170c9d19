"""`lictel produce flexnet LOG --follow`: a growing log, a half-written line, a SIGKILL, rotation
while the follower is down, truncation in place. The events topic ends up with every written line
exactly once per event id, and no line missing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from lictel.serde import Serde
from tests.integration.conftest import Lictel

pytestmark = pytest.mark.integration


def _line(i: int) -> str:
    minute, second = divmod(i, 60)
    action = "OUT" if i % 2 == 0 else "IN"
    return f"10:{minute:02d}:{second:02d} (CITRIX) {action}: \"F\" u{i // 2}@h{i // 2}\n"


async def _events(bootstrap: str, topic: str) -> dict[str, tuple[int, str, str]]:
    serde = Serde()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    seen: dict[str, tuple[int, str, str]] = {}
    try:
        idle = 0
        while idle < 5:
            batches = await consumer.getmany(timeout_ms=300)
            idle = 0 if batches else idle + 1
            for msgs in batches.values():
                for m in msgs:
                    for e in serde.decode_events(m.value):
                        if e.action == "HEARTBEAT":
                            continue
                        content = (e.ts, e.action, e.user)
                        assert seen.setdefault(e.event_id, content) == content, e.event_id
    finally:
        await consumer.stop()
    return seen


def test_follow_survives_kill_rotation_and_truncation(lictel: Lictel, tmp_path: Path) -> None:
    log = tmp_path / "CITRIX.log"
    env = {**lictel.env, "LICTEL_HEARTBEAT_S": "1", "LICTEL_LINGER_MS": "50", "LICTEL_METRICS_PORT": "0"}

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "lictel.cli", "produce", "flexnet", str(log), "--server",
                                 "lic01", "--tz", "UTC", "--follow"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def append(text: str, path: Path = log) -> None:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()

    checkpoints = lictel.data_dir / "checkpoints"
    append(" 9:00:00 (lmgrd) TIMESTAMP 3/2/2026\n" + "".join(_line(i) for i in range(0, 40)))
    follower = start()
    time.sleep(4)
    append("".join(_line(i) for i in range(40, 60)) + _line(60)[:15])  # the last line is half written
    time.sleep(3)
    assert list(checkpoints.glob("*.json")), "no checkpoint written"
    # Its health says what it follows and how far it got (lictel status reads this).
    port = (lictel.data_dir / "metrics-producer.port").read_text()
    health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read())
    assert health["status"] == "ok" and health["file"] == str(log) and health["lines"] >= 40, health
    assert health["last_event"].startswith("2026-03-02T10:00:"), health
    follower.send_signal(signal.SIGKILL)
    follower.wait()
    append(_line(60)[15:] + "".join(_line(i) for i in range(61, 80)))
    os.rename(log, tmp_path / "CITRIX.log.1")  # rotated while the follower is down
    append(" 9:00:00 (lmgrd) TIMESTAMP 3/3/2026\n" + "".join(_line(i) for i in range(0, 20)))
    follower = start()
    time.sleep(5)
    with open(log, "w", encoding="utf-8") as fh:  # copytruncate
        fh.write(" 9:00:00 (lmgrd) TIMESTAMP 3/4/2026\n" + "".join(_line(i) for i in range(0, 10)))
    time.sleep(4)
    follower.send_signal(signal.SIGINT)
    _, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err

    seen = asyncio.run(_events(lictel.env["LICTEL_KAFKA_BOOTSTRAP"], f"{lictel.env['LICTEL_TOPIC_PREFIX']}.events"))
    from lictel.timeutil import parse_ts

    def expected(day: str, n: int) -> set[tuple[int, str, str]]:
        out = set()
        for i in range(n):
            minute, second = divmod(i, 60)
            out.add((parse_ts(f"2026-03-{day}T10:{minute:02d}:{second:02d}Z"), "OUT" if i % 2 == 0 else "IN",
                     f"u{i // 2}"))
        return out

    want = expected("02", 80) | expected("03", 20) | expected("04", 10)
    assert set(seen.values()) == want
    assert len(seen) == len(want)  # one id per line: no line sent under two ids
