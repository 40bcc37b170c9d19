"""Event time: integer microseconds since the Unix epoch, always UTC.

Everything inside lictel carries time as ``int`` microseconds; conversion to ``datetime`` happens
only at the edges (parsing input, printing output). Naive datetimes are never accepted.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

US = 1_000_000
MINUTE_US = 60 * US
HOUR_US = 3600 * US
DAY_US = 86400 * US
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


EPOCH_DATE = dt.date(1970, 1, 1)


def date_us(day: dt.date) -> int:
    """The start of UTC day ``day`` in microseconds."""
    return (day - EPOCH_DATE).days * DAY_US


def us_date(ts_us: int) -> dt.date:
    """The UTC day that holds ``ts_us``."""
    return EPOCH_DATE + dt.timedelta(days=ts_us // DAY_US)


def floor_minute(ts_us: int) -> int:
    """Start of the minute that contains ``ts_us``."""
    return ts_us - ts_us % MINUTE_US


def parse_ts(text: str) -> int:
    """Parse an ISO-8601 timestamp that names its offset (``Z`` or ``+HH:MM``) to microseconds.

    Raises ``ValueError`` for text without an offset: event time must never be ambiguous.
    """
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no UTC offset (write it like 2026-03-02T08:15:03Z)")
    return to_us(value)


def to_us(value: dt.datetime) -> int:
    """Aware datetime to microseconds since the epoch."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: event time must carry a time zone")
    delta = value - _EPOCH
    return (delta.days * 86400 + delta.seconds) * US + delta.microseconds


def from_us(ts_us: int) -> dt.datetime:
    """Microseconds since the epoch to an aware UTC datetime."""
    return _EPOCH + dt.timedelta(microseconds=ts_us)


def iso_us(ts_us: int) -> str:
    """``2026-03-02T08:15:03.250000Z`` (canonical event form)."""
    return from_us(ts_us).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_s(ts_us: int) -> str:
    """``2026-03-02T10:01:00Z`` (period starts in exports)."""
    return from_us(ts_us).strftime("%Y-%m-%dT%H:%M:%SZ")


def zone(name: str) -> ZoneInfo:
    """An IANA zone by name; ``ValueError`` naming it when it is not one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone (e.g. UTC, Europe/Berlin, America/New_York)") from None


def iso_in(ts_us: int, tz: str = "UTC") -> str:
    """An instant as local time of ``tz`` with its offset (``2026-03-02T10:00:00+01:00``); UTC keeps
    the ``Z`` form of :func:`iso_s`."""
    if tz == "UTC":
        return iso_s(ts_us)
    return from_us(ts_us).astimezone(ZoneInfo(tz)).isoformat(timespec="seconds")


def local_midnight_us(day: dt.date, tz: str = "UTC") -> int:
    """The instant ``day`` begins in ``tz``."""
    if tz == "UTC":
        return date_us(day)
    return to_us(dt.datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz)))


def local_date(ts_us: int, tz: str = "UTC") -> dt.date:
    """The day of ``tz`` that holds ``ts_us``."""
    if tz == "UTC":
        return us_date(ts_us)
    return from_us(ts_us).astimezone(ZoneInfo(tz)).date()


WHEN_HINT = "write 2026-03-02 or 2026-03-02T09:00:00Z"


def parse_when(text: str, tz: str = "UTC") -> int:
    """A date (midnight of ``tz``) or an ISO-8601 instant with its offset, in µs; ``ValueError``
    says what is wrong (add :data:`WHEN_HINT`)."""
    return local_midnight_us(dt.date.fromisoformat(text), tz) if len(text) == 10 else parse_ts(text)
