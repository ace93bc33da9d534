"""Trees of runs: a recording of several rate groups (DESIGN.md, "Several rates").

A tree is an :class:`xarray.DataTree` whose nodes holding data are each a valid run (one per
source, stream or channel group, at its own rate) or an *events* node (markers and
annotations). Its root holds the recording's attributes: ``id``, ``name``, ``description``,
``created_at`` and ``metadata``. A single run is a tree of one node: the root is the run.

An events node (:func:`make_events`)::

    Dimensions:  (event: E)
    Coordinates:
        time      (event) datetime64[ns]     when each event happened (UTC)
    Data variables:
        label     (event) str                the marker or annotation text
        duration  (event) float64            seconds; NaN where the event has none
    Attributes:
        daqlab_node "events"     name  str     metadata  dict

>>> import daqlab as dl
>>> fast = dl.make_run([[0.0, 1.0, 2.0, 3.0]], ["acc"], sample_rate=4.0, start="2024-01-01")
>>> slow = dl.make_run([[20.5]], ["temp"], sample_rate=1.0, start="2024-01-01")
>>> tree = make_tree({"fast": fast, "slow": slow}, name="bench")
>>> sorted(run_nodes(tree))
['/fast', '/slow']
>>> tree.attrs["name"]
'bench'
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import ArrayLike

from daqlab.checks import shown
from daqlab.errors import ConfigurationError, NotFoundError, SchemaError
from daqlab.model import numbered
from daqlab.run import iso_utc
from daqlab.schema import check_metadata, validate

__all__ = [
    "EVENTS",
    "TREE_ATTRS",
    "as_tree",
    "check_tree",
    "events_nodes",
    "is_events",
    "is_run",
    "make_events",
    "make_tree",
    "node_id",
    "node_names",
    "root_attrs",
    "run_nodes",
    "single_run",
    "tree_attrs",
]

EVENTS = "events"
"""The ``daqlab_node`` attribute of an events node."""

TREE_ATTRS = ("id", "name", "description", "created_at", "metadata")
"""The attributes of a tree's root (a recording), in order."""

_BAD_NODE_CHARS = re.compile(r"[/\x00]")


def node_names(names: Iterable[object]) -> list[str]:
    """Node names for ``names`` (a source's, stream's or group's own names): ``/`` and NUL
    replaced by ``_``, empty ones and xarray's reserved ``.``/``..`` named ``node``, and
    repeats made unique with ``_2``, ``_3``... The original name stays in each node's
    ``name`` attribute.

    >>> node_names(["fast", "a/b", "", "fast", ".."])
    ['fast', 'a_b', 'node', 'fast_2', 'node_2']
    """
    cleaned = (_BAD_NODE_CHARS.sub("_", str(raw)).strip() for raw in names)
    return numbered(name if name not in ("", ".", "..") else "node" for name in cleaned)


def node_id(tree_id: str, node: str) -> str:
    """A UUID for node ``node`` of the tree ``tree_id`` that is the same every time the same
    file is opened (for files that do not store one per group).

    >>> node_id("52652a76-aae1-4efd-8e25-c6b8ebd8da6f", "fast")
    'b0207da0-add0-4378-8760-25131edbe627'
    """
    digest = hashlib.sha256(f"{tree_id}/{node}".encode("utf-8", "surrogatepass")).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def is_run(ds: xr.Dataset) -> bool:
    """True if the node ``ds`` holds a run (a ``value`` over ``channel`` x ``time``)."""
    return "value" in ds.data_vars and ds.get("value") is not None and \
        tuple(ds["value"].dims) == ("channel", "time")


def is_events(ds: xr.Dataset) -> bool:
    """True if the node ``ds`` is an events node (:func:`make_events`)."""
    return ds.attrs.get("daqlab_node") == EVENTS


