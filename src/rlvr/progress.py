"""Progress bars over generated samples (evaluation, suites, rejection sampling, batch sampling), with tokens/s and ETA."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# The runner's progress callback: (samples done now, samples in all, new tokens).
Advance = Callable[[int, int, int], None]


@contextmanager
def sample_bars(console: Console) -> Iterator[Callable[[str], Advance]]:
    """Yields `bar(label)`, which adds a bar and returns the runner's progress callback for it (one for `rlvr eval`,
    one per evaluation of a suite)."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[tps]:.0f} tok/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as bars:

        def bar(label: str) -> Advance:
            task = bars.add_task(label, total=None, tps=0.0)
            started, tokens = time.perf_counter(), 0

            def advance(done: int, total: int, new_tokens: int) -> None:
                nonlocal tokens
                tokens += new_tokens
                bars.update(task, advance=done, total=total, tps=tokens / max(time.perf_counter() - started, 1e-9))

            return advance

        yield bar
