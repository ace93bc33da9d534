r"""One attribute codec for every format: run and variable attributes to what a file holds, and back.

Built like xarray's ``VariableCoder``\ s (``xarray/coding/variables.py``): small coders, each
turning one kind of value into JSON and back, tried in order. :func:`encode_attrs` turns
attributes into ``(values, types)`` for a carrier (:data:`JSON` documents: the CSV sidecar, a
recording's ``run.json``; :data:`HDF5` attributes: NetCDF, the seed's layout): what the
carrier holds as it is stays untagged, anything else gets the tag of the coder that made it
(``float``, ``tuple``, ``dict``, ``scalar``, ``ndarray``, ``bool``, ``json``); inside a JSON
payload such a value is an object ``{"__daqlab__": tag, **payload}``. Every payload is strict
JSON. :func:`decode_attrs` is the inverse; :func:`to_hdf5_attrs` and :func:`from_hdf5_attrs`
put the pair into HDF5 attributes and a note; :data:`LEGACY_TAGS` are those of daqlab 0.1.0.

The tags, their payloads and the carriers: docs/formats/attributes.md.
"""

from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from daqlab.errors import ConfigurationError
from daqlab.model import is_utf8

__all__ = ["HDF5", "JSON", "LEGACY_TAGS", "TAG", "AttrCoder", "Carrier", "attrs_to_json", "decode_attrs",
           "decode_value", "dumps", "encode_attrs", "encode_value", "from_hdf5_attrs", "from_json", "loads",
           "note_types", "plain", "to_hdf5_attrs", "to_json"]

TAG = "__daqlab__"
"""The key that marks a tagged object inside a JSON payload."""

Carrier = Callable[[Any], bool]
"""Whether a carrier stores a value as it is (then it needs no coder)."""

_INT64 = (-(2**63), 2**63)
_SURROGATE = re.compile("[\ud800-\udfff]")
_KINDS = "biufmMUSO"  # dtype kinds the array coder stores exactly


class _Unstorable(Exception):
    """A value no coder can store; the message says what it is."""


def _python(value: Any, kinds: tuple[type, ...]) -> bool:
    """``value`` is one of Python's own ``kinds`` (not numpy's subclasses such as float64)."""
    return isinstance(value, kinds) and not isinstance(value, np.generic)


def _json_holds(value: Any) -> bool:
    """Plain JSON: what JSON text gives back as it was."""
    if value is None or _python(value, (str, int)):  # (bool is an int)
        return True
    if _python(value, (float,)):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_json_holds(x) for x in value)
    if isinstance(value, Mapping):
        return TAG not in value and all(isinstance(k, str) and _json_holds(x) for k, x in value.items())
    return False


def _hdf5_holds(value: Any) -> bool:
    if _python(value, (bool,)):
        return False
    if _python(value, (str,)):
        return "\x00" not in value and is_utf8(value)
    if _python(value, (int,)):
        return bool(_INT64[0] <= value < _INT64[1])
    return _python(value, (float,))


JSON: Carrier = _json_holds
"""A JSON document: text, whole numbers, finite floats, bools, None, and lists and dicts of
those (a dict without the key ``"__daqlab__"``)."""
HDF5: Carrier = _hdf5_holds
"""HDF5 (and netCDF-4) attributes: UTF-8 text without NUL, 64-bit integers, floats."""


# --------------------------------------------------------------------------- JSON text


