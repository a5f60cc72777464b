"""The fast batch path gives the same tiers whatever the input's shape, and as scoring did before.

The batch run scores from Arrow (no pandas) with a thread per core, groups integer fan ids as
integers, checks ids without counting characters when it need not, and imports LightGBM without
scikit-learn: none of that may change an output.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.contract import ContractError
from features.fans import TIERS, fan_features
from serving.batch import SCORE_COLUMNS, read_scores, segment, segment_frame

ROOT = Path(__file__).resolve().parent.parent
CUTOFFS = ("2024-04-01", "2024-05-01", "2024-06-01")
CUTOFF = "2024-07-01"


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    from features.simulate import simulate

    return simulate(seed=1, rooms=6, days=240, fans=1500).fan_events


@pytest.fixture(scope="module")
def model(events):
    from training.tiers import TierParams, fit_tier_model

    return fit_tier_model(events, CUTOFFS, params=TierParams(max_rounds=30))


@pytest.fixture(scope="module")
def reference(model, events) -> pd.DataFrame:
    return segment_frame(model, events, CUTOFF)


def _run(path: Path, out: Path, model, **kw) -> pd.DataFrame:
    result = segment(path, out, model=model, cutoff=CUTOFF, progress=False, **kw)
    return read_scores(result.out_path)


def _table(events: pd.DataFrame, *, int_ids: bool, dictionary: bool) -> pa.Table:
    """The events as an Arrow table: text or int64 ids, plain or dictionary-encoded text."""
    cols = ["fan_id", "room_id", "event_time", "event_type", "watch_seconds", "amount"]
    table = pa.Table.from_pandas(events[cols], preserve_index=False)
    if int_ids:
        codes = pd.factorize(events["fan_id"], sort=True)[0]
        ids = pa.array(codes.astype("int64") * 7_919 + 1)  # 1 to 8 digits: text order differs
        table = table.set_column(0, "fan_id", ids)
    else:
        table = table.set_column(0, "fan_id", table.column("fan_id").cast(pa.string()))
    for name in ("fan_id", "room_id", "event_type"):
        i = table.schema.get_field_index(name)
        col = table.column(name)
        if pa.types.is_dictionary(col.type):
            col = col.cast(pa.string())
        if dictionary and pa.types.is_string(col.type):
            col = col.dictionary_encode()
        table = table.set_column(i, name, col)
    return table


def _text_ids(events: pd.DataFrame) -> dict[str, str]:
    """int id as text -> the fan's text id (the mapping of :func:`_table`)."""
    uniques = pd.factorize(events["fan_id"], sort=True)[1]
    return {str(i * 7_919 + 1): str(f) for i, f in enumerate(uniques)}


