"""Alert rules: the file, and the evaluation of final minutes and the clock (lictel.alerts)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from lictel.alerts import Evaluator, Rules, load
from lictel.errors import ConfigError
from lictel.timeutil import MINUTE_US, parse_ts

T0 = parse_ts("2026-03-02T09:00:00Z")
HOOK = '[webhook]\nurl = "http://127.0.0.1:9/hook"\n'


def _rules(tmp_path: Path, text: str) -> Rules:
    path = tmp_path / "rules.toml"
    path.write_text(HOOK + text)
    return load(path)


def _minutes(charged: list[int], feature: str = "F", denials: list[int] | None = None,
             start: int = T0) -> list[tuple[str, str, int, int, int]]:
    return [("acme", feature, start + k * MINUTE_US, c, (denials or [0] * len(charged))[k])
            for k, c in enumerate(charged)]


def _entitled(n: int):  # type: ignore[no-untyped-def]
    return lambda org, feature, day: n


def test_utilisation_fires_once_after_the_minutes_and_resolves_once(tmp_path: Path) -> None:
    ev = Evaluator(_rules(tmp_path, '[[rule]]\nname = "busy"\nkind = "utilisation"\npercent = 90\nminutes = 3\n'))
    # 9 of 10 entitled is 90 %: two minutes are not enough, the third fires; 8 resolves.
    out = ev.minutes(_minutes([5, 9, 9, 10, 9, 9, 8, 9]), _entitled(10))
    assert [(t.state, t.at, t.since) for t in out] == [
        ("firing", T0 + 3 * MINUTE_US, T0 + MINUTE_US), ("resolved", T0 + 6 * MINUTE_US, T0 + MINUTE_US)]
    assert "10 of 10 licenses in use (100 %, at least 90 %) for 3 minutes since 2026-03-02T09:01:00Z" in out[0].message
    # The same minutes again (a worker re-emitting) change nothing; a later run starts a new episode.
    assert ev.minutes(_minutes([5, 9, 9, 10]), _entitled(10)) == []
    again = ev.minutes(_minutes([9, 9, 9], start=T0 + 20 * MINUTE_US), _entitled(10))
    assert [t.state for t in again] == ["firing"]


def test_a_gap_of_minutes_held_nothing(tmp_path: Path) -> None:
    ev = Evaluator(_rules(tmp_path, '[[rule]]\nkind = "utilisation"\npercent = 50\nminutes = 2\n'))
    out = ev.minutes(_minutes([9, 9]) + _minutes([9], start=T0 + 10 * MINUTE_US), _entitled(10))
    assert [t.state for t in out] == ["firing", "resolved"]  # the run broke at the empty minute 09:02


def test_minutes_in_any_order_and_features_apart(tmp_path: Path) -> None:
    ev = Evaluator(_rules(tmp_path, '[[rule]]\nkind = "overdraft"\nfeature = "F"\n'))
    rows = list(reversed(_minutes([10, 11, 10]))) + _minutes([50, 50], feature="G")
    out = ev.minutes(rows, _entitled(10))
    assert [(t.subject, t.state, t.at) for t in out] == [("acme/F", "firing", T0 + MINUTE_US),
                                                       ("acme/F", "resolved", T0 + 2 * MINUTE_US)]
    # No entitlement known: no utilisation or overdraft to judge.
    assert Evaluator(ev.rules).minutes(_minutes([10, 11]), _entitled(0)) == []


def test_denials_in_an_hour(tmp_path: Path) -> None:
    ev = Evaluator(_rules(tmp_path, '[[rule]]\nkind = "denials"\ncount = 5\n'))
    den = [2, 0, 2, 0, 1] + [0] * 56 + [0]
    out = ev.minutes(_minutes([1] * len(den), denials=den), _entitled(0))
    # 5 by 09:04; 09:00's 2 leave the hour at 10:00, 4 remain: resolved then.
    assert [(t.state, t.at) for t in out] == [("firing", T0 + 4 * MINUTE_US), ("resolved", T0 + 60 * MINUTE_US)]


def test_silent_servers_and_expiring_entitlements(tmp_path: Path) -> None:
    ev = Evaluator(_rules(tmp_path, '[[rule]]\nkind = "silent"\nminutes = 30\n\n'
                                    '[[rule]]\nname = "renewals"\nkind = "expiry"\ndays = 10\n'))
    ev.heard(["lic01", "lic02"], T0)
    ev.heard(["lic02"], T0 + 20 * MINUTE_US)
    soon = [("acme", "F", dt.date(2026, 3, 10), 100), ("acme", "G", dt.date(2026, 6, 1), 5)]
    out = ev.clock(T0 + 31 * MINUTE_US, soon)
    assert sorted((t.rule.kind, t.subject, t.state) for t in out) == [
        ("expiry", "acme/F expires 2026-03-10", "firing"), ("silent", "lic01", "firing")]
    assert ev.clock(T0 + 32 * MINUTE_US, soon) == []  # once per episode
    ev.heard(["lic01"], T0 + 33 * MINUTE_US)
    out = ev.clock(T0 + 33 * MINUTE_US, [("acme", "G", dt.date(2026, 6, 1), 5)])  # F renewed: no longer listed
    assert sorted((t.subject, t.state) for t in out) == [("acme/F expires 2026-03-10", "resolved"),
                                                         ("lic01", "resolved")]


def test_an_open_episode_is_not_fired_again_after_a_restart(tmp_path: Path) -> None:
    rules = _rules(tmp_path, '[[rule]]\nname = "od"\nkind = "overdraft"\n')
    ev = Evaluator(rules, {("od", "acme/F"): T0})
    out = ev.minutes(_minutes([11, 12, 9]), _entitled(10))
    assert [(t.state, t.since) for t in out] == [("resolved", T0)]


@pytest.mark.parametrize("text, words", [
    ('[[rule]]\nkind = "hot"\n', "kind must be one of utilisation"),
    ('[[rule]]\nkind = "utilisation"\npercent = 90\n', "needs minutes"),
    ('[[rule]]\nkind = "denials"\ncount = "five"\n', "count = 'five' has the wrong type"),
    ('[[rule]]\nkind = "denials"\ncount = 0\n', "count must be at least 1"),
    ('[[rule]]\nkind = "denials"\ncount = 3\nthreshold = 2\n', "unknown field 'threshold'"),
    ('[[rule]]\nname = "a"\nkind = "overdraft"\n[[rule]]\nname = "a"\nkind = "overdraft"\n', "names must differ"),
    ('[rules]\n', "unknown section(s) rules"),
    ('[[rule]\n', "not valid TOML"),
    ('', "no [[rule]]"),
])
def test_a_wrong_rules_file_is_refused_saying_where(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        _rules(tmp_path, text)
    assert words in str(err.value) and "rules.toml" in str(err.value)


def test_a_rule_needs_a_webhook(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text('[[rule]]\nkind = "overdraft"\n')
    with pytest.raises(ConfigError, match="no webhook"):
        load(path)
    path.write_text('[webhook]\nurl = "ftp://x"\n[[rule]]\nkind = "overdraft"\n')
    with pytest.raises(ConfigError, match=r"needs url"):
        load(path)


def test_the_documented_example_is_a_valid_rules_file() -> None:
    rules = load(Path(__file__).resolve().parents[2] / "docs" / "examples" / "alerts.toml")
    assert sorted(r.kind for r in rules.rules) == sorted(["utilisation", "overdraft", "denials", "expiry", "silent"])
    assert rules.hook(rules.rules[-1]).url == "https://example.invalid/ops-hook"  # type: ignore[union-attr]
