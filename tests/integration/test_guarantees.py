"""Whatever happens on the way, the same rows (issue: guarantees). Real processes throughout:
a Tansu broker, Faust workers and the sink as separate processes, chDB; every run is compared with
the batch recompute of the same events."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from lictel.broker import EmbeddedBroker
from lictel.config import Settings
from lictel.engine import compute_rows
from lictel.events import Event
from lictel.export import minute_row, usage_rows
from lictel.pipeline import Stack, end_offsets, wait_stored
from lictel.timeutil import US
from lictel.warehouse import connect
from producers.base import EventProducer
from producers.simulate import SimSpec, simulate

pytestmark = pytest.mark.integration
EVENTS = list(simulate(SimSpec(users=200, servers=2, days=1, seed=21)))


class _DoubleSender(EventProducer):
    """Delivers every message twice, as a retrying producer may."""

    async def _flush_partition(self, p: int) -> None:
        buf = list(self._buffers[p])
        await super()._flush_partition(p)
        if buf and self._producer is not None:
            self._pending.append(await self._producer.send(self.topic, self.serde.encode_events(buf), partition=p))


Chaos = Callable[[Stack, int], None]


def run_pipeline(tmp: Path, events: list[Event], *, workers: int = 1, broker: EmbeddedBroker | None = None,
                 chaos: Chaos | None = None, producer_cls: type[EventProducer] = EventProducer,
                 restart_producer_at: int | None = None) -> Settings:
    """Stream ``events`` through a real stack; ``chaos(stack, i)`` runs before event i is sent."""
    settings = Settings(data_dir=tmp / "data", kafka_bootstrap=broker.bootstrap if broker else None,
                        topic_prefix=f"g{uuid.uuid4().hex[:8]}", partitions=4, snapshot_s=0.5, batch_events=100,
                        linger_ms=50)
    stack = Stack(settings, workers=workers).start()
    try:
        async def produce() -> None:
            producer = await producer_cls(stack.settings, stack.bootstrap, source="t").start()
            for i, e in enumerate(events):
                if chaos is not None:
                    chaos(stack, i)
                if restart_producer_at is not None and i == restart_producer_at:
                    # The producer dies (what it buffered is lost) and is started again from the start.
                    await producer.close(final=False)
                    producer = await producer_cls(stack.settings, stack.bootstrap, source="t").start()
                    for again in events[:i]:
                        await producer.send(again)
                await producer.send(e)
            await producer.close(final=True)
            mark = producer.closing_mark()
            assert mark is not None
            topic = stack.settings.topic("events")
            ends = {f"{topic}|{p}": off
                    for p, off in (await end_offsets(stack.bootstrap, topic, settings.partitions)).items()}
            await wait_stored(stack.settings, stack.bootstrap, mark - settings.lateness_us, ends,
                              check=stack.check, timeout=300)

        asyncio.run(produce())
    finally:
        stack.stop()
    return settings


def assert_exact(settings: Settings, events: list[Event]) -> None:
    client = connect(settings)
    expected = compute_rows(events)
    for level in ("pool", "estate"):
        got = usage_rows(client, settings.clickhouse_database, level, "minute")
        want = [minute_row(r) for r in expected if r.level == level]
        assert len(got) == len(want), f"{level}: {len(got)} rows, expected {len(want)}"
        assert got == want, level
    raw = client.query("SELECT count() FROM lictel.raw_events FINAL").result_rows[0][0]
    assert raw == len({e.event_id for e in events})


def test_duplicated_deliveries_and_shuffled_arrival(broker: EmbeddedBroker, tmp_path: Path) -> None:
    rnd = random.Random(4)
    shuffled = sorted(EVENTS, key=lambda e: e.ts + rnd.randrange(45 * US))
    settings = run_pipeline(tmp_path, shuffled, workers=2, broker=broker, producer_cls=_DoubleSender)
    assert_exact(settings, EVENTS)


def test_producer_restarted_from_the_start_of_its_input(broker: EmbeddedBroker, tmp_path: Path) -> None:
    settings = run_pipeline(tmp_path, EVENTS, broker=broker, restart_producer_at=len(EVENTS) * 2 // 3)
    assert_exact(settings, EVENTS)


def _kill_and_restart(name: str, at: int) -> Chaos:
    def chaos(stack: Stack, i: int) -> None:
        if i == at:
            time.sleep(2.0)  # let it take and store part of the input first
            proc = stack.procs.pop(name)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            if name == "sink":
                stack.spawn("sink", ["sink"])
            else:
                stack.start_worker(int(name.rsplit("-", 1)[1]))
    return chaos


def test_sink_killed_mid_stream(broker: EmbeddedBroker, tmp_path: Path) -> None:
    settings = run_pipeline(tmp_path, EVENTS, broker=broker, chaos=_kill_and_restart("sink", len(EVENTS) // 2))
    assert_exact(settings, EVENTS)


@pytest.mark.slow
def test_one_of_two_workers_killed_mid_stream(broker: EmbeddedBroker, tmp_path: Path) -> None:
    settings = run_pipeline(tmp_path, EVENTS, workers=2, broker=broker,
                            chaos=_kill_and_restart("stream-1", len(EVENTS) // 2))
    assert_exact(settings, EVENTS)


@pytest.mark.slow
def test_four_workers(broker: EmbeddedBroker, tmp_path: Path) -> None:
    settings = run_pipeline(tmp_path, EVENTS, workers=4, broker=broker)
    assert_exact(settings, EVENTS)


@pytest.mark.slow
def test_broker_paused_for_15_seconds(tmp_path: Path) -> None:
    paused: list[threading.Thread] = []

    def freeze(pid: int) -> None:
        os.kill(pid, signal.SIGSTOP)
        time.sleep(15)
        os.kill(pid, signal.SIGCONT)

    def pause(stack: Stack, i: int) -> None:
        # The producer goes on sending while the broker is frozen: it must buffer and retry.
        if i == len(EVENTS) // 3:
            assert stack.broker is not None and stack.broker.proc is not None
            t = threading.Thread(target=freeze, args=(stack.broker.proc.pid,))
            t.start()
            paused.append(t)

    settings = run_pipeline(tmp_path, EVENTS, chaos=pause)  # its own embedded broker
    paused[0].join()
    assert_exact(settings, EVENTS)
