"""Interleaving loaded sources by weight into one endless, seeded stream, and carving off a held-out split."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from functools import lru_cache
from itertools import accumulate
from typing import Generic, Protocol, TypeVar

from rlvr.data.source import Row, Source
from rlvr.errors import ConfigError
from rlvr.seeds import named_rng

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Stream(Protocol[T_co]):
    """An endless source, such as a procedurally generated task: item k exists for every k >= 0."""

    def __getitem__(self, index: int) -> T_co: ...


class Mixture(Generic[T]):
    """An endless stream of items drawn from several sources by weight; item i is a pure function of (seed, i).

    The stream is cut into blocks of BLOCK positions. Each block picks a source per position with its
    own RNG seeded by (seed, block), so any block can be rebuilt alone. Within a finite source (a list),
    its k-th draw is row `order[k % n]` of epoch `k // n`, each epoch a fresh seeded shuffle: every row is
    seen once per epoch. Within an endless source (a `Stream`), its k-th draw is simply its item k.
    k comes from per-source draw counts before each block, kept as a small prefix table.
    """

    BLOCK = 1024

    def __init__(self, sources: Sequence[tuple[Source, Sequence[T] | Stream[T]]], seed: int) -> None:
        if not sources:
            raise ValueError("a Mixture needs at least one source")
        empty = [source.path for source, rows in sources if isinstance(rows, Sequence) and not rows]
        if empty:
            raise ValueError(f"sources without rows: {', '.join(empty)}")
        self.seed = seed
        self._rows: list[list[T] | Stream[T]] = [list(rows) if isinstance(rows, Sequence) else rows for _, rows in sources]
        self._cumulative = list(accumulate(source.weight for source, _ in sources))
        # _starts[b][s]: how many times source s was drawn before block b.
        self._starts: list[list[int]] = [[0] * len(sources)]
        self._block = lru_cache(maxsize=4)(self._block_draws)
        self._order = lru_cache(maxsize=2 * len(sources))(self._epoch_order)

    def rows(self, start: int, count: int) -> list[T]:
        """Items start .. start+count-1 of the stream (the same however the range is chunked)."""
        if start < 0 or count < 0:
            raise ValueError(f"start and count must be >= 0, got {start}, {count}")
        return [self.row(index) for index in range(start, start + count)]

    def row(self, index: int) -> T:
        block, offset = divmod(index, self.BLOCK)
        source, draw_in_block = self._block(block)[offset]
        rows = self._rows[source]
        draw = self._block_start(block)[source] + draw_in_block
        if not isinstance(rows, list):
            return rows[draw]
        epoch, position = divmod(draw, len(rows))
        return rows[self._order(source, epoch)[position]]

    def _block_draws(self, block: int) -> list[tuple[int, int]]:
        """(source, how many earlier positions of this block drew that source) for each position."""
        rng = named_rng("mixture", self.seed, block)
        total = self._cumulative[-1]
        counts = [0] * len(self._rows)
        draws = []
        for _ in range(self.BLOCK):
            # min(): rounding can make random() * total == total, one past the last source.
            source = min(bisect_right(self._cumulative, rng.random() * total), len(self._rows) - 1)
            draws.append((source, counts[source]))
            counts[source] += 1
        return draws

    def _block_start(self, block: int) -> list[int]:
        while len(self._starts) <= block:
            done = len(self._starts) - 1
            counts = list(self._starts[done])
            for source, _ in self._block(done):
                counts[source] += 1
            self._starts.append(counts)
        return self._starts[block]

    def _epoch_order(self, source: int, epoch: int) -> list[int]:
        order = list(range(len(self._rows[source])))
        named_rng("epoch", self.seed, source, epoch).shuffle(order)
        return order


def split_held_out(rows: Sequence[Row], size: int, seed: int) -> tuple[list[Row], list[Row]]:
    """(train, eval): `size` distinct questions held out, chosen by `seed`; both keep the input order.

    Rows are grouped by question text so no question is in both: eval gets the first row of each
    held-out question, and every row of a held-out question is kept out of train.
    """
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    questions = list(dict.fromkeys(row.question for row in rows))
    if size >= len(questions):
        raise ConfigError(f"held-out size {size}: only {len(questions)} distinct questions, none would be left to train on")
    held_out = set(named_rng("held-out", seed).sample(questions, size))
    train = [row for row in rows if row.question not in held_out]
    first: dict[str, Row] = {}
    for row in rows:
        if row.question in held_out:
            first.setdefault(row.question, row)
    return train, list(first.values())
