"""Blends of many experiments' out-of-fold predictions, scored fast: every combination of the
sizes asked, or greedy forward selection with swaps where there are too many to enumerate.

A blend is the equal-weight geometric mean that `stacking_predict.py` and `blend_predict.py`
take (`src.utils.geometric_mean`: exp of the mean of the floored logs), its members summed in
the order of the candidates, and its score lwlrap (`src.models.metrics.PositiveLabels`, the
project's one implementation). The same floating-point operations in the same order as
`gmean_frames` + `cv_scores`, so the numbers are theirs to the last bit
(tests/test_select_ensemble.py checks it).

What makes it fast: logs are taken once per experiment; the enumeration walks the
combinations depth first, so a blend's sum of logs is its parent's plus one table; the tables
are kept transposed (classes x clips), the layout `PositiveLabels.ranks` counts fastest in;
worker processes take subtrees of the enumeration (or batches of the greedy search's sets).
"""

from __future__ import annotations

import heapq
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
from tqdm import tqdm

from src.models.metrics import PositiveLabels
from src.utils import PROBABILITY_FLOOR, pool_map, start_pool

METHODS = ("auto", "exhaustive", "greedy")
# `auto` enumerates up to this many blends (about a minute on 2 cores at the competition's
# size, docs/performance.md) and searches greedily beyond.
EXHAUSTIVE_LIMIT = 50_000
MAX_SWAP_ROUNDS = 100  # hill-climbing stops earlier when no swap improves the blend


@dataclass
class BlendTables:
    """The candidates' out-of-fold probabilities, transposed (experiment, class, clip), their
    floored logs, and the positive labels of the clips they cover."""

    probabilities_t: np.ndarray
    logs_t: np.ndarray
    labels: PositiveLabels

    @classmethod
    def build(cls, probabilities: np.ndarray, truth: np.ndarray) -> BlendTables:
        """From (experiment, clip, class) probabilities and the (clip, class) labels."""
        probabilities_t = np.ascontiguousarray(
            np.asarray(probabilities, dtype=np.float64).transpose(0, 2, 1)
        )
        logs_t = np.log(np.clip(probabilities_t, PROBABILITY_FLOOR, None))
        return cls(probabilities_t, logs_t, PositiveLabels(truth))

    @property
    def count(self) -> int:
        return len(self.logs_t)

    def score(self, members: Sequence[int], scratch: np.ndarray | None = None) -> float:
        """lwlrap of the blend of `members`, summed in that order; one member is the experiment
        itself (its table as predicted, as stacking_predict.py scores a first-level one)."""
        if len(members) == 1:
            return self.labels.lwlrap(self.probabilities_t[members[0]], transposed=True)
        total = self.logs_t[members[0]] + self.logs_t[members[1]]
        for member in members[2:]:
            np.add(total, self.logs_t[member], out=total)
        return self.blend_score(total, len(members), total if scratch is None else scratch)

    def blend_score(self, total: np.ndarray, size: int, scratch: np.ndarray) -> float:
        """lwlrap of exp(total / size), the blend whose sum of logs is `total`."""
        np.divide(total, size, out=scratch)
        np.exp(scratch, out=scratch)
        return self.labels.lwlrap(scratch, transposed=True)


@dataclass(frozen=True, order=True)
class Blend:
    score: float
    members: tuple[int, ...]  # candidate indices, ascending


def ranked(blends: Iterable[Blend]) -> list[Blend]:
    """Best first; equal scores: fewer members, then the lower indices."""
    return sorted(blends, key=lambda b: (-b.score, len(b.members), b.members))


