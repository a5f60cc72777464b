"""Error breakdowns of the backtest report: by host, room, planned-duration band and month."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from training.backtest import BacktestResult, compute_metrics
from training.report import duration_band, error_breakdown, error_breakdowns, write_report

TZ = "Asia/Shanghai"
TARGETS = ("viewers", "gmv")


def _preds() -> pd.DataFrame:
    """Five predicted sessions: host h1 runs rooms r1 and r2, host h2 runs room r3.

    viewers: model abs errors 10, 60 (h1) and 10, 20 (h2); the fifth actual is unknown.
    gmv: model abs errors 0, 100 (h1) and 300, 400 (h2).
    """
    start = pd.to_datetime(
        [
            "2021-07-30 20:00",
            "2021-07-31 23:30",
            "2021-08-01 00:30",
            "2021-08-02 20:00",
            "2021-08-03 20:00",
        ]
    ).tz_localize(TZ)
    return pd.DataFrame(
        {
            "session_id": ["s1", "s2", "s3", "s4", "s5"],
            "room_id": ["r1", "r2", "r3", "r3", "r3"],
            "host_id": ["h1", "h1", "h2", "h2", "h2"],
            "planned_duration_min": [59.0, 60.0, 240.0, 480.0, np.nan],
            "start_time": start,
            "fold": [0, 0, 1, 1, 1],
            "cut": pd.Timestamp("2021-07-30", tz=TZ),
            "cold_start": [False, False, True, False, False],
            "room__followers": [1e3, 2e4, 5e5, 5e5, 5e5],
            "viewers": [100.0, 200.0, 50.0, 150.0, np.nan],
            "viewers__model_p10": [50.0, 150.0, 20.0, 100.0, 10.0],
            "viewers__model_p50": [90.0, 260.0, 40.0, 130.0, 30.0],
            "viewers__model_p90": [150.0, 300.0, 80.0, 200.0, 50.0],
            "viewers__trailing_mean": [50.0, 150.0, 100.0, 150.0, 40.0],
            "viewers__slot_mean": [80.0, 200.0, 30.0, 120.0, 40.0],
            "viewers__history_only": [120.0, 100.0, 60.0, 140.0, 40.0],
            "gmv": [1000.0, 0.0, 500.0, 500.0, np.nan],
            "gmv__model_p10": [500.0, 0.0, 100.0, 400.0, 100.0],
            "gmv__model_p50": [1000.0, 100.0, 200.0, 900.0, 300.0],
            "gmv__model_p90": [1500.0, 300.0, 600.0, 1200.0, 600.0],
            "gmv__trailing_mean": [900.0, 100.0, 400.0, 600.0, 300.0],
            "gmv__slot_mean": [800.0, 50.0, 450.0, 500.0, 300.0],
            "gmv__history_only": [1100.0, 0.0, 500.0, 400.0, 300.0],
        }
    )


def _row(df: pd.DataFrame, target: str, group: str) -> pd.Series:
    hit = df[(df["target"] == target) & (df["group"] == group)]
    assert len(hit) == 1, (target, group)
    return hit.iloc[0]


def test_host_breakdown_matches_hand_computed_wape_bias_and_error_share():
    df = error_breakdown(_preds(), TARGETS, "host")
    # rows: target order, then share of error descending (h1 carries viewers, h2 carries gmv)
    assert list(zip(df["target"], df["group"], strict=True)) == [
        ("viewers", "h1"),
        ("viewers", "h2"),
        ("gmv", "h2"),
        ("gmv", "h1"),
    ]
    assert "wape_oracle" not in df  # no oracle column in the predictions

    h1 = _row(df, "viewers", "h1")
    assert h1["n"] == 2 and h1["actual_total"] == pytest.approx(300)
    assert h1["wape_model"] == pytest.approx(70 / 300)  # |100-90| + |200-260|
    assert h1["bias_model"] == pytest.approx(50 / 300)  # (90 + 260 - 300) / 300
    assert h1["error_share"] == pytest.approx(70 / 100)
    assert h1["wape_trailing_mean"] == pytest.approx(100 / 300)
    assert h1["wape_slot_mean"] == pytest.approx(20 / 300)
    assert h1["wape_history_only"] == pytest.approx(120 / 300)

    h2 = _row(df, "viewers", "h2")
    assert h2["n"] == 2  # the unknown actual of s5 is not counted
    assert h2["actual_total"] == pytest.approx(200)
    assert h2["wape_model"] == pytest.approx(30 / 200)
    assert h2["bias_model"] == pytest.approx(-30 / 200)
    assert h2["error_share"] == pytest.approx(30 / 100)
    assert h2["wape_trailing_mean"] == pytest.approx(50 / 200)
    assert h2["wape_slot_mean"] == pytest.approx(50 / 200)
    assert h2["wape_history_only"] == pytest.approx(20 / 200)

    # overall viewers WAPE: trailing 150/500, slot 70/500, history 140/500 -> slot_mean is best
    assert set(df.loc[df["target"] == "viewers", "best_baseline"]) == {"slot_mean"}
    assert h1["wape_best_baseline"] == pytest.approx(20 / 300)
    assert h2["wape_best_baseline"] == pytest.approx(50 / 200)

    g1, g2 = _row(df, "gmv", "h1"), _row(df, "gmv", "h2")
    assert g1["wape_model"] == pytest.approx(100 / 1000)
    assert g2["wape_model"] == pytest.approx(700 / 1000)
    assert g1["error_share"] == pytest.approx(100 / 800)
    assert g2["error_share"] == pytest.approx(700 / 800)
    assert df.groupby("target")["error_share"].sum().to_dict() == pytest.approx(
        {"viewers": 1.0, "gmv": 1.0}
    )


def test_room_breakdown_splits_a_host_into_its_rooms():
    df = error_breakdown(_preds(), ["viewers"], "room")
    assert list(df["group"]) == ["r2", "r3", "r1"]  # errors 60, 30, 10
    assert list(df["error_share"]) == pytest.approx([0.6, 0.3, 0.1])
    assert _row(df, "viewers", "r2")["wape_model"] == pytest.approx(60 / 200)


def test_duration_band_edges():
    minutes = pd.Series([0.5, 59.9, 60, 119.9, 120, 239.9, 240, 479.9, 480, 1440, np.nan])
    assert list(duration_band(minutes)) == [
        "<1h",
        "<1h",
        "1-2h",
        "1-2h",
        "2-4h",
        "2-4h",
        "4-8h",
        "4-8h",
        ">=8h",
        ">=8h",
        "unknown",
    ]


def test_duration_band_breakdown_groups_by_planned_duration():
    df = error_breakdown(_preds(), ["viewers"], "duration_band")
    # s1 59 min, s2 60 min, s3 240 min, s4 480 min, s5 unknown duration (and unknown actual)
    assert list(df["group"]) == ["1-2h", ">=8h", "4-8h", "<1h", "unknown"]
    assert list(df["error_share"][:4]) == pytest.approx([0.6, 0.2, 0.1, 0.1])
    unknown = _row(df, "viewers", "unknown")
    assert unknown["n"] == 0 and np.isnan(unknown["wape_model"])


def test_month_is_the_local_month_across_a_month_boundary():
    preds = _preds()
    df = error_breakdown(preds, ["viewers"], "month")
    # 2021-07-31T23:30+08:00 is July; 2021-08-01T00:30+08:00 is August
    july, august = _row(df, "viewers", "2021-07"), _row(df, "viewers", "2021-08")
    assert july["n"] == 2 and july["wape_model"] == pytest.approx(70 / 300)
    assert august["n"] == 2 and august["wape_model"] == pytest.approx(30 / 200)

    # the same instants held in UTC (2021-08-01T00:30+08:00 is 2021-07-31T16:30Z)
    utc = preds.assign(start_time=preds["start_time"].dt.tz_convert("UTC"))
    in_utc = error_breakdown(utc, ["viewers"], "month")
    assert _row(in_utc, "viewers", "2021-07")["n"] == 3  # s3 counted in July: wrong locally
    local = error_breakdown(utc, ["viewers"], "month", tz=TZ)
    pd.testing.assert_frame_equal(local, df)


def test_missing_host_and_duration_columns_fall_back():
    preds = _preds().drop(columns=["host_id", "planned_duration_min"])
    host = error_breakdown(preds, ["viewers"], "host")
    room = error_breakdown(preds, ["viewers"], "room")
    pd.testing.assert_frame_equal(host, room)  # the host is the room
    band = error_breakdown(preds, ["viewers"], "duration_band")
    assert band.empty and {"group", "wape_model", "error_share"} <= set(band.columns)
    # room would duplicate host and there is no duration: neither breakdown is made
    assert list(error_breakdowns(preds, TARGETS)) == ["host", "month"]


def test_missing_host_id_on_a_row_falls_back_to_its_room():
    preds = _preds()
    preds.loc[0, "host_id"] = None
    groups = set(error_breakdown(preds, ["viewers"], "host")["group"])
    assert groups == {"r1", "h1", "h2"}
    assert list(error_breakdowns(preds, TARGETS)) == ["host", "room", "duration_band", "month"]


def _result(preds: pd.DataFrame) -> BacktestResult:
    return BacktestResult(compute_metrics(preds, TARGETS), preds, [pd.Timestamp("2021-07-30")])


def _strict_json(text: str) -> dict:
    def no_nan(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=no_nan)


def test_write_report_writes_breakdown_json_and_sections(tmp_path):
    paths = write_report(_result(_preds()), tmp_path)
    assert paths["breakdown"] == tmp_path / "breakdown.json"
    report = (tmp_path / "report.md").read_text()
    for section in (
        "## Error by host",
        "## Error by room",
        "## Error by duration band",
        "## Error by month",
    ):
        assert f"{section}\n" in report
    data = _strict_json((tmp_path / "breakdown.json").read_text())
    assert list(data) == ["host", "room", "duration_band", "month"]
    first = data["host"][0]
    assert (first["target"], first["group"]) == ("viewers", "h1")
    assert first["n"] == 2
    assert first["error_share"] == pytest.approx(0.7)
    assert first["wape_model"] == pytest.approx(70 / 300)
    unknown = [r for r in data["duration_band"] if r["group"] == "unknown"]
    assert unknown and all(r["wape_model"] is None for r in unknown)  # NaN -> null
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_write_report_without_host_and_duration_columns(tmp_path):
    preds = _preds().drop(columns=["host_id", "planned_duration_min"])
    write_report(_result(preds), tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "## Error by host" in report and "## Error by month" in report
    assert "## Error by room\n" not in report  # "## Error by room size" stays
    assert "## Error by duration band" not in report
    data = _strict_json((tmp_path / "breakdown.json").read_text())
    assert list(data) == ["host", "month"]
    assert {r["group"] for r in data["host"]} == {"r1", "r2", "r3"}


def test_error_by_lead_by_hand():
    from training.report import error_by_lead

    preds = pd.DataFrame(
        {
            "lead_days": [0.5, 3.0, 9.0, 40.0],
            "gmv": [100.0, 100.0, 200.0, 50.0],
            "gmv__model_p10": [50.0, 50.0, 100.0, 10.0],
            "gmv__model_p50": [80.0, 130.0, 200.0, 40.0],
            "gmv__model_p90": [90.0, 200.0, 300.0, 60.0],
        }
    )
    df = error_by_lead(preds, ["gmv"]).set_index("lead_days")
    assert list(df.index) == ["0-7", "8-14", "31-60", "all"]  # empty buckets are left out
    assert set(df["history"]) == {"fresh"}  # no frozen columns: fresh only
    assert df.loc["0-7", "n"] == 2
    assert df.loc["0-7", "wape"] == pytest.approx(50 / 200)
    assert df.loc["0-7", "bias"] == pytest.approx(10 / 200)
    assert df.loc["0-7", "coverage_p10_p90"] == pytest.approx(0.5)
    assert df.loc["all", "wape"] == pytest.approx(60 / 450)
