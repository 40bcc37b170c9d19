"""The partition lifecycle of a stream worker, apart from Faust and Kafka.

A worker owns some partitions of the ``events`` and ``sessions`` topics. For each it keeps one
:class:`~lictel.engine.Engine`, the offset of the last message applied to it, and the messages
applied since the last checkpoint. :class:`PartitionWorker` is the whole of that logic; the Faust
app (``streams/app.py``) and the in-process test harness (``tests/unit/test_partitions.py``) each
give it a :class:`WorkerIO`.

The order of a checkpoint, on the normal path and on revocation alike:

1. the rows, late events and dead letters of the messages applied so far are flushed to Kafka;
2. the engine state, with the offset of the last message it holds, is saved to the state table
   (a changelog-backed Faust table), and that write is flushed too;
3. only then are the input offsets committed.

So a committed offset is never past the saved state. After a crash the worker reloads the state,
skips the redelivered messages at or below its offset, and has nothing to skip over. Should the
committed offset still be ahead of the state (state lost, or written by an older version), the
worker reads the missing offsets from Kafka itself. If it cannot, it retries and then stops with
an error naming the partition and offsets; it never moves past input it has not applied.

Checkpoints come with a message once ``snapshot_s`` has passed since the last, and on revocation
(without the commit: committing from inside a rebalance can wait on the rebalance itself; the next
owner starts at the last commit and skips what the checkpoint holds). A partition whose last
messages have waited ``snapshot_s`` is saved by :meth:`PartitionWorker.save_idle` on the runtime's
timer, also without the commit (the next checkpoint with a message commits).

State is kept per entity (each server, pool, estate and applied-seq set of the engine), so a
checkpoint writes what changed since the last one, never the whole partition (``state.py`` has
the format: a manifest per partition, entities in chunks of at most ``STATE_CHUNK`` bytes under
names that carry the checkpoint's generation, and the manifest written last, so a checkpoint cut
short by a crash leaves the previous one whole). Pools that hold nothing and have been quiet are
evicted from the engine and their entities deleted.

Lifecycle: a partition's state is loaded from the table with its first message after an
assignment, once the worker's runtime has read that table partition back (``WorkerIO.recover``:
the Faust app reads the state's changelog itself). On revocation it is checkpointed and
dropped, so a partition that comes back later is loaded from the newest checkpoint, wherever
that was written, and never from a stale copy in memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from lictel import limits
from lictel.config import Settings
from lictel.engine import Engine
from lictel.errors import LictelError, SchemaError
from lictel.partitioning import partition_name
from lictel.serde import Serde, events_of
from lictel.timeutil import DAY_US, US
from streams import state
from streams.state import Manifest

log = logging.getLogger("lictel.streams")

Key = tuple[str, int]  # (input stream, partition)


class CatchUpError(LictelError):
    """Input the worker must apply could not be read: the worker stops rather than skip it."""


class WorkerIO(Protocol):
    """What a :class:`PartitionWorker` needs from its runtime."""

    async def recover(self, partition: int) -> None:
        """Make what the state table's partition ``partition`` holds (whoever saved it) readable by
        :meth:`load`: read before the first message of an assignment is applied."""

    def load(self, name: str) -> bytes | None:
        """The value saved under ``name`` in the state table, if any."""

    def save(self, name: str, partition: int, value: bytes | None) -> None:
        """Save ``value`` under ``name`` in the state table (``None`` deletes it); durable, in the
        order of the calls, once :meth:`flush` returns."""

    async def send(self, topic: str, value: bytes, partition: int | None) -> None:
        """Produce ``value`` to ``topic`` (usage, late, deadletter); durable once :meth:`flush` returns."""

    async def flush(self) -> None:
        """Wait until everything sent or saved so far is acknowledged by Kafka."""

    async def commit(self, tokens: list[Any]) -> None:
        """The messages behind ``tokens`` (and every message applied before them) are in saved
        state: commit their offsets."""

    def read(self, stream: str, partition: int, start: int, upto: int) -> AsyncIterator[tuple[int, bytes]]:
        """(offset, value) of the input messages ``start`` .. ``upto - 1``, in order. May end early
        (nothing more to read yet); the caller asks again."""


@dataclass(slots=True)
class Partition:
    """One input partition's engine, the last offset applied to it, what was last reported final,
    the messages applied since the last checkpoint (``unacked``) and its saved state's manifest."""

    engine: Engine
    offset: int
    final: int | None
    saved_at: float
    manifest: Manifest
    unacked: list[Any] = field(default_factory=list)

    @property
    def unsaved(self) -> bool:
        """Messages were applied since the state was last saved (committed or not)."""
        return self.offset > self.manifest.offset


