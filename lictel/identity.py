"""How user names compare, as the vendor compares them by default (issue 5, user/device licensing).

A user name compares case-insensitively, with any domain part removed: ``CORP\\Alice``,
``alice@corp.example`` and ``alice`` are one user. Device (host) names compare case-insensitively.
"""

from __future__ import annotations

#: :func:`normalize_user` of a column ``user`` and :func:`normalize_device` of a column ``host``, in
#: ClickHouse SQL (migrations and reports use these; keep the two forms in step).
SQL_USER = "lower(trimBoth(splitByChar('@', arrayElement(splitByChar('\\\\', trimBoth(user)), -1))[1]))"
SQL_DEVICE = "lower(trimBoth(host))"


def normalize_user(name: str) -> str:
    """``DOMAIN\\user`` and ``user@domain`` → ``user``, lower-cased and stripped."""
    name = name.strip()
    if "\\" in name:
        name = name.rsplit("\\", 1)[1]
    if "@" in name:
        name = name.split("@", 1)[0]
    return name.strip().lower()


def normalize_device(name: str) -> str:
    """Host names compare case-insensitively."""
    return name.strip().lower()
