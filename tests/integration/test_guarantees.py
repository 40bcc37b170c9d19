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
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from lictel.broker import EmbeddedBroker
from lictel.config import Settings, group_options
from lictel.engine import compute_rows
from lictel.events import Event
from lictel.export import minute_row, usage_rows
from lictel.pipeline import Stack, group_churn, wait_input_stored
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
                 restart_producer_at: int | None = None,
                 after_produce: Callable[[Stack], Awaitable[None]] | None = None, **overrides: object) -> Settings:
    """Stream ``events`` through a real stack; ``chaos(stack, i)`` runs before event i is sent,
    ``after_produce(stack)`` once every event is delivered to Kafka."""
    reach = broker.client_settings() if broker else {}
    settings = Settings(data_dir=tmp / "data", **reach,  # type: ignore[arg-type]
                        topic_prefix=f"g{uuid.uuid4().hex[:8]}", partitions=4, snapshot_s=0.5, batch_events=100,
                        linger_ms=50, **overrides)
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
            if after_produce is not None:
                await after_produce(stack)
            mark = producer.closing_mark()
            assert mark is not None
            await wait_input_stored(stack, {"events": mark}, timeout=300)

        asyncio.run(produce())
    finally:
        stack.stop()
    if chaos is None and after_produce is None:  # no member killed or added: the group never moves
        churn = group_churn(settings.data_dir / "logs")
        assert not churn, "the consumer group rebalanced with no member added or lost:\n" + "\n".join(churn[:10])
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


def _kill_and_restart(name: str, *at: int, delay: float = 0.3) -> Chaos:
    """Kill ``name`` with SIGKILL and start it again, from a thread, while events keep flowing."""
    lock = threading.Lock()

    def kill(stack: Stack) -> None:
        time.sleep(delay)
        with lock:
            proc = stack.procs.pop(name)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            if name == "sink":
                stack.start_sink()
            else:
                stack.start_worker(int(name.rsplit("-", 1)[1]))

    def chaos(stack: Stack, i: int) -> None:
        if i in at:
            threading.Thread(target=kill, args=(stack,), daemon=True).start()
            time.sleep(delay + 0.5)  # slow the producer a little so the victim has work in hand
    return chaos


def _stored(data_dir: Path) -> float:
    """What the running sink has stored so far, from its Prometheus counters (0 while it starts)."""
    try:
        port = (data_dir / "metrics-sink.port").read_text()
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read().decode()
    except (OSError, ValueError):
        return 0.0
    return sum(float(line.split()[1]) for line in text.splitlines()
               if line.startswith(("lictel_sink_raw_events_total", "lictel_sink_usage_rows_total")))


@pytest.mark.slow
def test_sink_killed_mid_backlog_three_times(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """The sink is held down while a larger estate is produced, then started three times and killed
    each time as soon as it has stored something: mid-way through the backlog, with rows buffered
    and inserts in flight."""
    events = list(simulate(SimSpec(users=800, servers=2, days=2, seed=22)))
    kills: list[float] = []

    def stop_sink(stack: Stack) -> None:
        proc = stack.procs.pop("sink")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        (stack.settings.data_dir / "metrics-sink.port").unlink(missing_ok=True)

    def hold_down(stack: Stack, i: int) -> None:
        if i == 0:
            stop_sink(stack)

    async def kill_three_times(stack: Stack) -> None:
        await asyncio.sleep(5)  # the stream worker emits its rows: a backlog of tens of thousands
        for _ in range(3):
            stack.start_sink()
            deadline = time.monotonic() + 60
            while _stored(stack.settings.data_dir) == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            kills.append(_stored(stack.settings.data_dir))
            stop_sink(stack)
        stack.start_sink()

    settings = run_pipeline(tmp_path, events, broker=broker, chaos=hold_down, after_produce=kill_three_times,
                            metrics_port=0, sink_batch_rows=100)
    total = len(events) + len(compute_rows(events))
    assert len(kills) == 3 and all(0 < k < total for k in kills), (kills, total)
    assert_exact(settings, events)


@pytest.mark.slow
def test_one_of_two_workers_killed_mid_stream(broker: EmbeddedBroker, tmp_path: Path) -> None:
    settings = run_pipeline(tmp_path, EVENTS, workers=2, broker=broker,
                            chaos=_kill_and_restart("stream-1", len(EVENTS) // 2, delay=1.5))
    assert_exact(settings, EVENTS)


@pytest.mark.slow
def test_a_worker_killed_during_a_rebalance(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """A third worker joins (the group rebalances: every worker checkpoints and drops what it gives
    up) and, while the group is still settling, one of the first two is killed and started again."""
    added = threading.Event()

    def chaos(stack: Stack, i: int) -> None:
        if i == len(EVENTS) // 3:
            stack.start_worker(2)
            added.set()
            _kill_and_restart("stream-0", 0, delay=2.0)(stack, 0)  # the join takes ~5 s: mid-rebalance

    settings = run_pipeline(tmp_path, EVENTS, workers=2, broker=broker, chaos=chaos)
    assert added.is_set()
    assert_exact(settings, EVENTS)


def test_sink_partitions_revoked_mid_batch(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """Another member joins the sink's group while the sink holds a half-filled buffer: the sink
    stores and commits what it read before giving partitions up, commits nothing it no longer
    owns, takes them back when the member leaves, and keeps running."""
    from aiokafka import AIOKafkaConsumer

    async def intrude(stack: Stack) -> None:
        s = stack.settings
        other = AIOKafkaConsumer(*(s.topic(t) for t in ("events", "sessions", "usage", "deadletter", "late")),
                                 bootstrap_servers=stack.bootstrap, group_id=f"{s.topic_prefix}-sink",
                                 enable_auto_commit=False, **group_options(s))
        await other.start()
        try:
            deadline = time.monotonic() + 30
            while not other.assignment() and time.monotonic() < deadline:
                await other.getmany(timeout_ms=200, max_records=1)  # joins; holds (never commits) a share
        finally:
            await other.stop()  # leaves: the sink gets everything back
        assert stack.procs["sink"].poll() is None, "the sink died in the rebalance"

    settings = run_pipeline(tmp_path, EVENTS, broker=broker, after_produce=intrude, sink_flush_s=10.0,
                            sink_batch_rows=10**6)
    assert_exact(settings, EVENTS)
    log = (settings.data_dir / "logs" / "sink.log").read_text()
    assert "Traceback" not in log and "CommitFailedError" not in log, log[-3000:]


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
