"""Alerts: rules evaluated on final minutes as the sink stores them, delivered by webhook.

A rules file (TOML, docs/alerts.md) names a webhook and rules of five kinds:

- ``utilisation``: licenses charged at or above ``percent`` of the count entitled that day, for
  ``minutes`` minutes in a row (estate level, per organisation and feature);
- ``denials``: ``count`` denials or more within an hour (estate, per feature);
- ``overdraft``: more licenses charged than entitled (the overdraft is in use);
- ``expiry``: an imported entitlement expires within ``days`` days;
- ``silent``: no event of a license server has arrived for ``minutes`` minutes (wall clock).

An alert fires once when its episode starts and sends a resolved message when it ends. Every
transition is kept in the ``alerts`` table with its delivery (attempts, error); on start the last
state of each episode is read back, so a restarted sink neither fires an open episode again nor
forgets to resolve it. Minutes a sink sees again (a worker re-emitting after a restart) are
skipped: each (organisation, feature) is evaluated once per minute, in order; a minute without a
row held nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
import tomllib
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lictel.errors import ConfigError
from lictel.timeutil import MINUTE_US, US, iso_s

log = logging.getLogger("lictel.alerts")
KINDS = ("utilisation", "denials", "overdraft", "expiry", "silent")
HOUR = 60


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str
    org: str = "*"
    feature: str = "*"
    percent: float = 90.0
    minutes: int = 15
    count: int = 10
    days: int = 30
    webhook: str | None = None

    def matches(self, org: str, feature: str) -> bool:
        return self.org in ("*", org) and self.feature in ("*", feature)


@dataclass(frozen=True)
class Webhook:
    url: str
    retries: int = 3
    retry_s: float = 2.0
    format: str = "text"  # text: {"text": ...} (Slack, Teams); json: the whole alert


@dataclass(frozen=True)
class Rules:
    rules: list[Rule]
    webhook: Webhook | None
    path: str = ""

    def hook(self, rule: Rule) -> Webhook | None:
        if rule.webhook:
            base = self.webhook or Webhook(rule.webhook)
            return Webhook(rule.webhook, base.retries, base.retry_s, base.format)
        return self.webhook


_RULE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str, "kind": str, "org": str, "feature": str, "percent": (int, float), "minutes": int, "count": int,
    "days": int, "webhook": str}
_NEEDS = {"utilisation": ("percent", "minutes"), "denials": ("count",), "overdraft": (), "expiry": ("days",),
          "silent": ("minutes",)}


def load(path: Path) -> Rules:
    """Read and check a rules file; every mistake names the file, the rule and the field."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"alerts file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"alerts file {path}: not valid TOML: {exc}") from None
    hook = None
    if "webhook" in doc:
        w = doc["webhook"]
        if not isinstance(w, dict) or not isinstance(w.get("url"), str) or not w["url"].startswith(("http://",
                                                                                                   "https://")):
            raise ConfigError(f"alerts file {path}: [webhook] needs url = \"https://...\"")
        fmt = w.get("format", "text")
        if fmt not in ("text", "json"):
            raise ConfigError(f"alerts file {path}: [webhook] format must be text or json, not {fmt!r}")
        hook = Webhook(w["url"], int(w.get("retries", 3)), float(w.get("retry_s", 2.0)), fmt)
    unknown = set(doc) - {"webhook", "rule"}
    if unknown:
        raise ConfigError(f"alerts file {path}: unknown section(s) {', '.join(sorted(unknown))} (only [webhook] "
                          "and [[rule]])")
    rules = []
    for k, r in enumerate(doc.get("rule", []), 1):
        where = f"alerts file {path}, rule {k}"
        if not isinstance(r, dict):
            raise ConfigError(f"{where}: write each rule as a [[rule]] table")
        for key, value in r.items():
            want = _RULE_FIELDS.get(key)
            if want is None:
                raise ConfigError(f"{where}: unknown field {key!r} (fields: {', '.join(_RULE_FIELDS)})")
            if not isinstance(value, want) or isinstance(value, bool):
                raise ConfigError(f"{where}: {key} = {value!r} has the wrong type")
        kind = r.get("kind")
        if kind not in KINDS:
            raise ConfigError(f"{where}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
        missing = [f for f in _NEEDS[kind] if f not in r]
        if missing:
            raise ConfigError(f"{where}: a {kind} rule needs {', '.join(missing)}")
        for key in ("minutes", "count", "days"):
            if key in r and r[key] < 1:
                raise ConfigError(f"{where}: {key} must be at least 1")
        if "percent" in r and not 0 < r["percent"] <= 1000:
            raise ConfigError(f"{where}: percent must be above 0")
        rule = Rule(**{**r, "name": r.get("name") or f"{kind} {k}", "percent": float(r.get("percent", 90.0))})
        if rule.webhook is None and hook is None:
            raise ConfigError(f"{where}: no webhook: give [webhook] url = ... or webhook = ... in the rule")
        rules.append(rule)
    names = [r.name for r in rules]
    if len(set(names)) < len(names):
        raise ConfigError(f"alerts file {path}: rule names must differ ({', '.join(sorted(names))})")
    if not rules:
        raise ConfigError(f"alerts file {path}: no [[rule]]")
    return Rules(rules, hook, str(path))


@dataclass
class Transition:
    rule: Rule
    subject: str
    state: str  # firing | resolved
    at: int  # µs: the minute (event time) or the wall clock that decided it
    since: int
    message: str


@dataclass
class _Key:
    last: int | None = None  # the last minute evaluated (µs)
    run: dict[str, int] = field(default_factory=dict)  # utilisation rule -> first minute of the run
    denials: deque[tuple[int, int]] = field(default_factory=deque)  # (minute, denials) of the last hour


Entitled = Callable[[str, str, dt.date], int]


class Evaluator:
    """The rules over final minutes and the clock; returns the transitions to deliver and keep."""

    def __init__(self, rules: Rules, open_episodes: dict[tuple[str, str], int] | None = None) -> None:
        self.rules = rules
        self.open: dict[tuple[str, str], int] = dict(open_episodes or {})  # (rule, subject) -> since
        self.keys: dict[tuple[str, str], _Key] = {}
        self.seen: dict[str, int] = {}  # server -> wall clock (µs) of its last event

    def _transition(self, out: list[Transition], rule: Rule, subject: str, on: bool, at: int, since: int,
                    firing: str, resolved: str) -> None:
        key = (rule.name, subject)
        if on and key not in self.open:
            self.open[key] = since
            out.append(Transition(rule, subject, "firing", at, since, f"[{rule.name}] {firing}"))
        elif not on and key in self.open:
            started = self.open.pop(key)
            out.append(Transition(rule, subject, "resolved", at, started, f"[{rule.name}] resolved: {resolved}"))

    def minutes(self, rows: Iterable[tuple[str, str, int, int, int]], entitled: Entitled) -> list[Transition]:
        """Final estate minutes ``(org, feature, minute µs, licenses charged, denials)``, in any order."""
        out: list[Transition] = []
        for org, feature, minute, charged, denials in sorted(rows, key=lambda r: (r[0], r[1], r[2])):
            k = self.keys.setdefault((org, feature), _Key())
            if k.last is not None and minute <= k.last:
                continue  # seen already (a re-emitted minute)
            if k.last is not None and minute > k.last + MINUTE_US:
                self._minute(out, org, feature, k, k.last + MINUTE_US, 0, 0, entitled)  # the gap held nothing
            self._minute(out, org, feature, k, minute, charged, denials, entitled)
        return out

    def _minute(self, out: list[Transition], org: str, feature: str, k: _Key, minute: int, charged: int,
                denials: int, entitled: Entitled) -> None:
        k.last = minute
        day = dt.datetime.fromtimestamp(minute / US, dt.UTC).date()
        ent = None
        subject = f"{org}/{feature}"
        at = iso_s(minute)
        k.denials.append((minute, denials))
        while k.denials and k.denials[0][0] <= minute - HOUR * MINUTE_US:
            k.denials.popleft()
        for rule in self.rules.rules:
            if not rule.matches(org, feature):
                continue
            if rule.kind in ("utilisation", "overdraft"):
                ent = entitled(org, feature, day) if ent is None else ent
                if not ent:
                    continue
            if rule.kind == "utilisation":
                assert ent
                high = charged * 100 >= rule.percent * ent
                start = k.run.get(rule.name)
                if high and start is None:
                    start = k.run[rule.name] = minute
                elif not high:
                    k.run.pop(rule.name, None)
                lasting = high and start is not None and minute - start + MINUTE_US >= rule.minutes * MINUTE_US
                self._transition(out, rule, subject, lasting or (high and (rule.name, subject) in self.open),
                                 minute, start or minute,
                                 f"{feature} ({org}): {charged} of {ent} licenses in use ({100 * charged / ent:.0f} %, "
                                 f"at least {rule.percent:g} %) for {rule.minutes} minutes since "
                                 f"{iso_s(start or minute)}",
                                 f"{feature} ({org}) below {rule.percent:g} % of {ent} at {at}")
            elif rule.kind == "overdraft":
                assert ent
                self._transition(out, rule, subject, charged > ent, minute, minute,
                                 f"{feature} ({org}): {charged} licenses in use, {charged - ent} over the {ent} "
                                 f"entitled (overdraft) at {at}",
                                 f"{feature} ({org}) back within the {ent} entitled at {at}")
            elif rule.kind == "denials":
                total = sum(n for _, n in k.denials)
                self._transition(out, rule, subject, total >= rule.count, minute, minute,
                                 f"{feature} ({org}): {total} denials in the hour to {at} (threshold {rule.count})",
                                 f"{feature} ({org}): {total} denials in the hour to {at}")

    def clock(self, now: int, expiring: Iterable[tuple[str, str, dt.date, int]] = ()) -> list[Transition]:
        """Silent servers at wall clock ``now`` (µs), and entitlements ``(org, feature, expiry, count)``."""
        out: list[Transition] = []
        today = dt.datetime.fromtimestamp(now / US, dt.UTC).date()
        ents = list(expiring)
        for rule in self.rules.rules:
            if rule.kind == "silent":
                for server, seen in sorted(self.seen.items()):
                    quiet = now - seen >= rule.minutes * MINUTE_US
                    self._transition(out, rule, server, quiet, now, seen,
                                     f"license server {server}: no event for {(now - seen) // MINUTE_US} minutes "
                                     f"(since {iso_s(seen)})", f"license server {server} sends events again")
            elif rule.kind == "expiry":
                soon = {f"{o}/{f} expires {d}": (o, f, d, n) for o, f, d, n in ents
                        if rule.matches(o, f) and today <= d <= today + dt.timedelta(days=rule.days)}
                for subject, (o, f, d, n) in sorted(soon.items()):
                    self._transition(out, rule, subject, True, now, now,
                                     f"{f} ({o}): {n} licenses expire on {d}, in {(d - today).days} days", "")
                for (name, subject), _ in list(self.open.items()):
                    if name == rule.name and subject not in soon:
                        self._transition(out, rule, subject, False, now, now, "", f"{subject}: no longer "
                                         "within the window (expired, or renewed)")
        return out

    def heard(self, servers: Iterable[str], now: int) -> None:
        for s in servers:
            self.seen[s] = now


def body(hook: Webhook, t: Transition) -> bytes:
    """What the webhook receives: ``{"text": ...}`` (Slack and Teams incoming webhooks), or with
    ``format = "json"`` the whole alert."""
    if hook.format == "json":
        return json.dumps({"text": t.message, "rule": t.rule.name, "kind": t.rule.kind, "subject": t.subject,
                           "state": t.state, "at": iso_s(t.at), "since": iso_s(t.since)}).encode()
    return json.dumps({"text": t.message}).encode()


def post(url: str, data: bytes, timeout: float = 10.0) -> None:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        if not 200 <= r.status < 300:
            raise OSError(f"HTTP {r.status}")


async def deliver(hook: Webhook, t: Transition) -> tuple[bool, int, str]:
    """POST with retries (waiting ``retry_s``, doubling); (delivered, attempts, last error)."""
    error = ""
    wait = hook.retry_s
    for attempt in range(1, hook.retries + 2):
        try:
            await asyncio.to_thread(post, hook.url, body(hook, t))
            return True, attempt, ""
        except (OSError, urllib.error.URLError) as exc:
            error = str(exc)[:500]
            log.warning("alert %s to %s: attempt %d failed: %s", t.rule.name, hook.url, attempt, error)
            if attempt <= hook.retries:
                await asyncio.sleep(wait)
                wait *= 2
    return False, hook.retries + 1, error


def history_row(t: Transition, delivered: bool, attempts: int, error: str, now: int) -> list[Any]:
    return [now, t.rule.name, t.rule.kind, t.subject, t.state, t.since, t.message, int(delivered), attempts, error]


HISTORY_COLUMNS = ["at", "rule", "kind", "subject", "state", "since", "message", "delivered", "attempts", "error"]


def sample(rules: Rules) -> list[Transition]:
    """One made-up transition per webhook, for ``lictel alerts test``."""
    now = int(dt.datetime.now(dt.UTC).timestamp()) * US
    seen: set[str] = set()
    out = []
    for r in rules.rules:
        hook = rules.hook(r)
        if hook is None or hook.url in seen:
            continue
        seen.add(hook.url)
        out.append(Transition(r, "test", "firing", now, now, f"[{r.name}] a test of lictel's alerts: this webhook "
                                                             "receives them"))
    return out


class Runner:
    """The alerts of a sink: evaluation on what each insert stored, the clock every few seconds,
    delivery one at a time in order (so a resolved message never overtakes its firing), history.
    The sink hands it the entitlements it reads (:meth:`set_entitlements`)."""

    TICK_S = 5.0

    def __init__(self, rules: Rules, client: Any, db: str, lock: Any) -> None:
        self.rules, self.client, self.db, self.lock = rules, client, db, lock
        self.evaluator = Evaluator(rules)
        self._ents: dict[tuple[str, str], list[Any]] = {}
        self._last_tick = -1e18
        self._queue: asyncio.Queue[Transition | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def _query(self, sql: str) -> list[Any]:
        with self.lock:
            return list(self.client.query(sql).result_rows)

    async def start(self) -> None:
        rows = await asyncio.to_thread(self._query, (
            f"SELECT rule, subject, argMax(state, at), toUnixTimestamp64Micro(argMax(since, at)) "
            f"FROM {self.db}.alerts FINAL GROUP BY rule, subject"))
        names = {r.name for r in self.rules.rules}
        self.evaluator.open = {(r, s): int(since) for r, s, state, since in rows if state == "firing" and r in names}
        self._worker = asyncio.create_task(self._deliver_all())
        log.info("alerts: %d rule(s) from %s, %d episode(s) open", len(self.rules.rules), self.rules.path,
                 len(self.evaluator.open))

    def set_entitlements(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """The entitlements ``(org, server, feature, count, start, expiry)`` the sink read (the counts
        of every server of a feature are the organisation's)."""
        from lictel.reports.common import Entitled as Ent

        ents: dict[tuple[str, str], list[Any]] = {}
        for o, _, f, n, start, expiry in rows:
            ents.setdefault((str(o), str(f)), []).append(Ent(str(f), int(n), start, expiry))
        self._ents = ents

    def entitled(self, org: str, feature: str, day: dt.date) -> int:
        from lictel.reports.common import entitled_on

        return entitled_on(self._ents.get((org, feature), []), day)

    async def stored(self, usage: dict[str, list[Any]], raw: dict[str, list[Any]]) -> None:
        """What one insert stored: its estate minutes (license series) and the servers heard from."""
        now = _now()
        self.evaluator.heard({s for s, v in zip(raw["server"], raw["vendor"], strict=True) if v != "SESSIONS"}, now)
        rows = [(o, f, m * US, c, d) for lv, src, o, f, m, c, d in zip(
            usage["level"], usage["source"], usage["org"], usage["feature"], usage["minute"], usage["charged_peak"],
            usage["denials"], strict=True) if lv == "estate" and src == "license"]
        for t in self.evaluator.minutes(rows, self.entitled):
            self._queue.put_nowait(t)

    async def tick(self) -> None:
        if time.monotonic() - self._last_tick < self.TICK_S:
            return
        self._last_tick = time.monotonic()
        expiring = [(o, f, e.expiry, e.count) for (o, f), items in self._ents.items() for e in items]
        for t in self.evaluator.clock(_now(), expiring):
            self._queue.put_nowait(t)

    async def _deliver_all(self) -> None:
        while (t := await self._queue.get()) is not None:
            hook = self.rules.hook(t.rule)
            ok, attempts, error = await deliver(hook, t) if hook else (False, 0, "no webhook")
            if ok:
                log.info("alert %s %s: %s", t.state, t.subject, t.message)
            row = history_row(t, ok, attempts, error, _now())

            def keep(row: list[Any] = row) -> None:
                with self.lock:
                    self.client.insert(f"{self.db}.alerts", [row], column_names=HISTORY_COLUMNS)

            await asyncio.to_thread(keep)

    async def close(self, timeout: float = 30.0) -> None:
        """Deliver what is queued (up to ``timeout``), then stop."""
        if self._worker is None:
            return
        self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(self._worker, timeout)
        except TimeoutError:
            log.warning("alerts: %d transition(s) not delivered at shutdown", self._queue.qsize())
            self._worker.cancel()


def _now() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp() * US)


def history(client: Any, db: str, limit: int = 100) -> Any:
    """The newest ``limit`` transitions, newest first, as a report."""
    from lictel.reports.common import Report

    rows = client.query(
        f"SELECT toUnixTimestamp64Micro(at), rule, kind, subject, state, toUnixTimestamp64Micro(since), message, "
        f"delivered, attempts, error FROM {db}.alerts FINAL ORDER BY at DESC LIMIT {{n:UInt32}}",
        parameters={"n": limit}).result_rows
    return Report("Alerts, newest first", ["at", "rule", "kind", "subject", "state", "since", "message", "delivered",
                                           "attempts", "error"],
                  [[iso_s(int(a)), r, k, s, st, iso_s(int(since)), m, bool(d), int(n), e]
                   for a, r, k, s, st, since, m, d, n, e in rows])
