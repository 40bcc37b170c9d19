"""The one partitioning function: every component maps ``(org, feature)`` to the same partition.

CRC-32 of the UTF-8 key, not Python's ``hash`` (salted per process), so producers, workers and
the batch recompute in different processes and languages agree.
"""

from __future__ import annotations

import zlib


def partition_for(org: str, feature: str, partitions: int) -> int:
    """Partition of the pool and estate keys of ``(org, feature)``."""
    return zlib.crc32(f"{org}\x1f{feature}".encode()) % partitions


def partition_name(stream: str, partition: int) -> str:
    """How progress messages and engine snapshots name an input partition: ``"3"`` of the events
    topic (the form from before the sessions topic existed), ``"sessions:3"`` of another."""
    return str(partition) if stream == "events" else f"{stream}:{partition}"