def make_events(
    times: ArrayLike,
    labels: Iterable[object],
    durations: ArrayLike | None = None,
    *,
    name: str = "events",
    metadata: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """An events node: markers or annotations at ``times`` (datetime64 or int ns since the
    epoch, UTC) with text ``labels`` and optional ``durations`` in seconds (NaN where none).
    Events are sorted by time (stable: equal times keep their order)."""
    t = np.asarray(times)
    t = t.astype("datetime64[ns]") if t.dtype.kind == "M" else np.asarray(t, np.int64).astype(
        "datetime64[ns]")
    text = np.array([str(x) for x in labels], dtype=object)
    dur = (np.full(t.shape, np.nan) if durations is None
           else np.asarray(durations, dtype=np.float64))
    if not (t.ndim == 1 and text.shape == t.shape and dur.shape == t.shape):
        raise ConfigurationError(
            f"an events node needs one time, one label and one duration per event; got "
            f"{t.shape} times, {text.shape} labels and {dur.shape} durations.")
    order = np.argsort(t, kind="stable")
    return xr.Dataset(
        {"label": ("event", text[order], {"long_name": "event label"}),
         "duration": ("event", dur[order], {"long_name": "event duration", "units": "s"})},
        coords={"time": ("event", t[order])},
        attrs={"daqlab_node": EVENTS, "name": str(name),
               "metadata": check_metadata(dict(metadata or {}))},
    )


def tree_attrs(*, id: str | None = None, name: str = "", description: str = "",
               created_at: Any = None, metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A tree root's attributes, checked (a new id where none is given)."""
    for label, text in (("name", name), ("description", description)):
        if not isinstance(text, str):
            raise ConfigurationError(f"a tree's {label} must be a str; got {shown(text)}.")
    try:
        tid = str(uuid.UUID(str(id))) if id is not None else str(uuid.uuid4())
    except ValueError:
        raise ConfigurationError(f"a tree's id must be a UUID; got {shown(id)}.") from None
    return {"id": tid, "name": name, "description": description,
            "created_at": iso_utc(created_at), "metadata": check_metadata(dict(metadata or {}))}


def root_attrs(tree: xr.DataTree) -> dict[str, Any]:
    """The root attributes of ``tree`` checked, with defaults for those it lacks (a new id,
    ``created_at`` the earliest of its runs', empty name, description and metadata); other
    attributes are kept after them."""
    given = {str(k): v for k, v in tree.attrs.items()}
    if "created_at" not in given:
        starts = [ds.attrs["created_at"] for ds in run_nodes(tree).values() if "created_at" in ds.attrs]
        given["created_at"] = min(starts) if starts else None
    checked = tree_attrs(**{k: given.pop(k) for k in TREE_ATTRS if k in given})
    return {**checked, **given}


def make_tree(
    nodes: Mapping[str, xr.Dataset],
    *,
    id: str | None = None,
    name: str = "",
    description: str = "",
    created_at: Any = None,
    metadata: Mapping[str, Any] | None = None,
) -> xr.DataTree:
    """A tree of runs (and events nodes) from ``nodes`` (node name -> run or events node).

    Names are used as given and must be valid node names (:func:`node_names` makes them);
    ``created_at`` defaults to the earliest ``created_at`` of the runs."""
    if not nodes:
        raise ConfigurationError("a tree needs at least one run; got no nodes.")
    bad = [k for k in nodes if not isinstance(k, str) or node_names([k]) != [k]]
    if bad:
        raise ConfigurationError(
            f"node names {bad!r} are not valid (no '/', not empty, not '.' or '..'); "
            "make them with daqlab.tree.node_names(...).")
    for key, ds in nodes.items():
        if not isinstance(ds, xr.Dataset) or not (is_run(ds) or is_events(ds)):
            raise ConfigurationError(
                f"node {key!r} must be a run or an events node (daqlab.tree.make_events); got "
                f"{type(ds).__name__}.")
    if created_at is None:
        starts = [ds.attrs["created_at"] for ds in nodes.values() if is_run(ds)]
        created_at = min(starts) if starts else None
    root = xr.Dataset(attrs=tree_attrs(id=id, name=name, description=description,
                                       created_at=created_at, metadata=metadata))
    return xr.DataTree.from_dict({"/": root, **{f"/{k}": v for k, v in nodes.items()}})


def as_tree(run: xr.Dataset) -> xr.DataTree:
    """A single run as a tree of one node (the root is the run)."""
    return xr.DataTree(dataset=run)


def run_nodes(tree: xr.DataTree) -> dict[str, xr.Dataset]:
    """Every run in ``tree``, by node path (``"/"`` for a run at the root), in tree order."""
    return {node.path: node.to_dataset(inherit=False) for node in tree.subtree
            if is_run(node.to_dataset(inherit=False))}


def events_nodes(tree: xr.DataTree) -> dict[str, xr.Dataset]:
    """Every events node in ``tree``, by node path."""
    return {node.path: node.to_dataset(inherit=False) for node in tree.subtree
            if is_events(node.to_dataset(inherit=False))}


def _group_key(group: str) -> str:
    return "/" + group.strip("/") if group.strip("/") else "/"


def single_run(tree: xr.DataTree, group: str | None, what: str) -> xr.Dataset:
    """The run at ``group`` (a node path such as ``"fast"`` or ``"/fast"``), or the tree's only
    run when ``group`` is None; a NotFoundError names the groups otherwise. ``what`` names the
    file in messages."""
    runs = run_nodes(tree)
    if group is None:
        if len(runs) == 1:
            return next(iter(runs.values()))
        raise NotFoundError(
            f"{what} holds {len(runs)} runs (groups {list(runs)}); open one with "
            f"open_run(path, group={next(iter(runs), '/')!r}), or all with open_tree(path)."
            if runs else f"{what} holds no run.")
    if not isinstance(group, str):
        raise ConfigurationError(f"group must be a node path such as 'fast' or '/fast'; got "
                                 f"{shown(group)}.")
    key = _group_key(group)
    if key not in runs:
        raise NotFoundError(f"{what} has no run at group {group!r}; its runs are at {list(runs)}.")
    return runs[key]


def check_tree(tree: object, *, check_data: bool = True) -> xr.DataTree:
    """``tree`` if it is a DataTree whose data nodes are each a valid run or events node, and
    which holds at least one (a file of markers only is a tree of events nodes); one
    SchemaError listing every problem otherwise."""
    if isinstance(tree, xr.Dataset):
        return as_tree(validate(tree, check_data=check_data))
    if not isinstance(tree, xr.DataTree):
        raise ConfigurationError(f"expected a run (xarray.Dataset) or a tree of runs "
                                 f"(xarray.DataTree); got {type(tree).__name__}.")
    problems: list[str] = []
    runs = 0
    for node in tree.subtree:
        ds = node.to_dataset(inherit=False)
        if is_events(ds):
            runs += 1
            if not {"label", "duration", "time"} <= set(ds.variables):
                problems.append(f"events node {node.path}: needs time, label and duration")
            continue
        if is_run(ds):
            runs += 1
            try:
                validate(ds, check_data=check_data)
            except SchemaError as exc:
                problems.extend(f"node {node.path}: {p}" for p in exc.problems)
        elif ds.data_vars:
            problems.append(f"node {node.path}: data variables {sorted(map(str, ds.data_vars))} "
                            "but no run (value over channel x time) and not an events node")
    if runs == 0:
        problems.append("no node holds a run or events")
    if problems:
        raise SchemaError(problems, what="tree of runs", hint=(
            "every node with data must be a run (daqlab.make_run) or an events node "
            "(daqlab.tree.make_events); build trees with daqlab.tree.make_tree."))
    return tree

