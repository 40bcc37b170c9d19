"""Time zone names as license servers write them, mapped to IANA zones.

Windows servers print the zone's display name of the moment ("Eastern Daylight Time", "Romance
Standard Time"); the mapping from Windows zone ids to IANA names is CLDR's ``windowsZones``
table, as maintained in ``tzlocal``. A daylight name is looked up by its standard id. Localised
names ("Hora de verano romance") and abbreviations ("EST": several zones share it) are not
guessed: the caller asks for ``--tz``.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_DAYLIGHT = " Daylight Time"
_STANDARD = " Standard Time"


def iana_zone(name: str) -> str | None:
    """The IANA zone a Windows zone name (standard or daylight form) or an IANA name stands for."""
    from tzlocal.windows_tz import win_tz

    text = " ".join(name.split())
    if not text:
        return None
    if text in win_tz:
        return str(win_tz[text])
    if text.endswith(_DAYLIGHT):
        std = text[: -len(_DAYLIGHT)] + _STANDARD
        if std in win_tz:
            return str(win_tz[std])
    if "/" in text:
        try:
            ZoneInfo(text)
        except (ZoneInfoNotFoundError, ValueError):
            return None
        return text
    return None
