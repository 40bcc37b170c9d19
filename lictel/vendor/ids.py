"""The vendor's scrambled identities, and finding ours among them, locally.

The license server scrambles every user and device name before it uploads: SHA-256 of the clear
text, the first 16 bytes of the digest, base64 (``scramble``). What it does not document is the
exact clear text: the name's case, ``DOMAIN\\user`` or ``user@domain`` or the bare name, a host's
short name or its FQDN, and the text encoding (UTF-8, or UTF-16LE as Windows keeps strings). So
matching tries every plausible *form* of each name we have seen (``forms``), in both encodings,
and says which form matched: once one form matches most IDs, that is what the server hashes.

Nothing is sent anywhere: hashing and matching run on this machine, over names already in the
warehouse. Scrambled IDs are compared as their 16 bytes, so base64 and hex spellings both match.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

ENCODINGS = ("utf-8", "utf-16le")
USER, DEVICE = "user", "device"


def digest(text: str, encoding: str = "utf-8") -> bytes:
    """The 16 bytes the vendor keeps of a name: the first half of its SHA-256."""
    return hashlib.sha256(text.encode(encoding)).digest()[:16]


def scramble(text: str, encoding: str = "utf-8") -> str:
    """The vendor's form of a name: base64 of the first 16 bytes of SHA-256 of the clear text."""
    return base64.b64encode(digest(text, encoding)).decode("ascii")


_HEX = re.compile(r"^[0-9A-Fa-f]{32}$")


def id_bytes(scrambled: str) -> bytes | None:
    """A scrambled ID as its 16 bytes: base64 (24 characters, ``==`` at the end) or 32 hex digits;
    None for anything else (an ID that was never a scrambled name, e.g. a MAC address)."""
    text = scrambled.strip()
    if _HEX.match(text):
        return bytes.fromhex(text)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 16 else None


def forms(name: str, kind: str) -> dict[str, str]:
    """The clear texts a server might hash for one of our names: {form label: text}. Labels say how
    the text was made from the name as the log wrote it."""
    name = name.strip()
    out: dict[str, str] = {}

    def add(label: str, text: str) -> None:
        if text and text not in out.values():
            out[label] = text

    add("as written", name)
    add("lower case", name.lower())
    add("upper case", name.upper())
    if kind == USER:
        domain, bare = "", name
        if "\\" in name:
            domain, bare = name.rsplit("\\", 1)
        elif "@" in name:
            bare, domain = name.split("@", 1)
        if domain:
            add("bare name", bare)
            add("bare name, lower case", bare.lower())
            add("bare name, upper case", bare.upper())
            netbios = domain.split(".", 1)[0]
            if "\\" in name:
                add("user@domain", f"{bare}@{domain}")
                add("user@domain, lower case", f"{bare}@{domain}".lower())
            else:
                add("DOMAIN\\user", f"{netbios.upper()}\\{bare}")
                add("domain\\user, lower case", f"{netbios}\\{bare}".lower())
    else:
        short = name.split(".", 1)[0]
        if short != name:
            add("short name", short)
            add("short name, lower case", short.lower())
            add("short name, upper case", short.upper())
    return out


@dataclass(frozen=True)
class Match:
    scrambled: str
    kind: str
    name: str
    form: str
    encoding: str


class Dictionary:
    """Every form of our names, in every encoding, by its 16 bytes."""

    def __init__(self) -> None:
        self._by: dict[bytes, tuple[str, str, str, str]] = {}
        self.names = 0

    def add(self, names: Iterable[str], kind: str) -> None:
        by = self._by
        for name in names:
            self.names += 1
            for label, text in forms(name, kind).items():
                for enc in ENCODINGS:
                    # The first form wins a collision: "as written" before derived forms.
                    by.setdefault(digest(text, enc), (kind, name, label, enc))

    def match(self, scrambled: str) -> Match | None:
        raw = id_bytes(scrambled)
        hit = self._by.get(raw) if raw is not None else None
        return Match(scrambled.strip(), *hit) if hit else None

    def __len__(self) -> int:
        return len(self._by)