class BestBlends:
    """The `keep` best blends of each size seen."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.heaps: dict[int, list[tuple[float, tuple[int, ...]]]] = {}

    def add(self, score: float, members: tuple[int, ...]) -> None:
        # Min-heap on (score, negated members): the worst of equal scores has the higher indices.
        heap = self.heaps.setdefault(len(members), [])
        item = (score, tuple(-m for m in members))
        if len(heap) < self.keep:
            heapq.heappush(heap, item)
        elif item > heap[0]:
            heapq.heapreplace(heap, item)

    def merge(self, other: BestBlends) -> None:
        for heap in other.heaps.values():
            for score, negated in heap:
                self.add(score, tuple(-m for m in negated))

    def by_size(self) -> dict[int, list[Blend]]:
        return {
            size: ranked(Blend(score, tuple(-m for m in negated)) for score, negated in heap)
            for size, heap in sorted(self.heaps.items())
        }


@dataclass
class SearchResult:
    method: str  # exhaustive or greedy
    evaluated: int  # blends scored
    seconds: float
    by_size: dict[int, list[Blend]] = field(default_factory=dict)  # best first, per size

    def top(self, n: int) -> list[Blend]:
        return ranked(blend for blends in self.by_size.values() for blend in blends)[:n]

    @property
    def best(self) -> Blend:
        return self.top(1)[0]


def count_blends(n: int, sizes: Iterable[int]) -> int:
    return sum(math.comb(n, k) for k in set(sizes))


def choose_method(method: str, n: int, sizes: Iterable[int]) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method != "auto":
        return method
    return "exhaustive" if count_blends(n, sizes) <= EXHAUSTIVE_LIMIT else "greedy"


def search(
    tables: BlendTables,
    sizes: Sequence[int],
    method: str = "auto",
    keep: int = 10,
    workers: int = 1,
    progress: bool = False,
) -> SearchResult:
    """The `keep` best blends of each of `sizes` (1 <= size <= candidates) found by `method`."""
    sizes = sorted(set(sizes))
    if not sizes or sizes[0] < 1 or sizes[-1] > tables.count:
        raise ValueError(f"sizes must lie between 1 and {tables.count}, got {sizes}")
    method = choose_method(method, tables.count, sizes)
    started = time.perf_counter()
    best = BestBlends(keep)
    with Workers(tables, workers) as pool:
        if method == "exhaustive":
            evaluated = _exhaustive(tables.count, sizes, keep, pool, best, progress)
        else:
            evaluated = _greedy(tables.count, sizes, pool, best, progress)
    return SearchResult(method, evaluated, time.perf_counter() - started, best.by_size())


# --------------------------------------------------------------------------------------
# Worker processes
# --------------------------------------------------------------------------------------

_TABLES: BlendTables | None = None  # the tables this process scores
_BUFFERS: dict[tuple, list[np.ndarray]] = {}  # reused sums, one per depth, per table shape


def _adopt(tables: BlendTables) -> None:
    """A worker's set-up (after `as_child`): the tables it scores."""
    global _TABLES
    _TABLES = tables


def _buffers(shape: tuple[int, ...], count: int) -> list[np.ndarray]:
    held = _BUFFERS.setdefault(shape, [])
    while len(held) < count:
        held.append(np.empty(shape))
    return held


class Workers:
    """Tasks run by `workers` processes that hold the tables (fork: shared, not copied), or in
    this process for one worker. Leaving the block stops them, also on Ctrl-C."""

    def __init__(self, tables: BlendTables, workers: int) -> None:
        self.tables, self.workers, self.pool = tables, max(1, workers), None

    def __enter__(self) -> Workers:
        global _TABLES
        if self.workers == 1:
            _TABLES = self.tables
            return self
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        self.pool = start_pool(context, self.workers, _adopt, (self.tables,))
        return self

    def __exit__(self, kind, error, trace) -> None:
        global _TABLES
        _TABLES = None
        _BUFFERS.clear()  # this process's sums, when it scored the blends itself
        if self.pool is not None:
            if kind is None:
                self.pool.close()
            else:
                self.pool.terminate()
            self.pool.join()

    def map(self, function: Callable, tasks: Sequence) -> Iterator:
        """Results in the order the tasks finish."""
        if self.pool is None:
            return map(function, tasks)
        return pool_map(self.pool, function, tasks, ordered=False)


def _bar(progress: bool, total: int | None, what: str) -> tqdm:
    return tqdm(total=total, desc=what, unit=" blends", disable=not progress, smoothing=0.1)


# --------------------------------------------------------------------------------------
# Every combination
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Walk:
    """All blends whose members start with `prefix` (ascending), of the sizes in `wanted`,
    at most `deepest` members."""

    prefix: tuple[int, ...]
    wanted: frozenset[int]
    deepest: int
    keep: int
    n: int

    @property
    def blends(self) -> int:
        last = self.prefix[-1] if self.prefix else -1
        depth = len(self.prefix)
        return sum(math.comb(self.n - 1 - last, k - depth) for k in self.wanted if k >= depth)


