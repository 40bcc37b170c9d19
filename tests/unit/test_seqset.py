"""SeqSet against a plain Python set, on random insertions."""

from __future__ import annotations

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
