"""Whole-pipeline run through the command line, on small simulated data."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from livecast.cli import app
from livecast.config import get_settings

runner = CliRunner()


@pytest.fixture
def settings_env(tmp_path, monkeypatch, mlflow_uri):
    monkeypatch.setenv("LIVECAST_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("LIVECAST_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("LIVECAST_MLFLOW_URI", mlflow_uri)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_help_lists_every_subcommand():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in (
        "simulate",
        "features",
        "import",
        "backtest",
        "train",
        "promote",
        "tune",
        "forecast",
        "pipeline",
    ):
        assert cmd in result.output


def test_simulate_features_backtest_train_promote_forecast(settings_env):
    tmp = settings_env
    data = tmp / "data"
    r = runner.invoke(
        app,
        [
            "simulate",
            "--out",
            str(data),
            "--rooms",
            "6",
            "--days",
            "200",
            "--fans",
            "300",
            "--seed",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    assert (data / "sessions.parquet").exists() and (data / "truth.parquet").exists()

    r = runner.invoke(app, ["features", "--data", str(data), "--out", str(tmp / "f.parquet")])
    assert r.exit_code == 0, r.output
    frame = pd.read_parquet(tmp / "f.parquet")
    assert len(frame) == len(pd.read_parquet(data / "sessions.parquet"))

    r = runner.invoke(
        app,
        [
            "backtest",
            "--data",
            str(data),
            "--out",
            str(tmp / "bt"),
            "--folds",
            "2",
            "--horizon-days",
            "20",
        ],
    )
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp / "bt" / "metrics.json").read_text())
    assert set(metrics) == {"viewers", "orders", "gmv"}
    assert set(metrics["gmv"]) == {"model", "trailing_mean", "slot_mean", "history_only", "oracle"}
    assert set(metrics["gmv"]["model"]) == {
        "wape",
        "mape_median",
        "rmsle",
        "bias",
        "coverage_p10_p90",
        "pinball",
        "n",
    }
    assert metrics["gmv"]["trailing_mean"]["coverage_p10_p90"] is None
    assert (tmp / "bt" / "report.md").exists()

    r = runner.invoke(app, ["train", "--data", str(data), "--folds", "2", "--horizon-days", "20"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["promote"])
    assert r.exit_code == 0 and "promoted" in r.output
    r = runner.invoke(app, ["forecast"])
    assert r.exit_code == 0, r.output
    assert "P50" in r.output and "gmv" in r.output


def test_bad_dataset_gives_a_failure_table_and_exit_code_2(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    pd.DataFrame(
        {
            "session_id": ["a", "b"],
            "room_id": ["r", "r"],
            "platform": ["douyin", "weibo"],
            "host_id": ["h", "h"],
            "start_time": ["2025-01-01 20:00", "2025-01-02 20:00"],
            "planned_duration_min": [120.0, -5.0],
            "session_type": ["daily", "daily"],
        }
    ).to_parquet(bad / "sessions.parquet")
    r = runner.invoke(app, ["features", "--data", str(bad), "--out", str(tmp_path / "f.pq")])
    assert r.exit_code == 2
    assert "weibo" in r.output and "planned_duration_min" in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "f.pq").exists()
