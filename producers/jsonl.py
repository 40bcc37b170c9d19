"""Canonical LicenseEvent JSON Lines (DESIGN.md) onto the events topic.

Every line is validated; a bad one (malformed JSON, unknown action, missing field, bad timestamp)
is reported with its file and line, counted and sent to the dead-letter topic, and reading goes on.
Blank lines are skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from lictel.errors import InputError
from lictel.events import Event, event_from_line
from producers.base import EventProducer


def read_jsonl(path: Path, *, on_progress: Callable[[int], None] | None = None
               ) -> Iterator[Event | InputError]:
    """Yield an Event, or the InputError of a bad line, for every non-blank line of ``path``."""
    name = str(path)
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if on_progress is not None:
                on_progress(len(raw))
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8").strip()
            except UnicodeDecodeError as exc:
                yield InputError(f"not UTF-8 ({exc.reason} at byte {exc.start})", source=name,
                                 line=lineno, raw=raw[:500].decode("utf-8", "replace"))
                continue
            if not text:
                continue
            try:
                yield event_from_line(text, source=name, line=lineno)
            except InputError as err:
                yield err


async def produce_jsonl(producer: EventProducer, paths: list[Path],
                        on_progress: Callable[[int], None] | None = None) -> None:
    """Send every event of ``paths`` (in order); dead-letter the bad lines."""
    for path in paths:
        for item in read_jsonl(path, on_progress=on_progress):
            if isinstance(item, InputError):
                await producer.dead_letter(item)
            else:
                await producer.send(item)
