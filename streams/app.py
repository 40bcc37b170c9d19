"""The Faust app: event batches in, final minute rows out. A thin shell around
``streams.partitions.PartitionWorker``, which owns the engines and the checkpoint order.

- Two input topics: ``events`` (license servers) and ``sessions`` (broker session exports), each
  with its own agent, one engine per input partition.
- Checkpoints go into the ``state`` topic (compacted, same partition as the input): with a message
  once ``snapshot_s`` has passed, on a timer for partitions whose last messages waited that long
  (saved without a commit), and for every revoked partition when the group rebalances. A worker
  reads a partition's state back from that topic itself before its first message. Input offsets
  are committed by the checkpoint, after the state is saved, never on Faust's own timer, so a
  committed offset is never past the saved state (streams/partitions.py has the order).
- Every output batch names its input stream and partition and how far that partition is final, so
  the sink and ``lictel run`` know when a minute is complete.
- Undecodable messages go to the dead-letter topic with their partition and offset; the worker
  goes on. Input it cannot read stops the worker with an error (never skipped).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.types import TP

from lictel import kafka, logs, metrics
from lictel.config import Settings, group_options
from streams.partitions import CatchUpError, Key, PartitionWorker

log = logging.getLogger("lictel.streams")

class _FaustIO:
    """:class:`~streams.partitions.WorkerIO` over the Faust app: the state table, its producer and
    consumer commits, and a plain consumer for catch-up reads."""

    def __init__(self, app: faust.App, settings: Settings, bootstrap: str, topics: dict[str, Any]) -> None:
        self.app = app
        self.settings = settings
        self.bootstrap = bootstrap
        self.topics = topics
        self._reader: AIOKafkaConsumer | None = None
        # The state as this process knows it: what it saved, and what it read back from the state
        # topic. The state is not a Faust table: Faust's table recovery stops the streams until it
        # reaches the end the broker reports, which the embedded broker reports short, and decodes
        # the records with its own codecs (docs/decisions.md, "Stream state").
        self._mem: dict[str, bytes] = {}
        self.changelog = settings.topic("state")
        self._writer: AIOKafkaProducer | None = None
        self._unsent: list[tuple[str, int, bytes | None]] = []

    async def _consumer(self) -> AIOKafkaConsumer:
        if self._reader is None:
            self._reader = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, **kafka.client_options(self.settings),
                                            enable_auto_commit=False, max_partition_fetch_bytes=16 << 20)
            await self._reader.start()
        return self._reader

    async def recover(self, partition: int) -> None:
        """Read the changelog partition from its start: the newest record of each name wins, a
        tombstone deletes it (what compaction keeps)."""
        reader = await self._consumer()
        tp = TopicPartition(self.changelog, partition)
        # The embedded broker may answer short here (the last batch's first offset + 1): reading
        # goes on until a fetch comes back empty, past this end.
        end = (await reader.end_offsets([tp]))[tp]
        if not end:
            return
        reader.assign([tp])
        await reader.seek_to_beginning(tp)
        n = empty = 0
        while True:
            msgs = (await reader.getmany(tp, timeout_ms=300)).get(tp, [])
            for m in msgs:
                name = m.key.decode() if m.key is not None else ""
                if m.value is None:
                    self._mem.pop(name, None)
                else:
                    self._mem[name] = m.value
            n += len(msgs)
            if msgs:
                empty = 0
                continue
            empty += 1
            if await reader.position(tp) >= end:
                break
            if empty >= 20:
                raise CatchUpError(f"{self.changelog}[{partition}]: the saved state could not be read back (at "
                                   f"{await reader.position(tp)} of {end}); the worker stops rather than start from a "
                                   f"wrong state. Check that the broker is reachable, then start the worker again.")
        log.info("%s[%d]: read back %d state record(s)", self.changelog, partition, n)

    def load(self, name: str) -> bytes | None:
        return self._mem.get(name)

    def save(self, name: str, partition: int, value: bytes | None) -> None:
        if value is None:
            self._mem.pop(name, None)
        else:
            self._mem[name] = value
        self._unsent.append((name, partition, value))  # sent, in order, by the next flush

    async def send(self, topic: str, value: bytes, partition: int | None) -> None:
        await self.topics[topic].send(value=value, partition=partition)

    async def flush(self) -> None:
        await self.app.producer.flush()
        if self._unsent:
            if self._writer is None:
                self._writer = AIOKafkaProducer(bootstrap_servers=self.bootstrap,
                                                **kafka.producer_options(self.settings), acks="all",
                                                max_request_size=16 << 20)
                await self._writer.start()
            unsent, self._unsent = self._unsent, []
            for name, partition, value in unsent:  # one partition's records keep their order
                await self._writer.send(self.changelog, value, key=name.encode(), partition=partition)
            await self._writer.flush()

    async def commit(self, tokens: list[Any]) -> None:
        # Faust acknowledges a message as the agent finishes it, so what it commits now was applied
        # before this checkpoint, and is in the state just saved.
        await self.app.consumer.commit()

    async def read(self, stream: str, partition: int, start: int, upto: int) -> AsyncIterator[tuple[int, bytes]]:
        reader = await self._consumer()
        tp = TopicPartition(self.settings.topic(stream), partition)
        reader.assign([tp])
        reader.seek(tp, start)
        got = await reader.getmany(tp, timeout_ms=2000)
        for m in got.get(tp, []):
            if m.offset >= upto:
                break
            yield m.offset, m.value or b""


def make_app(settings: Settings, bootstrap: str, instance_id: str | None = None) -> faust.App:
    """Build the stream app for ``settings`` against the Kafka at ``bootstrap``."""
    (settings.data_dir / "streams").mkdir(parents=True, exist_ok=True)
    timing = group_options(settings)
    app = faust.App(
        f"{settings.topic_prefix}-streams",
        broker=f"kafka://{bootstrap}",
        store=settings.stream_store,
        datadir=str(settings.data_dir / "streams"),
        topic_partitions=settings.partitions,
        # Connection (TLS, SASL), client id, replication and creation of its topics, compression.
        **kafka.faust_options(settings),
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=16 << 20,
        producer_acks=-1,
        # Group timing for where we run (Settings.with_group_defaults, docs/operations.md).
        broker_session_timeout=timing["session_timeout_ms"] / 1000,
        broker_heartbeat_interval=timing["heartbeat_interval_ms"] / 1000,
        # With static membership a restarted worker takes its old place in the group at once.
        consumer_group_instance_id=instance_id,
        table_standby_replicas=0,
        # Messages Faust takes out of the consumer ahead of the agent. aiokafka fetches a partition
        # again only once everything fetched of it is taken; the fetch is read by Faust's consumer
        # thread, which waits for the GIL behind this busy one. With room for 64 messages (a quarter
        # of a 16 MiB fetch) a worker catching up stood still ~0.7 s per fetch: 127,000 events/s at
        # 70 % CPU. With room for more than a fetch, the next is read while the last is applied:
        # 183,000 events/s at 98 % (bench/stream_worker.py's input). At most ~40 MB of batches.
        stream_buffer_maxsize=512,
        consumer_max_fetch_size=16 << 20,
        # Offsets are committed by our checkpoints (streams/partitions.py), never on Faust's own
        # timer or count, so a committed offset is never past the saved state.
        broker_commit_interval=10**9,
        broker_commit_every=2**62,
    )
    events = app.topic(settings.topic("events"), value_type=bytes, value_serializer="raw",
                       partitions=settings.partitions)
    sessions = app.topic(settings.topic("sessions"), value_type=bytes, value_serializer="raw",
                         partitions=settings.partitions)
    outputs = {settings.topic(name): app.topic(settings.topic(name), value_type=bytes, value_serializer="raw",
                                               partitions=1 if name == "deadletter" else settings.partitions)
               for name in ("usage", "late", "deadletter")}
    io = _FaustIO(app, settings, bootstrap, outputs)
    worker = PartitionWorker(settings, io)
    metrics.serve("stream", lambda: worker.counters, settings.metrics_port, settings.data_dir,
                  host=settings.metrics_host, health=lambda: worker.health())
    inputs = {settings.topic("events"): "events", settings.topic("sessions"): "sessions"}

    def keys(tps: Iterable[TP]) -> list[Key]:
        return [(inputs[tp.topic], tp.partition) for tp in tps if tp.topic in inputs]

    # Faust sends these after pausing the streams and flushing its producer (eager rebalance:
    # every partition is revoked, then the new assignment is made).
    async def on_revoked(sender: Any, revoked: set[TP], **_: Any) -> None:
        await worker.revoke(keys(revoked))

    async def on_assigned(sender: Any, assigned: set[TP], **_: Any) -> None:
        await worker.assigned(keys(assigned))

    app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]
    app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]

    async def consume(name: str, messages: faust.StreamT[bytes]) -> None:
        async for event in messages.events():
            msg = event.message
            await worker.message(name, msg.partition, msg.offset, msg.value or b"", event)  # a tombstone is dead

    @app.agent(events)
    async def process(stream: faust.StreamT[bytes]) -> None:
        try:
            await consume("events", stream)
        except CatchUpError as exc:
            log.error("%s", exc)
            await app.crash(exc)

    @app.agent(sessions)
    async def process_sessions(stream: faust.StreamT[bytes]) -> None:
        try:
            await consume("sessions", stream)
        except CatchUpError as exc:
            log.error("%s", exc)
            await app.crash(exc)

    @app.timer(interval=max(1.0, settings.snapshot_s))
    async def save_idle() -> None:
        # A partition's last messages are saved even when no message follows them (no commit here:
        # PartitionWorker.save_idle).
        await worker.save_idle()

    @app.timer(interval=30.0)
    async def report() -> None:
        log.info("stream counters: %s", worker.counters)

    return app


def run_worker(settings: Settings, bootstrap: str, instance_id: str | None = None) -> None:
    """Run one stream worker in this process until it is stopped (SIGTERM/SIGINT), logging as
    LICTEL_LOG_LEVEL (default WARNING) and LICTEL_LOG_FORMAT say (lictel.logs)."""
    app = make_app(settings, bootstrap, instance_id)
    worker = faust.Worker(app, loglevel=logs.level(settings, "WARNING"), quiet=True,
                          logging_config=logs.config("stream", settings, "WARNING"))
    worker.execute_from_commandline()
