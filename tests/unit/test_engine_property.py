"""The engine against a deliberately simple reference, on generated event streams (hypothesis).

The reference follows DESIGN.md word by word and cares nothing for speed: c(t) is recomputed from
scratch, by replaying every event with ts <= t, at every instant where it may change.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from lictel.dupgroup import DupRules
from lictel.engine import ESTATE, POOL, Engine, MinuteRow, compute_rows, sort_rows
from lictel.events import DENIED, DEQUEUED, IN, OUT, QUEUED, RESTART, Event, heartbeat
from lictel.timeutil import MINUTE_US, US, floor_minute

BASE = 1_772_445_600 * US  # 2026-03-02T10:00:00Z


def _applied(events: list[Event], t: int) -> Iterator[tuple[Event, tuple[str, ...]]]:
    """Every event with ts <= t in (ts, seq) order, each id once, with its checkout identity."""
    seen: set[str] = set()
    for e in sorted(events, key=lambda e: (e.ts, e.seq)):
        if e.ts > t:
            break
        if e.event_id not in seen:
            seen.add(e.event_id)
            yield e, (e.org, e.server, e.vendor, e.feature, e.user, e.host, e.handle or "")


def _replay(events: list[Event], t: int) -> tuple[dict[tuple[str, ...], int], list[tuple[Event, int, bool]]]:
    """Held per identity after every event with ts <= t, and per event: licenses released, orphan?"""
    held: dict[tuple[str, ...], int] = defaultdict(int)
    effects = []
    for e, ident in _applied(events, t):
        released, orphan = 0, False
        if e.action == OUT:
            held[ident] += e.count
        elif e.action == IN:
            if held[ident] <= 0:
                orphan = True
            else:
                released = min(e.count, held[ident])
                held[ident] -= released
        elif e.action == RESTART:
            for k in list(held):
                if k[0] == e.org and k[1] == e.server and k[2] == e.vendor:
                    held[k] = 0
        effects.append((e, released, orphan))
    return held, effects


def _open(events: list[Event], t: int) -> dict[tuple[str, ...], list[int]]:
    """The open checkouts of every identity after every event with ts <= t, oldest first: an IN of
    n closes the oldest first, a partial IN reduces the oldest (DESIGN.md, licenses charged)."""
    opened: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for e, ident in _applied(events, t):
        if e.action == OUT:
            opened[ident].append(e.count)
        elif e.action == IN:
            n = e.count
            while n and opened[ident]:
                take = min(n, opened[ident][0])
                opened[ident][0] -= take
                n -= take
                if opened[ident][0] == 0:
                    opened[ident].pop(0)
        elif e.action == RESTART:
            for k in opened:
                if k[:3] == (e.org, e.server, e.vendor):
                    opened[k] = []
    return opened


def _charged(events: list[Event], org: str, server: str | None, feature: str, t: int, rule: str) -> int:
    """Σ over groups (the rule's projection, D folded into H, V and NONE: each checkout alone) of
    the largest open count."""
    largest: dict[tuple[object, ...], int] = {}
    n = 0
    for k, counts in _open(events, t).items():
        if k[0] != org or k[3] != feature or (server is not None and k[1] != server):
            continue
        for count in counts:
            n += 1
            if rule == "SITE":
                group: tuple[object, ...] = k[1:3]
            elif rule in ("NONE", "UHDV"):
                group = (n,)
            else:
                group = (k[1], k[2], k[4] if "U" in rule else "", k[5] if ("H" in rule or "D" in rule) else "")
            largest[group] = max(largest.get(group, 0), count)
    return sum(largest.values())


def _c(events: list[Event], org: str, server: str | None, feature: str, t: int) -> int:
    held, _ = _replay(events, t)
    return sum(v for k, v in held.items() if k[0] == org and k[3] == feature and (server is None or k[1] == server))


def reference_rows(events: list[Event], until: int, rules: dict[str, str] | None = None) -> list[MinuteRow]:
    rules = rules or {}
    rows = []
    keys = {(e.org, e.server, e.feature) for e in events if e.action != RESTART}
    estates = {(o, f) for o, _, f in keys}
    first = floor_minute(min(e.ts for e in events))
    for level, key_set in ((POOL, keys), (ESTATE, {(o, None, f) for o, f in estates})):
        for org, server, feature in sorted(key_set, key=str):
            servers = {s for o, s, f in keys if o == org and f == feature} if server is None else {server}
            for m in range(first, until, MINUTE_US):
                end = m + MINUTE_US
                instants = sorted({m} | {e.ts for e in events if m <= e.ts < end and e.server in servers})
                values = [_c(events, org, server, feature, t) for t in instants]
                lic = sum(v * ((instants[i + 1] if i + 1 < len(instants) else end) - instants[i])
                          for i, v in enumerate(values))
                rule = rules.get(feature, "NONE")
                charged = [_charged(events, org, server, feature, t, rule) for t in instants]
                clic = sum(v * ((instants[i + 1] if i + 1 < len(instants) else end) - instants[i])
                           for i, v in enumerate(charged))
                counts = dict.fromkeys(("co", "ci", "fr", "de", "qu", "or"), 0)
                is_event = False
                _, effects = _replay(events, end - 1)
                for e, released, orphan in effects:
                    if not (m <= e.ts < end and e.org == org and e.server in servers):
                        continue
                    if e.action == RESTART:
                        # Released: what this server's daemon held of the feature just before the
                        # restart, i.e. after every event ordered before it, same instant included.
                        before, _ = _replay([x for x in events if (x.ts, x.seq) < (e.ts, e.seq)], e.ts)
                        freed = sum(v for k, v in before.items() if k[:4] == (org, e.server, e.vendor, feature))
                        counts["fr"] += freed
                        is_event |= freed > 0
                        continue
                    if e.feature != feature:
                        continue
                    is_event = True
                    if e.action == OUT:
                        counts["co"] += e.count
                    elif e.action == IN:
                        counts["ci"] += released
                        counts["or"] += orphan
                    elif e.action == DENIED:
                        counts["de"] += 1
                    elif e.action == QUEUED:
                        counts["qu"] += 1
                if is_event or values[0] > 0:
                    rows.append(MinuteRow(level, org, server or "", feature, m, max(values), min(values), lic,
                                          counts["co"], counts["ci"], counts["fr"], counts["de"], counts["qu"],
                                          counts["or"], max(charged), min(charged), clic, rule))
    return sort_rows(rows)


@st.composite
def event_streams(draw: st.DrawFn) -> list[Event]:
    n = draw(st.integers(min_value=1, max_value=28))
    events = []
    for seq in range(1, n + 1):
        server = draw(st.sampled_from(["a", "b"]))
        action = draw(st.sampled_from([OUT, OUT, OUT, IN, IN, IN, DENIED, QUEUED, DEQUEUED, RESTART]))
        second = draw(st.integers(min_value=0, max_value=200))
        sub = draw(st.sampled_from([0, 0, 0, 500_000]))
        events.append(Event(
            f"{server}:{seq}", BASE + second * US + sub, "acme", server,
            # A small identity space, so check-ins often meet earlier checkouts.
            draw(st.sampled_from(["V", "V", "V", "W"])),
            "" if action == RESTART else draw(st.sampled_from(["F", "F", "G"])),
            action, draw(st.sampled_from(["u1", "u2"])), draw(st.sampled_from(["h1", "h1", "h2"])),
            draw(st.sampled_from([None, None, None, "7"])), draw(st.integers(min_value=1, max_value=3)), None,
            f"src-{server}", seq))
    dupes = draw(st.lists(st.sampled_from(events), max_size=3))
    return events + dupes


@settings(max_examples=300, deadline=None)
@given(event_streams())
def test_batch_engine_equals_reference(events: list[Event]) -> None:
    until = floor_minute(max(e.ts for e in events)) + MINUTE_US
    got = compute_rows(events)
    if not any(e.action != RESTART for e in events):
        assert got == []
        return
    assert got == reference_rows(events, until)


@settings(max_examples=100, deadline=None)
@given(event_streams(), st.integers(min_value=1, max_value=6), st.randoms(use_true_random=False))
def test_streaming_engine_equals_batch_for_any_batching_within_lateness(
        events: list[Event], batch: int, rnd: random.Random) -> None:
    # Arrival order: shuffled within 30 s (lateness is 60 s), cut into batches of any size.
    arrival = sorted(events, key=lambda e: e.ts + rnd.randrange(30 * US))
    eng = Engine(lateness_us=60 * US)
    rows: list[MinuteRow] = []
    for i in range(0, len(arrival), batch):
        rows += eng.process(arrival[i:i + batch]).rows
    end = floor_minute(max(e.ts for e in events)) + MINUTE_US
    rows += eng.process([heartbeat("acme", s, end + 60 * US, "hb", 0) for s in ("a", "b")]).rows
    assert sort_rows(rows) == compute_rows(events, until_us=end)


RULES = ["NONE", "U", "H", "UH", "UHD", "SITE", "UHDV"]


@settings(max_examples=300, deadline=None)
@given(event_streams(), st.sampled_from(RULES), st.sampled_from(RULES))
def test_licenses_charged_equal_reference_under_every_rule(events: list[Event], rule_f: str, rule_g: str) -> None:
    until = floor_minute(max(e.ts for e in events)) + MINUTE_US
    rules = {"F": rule_f, "G": rule_g}
    got = compute_rows(events, rules=DupRules(rules))
    if any(e.action != RESTART for e in events):
        assert got == reference_rows(events, until, rules)
    # Checkouts never depend on the rule.
    plain = compute_rows(events)
    assert [r[:14] for r in got] == [r[:14] for r in plain]


@settings(max_examples=100, deadline=None)
@given(event_streams(), st.integers(min_value=1, max_value=40), st.sampled_from(RULES),
       st.sampled_from(RULES))
def test_a_rule_change_at_a_snapshot_applies_from_then_on(events: list[Event], cut: int, before: str,
                                                          after: str) -> None:
    # A worker restarted from its snapshot with another rule charges under it from then on: what
    # it charges equals the figures of an engine that had that rule all along.
    evs = sorted(events, key=lambda e: (e.ts, e.seq))
    eng = Engine(lateness_us=0, rules=DupRules({"*": before}))
    eng.process(evs[:cut])
    new = Engine.from_state(eng.to_state(), lateness_us=0, rules=DupRules({"*": after}))
    ref = Engine(lateness_us=0, rules=DupRules({"*": after}))
    ref.process(evs[:cut])
    for pool, other in zip(new._pools.values(), ref._pools.values(), strict=True):
        assert pool.rule == after
        assert pool.charged_now == other.charged_now
        if after in ("NONE", "UHDV"):
            assert pool.charged_now == pool.c
        else:
            assert pool.charged_now <= pool.c
    end = floor_minute(evs[-1].ts) + 2 * MINUTE_US
    rows = new.process(evs[cut:]).rows + new.flush(end).rows
    assert all(r.dup_group == after for r in rows if r.level == POOL)
