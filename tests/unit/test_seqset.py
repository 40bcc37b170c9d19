"""SeqSet against a plain Python set, on random insertions."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lictel.seqset import SeqSet


@given(st.lists(st.integers(min_value=0, max_value=60), max_size=80))
def test_behaves_like_a_set_and_stays_merged(values: list[int]) -> None:
    s = SeqSet()
    ref: set[int] = set()
    for v in values:
        s.add(v)
        ref.add(v)
    assert all((x in s) == (x in ref) for x in range(-1, 62))
    assert len(s) == len(ref)
    iv = s.intervals()
    assert all(a <= b for a, b in iv)
    assert all(iv[i][1] + 1 < iv[i + 1][0] for i in range(len(iv) - 1))
    assert SeqSet(iv).intervals() == iv


def test_in_order_source_is_one_interval() -> None:
    s = SeqSet()
    for v in range(1, 100_001):
        s.add(v)
    assert s.intervals() == [[1, 100_000]]


@pytest.mark.parametrize("seed", range(30))
def test_add_range_agrees_with_a_plain_set(seed: int) -> None:
    rnd = random.Random(seed)
    s, ref = SeqSet(), set()
    for _ in range(60):
        if rnd.random() < 0.5:
            x = rnd.randrange(200)
            s.add(x)
            ref.add(x)
        else:
            a = rnd.randrange(200)
            b = a + rnd.randrange(-3, 15)
            s.add_range(a, b)
            ref.update(range(a, b + 1))
        ivs = s.intervals()
        assert all(ivs[k][1] + 1 < ivs[k + 1][0] for k in range(len(ivs) - 1))  # merged, sorted
        assert {x for a, b in ivs for x in range(a, b + 1)} == ref


@given(st.lists(st.tuples(st.integers(0, 120), st.integers(-2, 12)), max_size=12),
       st.lists(st.lists(st.integers(0, 140), max_size=20), max_size=4))
def test_bulk_adds_agree_with_a_plain_set(ranges: list[tuple[int, int]], batches: list[list[int]]) -> None:
    # add_ranges (one by one below 5 runs, merged in one pass above) and add_many, as the engine
    # fills a batch's gaps and marks its final events.
    s, ref = SeqSet(), set()
    s.add_ranges([(a, a + d) for a, d in ranges])
    for a, d in ranges:
        ref.update(range(a, a + d + 1))
    for xs in [[], *batches]:
        s.add_many(list(xs))
        ref.update(xs)
        ivs = s.intervals()
        assert all(a <= b for a, b in ivs)
        assert all(ivs[k][1] + 1 < ivs[k + 1][0] for k in range(len(ivs) - 1))  # merged, sorted
        assert {x for a, b in ivs for x in range(a, b + 1)} == ref
