"""What every producer shares: batching events onto the events topic, heartbeats, dead letters.

Invariants
----------
- An event goes to ``partition_for(org, feature)``; RESTART and HEARTBEAT go to every partition.
- A Kafka message is one Avro ``LicenseEventBatch`` of at most ``batch_events`` events; a partition's
  buffer is flushed when full or ``linger_ms`` after its first event.
- Every send's delivery report is awaited; a failed delivery stops the producer with an error
  (aiokafka has already retried it), so nothing is lost silently.
- Each batch says, per source, the seq of the source's last event sent to its partition before
  it (``prev``), while the source is read in rising seq order and nothing of it was dead-lettered
  since: the stream worker then knows that the seqs in between went to other partitions, and its
  set of applied seqs stays one interval per source (docs/operations.md, "Partitions, checkpoints
  and versions").
- Heartbeats: per server, at most every ``heartbeat_s`` of wall clock, stamped with the newest event
  time read from that server; :meth:`close` sends a closing heartbeat that makes every minute up to
  the end of the input final.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

from lictel import kafka, limits
from lictel.config import Settings
from lictel.errors import BrokerError, InputError
from lictel.events import BROADCAST, HEARTBEAT, SESSION_VENDOR, Event, event_to_line, heartbeat
from lictel.partitioning import partition_for
from lictel.serde import Serde
from lictel.timeutil import DAY_US, MINUTE_US, US, floor_minute


@dataclass
class ProduceStats:
    """Counters of one producer run (also shown in its summary)."""

    events: int = 0
    messages: int = 0
    heartbeats: int = 0
    dead_letters: int = 0
    by_action: Counter[str] = field(default_factory=Counter)
    first_ts: int | None = None
    last_ts: int | None = None
    errors: list[str] = field(default_factory=list)  # the first few dead-letter reasons

    def add(self, other: ProduceStats) -> None:
        """Count ``other``'s run in this one (a job with several producers)."""
        self.events += other.events
        self.messages += other.messages
        self.heartbeats += other.heartbeats
        self.dead_letters += other.dead_letters
        self.by_action.update(other.by_action)
        for ts in (other.first_ts, other.last_ts):
            if ts is not None:
                self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
                self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        self.errors.extend(other.errors[:20 - len(self.errors)])


