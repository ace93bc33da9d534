"""The one attribute codec (``daqlab.io._codec``) and what every format shares through it: the
schema version check, channel records and the defaults of files daqlab did not write.

``tests/io/data/attrs-0.1.0`` holds files written by daqlab 0.1.0's own writers (before the
codec), made by ``dl.save``/``save_seed``/``save_csv`` and a ``Recorder`` from the runs
described in :func:`test_files_written_by_daqlab_0_1_open_as_they_did`; they must keep opening
exactly as they did then.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import h5py
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import daqlab as dl
from daqlab.io._codec import (
    HDF5,
    JSON,
    decode_attrs,
    dumps,
    encode_attrs,
    from_hdf5_attrs,
    from_json,
    to_hdf5_attrs,
    to_json,
)
from daqlab.io._csv import sidecar_path
from daqlab.io._foreign import content_id, estimate_rate, foreign_defaults
from daqlab.io._records import channel_from_record, channel_record, check_schema_version

DATA = Path(__file__).parent / "data" / "attrs-0.1.0"
RUN_ID = "0b6f3d4e-9a4e-4c1e-8b9e-2f1c3d4e5f60"


def same(a: Any, b: Any) -> bool:
    """``a`` and ``b`` are the same value of the same type (NaN equal to NaN, numpy dtypes and
    shapes equal, tuples not lists, numpy scalars not Python numbers)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (np.ndarray, np.generic)):
        x, y = np.asarray(a), np.asarray(b)
        if x.dtype != y.dtype or x.shape != y.shape:
            return False
        if x.dtype.kind in "mM":
            return bool(np.array_equal(x.view(np.int64), y.view(np.int64)))
        if x.dtype.kind == "O":
            return all(same(p, q) for p, q in zip(x.ravel().tolist(), y.ravel().tolist(), strict=True))
        return bool(np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"))
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(p, q) for p, q in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def _raise(token: str) -> Any:
    raise ValueError(f"{token} is not strict JSON")


def strict_json(text: str) -> Any:
    """``text`` parsed as strict JSON: NaN and Infinity tokens are refused, as jq does."""
    return json.loads(text, parse_constant=_raise)


# --------------------------------------------------------------------------- files of daqlab 0.1.0

META = {"gain": math.nan, "peak": math.inf, "nested": {"t": [1, None, "ü", True]}, "site": "M\udcfcnchen"}
CHANNELS = [dl.Channel("a", "V", range=(0.0, 5.0),
                       calibration=dl.Calibration(2.0, -1.0, "2024-05-01T08:30:15.123456Z")),
            dl.Channel("b", "-", range=(-math.inf, None))]
COMMON = {"id": RUN_ID, "name": "old run", "description": "M\udcfcnchen",
          "created_at": "2024-01-02T03:04:05.000000Z", "sample_rate": 3.0, "metadata": META}
LEGACY: dict[str, dict[str, Any]] = {
    "seed.h5": {
        **COMMON, "calibrated": True, "reviewed": True, "note": None, "arr": np.arange(3, dtype=np.int16),
        "pair": (1, "a"), "f32": np.float32(1.5), "nul": "a\x00b", "tagged": {"__daqlab__": 1},
        "big": 2**70, "when": np.datetime64("2024-01-01T00:00:00.000000001", "ns"), "nan": math.nan,
        "labels": np.array(["x", "yy"]), "site": "M\udcfcnchen",
        "npbool": True,  # 0.1.0 stored numpy bools as bools
    },
    "run.nc": {
        **COMMON, "calibrated": False, "reviewed": True, "note": None,
        "pair": [1, "a"], "f32": 1.5,  # 0.1.0 stored tuples as lists, numpy scalars as numbers
        "labels": np.array(["x", "yy"]), "arr": np.arange(3, dtype=np.int16), "nan": math.nan,
        "site": "M\udcfcnchen", "history": "made by hand",
        "nested": {"x": [1, {"__daqlab__": 2}]},  # plain JSON then: no tags
    },
    "run.csv": {
        **COMMON, "calibrated": True, "reviewed": True, "note": None, "arr": np.arange(3, dtype=np.int16),
        "days": np.array(["2024-01-01", "NaT"], "datetime64[D]"), "pair": (1, "a"),
        "f32": np.float32(1.5), "nan": math.nan, "site": "M\udcfcnchen",
        "tagged": {"__daqlab__": 1},  # plain JSON then: no tags
    },
    "rec.daqrec": {"id": RUN_ID, "name": "rec", "description": "",
                   "created_at": "2026-12-03T13:32:12.873584Z", "sample_rate": 3.0, "metadata": META,
                   "calibrated": False},
}


@pytest.mark.parametrize("name", LEGACY, ids=["seed-hdf5", "netcdf", "csv", "recording"])
def test_files_written_by_daqlab_0_1_open_as_they_did(tmp_path: Path, name: str) -> None:
    # written from make_run([[0.5, nan, 2.0], [1.0, -inf, 3.25]], CHANNELS, metadata=META, ...)
    # with the attributes of LEGACY (calibrated where it says so), and a Recorder of those
    # channels with META, by daqlab 0.1.0
    shutil.copytree(DATA, tmp_path / "data")
    run = dl.open_run(tmp_path / "data" / name)
    assert same(dict(run.attrs), LEGACY[name]), {k: v for k, v in run.attrs.items()
                                                 if not same(v, LEGACY[name].get(k))}
    assert list(run.daq.channels) == CHANNELS
    np.testing.assert_array_equal(run["cal_date"].values, np.array(
        ["2024-05-01T08:30:15.123456", "NaT"], "datetime64[ns]"))
    assert run["value"].attrs["ancillary_variables"] == "quality"
    if name != "rec.daqrec":
        assert run["value"].attrs["comment"] == "user note"
        np.testing.assert_array_equal(run["value"].values[1], [1.0, -np.inf, 3.25])
    dl.validate(run)


# --------------------------------------------------------------------------- strict JSON


def _odd_run() -> xr.Dataset:
    run = dl.make_run([[1.0, np.nan], [2.0, 3.0]], CHANNELS, sample_rate=2.0, start="2024-01-01", id=RUN_ID)
    run.attrs["metadata"] = {**META, "pair": (1, math.nan)}
    run.attrs.update(nan=math.nan, inf=-math.inf, f32=np.float32(np.nan),
                     arr=np.array([1.5, np.nan, np.inf]), when=np.datetime64("NaT", "ns"))
    run["value"].attrs["valid_max"] = math.inf
    return run


@pytest.mark.parametrize("fmt", ["csv", "csv-wide"])
def test_the_sidecar_is_strict_json(tmp_path: Path, fmt: str) -> None:
    run = _odd_run()
    path = dl.save(run, tmp_path / "run.csv", fmt)
    text = sidecar_path(path).read_text("utf-8")
    header = strict_json(text)  # no NaN or Infinity tokens, which jq refuses
    assert header["channels"][1]["range_min"] == {"__daqlab__": "float", "value": "-inf"}
    assert header["channels"][1]["range_max"] is None  # an open end
    assert header["attrs"]["nan"] == {"value": "nan"}
    assert header["attr_types"]["nan"] == "float"
    assert header["attr_types"]["metadata"] == "json"
    back = dl.open_run(path)
    xr.testing.assert_identical(back.drop_attrs(), run.drop_attrs())
    assert same(dict(back.attrs), dict(run.attrs))
    assert same(back["value"].attrs["valid_max"], math.inf)


def test_the_recording_manifest_is_strict_json(tmp_path: Path) -> None:
    buf = dl.RingBuffer(CHANNELS, 10, 2.0, start="2024-01-01")
    attrs = dict(_odd_run().attrs)
    rec = dl.Recorder(buf, tmp_path / "r.nc", attrs=attrs)
    manifest = strict_json((rec.folder / "run.json").read_text("utf-8"))
    assert manifest["channels"][1] == {
        "name": "b", "unit": "-", "range_min": {"__daqlab__": "float", "value": "-inf"}, "range_max": None,
        "cal_slope": 1.0, "cal_offset": 0.0, "cal_date": None}
    back = dl.open_run(rec.folder)
    assert same(dict(back.attrs), attrs)
    assert list(back.daq.channels) == CHANNELS
    rec.close(consolidate=False)


def test_a_recorder_refuses_attributes_it_cannot_store_before_making_its_folder(tmp_path: Path) -> None:
    buf = dl.RingBuffer(1, 10, 2.0)
    with pytest.raises(dl.ConfigurationError, match=r"cannot store the recording's attribute 'x': the "
                       r"complex value 1j cannot be stored"):
        dl.Recorder(buf, tmp_path / "r.nc", attrs={**dl.empty_run(1, sample_rate=2.0).attrs, "x": 1j})
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the codec itself


@pytest.mark.parametrize(
    ("value", "tag", "payload"),
    [
        (math.nan, "float", {"value": "nan"}),
        ((1, (2.0, None)), "tuple", {"items": [1, {"__daqlab__": "tuple", "items": [2.0, None]}]}),
        ({"__daqlab__": 1}, "dict", {"items": {"__daqlab__": 1}}),
        (np.float32(1.5), "scalar", {"dtype": "<f4", "value": 1.5}),
        (np.datetime64("NaT", "ns"), "scalar", {"dtype": "<M8[ns]", "value": -(2**63)}),
        (np.array([[b"a", b"\xff"]]), "ndarray", {"dtype": "|S1", "shape": [1, 2], "data": ["a", "ÿ"]}),
        ({"k": [math.inf]}, "json", {"k": [{"__daqlab__": "float", "value": "inf"}]}),
        ({"k": [1.5, "M\udcfc"]}, None, {"k": [1.5, "M\udcfc"]}),
    ],
    ids=["nan", "nested-tuple", "tag-like-dict", "float32", "nat", "bytes-array", "json", "plain"],
)
def test_json_tags(value: Any, tag: str | None, payload: Any) -> None:
    values, types = encode_attrs({"v": value}, JSON)
    assert (types.get("v"), values["v"]) == (tag, payload)
    assert same(decode_attrs(strict_json(dumps(values)), types)["v"], value)


def test_hdf5_holds_numpy_numbers_as_they_are_and_notes_their_type() -> None:
    stored, types = to_hdf5_attrs({"gain": np.float32(2.5), "ok": True, "text": "M\udcfc", "n": 2**70})
    assert stored == {"gain": np.float32(2.5), "ok": 1, "text": '"M\\udcfc"', "n": str(2**70)}
    assert types == {"gain": "scalar", "ok": "bool", "text": "json", "n": "json"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1j, r"cannot store run attribute 'v': the complex value 1j cannot be stored"),
        ({1: 2}, r"cannot store run attribute 'v': dict keys must be str to be stored; got \[1\]"),
        (np.array([1], dtype=np.longdouble), r"dtype float128 cannot be stored \(it would be rounded"),
        ([object()], r"the object value <object object at .* cannot be stored"),
    ],
    ids=["complex", "int-keys", "longdouble", "nested-object"],
)
def test_values_no_coder_stores_are_refused_naming_the_attribute(value: Any, message: str) -> None:
    for carrier in (JSON, HDF5):
        with pytest.raises(dl.ConfigurationError, match=message):
            encode_attrs({"v": value}, carrier)


