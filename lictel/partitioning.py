"""The one partitioning function: every component maps ``(org, feature)`` to the same partition.

CRC-32 of the UTF-8 key, not Python's ``hash`` (salted per process), so producers, workers and
the batch recompute in different processes and languages agree.
"""

from __future__ import annotations

import zlib


def partition_for(org: str, feature: str, partitions: int) -> int:
    """Partition of the pool and estate keys of ``(org, feature)``."""
    return zlib.crc32(f"{org}\x1f{feature}".encode()) % partitions