class EventProducer:
    """Async batching producer of ``LicenseEvent``s onto ``<prefix>.events``, or, with
    ``stream="sessions"``, of session events (vendor ``SESSIONS``) as ``SessionEvent``s onto
    ``<prefix>.sessions``."""

    def __init__(self, settings: Settings, bootstrap: str, *, source: str = "lictel",
                 stream: str = "events") -> None:
        if stream not in ("events", "sessions"):
            raise ValueError(f"unknown input stream {stream!r}")
        self.settings = settings
        self.bootstrap = bootstrap
        self.source = source
        self.stream = stream
        self.topic = settings.topic(stream)
        self._hb_vendor = SESSION_VENDOR if stream == "sessions" else ""
        self.dead_topic = settings.topic("deadletter")
        self.serde = Serde.of(settings)
        self._encode = self.serde.encode_sessions if stream == "sessions" else self.serde.encode_events
        self.partitions = settings.partitions
        self.stats = ProduceStats()
        self._buffers: list[list[Event]] = [[] for _ in range(self.partitions)]
        self._first_at: list[float | None] = [None] * self.partitions
        self._pending: list[asyncio.Future[Any]] = []
        self._servers: dict[tuple[str, str], int] = {}  # (org, server) -> newest ts read
        self._last_hb = time.monotonic()
        self._hb_seq = 0
        self._producer: AIOKafkaProducer | None = None
        self._max_ahead_us = int(settings.max_ahead_s * US)
        self._clock = limits.SourceClock(int(settings.max_source_gap_days * DAY_US))
        # For each batch's ``prev``: the highest seq read per source, whether the source was read
        # in rising order so far, and per partition the last seq of each source sent there (None:
        # the gap before the next one is unknown, after a dead letter of that source).
        self._read_max: dict[str, int] = {}
        self._in_order: dict[str, bool] = {}
        self._sent_last: list[dict[str, int | None]] = [{} for _ in range(self.partitions)]

    async def start(self) -> EventProducer:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, **kafka.producer_options(self.settings), acks="all", linger_ms=5,
            max_batch_size=1 << 20, max_request_size=16 << 20, request_timeout_ms=60_000,
            retry_backoff_ms=200)
        try:
            await self._producer.start()
        except Exception as exc:
            raise BrokerError(f"cannot reach Kafka at {self.bootstrap}: {exc}") from exc
        return self

    async def send(self, event: Event) -> None:
        """Queue one event; flushes batches that are full or have lingered long enough. An event
        outside what lictel can hold or believe (:mod:`lictel.limits`) is a dead letter instead."""
        bad = limits.problem(event, int(time.time() * US), self._max_ahead_us) or self._clock.problem(event)
        if bad is not None:
            field_, reason = bad
            await self.dead_letter(InputError(f"event {event.event_id!r}: {reason}", source=event.source,
                                              field=field_, raw=_raw(event)))
            self._gap_unknown(event.source)
            return
        self._clock.accept(event)
        src = event.source
        top = self._read_max.get(src)
        if top is None:
            self._in_order[src] = True
            # Seqs below a source's first are nobody's: the gap before it is known too.
            for last in self._sent_last:
                last[src] = event.seq - 1
        elif event.seq <= top:
            self._in_order[src] = False
        if top is None or event.seq > top:
            self._read_max[src] = event.seq
        st = self.stats
        st.events += 1
        st.by_action[event.action] += 1
        if event.action != HEARTBEAT:
            if st.first_ts is None or event.ts < st.first_ts:
                st.first_ts = event.ts
            if st.last_ts is None or event.ts > st.last_ts:
                st.last_ts = event.ts
            key = (event.org, event.server)
            if event.ts > self._servers.get(key, -1):
                self._servers[key] = event.ts
        if event.action in BROADCAST:
            for p in range(self.partitions):
                await self._add(p, event)
        else:
            await self._add(partition_for(event.org, event.feature, self.partitions), event)
        now = time.monotonic()
        if now - self._last_hb >= self.settings.heartbeat_s:
            await self.heartbeats()
        if len(self._pending) > 256:
            await self._drain(128)

    async def _add(self, p: int, event: Event) -> None:
        buf = self._buffers[p]
        if not buf:
            self._first_at[p] = time.monotonic()
        buf.append(event)
        if len(buf) >= self.settings.batch_events:
            await self._flush_partition(p)

    async def tick(self) -> None:
        """Flush lingering buffers; call this when input is idle."""
        now = time.monotonic()
        linger = self.settings.linger_ms / 1000
        for p in range(self.partitions):
            first = self._first_at[p]
            if first is not None and now - first >= linger:
                await self._flush_partition(p)
        if now - self._last_hb >= self.settings.heartbeat_s:
            await self.heartbeats()

    async def heartbeats(self, ts_override: int | None = None) -> None:
        """A HEARTBEAT per known server to every partition, stamped with the newest event time read
        from that server, or with ``ts_override`` (closing heartbeats; a live follower at the end of
        its file stamps the wall clock)."""
        self._last_hb = time.monotonic()
        for (org, server), newest in sorted(self._servers.items()):
            ts = ts_override if ts_override is not None else newest
            self._hb_seq += 1
            hb = heartbeat(org, server, ts, f"{self.source}:{server}", self._hb_seq, self._hb_vendor)
            self.stats.heartbeats += 1
            for p in range(self.partitions):
                await self._add(p, hb)

    async def dead_letter(self, err: InputError, stage: str = "produce") -> None:
        """Route an unusable input record to the dead-letter topic, counted."""
        self.stats.dead_letters += 1
        if len(self.stats.errors) < 20:
            self.stats.errors.append(limits.storable(err.describe()) or "")
        assert self._producer is not None
        record = {"ts": int(time.time() * US), "stage": stage, "source": limits.storable(err.source),
                  "line": err.line, "field": limits.storable(err.field), "reason": limits.storable(err.reason),
                  "raw": limits.storable(err.raw[:4096])}
        fut = await self._producer.send(self.dead_topic, self.serde.encode_dead(record))
        self._pending.append(fut)

    def _gap_unknown(self, source: str) -> None:
        """A seq of ``source`` was read but goes nowhere: no partition may count it as another's."""
        for last in self._sent_last:
            if source in last:
                last[source] = None

    def _prev(self, p: int, buf: list[Event]) -> dict[str, int]:
        """The batch's ``prev`` map, and what partition ``p`` was sent of each source after it."""
        last = self._sent_last[p]
        prev: dict[str, int] = {}
        for ev in buf:
            src = ev.source
            if src not in prev:
                known = last.get(src)
                if known is not None and self._in_order.get(src):
                    prev[src] = known
            last[src] = ev.seq
        return prev

    async def _flush_partition(self, p: int) -> None:
        buf = self._buffers[p]
        if not buf:
            return
        self._buffers[p] = []
        self._first_at[p] = None
        assert self._producer is not None
        prev = self._prev(p, buf)
        try:
            data = self._encode(buf, prev)
        except (ValueError, TypeError, OverflowError):
            # One record the encoder cannot take must not cost the batch: find it, dead-letter it.
            good = []
            for ev in buf:
                try:
                    self._encode([ev])
                except (ValueError, TypeError, OverflowError) as exc:
                    await self.dead_letter(InputError(f"event {ev.event_id!r} cannot be encoded: {exc}",
                                                      source=ev.source, raw=_raw(ev)))
                else:
                    good.append(ev)
            if not good:
                return
            data = self._encode(good)  # no prev: the refused seqs go nowhere
            for src in {ev.source for ev in buf}:
                self._gap_unknown(src)
        fut = await self._producer.send(self.topic, data, partition=p)
        self._pending.append(fut)
        self.stats.messages += 1

    async def _drain(self, keep: int = 0) -> None:
        """Wait for delivery reports until at most ``keep`` are outstanding."""
        while len(self._pending) > keep:
            fut = self._pending.pop(0)
            try:
                await fut
            except Exception as exc:
                raise BrokerError(f"Kafka did not accept a message after retries: {exc}") from exc

    async def flush(self) -> None:
        for p in range(self.partitions):
            await self._flush_partition(p)
        await self._drain()

    def newest_ts(self) -> int | None:
        """The newest event time sent so far (any server)."""
        return self.stats.last_ts

    def closing_mark(self) -> int | None:
        """Heartbeat time that makes every minute up to the last event's minute final."""
        if self.stats.last_ts is None:
            return None
        return floor_minute(self.stats.last_ts) + MINUTE_US + self.settings.lateness_us

    async def close(self, final: bool = True) -> None:
        """Flush everything; with ``final``, first send the closing heartbeats (end of input)."""
        try:
            if final:
                mark = self.closing_mark()
                if mark is not None:
                    await self.heartbeats(ts_override=mark)
            await self.flush()
        finally:
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None


def _raw(ev: Event) -> str:
    """An event as a dead letter's ``raw`` text (whatever it holds)."""
    try:
        return event_to_line(ev)[:4096]
    except (ValueError, TypeError, OverflowError, UnicodeError):
        return repr(ev)[:4096]
