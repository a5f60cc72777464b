"""Model tier: ``retrain`` (backtest, train, promote in one step) refreshes the champion on newer
sessions, keeps it when the candidate is worse, and the CLI says which happened."""

from __future__ import annotations

import pandas as pd
from typer.testing import CliRunner

from features.io import Dataset, write_dataset
from livecast.cli import app
from livecast.config import get_settings
from training.bundle import champion_info, load_bundle
from training.models import ForecastParams
from training.promote import Candidate, decide
from training.registry import CHAMPION, alias_version
from training.retrain import champion_trained_until, is_newer, retrain

PARAMS = ForecastParams(learning_rate=0.1, max_rounds=300, early_stopping_rounds=20, select=False)
WORSE = ForecastParams(
    learning_rate=0.02, max_rounds=10, early_stopping_rounds=5, num_leaves=4, select=False
)


def _cand(train_id, viewers, gmv, baseline=None):
    return Candidate(
        train_id,
        {"viewers": "1", "gmv": "1"},
        {"viewers": viewers, "gmv": gmv},
        "s",
        f"forecaster-{train_id}",
        baseline=baseline or {},
    )


def test_refresh_promotes_a_tie_but_never_a_loss():
    champ = _cand("a", 0.30, 0.40)
    tie = _cand("b", 0.30, 0.40)
    assert not decide(tie, champ)[0]  # without newer data a tie is not a win
    promoted, reason = decide(tie, champ, refresh=True)
    assert promoted and "newer data" in reason
    assert not decide(_cand("b", 0.31, 0.40), champ, refresh=True)[0]
    assert not decide(_cand("a", 0.30, 0.40), champ, refresh=True)[0]  # already the champion
    # a tie that loses to a spreadsheet baseline is still refused
    loses = _cand("b", 0.30, 0.40, baseline={"viewers": 0.25, "gmv": 0.5})
    assert not decide(loses, champ, refresh=True)[0]


def test_is_newer_compares_instants():
    assert is_newer("2025-06-02 10:00:00+08:00", None)
    assert is_newer(pd.Timestamp("2025-06-02", tz="UTC"), "2025-06-01 23:00:00+00:00")
    # the same instant written in two zones is not newer
    assert not is_newer("2025-06-02 08:00:00+08:00", "2025-06-02 00:00:00+00:00")


def _until(ds: Dataset, day: str) -> Dataset:
    """The sessions (and their products) that started before ``day``: the data of an earlier
    date."""
    cut = pd.Timestamp(day, tz=ds.sessions["start_time"].dt.tz)
    sessions = ds.sessions[ds.sessions["start_time"] < cut].reset_index(drop=True)
    keep = ds.session_products["session_id"].isin(sessions["session_id"])
    return Dataset(sessions, ds.session_products[keep].reset_index(drop=True))


def test_retrain_refreshes_on_newer_data_and_keeps_a_better_champion(
    small_dataset, mlflow_uri, tmp_path
):
    models = tmp_path / "models"
    common = {"models_dir": models, "mlflow_uri": mlflow_uri, "folds": 1, "horizon_days": 20}
    last = small_dataset.sessions["start_time"].max()
    older = _until(small_dataset, str((last - pd.Timedelta(days=30)).date()))
    full = Dataset(small_dataset.sessions, small_dataset.session_products)

    first = retrain(older, params=PARAMS, report_dir=tmp_path / "r1", **common)
    assert first.decision.promoted and first.champion_trained_until is None
    until_first = champion_trained_until(models)
    assert pd.Timestamp(until_first) == older.sessions["start_time"].max()

    # the same configuration on 30 more days: a tie on the same folds, fitted on newer data
    second = retrain(full, params=PARAMS, report_dir=tmp_path / "r2", **common)
    assert second.refresh and second.decision.promoted, second.decision.reason
    assert champion_info(models)["train_id"] == second.train.train_id
    assert pd.Timestamp(champion_trained_until(models)) == last > pd.Timestamp(until_first)
    assert load_bundle(models).metadata["train_id"] == second.train.train_id
    gmv = str(alias_version("gmv", CHAMPION, mlflow_uri).version)
    assert gmv == second.train.versions["gmv"]

    # a worse configuration on the same data does not replace it
    third = retrain(full, params=WORSE, report_dir=tmp_path / "r3", **common)
    assert not third.refresh and not third.decision.promoted
    assert "does not beat" in third.decision.reason
    assert champion_info(models)["train_id"] == second.train.train_id


def test_retrain_command_reports_the_decision(small_dataset, mlflow_uri, tmp_path, monkeypatch):
    data = write_dataset(
        Dataset(small_dataset.sessions, small_dataset.session_products), tmp_path / "data"
    )
    monkeypatch.setenv("LIVECAST_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("LIVECAST_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("LIVECAST_MLFLOW_URI", mlflow_uri)
    params = tmp_path / "params.json"
    params.write_text(WORSE.model_dump_json())  # small trees: the command, not the model
    get_settings.cache_clear()
    try:
        args = ["retrain", "--data", str(data), "--params", str(params), "--folds", "1"]
        first = CliRunner().invoke(app, args)
        assert first.exit_code == 0, first.output
        assert "no champion yet" in first.output
        again = CliRunner().invoke(app, args)  # same data, same configuration: nothing moves
        assert again.exit_code == 0, again.output
        assert "not promoted" in again.output and "already is the champion" in again.output
    finally:
        get_settings.cache_clear()