def dumps(obj: Any, indent: int | None = None) -> str:
    """``obj`` (JSON values, non-finite floats encoded first) as strict JSON text: UTF-8, with
    lone surrogates as ``\\u`` escapes (a high surrogate followed by a low one would read back
    as the one character they encode; h5py never gives such text)."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, indent=indent)
    # lone surrogates can only sit inside string literals, where a \u escape is the same str
    return _SURROGATE.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


def loads(text: str) -> Any:
    """JSON text as Python values; the ``NaN``/``Infinity`` tokens of older files are read too."""
    return json.loads(text)


# --------------------------------------------------------------------------- the coders


class AttrCoder(ABC):
    """Turns one kind of value into a JSON payload and back."""

    tag: ClassVar[str]

    @abstractmethod
    def accepts(self, value: Any) -> bool:
        """Whether this coder stores ``value``."""

    @abstractmethod
    def encode(self, value: Any) -> Any:
        """``value`` as a JSON payload."""

    @abstractmethod
    def decode(self, payload: Any) -> Any:
        """The value ``payload`` was made from; ValueError, TypeError... when it is damaged."""


class FloatCoder(AttrCoder):
    """NaN and the infinities, which JSON has no number for."""

    tag = "float"
    _NAMES: ClassVar[dict[str, float]] = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}

    def accepts(self, value: Any) -> bool:
        return _python(value, (float,)) and not math.isfinite(value)

    def encode(self, value: Any) -> Any:
        return {"value": "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"}

    def decode(self, payload: Any) -> Any:
        return self._NAMES[_field(payload, "value", str)]


class TupleCoder(AttrCoder):
    tag = "tuple"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, tuple)

    def encode(self, value: Any) -> Any:
        return {"items": [to_json(x) for x in value]}

    def decode(self, payload: Any) -> Any:
        if isinstance(payload, list):  # CSV sidecars of daqlab 0.1.0: the items, untagged
            return tuple(payload)
        return tuple(from_json(x) for x in _field(payload, "items", list))


class DictCoder(AttrCoder):
    """A dict holding the key ``"__daqlab__"``, which would read as a tagged object."""

    tag = "dict"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, Mapping) and TAG in value

    def encode(self, value: Any) -> Any:
        return {"items": _json_dict(value)}

    def decode(self, payload: Any) -> Any:
        return {str(k): from_json(v) for k, v in _field(payload, "items", dict).items()}


class ArrayCoder(AttrCoder):
    """numpy arrays: dtype and shape kept, the items flat in C order."""

    tag = "ndarray"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, np.ndarray)

    def encode(self, value: Any) -> Any:
        return {"dtype": value.dtype.str, "shape": list(value.shape), "data": _items(value)}

    def decode(self, payload: Any) -> Any:
        shape = _field(payload, "shape", list)
        if not all(_python(n, (int,)) and not isinstance(n, bool) and n >= 0 for n in shape):
            raise ValueError(f"shape {shape!r} is not a list of sizes")
        data = _field(payload, "data", list)
        if math.prod(shape) != len(data):
            raise ValueError(f"shape {shape} does not hold {len(data)} items")
        return _array(data, _dtype(payload)).reshape(shape)


class ScalarCoder(AttrCoder):
    """numpy scalars, with their dtype (``np.float32(1.5)`` is not ``1.5``)."""

    tag = "scalar"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, np.generic)

    def encode(self, value: Any) -> Any:
        return {"dtype": value.dtype.str, "value": _items(np.asarray(value))[0]}

    def decode(self, payload: Any) -> Any:
        return _array([_field(payload, "value", object)], _dtype(payload))[0]


class BoolCoder(AttrCoder):
    """bools, for carriers without them (HDF5 has no bool type: stored as int8 0/1)."""

    tag = "bool"

    def accepts(self, value: Any) -> bool:
        return _python(value, (bool,))

    def encode(self, value: Any) -> Any:
        return int(value)

    def decode(self, payload: Any) -> Any:
        if isinstance(payload, bool) or payload not in (0, 1):
            raise ValueError(f"{payload!r} is not 0 or 1")
        return bool(payload)


class JsonCoder(AttrCoder):
    """JSON values a carrier cannot hold as they are: in HDF5 None, lists, dicts, text with NUL
    or lone surrogates, integers beyond 64 bits; in JSON, lists and dicts holding values plain
    JSON cannot (tagged inside)."""

    tag = "json"

    def accepts(self, value: Any) -> bool:
        return value is None or isinstance(value, (list, Mapping)) or _python(value, (str, int))

    def encode(self, value: Any) -> Any:
        return to_json(value)

    def decode(self, payload: Any) -> Any:
        return from_json(payload)


_INLINE: tuple[AttrCoder, ...] = (FloatCoder(), TupleCoder(), DictCoder(), ScalarCoder(), ArrayCoder())
"""The coders of values inside a JSON payload."""
_CODERS: tuple[AttrCoder, ...] = (*_INLINE, BoolCoder(), JsonCoder())
_BY_TAG = {c.tag: c for c in _CODERS}
_INLINE_TAGS = frozenset(c.tag for c in _INLINE)


def _field(payload: Any, key: str, kind: type) -> Any:
    if not isinstance(payload, dict) or key not in payload:
        raise ValueError(f"{payload!r:.80} has no {key!r}")
    value = payload[key]
    if not isinstance(value, kind):
        raise ValueError(f"{key!r} is {value!r:.80}, not a {kind.__name__}")
    return value


def _dtype(payload: Any) -> np.dtype[Any]:
    dtype: np.dtype[Any] = np.dtype(_field(payload, "dtype", str))
    if dtype.kind not in _KINDS:
        raise ValueError(f"dtype {dtype} is not one daqlab stores")
    return dtype


def _items(arr: NDArray[Any]) -> list[Any]:
    """The items of ``arr`` as JSON values, flat."""
    kind, flat = arr.dtype.kind, arr.ravel()
    if kind not in _KINDS or (kind == "f" and arr.dtype.itemsize > 8):
        raise _Unstorable(f"a numpy array or scalar of dtype {arr.dtype} cannot be stored "
                          "(it would be rounded, or is not numbers, text or dates); convert it, "
                          "e.g. with .astype(float) or .tolist()")
    if kind in "mM":
        return flat.view(np.int64).tolist()
    if kind == "S":
        return [b.decode("latin-1") for b in flat.tolist()]
    if kind in "fO":  # NaN and infinities, and objects, are tagged
        return [to_json(x) for x in flat.tolist()]
    items: list[Any] = flat.tolist()
    return items


def _array(items: list[Any], dtype: np.dtype[Any]) -> NDArray[Any]:
    """The 1-D array of ``dtype`` that :func:`_items` made ``items`` from."""
    kind = dtype.kind
    if kind == "O":
        out = np.empty(len(items), dtype=object)
        for i, x in enumerate(items):  # attribute items, not samples
            out[i] = from_json(x)
        return out
    wanted: tuple[type, ...] = {"b": (bool,), "f": (int, float), "S": (str,), "U": (str,)}.get(
        kind, (int,))
    values = [from_json(x) for x in items] if kind == "f" else items
    if not all(isinstance(x, wanted) and (kind == "b" or not isinstance(x, bool)) for x in values):
        raise ValueError(f"items {items[:5]!r:.80} are not all {wanted[-1].__name__} for dtype {dtype}")
    if kind == "S":
        values = [x.encode("latin-1") for x in values]
    with np.errstate(all="raise"):  # a value the dtype cannot hold is damage, not a warning
        if kind in "mM":
            return np.array(values, dtype=np.int64).view(dtype)
        return np.array(values, dtype=dtype)


def _json_dict(value: Mapping[Any, Any]) -> dict[str, Any]:
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise _Unstorable(f"dict keys must be str to be stored; got {bad[:5]}")
    return {k: to_json(x) for k, x in value.items()}


def to_json(value: Any) -> Any:
    """``value`` as strict JSON values: what plain JSON cannot hold is a tagged object."""
    if value is None or (_python(value, (str, int, float)) and _json_holds(value)):
        return value  # (the containers below are copied, and their items encoded)
    if isinstance(value, list):
        return [to_json(x) for x in value]
    if isinstance(value, Mapping) and TAG not in value:
        return _json_dict(value)
    for coder in _INLINE:
        if coder.accepts(value):
            return {TAG: coder.tag, **coder.encode(value)}
    raise _unstorable(value)


def from_json(obj: Any) -> Any:
    """The values :func:`to_json` made ``obj`` from."""
    if isinstance(obj, list):
        return [from_json(x) for x in obj]
    if not isinstance(obj, dict):
        return obj
    if TAG not in obj:
        return {k: from_json(x) for k, x in obj.items()}
    tag = obj[TAG]
    if not isinstance(tag, str) or tag not in _INLINE_TAGS:
        raise ValueError(f"unknown tag {tag!r}")
    return _BY_TAG[tag].decode({k: x for k, x in obj.items() if k != TAG})


def _unstorable(value: Any) -> _Unstorable:
    return _Unstorable(
        f"the {type(value).__name__} value {value!r:.60} cannot be stored; store str, numbers, bool, "
        "None, lists, dicts, tuples or numpy scalars and arrays (of numbers, text or dates)")


# --------------------------------------------------------------------------- the pair


def encode_value(value: Any, carrier: Carrier = JSON) -> tuple[str | None, Any]:
    """``(tag, payload)`` of one value for ``carrier``; ``tag`` is None when it holds it as it is."""
    if carrier(value):
        return None, to_json(value) if isinstance(value, (list, Mapping)) else value
    for coder in _CODERS:
        if coder.accepts(value):
            return coder.tag, coder.encode(value)
    raise _unstorable(value)


def encode_attrs(attrs: Mapping[Any, Any], carrier: Carrier = JSON, where: str = "run"
                 ) -> tuple[dict[str, Any], dict[str, str]]:
    """``(values, types)`` of ``attrs`` for ``carrier`` (see docs/formats/attributes.md).

    Raises ConfigurationError naming the attribute (``where`` says whose) that cannot be stored.

    >>> values, types = encode_attrs({"pair": (1, "a"), "gain": float("nan"), "ok": True})
    >>> values
    {'pair': {'items': [1, 'a']}, 'gain': {'value': 'nan'}, 'ok': True}
    >>> types
    {'pair': 'tuple', 'gain': 'float'}
    >>> decode_attrs(values, types)
    {'pair': (1, 'a'), 'gain': nan, 'ok': True}
    """
    values: dict[str, Any] = {}
    types: dict[str, str] = {}
    for k, v in attrs.items():
        if not isinstance(k, str):
            raise ConfigurationError(
                f"cannot store {where} attribute {k!r}: attribute names must be str.")
        try:
            tag, values[k] = encode_value(v, carrier)
        except _Unstorable as exc:
            raise ConfigurationError(f"cannot store {where} attribute {k!r}: {exc}.") from None
        if tag is not None:
            types[k] = tag
    return values, types


def attrs_to_json(attrs: Mapping[Any, Any], where: str = "run") -> dict[str, Any]:
    """``attrs`` as one JSON object, tagged values in it (:func:`from_json` is its inverse).

    Raises ConfigurationError naming the attribute (``where`` says whose) that cannot be stored.
    """
    encode_attrs(attrs, JSON, where)  # the error naming the attribute that cannot be stored
    return {k: to_json(v) for k, v in attrs.items()}


def _legacy(tag: str, payload: Any) -> Any:
    """Decoders of the tags daqlab 0.1.0 wrote (see :data:`LEGACY_TAGS`)."""
    if tag == "json-untagged":
        return payload
    kind, _, dtype_text = tag.partition(":")
    if kind not in ("ndarray", "numpy") or not dtype_text:
        raise ValueError(f"unknown type {tag!r}")
    dtype = _dtype({"dtype": dtype_text})
    if kind == "numpy":
        return _array([payload], dtype)[0]
    with np.errstate(all="raise"):
        return (np.array(payload, dtype=np.int64).view(dtype) if dtype.kind in "mM"
                else np.array(payload, dtype=dtype))


LEGACY_TAGS: dict[str, str] = {
    "tuple": "CSV sidecars of daqlab 0.1.0: a tuple's items as a list, untagged",
    "ndarray:<dtype>": "CSV sidecars of 0.1.0 (and the text arrays of its NetCDF files): nested "
                       "lists, date-times as int64 counts",
    "numpy:<dtype>": "CSV sidecars of 0.1.0: a numpy scalar's value",
    "json-untagged": "NetCDF files of 0.1.0: JSON text without tagged objects",
}
"""Tags that only files of daqlab 0.1.0 hold, decoded but never written. (Its seed HDF5 files
tagged nested values as this codec does.)"""


def decode_value(tag: Any, payload: Any) -> Any:
    """The value that ``(tag, payload)`` was encoded from."""
    if tag is None:
        return payload
    if not isinstance(tag, str):
        raise ValueError(f"type {tag!r} is not a tag")
    coder = _BY_TAG.get(tag)
    return coder.decode(payload) if coder is not None else _legacy(tag, payload)


_DAMAGE = (ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError)


def decode_attrs(values: Mapping[str, Any], types: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes :func:`encode_attrs` made ``(values, types)`` from.

    Raises ValueError naming the attribute when they are damaged.
    """
    unknown = sorted(set(types) - set(values))
    if unknown:
        raise ValueError(f"types are given for attribute(s) {unknown[:5]} that are not stored")
    out: dict[str, Any] = {}
    for k, v in values.items():
        try:
            out[k] = decode_value(types.get(k), v)
        except _DAMAGE as exc:
            raise ValueError(f"attribute {k!r} cannot be decoded as {types.get(k) or 'JSON'} "
                             f"({type(exc).__name__}: {exc})") from None
    return out