def _plan(n: int, sizes: Sequence[int], keep: int, workers: int) -> list[_Walk]:
    """Subtrees of the enumeration small enough to share out evenly (largest first), and one
    walk for the sizes above the subtrees' depth."""
    wanted, deepest = frozenset(sizes), max(sizes)
    target = max(2_000, count_blends(n, sizes) // (16 * workers))
    depth = 1
    while depth < deepest and _Walk(tuple(range(depth)), wanted, deepest, keep, n).blends > target:
        depth += 1
    walks = []
    shallow = frozenset(k for k in wanted if k < depth)
    if shallow:
        walks.append(_Walk((), shallow, depth - 1, keep, n))
    deep = frozenset(k for k in wanted if k >= depth)
    for prefix in combinations(range(n), depth):
        walk = _Walk(prefix, deep, deepest, keep, n)
        if walk.blends:
            walks.append(walk)
    return sorted(walks, key=lambda walk: -walk.blends)


def _walk(walk: _Walk) -> tuple[int, BestBlends]:
    """Score every blend of `walk` depth first: a blend's sum is its parent's plus one table."""
    tables = _TABLES
    logs, shape = tables.logs_t, tables.logs_t.shape[1:]
    buffers = _buffers(shape, walk.deepest + 2)
    scratch = buffers[-1]
    sums: list[np.ndarray | None] = [None] * (walk.deepest + 1)
    best = BestBlends(walk.keep)
    lowest = min(walk.wanted)
    count = 0

    def extend(depth: int, member: int) -> None:
        if depth == 1:
            sums[1] = logs[member]
        else:
            sums[depth] = np.add(sums[depth - 1], logs[member], out=buffers[depth])

    def visit(members: tuple[int, ...]) -> None:
        nonlocal count
        depth = len(members)
        if depth in walk.wanted:
            if depth == 1:
                score = tables.score(members)
            else:
                score = tables.blend_score(sums[depth], depth, scratch)
            best.add(score, members)
            count += 1
        if depth == walk.deepest:
            return
        for member in range(members[-1] + 1 if members else 0, walk.n):
            if depth + walk.n - member < lowest:
                break  # the members left cannot make the smallest size asked
            extend(depth + 1, member)
            visit((*members, member))

    for depth, member in enumerate(walk.prefix, start=1):
        extend(depth, member)
    visit(walk.prefix)
    return count, best


def _exhaustive(
    n: int, sizes: Sequence[int], keep: int, pool: Workers, best: BestBlends, progress: bool
) -> int:
    walks = _plan(n, sizes, keep, pool.workers)
    evaluated = 0
    with _bar(progress, count_blends(n, sizes), "every blend") as bar:
        for count, found in pool.map(_walk, walks):
            best.merge(found)
            evaluated += count
            bar.update(count)
    return evaluated


# --------------------------------------------------------------------------------------
# Greedy forward selection, then swaps
# --------------------------------------------------------------------------------------


def _score_sets(sets: Sequence[tuple[int, ...]]) -> list[float]:
    tables = _TABLES
    scratch = _buffers(tables.logs_t.shape[1:], 1)[0]
    return [tables.score(members, scratch) for members in sets]


def _greedy(n: int, sizes: Sequence[int], pool: Workers, best: BestBlends, progress: bool) -> int:
    """Forward selection up to the largest size (at each step the one experiment that helps
    most), then, from its blend of each size asked, swaps of one member for one outsider while
    one improves the score (hill-climbing). Every blend scored counts for the table."""
    wanted = set(sizes)
    scored: dict[tuple[int, ...], float] = {}
    bar = _bar(progress, None, "greedy search")

    def score_all(sets: list[tuple[int, ...]]) -> list[float]:
        new = [s for s in dict.fromkeys(sets) if s not in scored]
        chunk = max(1, math.ceil(len(new) / (4 * pool.workers)))
        batches = [tuple(new[i : i + chunk]) for i in range(0, len(new), chunk)]
        for batch, scores in pool.map(_score_batch, batches):
            for members, score in zip(batch, scores):
                scored[members] = score
                if len(members) in wanted:
                    best.add(score, members)
            bar.update(len(batch))
        return [scored[s] for s in sets]

    with bar:
        path: dict[int, tuple[float, tuple[int, ...]]] = {}
        members: tuple[int, ...] = ()
        while len(members) < max(sizes):
            options = [tuple(sorted((*members, x))) for x in range(n) if x not in members]
            scores = score_all(options)
            pick = int(np.argmax(scores))
            members = options[pick]
            path[len(members)] = (scores[pick], members)
        for size in sorted(wanted):
            score, members = path[size]
            for _ in range(MAX_SWAP_ROUNDS):
                outside = [x for x in range(n) if x not in members]
                options = [
                    tuple(sorted((*(m for m in members if m != out), x)))
                    for out in members
                    for x in outside
                ]
                if not options:
                    break
                scores = score_all(options)
                pick = int(np.argmax(scores))
                if scores[pick] <= score:
                    break
                score, members = scores[pick], options[pick]
    return len(scored)


def _score_batch(batch: tuple[tuple[int, ...], ...]) -> tuple[tuple, list[float]]:
    return batch, _score_sets(batch)


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
