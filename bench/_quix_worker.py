"""The stream worker's job under Quix Streams, for bench/peer_quix.py (run in .venv-peer).

The same :class:`streams.partitions.PartitionWorker` (decode, engine, rows out, checkpoints of the
engine state) as the Faust worker, driven by a Quix Streams ``Application``: a stateless
``update`` per message of the events topic, rows produced with confluent-kafka, the engine state
written to a topic of its own as the Faust worker writes its changelog. Quix's own state stores
are not used (their changelogs need broker features the embedded broker does not have), and its
consumer commits on its own interval. Settings come from the ``LICTEL_*`` environment.

Usage: python bench/_quix_worker.py BOOTSTRAP
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

from confluent_kafka import Producer
from quixstreams import Application, message_context

from lictel.config import Settings, group_options
from streams.partitions import PartitionWorker


class QuixIO:
    """What a PartitionWorker needs, from confluent-kafka: sends and state writes on one producer."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.settings = settings
        self.state: dict[str, bytes] = {}
        self.state_topic = settings.topic("peer-state")
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all",
                                  "message.max.bytes": 8 << 20})

    async def recover(self, partition: int) -> None:
        """Nothing to read back: every benchmark run has topics of its own, so no state was saved
        before this process (the Faust worker reads its empty state partition once, about 10 ms)."""

    def load(self, name: str) -> bytes | None:
        return self.state.get(name)

    def save(self, name: str, partition: int, value: bytes | None) -> None:
        if value is None:
            self.state.pop(name, None)
        else:
            self.state[name] = value
        self.producer.produce(self.state_topic, value=value, key=name.encode(), partition=partition)
        self.producer.poll(0)

    async def send(self, topic: str, value: bytes, partition: int | None) -> None:
        if partition is None:
            self.producer.produce(topic, value=value)
        else:
            self.producer.produce(topic, value=value, partition=partition)
        self.producer.poll(0)

    async def flush(self) -> None:
        left = self.producer.flush(60)
        if left:
            raise RuntimeError(f"{left} message(s) not acknowledged within 60 s")

    async def commit(self, tokens: list[Any]) -> None:
        pass  # the Quix consumer commits on its own interval

    async def read(self, stream: str, partition: int, start: int, upto: int) -> AsyncIterator[tuple[int, bytes]]:
        raise RuntimeError(f"{stream}[{partition}]: offsets {start}..{upto - 1} were never delivered")
        yield  # an async generator, like the protocol's


def main() -> None:
    bootstrap = sys.argv[1]
    settings = Settings()
    io = QuixIO(settings, bootstrap)
    worker = PartitionWorker(settings, io)
    loop = asyncio.new_event_loop()
    timing = group_options(settings)  # the group timing the Faust worker uses on this broker
    app = Application(broker_address=bootstrap, consumer_group=f"{settings.topic_prefix}-quix",
                      auto_offset_reset="earliest", auto_create_topics=False, use_changelog_topics=False,
                      commit_interval=settings.snapshot_s, state_dir=settings.data_dir / "quix-state",
                      loglevel=os.environ.get("LICTEL_LOGLEVEL", "WARNING"),
                      consumer_extra_config={"session.timeout.ms": timing["session_timeout_ms"],
                                             "heartbeat.interval.ms": timing["heartbeat_interval_ms"]})
    events = app.topic(settings.topic("events"), value_deserializer="bytes")

    def apply(value: bytes) -> None:
        ctx = message_context()
        loop.run_until_complete(worker.message("events", ctx.partition, ctx.offset, value, None))

    app.dataframe(events).update(apply)
    try:
        app.run()
    finally:
        loop.run_until_complete(io.flush())


if __name__ == "__main__":
    main()
