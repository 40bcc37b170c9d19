"""User/device licensing: hand-computed windows, and the optimum against brute force."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lictel.errors import ConfigError
from lictel.ud import license_model, parse_models, windows

D1 = dt.date(2026, 1, 1)
MORNING = [("ann", "pc1"), ("bob", "pc1"),                      # pc1: exclusively shared
           ("cat", "pc2"), ("cat", "pc3"), ("dan", "pc3"),      # cat roams, so pc3 is not exclusive
           ("eve", "pc4"), ("eve", "pc5"), ("fay", "pc4"), ("gus", "pc5")]  # two devices cover all three


def test_hand_computed_window_and_its_expiry() -> None:
    rows = list(windows("acme", "XDT_ENT_UD", [(D1, MORNING), (D1 + dt.timedelta(days=90), [("ann", "pc1")])],
                        explain=True))
    assert len(rows) == 91 and rows[0].day == D1 and rows[-1].day == dt.date(2026, 4, 1)
    # 7 users; vendor: pc1 + 5 user licenses; optimum: 3 (ann/bob/cat/dan part) + 2 (pc4, pc5).
    assert [(r.users_90d, r.vendor_rule, r.optimal) for r in rows[:1] + rows[89:]] == [(7, 6, 5), (7, 6, 5), (1, 1, 1)]
    first = rows[0]
    assert first.vendor is not None and first.cover is not None
    assert first.vendor.devices == ["pc1"] and first.vendor.users == ["cat", "dan", "eve", "fay", "gus"]
    cover = set(first.cover.users) | set(first.cover.devices)
    assert len(cover) == 5 and {"pc4", "pc5"} <= cover
    assert all(u in cover or d in cover for u, d in MORNING)
    # Day 90 (Mar 31) still holds Jan 1; day 91 (Apr 1) no longer does.
    assert rows[89].day == dt.date(2026, 3, 31)


def test_every_calendar_day_between_first_and_last_use_has_a_row() -> None:
    rows = list(windows("acme", "F_UD", [(D1, [("a", "x")]), (D1 + dt.timedelta(days=200), [("b", "y")])]))
    assert len(rows) == 201
    assert (rows[89].users_90d, rows[90].users_90d, rows[200].users_90d) == (1, 0, 1)


def test_license_model_from_name_and_override() -> None:
    assert license_model("XDT_ENT_UD") == "ud"
    assert license_model("XDT_PLT_CCU") == "concurrent" and license_model("XDS_PLT_CCS") == "concurrent"
    models = parse_models(" XDT_PLT_CCU = ud , MY_UD=concurrent")
    assert license_model("XDT_PLT_CCU", models) == "ud" and license_model("MY_UD", models) == "concurrent"
    with pytest.raises(ConfigError, match="FEATURE=ud"):
        parse_models("XDT_PLT_CCU:ud")


def _brute_force_cover(pairs: set[tuple[str, str]]) -> int:
    nodes = sorted({("u", u) for u, _ in pairs} | {("d", d) for _, d in pairs})
    for k in range(len(nodes) + 1):
        for chosen in itertools.combinations(nodes, k):
            s = set(chosen)
            if all(("u", u) in s or ("d", d) in s for u, d in pairs):
                return k
    raise AssertionError("unreachable")


@settings(max_examples=300, deadline=None)
@given(st.sets(st.tuples(st.sampled_from("abcdef"), st.sampled_from("vwxyz")), min_size=1, max_size=14))
def test_optimal_is_the_minimum_cover_and_never_above_the_others(pairs: set[tuple[str, str]]) -> None:
    (row,) = windows("acme", "F_UD", [(D1, sorted(pairs))], explain=True)
    assert row.optimal == _brute_force_cover(pairs)
    assert row.optimal <= row.vendor_rule <= row.users_90d == len({u for u, _ in pairs})
    assert row.cover is not None and row.vendor is not None
    held = set(row.cover.users) | set(row.cover.devices)
    assert all(u in held or d in held for u, d in pairs)
    vendor = set(row.vendor.users) | set(row.vendor.devices)
    assert len(vendor) == row.vendor_rule and all(u in vendor or d in vendor for u, d in pairs)
