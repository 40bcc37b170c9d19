"""Integration fixtures: one real Tansu broker per session, a fresh topic prefix per test.

Everything runs as real processes through the real CLI (``python -m lictel.cli``), so a test sees
what a user sees: the broker, Faust workers, the sink and chDB.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lictel.broker import EmbeddedBroker
from lictel.config import Settings
from lictel.pipeline import group_churn
from lictel.warehouse import connect, migrate


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(tmp_path_factory.mktemp("broker")) as b:
        yield b


@dataclass
class Lictel:
    """Runs ``lictel`` commands with this test's data dir, topics and broker."""

    data_dir: Path
    env: dict[str, str]

    def __call__(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "lictel.cli", *args], env=self.env, text=True,
                              capture_output=True, timeout=timeout)
        if check and proc.returncode != 0:
            logs = ""
            for log in sorted((self.data_dir / "logs").glob("*.log")):
                logs += f"\n--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise AssertionError(f"lictel {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
                                 f"stderr:\n{proc.stderr}{logs}")
        return proc


@pytest.fixture
def lictel(broker: EmbeddedBroker, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Lictel]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LICTEL_")}
    env.update({
        "LICTEL_DATA_DIR": str(tmp_path / "data"),
        **broker.client_env(),
        "LICTEL_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}",
        "LICTEL_PARTITIONS": "4",
        "COLUMNS": "200",
    })
    yield Lictel(tmp_path / "data", env)
    if request.node.get_closest_marker("group_changes") is None:
        churn = group_churn(tmp_path / "data" / "logs")
        assert not churn, "the consumer group rebalanced with no member added or lost:\n" + "\n".join(churn[:10])


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[tuple[Settings, Any]]:
    """An in-process chDB warehouse with lictel's schema, closed afterwards: chDB serves one data
    directory per process, so a test that left its client open would break the next one."""
    settings = Settings(data_dir=tmp_path)
    client = connect(settings)
    try:
        migrate(client, settings)
        yield settings, client
    finally:
        client.close()


def reemit_and_store(lictel: Lictel) -> int:
    """Produce every message of the usage topic once more, as a restarted worker emits its rows
    again, and run the sink until it has stored them. Returns the messages re-emitted."""
    prefix, bootstrap = lictel.env["LICTEL_TOPIC_PREFIX"], lictel.env["LICTEL_KAFKA_BOOTSTRAP"]
    resent = asyncio.run(_emit_usage_again(bootstrap, prefix))
    log = open(lictel.data_dir / "sink-again.log", "wb")  # noqa: SIM115 - handed to the child
    sink = subprocess.Popen([sys.executable, "-m", "lictel.cli", "sink", "--sink-id", "0"], env=lictel.env,
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        asyncio.run(_until_committed(bootstrap, prefix, int(lictel.env["LICTEL_PARTITIONS"]), timeout=120))
    finally:
        sink.terminate()
        sink.wait(30)
    return resent


async def _emit_usage_again(bootstrap: str, prefix: str) -> int:
    """Produce every message of the usage topic once more, as a restarted worker would."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(f"{prefix}.usage", bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await consumer.start()
    await producer.start()
    try:
        msgs = []
        while batch := await consumer.getmany(timeout_ms=2000):
            msgs += [m for part in batch.values() for m in part]
        for m in msgs:
            await producer.send_and_wait(m.topic, m.value, partition=m.partition)
        return len(msgs)
    finally:
        await consumer.stop()
        await producer.stop()


async def _until_committed(bootstrap: str, prefix: str, partitions: int, timeout: float) -> None:
    """Wait until the sink group has committed the end of every usage partition."""
    import time

    from aiokafka import AIOKafkaConsumer, TopicPartition

    from lictel.pipeline import end_offsets

    ends = await end_offsets(bootstrap, f"{prefix}.usage", partitions)  # every record, not the broker's guess
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=f"{prefix}-sink", enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            committed = {p: await consumer.committed(TopicPartition(f"{prefix}.usage", p)) or 0 for p in ends}
            if all(committed[p] >= end for p, end in ends.items()):
                return
            await asyncio.sleep(0.5)
        raise AssertionError("the sink did not store the re-emitted rows in time")
    finally:
        await consumer.stop()
