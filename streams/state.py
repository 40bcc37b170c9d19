"""How a stream worker keeps a partition's engine in the state topic: per entity, changed ones only.

The engine names its entities (each server, pool, estate and applied-seq set; ``Engine.entities``)
and says which changed since the last checkpoint (``Engine.take_changes``). One partition's state is

- a **manifest** under the partition's name (``partition_name``: ``3``, ``sessions:3``): the
  checkpoint's generation ``g``, the input offset and final mark it holds, the engine's counters,
  and for every entity the generation that last wrote it and its number of chunks;
- each **entity** as zlib-compressed JSON in chunks of at most :data:`STATE_CHUNK` bytes, under
  ``<partition>/<digest of the entity's name>@<generation>#<chunk>``.

A checkpoint writes the changed entities under its new generation, then the manifest, then deletes
(tombstones) the chunks the manifest no longer names. The state topic keeps one partition's
records in order, so once the manifest is durable every chunk it names is too, and a checkpoint cut
short before its manifest leaves the previous manifest and every chunk it names untouched: a
reload never mixes two checkpoints. No record is larger than a chunk or the manifest (about 60
bytes per entity), whatever the number of users: Kafka's 1 MiB default message limit is never
approached by the state (tests/unit/test_state.py measures it at 200,000 users).

A manifest of the first format (one JSON document of the whole engine, ``"engine"``) still loads;
the next checkpoint writes every entity in the new format.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from lictel.engine import Engine
from lictel.errors import LictelError

#: The largest record a checkpoint writes (an entity is split into chunks of this size).
STATE_CHUNK = 256 * 1024
FORMAT = 2


class StateError(LictelError):
    """Saved state that cannot be read back whole: the worker stops rather than guess."""


class Table(Protocol):
    def load(self, name: str) -> bytes | None: ...

    def save(self, name: str, partition: int, value: bytes | None) -> None: ...


@dataclass(slots=True)
class Manifest:
    """What the last checkpoint of a partition saved; ``full``: the next one writes everything."""

    g: int = 0
    offset: int = -1
    final: int | None = None
    ents: dict[str, list[int]] = field(default_factory=dict)  # entity -> [generation, chunks]
    full: bool = False


def chunk_key(partition: str, entity: str, generation: int, chunk: int) -> str:
    digest = hashlib.blake2b(entity.encode("utf-8", "surrogatepass"), digest_size=10).hexdigest()
    return f"{partition}/{digest}@{generation}#{chunk}"


def save(table: Table, name: str, p: int, engine: Engine, manifest: Manifest, offset: int,
         final: int | None) -> int:
    """Checkpoint ``engine`` (partition ``name``, table partition ``p``) over ``manifest``, which is
    updated; returns the bytes written."""
    changed, evicted = engine.take_changes(everything=manifest.full)
    if manifest.full:
        evicted = set(manifest.ents) - changed.keys()
    g = manifest.g + 1
    ents = dict(manifest.ents)
    stale: list[tuple[str, int, int]] = []
    written = 0
    for ent, value in changed.items():
        blob = zlib.compress(json.dumps(value, separators=(",", ":")).encode(), 1)
        chunks = [blob[i:i + STATE_CHUNK] for i in range(0, len(blob), STATE_CHUNK)]
        for i, chunk in enumerate(chunks):
            table.save(chunk_key(name, ent, g, i), p, chunk)
            written += len(chunk)
        if ent in ents:
            stale.append((ent, *ents[ent]))  # type: ignore[arg-type]
        ents[ent] = [g, len(chunks)]
    for ent in evicted:
        if ent in ents:
            stale.append((ent, *ents.pop(ent)))  # type: ignore[arg-type]
    record = json.dumps({"v": FORMAT, "g": g, "offset": offset, "final": final, "meta": engine.meta(),
                         "ents": ents}, separators=(",", ":")).encode()
    table.save(name, p, record)  # the checkpoint counts from here on
    written += len(record)
    for ent, gen, n in stale:
        for i in range(n):
            table.save(chunk_key(name, ent, gen, i), p, None)
    manifest.g, manifest.offset, manifest.final, manifest.ents, manifest.full = g, offset, final, ents, False
    return written


def load(table: Table, name: str, opts: dict[str, Any]) -> tuple[Engine, Manifest] | None:
    """The engine and manifest of partition ``name`` from its last whole checkpoint, or ``None``."""
    raw = table.load(name)
    if raw is None:
        return None
    snap: dict[str, Any] = json.loads(raw)
    if "engine" in snap:  # the first format: the whole engine in one document
        eng = Engine.from_state(snap["engine"], **opts)
        return eng, Manifest(0, int(snap["offset"]), snap.get("final"), {}, full=True)
    entities = []
    for ent, (gen, n) in snap["ents"].items():
        chunks = [table.load(chunk_key(name, ent, gen, i)) for i in range(n)]
        if any(c is None for c in chunks):
            raise StateError(
                f"the saved state of {name} is incomplete (entity {ent[:80]!r}, generation {gen}: a chunk is missing "
                f"from the state topic): it lost records (retention or deletion instead of compaction on the "
                f"<prefix>.state topic?). The worker stops rather than start from a wrong state; recompute with "
                f"`lictel reconcile` after resetting the stream group's offsets and deleting the state topic.")
        entities.append((ent, json.loads(zlib.decompress(b"".join(c for c in chunks if c is not None)))))
    eng = Engine.from_entities(snap["meta"], entities, **opts)
    return eng, Manifest(int(snap["g"]), int(snap["offset"]), snap.get("final"), snap["ents"])
