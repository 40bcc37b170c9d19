"""A reader of lictel's columnar Avro records that decodes a column of numbers at once.

A ``LicenseEventBatch`` or ``UsageBatch`` (schemas/) is a record of arrays, one per field. fastavro
reads an array item by item, each through its type dispatch, and that was a quarter of a stream
worker's time. Here the schema is compiled once into steps, and an array of ``int`` or ``long`` is
decoded with numpy: the varints' last bytes (high bit clear) are found for the whole message in one
pass, and each column's values are summed from its bytes in a few array operations. The result is the
same dict fastavro gives (lists of Python ints and strs), a test holds the two to each other on
random and hand-blocked input.

Only the shapes lictel's batches use are compiled: records; ``int``, ``long``, ``string``; a union
of ``null`` and one of those; arrays and maps of them. :func:`compile_reader` returns None for any
other schema, and the caller reads with fastavro. Malformed bytes raise :class:`ValueError` naming
what was being read; nothing is read past the message's end, and bytes left over are an error.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np

_NUMBERS = ("int", "long")
#: Below these sizes fastavro is the faster (measured on the batches of lictel's topics: a numpy
#: call costs some microseconds whatever its length): a message shorter than WORTH_BYTES is read,
#: and a record whose arrays are shorter than WORTH_ITEMS is written, by fastavro.
WORTH_BYTES = 4096
WORTH_ITEMS = 256
_PRIMITIVES = ("int", "long", "string")
_SEVEN = np.uint64(7)
_ONE = np.uint64(1)


class Message:
    """One message's bytes, a position, and where its varints end: the reading steps of a compiled
    reader, and of a caller that reads only the head of a message (``bench/stream_worker.py``)."""

    __slots__ = ("bounds", "buf", "data", "ends", "pos", "text")

    def __init__(self, data: bytes, pos: int, bounds: dict[str, tuple[int, int]] | None) -> None:
        self.bounds = bounds
        self.data = data
        self.pos = pos
        self.buf = np.frombuffer(data, dtype=np.uint8)
        self.ends: np.ndarray[Any, Any] | None = None  # positions of the bytes with the high bit clear
        self.text: str | None = None  # the message as Latin-1

    def varint(self, what: str) -> int:
        data = self.data
        i = self.pos
        n = shift = 0
        try:
            while True:
                b = data[i]
                i += 1
                n |= (b & 0x7F) << shift
                if b < 0x80:
                    break
                shift += 7
                if shift > 63:
                    raise ValueError(f"{what}: a number longer than 10 bytes")
            if n >> 64:
                raise ValueError(f"{what}: a number beyond 64 bits")
        except IndexError:
            raise ValueError(f"{what}: the message ends inside a number") from None
        self.pos = i
        return (n >> 1) ^ -(n & 1)

    def string(self, what: str) -> str:
        size = self.varint(what)
        start = self.pos
        end = start + size
        if size < 0 or end > len(self.data):
            raise ValueError(f"{what}: a string of {size} bytes past the message's end")
        self.pos = end
        try:
            return self.data[start:end].decode()
        except UnicodeDecodeError as exc:
            raise ValueError(f"{what}: not UTF-8 ({exc.reason})") from None

    def numbers(self, n: int, what: str) -> list[int]:
        """``n`` varints from the position, decoded at once."""
        if self.ends is None:
            self.ends = np.flatnonzero(self.buf < 0x80)
        ends = self.ends
        start = self.pos
        k = int(np.searchsorted(ends, start))
        if k + n > len(ends):
            raise ValueError(f"{what}: the message ends inside its {n} numbers")
        last = int(ends[k + n - 1])
        width = last + 1 - start
        raw = self.buf[start:last + 1]
        if width == n:  # every number one byte (the common case of small ints)
            u = raw.astype(np.int64)
            values = (u >> 1) ^ -(u & 1)
        else:
            stops = ends[k:k + n] + 1 - start  # each number's end, relative to start
            firsts = np.empty(n, dtype=np.int64)
            firsts[0] = 0
            firsts[1:] = stops[:-1]
            lengths = stops - firsts
            if int(lengths.max()) > 10:
                raise ValueError(f"{what}: a number longer than 10 bytes")
            if (raw[stops[lengths == 10] - 1] > 1).any():  # the tenth byte holds bit 63 only
                raise ValueError(f"{what}: a number beyond 64 bits")
            shift = np.arange(width, dtype=np.uint64) - np.repeat(firsts, lengths).astype(np.uint64)
            parts = (raw & 0x7F).astype(np.uint64) << (shift * _SEVEN)
            u = np.add.reduceat(parts, firsts)
            values = ((u >> _ONE) ^ (np.uint64(0) - (u & _ONE))).view(np.int64)
        self.pos = last + 1
        if self.bounds is not None:
            low, high = int(values.min()), int(values.max())
            had = self.bounds.get(what)
            self.bounds[what] = (low, high) if had is None else (min(had[0], low), max(had[1], high))
        out: list[int] = values.tolist()
        return out

    def strings(self, n: int, what: str) -> list[str]:
        """``n`` strings from the position. Strings under 64 bytes (one byte of length) are cut in
        one loop without calls from the message read as Latin-1 (a character per byte), which is
        their text when the bytes are ASCII; otherwise, read again one by one as UTF-8."""
        data = self.data
        start = i = self.pos
        text = self.text
        if text is None:
            text = self.text = data.decode("latin-1")
        out: list[str] = []
        append = out.append
        try:
            for _ in range(n):
                b = data[i]
                if b >= 0x80 or b & 1:  # a longer string, or a negative size
                    break
                j = i + 1 + (b >> 1)
                append(text[i + 1:j])
                i = j
            else:
                if i <= len(data) and data[start:i].isascii():
                    self.pos = i
                    return out
        except IndexError:
            raise ValueError(f"{what}: the message ends inside its strings") from None
        self.pos = start
        return [self.string(what) for _ in range(n)]


Step = Callable[[Message], Any]


def blocks(msg: Message, what: str) -> Iterator[int]:
    """The item counts of an array's or map's blocks, read as they come."""
    while True:
        n = msg.varint(what)
        if n == 0:
            return
        if n < 0:  # a block with its size in bytes (which a reader may use to skip it)
            n = -n
            size = msg.varint(what)
            if size < 0:
                raise ValueError(f"{what}: a block of negative size")
        yield n


def _plain(schema: Any) -> Any:
    """``{"type": "long"}`` (with or without a logical type, read as its underlying number) as
    ``"long"``; any other schema as it is."""
    if isinstance(schema, dict) and schema.get("type") in _PRIMITIVES and set(schema) <= {"type", "logicalType"}:
        return schema["type"]
    return schema


def _step(schema: Any, what: str) -> Step | None:
    schema = _plain(schema)
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "record":
            fields = [(f["name"], _step(f["type"], f"{what}.{f['name']}" if what else f["name"]))
                      for f in schema["fields"]]
            if any(s is None for _, s in fields):
                return None
            steps: list[tuple[str, Step]] = [(name, s) for name, s in fields if s is not None]

            def record(msg: Message) -> dict[str, Any]:
                return {name: s(msg) for name, s in steps}
            return record
        if kind == "array":
            return _array(schema["items"], what)
        if kind == "map":
            return _map(schema["values"], what)
        return None
    if isinstance(schema, list):
        if len(schema) == 2 and schema[0] == "null" and _plain(schema[1]) in _PRIMITIVES:
            inner = _step(schema[1], what)
            assert inner is not None

            def optional(msg: Message) -> Any:
                branch = msg.varint(what)
                if branch == 0:
                    return None
                if branch != 1:
                    raise ValueError(f"{what}: union branch {branch} of 2")
                return inner(msg)
            return optional
        return None
    if schema in _NUMBERS:
        return lambda msg: msg.varint(what)
    if schema == "string":
        return lambda msg: msg.string(what)
    return None


def _array(items: Any, what: str) -> Step | None:
    items = _plain(items)
    if items in _NUMBERS:
        def numbers(msg: Message) -> list[int]:
            out: list[int] = []
            for n in blocks(msg, what):
                if out:
                    out.extend(msg.numbers(n, what))
                else:
                    out = msg.numbers(n, what)
            return out
        return numbers
    if items == "string":
        def strings(msg: Message) -> list[str]:
            out: list[str] = []
            for n in blocks(msg, what):
                out.extend(msg.strings(n, what))
            return out
        return strings
    return None  # an array of records is read faster by fastavro than item by item here


def _map(values: Any, what: str) -> Step | None:
    if _plain(values) not in _PRIMITIVES:
        return None
    value = _step(values, what)
    assert value is not None

    def mapping(msg: Message) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for n in blocks(msg, what):
            for _ in range(n):
                key = msg.string(what)
                out[key] = value(msg)
        return out
    return mapping


class Reader(Protocol):
    def __call__(self, data: bytes, offset: int, bounds: dict[str, tuple[int, int]] | None = None) -> dict[str, Any]:
        ...


def compile_reader(schema: Any) -> Reader | None:
    """A reader of a record of ``schema`` (parsed, logical types stripped) from ``data[offset:]``,
    or None when the schema has a shape this module does not read.

    ``bounds``, when given, gets the smallest and largest value of every array of numbers that is
    not empty, by its path (``"columns.ts"``): the checks of a batch need them, and they cost
    little while the column is an array."""
    if not (isinstance(schema, dict) and schema.get("type") == "record"):
        return None
    step = _step(schema, "")
    if step is None:
        return None
    root = step

    def read(data: bytes, offset: int, bounds: dict[str, tuple[int, int]] | None = None) -> dict[str, Any]:
        msg = Message(data, offset, bounds)
        out: dict[str, Any] = root(msg)
        if msg.pos != len(data):
            raise ValueError(f"{len(data) - msg.pos} bytes after the record's end")
        return out
    return read


# ---------------------------------------------------------------------------------------- writing

class Unsupported(Exception):
    """A value this writer does not encode (a type other than the schema's plain one, a number
    past 64 bits): the caller encodes the record with fastavro, which encodes it or says why not."""


_SHORT = [bytes([n << 1]) for n in range(64)]  # the one-byte length of a string under 64 bytes
_LIMITS = np.array([1 << (7 * k) for k in range(1, 10)], dtype=np.uint64)  # the least number of k + 1 bytes


def _zz(n: int) -> bytes:
    """One Avro int or long."""
    if type(n) is not int or not -(1 << 63) <= n < (1 << 63):
        raise Unsupported
    u = (n << 1) ^ (n >> 63)
    if u < 0x80:
        return bytes((u,))
    out = bytearray()
    while u >= 0x80:
        out.append((u & 0x7F) | 0x80)
        u >>= 7
    out.append(u)
    return bytes(out)


def _numbers_bytes(values: list[int]) -> bytes:
    """The varints of ``values``, encoded at once: a row of up to ten 7-bit groups per number, the
    groups past each number's size masked out."""
    try:
        a = np.frombuffer(array("q", values), dtype=np.int64)
    except (TypeError, OverflowError):  # a float, a str, None, or a number past 64 bits
        raise Unsupported from None
    u = ((a << 1) ^ (a >> 63)).view(np.uint64)
    size = np.searchsorted(_LIMITS, u, side="right") + 1  # bytes per number
    widest = int(size.max())
    if widest == 1:
        return u.astype(np.uint8).tobytes()
    k = np.arange(widest)
    groups = (u[:, None] >> (k * 7).astype(np.uint64)) & np.uint64(0x7F)
    groups |= (k < (size - 1)[:, None]).astype(np.uint64) << np.uint64(7)  # more bytes follow
    return groups.astype(np.uint8)[k < size[:, None]].tobytes()