@pytest.mark.parametrize(
    ("values", "types", "message"),
    [
        ({"v": {"dtype": "<f2", "shape": [1], "data": [1e308]}}, {"v": "ndarray"}, "FloatingPointError"),
        ({"v": {"dtype": "<i8", "shape": [2], "data": [1]}}, {"v": "ndarray"}, "does not hold 1 items"),
        ({"v": {"dtype": "|V4", "value": 1}}, {"v": "scalar"}, "not one daqlab stores"),
        ({"v": [{"__daqlab__": "tuple"}]}, {"v": "json"}, "has no 'items'"),
        ({"v": 1}, {"v": "bogus"}, "unknown type 'bogus'"),
        ({"v": 1}, {"w": "bool"}, r"types are given for attribute\(s\) \['w'\]"),
    ],
    ids=["overflow", "shape", "void", "tag-without-items", "unknown-tag", "type-without-value"],
)
def test_damaged_payloads_are_value_errors_naming_the_attribute(values: Any, types: Any, message: str
                                                                ) -> None:
    with pytest.raises(ValueError, match=message):
        decode_attrs(values, types)


# --------------------------------------------------------------------------- the schema version


def _newer(fmt: str, path: Path, version: Any) -> Path:
    """A file of ``fmt`` whose schema version says ``version``."""
    if fmt == "recording":
        rec = dl.Recorder(dl.RingBuffer(1, 10, 2.0), path.with_suffix(".nc"))
        rec.close(consolidate=False)
        manifest = json.loads((rec.folder / "run.json").read_text())
        (rec.folder / "run.json").write_text(json.dumps({**manifest, "schema_version": version}))
        return rec.folder
    saved = dl.save(dl.make_run([[1.0]], ["a"], sample_rate=1.0), path, fmt)
    if fmt.startswith("csv"):
        side = sidecar_path(saved)
        side.write_text(json.dumps({**json.loads(side.read_text()), "schema_version": version}))
    else:
        with h5py.File(saved, "r+") as f:
            (f["metadata"] if fmt == "seed-hdf5" else f).attrs["daqlab_schema_version"] = version
    return saved


