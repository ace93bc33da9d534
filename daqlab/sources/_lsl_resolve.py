"""Finding LSL streams and reading their info (for :mod:`daqlab.sources._lsl`).

What to resolve (``name``, ``type``, ``source_id``, ``query``, and the same for ``markers=``)
checked and turned into one XPath 1.0 predicate; the one stream that matches it (a
SourceError listing the visible streams when none or several do); and what a stream's info
says: a one-line summary, its identity for ``describe()``, its rate, its samples' numpy dtype
(numeric streams only), and its channels from ``desc/channels/channel`` with names made valid
and unique. Nothing here imports pylsl: the functions take the module or its ``StreamInfo``
objects.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

import numpy as np

from daqlab.checks import shown
from daqlab.errors import ChannelError, ConfigurationError, SourceError
from daqlab.model import Channel, ChannelLike, check_channel_name, numbered, to_channels
from daqlab.run import check_sample_rate

_SECOND_LOOK = 0.5
"""Seconds a resolve waits for a second match after the first, so an ambiguous query is caught."""
_KEYS = ("name", "type", "source_id", "query")
"""What a stream is asked for by (all that are given must hold)."""
_FORMATS = {0: "undefined", 1: "float32", 2: "double64", 3: "string", 4: "int32", 5: "int16", 6: "int8",
            7: "int64"}
"""liblsl's channel formats (``cf_*``) by number."""
_DTYPES = {1: np.float32, 2: np.float64, 4: np.int32, 5: np.int16, 6: np.int8, 7: np.int64}
"""The numeric ones, as numpy dtypes."""
_STRING = 3


def _literal(text: str) -> str:
    """``text`` as an XPath 1.0 string literal (which has no escapes: quotes need concat)."""
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    return "concat(" + ", \"'\", ".join(f"'{part}'" for part in text.split("'")) + ")"


def _criteria(name: object, type: object, source_id: object, query: object,
              what: str) -> dict[str, str]:
    got: dict[str, str] = {}
    for label, value in zip(_KEYS, (name, type, source_id, query), strict=True):
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise ConfigurationError(
                f"{what}{label} must be non-empty text or None; got {shown(value)}. "
                "Pass e.g. name='BioSemi', type='EEG' or query=\"starts-with(name, 'Bio')\".")
        got[label] = value
    return got


def _predicate(criteria: Mapping[str, str]) -> str:
    terms = [f"{k}={_literal(v)}" for k, v in criteria.items() if k != "query"]
    if "query" in criteria:
        terms.append(f"({criteria['query']})")
    return " and ".join(terms) or "true()"


def _asked(criteria: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in criteria.items()) or "any stream"


def _summary(info: Any) -> str:
    rate = float(info.nominal_srate())
    return (f"{info.name()!r} (type {info.type()!r}, {info.channel_count()} ch "
            f"{_FORMATS.get(int(info.channel_format()), '?')} at "
            f"{'irregular rate' if rate == 0 else f'{rate:g} Hz'}, source_id {info.source_id()!r}, "
            f"host {info.hostname()!r})")


def _unique(infos: Iterable[Any]) -> list[Any]:
    """The stream infos, each stream once (by its uid), in order."""
    return list({info.uid(): info for info in infos}.values())


def _visible(lsl: ModuleType, wait: float) -> str:
    try:
        infos = _unique(lsl.resolve_streams(wait))
    except RuntimeError as exc:
        return f"(listing the visible streams failed: {exc})"
    if not infos:
        return ("no LSL stream is visible from this machine (is the sending app running, and on "
                "this network? Firewalls must let LSL's UDP multicast and TCP through)")
    shown_ = "; ".join(_summary(i) for i in infos[:20])
    more = f" and {len(infos) - 20} more" if len(infos) > 20 else ""
    return f"the streams visible now are: {shown_}{more}"


def _resolve(lsl: ModuleType, criteria: Mapping[str, str], timeout: float, what: str) -> Any:
    """The one stream matching ``criteria``; a SourceError when none or several match."""
    pred = _predicate(criteria)
    began = time.monotonic()
    try:
        found = list(lsl.resolve_bypred(pred, 1, timeout))
        if found:  # a second look: a query that matches two streams must not pick one by chance
            found += lsl.resolve_bypred(pred, 2, min(_SECOND_LOOK, timeout))
    except RuntimeError as exc:
        raise SourceError(f"resolving the LSL {what} ({_asked(criteria)}) failed: {exc}.") from None
    unique = _unique(found)
    if not unique:
        quick = time.monotonic() - began < min(0.5 * timeout, 0.5)
        why = (f"liblsl refused the query at once: {pred!r} is not a valid XPath 1.0 predicate "
               "on a stream's <info> (e.g. \"name='EEG' and starts-with(type, 'E')\")"
               if quick else f"none matched {pred!r} within timeout={timeout:g} s")
        raise SourceError(
            f"no LSL {what} found for {_asked(criteria)}: {why}; {_visible(lsl, 1.0)}. "
            "Start the sending app first, or ask for one of the visible streams by name=, type=, "
            "source_id= or query=.")
    if len(unique) > 1:
        listed = "; ".join(_summary(i) for i in unique)
        raise SourceError(
            f"{len(unique)} LSL streams match {_asked(criteria)}: {listed}. Ask for one, e.g. by "
            f"source_id={unique[0].source_id()!r} or query=\"hostname='...'\".")
    return unique[0]


