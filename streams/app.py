"""The Faust app: event batches in, final minute rows out. A thin shell around ``lictel.engine``.

Invariants
----------
- One :class:`~lictel.engine.Engine` per events-topic partition. After every message its snapshot
  and the message's offset are written to the ``engine-state`` table (changelog-backed, on the
  same partition). Faust flushes the producer before it commits offsets, so the saved state is
  never behind the committed offset. A worker that restarts, or takes over a partition, reloads
  the snapshot and skips messages at or below the saved offset: redelivery applies nothing twice.
- Rows are sent, and their delivery awaited, *before* the state that no longer holds them is saved:
  a crash between the two re-emits rows (the sink upserts), it never loses them.
- Every output batch names its partition and how far that partition is final, so the sink and
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

from lictel.config import Settings
from lictel.engine import Engine
from lictel.errors import SchemaError
from lictel.serde import Serde
from lictel.timeutil import US

log = logging.getLogger("lictel.streams")


def make_app(settings: Settings, bootstrap: str) -> faust.App:
    """Build the stream app for ``settings`` against the Kafka at ``bootstrap``."""
    (settings.data_dir / "streams").mkdir(parents=True, exist_ok=True)
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
        # Tansu completes a group join after about half the session timeout: keep it short.
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        table_standby_replicas=0,
        stream_buffer_maxsize=64,
        consumer_max_fetch_size=16 << 20,
    )
    serde = Serde(settings.schema_registry_url,
                  {t: settings.topic(t) for t in ("events", "usage", "deadletter")})
    events = app.topic(settings.topic("events"), value_type=bytes, value_serializer="raw",
                       partitions=settings.partitions)
    usage = app.topic(settings.topic("usage"), value_type=bytes, value_serializer="raw",
                      partitions=settings.partitions)
    late = app.topic(settings.topic("late"), value_type=bytes, value_serializer="raw",
                     partitions=settings.partitions)
    dead = app.topic(settings.topic("deadletter"), value_type=bytes, value_serializer="raw",
                     partitions=1)
    state = app.Table("engine-state", default=None, partitions=settings.partitions)
    # Snapshots are our own JSON bytes: store them as they are (set before the changelog exists).
    state.key_serializer = "raw"
    state.value_serializer = "raw"
    engines: dict[int, tuple[Engine, int, int | None]] = {}
    counters: dict[str, int] = {"messages": 0, "events": 0, "rows": 0, "late": 0, "dead": 0,
                                "skipped": 0}
    app.lictel_counters = counters  # type: ignore[attr-defined]

    def load(p: int) -> tuple[Engine, int, int | None]:
        raw = state.get(str(p))
        if raw is None:
            return Engine(settings.lateness_us, settings.idle_timeout_us), -1, None
        snap: dict[str, Any] = json.loads(raw)
        eng = Engine.from_state(snap["engine"], settings.lateness_us, settings.idle_timeout_us)
        return eng, int(snap["offset"]), snap.get("final")

    @app.agent(events)
    async def process(stream: faust.Stream) -> None:
        async for event in stream.events():
            msg = event.message
            p, offset = msg.partition, msg.offset
            if p not in engines:
                engines[p] = load(p)
            eng, last, final = engines[p]
            if offset <= last:
                counters["skipped"] += 1
                continue
            counters["messages"] += 1
            now = int(time.time() * US)
            try:
                batch = serde.decode_events(msg.value)
            except SchemaError as exc:
                counters["dead"] += 1
                record = {"ts": now, "stage": "stream", "source": f"{msg.topic}[{p}]", "line": offset,
                          "field": None, "reason": str(exc), "raw": msg.value[:4096].hex()}
                await (await dead.send(value=serde.encode_dead(record)))
                log.warning("dead-lettered %s[%d]@%d: %s", msg.topic, p, offset, exc)
            else:
                counters["events"] += len(batch)
                out = eng.process(batch, now)
                new_final = eng.final_upto(now)
                if out.rows or new_final != final:
                    fut = await usage.send(value=serde.encode_usage(p, new_final, out.rows), partition=p)
                    await fut
                    counters["rows"] += len(out.rows)
                    final = new_final
                if out.late:
                    counters["late"] += len(out.late)
                    await (await late.send(value=serde.encode_events(out.late), partition=p))
            engines[p] = (eng, offset, final)
            state[str(p)] = json.dumps(
                {"offset": offset, "final": final, "engine": eng.to_state()},
                separators=(",", ":")).encode()

    @app.timer(interval=30.0)
    async def report() -> None:
        log.info("stream counters: %s", counters)

    return app


def run_worker(settings: Settings, bootstrap: str, loglevel: str = "WARNING") -> None:
    """Run one stream worker in this process until it is stopped (SIGTERM/SIGINT)."""
    app = make_app(settings, bootstrap)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
