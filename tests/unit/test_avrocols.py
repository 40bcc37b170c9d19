"""lictel.avrocols against fastavro: the same dict from the same bytes, and an error, never a guess,
from bytes that are not a whole message."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lictel import avrocols
from lictel.avrocols import Unsupported, compile_reader, compile_writer
from lictel.errors import SchemaError
from lictel.events import Event
from lictel.serde import Serde, event_columns

SERDE = Serde()


@pytest.fixture(autouse=True, scope="module")
def _columnar_at_any_size() -> Iterator[None]:
    """The batches here are small: read and write them here whatever their size (the sizes where
    fastavro takes over are a matter of speed, tested below)."""
    saved = avrocols.WORTH_BYTES, avrocols.WORTH_ITEMS
    avrocols.WORTH_BYTES = avrocols.WORTH_ITEMS = 0
    yield
    avrocols.WORTH_BYTES, avrocols.WORTH_ITEMS = saved
INT32 = st.integers(min_value=-(1 << 31), max_value=(1 << 31) - 1)
INT64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
TEXT = st.text(max_size=90)  # across the 64-byte edge of a one-byte length; any code point


def _fast(schema: Any, body: bytes) -> dict[str, Any]:
    out: dict[str, Any] = fastavro.schemaless_reader(io.BytesIO(body), schema, None)
    return out


def _columns(draw: Any, ints: dict[str, Any], longs: dict[str, Any], strings: tuple[str, ...],
             n: int) -> dict[str, Any]:
    cols: dict[str, Any] = {f: draw(st.lists(TEXT, min_size=n, max_size=n)) for f in strings}
    cols.update({f: draw(st.lists(s, min_size=n, max_size=n)) for f, s in ints.items()})
    cols.update({f: draw(st.lists(s, min_size=n, max_size=n)) for f, s in longs.items()})
    return cols


def _fields(schema: dict[str, Any], name: str) -> list[tuple[str, str]]:
    rec = next(f["type"] for f in schema["fields"] if f["name"] == name)
    out = []
    for f in rec["fields"]:
        items = f["type"]["items"]
        out.append((f["name"], items if isinstance(items, str) else items["type"]))
    return out


@st.composite
def event_batches(draw: Any) -> dict[str, Any]:
    n = draw(st.integers(min_value=0, max_value=40))
    fields = _fields(SERDE.events.schema, "columns")
    cols = _columns(draw, {f: INT32 for f, t in fields if t == "int"}, {f: INT64 for f, t in fields if t == "long"},
                    tuple(f for f, t in fields if t == "string" and f != "strings"), n)
    cols["strings"] = draw(st.lists(TEXT, max_size=30))
    prev = draw(st.dictionaries(TEXT, INT64, max_size=5))
    return {"columns": cols, "prev": prev}


@st.composite
def usage_batches(draw: Any) -> dict[str, Any]:
    n = draw(st.integers(min_value=0, max_value=40))
    fields = _fields(SERDE.usage.schema, "columns")
    cols = _columns(draw, {f: INT32 for f, t in fields if t == "int"}, {f: INT64 for f, t in fields if t == "long"},
                    (), n)
    cols["strings"] = draw(st.lists(TEXT, max_size=30))
    return {"partition": draw(INT32), "final_upto": draw(st.none() | INT64), "columns": cols, "stream": draw(TEXT)}


@settings(max_examples=300, deadline=None)
@given(event_batches())
def test_an_event_batch_reads_as_fastavro_reads_it(record: dict[str, Any]) -> None:
    data = SERDE.events.encode(record)
    read = compile_reader(SERDE.events.schema)
    assert read is not None
    bounds: dict[str, tuple[int, int]] = {}
    assert read(data, 10, bounds) == _fast(SERDE.events.schema, data[10:]) == record
    assert SERDE.events.decode(data) == record
    # The extremes of every array of numbers that has any, as Python finds them.
    assert bounds == {f"columns.{f}": (min(v), max(v)) for f, v in record["columns"].items()
                      if v and isinstance(v[0], int)}


@settings(max_examples=300, deadline=None)
@given(usage_batches())
def test_a_usage_batch_reads_as_fastavro_reads_it(record: dict[str, Any]) -> None:
    data = SERDE.usage.encode(record)
    read = compile_reader(SERDE.usage.schema)
    assert read is not None
    assert read(data, 10) == _fast(SERDE.usage.schema, data[10:]) == record


@settings(max_examples=100, deadline=None)
@given(st.fixed_dictionaries({"ts": INT64, "stage": TEXT, "source": TEXT, "line": st.none() | INT64,
                              "field": st.none() | TEXT, "reason": TEXT, "raw": st.text(max_size=300)}))
def test_a_dead_letter_reads_as_fastavro_reads_it(record: dict[str, Any]) -> None:
    data = SERDE.dead.encode(record)
    assert SERDE.dead._compiled is not None
    assert SERDE.dead.decode(data) == _fast(SERDE.dead.schema, data[10:]) == record


def _zigzag(n: int) -> bytes:
    u = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = u & 0x7F
        u >>= 7
        if u:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _blocked(items: list[bytes], rnd: random.Random) -> bytes:
    """An Avro array or map of encoded ``items`` in random blocks, some with their byte size (as
    writers other than fastavro write them)."""
    out = bytearray()
    i = 0
    while i < len(items):
        k = rnd.randint(1, len(items) - i)
        body = b"".join(items[i:i + k])
        if rnd.random() < 0.5:
            out += _zigzag(-k) + _zigzag(len(body))
        else:
            out += _zigzag(k)
        out += body
        i += k
    return bytes(out + _zigzag(0))


def _string(s: str) -> bytes:
    b = s.encode()
    return _zigzag(len(b)) + b


@pytest.mark.parametrize("seed", range(40))
def test_arrays_and_maps_in_several_blocks_read_as_fastavro_reads_them(seed: int) -> None:
    rnd = random.Random(seed)
    schema = SERDE.events.schema
    n = rnd.randint(1, 50)
    body = bytearray()
    for name, kind in _fields(schema, "columns"):
        if name == "strings" or kind == "string":
            items = [_string(rnd.choice(["a", "é" * rnd.randint(0, 40), "x" * rnd.randint(60, 70), ""]))
                     for _ in range(n)]
        else:
            bits = 31 if kind == "int" else 63
            items = [_zigzag(rnd.choice([0, -1, 1, 63, 64, -65, (1 << bits) - 1, -(1 << bits),
                                         rnd.randint(-(1 << bits), (1 << bits) - 1)])) for _ in range(n)]
        body += _blocked(items, rnd)
    body += _blocked([_string(f"s{i}") + _zigzag(rnd.randint(-(1 << 63), (1 << 63) - 1)) for i in range(5)], rnd)
    read = compile_reader(schema)
    assert read is not None
    data = b"\xc3\x01" + SERDE.events.fingerprint + bytes(body)
    bounds: dict[str, tuple[int, int]] = {}
    assert read(data, 10, bounds) == (expected := _fast(schema, bytes(body)))
    assert bounds == {f"columns.{f}": (min(v), max(v)) for f, v in expected["columns"].items()
                      if v and isinstance(v[0], int)}


def test_every_cut_of_a_message_and_any_bytes_after_it_are_errors() -> None:
    ev = Event("s1:f:1", 1_772_000_000_000_000, "acme", "s1", "CITRIX", "F", "OUT", "u" * 70, "hé", "h1", 2, None,
               "s1:f", 1 << 40)
    data = SERDE.events.encode({"columns": event_columns([ev, ev._replace(seq=7, user="v")]), "prev": {"s1:f": 3}})
    read = compile_reader(SERDE.events.schema)
    assert read is not None
    assert read(data, 10)["prev"] == {"s1:f": 3}
    for cut in range(10, len(data)):
        with pytest.raises(ValueError):
            read(data[:cut], 10)
    with pytest.raises(ValueError, match="1 bytes after the record's end"):
        read(data + b"\x00", 10)
    with pytest.raises(SchemaError, match="corrupt LicenseEventBatch"):
        SERDE.events.decode(data[:-3])


@settings(max_examples=300, deadline=None)
@given(event_batches(), st.data())
def test_damaged_bytes_read_as_fastavro_reads_them_or_are_an_error(record: dict[str, Any], data: Any) -> None:
    message = bytearray(SERDE.events.encode(record))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        message[data.draw(st.integers(min_value=10, max_value=len(message) - 1))] = data.draw(
            st.integers(min_value=0, max_value=255))
    read = compile_reader(SERDE.events.schema)
    assert read is not None
    try:
        ours = read(bytes(message), 10)
    except ValueError:
        return
    # Whatever this reader takes, fastavro reads alike (fastavro also takes what we refuse: bytes
    # after the record's end).
    body = io.BytesIO(bytes(message[10:]))
    assert fastavro.schemaless_reader(body, SERDE.events.schema, None) == ours
    assert body.tell() == len(message) - 10


def test_only_the_shapes_it_reads_are_compiled() -> None:
    assert compile_reader(SERDE.sessions.schema) is None  # an array of records: fastavro's
    assert compile_reader({"type": "record", "name": "r", "fields": [{"name": "b", "type": "bytes"}]}) is None
    assert compile_reader({"type": "record", "name": "r", "fields": [
        {"name": "u", "type": ["null", "int", "string"]}]}) is None
    assert compile_reader("long") is None


def _fast_bytes(schema: Any, record: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    return buf.getvalue()


@settings(max_examples=300, deadline=None)
@given(event_batches())
def test_an_event_batch_is_written_byte_for_byte_as_fastavro_writes_it(record: dict[str, Any]) -> None:
    write = compile_writer(SERDE.events.schema)
    assert write is not None
    assert write(record) == _fast_bytes(SERDE.events.schema, record)


@settings(max_examples=300, deadline=None)
@given(usage_batches())
def test_a_usage_batch_is_written_byte_for_byte_as_fastavro_writes_it(record: dict[str, Any]) -> None:
    write = compile_writer(SERDE.usage.schema)
    assert write is not None
    assert write(record) == _fast_bytes(SERDE.usage.schema, record)


@pytest.mark.parametrize(("column", "value"), [
    *((c, v) for c in ("ts", "count") for v in (1.5, "5", None, 1 << 63, -(1 << 63) - 1)),
    *((c, v) for c in ("event_id", "strings") for v in (None, 5, b"x", "\ud800")),
])
def test_a_value_the_writer_does_not_take_is_left_to_fastavro(value: Any, column: str) -> None:
    """What fastavro encodes (a float as its integer part), the codec encodes alike; what fastavro
    refuses, the codec refuses with fastavro's error."""
    ev = Event("s1:f:1", 1_772_000_000_000_000, "acme", "s1", "CITRIX", "F", "OUT", "u", "h", None, 1, None, "s1:f", 1)
    record = {"columns": event_columns([ev, ev]), "prev": {}}
    record["columns"][column][1] = value
    write = compile_writer(SERDE.events.schema)
    assert write is not None
    with pytest.raises(Unsupported):
        write(record)
    try:
        expected = _fast_bytes(SERDE.events.schema, record)
    except Exception as exc:  # fastavro's own error, and the codec's
        with pytest.raises(type(exc)):
            SERDE.events.encode(record)
    else:
        assert SERDE.events.encode(record)[10:] == expected