def _text(s: Any) -> bytes:
    if type(s) is not str:
        raise Unsupported
    try:
        b = s.encode()
    except UnicodeEncodeError:
        raise Unsupported from None
    return (_SHORT[len(b)] if len(b) < 64 else _zz(len(b))) + b


def _texts(values: list[Any]) -> bytes:
    """The strings of an array: when all are ASCII and under 64 characters (one byte of length),
    laid out at once: each length byte, then its text, from the joined text."""
    try:
        joined = "".join(values)
        lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    except TypeError:
        raise Unsupported from None
    if not joined.isascii() or int(lengths.max()) >= 64:
        return b"".join(map(_text, values))
    out = np.empty(len(values) + len(joined), dtype=np.uint8)
    heads = np.cumsum(lengths + 1) - (lengths + 1)
    out[heads] = (lengths << 1).astype(np.uint8)
    body = np.ones(len(out), dtype=bool)
    body[heads] = False
    out[body] = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
    return out.tobytes()


Put = Callable[[Any, list[bytes]], None]


def _put(schema: Any) -> Put | None:
    schema = _plain(schema)
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "record":
            fields = [(f["name"], _put(f["type"])) for f in schema["fields"]]
            if any(p is None for _, p in fields):
                return None
            puts: list[tuple[str, Put]] = [(name, p) for name, p in fields if p is not None]

            def record(value: Any, out: list[bytes]) -> None:
                if type(value) is not dict:
                    raise Unsupported
                for name, p in puts:
                    if name not in value:
                        raise Unsupported  # fastavro fills in the default, or says it is missing
                    p(value[name], out)
            return record
        if kind == "array":
            items = _plain(schema["items"])
            if items in _NUMBERS:
                def numbers(value: Any, out: list[bytes]) -> None:
                    if type(value) is not list:
                        raise Unsupported
                    if value:
                        out += (_zz(len(value)), _numbers_bytes(value))
                    out.append(b"\x00")
                return numbers
            if items == "string":
                def strings(value: Any, out: list[bytes]) -> None:
                    if type(value) is not list:
                        raise Unsupported
                    if value:
                        out += (_zz(len(value)), _texts(value))
                    out.append(b"\x00")
                return strings
            return None
        if kind == "map":
            if _plain(schema["values"]) not in _PRIMITIVES:
                return None
            value_put = _put(schema["values"])
            assert value_put is not None

            def mapping(value: Any, out: list[bytes]) -> None:
                if type(value) is not dict:
                    raise Unsupported
                if value:
                    out.append(_zz(len(value)))
                    for k, v in value.items():
                        out.append(_text(k))
                        value_put(v, out)
                out.append(b"\x00")
            return mapping
        return None
    if isinstance(schema, list):
        if len(schema) == 2 and schema[0] == "null" and _plain(schema[1]) in _PRIMITIVES:
            inner = _put(schema[1])
            assert inner is not None

            def optional(value: Any, out: list[bytes]) -> None:
                if value is None:
                    out.append(b"\x00")
                else:
                    out.append(b"\x02")
                    inner(value, out)
            return optional
        return None
    if schema in _NUMBERS:
        return lambda value, out: out.append(_zz(value))
    if schema == "string":
        return lambda value, out: out.append(_text(value))
    return None


