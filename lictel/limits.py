"""What a license event may carry: the limits of storage and of plausibility (docs/guarantees.md,
"Bad input").

Every way into lictel (the producers, and the stream worker and sink for events that other
producers wrote) checks an event with :func:`problem` before anything else sees it; an event that
fails is a dead letter with the reason, never a crash, an overflow or a silently wrong figure.

- Time: not before 1990-01-01, not more than ``max_ahead_us`` (default one day) after the wall
  clock, and (:class:`SourceClock`) not more than ``max_gap_us`` (default 366 days) from the
  previous event of the same source. One damaged date must not make the engine emit every minute
  between 1970 and now.
- ``count``: 1 to 1,000,000 licenses (a pool's sum must stay inside ClickHouse's UInt32 peak).
- ``seq``: 0 to 2^63 - 1 (ClickHouse UInt64, Avro long).
- Text fields: valid Unicode (no lone surrogates), no control characters (NUL, escape, ...), at most
  1,024 characters (``reason``: 4,096).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from lictel.timeutil import DAY_US, iso_s, to_us

if TYPE_CHECKING:
    from lictel.events import Event

MIN_TS = to_us(dt.datetime(1990, 1, 1, tzinfo=dt.UTC))
MAX_AHEAD_US = DAY_US
MAX_GAP_US = 366 * DAY_US
MAX_COUNT = 1_000_000
MAX_SEQ = 2**63 - 1
MAX_TEXT = 1024
MAX_REASON = 4096
_TEXT_FIELDS = ("event_id", "org", "server", "vendor", "feature", "user", "host", "handle", "source")
# C0 and C1 control characters, DEL; tab is tolerated in free text (reason) only.
CONTROL = frozenset({*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)})

_CONTROL_TABLE = dict.fromkeys(CONTROL)


def storable(text: str | None) -> str | None:
    """``text`` as valid UTF-8: a lone surrogate becomes its ``\\udXXX`` escape (for dead letters
    and messages, which must carry even what an event may not)."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def text_problem(value: str, limit: int = MAX_TEXT, free_text: bool = False) -> str | None:
    """Why a text value cannot be stored as it is, or ``None``."""
    if len(value) > limit:
        return f"longer than {limit:,} characters ({len(value):,})"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid Unicode (a lone surrogate such as \\ud800)"
    if value.translate(_CONTROL_TABLE) != value:
        bad = next(ch for ch in value if ord(ch) in CONTROL)
        if not (free_text and bad == "\t"):
            return f"contains the control character U+{ord(bad):04X}"
    return None


def problem(ev: Event, now_us: int, max_ahead_us: int = MAX_AHEAD_US) -> tuple[str, str] | None:
    """``(field, reason)`` when ``ev`` is outside what lictel can hold or believe, else ``None``."""
    return time_problem(ev.ts, now_us, max_ahead_us) or value_problem(ev)


def time_problem(ts: int, now_us: int, max_ahead_us: int = MAX_AHEAD_US) -> tuple[str, str] | None:
    """The time window of :func:`problem`."""
    if ts < MIN_TS:
        return "ts", f"{_when(ts)} is before 1990-01-01: not a plausible license event (a damaged date?)"
    if ts > now_us + max_ahead_us:
        return "ts", (f"{_when(ts)} is more than {max_ahead_us / DAY_US:g} day(s) after the wall clock "
                      f"({iso_s(now_us)}): a damaged date, or a clock far ahead")
    return None


def value_problem(ev: Event) -> tuple[str, str] | None:
    """The storage limits of :func:`problem` without the time window."""
    return values_problem(ev.count, ev.seq, (ev.event_id, ev.org, ev.server, ev.vendor, ev.feature, ev.user,
                                             ev.host, ev.handle or "", ev.source), ev.reason)


def columns_clean(cols: dict[str, list[Any]], now_us: int, max_ahead_us: int = MAX_AHEAD_US) -> bool:
    """Whether every event of a columnar batch (:meth:`lictel.serde.Serde.decode_event_columns`)
    passes :func:`problem`, checking each distinct text value once and each numeric column by its
    extremes. False says only that some event may not: check those event by event."""
    ts = cols["ts"]
    if not ts:
        return True
    bounds: dict[str, tuple[int, int]] = cols.get("bounds") or {}  # type: ignore[assignment]
    (ts_low, ts_high), (count_low, count_high), (seq_low, seq_high) = (
        bounds.get(f) or (min(cols[f]), max(cols[f])) for f in ("ts", "count", "seq"))
    if ts_low < MIN_TS or ts_high > now_us + max_ahead_us:
        return False
    if count_low < 1 or count_high > MAX_COUNT or seq_low < 0 or seq_high > MAX_SEQ:
        return False
    ids, strings = cols["event_id"], cols["strings"]
    # The strings include reasons, which may be longer and hold a tab: such a batch takes the slow path.
    return ("".join(ids).isprintable() and max(map(len, ids)) <= MAX_TEXT
            and "".join(strings).isprintable() and max(map(len, strings), default=0) <= MAX_TEXT)


def values_problem(count: int, seq: int, names: tuple[str, ...], reason: str | None) -> tuple[str, str] | None:
    """The storage limits of an event's values; ``names`` in the order of :data:`_TEXT_FIELDS`."""
    if not 1 <= count <= MAX_COUNT:
        return "count", f"{count} is not between 1 and {MAX_COUNT:,} licenses"
    if not 0 <= seq <= MAX_SEQ:
        return "seq", f"{seq} is not between 0 and 2^63 - 1"
    # The common case in one pass of C: every name printable (no control character, no lone
    # surrogate) and short. This runs per event at every way in; the field-by-field checks only run
    # when it fails.
    joined = "".join(names)
    if not (joined.isprintable() and len(joined) <= MAX_TEXT
            and (not reason or (reason.isprintable() and len(reason) <= MAX_REASON))):
        for name, value in zip(_TEXT_FIELDS, names, strict=True):
            if value:
                why = text_problem(value)
                if why:
                    return name, why
        if reason:
            why = text_problem(reason, MAX_REASON, free_text=True)
            if why:
                return "reason", why
    return None


def _when(ts: int) -> str:
    try:
        return iso_s(ts)
    except (OverflowError, ValueError):
        return f"{ts} µs"


class SourceClock:
    """The newest time seen per source, to refuse an event far from the rest of its source (a
    damaged year in a log of this year)."""

    def __init__(self, max_gap_us: int = MAX_GAP_US) -> None:
        self.max_gap_us = max_gap_us
        self._last: dict[str, int] = {}

    def problem(self, ev: Event) -> tuple[str, str] | None:
        last = self._last.get(ev.source)
        if last is not None and abs(ev.ts - last) > self.max_gap_us:
            days = abs(ev.ts - last) / DAY_US
            return "ts", (f"{_when(ev.ts)} is {days:,.0f} days from the previous event of {ev.source} "
                          f"({_when(last)}): a damaged date (more than {self.max_gap_us / DAY_US:g} days apart)")
        return None

    def accept(self, ev: Event) -> None:
        last = self._last.get(ev.source)
        if last is None or ev.ts > last:
            self._last[ev.source] = ev.ts
