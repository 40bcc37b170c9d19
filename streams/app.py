"""The Faust app: event batches in, final minute rows out. A thin shell around ``lictel.engine``.

Invariants
----------
- Two input topics: ``events`` (license servers) and ``sessions`` (broker session exports), each
  with its own agent. One :class:`~lictel.engine.Engine` per input partition, checkpointed every
  ``snapshot_s`` into the ``engine-state`` table (changelog-backed, same partition) together with
  the offset of the last message it holds. A worker that restarts, or takes over a partition,
  reloads the snapshot and then (a) skips messages at or below the saved offset, so a redelivery
  applies nothing twice, and (b) if Faust had committed past the snapshot, reads the missing
  offsets from the events topic itself before going on, so nothing is skipped either.
- The producer is flushed *before* a snapshot is saved: rows leave for Kafka before the state
  that no longer holds them is checkpointed. A crash re-emits rows (the sink upserts), it never
  loses them.
- Every output batch names its input stream and partition and how far that partition is final, so the sink and
  ``lictel run`` know when a minute is complete.
- Undecodable messages go to the dead-letter topic with their partition and offset; the worker
  goes on.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition

from lictel import limits, metrics
from lictel.config import Settings, group_options
from lictel.engine import Engine
from lictel.errors import SchemaError
from lictel.partitioning import partition_name
from lictel.serde import Serde
from lictel.timeutil import US

log = logging.getLogger("lictel.streams")


class _PartitionState:
    """One partition's engine, the last offset applied to it, and what was last reported final."""

    __slots__ = ("engine", "final", "offset", "saved_at")

    def __init__(self, engine: Engine, offset: int, final: int | None) -> None:
        self.engine = engine
        self.offset = offset
        self.final = final
        self.saved_at = time.monotonic()


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
        topic_replication_factor=1,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=16 << 20,
        producer_acks=-1,
        broker_commit_interval=1.0,
        # Group timing for where we run (Settings.with_group_defaults, docs/operations.md).
        broker_session_timeout=timing["session_timeout_ms"] / 1000,
        broker_heartbeat_interval=timing["heartbeat_interval_ms"] / 1000,
        # With static membership a restarted worker takes its old place in the group at once.
        consumer_group_instance_id=instance_id,
        table_standby_replicas=0,
        stream_buffer_maxsize=64,
        consumer_max_fetch_size=16 << 20,
    )
    serde = Serde.of(settings)
    events = app.topic(settings.topic("events"), value_type=bytes, value_serializer="raw",
                       partitions=settings.partitions)
    sessions = app.topic(settings.topic("sessions"), value_type=bytes, value_serializer="raw",
                         partitions=settings.partitions)
    usage = app.topic(settings.topic("usage"), value_type=bytes, value_serializer="raw",
                      partitions=settings.partitions)
    late = app.topic(settings.topic("late"), value_type=bytes, value_serializer="raw",
                     partitions=settings.partitions)
    dead = app.topic(settings.topic("deadletter"), value_type=bytes, value_serializer="raw",
                     partitions=1)
    state = app.Table("engine-state", default=None, partitions=settings.partitions)
    # Snapshots are our own JSON bytes: store them as they are (set before the changelog exists).
    state.key_serializer = "raw"  # type: ignore[attr-defined]
    state.value_serializer = "raw"  # type: ignore[attr-defined]
    engines: dict[tuple[str, int], _PartitionState] = {}
    decoders = {"events": serde.decode_events, "sessions": serde.decode_sessions}
    counters: dict[str, int] = {"messages": 0, "events": 0, "rows": 0, "late": 0, "dead": 0,
                                "skipped": 0, "caught_up": 0, "snapshots": 0, "duplicates": 0,
                                "estate_late_rows": 0}
    metrics.serve("stream", lambda: counters, settings.metrics_port, settings.data_dir)
    catchup: dict[str, AIOKafkaConsumer] = {}
    rules = settings.dup_rules
    max_ahead = int(settings.max_ahead_s * US)

    def load(stream: str, p: int) -> _PartitionState:
        raw = state.get(partition_name(stream, p))
        if raw is None:
            return _PartitionState(Engine(settings.lateness_us, settings.idle_timeout_us,
                                          settings.session_rule, rules), -1, None)
        snap: dict[str, Any] = json.loads(raw)
        eng = Engine.from_state(snap["engine"], settings.lateness_us, settings.idle_timeout_us,
                                settings.session_rule, rules)
        return _PartitionState(eng, int(snap["offset"]), snap.get("final"))

    async def apply(stream: str, st: _PartitionState, p: int, offset: int, value: bytes) -> None:
        counters["messages"] += 1
        now = int(time.time() * US)
        try:
            batch = decoders[stream](value)
        except SchemaError as exc:
            counters["dead"] += 1
            record = {"ts": now, "stage": "stream", "source": f"{settings.topic(stream)}[{p}]",
                      "line": offset, "field": None, "reason": str(exc), "raw": value[:4096].hex()}
            await dead.send(value=serde.encode_dead(record))
            log.warning("dead-lettered %s[%d]@%d: %s", stream, p, offset, exc)
        else:
            # Producers refuse what lictel cannot hold; events written by others are checked here.
            refused = [(ev, bad) for ev in batch if (bad := limits.problem(ev, now, max_ahead)) is not None]
            if refused:
                bad_ids = {ev.event_id for ev, _ in refused}
                batch = [ev for ev in batch if ev.event_id not in bad_ids]
                for ev, (field_, reason) in refused:
                    counters["dead"] += 1
                    record = {"ts": now, "stage": "stream", "source": limits.storable(ev.source), "line": None,
                              "field": field_, "reason": limits.storable(f"event {ev.event_id!r}: {reason}"),
                              "raw": limits.storable(repr(ev)[:4096])}
                    await dead.send(value=serde.encode_dead(record))
                log.warning("%s[%d]@%d: %d event(s) dead-lettered, e.g. %s", stream, p, offset, len(refused),
                            refused[0][1][1])
            counters["events"] += len(batch)
            out = st.engine.process(batch, now)
            counters["duplicates"] += out.duplicates
            counters["estate_late_rows"] += out.estate_late_rows
            new_final = st.engine.final_upto(now)
            if out.late:  # before the rows: once a final mark is stored, its late events are too
                counters["late"] += len(out.late)
                await late.send(value=serde.encode_events(out.late), partition=p)
            if out.rows or new_final != st.final:
                await usage.send(value=serde.encode_usage(p, new_final, out.rows, stream), partition=p)
                counters["rows"] += len(out.rows)
                st.final = new_final
        st.offset = offset

    async def catch_up(stream: str, st: _PartitionState, p: int, upto: int) -> None:
        """Apply messages st.offset+1 .. upto-1, which Faust committed past our last snapshot."""
        consumer = catchup.get("c")
        if consumer is None:
            consumer = catchup["c"] = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                                       max_partition_fetch_bytes=16 << 20)
            await consumer.start()
        tp = TopicPartition(settings.topic(stream), p)
        consumer.assign([tp])
        consumer.seek(tp, st.offset + 1)
        while st.offset + 1 < upto:
            got = await consumer.getmany(tp, timeout_ms=1000)
            msgs = [m for m in got.get(tp, []) if m.offset < upto]
            if not got:
                log.warning("%s[%d]: offsets %d..%d unreadable; continuing", stream, p, st.offset + 1, upto - 1)
                break
            for m in msgs:
                await apply(stream, st, p, m.offset, m.value)
                counters["caught_up"] += 1
            if len(msgs) < sum(len(v) for v in got.values()):
                break
        st.offset = upto - 1

    async def consume(name: str, messages: faust.StreamT[bytes]) -> None:
        async for event in messages.events():
            msg = event.message
            p, offset = msg.partition, msg.offset
            st = engines.get((name, p))
            if st is None:
                st = engines[(name, p)] = load(name, p)
            if offset <= st.offset:
                counters["skipped"] += 1  # redelivered: already in the state we recovered
                continue
            if offset > st.offset + 1:
                await catch_up(name, st, p, offset)
            await apply(name, st, p, offset, msg.value or b"")  # a tombstone is dead-lettered
            if time.monotonic() - st.saved_at >= settings.snapshot_s:
                # Rows must reach Kafka before the state that no longer holds them is saved.
                await app.producer.flush()
                state[partition_name(name, p)] = json.dumps(
                    {"offset": st.offset, "final": st.final, "engine": st.engine.to_state()},
                    separators=(",", ":")).encode()
                st.saved_at = time.monotonic()
                counters["snapshots"] += 1

    @app.agent(events)
    async def process(stream: faust.StreamT[bytes]) -> None:
        await consume("events", stream)

    @app.agent(sessions)
    async def process_sessions(stream: faust.StreamT[bytes]) -> None:
        await consume("sessions", stream)

    @app.timer(interval=30.0)
    async def report() -> None:
        log.info("stream counters: %s", counters)

    return app


def run_worker(settings: Settings, bootstrap: str, loglevel: str = "WARNING", instance_id: str | None = None) -> None:
    """Run one stream worker in this process until it is stopped (SIGTERM/SIGINT)."""
    app = make_app(settings, bootstrap, instance_id)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
