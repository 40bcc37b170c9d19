"""The stream worker's partition lifecycle, driven in-process in milliseconds: assignment,
revocation, redelivery, catch-up and the checkpoint order, without a broker.

``Harness`` is a testing source and sink for ``streams.partitions.PartitionWorker``. It holds an
input log per partition and keeps what Kafka would keep: output messages, state saves and
commits count only once flushed. A crash throws the rest away, and the group's committed offset
is the end of the contiguous committed run. The real-process chaos tests in
tests/integration/test_guarantees.py cover the same guarantees through Faust and Tansu.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from lictel.config import Settings
from lictel.engine import MinuteRow, compute_rows, sort_rows
from lictel.events import Event, heartbeat
from lictel.serde import Serde
from lictel.timeutil import MINUTE_US, US, floor_minute
from producers.simulate import SimSpec, simulate
from streams.partitions import CatchUpError, PartitionWorker

SETTINGS = Settings(snapshot_s=1000.0)  # checkpoints only when a test asks for one
SERDE = Serde.of(SETTINGS)
NOW = 1_900_000_000.0  # wall clock (s) for the engines: after every simulated event


@dataclass
class Harness:
    """Input log, durable output, state table and committed offsets of one simulated cluster."""

    log: dict[int, list[bytes]] = field(default_factory=dict)  # partition -> messages
    table: dict[str, bytes] = field(default_factory=dict)  # durable state
    output: list[tuple[str, int | None, bytes]] = field(default_factory=list)  # durable messages
    committed: dict[int, int] = field(default_factory=dict)  # partition -> next offset to read
    acked: dict[int, set[int]] = field(default_factory=dict)
    ops: list[str] = field(default_factory=list)  # flush / save / commit, in order
    unreadable: int = 0  # catch-up reads that return nothing before the log answers again
    first_readable: int = 0  # offsets below this are gone (retention)
    recovered: list[int] = field(default_factory=list)  # state partitions read back, in order

    def io(self) -> MemoryIO:
        return MemoryIO(self)

    def commit(self, p: int) -> None:
        """The group's committed offset: the end of the contiguous committed messages."""
        nxt = self.committed.get(p, 0)
        while nxt in self.acked.get(p, set()):
            nxt += 1
        self.committed[p] = nxt

    def rows(self) -> list[MinuteRow]:
        """Stored minute rows: the last row written for each key wins, as in ReplacingMergeTree."""
        latest: dict[tuple[Any, ...], MinuteRow] = {}
        for topic, _, value in self.output:
            if topic == SETTINGS.topic("usage"):
                for r in SERDE.decode_usage(value)[2]:
                    latest[(r.source, r.level, r.org, r.server, r.feature, r.minute)] = r
        return sort_rows(latest.values())


