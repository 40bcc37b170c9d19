"""A set of integers kept as sorted, merged, inclusive intervals.

The engine records which ``seq`` numbers of each source it has applied. Sources are read in
order, so the set is almost always one interval per source: membership and insertion are
O(log n) in the number of gaps, and the state stays tiny however many events went through.
"""

from __future__ import annotations

import bisect


class SeqSet:
    """Integers as ``[[lo, hi], ...]`` with ``hi + 1 < next lo``."""

    __slots__ = ("_hi", "_lo")

    def __init__(self, intervals: list[list[int]] | None = None) -> None:
        self._lo: list[int] = [a for a, _ in intervals or []]
        self._hi: list[int] = [b for _, b in intervals or []]

    def __contains__(self, x: int) -> bool:
        i = bisect.bisect_right(self._lo, x) - 1
        return i >= 0 and x <= self._hi[i]

    def add(self, x: int) -> None:
        lo, hi = self._lo, self._hi
        if hi and hi[-1] + 1 == x:  # the common case: the next seq of an in-order source
            hi[-1] = x
            return
        i = bisect.bisect_right(lo, x) - 1
        if i >= 0 and x <= hi[i]:
            return
        joins_left = i >= 0 and hi[i] + 1 == x
        joins_right = i + 1 < len(lo) and lo[i + 1] - 1 == x
        if joins_left and joins_right:
            hi[i] = hi[i + 1]
            del lo[i + 1], hi[i + 1]
        elif joins_left:
            hi[i] = x
        elif joins_right:
            lo[i + 1] = x
        else:
            lo.insert(i + 1, x)
            hi.insert(i + 1, x)

    def add_range(self, a: int, b: int) -> None:
        """Add every integer of ``[a, b]`` (nothing when ``b < a``)."""
        if b < a:
            return
        lo, hi = self._lo, self._hi
        if hi and hi[-1] + 1 >= a and lo[-1] <= a:  # the common case: extends the last interval
            hi[-1] = max(hi[-1], b)
            return
        # Intervals that touch or overlap [a, b] merge with it.
        i = bisect.bisect_left(hi, a - 1)
        j = bisect.bisect_right(lo, b + 1)
        if i < j:
            a = min(a, lo[i])
            b = max(b, hi[j - 1])
        lo[i:j] = [a]
        hi[i:j] = [b]

    def add_many(self, xs: list[int]) -> None:
        """Add every integer of ``xs`` (any order; sorted in place)."""
        if not xs:
            return
        xs.sort()
        runs: list[tuple[int, int]] = []
        a = b = xs[0]
        for x in xs:
            if x > b + 1:
                runs.append((a, b))
                a = x
            b = x
        runs.append((a, b))
        self.add_ranges(runs)

    def add_ranges(self, runs: list[tuple[int, int]]) -> None:
        """Add every ``[a, b]`` of ``runs`` (any order; sorted in place). A few go one by one; more
        are merged with the set in one pass, which costs less than a search and a list splice each
        when a batch fills many holes between seqs seen already. A set of many intervals (a source
        whose seqs no ``prev`` joins) takes a few runs one by one: a pass over all of its intervals
        would cost more."""
        if len(runs) <= 4 or len(runs) * 8 < len(self._lo):
            for a, b in runs:
                self.add_range(a, b)
            return
        runs.sort()
        lo, hi = self._lo, self._hi
        new_lo: list[int] = []
        new_hi: list[int] = []
        i = j = 0
        n, m = len(lo), len(runs)
        cur_lo = cur_hi = None
        while i < n or j < m:
            if j >= m or (i < n and lo[i] <= runs[j][0]):
                a, b = lo[i], hi[i]
                i += 1
            else:
                a, b = runs[j]
                j += 1
                if b < a:
                    continue
            if cur_hi is None or cur_lo is None:
                cur_lo, cur_hi = a, b
            elif a <= cur_hi + 1:
                if b > cur_hi:
                    cur_hi = b
            else:
                new_lo.append(cur_lo)
                new_hi.append(cur_hi)
                cur_lo, cur_hi = a, b
        if cur_lo is not None and cur_hi is not None:
            new_lo.append(cur_lo)
            new_hi.append(cur_hi)
        self._lo, self._hi = new_lo, new_hi

    def intervals(self) -> list[list[int]]:
        return [[a, b] for a, b in zip(self._lo, self._hi, strict=True)]

    def __len__(self) -> int:
        return sum(b - a + 1 for a, b in zip(self._lo, self._hi, strict=True))
