"""One Faust stream worker: events/s through decode + engine + emit of final rows + state snapshot.

Events are produced into a real Tansu broker first; then one worker (`lictel stream`, a separate
process) is started and timed from its first output batch to the moment every partition is final
past the last event (read from the usage topic). Done twice in one run on the same events: with no
DUP_GROUP rule (licenses charged = checkouts) and with `*=UH` (every checkout grouped by user and
host), so the cost of the second measure is a ratio of one run.
Run: .venv/bin/python bench/stream_worker.py
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import record
from aiokafka import AIOKafkaConsumer

from lictel.avrocols import Message, blocks
from lictel.broker import EmbeddedBroker, ensure_topics
from lictel.config import Settings
from lictel.pipeline import settings_env
from lictel.serde import Serde
from producers.base import EventProducer
from producers.simulate import SimSpec, simulate


async def produce(settings: Settings, bootstrap: str, *specs: SimSpec) -> tuple[int, int]:
    """Produce the simulated estates ``specs``; return the events sent and the final mark to wait for."""
    await ensure_topics(bootstrap, settings)
    producer = await EventProducer(settings, bootstrap, source="bench").start()
    for e in (e for spec in specs for e in simulate(spec)):
        await producer.send(e)
    await producer.close(final=True)
    mark = producer.closing_mark()
    assert mark is not None
    return producer.stats.events, mark - settings.lateness_us


def usage_head(data: bytes, fingerprint: bytes) -> tuple[int, int | None, int] | None:
    """A UsageBatch's partition, final mark and row count, read without building its rows; None when
    the message is not a single-object UsageBatch of this version.

    The watcher runs beside the workers it times, on the same cores: decoding every row it reads
    (what ``Serde.decode_usage`` does) took a quarter of a core away from two workers on 2 cores.
    """
    if data[2:10] != fingerprint:
        return None
    msg = Message(data, 10, None)
    partition = msg.varint("partition")
    branch = msg.varint("final_upto")  # a union of null and long
    final = msg.varint("final_upto") if branch else None
    for n in blocks(msg, "strings"):  # the batch's text values, then its first column
        msg.strings(n, "strings")
    rows = sum(len(msg.numbers(n, "level")) for n in blocks(msg, "level"))
    return partition, final, rows


async def watch(settings: Settings, bootstrap: str, target: int, timeout: float,
                worker: subprocess.Popen[bytes] | None = None) -> tuple[float, float, int]:
    """When the worker's output reaches ``target`` on every partition: (first output, done, rows).
    A ``worker`` process that ends before that fails the run at once, not at the timeout."""
    serde = Serde()
    fingerprint = serde.usage.fingerprint
    consumer = AIOKafkaConsumer(settings.topic("usage"), bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    first = None
    final: dict[int, int] = {}
    rows = 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=200)).values():
                for m in msgs:
                    first = first or time.monotonic()
                    head = usage_head(m.value, fingerprint)
                    if head is None:
                        p, f, batch = serde.decode_usage(m.value)
                        head = p, f, len(batch)
                    p, f, n = head
                    rows += n
                    if f is not None:
                        final[p] = max(final.get(p, f), f)
            if len(final) == settings.partitions and min(final.values()) >= target:
                assert first is not None
                return first, time.monotonic(), rows
            if worker is not None and worker.poll() is not None:
                raise RuntimeError(f"the worker ended (exit code {worker.returncode}) before its output was final")
    finally:
        await consumer.stop()
    raise TimeoutError("worker did not finish")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=27000)
    ap.add_argument("--servers", type=int, default=5)
    ap.add_argument("--days", type=int, default=14)
    args = ap.parse_args()
    spec = SimSpec(users=args.users, servers=args.servers, days=args.days)
    rates: dict[str, float] = {}
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(Path(tmp)) as broker:
        # Each mode twice, in the order A B B A, best of each: the broker holds more with every run and
        # runs vary by ~10 %, so one run of each would favour whichever ran first.
        for k, (name, rule) in enumerate((("no rule", ""), ("*=UH", "*=UH"), ("*=UH", "*=UH"), ("no rule", ""))):
            prefix = f"bench-{k}"
            settings = Settings(data_dir=Path(tmp) / prefix, **broker.client_settings(), topic_prefix=prefix,  # type: ignore[arg-type]
                                dup_group=rule)
            t = time.monotonic()
            events, target = asyncio.run(produce(settings, broker.bootstrap, spec))
            produce_s = time.monotonic() - t
            log = open(Path(tmp) / f"{prefix}.log", "wb")  # noqa: SIM115
            started = time.monotonic()
            worker = subprocess.Popen([sys.executable, "-m", "lictel.cli", "stream"], env=settings_env(settings),
                                      stdout=log, stderr=subprocess.STDOUT)
            try:
                first, done, rows = asyncio.run(watch(settings, broker.bootstrap, target, 900, worker))
            finally:
                worker.terminate()
                worker.wait(30)
            took = done - first
            rates[name] = max(rates.get(name, 0.0), events / took)
            if not lines:
                lines.append(f"- {events:,} simulated events ({args.users:,} users, {args.servers} servers, "
                             f"{args.days} days), {settings.partitions} partitions, produced in {produce_s:.1f} s "
                             f"({events / produce_s:,.0f} events/s)")
            lines.append(f"- one worker, DUP_GROUP {name}: **{events / took:,.0f} events/s** from its first output "
                         f"to the last partition final ({took:.1f} s; {rows:,} minute rows emitted; "
                         f"{first - started:.1f} s process start + group join before that)")
    lines += [
        f"- licenses charged under `*=UH` cost {1 - rates['*=UH'] / rates['no rule']:.1%} of the throughput "
        "without a rule (target: at most 10 %)",
        "- per message: Avro decode, engine (both measures), usage batch sent; every 5 s per partition: producer "
        "flush + engine state to the state topic (what changed)",
    ]
    record("stream", "Stream worker: one Faust worker, events in, final minute rows out", "bench/stream_worker.py",
           lines)


if __name__ == "__main__":
    main()
