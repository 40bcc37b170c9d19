"""The stream worker's saved state: records, bytes per checkpoint, applied-seq intervals.

Simulated estates go through the real producer into the embedded broker and back, partition by
partition, into the real partition logic (streams.partitions.PartitionWorker), with a checkpoint
every ``--every`` messages into an in-memory state table. Reported per estate: the largest record
written (Kafka's default limit is 1 MiB), the bytes a checkpoint writes (median and largest), the
whole state of a partition, and the intervals of the applied-seq sets; next to it the size of the
one-document snapshot of the first format (``Engine.to_state`` as JSON), which a checkpoint used to
write whole.

Run: .venv/bin/python bench/state_size.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from _report import record

from lictel.broker import EmbeddedBroker, ensure_topics
from lictel.config import Settings
from lictel.partitioning import partition_name
from lictel.pipeline import read_topic
from producers.base import EventProducer
from producers.simulate import SimSpec, simulate
from streams.partitions import PartitionWorker


class Table:
    """State table, output and commits of one worker, kept in memory; records what was written."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.records: list[int] = []

    def load(self, name: str) -> bytes | None:
        return self.data.get(name)

    def save(self, name: str, partition: int, value: bytes | None) -> None:
        if value is None:
            self.data.pop(name, None)
        else:
            self.data[name] = value
            self.records.append(len(value))

    async def send(self, topic: str, value: bytes, partition: int | None) -> None:
        pass

    async def flush(self) -> None:
        pass

    async def commit(self, tokens: list[Any]) -> None:
        pass

    async def read(self, stream: str, partition: int, start: int, upto: int) -> AsyncIterator[tuple[int, bytes]]:
        return
        yield  # pragma: no cover


async def _messages(settings: Settings, bootstrap: str, spec: SimSpec) -> dict[int, list[bytes]]:
    await ensure_topics(bootstrap, settings)
    producer = await EventProducer(settings, bootstrap, source="bench").start()
    for ev in simulate(spec):
        await producer.send(ev)
    await producer.close(final=True)
    return await read_topic(bootstrap, settings.topic("events"), settings.partitions)


async def _apply(settings: Settings, log: dict[int, list[bytes]], every: int) -> dict[str, Any]:
    table = Table()
    worker = PartitionWorker(settings, table, clock=lambda: 1_900_000_000.0)
    per_checkpoint: list[int] = []
    old_format = whole = 0
    for p, msgs in log.items():
        for offset, value in enumerate(msgs):
            await worker.message("events", p, offset, value, (p, offset))
            if offset % every == every - 1 or offset == len(msgs) - 1:
                before = sum(table.records)
                await worker.checkpoint_due(force=True)
                per_checkpoint.append(sum(table.records) - before)
                # At the largest: the partition's whole saved state, and the one document the first
                # format wrote at every checkpoint.
                name = partition_name("events", p)
                whole = max(whole, sum(len(v) for k, v in table.data.items() if k == name or k.startswith(name + "/")))
                part = worker.parts[("events", p)]
                old_format = max(old_format, len(json.dumps(
                    {"offset": part.offset, "final": part.final, "engine": part.engine.to_state()},
                    separators=(",", ":"))))
    intervals = max((len(s.intervals()) for part in worker.parts.values()
                     for s in part.engine._applied.values()), default=0)
    return {"largest": max(table.records), "median": statistics.median(per_checkpoint),
            "max_checkpoint": max(per_checkpoint), "whole": whole, "old": old_format, "intervals": intervals,
            "checkpoints": len(per_checkpoint), "messages": sum(len(m) for m in log.values())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--every", type=int, default=10, help="messages between checkpoints of a partition")
    args = ap.parse_args()
    lines = []
    estates = [SimSpec(users=27_000, servers=4, days=3), SimSpec(users=200_000, servers=4, days=1)]
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(Path(tmp)) as broker:
        for spec in estates:
            settings = Settings(**broker.client_settings(), topic_prefix=f"b{uuid.uuid4().hex[:8]}",  # type: ignore[arg-type]
                                partitions=8, snapshot_s=10**9)
            t = time.monotonic()
            log = asyncio.run(_messages(settings, broker.bootstrap, spec))
            got = asyncio.run(_apply(settings, log, args.every))
            lines.append(
                f"- {spec.users:,} users, {spec.servers} servers, {spec.days} day(s) ({got['messages']:,} messages, 8 "
                f"partitions, a checkpoint every {args.every} messages of a partition): largest record "
                f"**{got['largest'] / 1024:,.0f} KiB**; a checkpoint writes {got['median'] / 1024:,.0f} KiB "
                f"(median; largest {got['max_checkpoint'] / 1024:,.0f} KiB); a partition's whole state at its largest "
                f"{got['whole'] / 1024:,.0f} KiB compressed; applied-seq sets at most {got['intervals']} interval(s) "
                f"per source; the first format's one document, written whole at every checkpoint, reached "
                f"**{got['old'] / 1024:,.0f} KiB** "
                f"({time.monotonic() - t:.0f} s)")
            print(lines[-1])
    lines.append("- Kafka's default message limit: 1,024 KiB; the state's chunks are at most 256 KiB")
    record("state", "Stream state per checkpoint", "bench/state_size.py", lines)


if __name__ == "__main__":
    main()
