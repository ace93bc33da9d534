"""Pipelines: steps composed, applied lazily, or streamed from one file to another out of core."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol, overload, runtime_checkable

import xarray as xr

from daqlab.checks import is_whole
from daqlab.errors import ProcessingError, SchemaError
from daqlab.io import format_for, open_tree, save
from daqlab.processing._average import moving_average
from daqlab.processing._filters import bandpass, decimate, highpass, lowpass
from daqlab.processing._resample import resample
from daqlab.processing._runs import history, processed_attrs, source_arrays
from daqlab.run import calibrate as _calibrate_run
from daqlab.run import validate
from daqlab.tree import check_tree, run_nodes

__all__ = [
    "BandPass",
    "Calibrate",
    "Decimate",
    "HighPass",
    "LowPass",
    "MovingAverage",
    "Pipeline",
    "Processor",
    "Resample",
    "calibrate",
]


@runtime_checkable
class Processor(Protocol):
    """A processing step: a ``name`` and ``process(run) -> run``.

    Give it a ``params`` mapping (JSON values) too, and a pipeline records it
    in the output run's ``metadata["processing"]``.
    """

    @property
    def name(self) -> str: ...

    def process(self, run: xr.Dataset) -> xr.Dataset: ...


def calibrate(run: xr.Dataset) -> xr.Dataset:
    """:func:`daqlab.calibrate` as a step: physical values, recorded in the run's processing history.

    >>> import daqlab as dl
    >>> ch = dl.Channel("t", "degC", calibration=dl.Calibration(slope=2.0, offset=1.0))
    >>> dl.processing.calibrate(dl.make_run([[1.0]], [ch], sample_rate=1.0)).value.values.tolist()
    [[3.0]]
    """
    run, _, _ = source_arrays(run, "calibrate")  # a ProcessingError for a non-run, as every step
    out = _calibrate_run(run)
    # a new run, as every step makes (new id, the step in its history); ``raw`` stays for uncalibrate
    out.attrs = processed_attrs(out, step="calibrate", params={})
    return out


class Step:
    """Base of the built-in steps: a function of the run and the parameters given at creation."""

    name: ClassVar[str]
    function: ClassVar[Callable[..., xr.Dataset]]

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = params

    def process(self, run: xr.Dataset) -> xr.Dataset:
        return type(self).function(run, **self.params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Step) and type(other) is type(self) and other.params == self.params

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.params.items()))))


class LowPass(Step):
    """:func:`lowpass` as a step."""

    name = "lowpass"
    function = staticmethod(lowpass)

    def __init__(self, cutoff: float, order: int = 4, *, zero_phase: bool = True) -> None:
        super().__init__(cutoff=cutoff, order=order, zero_phase=zero_phase)


class HighPass(Step):
    """:func:`highpass` as a step."""

    name = "highpass"
    function = staticmethod(highpass)

    def __init__(self, cutoff: float, order: int = 4, *, zero_phase: bool = True) -> None:
        super().__init__(cutoff=cutoff, order=order, zero_phase=zero_phase)


class BandPass(Step):
    """:func:`bandpass` as a step."""

    name = "bandpass"
    function = staticmethod(bandpass)

    def __init__(self, low: float, high: float, order: int = 4, *, zero_phase: bool = True) -> None:
        super().__init__(low=low, high=high, order=order, zero_phase=zero_phase)


class MovingAverage(Step):
    """:func:`moving_average` as a step."""

    name = "moving_average"
    function = staticmethod(moving_average)

    def __init__(self, window: int, *, center: bool = False) -> None:
        super().__init__(window=window, center=center)


class Decimate(Step):
    """:func:`decimate` as a step."""

    name = "decimate"
    function = staticmethod(decimate)

    def __init__(self, factor: int) -> None:
        super().__init__(factor=factor)


class Resample(Step):
    """:func:`resample` as a step."""

    name = "resample"
    function = staticmethod(resample)

    def __init__(self, rate: float) -> None:
        super().__init__(rate=rate)


class Calibrate(Step):
    """:func:`calibrate` as a step."""

    name = "calibrate"
    function = staticmethod(calibrate)


def _step_name(step: object) -> str:
    if isinstance(step, Processor):
        return str(step.name)
    if isinstance(step, functools.partial):
        return _step_name(step.func)
    return str(getattr(step, "__name__", type(step).__name__))


def _step_params(step: object) -> dict[str, Any]:
    if isinstance(step, functools.partial):
        return dict(step.keywords)
    params = getattr(step, "params", {})
    return dict(params) if isinstance(params, Mapping) else {}


class Pipeline:
    """Steps applied in order; lazy on dask-backed runs, and streamed file to file by :meth:`run`.

    A step is a :class:`Processor` (the built-in :class:`LowPass`,
    :class:`MovingAverage`, ... or your own object with ``name`` and
    ``process``) or a plain function ``run -> run`` (``functools.partial``
    works). The output run's ``metadata["processing"]`` lists every step with
    its parameters, so a processed file says how it was made.

    >>> import daqlab as dl
    >>> from daqlab.processing import LowPass, MovingAverage
    >>> pipe = dl.Pipeline([LowPass(cutoff=50.0), MovingAverage(window=5)])
    >>> pipe
    Pipeline([LowPass(cutoff=50.0, order=4, zero_phase=True), MovingAverage(window=5, center=False)])
    >>> run = dl.make_run(np.random.default_rng(0).normal(size=(2, 1000)), ["a", "b"], sample_rate=1e3)
    >>> out = pipe.apply(run.chunk({"time": 100}))      # lazy: nothing computed yet
    >>> [s["step"] for s in out.attrs["metadata"]["processing"]]
    ['lowpass', 'moving_average']
    >>> out.value.chunks is not None
    True
    """

    def __init__(self, steps: Iterable[Processor | Callable[[xr.Dataset], xr.Dataset]]) -> None:
        given: object = steps
        if isinstance(given, (str, bytes)) or not isinstance(given, Iterable):
            raise ProcessingError(
                f"Pipeline takes a list of steps; got {type(steps).__name__}. "
                "Example: Pipeline([LowPass(100.0), MovingAverage(10)])."
            )
        self.steps: list[Any] = list(steps)
        for i, step in enumerate(self.steps):
            if not (isinstance(step, Processor) or callable(step)):
                raise ProcessingError(
                    f"step {i} of the pipeline is {step!r} ({type(step).__name__}), which is neither "
                    "a Processor (an object with .name and .process(run)) nor a function run -> run."
                )

    def __repr__(self) -> str:
        return f"Pipeline([{', '.join(repr(s) for s in self.steps)}])"

    def describe(self) -> list[dict[str, Any]]:
        """The steps and their parameters, as they will be recorded in the output."""
        return [{"step": _step_name(s), "params": _step_params(s)} for s in self.steps]

    @overload
    def apply(self, run: xr.Dataset, chunks: int | None = None, *,
              groups: Iterable[str] | None = None) -> xr.Dataset: ...

    @overload
    def apply(self, run: xr.DataTree, chunks: int | None = None, *,
              groups: Iterable[str] | None = None) -> xr.DataTree: ...

    def apply(self, run: xr.Dataset | xr.DataTree, chunks: int | None = None, *,
              groups: Iterable[str] | None = None) -> xr.Dataset | xr.DataTree:
        """Run every step on ``run``; lazy when ``run`` is dask-backed (or ``chunks`` samples given).

        Given a tree of runs (``xarray.DataTree``), the steps run on each run node on its own
        (each at its own rate; ``groups``: only those nodes, e.g. ``["fast"]``, the others kept
        as they are) and a tree of the same shape is returned, events nodes and the root's
        attributes as they were. An error names the node it happened in."""
        if isinstance(run, xr.DataTree):
            return self._apply_tree(run, chunks, groups)
        if groups is not None:
            raise ProcessingError("groups= chooses nodes of a tree of runs; this is one run.")
        return self._apply_run(run, chunks)

    def _apply_tree(self, tree: xr.DataTree, chunks: int | None,
                    groups: Iterable[str] | None) -> xr.DataTree:
        check_tree(tree, check_data=False)
        runs = run_nodes(tree)
        if isinstance(groups, (str, bytes)) or not (groups is None or isinstance(groups, Iterable)):
            raise ProcessingError(f"groups must be a list of run nodes such as {list(runs)[:1]}; "
                                  f"got {groups!r}.")
        chosen = list(runs) if groups is None else ["/" + str(g).strip("/") for g in groups]
        unknown = [g for g in chosen if g not in runs]
        if unknown:
            raise ProcessingError(f"groups={groups!r}: {unknown} are not run nodes of this tree; its "
                                  f"runs are at {list(runs)}.")
        nodes = {node.path: node.to_dataset(inherit=False) for node in tree.subtree}
        for key, run in runs.items():
            if key not in chosen:
                continue
            try:
                nodes[key] = self._apply_run(run, chunks)
            except ProcessingError as exc:
                raise ProcessingError(f"in node {key} of the tree: {exc}") from exc
        return xr.DataTree.from_dict(nodes)

    def _apply_run(self, run: xr.Dataset, chunks: int | None) -> xr.Dataset:
        source_arrays(run, "Pipeline.apply")
        if chunks is not None:
            run = run.chunk({"time": chunks})
        for i, step in enumerate(self.steps):
            name = _step_name(step)
            before = len(history(run))
            out = step.process(run) if isinstance(step, Processor) else step(run)
            if not isinstance(out, xr.Dataset):
                raise ProcessingError(
                    f"step {i} ({name}) returned {type(out).__name__}, not a run; a step must return "
                    "an xarray.Dataset with the daqlab run schema."
                )
            try:
                validate(out, check_data=False)
            except SchemaError as exc:
                raise ProcessingError(
                    f"step {i} ({name}) returned a dataset that is not a run: {exc}"
                ) from exc
            if len(history(out)) <= before:  # a user's step: record it for it, keep all it made
                out = out.copy(deep=False)
                out.attrs = processed_attrs(out, step=name, params=_step_params(step))
            run = out
        return run

    def run(
        self,
        src: str | os.PathLike[str],
        dst: str | os.PathLike[str],
        *,
        chunk_size: int = 1 << 18,
        overwrite: bool = False,
        compression: bool = False,
        progress: bool = True,
        groups: Iterable[str] | None = None,
    ) -> Path:
        """Stream the run saved at ``src`` through the pipeline into a NetCDF file ``dst``, out of core.

        A file of several runs (a tree: rate groups, streams) is streamed node by node into a
        tree of the same shape (netCDF-4 groups); ``groups`` as in :meth:`apply`.

        The source is opened lazily in chunks of ``chunk_size`` samples: the
        samples in memory stay bounded by a few chunks per channel (plus the
        look-ahead a zero-phase filter needs), whatever the file's size. The
        time coordinate (8 bytes a sample) is held in memory, as for every run,
        in about four copies (as read, decoded, the output's, encoded for
        writing): for 8 channels x 16 M samples (a 1.2 GB file) the process
        peaked at 0.64x the file, against 0.36x for a dask worker doing the
        filtering (benchmarks/processing.py). Runs on the dask
        scheduler in use: threads by default, or a ``dask.distributed.Client``
        if one is active (then the workers must see ``dst``'s folder). The
        output is written under a temporary name and renamed when complete.
        """
        dst = Path(dst)
        fmt = format_for(dst, None)
        if fmt != "netcdf":
            raise ProcessingError(
                f"Pipeline.run writes NetCDF (.nc or .h5) out of core; {dst.name} asks for {fmt}. "
                "Write .nc, then `daqlab convert` it (or open_run + save for small runs)."
            )
        if not is_whole(chunk_size) or chunk_size < 1:
            raise ProcessingError(f"chunk_size must be a positive number of samples; got {chunk_size!r}.")
        # open in the file's own chunks (reading across them is slow), then cut to chunk_size
        tree = open_tree(src, chunks={})
        runs = run_nodes(tree)
        if list(runs) == ["/"]:
            out: xr.Dataset | xr.DataTree = self.apply(runs["/"].chunk({"time": int(chunk_size)}),
                                                       groups=groups)
        else:
            out = self.apply(xr.DataTree.from_dict({
                node.path: node.to_dataset(inherit=False) for node in tree.subtree}
                | {key: run.chunk({"time": int(chunk_size)}) for key, run in runs.items()}),
                groups=groups)
        if not progress:
            return save(out, dst, overwrite=overwrite, compression=compression)
        from tqdm.dask import TqdmCallback

        with TqdmCallback(desc=f"daqlab: {Path(src).name} -> {dst.name}", unit="task"):
            return save(out, dst, overwrite=overwrite, compression=compression)
