"""Integration fixtures: one real Tansu broker per session, a fresh topic prefix per test.

Everything runs as real processes through the real CLI (``python -m lictel.cli``), so a test sees
what a user sees: the broker, Faust workers, the sink and chDB.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lictel.broker import EmbeddedBroker
from lictel.config import Settings
from lictel.warehouse import connect, migrate


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(tmp_path_factory.mktemp("broker")) as b:
        yield b


@dataclass
class Lictel:
    """Runs ``lictel`` commands with this test's data dir, topics and broker."""

    data_dir: Path
    env: dict[str, str]

    def __call__(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "lictel.cli", *args], env=self.env, text=True,
                              capture_output=True, timeout=timeout)
        if check and proc.returncode != 0:
            logs = ""
            for log in sorted((self.data_dir / "logs").glob("*.log")):
                logs += f"\n--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise AssertionError(f"lictel {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
                                 f"stderr:\n{proc.stderr}{logs}")
        return proc


# What aiokafka logs when a group rebalances under a member or the broker has dropped it.
CHURN = re.compile(r"rebalanc|UnknownMemberId|member_id was not recognized|will rejoin", re.IGNORECASE)


def group_churn(logs: Path) -> list[str]:
    """Lines of the stream and sink logs under ``logs`` that say the consumer group moved after
    its first join: none may appear while no process is killed or added."""
    return [f"{log.name}: {line.strip()}" for log in sorted(logs.glob("*.log")) if log.name != "broker.log"
            for line in log.read_text(errors="replace").splitlines() if CHURN.search(line)]


@pytest.fixture
def lictel(broker: EmbeddedBroker, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Lictel]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LICTEL_")}
    env.update({
        "LICTEL_DATA_DIR": str(tmp_path / "data"),
        **broker.client_env(),
        "LICTEL_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}",
        "LICTEL_PARTITIONS": "4",
        "COLUMNS": "200",
    })
    yield Lictel(tmp_path / "data", env)
    if request.node.get_closest_marker("group_changes") is None:
        churn = group_churn(tmp_path / "data" / "logs")
        assert not churn, "the consumer group rebalanced with no member added or lost:\n" + "\n".join(churn[:10])


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[tuple[Settings, Any]]:
    """An in-process chDB warehouse with lictel's schema, closed afterwards: chDB serves one data
    directory per process, so a test that left its client open would break the next one."""
    settings = Settings(data_dir=tmp_path)
    client = connect(settings)
    try:
        migrate(client, settings)
        yield settings, client
    finally:
        client.close()
