"""Keyed pseudonyms of user and device names for reports that leave the organisation."""

from __future__ import annotations

import hashlib
import hmac
import re

from lictel.errors import ConfigError
from lictel.identity import normalize_device, normalize_user


class Pseudonyms:
    """Keyed SHA-256 (HMAC) pseudonyms of user and device names: stable for one key, not reversible
    without it. A name is normalised first, as lictel compares names (``CORP\\Ann``, ``ann@corp``
    and ``ann`` are one user; hosts without case), so one person has one pseudonym in a report."""

    def __init__(self, key: str) -> None:
        if not key:
            raise ConfigError("--pseudonymize needs a key: set LICTEL_PSEUDONYM_KEY (keep it secret; the same "
                              "key gives the same pseudonyms in every report)")
        self._secret = key.encode()

    def _hash(self, kind: str, name: str) -> str:
        return "p-" + hmac.new(self._secret, f"{kind}:{name}".encode(), hashlib.sha256).hexdigest()[:16]

    def user(self, name: str) -> str:
        return self._hash("u", normalize_user(name))

    def device(self, name: str) -> str:
        return self._hash("d", normalize_device(name))

    def holder(self, user_at_host: str) -> str:
        user, _, host = user_at_host.rpartition("@")
        return f"{self.user(user)}@{self.device(host)}"


def pseudonymizer(key: str) -> Pseudonyms:
    return Pseudonyms(key)


def reason_code(reason: str) -> str:
    """What a pseudonymised report keeps of a denial reason: the server's error code, never its
    text (which may name users and hosts)."""
    codes = re.findall(r"\((-?\d+(?:,-?\d+)?)\)", reason)
    return f"error {codes[-1]}" if codes else "(reason withheld)"


