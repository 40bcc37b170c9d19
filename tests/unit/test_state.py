"""A stream worker's state per entity (streams/state.py): saved incrementally, never torn, bounded
records at 200,000 users, idle pools evicted without changing a row."""

from __future__ import annotations

import random
from typing import Any

import pytest

from lictel.engine import Engine, MinuteRow, compute_rows, sort_rows
from lictel.events import Event, heartbeat
from lictel.timeutil import MINUTE_US, US, floor_minute
from producers.simulate import SimSpec, simulate
from streams import state

OPTS: dict[str, Any] = {}


def canon(eng: Engine) -> Any:
    """An engine's state with its lists of entities in one order (a reload may list them in another)."""
    import json

    st = json.loads(json.dumps(eng.to_state()))
    for kind in ("servers", "pools", "estates"):
        st[kind].sort(key=json.dumps)
    return st


class Table:
    """The state table as Kafka keeps it: what was saved, in order; ``cut`` keeps only the first
    ``n`` writes of the next checkpoint (a crash in the middle of one)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.writes: list[tuple[str, bytes | None]] = []

    def load(self, name: str) -> bytes | None:
        return self.data.get(name)

    def save(self, name: str, partition: int, value: bytes | None) -> None:
        self.writes.append((name, value))

    def durable(self, n: int | None = None) -> None:
        for name, value in self.writes[:n]:
            if value is None:
                self.data.pop(name, None)
            else:
                self.data[name] = value
        self.writes = []


def _batches(events: list[Event], per: int) -> list[list[Event]]:
    out = [events[i:i + per] for i in range(0, len(events), per)]
    mark = floor_minute(max(e.ts for e in events)) + MINUTE_US + 60 * US
    out.append([heartbeat(o, s, mark, "t", 10**9 + i) for i, (o, s) in enumerate(sorted({(e.org, e.server)
                                                                                         for e in events}))])
    return out


def _estate(users: int = 80, days: int = 2, seed: int = 5) -> list[Event]:
    events = list(simulate(SimSpec(users=users, servers=2, days=days, seed=seed)))
    rnd = random.Random(seed)
    return sorted(events, key=lambda e: e.ts + rnd.randrange(40 * US))  # within the lateness


@pytest.mark.parametrize("seed", range(4))
def test_incremental_checkpoints_reload_to_the_same_rows_even_when_torn(seed: int) -> None:
    events = _estate(seed=seed)
    batches = _batches(events, 15)
    rnd = random.Random(seed)
    table, manifest = Table(), state.Manifest()
    eng = Engine()
    rows: dict[tuple[Any, ...], MinuteRow] = {}
    i = 0
    reloads = torn = 0
    while i < len(batches):
        for r in eng.process(batches[i], 0).rows:
            rows[(r.level, r.server, r.feature, r.minute)] = r
        state.save(table, "events/0", 0, eng, manifest, i, None)
        i += 1
        if rnd.random() < 0.3:
            # A crash: the last checkpoint reached Kafka only in part (perhaps without its manifest).
            n = rnd.randrange(len(table.writes) + 1)
            torn += n < len(table.writes)
            table.durable(n)
            loaded = state.load(table, "events/0", OPTS)
            if loaded is None:  # the first checkpoint never became whole: start again
                eng, manifest, i = Engine(), state.Manifest(), 0
            else:
                eng, manifest = loaded
                i = manifest.offset + 1  # replay from the checkpoint that is whole
            reloads += 1
        else:
            table.durable()
    assert reloads and torn
    assert sort_rows(rows.values()) == compute_rows(events, until_us=floor_minute(max(e.ts for e in events))
                                                    + MINUTE_US)


def test_a_checkpoint_writes_what_changed_not_the_whole_partition() -> None:
    # 40 features on 2 servers, users checking them out all morning; then a minute in which only
    # two features see events.
    rnd = random.Random(1)
    events = []
    for i in range(4000):
        ts = 1_772_438_400 * US + i * 5 * US
        f, u = rnd.randrange(40), rnd.randrange(300)
        action = "OUT" if rnd.random() < 0.6 else "IN"
        events.append(Event(f"e{i}", ts, "acme", f"lic0{i % 2}", "V", f"F{f}", action, f"u{u}", f"h{u}", None, 1,
                            None, f"lic0{i % 2}:log", i // 2))
    eng, table, manifest = Engine(), Table(), state.Manifest()
    t = events[-1].ts + 120 * US
    eng.process([*events, *(heartbeat("acme", f"lic0{s}", t, "hb", s) for s in range(2))])  # all final
    full = state.save(table, "events/0", 0, eng, manifest, 0, None)
    table.durable()
    eng.process([events[-1]._replace(event_id=f"x{k}", ts=t + k * US, seq=10_000 + k, feature=f"F{k % 2}")
                 for k in range(1, 60)])
    before = dict(manifest.ents)
    step = state.save(table, "events/0", 0, eng, manifest, 1, None)
    table.durable()
    rewritten = {ent for ent, (gen, _) in manifest.ents.items() if ent.startswith("p") and gen != before[ent][0]}
    touched = {ent for ent in rewritten if ent.endswith(("\x1fF0", "\x1fF1"))}
    assert rewritten == touched and len(touched) == 2  # F0 and F1 of lic01; the 78 other pools stay
    assert step < full / 2, (step, full)
    loaded = state.load(table, "events/0", OPTS)
    assert loaded is not None and canon(loaded[0]) == canon(eng)


def test_pools_that_hold_nothing_are_evicted_and_rows_do_not_change() -> None:
    events = _estate(users=60, days=3)
    quick = Engine(evict_after_us=0)
    rows = quick.process(sorted(events, key=lambda e: (e.ts, e.seq)), 0).rows
    rows += quick.flush(floor_minute(max(e.ts for e in events)) + MINUTE_US).rows
    assert sort_rows(rows) == compute_rows(events)
    table, manifest = Table(), state.Manifest()
    eng = Engine(evict_after_us=MINUTE_US)
    for batch in _batches(events, 50):
        eng.process(batch, 0)
        state.save(table, "events/0", 0, eng, manifest, 0, None)
        table.durable()
    # After the closing heartbeat every pool is quiet and holds nothing left over by sessions that
    # ended: only those still held remain, and the table keeps no chunk of an evicted one.
    kept = {k for k in manifest.ents if k.startswith("p")}
    assert len(kept) == len(eng._pools) < len({(e.server, e.feature) for e in events if e.feature})
    names = {k.split("@")[0] for k in table.data if "@" in k}
    assert names == {state.chunk_key("events/0", ent, 0, 0).split("@")[0] for ent in manifest.ents}


def test_a_state_of_the_first_format_loads_and_is_written_whole_in_the_new_one() -> None:
    import json

    events = _estate(users=40, days=1)
    eng = Engine()
    eng.process(events[: len(events) // 2])
    table = Table()
    table.data["events/0"] = json.dumps({"offset": 7, "final": None, "engine": eng.to_state()}).encode()
    loaded = state.load(table, "events/0", OPTS)
    assert loaded is not None
    again, manifest = loaded
    assert manifest.offset == 7 and manifest.full and canon(again) == canon(eng)
    state.save(table, "events/0", 0, again, manifest, 8, None)
    table.durable()
    back = state.load(table, "events/0", OPTS)
    assert back is not None and canon(back[0]) == canon(eng) and back[1].offset == 8


def test_no_record_approaches_the_kafka_message_limit_at_200000_users() -> None:
    """The morning peak of a 200,000-user estate on 4 servers (~125,000 checkouts held, 45,000 in
    the largest pool): every record a checkpoint writes stays within a chunk."""
    spec = SimSpec(users=200_000, servers=4, days=1)
    eng = Engine()
    peak = None
    batch: list[Event] = []
    for ev in simulate(spec):
        batch.append(ev)
        if len(batch) == 5000:
            eng.process(batch)
            batch = []
            held = sum(p.c for p in eng._pools.values())
            if peak is not None and held < 0.9 * peak[0]:
                break  # past the first morning peak
            if peak is None or held > peak[0]:
                peak = (held, max(p.c for p in eng._pools.values()))
    assert peak is not None and peak[0] > 100_000 and peak[1] > 30_000
    table, manifest = Table(), state.Manifest()
    total = state.save(table, "events/0", 0, eng, manifest, 0, None)
    sizes = [len(v) for _, v in table.writes if v is not None]
    assert max(sizes) <= state.STATE_CHUNK < (1 << 20) // 2
    assert total > 2 * state.STATE_CHUNK  # the big pools really were split
    table.durable()
    loaded = state.load(table, "events/0", OPTS)
    assert loaded is not None and canon(loaded[0]) == canon(eng)


def test_a_replay_after_its_pools_were_evicted_is_still_a_duplicate() -> None:
    events = sorted(_estate(users=60, days=2), key=lambda e: (e.ts, e.seq))
    eng = Engine(evict_after_us=MINUTE_US)
    rows = eng.process(events, 0).rows
    end = floor_minute(events[-1].ts) + 2 * MINUTE_US
    rows += eng.process([heartbeat("acme", s, end + 3600 * US, "hb", i)
                         for i, s in enumerate(sorted({e.server for e in events}))], 0).rows
    evicted = eng.take_changes()[1]
    assert evicted  # pools that ended quiet are gone from the state
    again = eng.process(events[: len(events) // 2], 0)  # a producer sends the first day again
    assert again.duplicates == len(events) // 2 and not again.rows and not again.late
