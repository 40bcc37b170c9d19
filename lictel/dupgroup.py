"""FlexNet ``DUP_GROUP`` rules: which checkouts of a feature share one license (DESIGN.md).

A feature line may say ``DUP_GROUP=NONE|SITE|`` a combination of ``U`` (user), ``H`` (host), ``D``
(display) and ``V`` (vendor-defined). Checkouts whose projection on the rule's fields is equal form
a group and are *charged* as one license of the group's largest count. What this module decides:

- ``D`` is folded into ``H``: debug logs carry no display, and a display belongs to a host.
- A rule with ``V`` (vendor-defined) is charged as ``NONE``: the vendor-defined string is not in
  any log, so no two checkouts are known to share it. :func:`note` says so wherever it is shown.
- The daemon (vendor) is always part of the group: two vendors' features never share a license.
- Which rule a feature has, most specific first: ``--dup-group FEATURE=RULE`` /
  ``LICTEL_DUP_GROUP`` for that feature, then the ``DUP_GROUP`` of the feature's lines in the
  imported license files of its organisation, then ``*=RULE``, then ``NONE``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from lictel.errors import ConfigError

NONE = "NONE"
SITE = "SITE"
_SEP = "\x1f"

# A group key from a checkout's (vendor, user, host).
GroupKey = Callable[[str, str, str], str]


def normalize(rule: str) -> str:
    """The rule as written, upper-cased and checked; raises ``ValueError`` with what is allowed."""
    text = rule.strip().upper()
    if text in ("", NONE):
        return NONE
    if text == SITE:
        return SITE
    if not text or any(ch not in "UHDV" for ch in text) or len(set(text)) != len(text):
        raise ValueError(f"DUP_GROUP {rule!r} is not NONE, SITE or a combination of U, H, D and V "
                         "(each at most once, e.g. UH or UHD)")
    return "".join(ch for ch in "UHDV" if ch in text)


def fields(rule: str) -> str:
    """What the rule groups by: ``""`` (every checkout alone, as NONE), ``"SITE"``, ``"U"``, ``"H"``
    or ``"UH"``."""
    if rule == SITE:
        return SITE
    if rule == NONE or "V" in rule:
        return ""
    return ("U" if "U" in rule else "") + ("H" if "H" in rule or "D" in rule else "")


def note(rule: str) -> str:
    """A reader's explanation of how the rule is charged, empty when it is charged as written."""
    if "V" in rule and rule != NONE:
        return f"{rule}: vendor-defined grouping (V) is not in the logs, charged as NONE"
    if "D" in rule:
        return f"{rule}: display (D) is not in the logs, grouped by host"
    return ""


def group_key(rule: str) -> GroupKey | None:
    """The function from a checkout's ``(vendor, user, host)`` to its group, or ``None`` when every
    checkout is its own group (charged = checkouts). A group by user and host is keyed as
    :func:`by_identity` says."""
    by = fields(rule)
    if by == "":
        return None
    if by == SITE:
        return lambda vendor, user, host: vendor
    if by == "U":
        return lambda vendor, user, host: vendor + _SEP + user
    if by == "H":
        return lambda vendor, user, host: vendor + _SEP + host
    return lambda vendor, user, host: vendor + _SEP + user + _SEP + host + _SEP


def by_identity(rule: str) -> bool:
    """Whether ``rule`` groups by user and host, keyed as the engine's identity of a checkout without
    a handle (``vendor␟user␟host␟``): the engine, which has built that identity already, then uses
    it as the group key instead of building another string."""
    return fields(rule) == "UH"


def parse(text: str, what: str = "LICTEL_DUP_GROUP") -> dict[str, str]:
    """``FEATURE=RULE[,FEATURE=RULE...]`` (``*`` for every feature) into a mapping."""
    out: dict[str, str] = {}
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        feature, sep, rule = item.partition("=")
        if not sep or not feature.strip():
            raise ConfigError(f"{what}: {item!r} is not FEATURE=RULE (e.g. '*=UH' or 'MATLAB=UHD')")
        try:
            out[feature.strip()] = normalize(rule)
        except ValueError as exc:
            raise ConfigError(f"{what}: {exc}") from None
    return out


def render(rules: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in rules.items())


def from_license_lines(lines: Iterable[tuple[str, str, str]]) -> dict[str, str]:
    """``(org, feature, dup_group)`` of imported license-file lines into ``ORG/FEATURE=RULE``
    entries. A feature whose lines disagree takes the rule most of its lines carry (ties: the one
    that sorts first). Lines without ``DUP_GROUP`` say nothing."""
    votes: dict[tuple[str, str], Counter[str]] = {}
    for org, feature, rule in lines:
        if not rule.strip():
            continue
        try:
            votes.setdefault((org, feature), Counter())[normalize(rule)] += 1
        except ValueError:
            continue  # the import already kept the text; an unreadable rule is not a rule
    return {f"{org}/{feature}": min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0]
            for (org, feature), c in sorted(votes.items())}


class DupRules:
    """Which rule each ``(org, feature)`` has (module docstring for the order).

    ``config``: ``FEATURE=RULE`` from ``--dup-group`` / ``LICTEL_DUP_GROUP``; ``licenses``:
    ``ORG/FEATURE=RULE`` from imported license files.
    """

    __slots__ = ("_cache", "config", "licenses")

    def __init__(self, config: Mapping[str, str] | None = None, licenses: Mapping[str, str] | None = None) -> None:
        self.config = dict(config or {})
        self.licenses = dict(licenses or {})
        self._cache: dict[tuple[str, str], str] = {}

    @classmethod
    def from_text(cls, config: str = "", licenses: str = "") -> DupRules:
        return cls(parse(config), parse(licenses, "license-file rules"))

    def rule(self, org: str, feature: str) -> str:
        key = (org, feature)
        got = self._cache.get(key)
        if got is None:
            got = self.config.get(feature) or self.licenses.get(f"{org}/{feature}") or self.config.get("*") or NONE
            self._cache[key] = got
        return got

    def origin(self, org: str, feature: str) -> str:
        """Where the rule of a feature comes from: ``configuration``, ``license file`` or ``default``."""
        if feature in self.config:
            return "configuration"
        if f"{org}/{feature}" in self.licenses:
            return "license file"
        return "configuration" if "*" in self.config else "default"

    def __bool__(self) -> bool:
        return bool(self.config or self.licenses)