# --------------------------------------------------------------------------- HDF5 attributes


def _hdf5_number(value: Any) -> bool:
    """A numpy number, or a non-empty 1-D array of them, of a netCDF-4 type: HDF5 keeps it
    with its dtype, and netCDF tools read it as numbers."""
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or not value.size:
            return False
    elif not isinstance(value, np.generic):
        return False
    if not value.dtype.isnative:
        return False
    kind = value.dtype.kind  # (not np.integer: timedelta64 is one)
    return kind in "iu" or (kind == "f" and value.dtype.itemsize in (4, 8))


def to_hdf5_attrs(attrs: Mapping[Any, Any], where: str = "run") -> tuple[dict[str, Any], dict[str, str]]:
    """``attrs`` as HDF5 attribute values, and the types to note beside them: JSON payloads as
    text, bools as int8, numpy numbers of netCDF-4's types as they are (readable by other tools).

    >>> to_hdf5_attrs({"ok": True, "note": None})
    ({'ok': np.int8(1), 'note': 'null'}, {'ok': 'bool', 'note': 'json'})
    """
    values, types = encode_attrs(attrs, HDF5, where)
    stored: dict[str, Any] = {}
    for k, payload in values.items():
        tag = types.get(k)
        if tag is None:
            stored[k] = payload
        elif tag == "bool":
            stored[k] = np.int8(payload)
        elif tag in ("scalar", "ndarray") and _hdf5_number(attrs[k]):
            stored[k] = attrs[k]
        else:
            stored[k] = dumps(payload)
    return stored, types


