"""Kafka → ClickHouse: raw events, minute rows, dead letters and progress, batched and idempotent.

Invariants
----------
- One consumer group reads the events, usage and dead-letter topics; offsets are committed only
  after ClickHouse acknowledged every insert that holds their messages (at-least-once).
- Every write is idempotent: raw events are keyed by ``event_id``, minute rows by key and minute
  (ReplacingMergeTree), dead letters by their topic position; each insert also carries an
  ``insert_deduplication_token`` derived from the Kafka offsets it holds.
- Buffers are flushed at ``sink_batch_rows`` rows or ``sink_flush_s`` after the first buffered
  message, whichever comes first.
- After a flush the sink publishes what is now stored (per usage partition: final_upto; per
  events partition: next offset) to the progress topic, and keeps ``pipeline_progress`` current.
- A message that does not decode is dead-lettered with its position; the sink goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from clickhouse_connect.driver.client import Client

from lictel.config import Settings
from lictel.errors import BrokerError, SchemaError
from lictel.events import HEARTBEAT
from lictel.serde import Serde
from lictel.timeutil import US
from lictel.warehouse import connect, migrate

log = logging.getLogger("lictel.sink")

RAW_COLUMNS = ["event_id", "ts", "org", "server", "vendor", "feature", "action", "user", "host",
               "handle", "count", "reason", "source", "seq"]
USAGE_COLUMNS = ["level", "org", "server", "feature", "minute", "peak", "low", "license_us",
                 "checkouts", "checkins", "forced_releases", "denials", "queued", "orphans", "version"]
DEAD_COLUMNS = ["ts", "stage", "source", "line", "field", "reason", "raw", "kafka_topic",
                "kafka_partition", "kafka_offset"]


@dataclass
class SinkStats:
    raw_events: int = 0
    usage_rows: int = 0
    dead_letters: int = 0
    inserts: int = 0
    undecodable: int = 0
    final_upto: dict[int, int] = field(default_factory=dict)


class _Buffer:
    def __init__(self) -> None:
        self.raw: list[list[Any]] = []
        self.usage: list[list[Any]] = []
        self.dead: list[list[Any]] = []
        self.offsets: dict[TopicPartition, tuple[int, int]] = {}  # first, last
        self.final: dict[int, int] = {}
        self.first_at: float | None = None

    def size(self) -> int:
        return len(self.raw) + len(self.usage) + len(self.dead)

    def note(self, tp: TopicPartition, offset: int) -> None:
        first = self.offsets.get(tp, (offset, offset))[0]
        self.offsets[tp] = (first, offset)
        if self.first_at is None:
            self.first_at = time.monotonic()

    def token(self, table: str) -> str:
        parts = [f"{tp.topic}:{tp.partition}:{a}-{b}" for tp, (a, b) in sorted(self.offsets.items())]
        return f"{table}|" + "|".join(parts)


class ClickHouseSink:
    """The sink loop. ``run`` until ``stop`` is set; ``flush`` on the way out."""

    def __init__(self, settings: Settings, bootstrap: str, client: Client | None = None) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.db = settings.clickhouse_database
        self.client = client or connect(settings)
        self.serde = Serde(settings.schema_registry_url,
                           {t: settings.topic(t) for t in ("events", "usage", "deadletter")})
        self.topics = {settings.topic("events"): "events", settings.topic("usage"): "usage",
                       settings.topic("deadletter"): "dead"}
        self.stats = SinkStats()
        self.stop = asyncio.Event()
        self._buf = _Buffer()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    async def run(self) -> None:
        migrate(self.client, self.settings)
        self._consumer = AIOKafkaConsumer(
            *self.topics, bootstrap_servers=self.bootstrap,
            group_id=f"{self.settings.topic_prefix}-sink", enable_auto_commit=False,
            auto_offset_reset="earliest", max_partition_fetch_bytes=16 << 20,
            fetch_max_bytes=64 << 20, session_timeout_ms=6_000,
            heartbeat_interval_ms=1_000)
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        try:
            await self._consumer.start()
            await self._producer.start()
        except Exception as exc:
            raise BrokerError(f"sink cannot reach Kafka at {self.bootstrap}: {exc}") from exc
        try:
            while not self.stop.is_set():
                batches = await self._consumer.getmany(timeout_ms=100, max_records=2000)
                for tp, messages in batches.items():
                    for msg in messages:
                        self._take(tp, msg.offset, msg.value)
                buf = self._buf
                if buf.size() >= self.settings.sink_batch_rows or (
                        buf.first_at is not None
                        and time.monotonic() - buf.first_at >= self.settings.sink_flush_s):
                    await self.flush()
            await self.flush()
        finally:
            await self._consumer.stop()
            await self._producer.stop()

    def _take(self, tp: TopicPartition, offset: int, value: bytes) -> None:
        kind = self.topics[tp.topic]
        buf = self._buf
        buf.note(tp, offset)
        try:
            if kind == "events":
                for e in self.serde.decode_events(value):
                    if e.action != HEARTBEAT:
                        buf.raw.append(list(e))
            elif kind == "usage":
                p, final, rows = self.serde.decode_usage(value)
                version = int(time.time() * US)
                for r in rows:
                    buf.usage.append([r.level, r.org, r.server, r.feature, r.minute // US, r.peak,
                                      r.low, r.license_us, r.checkouts, r.checkins,
                                      r.forced_releases, r.denials, r.queued, r.orphans, version])
                if final is not None:
                    buf.final[p] = max(final, buf.final.get(p, final))
            else:
                d = self.serde.decode_dead(value)
                buf.dead.append([d["ts"], d["stage"], d["source"], d["line"], d["field"],
                                 d["reason"], d["raw"], tp.topic, tp.partition, offset])
        except SchemaError as exc:
            self.stats.undecodable += 1
            log.warning("undecodable message %s[%d]@%d: %s", tp.topic, tp.partition, offset, exc)
            buf.dead.append([int(time.time() * US), "sink", tp.topic, offset, None, str(exc),
                             value[:4096].hex(), tp.topic, tp.partition, offset])

    async def flush(self) -> None:
        """Insert everything buffered, then commit the offsets it came from and publish progress."""
        buf = self._buf
        if not buf.offsets:
            return
        self._buf = _Buffer()
        db = self.db
        for table, rows, columns in (("raw_events", buf.raw, RAW_COLUMNS),
                                     ("usage_minute", buf.usage, USAGE_COLUMNS),
                                     ("dead_letters", buf.dead, DEAD_COLUMNS)):
            if rows:
                await asyncio.to_thread(self._insert, f"{db}.{table}", rows, columns, buf.token(table))
        now = int(time.time() * US)
        if buf.final:
            rows = [[p, f, now] for p, f in sorted(buf.final.items())]
            await asyncio.to_thread(self._insert, f"{db}.pipeline_progress", rows,
                                    ["partition", "final_upto", "updated_at"], buf.token("progress"))
        self.stats.raw_events += len(buf.raw)
        self.stats.usage_rows += len(buf.usage)
        self.stats.dead_letters += len(buf.dead)
        self.stats.final_upto.update(buf.final)
        assert self._consumer is not None and self._producer is not None
        await self._consumer.commit({tp: last + 1 for tp, (_, last) in buf.offsets.items()})
        events_topic = self.settings.topic("events")
        progress = {
            "final_upto": {str(p): f for p, f in buf.final.items()},
            "events_offsets": {str(tp.partition): last + 1 for tp, (_, last) in buf.offsets.items()
                               if tp.topic == events_topic},
            "stored": {"raw_events": len(buf.raw), "usage_rows": len(buf.usage),
                       "dead_letters": len(buf.dead)},
        }
        await self._producer.send_and_wait(self.settings.topic("progress"), json.dumps(progress).encode())

    def _insert(self, table: str, rows: list[list[Any]], columns: list[str], token: str) -> None:
        columns_data = [list(col) for col in zip(*rows, strict=True)]
        self.client.insert(table, columns_data, column_names=columns, column_oriented=True,
                           settings={"insert_deduplication_token": token})
        self.stats.inserts += 1
