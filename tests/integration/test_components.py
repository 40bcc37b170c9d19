"""The components as a deployment runs them: `lictel up`, separate producers, garbage on the wire,
metrics, and re-running on the same data dir."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import chdb
import pytest
from aiokafka import AIOKafkaProducer

from lictel.broker import EmbeddedBroker
from tests.integration.conftest import Lictel

DATA = Path(__file__).parent.parent / "data"
pytestmark = pytest.mark.integration


def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_up_then_produce_then_export(lictel: Lictel) -> None:
    env = {**lictel.env, "LICTEL_METRICS_PORT": "0", "LICTEL_LOG_FORMAT": "json"}
    del env["LICTEL_KAFKA_BOOTSTRAP"]  # `up` starts the embedded broker and records it in the data dir
    up = subprocess.Popen([sys.executable, "-m", "lictel.cli", "up", "--workers", "2"], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: (lictel.data_dir / "broker.json").exists(), 30, "the embedded broker")
        produce_env = {k: v for k, v in lictel.env.items() if k != "LICTEL_KAFKA_BOOTSTRAP"}
        got = subprocess.run([sys.executable, "-m", "lictel.cli", "produce", "jsonl", str(DATA / "small.jsonl")],
                             env=produce_env, capture_output=True, text=True, timeout=120)
        assert got.returncode == 0, got.stderr
        assert "sent 8 events" in got.stdout
        port_file = lictel.data_dir / "metrics-sink.port"
        _wait(port_file.exists, 30, "the sink's metrics endpoint")

        def stored_rows() -> float:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port_file.read_text()}/metrics").read().decode()
            for line in text.splitlines():
                if line.startswith("lictel_sink_usage_rows_total "):
                    return float(line.split()[1])
            return 0.0

        _wait(lambda: stored_rows() >= 6, 120, "the minute rows to be stored")  # 4 pool + 2 estate
        assert list((lictel.data_dir).glob("worker-*/metrics-stream.port"))
        # lictel status finds every component through the data dir and reads what the sink stored.
        status_env = {k: v for k, v in lictel.env.items() if k != "LICTEL_KAFKA_BOOTSTRAP"}
        seen = subprocess.run([sys.executable, "-m", "lictel.cli", "status", "--json"], env=status_env,
                              capture_output=True, text=True, timeout=120)
        assert seen.returncode == 0, seen.stdout + seen.stderr
        report = json.loads(seen.stdout)
        components = report["components"]
        assert sorted(components) == ["sink", "stream 0", "stream 1"]
        assert all(c["status"] == "ok" for c in components.values()), components
        # Every input partition is held by exactly one of the two workers once both have read.
        held = components["stream 0"]["partitions"] + components["stream 1"]["partitions"]
        assert len(held) == len(set(held))
        assert components["sink"]["counters"]["usage_rows"] >= 6
        assert report["warehouse"]["last_final_minute"] == {"lic01": "2026-03-02T10:01Z",
                                                           "lic02": "2026-03-02T10:01Z"}
        assert report["warehouse"]["dead_letters"] == 0
        assert set(report["kafka"]["lag"]) == {f"{lictel.env['LICTEL_TOPIC_PREFIX']}-streams",
                                               f"{lictel.env['LICTEL_TOPIC_PREFIX']}-sink"}
        health = urllib.request.urlopen(f"http://127.0.0.1:{port_file.read_text()}/healthz").read()
        assert json.loads(health)["component"] == "sink"
    finally:
        up.send_signal(signal.SIGINT)
        _out, err = up.communicate(timeout=60)
    assert up.returncode == 0, err
    assert not (lictel.data_dir / "broker.json").exists()
    # LICTEL_LOG_FORMAT=json: every line the sink wrote is one JSON object naming the component.
    lines = (lictel.data_dir / "logs" / "sink.log").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    assert records and {r["component"] for r in records} == {"sink"}
    assert {"ts", "level", "logger", "message"} <= set(records[0])
    # Stopped: no endpoint is left behind for status to find, and it says so.
    assert not list(lictel.data_dir.glob("**/metrics-*.port"))
    after = subprocess.run([sys.executable, "-m", "lictel.cli", "status"], env=produce_env, capture_output=True,
                           text=True, timeout=120)
    assert after.returncode == 1 and "no component endpoints" in after.stdout, after.stdout
    pool = lictel("export", "usage", "--level", "pool", "--format", "csv")
    assert pool.stdout == (DATA / "small_pool.csv").read_text()


def test_undecodable_messages_are_dead_lettered_and_work_goes_on(lictel: Lictel) -> None:
    prefix = lictel.env["LICTEL_TOPIC_PREFIX"]

    async def garbage() -> None:
        from lictel.broker import ensure_topics
        from lictel.config import Settings

        settings = Settings(kafka_bootstrap=lictel.env["LICTEL_KAFKA_BOOTSTRAP"], topic_prefix=prefix, partitions=4,
                            group_static=False)
        await ensure_topics(lictel.env["LICTEL_KAFKA_BOOTSTRAP"], settings)
        producer = AIOKafkaProducer(bootstrap_servers=lictel.env["LICTEL_KAFKA_BOOTSTRAP"])
        await producer.start()
        await producer.send_and_wait(f"{prefix}.events", b"\xc3\x01garbage-that-is-not-avro", partition=0)
        await producer.stop()

    asyncio.run(garbage())
    lictel("run", "--jsonl", str(DATA / "small.jsonl"))
    assert lictel("export", "usage", "--format", "csv").stdout == (DATA / "small_pool.csv").read_text()
    result = chdb.query("SELECT stage, kafka_topic FROM lictel.dead_letters FINAL ORDER BY stage", "JSONCompact",
                        path=str(lictel.data_dir / "warehouse"))
    rows = json.loads(str(result))["data"]
    # The stream worker and the sink both read the events topic; each reports the bad message once.
    assert rows == [["sink", f"{prefix}.events"], ["stream", f"{prefix}.deadletter"]]


def test_running_twice_on_one_data_dir_changes_nothing(lictel: Lictel) -> None:
    lictel("run", "--jsonl", str(DATA / "small.jsonl"))
    first = lictel("export", "usage", "--level", "estate", "--format", "csv").stdout
    env = dict(lictel.env)
    env["LICTEL_TOPIC_PREFIX"] += "b"  # a second run, as after a restart of the embedded broker
    again = Lictel(lictel.data_dir, env)
    again("run", "--jsonl", str(DATA / "small.jsonl"))
    assert again("export", "usage", "--level", "estate", "--format", "csv").stdout == first
    raw = chdb.query("SELECT count() FROM lictel.raw_events FINAL", "CSV", path=str(lictel.data_dir / "warehouse"))
    assert str(raw).strip() == "8"
    assert os.path.exists(lictel.data_dir / "warehouse")


def test_end_offsets_count_every_record_of_a_batch(broker: EmbeddedBroker) -> None:
    """The embedded broker answers ListOffsets with the last batch's first offset + 1; waiting for
    the sink to store "everything up to the end" must not stop at the first record of a batch."""
    from lictel.pipeline import end_offsets

    topic = f"eo{uuid.uuid4().hex[:8]}"

    async def go() -> dict[int, int]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=200)
        await producer.start()
        try:
            sent = [await producer.send(topic, b"x", partition=0) for _ in range(10)]
            await producer.flush()
            assert [(await f).offset for f in sent] == list(range(10))
        finally:
            await producer.stop()
        return await end_offsets(broker.bootstrap, topic, 1)

    assert asyncio.run(go()) == {0: 10}