COUNTERS = ("messages", "events", "rows", "late", "dead", "skipped", "caught_up", "snapshots", "duplicates",
            "estate_late_rows", "revoked", "loaded", "restored", "refused_heartbeats", "state_bytes")


class PartitionWorker:
    """Applies input messages to per-partition engines and owns the checkpoint order."""

    def __init__(self, settings: Settings, io: WorkerIO, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, catch_up_tries: int = 5,
                 catch_up_wait_s: float = 1.0) -> None:
        self.settings = settings
        self.io = io
        self.serde = Serde.of(settings)
        self.parts: dict[Key, Partition] = {}
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.clock = clock
        self.monotonic = monotonic
        self.catch_up_tries = catch_up_tries
        self.catch_up_wait_s = catch_up_wait_s
        self._rules = settings.dup_rules
        self._max_ahead = int(settings.max_ahead_s * US)
        self._max_gap = int(settings.max_source_gap_days * DAY_US)
        # One message, one checkpoint or one revocation at a time: a checkpoint never sees an engine
        # halfway through a message.
        self.lock = asyncio.Lock()
        self._recovered: set[int] = set()  # state-table partitions read back since their assignment

    def health(self) -> dict[str, Any]:
        """For ``/healthz``: the partitions held in memory and the counters."""
        return {"partitions": sorted(partition_name(*k) for k in self.parts), "counters": dict(self.counters)}

    # ------------------------------------------------------------------ lifecycle

    def _load(self, key: Key) -> Partition:
        stream, p = key
        s = self.settings
        name = partition_name(stream, p)
        self.counters["loaded"] += 1
        opts: dict[str, Any] = {"lateness_us": s.lateness_us, "idle_timeout_us": s.idle_timeout_us,
                                "sessions": s.session_rule, "rules": self._rules, "max_gap_us": self._max_gap,
                                "evict_after_us": int(s.state_evict_s * US)}
        loaded = state.load(self.io, name, opts)
        if loaded is None:
            return Partition(Engine(**opts), -1, None, self.monotonic(), state.Manifest())
        self.counters["restored"] += 1
        eng, manifest = loaded
        return Partition(eng, manifest.offset, manifest.final, self.monotonic(), manifest)

    async def assigned(self, keys: Iterable[Key]) -> None:
        """Partitions taken: any engine still in memory for them is stale (they were elsewhere);
        each is loaded from its newest checkpoint with its next message."""
        async with self.lock:
            for key in keys:
                self.parts.pop(key, None)
                self._recovered.discard(key[1])  # another worker may have saved it since

    async def revoke(self, keys: Iterable[Key]) -> None:
        """Partitions given up: checkpoint each, then drop it."""
        async with self.lock:
            gone = [k for k in keys if k in self.parts]
            if gone:
                # No commit from inside a rebalance (the commit can wait on it): the next owner
                # starts at the last commit and skips what this checkpoint holds.
                await self._checkpoint(gone, commit=False)
                for key in gone:
                    del self.parts[key]
                self.counters["revoked"] += len(gone)

    async def checkpoint_due(self, force: bool = False) -> None:
        """Checkpoint, with the commit, once the oldest unsaved message is ``snapshot_s`` old (at
        once with ``force``). The Faust app checkpoints with messages and on revocation, and saves
        idle partitions with :meth:`save_idle`, which does not commit."""
        async with self.lock:
            if self._due() or (force and self._unsaved()):
                await self._checkpoint([])  # takes every partition with unsaved messages

    async def save_idle(self) -> None:
        """Save the state of partitions whose newest messages have waited ``snapshot_s`` without a
        checkpoint (a job's last burst, an input gone quiet), for a caller on a timer. Without a
        commit: the offsets are committed by the next checkpoint that comes with a message, so a
        timer never commits from beside the consumer; a restart finds the state and skips what it holds."""
        async with self.lock:
            now = self.monotonic()
            keys = [k for k, st in self.parts.items() if st.unsaved and now - st.saved_at >= self.settings.snapshot_s]
            if keys:
                await self._save(sorted(keys))
                for key in keys:
                    self.parts[key].saved_at = now

    async def _save(self, keys: list[Key]) -> None:
        """Flush the rows out, save the state of ``keys``, and flush that: once this returns, the
        saved state never holds a message whose rows are not in Kafka."""
        await self.io.flush()  # rows out before the state that no longer holds them
        for key in keys:
            st = self.parts[key]
            stream, p = key
            written = state.save(self.io, partition_name(stream, p), p, st.engine, st.manifest, st.offset, st.final)
            self.counters["snapshots"] += 1
            self.counters["state_bytes"] += written
        await self.io.flush()  # the state is in its changelog

    def _unsaved(self) -> list[Key]:
        return [k for k, st in self.parts.items() if st.unacked]

    def _due(self) -> bool:
        now = self.monotonic()
        return any(st.unacked and now - st.saved_at >= self.settings.snapshot_s for st in self.parts.values())

    async def _checkpoint(self, keys: list[Key], commit: bool = True) -> None:
        """Checkpoint ``keys``. Offsets are committed for the whole consumer at once, so every
        partition with unsaved messages is saved with them."""
        keys = sorted({*keys, *self._unsaved()})
        await self._save(keys)  # 1. and 2.
        now = self.monotonic()
        tokens: list[Any] = []
        for key in keys:
            st = self.parts[key]
            tokens += st.unacked
            st.unacked = []
            st.saved_at = now
        if tokens and commit:
            await self.io.commit(tokens)  # 3. now the input offsets may be committed

    # ------------------------------------------------------------------ messages

    async def message(self, stream: str, p: int, offset: int, value: bytes, token: Any) -> None:
        """Apply one input message (``token`` is committed once its effect is in saved state)."""
        async with self.lock:
            key = (stream, p)
            st = self.parts.get(key)
            if st is None:
                if p not in self._recovered:  # events and sessions of a partition share its table partition
                    await self.io.recover(p)
                    self._recovered.add(p)
                st = self.parts[key] = self._load(key)
            if offset <= st.offset:
                self.counters["skipped"] += 1  # redelivered: already in the state we recovered
                st.unacked.append(token)  # committed with the next checkpoint
                return
            if offset > st.offset + 1:
                await self._catch_up(stream, st, p, offset)
            await self._apply(stream, st, p, offset, value)
            st.unacked.append(token)
            if self._due():
                await self._checkpoint([key])

    async def _catch_up(self, stream: str, st: Partition, p: int, upto: int) -> None:
        """Apply messages ``st.offset + 1 .. upto - 1``, which were committed past our saved state.
        Retries a read that returns nothing; fails loudly rather than skip."""
        tries = 0
        while st.offset + 1 < upto:
            start = st.offset + 1
            got = False
            async for offset, value in self.io.read(stream, p, start, upto):
                if offset != st.offset + 1:
                    raise CatchUpError(
                        f"{self.settings.topic(stream)}[{p}]: offsets {st.offset + 1}..{offset - 1} are no longer "
                        f"in Kafka (retention or compaction?) but were never applied to saved state; the worker "
                        f"stops rather than skip them. Recompute the affected minutes from raw events with "
                        f"`lictel reconcile --from ... --to ...`, then reset the group's offsets.")
                await self._apply(stream, st, p, offset, value)
                self.counters["caught_up"] += 1
                got = True
                if st.offset + 1 >= upto:
                    break
            if got:
                tries = 0
                continue
            tries += 1
            if tries >= self.catch_up_tries:
                raise CatchUpError(
                    f"{self.settings.topic(stream)}[{p}]: offsets {start}..{upto - 1} were committed past the "
                    f"saved state but could not be read after {tries} tries; the worker stops rather than skip "
                    f"them. Check that the broker is reachable, then start the worker again.")
            log.warning("%s[%d]: offsets %d..%d not readable yet (try %d of %d); retrying", stream, p, start,
                        upto - 1, tries, self.catch_up_tries)
            await asyncio.sleep(self.catch_up_wait_s * tries)

    async def _dead(self, now: int, source: str | None, line: int | None, field_: str | None, reason: str | None,
                    raw: str | None) -> None:
        """One dead letter of the stream stage, counted."""
        self.counters["dead"] += 1
        record = {"ts": now, "stage": "stream", "source": source, "line": line, "field": field_, "reason": reason,
                  "raw": raw}
        await self.io.send(self.settings.topic("deadletter"), self.serde.encode_dead(record), None)

    async def _refuse(self, stream: str, p: int, offset: int, refused: list[tuple[Any, str, str]], now: int) -> None:
        """Dead-letter events that lictel cannot hold or believe, each with its field and reason."""
        for ev, field_, reason in refused:
            await self._dead(now, limits.storable(ev.source), None, field_,
                             limits.storable(f"event {ev.event_id!r}: {reason}"), limits.storable(repr(ev)[:4096]))
        log.warning("%s[%d]@%d: %d event(s) dead-lettered, e.g. %s", stream, p, offset, len(refused), refused[0][2])

    async def _apply(self, stream: str, st: Partition, p: int, offset: int, value: bytes) -> None:
        c = self.counters
        s = self.settings
        c["messages"] += 1
        now = int(self.clock() * US)
        try:
            if stream == "events":
                cols, prev = self.serde.decode_event_columns(value)
                batch, clean = events_of(cols), limits.columns_clean(cols, now, self._max_ahead)
            else:
                (batch, prev), clean = self.serde.decode_sessions_prev(value), False
        except SchemaError as exc:
            await self._dead(now, f"{s.topic(stream)}[{p}]", offset, None, str(exc), value[:4096].hex())
            log.warning("dead-lettered %s[%d]@%d: %s", stream, p, offset, exc)
            st.offset = offset
            return
        # Producers refuse what lictel cannot hold; events written by others are checked here (each
        # distinct value of a batch once; event by event only when something may be wrong).
        refused = [] if clean else [(ev, bad) for ev in batch
                                    if (bad := limits.problem(ev, now, self._max_ahead)) is not None]
        if refused:
            bad_ids = {ev.event_id for ev, _ in refused}
            batch = [ev for ev in batch if ev.event_id not in bad_ids]
            await self._refuse(stream, p, offset, [(ev, f, why) for ev, (f, why) in refused], now)
        c["events"] += len(batch)
        out = st.engine.process(batch, now, prev)
        if out.refused:  # far from its server's clock (the engine's own guard)
            c["events"] -= len(out.refused)
            await self._refuse(stream, p, offset, [(ev, "ts", why) for ev, why in out.refused], now)
        c["refused_heartbeats"] += out.refused_heartbeats
        c["duplicates"] += out.duplicates
        c["estate_late_rows"] += out.estate_late_rows
        new_final = st.engine.final_upto(now)
        if out.late:  # before the rows: once a final mark is stored, its late events are too
            c["late"] += len(out.late)
            await self.io.send(s.topic("late"), self.serde.encode_events(out.late), p)
        if out.rows or new_final != st.final:
            await self.io.send(s.topic("usage"), self.serde.encode_usage(p, new_final, out.rows, stream), p)
            c["rows"] += len(out.rows)
            st.final = new_final
        st.offset = offset
