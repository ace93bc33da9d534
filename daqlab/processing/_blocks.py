"""One primitive that runs a function block by block along time, exactly as on the whole series.

Every processing step is written as a function of one block of samples (all
channels of a channel chunk, a span of time) that may see some samples before
and after its block (``before``/``after``: a window) and may carry a state
from the previous block to the next (``carry``: a scan, as an IIR filter
needs). :func:`sweep` wires such a function into a dask graph with
``to_delayed``/``from_delayed``, so the answer does not depend on the chunk
sizes, even when a block is shorter than the window it needs. On numpy arrays
the function is called once on the whole series.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph
from numpy.typing import NDArray

__all__ = ["Span", "is_lazy", "sweep"]


@dataclass(frozen=True)
class Span:
    """Where a block lies: its core samples ``[start, stop)`` of ``total``.

    The arrays given to a block function hold ``lead`` samples before the core
    and ``trail`` after it (fewer than asked for near the ends of the series).
    """

    start: int
    stop: int
    lead: int
    trail: int
    total: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def core(self) -> slice:
        """The core samples within the arrays given to the block function."""
        return slice(self.lead, self.lead + self.size)


BlockFunc = Callable[[Sequence[NDArray[Any]], Span, Any], tuple[tuple[NDArray[Any], ...], Any]]
"""``func(arrays, span, state) -> (outputs, next_state)``; ``state`` is None for the first block."""


def is_lazy(array: Any) -> bool:
    return isinstance(array, da.Array)


def _window(parts: Sequence[NDArray[Any]], lo: int, hi: int) -> NDArray[Any]:
    """Samples ``[lo, hi)`` of the concatenation of ``parts`` along time (each part cut first, so a
    short look-back does not copy a whole neighbouring block)."""
    if len(parts) == 1:
        return parts[0][..., lo:hi]
    pieces = []
    start = 0
    for part in parts:
        n = part.shape[-1]
        a, b = max(lo - start, 0), min(hi - start, n)
        if b > a:
            pieces.append(part[..., a:b])
        start += n
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=-1)


def _call(func: BlockFunc, span: Span, state: Any, n_in: int, *parts: Any) -> Any:
    """Run ``func`` on one block. ``parts`` are (lo, hi, blocks) per input; ``state`` is what the
    block before returned (a scan) or None."""
    arrays = [_window(blocks, lo, hi) for lo, hi, blocks in parts[:n_in]]
    return func(arrays, span, state)


def _output(result: Any, k: int) -> Any:
    return result[0][k]


def _state(result: Any) -> Any:
    return result[1]


def sweep(
    arrays: Sequence[Any],
    func: BlockFunc,
    *,
    label: str,
    token: Any,
    n_out: int,
    dtypes: Sequence[Any],
    before: int = 0,
    after: int = 0,
    carry: bool = False,
    out_len: Callable[[int, int], int] | None = None,
) -> tuple[Any, ...]:
    """Apply ``func`` along the time axis (the last) of ``arrays`` (channel x time).

    ``token`` must identify the function and its parameters (it names the dask
    keys). ``out_len(start, stop)`` gives the number of output samples of the
    block with core ``[start, stop)`` when it is not the block's size
    (decimation, resampling). With ``carry`` the blocks of one channel chunk run
    in order, each getting the state the previous one returned.
    """
    first = arrays[0]
    if not any(is_lazy(a) for a in arrays):
        total = first.shape[-1]
        outs, _ = func(list(arrays), Span(0, total, 0, 0, total), None)
        return tuple(outs)
    x = da.asarray(first)  # type: ignore[no-untyped-call]
    ins = [x] + [da.asarray(a).rechunk(x.chunks) for a in arrays[1:]]  # type: ignore[no-untyped-call]
    total = x.shape[-1]
    bounds = [0, *itertools.accumulate(x.chunks[-1])]
    token = tokenize(*(a.name for a in ins), token, before, after, carry)
    call, names = f"daqlab-{label}-call-{token}", [f"daqlab-{label}-{k}-{token}" for k in range(n_out)]
    # a plain task graph, O(blocks): dask.delayed with collections as arguments is quadratic here
    layer: dict[Any, Any] = {}
    for j in range(len(x.chunks[0])):
        for i in range(len(bounds) - 1):
            start, stop = bounds[i], bounds[i + 1]
            lo, hi = max(0, start - before), min(total, stop + after)
            # the blocks that hold samples [lo, hi): lo may reach back, hi ahead, over several
            first_block = min(i, bisect.bisect_right(bounds, lo) - 1)
            last_block = max(i, bisect.bisect_left(bounds, hi) - 1)
            # lists, not tuples: dask looks for keys inside lists only
            parts = [[lo - bounds[first_block], hi - bounds[first_block],
                      [(a.name, j, k) for k in range(first_block, last_block + 1)]] for a in ins]
            # the next block depends on the state alone: a block's outputs are freed once read
            previous = (f"{call}-state", j, i - 1) if carry and i > 0 else None
            span = Span(start, stop, start - lo, hi - stop, total)
            layer[(call, j, i)] = (_call, func, span, previous, len(ins), *parts)
            if carry:
                layer[(f"{call}-state", j, i)] = (_state, (call, j, i))
            for k in range(n_out):
                layer[(names[k], j, i)] = (_output, (call, j, i), k)
    sizes = tuple(out_len(a, b) if out_len is not None else b - a for a, b in itertools.pairwise(bounds))
    return tuple(
        da.Array(HighLevelGraph.from_collections(names[k], layer, dependencies=ins),  # type: ignore[no-untyped-call]
                 names[k], chunks=(x.chunks[0], sizes), dtype=dtypes[k])
        for k in range(n_out)
    )
