"""What the license server counts: rereads keep checkouts, a verbatim repeated block counts once,
the time zone comes from the log or is asked for (issue: count what the license server counts)."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from lictel.engine import compute_rows
from lictel.errors import ConfigError
from lictel.events import IN, OUT, REREAD, RESTART, Event
from lictel.timeutil import parse_ts
from producers.flexnet import REPEAT_MIN_LINES, FlexnetParser, Skipped, check_zone, render
from producers.simulate import SimSpec, simulate

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "flexnet"
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus/flexnet is not beside this checkout")


def run(lines: list[str], tz: str | None = "UTC", chunk: int | None = None) -> tuple[list[Event], FlexnetParser]:
    p = FlexnetParser(org="acme", server="lic01", tz=tz)
    items: list[Event | Skipped] = []
    if chunk is None:
        items += p.parse(lines, "x.log")
    else:  # as a follower reads it: pieces of the file, numbered on
        for start in range(0, len(lines), chunk):
            items += p.parse(lines[start:start + chunk], "x.log", first_line=start + 1)
    items += p.finish()
    return [i for i in items if isinstance(i, Event)], p


def rows(events: list[Event]) -> list[object]:
    return compute_rows(events)


# A daily reread as Partek's daemon logs it, and an lmreread announced by lmgrd first.
def daily_reread(clock: str, daemon: str = "CITRIX") -> list[str]:
    return [f"{clock} ({daemon}) base expired -- rereading to update",
            f"{clock} ({daemon}) Rereading license file...",
            f"{clock} ({daemon}) Server started on lic01 for:\tXDT_PLT_CCU",
            f"{clock} ({daemon}) Updating feature XDT_PLT_CCU",
            f"{clock} ({daemon}) Support removed for feature XDT_PLT_CCU(1CD8 BF4D 5F58 412B )",
            f"{clock} ({daemon}) Rereading options file...",
            f"{clock} ({daemon}) ...Finished rereading"]


def lmreread(clock: str, daemon: str = "CITRIX") -> list[str]:
    return [f"{clock} (lmgrd) Rereading license file... Requested from admin@lic01",
            f"{clock} (lmgrd) Done rereading",
            f"{clock} (lmgrd) ...Finished rereading",
            f"{clock} ({daemon}) Server started on lic01 for:\tXDT_PLT_CCU",
            f"{clock} ({daemon}) ...Finished rereading"]


BASE = [" 8:00:00 (lmgrd) TIMESTAMP 3/2/2026",
        " 8:00:01 (CITRIX) Server started on lic01 for:\tXDT_PLT_CCU",
        " 9:00:00 (CITRIX) OUT: \"XDT_PLT_CCU\" alice@pc-1",
        " 9:05:00 (CITRIX) OUT: \"XDT_PLT_CCU\" bob@pc-2"]
TAIL = ["11:00:00 (CITRIX) IN: \"XDT_PLT_CCU\" alice@pc-1",
        "11:30:00 (CITRIX) IN: \"XDT_PLT_CCU\" bob@pc-2"]


@pytest.mark.parametrize("reread", [daily_reread, lmreread], ids=["daily", "lmreread"])
def test_a_reread_keeps_checkouts_and_is_recorded(reread: object) -> None:
    plain, _ = run(BASE + TAIL)
    events, p = run(BASE + reread("10:00:00") + TAIL)  # type: ignore[operator]
    assert [e.action for e in events if e.action in (RESTART, REREAD)] == [RESTART, REREAD]
    assert p.stats.events[REREAD] == 1 and p.stats.events[RESTART] == 1
    assert rows(events) == rows(plain)
    pool = [r for r in rows(events) if r.level == "pool"]  # type: ignore[attr-defined]
    assert sum(r.orphans for r in pool) == 0 and sum(r.forced_releases for r in pool) == 0


def test_a_real_restart_still_releases() -> None:
    # The daemon starts again with no reread announced (and after a finished one): a restart.
    lines = BASE + daily_reread("9:30:00") + [" 9:45:00 (CITRIX) Server started on lic01 for:\tXDT_PLT_CCU"] + TAIL
    events, _ = run(lines)
    assert [e.action for e in events if e.action in (RESTART, REREAD)] == [RESTART, REREAD, RESTART]
    pool = [r for r in rows(events) if r.level == "pool"]
    assert sum(r.forced_releases for r in pool) == 2 and sum(r.orphans for r in pool) == 2
    # lmgrd starting again releases what its daemons held, even before they log their start.
    banner = ["10:00:00 (lmgrd) FlexNet Licensing (v11.19.6.0 build 1 x64_n6) started on lic01 (IBM PC) (3/2/2026)"]
    events, _ = run(BASE + banner + TAIL)
    assert [(e.action, e.vendor) for e in events if e.action == RESTART] == [(RESTART, "CITRIX")] * 2
    assert sum(r.forced_releases for r in rows(events) if r.level == "pool") == 2  # type: ignore[attr-defined]


def _rendered(seed: int) -> list[str]:
    spec = SimSpec(users=150, servers=1, days=3, seed=seed, restart_rate=0.0)
    return list(render(list(simulate(spec)), "UTC"))


def _with_rereads(lines: list[str], rng: random.Random) -> list[str]:
    out: list[str] = []
    for line in lines:
        out.append(line)
        if "(CITRIX) OUT" in line and rng.random() < 0.02:
            clock = line.split(" (", 1)[0]
            out += (daily_reread if rng.random() < 0.5 else lmreread)(clock)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rendered_log_with_rereads_and_a_repeated_block_gives_the_rows_without_them(seed: int) -> None:
    rng = random.Random(seed)
    base = _rendered(seed)
    want, _ = run(base)
    noisy = _with_rereads(base, rng)
    # A person pastes a stretch of the log again right after it (a verbatim copy, 300 lines).
    a = rng.randrange(len(noisy) // 4, len(noisy) // 2)
    noisy = noisy[:a + 300] + noisy[a:a + 300] + noisy[a + 300:]
    for chunk in (None, 97):
        got, p = run(noisy, chunk=chunk)
        assert rows(got) == rows(want)
        # Every line of the copy that makes an event or sets the date is skipped (and counted as such).
        copied = sum(1 for line in noisy[a:a + 300] if ") OUT:" in line or ") IN:" in line or "DENIED" in line
                     or "Server started" in line or "TIMESTAMP" in line)
        assert p.stats.repeated_lines == copied and p.stats.events[REREAD] > 0
        assert any(f"lines {a + 301}-{a + 600} repeat lines {a + 1}-{a + 300}" in w for w in p.stats.warnings)


def test_the_same_clock_text_on_another_day_or_a_short_burst_is_not_a_repeat() -> None:
    day = [f" 9:00:{i:02d} (CITRIX) OUT: \"F\" u{i}@h{i}" for i in range(20)]
    day += [f"17:00:{i:02d} (CITRIX) IN: \"F\" u{i}@h{i}" for i in range(20)]
    lines = [" 8:00:00 (lmgrd) TIMESTAMP 3/2/2026", *day, " 8:00:00 (lmgrd) TIMESTAMP 3/3/2026", *day]
    events, p = run(lines)
    assert p.stats.repeated_lines == 0 and len(events) == 80
    # The same checkout logged twice in one second (and a burst of identical lines) is counted.
    burst = [" 9:00:00 (CITRIX) OUT: \"F\" u@h"] * (REPEAT_MIN_LINES * 3)
    events, p = run([" 8:00:00 (lmgrd) TIMESTAMP 3/2/2026", *burst])
    assert p.stats.repeated_lines == 0 and len(events) == len(burst)
    assert max(r.peak for r in rows(events)) == len(burst)  # type: ignore[attr-defined]


@needs_corpus
def test_the_corpus_logfile_counts_its_repeated_block_once() -> None:
    path = CORPUS / "talestk__log_parser__logfile.log"
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    got, p = run(lines, tz="America/New_York")
    # 31795-36044 repeat the session that starts at 27518 (SOURCES.md); the copy's date going back
    # is no segment out of order.
    assert p.stats.repeats == ["x.log: lines 31795-36044 repeat lines 27518-31767"]
    assert p.stats.out_of_order == 4 and len(p.stats.warnings) == 5
    without, q = run(lines[:31767], tz="America/New_York")
    assert q.stats.repeated_lines == 0
    # The same events, so the same minute rows (2.7 million of them: a year with checkouts held).
    assert got == without
    # In pieces, as --follow reads it, the same.
    chunked, _ = run(lines, tz="America/New_York", chunk=1000)
    assert chunked == without


@needs_corpus
def test_corpus_rereads_are_not_restarts() -> None:
    lines = (CORPUS / "talestk__log_parser__genetech.log").read_text(encoding="utf-8", errors="replace").splitlines()
    events, p = run(lines, tz="America/New_York")
    assert p.stats.events[REREAD] == 72
    # No check-in of base becomes an orphan because a reread "released" its checkout.
    by_line = {e.seq // 16: e for e in events}
    rereads = [e for e in events if e.action == REREAD]
    assert all("Server started on" in (e.reason or "") for e in rereads)
    assert not any(by_line.get(e.seq // 16 + 1, e).action == RESTART for e in rereads)
    orphans = sum(r.orphans for r in rows(events) if r.level == "pool")  # type: ignore[attr-defined]
    ins = sum(1 for e in events if e.action == IN)
    outs = sum(1 for e in events if e.action == OUT)
    assert orphans <= 3 + max(0, ins - outs)  # the 3 check-ins of checkouts made before the log begins


@needs_corpus
def test_the_zone_comes_from_the_log_or_is_asked_for() -> None:
    imsukh = CORPUS / "ImSukh__FlexLM-Log-Parser__debug.log"
    events, p = run(imsukh.read_text(encoding="utf-8", errors="replace").splitlines(), tz=None)
    assert p.tz is not None and p.tz.key == "America/New_York" and "Eastern Daylight Time" in p.tz_origin
    given, _ = run(imsukh.read_text(encoding="utf-8", errors="replace").splitlines(), tz="America/New_York")
    assert events == given and check_zone([imsukh], None) == "America/New_York"
    with pytest.raises(ConfigError, match="does not name its time zone; give --tz"):
        check_zone([CORPUS / "talestk__log_parser__logfile.log"], None)
    with pytest.raises(ConfigError, match=r"'Hora de verano romance'.*give --tz"):
        check_zone([CORPUS / "joseantoniovilar__Stats_Logs_FlexLM__autodesk.log"], None)
    assert check_zone([CORPUS / "talestk__log_parser__logfile.log"], "UTC") == "UTC"
    with pytest.raises(ConfigError, match="does not name its time zone"):
        run((CORPUS / "talestk__log_parser__dj.log").read_text(errors="replace").splitlines(), tz=None)


def test_windows_names_map_through_the_cldr_table() -> None:
    lines = [" 9:00:00 (lmgrd) Server's System Date and Time: Mon Mar 02 2026 09:00:00 Romance Standard Time",
             " 9:00:00 (lmgrd) FlexNet Licensing (v11) started on lic01 (IBM PC) (3/2/2026)",
             " 9:15:00 (CITRIX) OUT: \"F\" u@h"]
    events, p = run(lines, tz=None)
    assert p.tz is not None and p.tz.key == "Europe/Paris"
    assert events[-1].ts == parse_ts("2026-03-02T08:15:00Z")
    state = p.to_state()
    q = FlexnetParser(org="acme", server="lic01")
    q.restore(state)
    assert q.tz is not None and q.tz.key == "Europe/Paris"


def test_restart_and_reread_events_carry_no_user() -> None:
    events, _ = run(BASE + lmreread("10:00:00"))
    for e in events:
        if e.action in (RESTART, REREAD):
            assert (e.user, e.host, e.feature, e.vendor) == ("", "", "", "CITRIX")


def test_a_resumed_follower_still_recognises_a_copy_of_what_it_read_before() -> None:
    lines = _rendered(4)
    a = len(lines) // 2
    copy = lines[a - 200:a]
    first = FlexnetParser(org="acme", server="lic01", tz="UTC")
    sent = [i for i in first.parse(lines[:a], "x.log") if isinstance(i, Event)]
    # A new process resumes at line a + 1 from the checkpointed state, and reads the file's head again.
    second = FlexnetParser(org="acme", server="lic01", tz="UTC")
    second.restore(first.to_state())
    second.remember(lines[:a], "x.log")
    rest = [*second.parse([*copy, *lines[a:]], "x.log", first_line=a + 1), *second.finish()]
    got = sent + [i for i in rest if isinstance(i, Event)]
    want, _ = run(lines)
    assert second.stats.repeated_lines > 0
    def content(evs: list[Event]) -> list[tuple[object, ...]]:
        return sorted((e.ts, e.action, e.feature, e.user, e.host, e.count) for e in evs)

    assert len(got) == len(want) and content(got) == content(want)
    # Without reading the head again, the copy would count twice.
    third = FlexnetParser(org="acme", server="lic01", tz="UTC")
    third.restore(first.to_state())
    again = [i for i in third.parse([*copy, *lines[a:]], "x.log", first_line=a + 1) if isinstance(i, Event)]
    assert len(sent) + len(again) > len(want)


def test_settle_releases_a_held_line_at_the_end_of_what_is_there() -> None:
    # A follower at the end of the file: a line that may start a copy is not held until the next one.
    p = FlexnetParser(org="acme", server="lic01", tz="UTC")
    head = [" 8:00:00 (lmgrd) TIMESTAMP 3/2/2026", *(f" 9:00:{i:02d} (CITRIX) OUT: \"F\" u{i}@h" for i in range(12))]
    got = [i for i in p.parse(head, "x.log") if isinstance(i, Event)]
    held = [i for i in p.parse([head[1]], "x.log", first_line=len(head) + 1) if isinstance(i, Event)]
    assert held == [] and p.waiting
    released = [i for i in p.settle() if isinstance(i, Event)]
    assert len(got) == 12 and len(released) == 1 and not p.waiting


@needs_corpus
@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.log")) if CORPUS.is_dir() else [], ids=lambda p: p.name[:30])
def test_a_stretch_of_a_real_log_pasted_again_counts_once(path: Path) -> None:
    # Damage a real log as people do: a stretch of it pasted again right after itself, or at the end.
    # Nothing real is ever lost; the copy counts once unless it holds fewer than REPEAT_MIN_LINES lines
    # that make events or set the date (then it cannot be told from chance, and counts twice).
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()

    def content(text: list[str]) -> Counter[tuple[object, ...]]:
        evs, _ = run(text, tz="America/New_York")
        return Counter((e.ts, e.action, e.feature, e.user, e.host, e.count) for e in evs)

    want = content(lines)
    for seed in range(3):
        rng = random.Random(seed)
        size = rng.choice([100, 400, 1500])
        if len(lines) < 3 * size:
            continue
        a = rng.randrange(len(lines) - size)
        for damaged in (lines[:a + size] + lines[a:a + size] + lines[a + size:], lines + lines[a:a + size]):
            got = content(damaged)
            assert not want - got, "a real event was lost"
            assert got == want or sum((got - want).values()) < REPEAT_MIN_LINES


def test_damaged_usage_lines_cost_only_themselves() -> None:
    # Usage lines whose keyword is damaged ("IN\ufffd\ufffd:", "OUT: F" without quotes) and user names
    # with a NUL: the figures equal those of the same log without these lines, never an informational
    # skip that loses a check-in and leaves a phantom checkout.
    from lictel import limits

    base = _rendered(13)
    rng = random.Random(13)
    usage = [i for i, line in enumerate(base) if ") OUT: " in line or ") IN: " in line]
    chosen = sorted(rng.sample(usage, 40))
    damaged = list(base)
    for k, i in enumerate(chosen):
        line = base[i]
        if k % 3 == 0:
            damaged[i] = line.replace(" IN: ", " IN\ufffd\ufffd: ").replace(" OUT: ", " OUT\x00: ")
        elif k % 3 == 1:
            damaged[i] = line.replace(': "', ": ", 1).replace('" ', " ", 1)
        else:
            head, _, who = line.rpartition(" ")
            damaged[i] = f"{head} {who[:2]}\x00{who[2:]}"
    now = parse_ts("2026-11-25T00:00:00Z")

    def rows(lines: list[str]) -> list[object]:
        p = FlexnetParser(org="acme", server="lic01", tz="UTC")
        events = [i for i in p.parse(lines, "x.log") if isinstance(i, Event)]
        kept = [e for e in events if limits.problem(e, now) is None]  # what the producer sends
        return [r[:14] for r in compute_rows(kept)]

    p = FlexnetParser(org="acme", server="lic01", tz="UTC")
    items = list(p.parse(damaged, "x.log"))
    dead = {i.line - 1 for i in items if isinstance(i, Skipped) and i.dead}
    events = [i for i in items if isinstance(i, Event)]
    refused = {e.seq // 16 - 1 for e in events if limits.problem(e, now) is not None}
    assert dead | refused == set(chosen)
    assert rows(damaged) == rows([line for i, line in enumerate(base) if i not in set(chosen)])


def _secs(line: str) -> int | None:
    head = line.split(" (", 1)[0].strip()
    try:
        h, m, s = (int(x) for x in head.split(":"))
    except ValueError:
        return None
    return h * 3600 + m * 60 + s


def test_one_changed_clock_digit_is_a_dead_letter_not_a_day_later() -> None:
    # 5 % of the usage lines get another hour (at least two away); each between two lines close in
    # time. Each damaged line is dead-lettered, and the rest is dated as in the clean log: the figures
    # equal those of the log without the damaged lines (before: hundreds of lines a day later).
    base = _rendered(21)
    rng = random.Random(21)
    usable = [i for i in range(1, len(base) - 1)
              if (") OUT: " in base[i] or ") IN: " in base[i])
              and None not in (_secs(base[i - 1]), _secs(base[i]), _secs(base[i + 1]))
              and abs(_secs(base[i + 1]) - _secs(base[i - 1])) < 1800]  # type: ignore[operator]
    chosen: list[int] = []
    for i in rng.sample(usable, len(usable) // 20):
        if all(abs(i - j) > 2 for j in chosen):
            chosen.append(i)
    damaged = list(base)
    for i in chosen:
        secs = _secs(base[i])
        assert secs is not None
        hour = (secs // 3600 + rng.choice([-1, 1]) * rng.randrange(2, 10)) % 24
        head, rest = base[i].split(" (", 1)
        damaged[i] = f"{hour:2d}:{head.strip()[-5:]} ({rest}"
    p = FlexnetParser(org="acme", server="lic01", tz="UTC")
    items = [*p.parse(damaged, "x.log"), *p.finish()]
    dead = sorted(i.line - 1 for i in items if isinstance(i, Skipped) and i.dead)
    assert dead == sorted(chosen) and p.stats.damaged_times == len(chosen) > 50
    clean = FlexnetParser(org="acme", server="lic01", tz="UTC")
    want = [e for e in [*clean.parse([x for i, x in enumerate(base) if i not in set(chosen)], "x.log"),
                        *clean.finish()] if isinstance(e, Event)]
    got = [e for e in items if isinstance(e, Event)]
    assert compute_rows(got) == compute_rows(want)
    # The case, on its own: 8:15:20 -> 6:15:20 between 8:15 lines.
    lines = [" 8:00:00 (lmgrd) TIMESTAMP 3/2/2026", ' 8:15:19 (V) OUT: "F" a@h1', ' 6:15:20 (V) OUT: "F" b@h2',
             ' 8:15:25 (V) IN: "F" a@h1', ' 9:00:00 (V) OUT: "F" c@h3']
    q = FlexnetParser(org="acme", server="lic01", tz="UTC")
    events = [e for e in [*q.parse(lines, "y.log"), *q.finish()] if isinstance(e, Event)]
    assert [(e.user, e.ts) for e in events] == [("a", parse_ts("2026-03-02T08:15:19Z")),
                                                ("a", parse_ts("2026-03-02T08:15:25Z")),
                                                ("c", parse_ts("2026-03-02T09:00:00Z"))]