FORMATS = {"netcdf": "run.nc", "csv": "run.csv", "csv-wide": "run.csv", "seed-hdf5": "run.h5",
           "recording": "run.daqrec"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_refuses_a_newer_schema_with_one_message(tmp_path: Path, fmt: str) -> None:
    newer = dl.SCHEMA_VERSION + 1
    path = _newer(fmt, tmp_path / FORMATS[fmt], newer)
    with pytest.raises(dl.FormatError) as info:
        dl.open_run(path)
    assert str(info.value) == (
        f"{path} was written with run schema version {newer} by daqlab {dl.__version__}; this daqlab "
        f"({dl.__version__}) reads up to version {dl.SCHEMA_VERSION}. Upgrade daqlab to open it.")


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_says_a_damaged_schema_version_is_damaged(tmp_path: Path, fmt: str) -> None:
    path = _newer(fmt, tmp_path / FORMATS[fmt], "1")
    with pytest.raises(dl.FormatError, match=r" is damaged: schema_version '1' is not a whole number\."):
        dl.open_run(path)


def test_the_schema_version_check() -> None:
    assert check_schema_version(np.array([np.int32(1)]), source="f.h5") == 1
    for bad in (True, 1.0, None, [1]):
        with pytest.raises(dl.FormatError, match=r"^f\.h5: x is damaged: schema_version"):
            check_schema_version(bad, source="f.h5", where="f.h5: x")


# --------------------------------------------------------------------------- channel records


@pytest.mark.parametrize(
    "record",
    [
        {"name": "b", "unit": "-", "range_min": {"__daqlab__": "float", "value": "-inf"}, "range_max": None,
         "cal_slope": 2.0, "cal_offset": 1.0, "cal_date": "2024-05-01T08:30:15.123456000Z"},
        {"name": "b", "unit": "-", "range_min": -math.inf, "range_max": math.nan,  # CSV 0.1.0
         "cal_slope": 2.0, "cal_offset": 1.0, "cal_date": "2024-05-01T08:30:15.123456000Z"},
        {"name": "b", "unit": "-", "range": [-math.inf, None],  # recordings of 0.1.0
         "slope": 2.0, "offset": 1.0, "reference_date": "2024-05-01T08:30:15.123456000"},
        {"name": "b", "unit": "-", "range_min": -math.inf, "range_max": math.nan,  # seed HDF5 attributes
         "cal_slope": 2.0, "cal_offset": 1.0, "cal_date": "2024-05-01T10:30:15.123456+02:00"},
    ],
    ids=["record", "csv-0.1", "recording-0.1", "seed-hdf5"],
)
def test_every_spelling_of_a_channel_reads_as_the_same_channel(record: dict[str, Any]) -> None:
    expected = dl.Channel("b", "-", range=(-math.inf, None),
                          calibration=dl.Calibration(2.0, 1.0, "2024-05-01T08:30:15.123456Z"))
    assert channel_from_record(record) == expected
    assert channel_from_record(strict_json(dumps(to_json(channel_record(expected))))) == expected


def test_a_channel_record_keeps_the_exact_calibration_date() -> None:
    record = channel_record(dl.Channel("a"), np.datetime64("2024-01-01T00:00:00.000000001", "ns"))
    assert record["cal_date"] == "2024-01-01T00:00:00.000000001Z"
    assert channel_record(dl.Channel("a"))["cal_date"] is None


# --------------------------------------------------------------------------- files daqlab did not write


def test_foreign_files_get_their_defaults_by_one_rule(tmp_path: Path) -> None:
    t_ms = [0, 0, 10, 20, 30]  # a repeated timestamp: steps of 0 do not count
    csv = tmp_path / "plain.csv"
    csv.write_text("timestamp_ms,value,channel,quality\n" + "".join(
        f"{t},{i}.0,a,Good\n" for i, t in enumerate(t_ms)))
    seed = tmp_path / "plain.h5"
    with h5py.File(seed, "w") as f:
        f["data/a/timestamps"] = np.array(t_ms) / 1000
        f["data/a/values"] = np.arange(5.0)
    runs = [dl.open_run(csv), dl.open_run(seed)]
    for run, path in zip(runs, (csv, seed), strict=True):
        assert run.attrs["sample_rate"] == 100.0
        assert run.attrs["created_at"] == "1970-01-01T00:00:00.000000Z"
        assert run.attrs["name"] == "plain"
        assert run.attrs["id"] == content_id(path) == dl.open_run(path).attrs["id"]


def test_the_content_id_follows_the_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(bytes(range(256)) * 40)
    shutil.copy(a, b)
    assert content_id(a) == content_id(b)  # a copy, anywhere: the same id
    b.write_bytes(b"x" + a.read_bytes()[1:])
    assert content_id(a) != content_id(b)
    import daqlab.io._foreign as foreign

    monkeypatch.setattr(foreign, "_WHOLE", 1024)  # larger files: sampled blocks
    monkeypatch.setattr(foreign, "_BLOCK", 16)
    assert content_id(a) != content_id(b)  # the first byte is in the first block
    b.write_bytes(a.read_bytes()[:5000] + b"x" + a.read_bytes()[5001:])
    assert content_id(a) == content_id(b)  # a byte between the blocks


def test_the_rate_rule() -> None:
    ns = 1_000_000
    assert estimate_rate([np.array([0, 10 * ns, 20 * ns]), np.array([0, 0, 40 * ns])]) == 100.0 / 1.0
    assert estimate_rate([np.array([5, 5]), np.array([], np.int64)]) is None
    attrs = foreign_defaults(Path("x.h5"), [np.array([5, 5])], {"id": RUN_ID, "extra": 1})
    assert attrs == {"id": RUN_ID, "name": "x", "description": "",
                     "created_at": "1970-01-01T00:00:00.000000Z", "sample_rate": 1.0, "metadata": {},
                     "calibrated": False, "extra": 1}


# --------------------------------------------------------------------------- every format, any attributes

_TEXT = st.text(max_size=6) | st.sampled_from(["", "a\x00b", "\x00", "M\udcfcnchen", "\udcff", "\u2028", "😀",
                                                "__daqlab__", "NaN", "null", "'=1", " x "])
_NUMBERS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | _TEXT
_DTYPES = st.sampled_from(["i1", "<i8", "<u8", "<f2", "<f4", "<f8", "?", "<M8[ns]", "<M8[D]", "<m8[s]",
                           "<U3", "|S2"]).map(np.dtype)
_NUMPY = (_DTYPES.flatmap(lambda d: hnp.from_dtype(d).map(lambda x: np.asarray(x, dtype=d)[()]))
          | hnp.arrays(_DTYPES, hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3)))