def _marker_criteria(markers: object) -> dict[str, str] | None:
    if markers is None:
        return None
    if isinstance(markers, str):
        return _criteria(markers, None, None, None, "markers ")
    if isinstance(markers, Mapping):
        unknown = sorted(set(markers) - set(_KEYS), key=str)
        if unknown or not markers:
            raise ConfigurationError(
                f"markers must be a stream name or a mapping of name/type/source_id/query; "
                f"got {shown(dict(markers))}. Pass e.g. markers={{'type': 'Markers'}}.")
        return _criteria(markers.get("name"), markers.get("type"), markers.get("source_id"),
                         markers.get("query"), "markers ")
    raise ConfigurationError(
        f"markers must be a stream name or a mapping such as {{'type': 'Markers'}}; got "
        f"{shown(markers)} ({type(markers).__name__}).")


def _stream_rate(info: Any, sample_rate: object) -> float:
    """The stream's nominal rate; for an irregular stream, ``sample_rate``, which it needs."""
    nominal = float(info.nominal_srate())
    if nominal > 0:
        if sample_rate is not None and check_sample_rate(sample_rate) != nominal:
            raise ConfigurationError(
                f"sample_rate={sample_rate!r} differs from the stream's nominal rate {nominal:g} Hz; "
                "leave sample_rate out for a regular stream (it is for irregular ones).")
        return nominal
    if sample_rate is None:
        raise ConfigurationError(
            f"the LSL stream {_summary(info)} has an irregular rate (nominal_srate 0); pass "
            "sample_rate=<the rate you expect, in Hz>, which sizes daqlab's buffers (each sample "
            "keeps its own time).")
    return check_sample_rate(sample_rate)


def _numeric_dtype(info: Any) -> np.dtype[Any]:
    """The numpy dtype of the stream's samples; a SourceError for a text (or undefined) stream."""
    fmt = int(info.channel_format())
    if fmt not in _DTYPES:
        hint = (" It carries text: read it as markers alongside a data stream, e.g. "
                f"dl.sources.LSL(type='EEG', markers={{'source_id': {info.source_id()!r}}})."
                if fmt == _STRING else "")
        raise SourceError(f"the LSL stream {_summary(info)} is not numeric (format "
                          f"{_FORMATS.get(fmt, fmt)}); daqlab's buffers hold numbers.{hint}")
    return np.dtype(_DTYPES[fmt])


def _facts(info: Any) -> dict[str, Any]:
    """The stream's identity as JSON values, for ``describe()``."""
    return {"name": str(info.name()), "type": str(info.type()), "source_id": str(info.source_id()),
            "uid": str(info.uid()), "hostname": str(info.hostname()),
            "session_id": str(info.session_id()), "channel_count": int(info.channel_count()),
            "channel_format": _FORMATS.get(int(info.channel_format()), "undefined"),
            "nominal_srate": float(info.nominal_srate()), "created_at": float(info.created_at())}


def _channel_fields(info: Any, n: int) -> tuple[list[str], list[str]]:
    """Labels and units from ``desc/channels/channel`` (``""`` where missing); at construction only."""
    labels, units = [""] * n, [""] * n
    ch = info.desc().child("channels").child("channel")
    for i in range(n):
        if ch.empty():
            break
        labels[i] = str(ch.child_value("label"))
        units[i] = str(ch.child_value("unit"))
        ch = ch.next_sibling("channel")
    return labels, units


_CONTROL = re.compile(r"[\x00-\x1f\x7f/]")


def _clean(text: str) -> str:
    """``text`` with ``/`` and control characters made ``_``, stripped."""
    return _CONTROL.sub("_", text).strip()


def _stream_channels(labels: list[str], units: list[str]) -> tuple[tuple[Channel, ...], dict[str, str]]:
    """Channels named by the labels (``ch<i>`` where none), made valid and unique; the renamed ones
    map new name -> label."""
    cleaned = []
    for i, label in enumerate(labels):
        name = "".join(c for c in _clean(label) if unicodedata.category(c) not in ("Cf", "Cs", "Co", "Cn"))
        try:
            check_channel_name(name)
        except ChannelError:
            name = f"ch{i}"
        cleaned.append(name)
    names = numbered(cleaned)
    renamed = {name: label for name, label in zip(names, labels, strict=True) if label and name != label}
    channels = []
    for name, unit in zip(names, units, strict=True):
        clean = "".join(c for c in unit if unicodedata.category(c) not in ("Cc", "Cs")).strip()
        channels.append(Channel(name, clean))
    return tuple(channels), renamed


def _source_channels(info: Any, full: Any, channels: Iterable[ChannelLike] | None
                     ) -> tuple[tuple[Channel, ...], dict[str, str]]:
    """The channels of the stream ``info`` (``full``: its info with ``<desc>``) as
    :func:`_stream_channels` makes them, or ``channels`` (one per stream channel) when given;
    and the renamed ones."""
    n = int(info.channel_count())
    chans, renamed = _stream_channels(*_channel_fields(full, n))
    if channels is None:
        return chans, renamed
    given = to_channels(channels)
    if len(given) != n:
        raise ConfigurationError(
            f"channels has {len(given)} channel(s) but the LSL stream {_summary(info)} has {n}; "
            "give one per stream channel, in order.")
    return given, {}
