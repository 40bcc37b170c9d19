"""Follow a growing FlexNet debug log: ``lictel produce flexnet LOG --follow``.

Invariants
----------
- Only complete lines (ending in a newline) are read; a half-written last line waits.
- The position (file identity, byte offset, line number, parser state) is checkpointed to
  ``<data_dir>/checkpoints/`` only after the producer has flushed everything read before it, so a
  follower killed at any moment resumes with no gap. Lines read after the last checkpoint are read
  again after a restart with the same event ids, which the stream recognises as duplicates.
- Rotation (the file renamed and a new one created): the old file is read to its end through the
  handle already open, then the new file from its start. Truncation in place (copytruncate): the
  file is read again from its start. Each new generation of the file gets its own event ids
  (``CITRIX.log#1``, ``#2``, ...), so a new line 1 never collides with the old one. A rotation that
  happened while the follower was down is found by looking for the old file's inode beside it.
- While lines wait for their first date, the checkpoint does not move past them. A block that may
  repeat earlier lines is decided at the end of each read (``FlexnetParser.settle``), so no line
  waits for the next one: a copy appended in pieces can leave a seam of up to 9 lines counted twice.
- Heartbeats: while catching up, stamped with the newest event time read (as in a backfill); at the
  end of the file, with the wall clock, so quiet minutes still become final.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from lictel.errors import InputError
from lictel.events import Event
from producers.base import EventProducer
from producers.flexnet import FlexnetParser, Skipped

log = logging.getLogger("lictel.flexnet")


@dataclass
class Position:
    inode: int
    offset: int
    lineno: int
    generation: int
    parser: dict[str, object]


def checkpoint_path(data_dir: Path, server: str, log_path: Path) -> Path:
    digest = hashlib.sha1(str(log_path.resolve()).encode()).hexdigest()[:12]
    return data_dir / "checkpoints" / f"flexnet-{server}-{digest}.json"


class Follower:
    """Tails one log file into a producer until ``stop`` is set."""

    def __init__(self, producer: EventProducer, parser: FlexnetParser, path: Path, checkpoint: Path,
                 poll_s: float = 0.2, checkpoint_s: float = 1.0,
                 on_lines: Callable[[int], None] | None = None) -> None:
        self.producer = producer
        self.parser = parser
        self.path = path
        self.checkpoint = checkpoint
        self.poll_s = poll_s
        self.checkpoint_s = checkpoint_s
        self.on_lines = on_lines
        self.pos: Position | None = None
        self._fh: BinaryIO | None = None
        self._partial = b""
        self._dirty = False
        self._saved_at = time.monotonic()
        self._hb_at = time.monotonic()

    # ------------------------------------------------------------------ positions

    def _name(self) -> str:
        assert self.pos is not None
        return self.path.name if self.pos.generation == 0 else f"{self.path.name}#{self.pos.generation}"

    def _load(self) -> Position | None:
        try:
            data = json.loads(self.checkpoint.read_text())
            return Position(**data)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise InputError(f"checkpoint is unreadable ({exc}); delete it to start over",
                             source=str(self.checkpoint)) from None

    def _save(self) -> None:
        assert self.pos is not None
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.pos)))
        os.replace(tmp, self.checkpoint)
        self._dirty = False
        self._saved_at = time.monotonic()

    def _open(self, path: Path, offset: int) -> None:
        if self._fh is not None:
            self._fh.close()
        self._fh = open(path, "rb")  # noqa: SIM115 - kept open across polls on purpose
        self._fh.seek(offset)
        self._partial = b""

    def _start(self) -> None:
        saved = self._load()
        current = os.stat(self.path)
        if saved is None:
            self.pos = Position(current.st_ino, 0, 0, 0, {})
            self._open(self.path, 0)
            return
        self.pos = saved
        self.parser.restore(saved.parser)
        if saved.inode == current.st_ino:
            if current.st_size < saved.offset:  # truncated while we were away
                self._new_generation(current.st_ino)
            else:
                self._remember(self.path, saved.offset)
                self._open(self.path, saved.offset)
            return
        # Rotated while we were away: finish the old file first, if it is still beside the log.
        for sibling in sorted(self.path.parent.glob(self.path.name + "*")):
            if sibling != self.path and os.stat(sibling).st_ino == saved.inode:
                log.info("resuming %s in its rotated file %s", self.path, sibling)
                self._open(sibling, saved.offset)
                return
        log.warning("%s rotated while the follower was down and the old file is gone; "
                    "lines after offset %d of it are lost", self.path, saved.offset)
        self._new_generation(current.st_ino)

    def _remember(self, path: Path, offset: int) -> None:
        """What was sent before the restart, read again (not sent) so that a copy of it pasted into
        the log later still counts once."""
        with open(path, "rb") as fh:
            lines = fh.read(offset).decode("utf-8", "replace").splitlines()
        self.parser.remember(lines, self._name())

    def _new_generation(self, inode: int) -> None:
        assert self.pos is not None
        self.pos = Position(inode, 0, 0, self.pos.generation + 1, self.parser.to_state())
        self._open(self.path, 0)

    # ------------------------------------------------------------------ reading

    async def _read_available(self) -> int:
        """Read and send every complete line now in the open file; return how many."""
        assert self._fh is not None and self.pos is not None
        data = self._fh.read()
        if not data:
            return 0
        data = self._partial + data
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        complete = data[:cut]
        if not complete:
            return 0
        lines = complete.decode("utf-8", "replace").splitlines()
        first = self.pos.lineno + 1
        for item in itertools.chain(self.parser.parse(lines, self._name(), first_line=first), self.parser.settle()):
            if isinstance(item, Event):
                await self.producer.send(item)
            elif isinstance(item, Skipped) and item.dead:
                await self.producer.dead_letter(InputError(item.reason, source=str(self.path), line=item.line,
                                                           raw=item.raw))
        if not self.parser.waiting:
            self.pos.offset += len(complete)
            self.pos.lineno += len(lines)
            self.pos.parser = self.parser.to_state()
            self._dirty = True
        if self.on_lines is not None:
            self.on_lines(len(lines))
        return len(lines)

    def _rotated_or_truncated(self) -> str | None:
        assert self.pos is not None and self._fh is not None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None  # between a rename and the new file's creation
        if st.st_ino != os.fstat(self._fh.fileno()).st_ino:
            return "rotated"
        if st.st_size < self._fh.tell():
            return "truncated"
        return None

    async def run(self, stop: asyncio.Event) -> None:
        self._start()
        try:
            while not stop.is_set():
                n = await self._read_available()
                change = self._rotated_or_truncated()
                if change is not None:
                    await self._read_available()  # what the old file still had
                    st = os.stat(self.path)
                    log.info("%s %s: reading the new file from its start", self.path, change)
                    self._new_generation(st.st_ino)
                    continue
                await self.producer.tick()
                if n == 0 and time.monotonic() - self._hb_at >= self.producer.settings.heartbeat_s:
                    # At the end of the file everything up to now is sent: the wall clock may mark it
                    # (never earlier than the newest event read, in case the server's clock is ahead).
                    self._hb_at = time.monotonic()
                    await self.producer.heartbeats(ts_override=max(int(time.time() * 1_000_000),
                                                                   self.producer.newest_ts() or 0))
                if self._dirty and time.monotonic() - self._saved_at >= self.checkpoint_s:
                    await self.producer.flush()
                    self._save()
                if n == 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.poll_s)
        finally:
            await self.producer.flush()
            if self._dirty:
                self._save()
            if self._fh is not None:
                self._fh.close()
