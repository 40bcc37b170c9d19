"""Avro schemas of every record lictel puts on Kafka (``*.avsc`` beside this file).

Names are ``io.lictel.<Name>``; batches reference the record they carry. ``load(name)`` returns the
parsed schema ready for fastavro; ``raw(name)`` the JSON as written.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

DIR = Path(__file__).parent
#: Each schema, with the schemas it references listed before it.
DEPENDS = {
    "LicenseEvent": [],
    "LicenseEventBatch": [],
    "UsageRow": [],
    "UsageBatch": [],
    "DeadLetter": [],
    "SessionEvent": [],
    "SessionEventBatch": ["SessionEvent"],
}


def raw(name: str) -> dict[str, Any]:
    """The schema's JSON as written in ``schemas/NAME.avsc``."""
    with open(DIR / f"{name}.avsc", encoding="utf-8") as fh:
        result: dict[str, Any] = json.load(fh)
    return result


def expanded(name: str) -> dict[str, Any]:
    """The schema with every referenced named type inlined (what a registry stores)."""
    named: dict[str, Any] = {}
    for dep in DEPENDS[name]:
        named[f"io.lictel.{dep}"] = expanded(dep)

    def inline(node: Any) -> Any:
        if isinstance(node, str) and node in named:
            return named.pop(node)
        if isinstance(node, list):
            return [inline(x) for x in node]
        if isinstance(node, dict):
            return {k: inline(v) for k, v in node.items()}
        return node

    result: dict[str, Any] = inline(raw(name))
    return result


@cache
def load(name: str, logical: bool = True) -> Any:
    """Parsed schema. With ``logical=False`` timestamps stay integers (the hot path)."""
    schema = expanded(name)
    if not logical:
        schema = strip_logical(schema)
    return fastavro.parse_schema(schema)


def strip_logical(node: Any) -> Any:
    """The schema without logical types: timestamps decode as plain integers (microseconds)."""
    if isinstance(node, list):
        return [strip_logical(x) for x in node]
    if isinstance(node, dict):
        return {k: strip_logical(v) for k, v in node.items() if k != "logicalType"}
    return node


def released(name: str) -> list[dict[str, Any]]:
    """Every released version of ``name`` (``history/NAME.vN.avsc``, expanded), oldest first."""
    paths = sorted((DIR / "history").glob(f"{name}.v*.avsc"), key=lambda p: int(p.stem.rsplit(".v", 1)[1]))
    return [json.loads(p.read_text(encoding="utf-8")) for p in paths]
