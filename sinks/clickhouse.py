"""Kafka → ClickHouse: raw events, minute rows, dead letters and progress, batched and idempotent.

Invariants
----------
- One consumer group reads the events, sessions, usage, late and dead-letter topics; offsets are committed only
  after ClickHouse acknowledged every insert that holds their messages (at-least-once).
- Session events are stored in ``raw_events`` as events of vendor ``SESSIONS`` (site as server,
  client device as host, session key as handle), so ``lictel reconcile`` can recompute both series.
- Every write is idempotent: raw events are keyed by ``event_id``, minute rows by series, key and minute
  (ReplacingMergeTree), dead letters by their topic position; each insert also carries an
  ``insert_deduplication_token`` derived from the Kafka offsets it holds.
- Inserts run in a thread, one at a time and in order, while the next batch is read and decoded.
- Buffers are flushed at ``sink_batch_rows`` rows or ``sink_flush_s`` after the first buffered
  message, whichever comes first.
- After a flush the sink publishes what is now stored (per input stream and partition: final_upto; per
  topic partition: next offset) to the progress topic, and keeps ``pipeline_progress`` current.
- On taking partitions (start, rebalance) the sink first publishes what is already stored for them:
  their committed offsets and ``pipeline_progress``. A sink killed between its commit and its
  progress message would otherwise leave ``lictel run`` waiting for positions nobody reports.
- A message that does not decode is dead-lettered with its position; the sink goes on.
- Memory stays flat: the ClickHouse client keeps each insert's column data in reference cycles
  (its insert context and body generator refer to each other), which only Python's full collection
  frees, and that runs rarely in a process with millions of objects. So every stored buffer ends with
  a collection (``_release``); without it the sink held ~230 MiB more on a 1M-event run
  (docs/operations.md, "Memory").
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from clickhouse_connect.driver.client import Client

from lictel import kafka, limits, rollups
from lictel.alerts import Runner
from lictel.alerts import load as load_rules
from lictel.config import Settings, group_options
from lictel.engine import MinuteRow
from lictel.errors import BrokerError, SchemaError
from lictel.events import HEARTBEAT
from lictel.live import LiveGauges
from lictel.partitioning import partition_name
from lictel.serde import Serde, events_of
from lictel.status import warehouse_status
from lictel.timeutil import US
from lictel.warehouse import connect, ensure_schema

log = logging.getLogger("lictel.sink")

RAW_COLUMNS = ["event_id", "ts", "org", "server", "vendor", "feature", "action", "user", "host",
               "handle", "count", "reason", "source", "seq"]
LATE_COLUMNS = ["event_id", "ts", "org", "server", "feature", "action", "source", "seq"]
USAGE_COLUMNS = ["level", "source", "org", "server", "feature", "minute", "peak", "low", "license_us",
                 "checkouts", "checkins", "forced_releases", "denials", "queued", "orphans", "charged_peak",
                 "charged_low", "charged_license_us", "dup_group", "version"]
DEAD_COLUMNS = ["ts", "stage", "source", "line", "field", "reason", "raw", "kafka_topic",
                "kafka_partition", "kafka_offset"]


@dataclass
class SinkStats:
    raw_events: int = 0
    usage_rows: int = 0
    dead_letters: int = 0
    late_events: int = 0
    inserts: int = 0
    undecodable: int = 0
    refused: int = 0  # raw events outside lictel.limits (the stream worker dead-letters them)
    gc_s: float = 0.0  # time spent freeing what the inserts held (_release)
    rollup_s: float = 0.0  # time spent on day rollups (lictel.rollups)
    first_message_at: float | None = None  # time.monotonic() of the first message taken
    final_upto: dict[tuple[str, int], int] = field(default_factory=dict)


# The version of every minute row the stream computes. A recompute (lictel reconcile) writes a higher
# one, taken from the data (lictel.reconcile.next_version), so a row the stream emits again after a
# restart never replaces a reconciled minute; between equal versions the last insert wins.
STREAM_VERSION = 1


def write_minute_rows(client: Client, db: str, rows: list[MinuteRow], version: int) -> None:
    """Insert engine rows into ``usage_minute`` (a higher ``version`` replaces the same key's row)."""
    columns = [[r.minute // US if c == "minute" else (version if c == "version" else getattr(r, c)) for r in rows]
               for c in USAGE_COLUMNS]
    client.insert(f"{db}.usage_minute", columns, column_names=USAGE_COLUMNS, column_oriented=True)


class _Buffer:
    """What awaits the next insert, column by column (the form ClickHouse takes fastest)."""

    def __init__(self) -> None:
        self.raw: dict[str, list[Any]] = {c: [] for c in RAW_COLUMNS}
        self.late: dict[str, list[Any]] = {c: [] for c in LATE_COLUMNS}
        self.usage: dict[str, list[Any]] = {c: [] for c in USAGE_COLUMNS}
        self.dead: dict[str, list[Any]] = {c: [] for c in DEAD_COLUMNS}
        self.n_raw = self.n_usage = self.n_dead = self.n_late = 0
        self.offsets: dict[TopicPartition, tuple[int, int]] = {}  # first, last
        self.final: dict[tuple[str, int], int] = {}  # (input stream, partition) -> final_upto
        self.first_at: float | None = None

    def size(self) -> int:
        return self.n_raw + self.n_usage + self.n_dead + self.n_late

    def add_dead(self, values: list[Any]) -> None:
        for c, v in zip(DEAD_COLUMNS, values, strict=True):
            self.dead[c].append(v)
        self.n_dead += 1

    def note(self, tp: TopicPartition, offset: int) -> None:
        first = self.offsets.get(tp, (offset, offset))[0]
        self.offsets[tp] = (first, offset)
        if self.first_at is None:
            self.first_at = time.monotonic()

    def token(self, table: str) -> str:
        parts = [f"{tp.topic}:{tp.partition}:{a}-{b}" for tp, (a, b) in sorted(self.offsets.items())]
        return f"{table}|" + "|".join(parts)


class _Announce(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, sink: ClickHouseSink) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Store and commit what was read from them while they are still ours: the next owner starts
        # from that commit. (A store that fails here is retried by whoever reads them next.)
        try:
            await self.sink.flush(wait=True)
        except Exception as exc:
            log.warning("could not store the buffer before a rebalance (the next owner re-reads it): %s", exc)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        try:
            await self.sink.announce(assigned)
        except Exception as exc:  # progress is advisory; never let it stop the sink
            log.warning("could not announce stored progress: %s", exc)


class ClickHouseSink:
    """The sink loop. ``run`` until ``stop`` is set; ``flush`` on the way out."""

    def __init__(self, settings: Settings, bootstrap: str, client: Client | None = None,
                 group_instance_id: str | None = None) -> None:
        self.group_instance_id = group_instance_id
        self.settings = settings
        self._max_ahead = int(settings.max_ahead_s * US)
        self.bootstrap = bootstrap
        self.db = settings.clickhouse_database
        self.client = client or connect(settings)
        self.serde = Serde.of(settings)
        self.topics = {settings.topic("events"): "events", settings.topic("sessions"): "sessions",
                       settings.topic("usage"): "usage",
                       settings.topic("deadletter"): "dead", settings.topic("late"): "late"}
        self.stats = SinkStats()
        self.stop = asyncio.Event()
        self._buf = _Buffer()
        self._inflight: asyncio.Task[None] | None = None
        # Messages per poll: about a batch of rows (a message holds up to ~100 minute rows), so one
        # poll never buffers far more than sink_batch_rows.
        self._poll_records = max(10, settings.sink_batch_rows // 50)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        # Held around every use of the client: the API served from this process (lictel up
        # --serve-port) reads through the same client, one statement at a time.
        self.lock = threading.Lock()
        self.alerts: Runner | None = None
        self.live = LiveGauges(lambda: min(self.stats.final_upto.values()) if self.stats.final_upto else None)
        self._gauges_at = -1e18
        self._ents_at = -1e18
        self._polled_at: float | None = None  # time.monotonic() of the last poll: the loop is alive
        self._stored: tuple[float, dict[str, Any]] | None = None  # the warehouse's figures, cached
        if settings.alerts_file is not None:
            self.alerts = Runner(load_rules(settings.alerts_file), self.client, self.db, self.lock)

    def counters(self) -> dict[str, float]:
        st = self.stats
        out: dict[str, float] = {"raw_events": st.raw_events, "usage_rows": st.usage_rows,
                                 "dead_letters": st.dead_letters, "late_events": st.late_events,
                                 "inserts": st.inserts,
                                 "undecodable": st.undecodable}
        if st.final_upto:
            out["final_upto_seconds"] = min(st.final_upto.values()) / US
        return out

    async def run(self) -> None:
        with self.lock:
            ensure_schema(self.client, self.settings)
        # What is loaded by now lives as long as the process: keep it out of every collection, so
        # that _release only looks at what the buffers made.
        gc.collect()
        gc.freeze()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, **kafka.client_options(self.settings),
            group_id=f"{self.settings.topic_prefix}-sink", enable_auto_commit=False,
            auto_offset_reset="earliest", max_partition_fetch_bytes=16 << 20,
            fetch_max_bytes=64 << 20, **group_options(self.settings), group_instance_id=self.group_instance_id)
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, **kafka.producer_options(self.settings),
                                          acks="all")
        try:
            await self._consumer.start()
            self._consumer.subscribe(list(self.topics), listener=_Announce(self))
            await self._producer.start()
        except Exception as exc:
            raise BrokerError(f"sink cannot reach Kafka at {self.bootstrap}: {exc}") from exc
        if self.alerts is not None:
            await self.alerts.start()
        try:
            while not self.stop.is_set():
                await self._gauges()  # first: alerts judge against the entitlements it reads
                if self.alerts is not None:
                    await self.alerts.tick()
                batches = await self._consumer.getmany(timeout_ms=100, max_records=self._poll_records)
                self._polled_at = time.monotonic()
                for tp, messages in batches.items():
                    for msg in messages:
                        self._take(tp, msg.offset, msg.value)
                buf = self._buf
                if buf.size() >= self.settings.sink_batch_rows or (
                        buf.first_at is not None
                        and time.monotonic() - buf.first_at >= self.settings.sink_flush_s):
                    await self.flush()
            await self.flush(wait=True)
            if self.alerts is not None:
                await self.alerts.close()
        finally:
            log.info("sink stopping: %d inserts, %.2f s freeing insert data", self.stats.inserts, self.stats.gc_s)
            await self._consumer.stop()
            await self._producer.stop()

    def health(self) -> dict[str, Any]:
        """For ``/healthz`` (lictel.metrics) and ``lictel status``: failing when the loop has not
        polled for a minute (stuck storing: ClickHouse unreachable or refusing)."""
        now = time.monotonic()
        out: dict[str, Any] = {"status": "ok", "counters": self.counters(), "consumer_lag": dict(self.live.lag)}
        if self._polled_at is None:
            out["status"] = "starting"
        elif now - self._polled_at > max(60.0, 4 * self.settings.sink_flush_s):
            out.update(status="failing", reason=f"no poll for {now - self._polled_at:.0f} s: storing is stuck "
                                                 f"(is ClickHouse reachable?)")
        if self._consumer is not None:
            out["partitions"] = sorted(f"{tp.topic}:{tp.partition}" for tp in self._consumer.assignment())
        if self.stats.final_upto:
            out["final_upto"] = dt.datetime.fromtimestamp(min(self.stats.final_upto.values()) / US, dt.UTC).isoformat()
        # The warehouse's own figures, when the client is free within a moment (a long insert keeps
        # the last ones).
        if (self._stored is None or now - self._stored[0] > 10.0) and self.lock.acquire(timeout=1.0):
            try:
                self._stored = (now, warehouse_status(self.client, self.db))
            except Exception as exc:
                out["warehouse_error"] = str(exc)
            finally:
                self.lock.release()
        if self._stored is not None:
            out["warehouse"] = self._stored[1]
        return out

    def _take(self, tp: TopicPartition, offset: int, value: bytes) -> None:
        kind = self.topics[tp.topic]
        if self.stats.first_message_at is None:
            self.stats.first_message_at = time.monotonic()
        buf = self._buf
        buf.note(tp, offset)
        try:
            if kind == "events":
                cols, _ = self.serde.decode_event_columns(value)
                now = int(time.time() * US)
                n = len(cols["ts"])
                actions = cols["action"]
                keep: Sequence[int] = (range(n) if HEARTBEAT not in actions
                                       else [i for i, a in enumerate(actions) if a != HEARTBEAT])
                if not limits.columns_clean(cols, now, self._max_ahead):
                    # Not storable or not believable: the stream worker dead-letters these (one record
                    # each); storing them raw would let a reconcile count them.
                    events = events_of(cols)
                    good = [i for i in keep if limits.problem(events[i], now, self._max_ahead) is None]
                    self.stats.refused += len(keep) - len(good)
                    keep = good
                if len(keep) == n:
                    for c, col in buf.raw.items():
                        col.extend(cols[c])
                else:
                    for c, col in buf.raw.items():
                        values = cols[c]
                        col.extend([values[i] for i in keep])
                buf.n_raw += len(keep)
            elif kind == "sessions":
                decoded = [e for e in self.serde.decode_sessions(value) if e.action != HEARTBEAT]
                for c, col in buf.raw.items():
                    col.extend([getattr(e, c) for e in decoded])
                buf.n_raw += len(decoded)
            elif kind == "late":
                late, _ = self.serde.decode_event_columns(value)
                for c, col in buf.late.items():
                    col.extend(late[c])
                buf.n_late += len(late["ts"])
            elif kind == "usage":
                partition, final, stream, rows = self.serde.decode_usage_columns(value)
                n = len(rows["minute"])
                for c, col in buf.usage.items():
                    if c == "minute":
                        col.extend([m // US for m in rows["minute"]])
                    elif c == "version":
                        col.extend([STREAM_VERSION] * n)
                    else:
                        col.extend(rows[c])
                buf.n_usage += n
                key = (stream, partition)
                if final is not None:
                    buf.final[key] = max(final, buf.final.get(key, final))
            else:
                d = self.serde.decode_dead(value)
                buf.add_dead([d["ts"], d["stage"], d["source"], d["line"], d["field"], d["reason"], d["raw"],
                              tp.topic, tp.partition, offset])
        except (SchemaError, KeyError, TypeError) as exc:
            self.stats.undecodable += 1
            log.warning("undecodable message %s[%d]@%d: %s", tp.topic, tp.partition, offset, exc)
            buf.add_dead([int(time.time() * US), "sink", tp.topic, offset, None, str(exc),
                          value[:4096].hex(), tp.topic, tp.partition, offset])

    async def flush(self, wait: bool = False) -> None:
        """Hand the buffer to the writer; with ``wait``, return once everything is stored.

        One store runs at a time, in order, while the loop goes on reading and decoding the next
        batch; so offsets are committed in order, each after its insert was acknowledged.
        """
        buf = self._buf
        if buf.offsets:
            self._buf = _Buffer()
            if self._inflight is not None:
                await self._inflight
            self._inflight = asyncio.create_task(self._store(buf))
        if wait and self._inflight is not None:
            await self._inflight
            self._inflight = None

    async def _store(self, buf: _Buffer) -> None:
        """Insert one buffer, then commit the offsets it came from and publish progress."""
        db = self.db
        for table, columns, n in (("raw_events", buf.raw, buf.n_raw),
                                  ("late_events", buf.late, buf.n_late),
                                  ("usage_minute", buf.usage, buf.n_usage),
                                  ("dead_letters", buf.dead, buf.n_dead)):
            if n:
                await asyncio.to_thread(self._insert, f"{db}.{table}", columns, buf.token(table))
        now = int(time.time() * US)
        if buf.final:
            keys = sorted(buf.final)
            progress_cols: dict[str, list[Any]] = {"partition": [p for _, p in keys], "stream": [s for s, _ in keys],
                             "final_upto": [buf.final[k] for k in keys], "updated_at": [now] * len(keys)}
            await asyncio.to_thread(self._insert, f"{db}.pipeline_progress", progress_cols, buf.token("progress"))
        if buf.n_usage or buf.final:
            await asyncio.to_thread(self._roll_up, buf.usage["minute"])
        self.live.stored(buf.usage)
        if self.alerts is not None:
            await self.alerts.stored(buf.usage, buf.raw)
        self.stats.raw_events += buf.n_raw
        self.stats.usage_rows += buf.n_usage
        self.stats.dead_letters += buf.n_dead
        self.stats.late_events += buf.n_late
        self.stats.final_upto.update(buf.final)
        assert self._consumer is not None and self._producer is not None
        await self._commit({tp: last + 1 for tp, (_, last) in buf.offsets.items()})
        progress = {
            "final_upto": {partition_name(s, p): f for (s, p), f in buf.final.items()},
            "offsets": {f"{tp.topic}|{tp.partition}": last + 1 for tp, (_, last) in buf.offsets.items()},
            "stored": {"raw_events": buf.n_raw, "usage_rows": buf.n_usage, "dead_letters": buf.n_dead,
                       "late_events": buf.n_late},
        }
        await self._producer.send_and_wait(self.settings.topic("progress"), json.dumps(progress).encode())
        t = time.perf_counter()
        _release()
        self.stats.gc_s += time.perf_counter() - t

    async def _gauges(self) -> None:
        """Every few seconds: the consumer lag per topic; every five minutes: the counts entitled, for
        the gauges and the alerts."""
        now = time.monotonic()
        if now - self._gauges_at < 5.0 or self._consumer is None:
            return
        self._gauges_at = now
        lag: dict[str, int] = {}
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is not None:
                lag[tp.topic] = lag.get(tp.topic, 0) + max(0, high - await self._consumer.position(tp))
        self.live.lag = lag
        if now - self._ents_at >= 300.0:
            self._ents_at = now

            def read() -> Any:
                with self.lock:
                    return self.client.query(f"SELECT org, server, feature, count, start, expiry FROM "
                                             f"{self.db}.entitlements FINAL WHERE uncounted = 0").result_rows

            rows = await asyncio.to_thread(read)
            self.live.set_entitlements(rows)
            if self.alerts is not None:
                self.alerts.set_entitlements(rows)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit the offsets of partitions this sink still owns. Rows read from a partition that
        has moved are stored (inserts are idempotent); its new owner re-reads from the last commit."""
        assert self._consumer is not None
        owned = self._consumer.assignment()
        mine = {tp: off for tp, off in offsets.items() if tp in owned}
        if len(mine) < len(offsets):
            log.info("not committing %d partition(s) no longer assigned: %s", len(offsets) - len(mine),
                     sorted(f"{tp.topic}[{tp.partition}]" for tp in offsets if tp not in owned))
        if not mine:
            return
        try:
            await self._consumer.commit(mine)
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("commit refused after a rebalance (the new owner re-reads from the last commit): %s", exc)

    async def announce(self, assigned: set[TopicPartition]) -> None:
        """On taking partitions: publish what is already stored for them (committed offsets, and how
        far each input partition is final, from ``pipeline_progress``). A sink killed after its
        commit but before its progress message would otherwise leave waiters short forever."""
        assert self._consumer is not None and self._producer is not None
        offsets = {}
        for tp in sorted(assigned):
            committed = await self._consumer.committed(tp)
            if committed is not None and committed >= 0:
                offsets[f"{tp.topic}|{tp.partition}"] = committed
        def read() -> Any:
            with self.lock:
                return self.client.query(f"SELECT stream, partition, toUnixTimestamp64Micro(max(final_upto)) "
                                         f"FROM {self.db}.pipeline_progress GROUP BY stream, partition").result_rows

        rows = await asyncio.to_thread(read)
        final = {partition_name(stream, int(p)): int(f) for stream, p, f in rows}
        await self._producer.send_and_wait(self.settings.topic("progress"), json.dumps(
            {"final_upto": final, "offsets": offsets, "stored": {}}).encode())

    def _roll_up(self, minutes: list[int]) -> None:
        """Day rollups (lictel.rollups): once every partition of a stream is final past a day's end,
        that day is rolled up; a day already rolled up that received rows now is rolled up again."""
        touched = {rollups.day_of(m * US) for m in set(minutes)}
        with self.lock:
            rows = self.client.query(
                f"SELECT stream, count(), toUnixTimestamp64Micro(min(final_upto)) FROM {self.db}.pipeline_progress "
                f"FINAL GROUP BY stream").result_rows
            if not any(n >= self.settings.partitions for _, n, _ in rows):
                return  # some partition has not said how far it is final yet
            t = time.perf_counter()
            rollups.advance(self.client, self.db, min(int(f) for _, _, f in rows), touched)
        self.stats.rollup_s += time.perf_counter() - t

    def _insert(self, table: str, columns: dict[str, list[Any]], token: str) -> None:
        with self.lock:
            self.client.insert(table, list(columns.values()), column_names=list(columns), column_oriented=True,
                               settings={"insert_deduplication_token": token})
        self.stats.inserts += 1


def _release() -> None:
    """Free the column data of the inserts just stored (held in the client's reference cycles)."""
    gc.collect()