def note_types(note: Any, legacy_json: str = "json") -> dict[str, Any]:
    """The types an HDF5 carrier's note (``{"types": {...}}``) records. Notes of daqlab 0.1.0
    listed the attributes by kind instead: ``bool``, ``json`` (read with the tag
    ``legacy_json``: its NetCDF files wrote untagged JSON) and ``str_arrays`` (NetCDF)."""
    if not isinstance(note, dict):
        raise TypeError(f"the note is {note!r:.60}, not an object")
    if "types" in note:
        types = note["types"]
        if not isinstance(types, dict):
            raise TypeError(f"its types are {types!r:.60}, not an object")
        return types
    return {**{str(k): "bool" for k in note.get("bool", [])},
            **{str(k): legacy_json for k in note.get("json", [])},
            **{str(k): f"ndarray:{dt}" for k, dt in note.get("str_arrays", {}).items()}}


def plain(value: Any) -> Any:
    """An HDF5 attribute as h5py gives it, as Python values: text decoded (bytes that are not
    UTF-8 as lone surrogates), numpy scalars as Python's."""
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "surrogateescape")
    if isinstance(value, np.generic):
        return value.item()
    return value


def from_hdf5_attrs(stored: Mapping[str, Any], types: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes :func:`to_hdf5_attrs` stored, from the values h5py (or h5netcdf) reads
    and the noted types. Raises ValueError naming the attribute when they are damaged."""
    kept: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for k, v in stored.items():
        tag = types.get(k)
        if tag == "scalar" and _hdf5_number(v) and not isinstance(v, np.ndarray):
            kept[k] = v  # stored as it was: HDF5 keeps the dtype
        elif tag == "ndarray" and _hdf5_number(v):
            kept[k] = np.atleast_1d(v)  # (readers give a 1-element array as a scalar)
        elif tag is None or tag == "bool":
            values[k] = plain(v)
        else:
            try:
                values[k] = loads(plain(v))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"attribute {k!r} is not valid JSON ({exc})") from None
    decoded = decode_attrs(values, {k: t for k, t in types.items() if k not in kept})
    return {k: kept[k] if k in kept else decoded[k] for k in stored}
