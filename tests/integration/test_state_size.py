"""The producers' ``prev`` map keeps a stream worker's applied-seq sets one interval per source
although each source's events are spread over every partition: produced by the real producer into
the real broker, read back partition by partition and applied by the real partition logic."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from lictel.broker import EmbeddedBroker, ensure_topics
from lictel.config import Settings
from lictel.engine import compute_rows, sort_rows
from lictel.events import Event
from lictel.pipeline import read_topic
from lictel.serde import Serde
from producers.base import EventProducer
from producers.simulate import SimSpec, simulate
from streams.partitions import PartitionWorker
from tests.unit.test_partitions import NOW, Harness

pytestmark = pytest.mark.integration


async def _produce_and_read(settings: Settings, bootstrap: str, events: list[Event]) -> dict[int, list[bytes]]:
    await ensure_topics(bootstrap, settings)
    producer = await EventProducer(settings, bootstrap, source="t").start()
    for ev in events:
        await producer.send(ev)
    await producer.close(final=True)
    return await read_topic(bootstrap, settings.topic("events"), settings.partitions)


def test_applied_seq_sets_stay_one_interval_per_source_across_partitions(broker: EmbeddedBroker) -> None:
    settings = Settings(**broker.client_settings(), topic_prefix=f"t{uuid.uuid4().hex[:10]}",  # type: ignore[arg-type]
                        partitions=4, batch_events=50, snapshot_s=1000.0)
    other = [e._replace(event_id=f"g-{e.event_id}", source=f"g-{e.source}")  # sources are named uniquely
             for e in simulate(SimSpec(org="globex", users=200, servers=2, days=2, seed=7))]
    events = sorted([*simulate(SimSpec(users=300, servers=2, days=2)), *other], key=lambda e: e.ts)
    log = asyncio.run(_produce_and_read(settings, broker.bootstrap, events))
    h = Harness(log=log)
    w = PartitionWorker(settings, h.io(), clock=lambda: NOW)

    async def go() -> None:
        for p, msgs in log.items():
            for offset, value in enumerate(msgs):
                await w.message("events", p, offset, value, (p, offset))
        await w.checkpoint_due(force=True)

    asyncio.run(go())
    latest = {}
    serde = Serde.of(settings)
    for topic, _, value in h.output:
        if topic == settings.topic("usage"):
            for r in serde.decode_usage(value)[2]:
                latest[(r.source, r.level, r.org, r.server, r.feature, r.minute)] = r
    assert sort_rows(latest.values()) == compute_rows(events)
    spread = 0
    for key, part in w.parts.items():
        applied = part.engine._applied
        spread += len(applied)
        for source, seqs in applied.items():
            assert len(seqs.intervals()) == 1, (key, source, seqs.intervals()[:5])
    sources = {e.source for e in events}
    assert spread > len(sources)  # some source is spread over several partitions
