"""Avro framing, round trips, registry wire format, and backward compatibility of schema changes."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import avro.schema
import fastavro
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

import schemas
from lictel.engine import MinuteRow
from lictel.errors import SchemaError
from lictel.events import Event
from lictel.partitioning import partition_for
from lictel.serde import Codec, Serde

HISTORY = Path(schemas.__file__).parent / "history"
EV = Event("lic01:CITRIX.log:18342", 1772439303250000, "acme", "lic01", "CITRIX", "XDT_PLT_CCU", "OUT",
           "alice", "pc-42", None, 1, None, "lic01:CITRIX.log", 18342)


def test_event_batch_round_trip_and_single_object_header() -> None:
    serde = Serde()
    data = serde.encode_events([EV, EV._replace(action="IN", handle="7", reason="x")])
    assert data[:2] == b"\xc3\x01"
    assert serde.decode_events(data) == [EV, EV._replace(action="IN", handle="7", reason="x")]


def test_session_batch_round_trip_keeps_site_device_and_session_key() -> None:
    serde = Serde()
    ev = Event("s1:x.json:3", 1772439303250000, "acme", "site1", "SESSIONS", "XDT_PLT_CCU", "RECONNECT",
               "ann", "home-pc", "2f0c", 1, None, "s1:x.json", 3)
    data = serde.encode_sessions([ev])
    assert serde.sessions.decode(data)["events"][0]["device"] == "home-pc"
    assert serde.decode_sessions(data) == [ev]
    with pytest.raises(SchemaError, match="another schema"):
        serde.decode_events(data)


def test_message_written_with_a_released_older_schema_is_still_read() -> None:
    # A UsageBatch from before the source/stream fields: in flight during an upgrade, it must decode.
    old = json.loads((HISTORY / "UsageBatch.v1.avsc").read_text())
    parsed = fastavro.parse_schema(schemas.strip_logical(old))
    fp = bytes.fromhex(fastavro.schema.fingerprint(
        fastavro.schema.to_parsing_canonical_form(fastavro.parse_schema(old)), "CRC-64-AVRO"))[::-1]
    buf = io.BytesIO()
    buf.write(b"\xc3\x01" + fp)
    row = {"level": "pool", "org": "acme", "server": "lic01", "feature": "F", "minute": 60_000_000, "peak": 2,
           "low": 1, "license_us": 90_000_000, "checkouts": 1, "checkins": 0, "forced_releases": 0,
           "denials": 0, "queued": 0, "orphans": 0}
    fastavro.schemaless_writer(buf, parsed, {"partition": 5, "final_upto": None, "rows": [row]})
    serde = Serde()
    assert fp != serde.usage.fingerprint
    assert serde.decode_usage_columns(buf.getvalue())[2] == "events"
    p, final, rows = serde.decode_usage(buf.getvalue())
    assert (p, final, rows[0].source, rows[0].peak) == (5, None, "license", 2)
    # Computed before licenses charged existed, so under no rule: charged = checkouts.
    assert (rows[0].charged_peak, rows[0].charged_low, rows[0].charged_license_us, rows[0].dup_group) == (
        2, 1, 90_000_000, "NONE")


def _single_object(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    """``record`` framed as a writer of ``schema`` (a released version) framed it."""
    fp = bytes.fromhex(fastavro.schema.fingerprint(
        fastavro.schema.to_parsing_canonical_form(fastavro.parse_schema(schema)), "CRC-64-AVRO"))[::-1]
    buf = io.BytesIO()
    buf.write(b"\xc3\x01" + fp)
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schemas.strip_logical(schema)), record)
    return buf.getvalue()


def test_event_batches_go_column_by_column_and_batches_of_records_are_still_read() -> None:
    serde = Serde()
    evs = [EV, EV._replace(event_id="x:2", seq=2, action="IN", handle="h\u00e9", reason="why"),
           EV._replace(event_id="x:3", seq=3, user="bob", host="pc-1", count=4)]
    cols = serde.events.decode(serde.encode_events(evs, {"x": 0}))["columns"]
    # Each text value once, each event a small index.
    assert sorted(cols["strings"]) == sorted({v for e in evs for v in e[2:13] if isinstance(v, str)})
    assert cols["user"] == [cols["strings"].index("alice")] * 2 + [cols["strings"].index("bob")]
    assert cols["handle"][0] == -1 and cols["reason"] == [-1, cols["strings"].index("why"), -1]
    assert serde.decode_events_prev(serde.encode_events(evs, {"x": 0})) == (evs, {"x": 0})
    assert serde.decode_events(serde.encode_events([])) == []
    # Written by a producer of version 1 (no prev) or 2: an array of records, read as written.
    for version, prev in ((1, {}), (2, {"x": 0})):
        old = json.loads((HISTORY / f"LicenseEventBatch.v{version}.avsc").read_text())
        record: dict[str, Any] = {"events": [e._asdict() for e in evs]}
        if version == 2:
            record["prev"] = prev
        data = _single_object(old, record)
        assert serde.decode_events_prev(data) == (evs, prev)
        assert serde.decode_event_columns(data)[0]["user"] == ["alice", "alice", "bob"]


def test_a_malformed_columnar_batch_is_a_schema_error_naming_the_column() -> None:
    serde = Serde()
    cols = serde.events.decode(serde.encode_events([EV, EV._replace(seq=2, event_id="e2")]))["columns"]
    short = {**cols, "seq": cols["seq"][:1]}
    with pytest.raises(SchemaError, match="column seq has 1 values, event_id has 2"):
        serde.decode_events(serde.events.encode({"columns": short, "prev": {}}))
    outside = {**cols, "feature": [0, len(cols["strings"])]}
    with pytest.raises(SchemaError, match="column feature points outside"):
        serde.decode_events(serde.events.encode({"columns": outside, "prev": {}}))
    null_org = {**cols, "org": [-1, 0]}
    with pytest.raises(SchemaError, match="column org points outside"):
        serde.decode_events(serde.events.encode({"columns": null_org, "prev": {}}))


def test_usage_round_trip() -> None:
    serde = Serde()
    row = MinuteRow("estate", "acme", "", "F", 1772445600000000, 4, 0, 120_000_000, 4, 0, 0, 0, 0, 0,
                    2, 0, 60_000_000, "UH")
    assert serde.decode_usage(serde.encode_usage(3, 1772445660000000, [row])) == (3, 1772445660000000, [row])


def test_usage_goes_column_by_column_and_every_released_version_is_still_read() -> None:
    serde = Serde()
    rows = [MinuteRow("pool", "acme", "lic01", "F", 60_000_000 * k, k, 0, 1_000 * k, k, 0, 0, 0, 0, 0, k, 0,
                      1_000 * k, "UH") for k in range(1, 4)]
    rows.append(rows[0]._replace(level="estate", server="", source="sessions", dup_group="NONE"))
    data = serde.encode_usage(7, 240_000_000, rows, "sessions")
    cols = serde.usage.decode(data)["columns"]
    assert cols["org"] == [cols["strings"].index("acme")] * 4
    assert sorted(cols["strings"]) == sorted({v for r in rows for v in r if isinstance(v, str)})
    assert serde.decode_usage(data) == (7, 240_000_000, rows)
    assert serde.decode_usage_columns(data)[2] == "sessions"
    for version in (2, 3):
        old = json.loads((HISTORY / f"UsageBatch.v{version}.avsc").read_text())
        names = {f["name"] for f in old["fields"][2]["type"]["items"]["fields"]}
        record = {"partition": 7, "final_upto": None, "stream": "events",
                  "rows": [{k: v for k, v in r._asdict().items() if k in names} for r in rows]}
        got = serde.decode_usage(_single_object(old, record))[2]
        if "charged_peak" in names:
            assert got == rows
        else:  # before licenses charged: charged = checkouts, no rule
            assert [(r.charged_peak, r.dup_group) for r in got] == [(r.peak, "NONE") for r in rows]
    with pytest.raises(SchemaError, match="column peak has 3 values"):
        serde.decode_usage(serde.usage.encode({"partition": 0, "final_upto": None, "stream": "events",
                                               "columns": {**cols, "peak": cols["peak"][:3]}}))


def test_wrong_schema_is_refused_clearly() -> None:
    serde = Serde()
    usage = serde.encode_usage(0, None, [])
    with pytest.raises(SchemaError, match="written with another schema"):
        serde.decode_events(usage)
    with pytest.raises(SchemaError, match="not an Avro"):
        serde.decode_events(b'{"json": true}')
    with pytest.raises(SchemaError, match="corrupt"):
        serde.decode_events(serde.encode_events([EV])[:20])


def _compatible(reader: dict[str, Any], writer: dict[str, Any]) -> bool:
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        avro.schema.parse(json.dumps(reader)), avro.schema.parse(json.dumps(writer)))
    return result.compatibility is SchemaCompatibilityType.compatible


@pytest.mark.parametrize("name", sorted(schemas.DEPENDS))
def test_current_schema_reads_every_released_version(name: str) -> None:
    versions = sorted(HISTORY.glob(f"{name}.v*.avsc"))
    assert versions, f"schemas/history has no released version of {name}: copy it there when releasing"
    current = schemas.expanded(name)
    for path in versions:
        assert _compatible(current, json.loads(path.read_text())), f"{name} cannot read {path.name}"


def test_the_compatibility_check_catches_a_breaking_change() -> None:
    broken = copy.deepcopy(schemas.expanded("LicenseEvent"))
    broken["fields"].append({"name": "site", "type": "string"})  # new field without a default
    old = json.loads((HISTORY / "LicenseEvent.v1.avsc").read_text())
    assert not _compatible(broken, old)
    broken["fields"][-1]["default"] = ""
    assert _compatible(broken, old)


def test_codec_fingerprint_is_crc64_of_canonical_form() -> None:
    assert len(Codec("LicenseEventBatch").fingerprint) == 8
    assert Codec("LicenseEventBatch").fingerprint != Codec("UsageBatch").fingerprint


def test_partitioning_is_stable_across_processes() -> None:
    # Pinned: if these change, running pipelines would split a key over two partitions.
    assert [partition_for("acme", f, 8) for f in ("XDT_PLT_CCU", "XDT_ENT_UD", "XDS_PLT_CCS")] == [3, 1, 7]
    assert partition_for("acme", "XDT_PLT_CCU", 1000) == 115


def test_an_event_the_schema_cannot_hold_is_refused_at_encoding_naming_the_field() -> None:
    # The producer dead-letters such an event alone (producers/base.py); a null in a text field must
    # not become an index the readers refuse, which would cost the whole batch.
    serde = Serde()
    with pytest.raises(ValueError, match="user is null"):
        serde.encode_events([EV, EV._replace(user=None)])
    with pytest.raises((ValueError, TypeError)):
        serde.encode_events([EV._replace(org=7)])
    assert serde.decode_events(serde.encode_events([EV._replace(handle=None, reason=None)]))[0].handle is None