_KEYS = _TEXT | st.just("__daqlab__")
_METADATA = st.dictionaries(_KEYS, st.recursive(
    _NUMBERS, lambda kids: st.lists(kids, max_size=3) | st.tuples(kids, kids)
    | st.dictionaries(_KEYS, kids, max_size=3), max_leaves=8), max_size=4)
_VALUES = st.recursive(_NUMBERS | _NUMPY, lambda kids: st.lists(kids, max_size=3) | st.tuples(kids)
                       | st.dictionaries(_KEYS, kids, max_size=3), max_leaves=6)
_EXTRA = st.dictionaries(st.text("abcdefghij", min_size=1, max_size=6).map(lambda k: f"x_{k}"), _VALUES,
                         max_size=4)
_PROPERTY = settings(max_examples=50, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@_PROPERTY
@given(attrs=_EXTRA, metadata=_METADATA)
def test_both_carriers_give_back_any_attributes(attrs: dict[str, Any], metadata: dict[str, Any]) -> None:
    attrs = {**attrs, "metadata": metadata}
    values, types = encode_attrs(attrs, JSON)
    parsed = strict_json(dumps({"attrs": values, "attr_types": types}))
    assert same(decode_attrs(parsed["attrs"], parsed["attr_types"]), attrs)
    stored, types = to_hdf5_attrs(attrs)
    with h5py.File(io.BytesIO(), "w") as f:
        f.attrs.update(stored)
        read = {k: f.attrs[k] for k in f.attrs}
    assert same(from_hdf5_attrs(read, strict_json(dumps(types))), attrs)
    assert same(from_json(strict_json(dumps(to_json(attrs)))), attrs)


@pytest.mark.parametrize("fmt", FORMATS)
@_PROPERTY
@given(attrs=_EXTRA, metadata=_METADATA)
def test_every_format_gives_back_any_attributes(tmp_path: Path, fmt: str, attrs: dict[str, Any],
                                                metadata: dict[str, Any]) -> None:
    run = dl.make_run([[1.0, np.nan]], ["a"], sample_rate=2.0, start="2024-01-01", id=RUN_ID)
    run.attrs["metadata"] = metadata  # as it is (make_run would make its tuples lists)
    run.attrs.update(attrs)
    with tempfile.TemporaryDirectory(dir=tmp_path) as d:
        if fmt == "recording":
            buf = dl.RingBuffer(["a"], 10, 2.0, start="2024-01-01")
            rec = dl.Recorder(buf, Path(d) / "r.nc", attrs=dict(run.attrs))
            back = dl.open_run(rec.folder)
            rec.close(consolidate=False)
        else:
            back = dl.open_run(dl.save(run, Path(d) / FORMATS[fmt], fmt))
            xr.testing.assert_identical(back.drop_attrs(), run.drop_attrs())
    assert same(back.attrs["metadata"], metadata)
    assert same(dict(back.attrs), dict(run.attrs)), {k: (v, back.attrs.get(k)) for k, v in run.attrs.items()
                                                     if not same(v, back.attrs.get(k))}
