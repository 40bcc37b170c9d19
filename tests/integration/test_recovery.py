"""A stream worker killed with SIGKILL mid-stream and replaced: identical rows, none lost or doubled."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from lictel.broker import EmbeddedBroker
from lictel.config import Settings
from lictel.engine import compute_rows
from lictel.events import Event
from lictel.export import minute_row, usage_rows
from lictel.pipeline import Stack, wait_input_stored
from lictel.warehouse import connect
from producers.base import EventProducer
from producers.simulate import SimSpec, simulate

pytestmark = pytest.mark.integration


def test_worker_sigkill_and_restart_gives_identical_rows(broker: EmbeddedBroker, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", **broker.client_settings(),  # type: ignore[arg-type]

                        topic_prefix=f"k{uuid.uuid4().hex[:8]}", partitions=4, snapshot_s=0.5, batch_events=200)
    events = list(simulate(SimSpec(users=300, servers=2, days=2, seed=11)))
    half = len(events) // 2
    stack = Stack(settings, workers=1).start()
    try:
        async def first_half() -> None:
            producer = await EventProducer(stack.settings, stack.bootstrap, source="t").start()
            for e in events[:half]:
                await producer.send(e)
            await producer.close(final=False)

        asyncio.run(first_half())
        # Let the worker apply part of it and checkpoint, then kill it without warning.
        asyncio.run(_wait_any_final(stack.settings, stack.bootstrap, events[half // 2].ts))
        time.sleep(1.0)
        worker = stack.procs.pop("stream-0")
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        stack.start_worker(0)

        async def second_half() -> int:
            producer = await EventProducer(stack.settings, stack.bootstrap, source="t").start()
            for e in events[half:]:
                await producer.send(e)
            await producer.close(final=True)
            mark = producer.closing_mark()
            assert mark is not None
            await wait_input_stored(stack, {"events": mark}, timeout=300)
            return mark

        asyncio.run(second_half())
        # The restarted worker took its partitions' state back from the changelog (not from the
        # input topic alone): some partition was restored, and less was caught up than applied before.
        port = (stack.settings.data_dir / "worker-0" / "metrics-stream.port").read_text()
        counters = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read())["counters"]
        assert counters["restored"] >= 1, counters
    finally:
        stack.stop()
    client = connect(settings)
    expected = compute_rows(events)
    for level in ("pool", "estate"):
        got = usage_rows(client, settings.clickhouse_database, level, "minute")
        want = [minute_row(r) for r in expected if r.level == level]
        assert len(got) == len(want) and got == want, level


async def _wait_any_final(settings: Settings, bootstrap: str, target: int) -> None:
    """Until the sink reports some partition stored and final past ``target``."""
    consumer = AIOKafkaConsumer(settings.topic("progress"), bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=200)).values():
                for m in msgs:
                    if any(int(f) >= target for f in json.loads(m.value).get("final_upto", {}).values()):
                        return
        raise AssertionError("the pipeline made no progress before the kill")
    finally:
        await consumer.stop()


def test_a_clean_stop_and_start_takes_the_state_back_and_reads_nothing_again(broker: EmbeddedBroker,
                                                                              tmp_path: Path) -> None:
    """A job's last messages are saved though no message follows them, so a worker stopped and
    started again restores every partition it had and catches nothing up from the input topic."""
    settings = Settings(data_dir=tmp_path / "data", **broker.client_settings(),  # type: ignore[arg-type]
                        topic_prefix=f"c{uuid.uuid4().hex[:8]}", partitions=4, snapshot_s=0.5, batch_events=200)
    events = list(simulate(SimSpec(users=200, servers=2, days=1, seed=5)))
    half = len(events) // 2
    stack = Stack(settings, workers=1).start()

    port_file = stack.settings.data_dir / "worker-0" / "metrics-stream.port"

    def counters() -> dict[str, int]:
        deadline = time.monotonic() + 60
        while not port_file.exists():  # the worker serves its endpoint once it has started
            assert time.monotonic() < deadline, "the worker's endpoint did not come up"
            time.sleep(0.2)
        port = port_file.read_text()
        answer = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read()
        return dict(json.loads(answer)["counters"])

    async def send(part: list[Event], final: bool) -> int | None:
        producer = await EventProducer(stack.settings, stack.bootstrap, source="t").start()
        for e in part:
            await producer.send(e)
        await producer.close(final=final)
        return producer.closing_mark()

    try:
        asyncio.run(send(events[:half], final=False))
        deadline = time.monotonic() + 60
        while not (c := counters())["snapshots"] or c["messages"] < 1:
            assert time.monotonic() < deadline, c
            time.sleep(0.5)
        time.sleep(2.0)  # past LICTEL_SNAPSHOT_S: the timer saves what the last messages left
        held = counters()["loaded"]
        stack.stop_process("stream-0")  # SIGTERM: a clean stop
        port_file.unlink()
        stack.start_worker(0)
        mark = asyncio.run(send(events[half:], final=True))
        assert mark is not None
        asyncio.run(wait_input_stored(stack, {"events": mark}, timeout=300))
        after = counters()
    finally:
        stack.stop()
    assert after["restored"] == held and after["caught_up"] == 0, after
    client = connect(settings)
    for level in ("pool", "estate"):
        got = usage_rows(client, settings.clickhouse_database, level, "minute")
        assert got == [minute_row(r) for r in compute_rows(events) if r.level == level], level
