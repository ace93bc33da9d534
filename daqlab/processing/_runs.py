"""What every step does around its arithmetic: check the run and parameters, rebuild the output run,
and write down how it was made."""

from __future__ import annotations

import math
import uuid
from typing import Any, cast

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from daqlab._version import __version__
from daqlab.checks import as_float, is_real, is_whole
from daqlab.errors import ProcessingError, SchemaError
from daqlab.run import coords_in_memory, iso_utc, validate

__all__ = ["HISTORY_KEY", "check_number", "history", "processed_attrs", "rebuild", "source_arrays"]

HISTORY_KEY = "processing"
"""``run.attrs["metadata"][HISTORY_KEY]``: the steps that made a processed run, oldest first."""


def source_arrays(run: object, step: str) -> tuple[xr.Dataset, Any, Any]:
    """The checked run, its ``value`` and ``quality`` arrays (numpy or dask, unloaded)."""
    if not isinstance(run, xr.Dataset):
        raise ProcessingError(
            f"{step} takes a run (an xarray.Dataset from daqlab.make_run or daqlab.open_run); "
            f"got {type(run).__name__}."
        )
    try:
        run = coords_in_memory(run)  # first: validating lazy coordinates would compute them many times
        validate(run, check_data=False)
    except SchemaError as exc:
        raise ProcessingError(f"{step} cannot process this dataset: it is not a valid run. {exc}") from exc
    return run, run["value"].data, run["quality"].data


def check_number(
    step: str, name: str, value: object, *, integer: bool = False, minimum: float | None = None,
    hint: str = "",
) -> Any:
    """A finite (integer) number at or above ``minimum``, or a ProcessingError saying so."""
    kind = "an integer" if integer else "a number"
    ok_type = is_whole(value) if integer else is_real(value)
    number = cast(Any, value)
    if not ok_type or not math.isfinite(as_float(number)):
        raise ProcessingError(f"{step}: {name} must be {kind}; got {value!r}. {hint}".rstrip())
    if minimum is not None and as_float(number) < minimum:
        raise ProcessingError(f"{step}: {name} must be at least {minimum:g}; got {value!r}. {hint}".rstrip())
    return int(number) if integer else float(number)


def history(run: xr.Dataset) -> list[dict[str, Any]]:
    """The processing steps recorded in ``run``'s metadata (oldest first)."""
    steps = run.attrs.get("metadata", {}).get(HISTORY_KEY, [])
    return [dict(s) for s in steps] if isinstance(steps, list) else []


def rebuild(
    run: xr.Dataset,
    value: Any,
    quality: Any,
    *,
    step: str,
    params: dict[str, Any],
    times: NDArray[np.datetime64] | None = None,
    sample_rate: float | None = None,
) -> xr.Dataset:
    """The processed run: new values and flags, the same channels, a new id, and the step
    appended to ``metadata["processing"]``. ``raw`` is dropped: after processing there is no raw
    value to go back to."""
    # the same time coordinate when it does not change: no copy of a long time axis
    time = run["time"] if times is None else ("time", times, dict(run["time"].attrs))
    out = xr.Dataset(
        {
            "value": (("channel", "time"), value, dict(run["value"].attrs)),
            "quality": (("channel", "time"), quality.astype(np.int8, copy=False), dict(run["quality"].attrs)),
        },
        coords={**{name: c for name, c in run.coords.items() if "time" not in c.dims}, "time": time},
    )
    out.attrs = processed_attrs(run, step=step, params=params, sample_rate=sample_rate)
    return out


def processed_attrs(
    run: xr.Dataset, *, step: str, params: dict[str, Any], sample_rate: float | None = None
) -> dict[str, Any]:
    """The attributes of a run that ``step`` made from ``run``: a new id and creation time, and the
    step appended to ``metadata["processing"]``."""
    metadata = dict(run.attrs.get("metadata", {}))
    entry = {"step": step, "params": params, "input_id": run.attrs.get("id"),
             "daqlab_version": __version__, "at": iso_utc()}
    metadata[HISTORY_KEY] = [*history(run), entry]
    return {
        **run.attrs,
        "id": str(uuid.uuid4()),
        "created_at": iso_utc(),
        "sample_rate": float(run.attrs["sample_rate"] if sample_rate is None else sample_rate),
        "metadata": metadata,
    }