SHAPES = {
    "text": {"int_ids": False, "dictionary": False, "order": "random"},
    "text, dictionary": {"int_ids": False, "dictionary": True, "order": "random"},
    "text, sorted by time": {"int_ids": False, "dictionary": False, "order": "time"},
    "int64": {"int_ids": True, "dictionary": False, "order": "random"},
    "int64, dictionary, sorted by time": {"int_ids": True, "dictionary": True, "order": "time"},
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_input_shape_gives_the_same_output(model, events, reference, tmp_path, shape):
    """int vs text ids, dictionary-encoded or not, sorted by time or not, one file or three,
    one bucket or several: the same fans, tiers and probabilities as segment_frame."""
    spec = SHAPES[shape]
    if spec["order"] == "time":
        rows = events.sort_values("event_time", kind="stable")
    else:
        rows = events.sample(frac=1.0, random_state=3)
    table = _table(rows, int_ids=spec["int_ids"], dictionary=spec["dictionary"])
    folder = tmp_path / "events"
    folder.mkdir()
    for i, part in enumerate(np.array_split(np.arange(table.num_rows), 3)):
        pq.write_table(table.take(pa.array(part)), folder / f"part-{i}.parquet")
    for partitions in (1, 3):
        out = _run(folder, tmp_path / f"out-{partitions}.parquet", model, partitions=partitions)
        written = pq.read_table(tmp_path / f"out-{partitions}.parquet")
        if partitions == 1:  # one bucket: sorted by fan_id (as text), as DuckDB sorted it
            ids = written.column("fan_id").to_pylist()
            assert ids == sorted(ids)
        if spec["int_ids"]:
            out["fan_id"] = out["fan_id"].map(_text_ids(events)).astype("str")
            out = out.sort_values("fan_id", kind="stable").reset_index(drop=True)
        pd.testing.assert_frame_equal(out, reference)


def test_scores_equal_the_booster_on_the_feature_frame(model, events, reference, tmp_path):
    """The batch output holds exactly what the booster gives on the pandas feature matrix (the
    way scoring was done before: same probabilities to the last bit, same tiers)."""
    path = tmp_path / "events.parquet"
    events.to_parquet(path)
    out = _run(path, tmp_path / "out.parquet", model)
    feats = fan_features(events, CUTOFF)
    X = model.matrix(feats)  # the fan features and the columns derived from them (BTYD)
    raw = np.asarray(model.booster.predict(X), dtype="float64")
    proba = raw / raw.sum(axis=1, keepdims=True)
    codes = np.argmax(proba * np.asarray(model.class_weights)[None, :], axis=1)
    assert out["fan_id"].tolist() == feats["fan_id"].tolist()
    np.testing.assert_array_equal(out[list(SCORE_COLUMNS[2:])].to_numpy(), proba)
    np.testing.assert_array_equal(out["tier"].cat.codes.to_numpy(), codes)
    assert list(out["tier"].cat.categories) == list(TIERS)
    pd.testing.assert_frame_equal(out, reference)


def test_small_batches_keep_the_fan_order(model, events, reference, tmp_path, monkeypatch):
    """A bucket scored in many batches (taken in sorted-id order) writes the same file."""
    import serving.batch as batch

    path = tmp_path / "events.parquet"
    events.to_parquet(path)
    monkeypatch.setattr(batch, "BATCH_ROWS", 97)
    result = segment(path, tmp_path / "out.parquet", model=model, cutoff=CUTOFF, progress=False)
    written = pq.read_table(result.out_path)
    assert written.column("fan_id").to_pylist() == reference["fan_id"].tolist()
    pd.testing.assert_frame_equal(read_scores(result.out_path), reference)
    assert result.summary["fans"] == len(reference)
    counts = reference["tier"].value_counts()
    assert {t: result.summary["tiers"][t]["fans"] for t in TIERS} == {
        t: int(counts[t]) for t in TIERS
    }


def test_int_ids_give_the_features_of_their_text(events, tmp_path):
    text, ints = tmp_path / "text.parquet", tmp_path / "int.parquet"
    pq.write_table(_table(events, int_ids=False, dictionary=False), text)
    pq.write_table(_table(events, int_ids=True, dictionary=False), ints)
    by_text = fan_features(text, CUTOFF)
    by_int = fan_features(ints, CUTOFF)
    assert by_int["fan_id"].tolist() == sorted(by_int["fan_id"].tolist())  # sorted as text
    by_int["fan_id"] = by_int["fan_id"].map(_text_ids(events)).astype("str")
    by_int = by_int.sort_values("fan_id", kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(by_int, by_text)


@pytest.mark.parametrize(
    ("fan_id", "ok"),
    [
        ("é" * 200, True),  # 200 characters, 400 bytes
        ("é" * 201, False),
        ("x" * 201, False),
        ("", False),
        (None, False),
    ],
    ids=["200 chars", "201 chars", "201 ascii", "empty", "null"],
)
def test_id_checks(model, events, tmp_path, fan_id, ok):
    rows = events.head(50).copy()
    rows["fan_id"] = rows["fan_id"].astype(object)
    rows.loc[rows.index[7], "fan_id"] = fan_id
    path = tmp_path / "events.parquet"
    rows.to_parquet(path)
    if ok:
        out = _run(path, tmp_path / "out.parquet", model)
        assert fan_id in set(out["fan_id"])
    else:
        with pytest.raises(ContractError) as info:
            _run(path, tmp_path / "out.parquet", model)
        failures = info.value.failures
        assert list(failures["column"]) == ["fan_id"] and list(failures["row"]) == [7]


def test_null_int_id_is_a_contract_error(model, events, tmp_path):
    table = _table(events.head(40), int_ids=True, dictionary=False)
    ids = table.column("fan_id").to_pylist()
    ids[5] = None
    table = table.set_column(0, "fan_id", pa.array(ids, type=pa.int64()))
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    with pytest.raises(ContractError) as info:
        _run(path, tmp_path / "out.parquet", model)
    assert list(info.value.failures["row"]) == [5]


def test_segment_command_imports_lightgbm_without_scikit_learn():
    """Start-up: the command's scoring imports leave scikit-learn out (LightGBM would load it
    and SciPy's statistics for nothing), and scikit-learn still imports afterwards."""
    code = (
        "import sys\n"
        "from livecast.cli_segment import import_scoring\n"
        "import_scoring()\n"
        "import serving.batch\n"
        "from training.tiers import load_tier_bundle\n"
        "assert 'lightgbm' in sys.modules and 'sklearn' not in sys.modules, 'sklearn loaded'\n"
        "from sklearn.metrics import f1_score\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