def _first_numbers(schema: Any, path: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """The path of the first array of numbers in a record ``schema`` (depth first)."""
    schema = _plain(schema)
    if not isinstance(schema, dict):
        return None
    if schema.get("type") == "array" and _plain(schema["items"]) in _NUMBERS:
        return path
    for f in schema.get("fields", ()) if schema.get("type") == "record" else ():
        found = _first_numbers(f["type"], (*path, f["name"]))
        if found is not None:
            return found
    return None


def compile_writer(schema: Any) -> Callable[[Any], bytes] | None:
    """A writer of a record of ``schema`` (parsed, logical types stripped): the bytes fastavro's
    ``schemaless_writer`` writes, arrays of numbers encoded at once; it raises :class:`Unsupported`
    for a value it leaves to fastavro, and for a record whose first array of numbers is shorter
    than :data:`WORTH_ITEMS`. None when the schema has a shape this module does not write, or no
    array of numbers."""
    if not (isinstance(schema, dict) and schema.get("type") == "record"):
        return None
    put = _put(schema)
    probe = _first_numbers(schema)
    if put is None or not probe:
        return None
    root = put

    def write(record: Any) -> bytes:
        try:
            values = record
            for name in probe:
                values = values[name]
            if len(values) < WORTH_ITEMS:
                raise Unsupported
        except (KeyError, TypeError):
            raise Unsupported from None
        out: list[bytes] = []
        root(record, out)
        return b"".join(out)
    return write
