"""The stream worker's job under Faust and under Quix Streams, side by side in one run.

Both run the same :class:`streams.partitions.PartitionWorker` (Avro decode, the engine with both
measures, usage batches out, engine state checkpointed to a topic) over the same simulated events
in a real Tansu broker; only the framework around it differs: Faust on aiokafka (`lictel stream`)
against a Quix Streams ``Application`` on confluent-kafka/librdkafka with a stateless ``update``
(bench/_quix_worker.py; Quix's windowed state needs changelog features the embedded broker lacks).
Each is timed like bench/stream_worker.py: from its first output batch to every partition final
past the last event. Order Faust, Quix, Quix, Faust, best of each. Quix Streams pins an older
pydantic than lictel, so it runs in a venv of its own (.venv-peer, from bench/requirements-peer.lock,
built on first use).

Run: .venv/bin/python bench/peer_quix.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import record
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from stream_worker import produce, watch

from lictel.broker import EmbeddedBroker
from lictel.config import Settings
from lictel.pipeline import settings_env
from producers.simulate import SimSpec

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT / ".venv-peer"
LOCK = ROOT / "bench" / "requirements-peer.lock"


def peer_python() -> Path:
    """The peer venv's Python, built from the lock when missing or older than it."""
    python = PEER / "bin" / "python"
    stamp = PEER / ".installed"
    if not stamp.exists() or stamp.stat().st_mtime < LOCK.stat().st_mtime:
        print(f"building {PEER} from {LOCK.name} ...", flush=True)
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(PEER)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(LOCK)], check=True)
        stamp.touch()
    return python


async def state_topic(settings: Settings, bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(settings.topic("peer-state"), settings.partitions, 1)])
    finally:
        await admin.close()


def framework_version(python: Path, module: str) -> str:
    return subprocess.run([str(python), "-c", f"import {module}; print({module}.__version__)"], capture_output=True,
                          text=True, check=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=27000)
    ap.add_argument("--servers", type=int, default=5)
    ap.add_argument("--days", type=int, default=14)
    args = ap.parse_args()
    peer = peer_python()
    spec = SimSpec(users=args.users, servers=args.servers, days=args.days)
    best: dict[str, float] = {}
    runs: list[str] = []
    events = 0
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(Path(tmp)) as broker:
        for k, name in enumerate(("Faust", "Quix Streams", "Quix Streams", "Faust")):
            prefix = f"peer-{k}"
            settings = Settings(data_dir=Path(tmp) / prefix, **broker.client_settings(),  # type: ignore[arg-type]
                                topic_prefix=prefix)
            events, target = asyncio.run(produce(settings, broker.bootstrap, spec))
            env = settings_env(settings)
            if name == "Faust":
                cmd = [sys.executable, "-m", "lictel.cli", "stream"]
            else:
                asyncio.run(state_topic(settings, broker.bootstrap))
                cmd = [str(peer), str(ROOT / "bench" / "_quix_worker.py"), broker.bootstrap]
                env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
            log = open(Path(tmp) / f"{prefix}.log", "wb")  # noqa: SIM115
            started = time.monotonic()
            worker = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            try:
                first, done, rows = asyncio.run(watch(settings, broker.bootstrap, target, 900, worker))
            except (TimeoutError, RuntimeError):
                print((Path(tmp) / f"{prefix}.log").read_text()[-3000:])
                raise
            finally:
                worker.terminate()
                worker.wait(30)
            took = done - first
            best[name] = max(best.get(name, 0.0), events / took)
            runs.append(f"{name} {events / took:,.0f} events/s ({took:.1f} s; {first - started:.1f} s start + join; "
                        f"{rows:,} rows)")
            print(runs[-1], flush=True)
    ratio = best["Quix Streams"] / best["Faust"]
    lines = [
        f"- {events:,} simulated events ({args.users:,} users, {args.servers} servers, {args.days} days) per run, "
        f"{settings.partitions} partitions; one worker process; faust-streaming "
        f"{framework_version(Path(sys.executable), 'faust')} against quixstreams "
        f"{framework_version(peer, 'quixstreams')}",
        f"- runs in the order Faust, Quix, Quix, Faust: {'; '.join(runs)}",
        f"- best of each: Faust **{best['Faust']:,.0f} events/s**, Quix Streams **{best['Quix Streams']:,.0f} "
        f"events/s**: Quix / Faust = **{ratio:.2f}x**",
    ]
    record("peer", "The same job under a peer framework: Faust vs Quix Streams", "bench/peer_quix.py", lines)


if __name__ == "__main__":
    main()