def test_a_record_missing_a_field_is_left_to_fastavro_which_fills_in_its_default() -> None:
    record = {"partition": 1, "final_upto": None,  # no stream
              "columns": {f: [] for f, _ in _fields(SERDE.usage.schema, "columns")}}
    write = compile_writer(SERDE.usage.schema)
    assert write is not None
    with pytest.raises(Unsupported):
        write(record)
    assert SERDE.usage.decode(SERDE.usage.encode(record))["stream"] == "events"


def test_small_batches_are_left_to_fastavro_and_read_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(avrocols, "WORTH_BYTES", 4096)
    monkeypatch.setattr(avrocols, "WORTH_ITEMS", 256)
    ev = Event("s1:f:1", 1_772_000_000_000_000, "acme", "s1", "CITRIX", "F", "OUT", "u", "h", None, 1, None, "s1:f", 1)
    for n in (1, 255, 256, 2000):
        events = [ev._replace(seq=i, ts=ev.ts + i * 7_000_001, user=f"u{i % 97}") for i in range(n)]
        record = {"columns": event_columns(events), "prev": {"s1:f": 0}}
        data = SERDE.events.encode(record)
        assert data[10:] == _fast_bytes(SERDE.events.schema, record)
        bounds: dict[str, tuple[int, int]] = {}
        assert SERDE.events.decode(data, bounds) == record
        assert bool(bounds) == (len(data) >= 4096)  # only the columnar reader finds them


def test_a_number_beyond_64_bits_is_an_error() -> None:
    # Ten bytes of varint carry 70 bits; an Avro long has 64. Found by the damaged-bytes test:
    # fastavro returns a value no long can hold, which this reader refuses.
    read = compile_reader(SERDE.events.schema)
    assert read is not None
    wide = b"\xff" * 9 + b"\x02"
    for body in (wide, b"\x02" + wide + b"\x00"):
        try:
            _read_numbers_like(body)
        except ValueError as exc:
            assert "beyond 64 bits" in str(exc)
        else:
            raise AssertionError("a 65-bit number was read")


def _read_numbers_like(body: bytes) -> None:
    from lictel.avrocols import Message

    msg = Message(body, 0, None)
    if body[0] == 0x02:  # one number, then the wide one, read at once
        msg.pos = 0
        msg.numbers(3, "seq")
    else:
        msg.varint("seq")
