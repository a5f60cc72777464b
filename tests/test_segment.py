"""The batch fan-segmentation run: outputs, engine parity, atomic writes, bad input, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.contract import ContractError
from features.fans import TIERS
from serving.batch import (
    SCORE_COLUMNS,
    default_cutoff,
    read_scores,
    segment,
    segment_frame,
    summary_path_for,
)

CUTOFFS = ("2024-04-01", "2024-05-01", "2024-06-01")
CUTOFF = "2024-07-01"


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    from features.simulate import simulate

    return simulate(seed=0, rooms=8, days=240, fans=2000).fan_events


@pytest.fixture(scope="module")
def model(events):
    from training.tiers import TierParams, fit_tier_model

    return fit_tier_model(events, CUTOFFS, params=TierParams(max_rounds=30))


@pytest.fixture(scope="module")
def events_file(events, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("events") / "fan_events.parquet"
    events.to_parquet(path)
    return path


@pytest.fixture(scope="module")
def reference(model, events) -> pd.DataFrame:
    """segment_frame over the whole frame: what every engine must reproduce."""
    return segment_frame(model, events, CUTOFF)


def _run(events_path, out, model, **kw):
    kw.setdefault("cutoff", CUTOFF)
    return segment(events_path, out, model=model, progress=False, **kw)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_segment_frame_columns_and_probabilities(model, events, reference):
    assert list(reference.columns) == list(SCORE_COLUMNS)
    assert reference["fan_id"].is_unique and reference["fan_id"].is_monotonic_increasing
    cut = pd.Timestamp(CUTOFF, tz="Asia/Shanghai")
    assert set(reference["fan_id"]) == set(events.loc[events["event_time"] < cut, "fan_id"])
    assert list(reference["tier"].cat.categories) == list(TIERS)
    proba = reference[list(SCORE_COLUMNS[2:])].to_numpy()
    assert proba.dtype == np.float64
    assert ((proba >= 0) & (proba <= 1)).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert (reference["tier"].cat.codes.to_numpy() == model.decide(proba)).all()
    assert reference["tier"].nunique() >= 2  # the model separates fans
    # a fan's scores depend only on its own events
    some = reference["fan_id"].iloc[:50]
    alone = segment_frame(model, events[events["fan_id"].isin(some)], CUTOFF)
    pd.testing.assert_frame_equal(alone, reference.iloc[:50].reset_index(drop=True))


def test_local_buckets_and_dask_match_segment_frame(model, events_file, reference, tmp_path):
    from distributed import Client, LocalCluster

    one = _run(events_file, tmp_path / "one.parquet", model, partitions=1)
    three = _run(events_file, tmp_path / "three.parquet", model, partitions=3)
    assert one.fans == three.fans == len(reference)
    pd.testing.assert_frame_equal(read_scores(one.out_path), reference)
    pd.testing.assert_frame_equal(read_scores(three.out_path), reference)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        dask = _run(
            events_file,
            tmp_path / "dask.parquet",
            model,
            engine="dask",
            scheduler=client,
            partitions=3,
        )
    assert dask.engine == "dask" and dask.partitions == 3
    pd.testing.assert_frame_equal(read_scores(dask.out_path), reference)
    for t in TIERS:  # the Dask run sums GMV in SQL, the local run from the fan features
        local_row, dask_row = three.summary["tiers"][t], dask.summary["tiers"][t]
        assert dask_row["fans"] == local_row["fans"]
        assert dask_row["gmv"] == pytest.approx(local_row["gmv"], abs=0.01)


def test_more_buckets_than_fans(model, events, tmp_path):
    """Buckets no fan hashes to are skipped; a CSV frame is split like Parquet."""
    few = events[events["fan_id"].isin(events["fan_id"].unique()[:3])]
    path = tmp_path / "few.csv"
    few.to_csv(path, index=False)
    result = _run(path, tmp_path / "few.parquet", model, partitions=8)
    assert result.partitions == 8
    pd.testing.assert_frame_equal(read_scores(result.out_path), segment_frame(model, few, CUTOFF))


def test_purchase_only_input(model, events, tmp_path):
    orders = events[events["event_type"] == "order"].drop(columns=["watch_seconds"])
    path = tmp_path / "orders.parquet"
    orders.to_parquet(path)
    result = _run(path, tmp_path / "out.parquet", model)
    out = read_scores(result.out_path)
    cut = pd.Timestamp(CUTOFF, tz="Asia/Shanghai")
    assert set(out["fan_id"]) == set(orders.loc[orders["event_time"] < cut, "fan_id"])
    assert out[list(SCORE_COLUMNS[2:])].notna().all().all()
    pd.testing.assert_frame_equal(out, segment_frame(model, orders, CUTOFF))


def test_failure_mid_run_leaves_no_file(model, events_file, tmp_path, monkeypatch):
    import serving.batch as batch

    real = batch._score
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("scorer died")
        return real(*args, **kwargs)

    monkeypatch.setattr(batch, "_score", flaky)
    out = tmp_path / "fresh.parquet"
    with pytest.raises(RuntimeError, match="scorer died"):
        _run(events_file, out, model, partitions=3)
    assert calls["n"] == 2
    assert not out.exists() and not summary_path_for(out).exists()
    assert _leftovers(tmp_path) == []

    existing = tmp_path / "existing.parquet"
    existing.write_bytes(b"previous output")
    calls["n"] = 0
    with pytest.raises(RuntimeError):
        _run(events_file, existing, model, partitions=3)
    assert existing.read_bytes() == b"previous output"
    assert _leftovers(tmp_path) == []
    monkeypatch.setattr(batch, "_score", real)
    _run(events_file, existing, model, partitions=3)  # rerunning is safe
    assert len(read_scores(existing)) > 0


def _corrupt(events: pd.DataFrame, case: str) -> tuple[pd.DataFrame, str, list[int]]:
    df = events.head(300).reset_index(drop=True).copy()
    if case == "missing column":
        return df.drop(columns=["event_type"]), "event_type", []
    if case == "unparseable time":
        df["event_time"] = df["event_time"].astype(str)
        df.loc[[7, 42], "event_time"] = ["not a time", "2024-13-45 99:00"]
        return df, "event_time", [7, 42]
    if case == "negative amount":
        rows = df.index[df["event_type"] == "order"][:3].tolist()
        df.loc[rows, "amount"] = -5.0
        return df, "amount", rows
    if case == "unknown event type":
        df["event_type"] = df["event_type"].astype(str)
        df.loc[[3, 250], "event_type"] = "purchase"
        return df, "event_type", [3, 250]
    if case == "null fan id":
        df["fan_id"] = df["fan_id"].astype(object)
        df.loc[[0, 9], "fan_id"] = None
        return df, "fan_id", [0, 9]
    raise AssertionError(case)


BAD_CASES = [
    "missing column",
    "unparseable time",
    "negative amount",
    "unknown event type",
    "null fan id",
]


@pytest.mark.parametrize("case", BAD_CASES)
@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_bad_input_names_rows_and_writes_nothing(model, events, tmp_path, case, kind):
    df, column, rows = _corrupt(events, case)
    src = tmp_path / "in"
    src.mkdir()
    path = src / f"events.{kind}"
    if kind == "parquet":
        df.to_parquet(path)
    else:
        df.to_csv(path, index=False)
    out = tmp_path / "out" / "tiers.parquet"
    with pytest.raises(ContractError) as info:
        _run(path, out, model)
    failures = info.value.failures
    assert column in set(failures["column"])
    hit = failures[failures["column"] == column]
    if rows:
        assert sorted(int(r) for r in hit["row"]) == sorted(rows)
    else:
        assert "missing" in hit["check"].iloc[0]
    if kind == "parquet" and rows:
        n = len(rows)
        assert f"({n} rows fail)" in hit["check"].iloc[0]
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_csv_and_folder_inputs(model, events, reference, tmp_path):
    csv = tmp_path / "events.csv"
    events.to_csv(csv, index=False)
    from_csv = _run(csv, tmp_path / "csv.parquet", model)
    pd.testing.assert_frame_equal(read_scores(from_csv.out_path), reference)

    folder = tmp_path / "parts"
    folder.mkdir()
    shuffled = events.sample(frac=1.0, random_state=0)
    for i, part in enumerate(np.array_split(np.arange(len(shuffled)), 3)):
        shuffled.iloc[part].to_parquet(folder / f"part-{i}.parquet")
    from_folder = _run(folder, tmp_path / "folder.parquet", model, partitions=2)
    pd.testing.assert_frame_equal(read_scores(from_folder.out_path), reference)
    assert from_folder.events == len(events)

    csv_folder = tmp_path / "csvs"
    csv_folder.mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(events)), 2)):
        events.iloc[part].to_csv(csv_folder / f"part-{i}.csv", index=False)
    from_csvs = _run(csv_folder, tmp_path / "csvs.parquet", model)
    pd.testing.assert_frame_equal(read_scores(from_csvs.out_path), reference)


@pytest.mark.parametrize("window", [30, 45])
def test_summary_counts_and_gmv(model, events, events_file, tmp_path, window):
    """30 days: summed from the fan features during the run; 45: one SQL query afterwards."""
    import dataclasses
    import json

    from features.fans import TierRules

    model = dataclasses.replace(model, rules=TierRules(window_days=window))
    result = _run(events_file, tmp_path / "out.parquet", model, partitions=2)
    out = read_scores(result.out_path)
    saved = json.loads(result.summary_path.read_text())
    assert saved == json.loads(json.dumps(result.summary, default=str))
    counts = out["tier"].value_counts()
    assert {t: saved["tiers"][t]["fans"] for t in TIERS} == {t: int(counts[t]) for t in TIERS}
    assert saved["fans"] == len(out) == result.fans
    # GMV: order amounts in the rules window before the cutoff, by predicted tier
    cut = pd.Timestamp(CUTOFF, tz="Asia/Shanghai")
    start = cut - pd.Timedelta(days=model.rules.window_days)
    win = events[
        (events["event_type"] == "order")
        & (events["event_time"] >= start)
        & (events["event_time"] < cut)
    ]
    by_fan = win.groupby("fan_id")["amount"].sum()
    tier_of = out.set_index("fan_id")["tier"]
    by_tier = by_fan.groupby(tier_of.reindex(by_fan.index).to_numpy(), observed=False).sum()
    for t in TIERS:
        assert saved["tiers"][t]["gmv"] == pytest.approx(by_tier.get(t, 0.0), abs=0.01)
    assert sum(saved["tiers"][t]["gmv_share"] for t in TIERS) == pytest.approx(1.0)
    assert saved["cutoff"] == cut.isoformat() and saved["events"] == len(events)


def test_transition_matrix(model, events_file, tmp_path):
    first = _run(events_file, tmp_path / "first.parquet", model)
    prev = read_scores(first.out_path)
    rng = np.random.default_rng(0)
    prev["tier"] = pd.Categorical(rng.choice(list(TIERS), len(prev)), categories=list(TIERS))
    prev = pd.concat(
        [
            prev.iloc[10:],  # the first 10 fans are new in the next run
            pd.DataFrame({"fan_id": ["ghost-1", "ghost-2"], "tier": ["core", "dormant"]}),
        ],
        ignore_index=True,
    )
    prev_path = tmp_path / "previous.parquet"
    prev.to_parquet(prev_path)
    second = _run(events_file, tmp_path / "second.parquet", model, previous=prev_path)
    matrix = second.summary["transition"]["matrix"]
    cur = read_scores(second.out_path)
    merged = prev.astype({"tier": "str"}).merge(
        cur.astype({"tier": "str"}), on="fan_id", how="outer", suffixes=("_p", "_c")
    )
    merged = merged.fillna({"tier_p": "(new)", "tier_c": "(gone)"})
    expected = merged.groupby(["tier_p", "tier_c"]).size()
    for (p, c), n in expected.items():
        assert matrix[p][c] == n
    assert sum(sum(row.values()) for row in matrix.values()) == len(merged)
    assert sum(matrix["(new)"].values()) == 10
    assert matrix["core"]["(gone)"] == 1 and matrix["dormant"]["(gone)"] == 1


def test_default_cutoff_is_midnight_after_latest_event(model, events, events_file, tmp_path):
    latest = events["event_time"].max()
    expected = latest.tz_convert("Asia/Shanghai").normalize() + pd.Timedelta(days=1)
    assert default_cutoff(int(latest.value // 1000)) == expected
    result = segment(events_file, tmp_path / "out.parquet", model=model, progress=False)
    assert result.cutoff == expected
    assert result.fans == events["fan_id"].nunique()
    midnight = pd.Timestamp("2024-06-01", tz="Asia/Shanghai")
    assert default_cutoff(int(midnight.value // 1000)) == midnight + pd.Timedelta(days=1)


def test_cli_end_to_end(model, events, events_file, tmp_path):
    from livecast.cli import app
    from training.tiers import save_tier_bundle

    bundle = save_tier_bundle(model, tmp_path / "models" / "tiers-test")
    out = tmp_path / "out" / "tiers.parquet"
    runner = CliRunner()
    args = ["segment", "--events", str(events_file), "--out", str(out), "--model", str(bundle)]
    ok = runner.invoke(app, [*args, "--cutoff", CUTOFF, "--partitions", "2"])
    assert ok.exit_code == 0, ok.output
    assert "fan tiers" in ok.output and "dormant" in ok.output
    assert len(read_scores(out)) == len(segment_frame(model, events, CUTOFF))
    again = runner.invoke(app, [*args, "--cutoff", CUTOFF, "--previous", str(out)])
    assert again.exit_code == 0, again.output
    assert "transitions from" in again.output

    bad, _, _ = _corrupt(events, "negative amount")
    bad_path = tmp_path / "bad.parquet"
    bad.to_parquet(bad_path)
    bad_out = tmp_path / "bad_out" / "tiers.parquet"
    res = runner.invoke(
        app, ["segment", "--events", str(bad_path), "--out", str(bad_out), "--model", str(bundle)]
    )
    assert res.exit_code == 2
    assert "amount" in res.output and "rows fail" in res.output
    assert not bad_out.exists()
    missing = runner.invoke(
        app,
        [
            "segment",
            "--events",
            str(tmp_path / "nope"),
            "--out",
            str(bad_out),
            "--model",
            str(bundle),
        ],
    )
    assert missing.exit_code == 2 and "no such file" in missing.output