class MemoryIO:
    """One worker process's view of the harness; what it has not flushed dies with it."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.pending_out: list[tuple[str, int | None, bytes]] = []
        self.pending_state: dict[str, bytes | None] = {}  # None: deleted
        self.local: dict[str, bytes | None] = {}  # the worker's table copy (saved, maybe not yet flushed)

    async def recover(self, partition: int) -> None:
        self.h.recovered.append(partition)  # the harness's table is the durable one: nothing to read

    def load(self, name: str) -> bytes | None:
        return self.local[name] if name in self.local else self.h.table.get(name)

    def save(self, name: str, partition: int, value: bytes | None) -> None:
        self.h.ops.append("save")
        self.pending_state[name] = value
        self.local[name] = value

    async def send(self, topic: str, value: bytes, partition: int | None) -> None:
        self.pending_out.append((topic, partition, value))

    async def flush(self) -> None:
        self.h.ops.append("flush")
        self.h.output.extend(self.pending_out)
        for name, value in self.pending_state.items():
            if value is None:
                self.h.table.pop(name, None)
            else:
                self.h.table[name] = value
        self.pending_out, self.pending_state = [], {}

    async def commit(self, tokens: list[Any]) -> None:
        self.h.ops.append("commit")
        for p, offset in tokens:
            self.h.acked.setdefault(p, set()).add(offset)

    async def read(self, stream: str, partition: int, start: int, upto: int) -> AsyncIterator[tuple[int, bytes]]:
        if self.h.unreadable > 0:
            self.h.unreadable -= 1
            return
        for offset in range(max(start, self.h.first_readable), upto):
            yield offset, self.h.log[partition][offset]


def _messages(events: list[Event], per: int = 10) -> list[bytes]:
    """Events in messages of ``per``, then closing heartbeats that make every minute final."""
    msgs = [SERDE.encode_events(events[i:i + per]) for i in range(0, len(events), per)]
    mark = floor_minute(max(e.ts for e in events)) + MINUTE_US + SETTINGS.lateness_us
    servers = sorted({(e.org, e.server) for e in events})
    msgs.append(SERDE.encode_events([heartbeat(o, s, mark, "t", 10**9 + i) for i, (o, s) in enumerate(servers)]))
    return msgs


def _estate(seed: int = 3) -> tuple[list[Event], list[MinuteRow]]:
    events = list(simulate(SimSpec(users=60, servers=2, days=1, seed=seed)))
    rnd = random.Random(seed)
    shuffled = sorted(events, key=lambda e: e.ts + rnd.randrange(40 * US))
    return shuffled, compute_rows(events)


def _worker(h: Harness, **kw: Any) -> PartitionWorker:
    return PartitionWorker(SETTINGS, h.io(), clock=lambda: NOW, **kw)


async def _feed(w: PartitionWorker, h: Harness, p: int, start: int, stop: int) -> None:
    for offset in range(start, stop):
        await w.message("events", p, offset, h.log[p][offset], (p, offset))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_checkpoint_flushes_rows_then_saves_state_then_commits() -> None:
    events, _ = _estate()
    h = Harness(log={0: _messages(events)})
    w = _worker(h)

    async def go() -> None:
        await _feed(w, h, 0, 0, 10)
        assert not h.acked and "commit" not in h.ops  # nothing committed before a checkpoint
        await w.checkpoint_due(force=True)

    run(go())
    runs = [op for i, op in enumerate(h.ops) if i == 0 or h.ops[i - 1] != op]  # one save per entity
    assert runs == ["flush", "save", "flush", "commit"]
    assert h.acked[0] == set(range(10))
    assert h.table["0"]  # the state is durable before the commit
    h.commit(0)
    assert h.committed[0] == 10


@pytest.mark.parametrize("seed", range(8))
def test_crashes_anywhere_give_the_batch_recompute(seed: int) -> None:
    """A worker dies at random points (losing everything unflushed) and a new one takes over from
    the committed offset; checkpoints come at random. The stored rows equal the batch recompute."""
    events, expected = _estate(seed)
    msgs = _messages(events, per=25)
    h = Harness(log={0: msgs})
    rnd = random.Random(seed)

    async def go() -> None:
        w = _worker(h)
        offset = 0
        while offset < len(msgs):
            await w.message("events", 0, offset, msgs[offset], (0, offset))
            offset += 1
            roll = rnd.random()
            if roll < 0.15:
                await w.checkpoint_due(force=True)
                h.commit(0)
            elif roll < 0.22:  # crash: a new process, resuming from the committed offset
                w = _worker(h)
                offset = h.committed.get(0, 0)
        await w.checkpoint_due(force=True)

    run(go())
    assert h.rows() == expected


def test_a_partition_that_moves_away_and_back_is_loaded_from_its_newest_checkpoint() -> None:
    events, expected = _estate()
    msgs = _messages(events, per=20)
    h = Harness(log={0: msgs})
    a, b = _worker(h), _worker(h)
    third = len(msgs) // 3

    async def go() -> None:
        await _feed(a, h, 0, 0, third)
        await a.revoke([("events", 0)])  # checkpointed and dropped; no commit inside a rebalance
        assert ("events", 0) not in a.parts
        h.commit(0)
        assert h.committed.get(0, 0) == 0
        await b.assigned([("events", 0)])
        await _feed(b, h, 0, h.committed.get(0, 0), 2 * third)  # redelivered from the last commit
        assert b.counters["skipped"] == third
        await b.checkpoint_due(force=True)
        h.commit(0)
        await b.revoke([("events", 0)])
        await a.assigned([("events", 0)])  # back: A must not reuse what it held before
        await _feed(a, h, 0, h.committed[0], len(msgs))
        await a.checkpoint_due(force=True)

    run(go())
    assert h.rows() == expected
    assert a.counters["loaded"] == 2 and a.counters["revoked"] == 1
    # Each assignment reads the state partition back once before its first message, and each load
    # after the first found a checkpoint there.
    assert h.recovered == [0, 0, 0]
    assert b.counters["restored"] == 1 and a.counters["restored"] == 1


def test_redelivered_messages_are_skipped_and_committed() -> None:
    events, expected = _estate()
    msgs = _messages(events)
    h = Harness(log={0: msgs})
    w = _worker(h)

    async def go() -> None:
        await _feed(w, h, 0, 0, 8)
        await w.checkpoint_due(force=True)
        again = _worker(h)  # restarted; the group redelivers from an older commit
        await _feed(again, h, 0, 3, len(msgs))
        await again.checkpoint_due(force=True)
        assert again.counters["skipped"] == 5

    run(go())
    assert h.rows() == expected
    assert h.acked[0] == set(range(len(msgs)))


def test_catch_up_reads_what_was_committed_past_the_state() -> None:
    """State lost (or older than the commit): the worker reads the missing offsets itself."""
    events, expected = _estate()
    msgs = _messages(events)
    h = Harness(log={0: msgs}, unreadable=2)  # the first two reads come back empty
    w = _worker(h, catch_up_wait_s=0.001)

    async def go() -> None:
        await _feed(w, h, 0, 6, len(msgs))  # the group starts at offset 6; the state knows nothing
        await w.checkpoint_due(force=True)

    run(go())
    assert w.counters["caught_up"] == 6
    assert h.rows() == expected


def test_catch_up_that_cannot_read_stops_the_worker_and_skips_nothing() -> None:
    events, _ = _estate()
    msgs = _messages(events)
    h = Harness(log={0: msgs}, unreadable=10)
    w = _worker(h, catch_up_tries=3, catch_up_wait_s=0.001)
    with pytest.raises(CatchUpError, match=r"lictel\.events\[0\]: offsets 0\.\.5 .* could not be read after 3 tries"):
        run(w.message("events", 0, 6, msgs[6], (0, 6)))
    assert not h.acked and w.parts[("events", 0)].offset == -1


def test_catch_up_over_input_gone_from_kafka_stops_the_worker() -> None:
    events, _ = _estate()
    msgs = _messages(events)
    h = Harness(log={0: msgs}, first_readable=3)  # offsets 0..2 deleted by retention
    w = _worker(h)
    with pytest.raises(CatchUpError, match=r"offsets 0\.\.2 are no longer in Kafka"):
        run(w.message("events", 0, 6, msgs[6], (0, 6)))
    assert not h.acked


def test_checkpoint_due_waits_for_snapshot_s() -> None:
    events, _ = _estate()
    h = Harness(log={0: _messages(events)})
    clock = [0.0]
    w = PartitionWorker(Settings(snapshot_s=5.0), h.io(), clock=lambda: NOW, monotonic=lambda: clock[0])

    async def go() -> None:
        await _feed(w, h, 0, 0, 3)
        await w.checkpoint_due()
        assert not h.acked  # not due yet
        clock[0] = 6.0
        await w.checkpoint_due()

    run(go())
    assert h.acked[0] == {0, 1, 2}


def test_idle_partitions_are_saved_without_a_commit_and_a_successor_skips_what_they_hold() -> None:
    events, expected = _estate()
    msgs = _messages(events)
    h = Harness(log={0: msgs})
    clock = [0.0]
    w = PartitionWorker(Settings(snapshot_s=5.0), h.io(), clock=lambda: NOW, monotonic=lambda: clock[0])
    n = len(msgs) // 2

    async def go() -> None:
        await _feed(w, h, 0, 0, n)
        await w.save_idle()
        assert not h.table  # not idle long enough yet
        clock[0] = 6.0
        await w.save_idle()
        assert h.table and not h.acked  # saved, nothing committed
        ops = len(h.ops)
        await w.save_idle()
        assert len(h.ops) == ops  # nothing new to save
        # The process dies; its successor is redelivered everything from the start.
        b = _worker(h)
        await _feed(b, h, 0, 0, len(msgs))
        assert b.counters["restored"] == 1 and b.counters["skipped"] == n and b.counters["caught_up"] == 0
        await b.checkpoint_due(force=True)

    run(go())
    assert h.rows() == expected


def test_an_undecodable_message_is_dead_lettered_and_checkpointed_like_any_other() -> None:
    events, _ = _estate()
    msgs = _messages(events)
    msgs.insert(2, b"\x00garbage")
    h = Harness(log={0: msgs})
    w = _worker(h)

    async def go() -> None:
        await _feed(w, h, 0, 0, 5)
        await w.checkpoint_due(force=True)

    run(go())
    dead = [v for t, _, v in h.output if t == SETTINGS.topic("deadletter")]
    assert len(dead) == 1 and SERDE.decode_dead(dead[0])["line"] == 2
    assert h.acked[0] == set(range(5))


def test_an_event_years_from_its_server_clock_is_a_dead_letter_with_its_reason() -> None:
    events, want = _estate()
    damaged = events[30]._replace(event_id="damaged", seq=10**8, ts=events[30].ts - 3 * 365 * 86400 * US)
    msgs = _messages(events)
    msgs.insert(5, SERDE.encode_events([damaged]))
    h = Harness(log={0: msgs})
    w = _worker(h)

    async def go() -> None:
        await _feed(w, h, 0, 0, len(msgs))
        await w.checkpoint_due(force=True)

    run(go())
    dead = [SERDE.decode_dead(v) for t, _, v in h.output if t == SETTINGS.topic("deadletter")]
    assert len(dead) == 1 and dead[0]["field"] == "ts" and "'damaged'" in dead[0]["reason"]
    assert "days from the newest time of server" in dead[0]["reason"]
    heartbeats = len({e.server for e in events})  # the closing ones
    assert w.counters["dead"] == 1 and w.counters["events"] == len(events) + heartbeats
    assert h.rows() == want
