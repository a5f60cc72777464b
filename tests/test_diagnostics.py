"""Model tier: backtest diagnostics on predictions with a known error, importance by family, and
the promotion gate's dry run (decides, moves nothing)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.diagnostics import coverage_by, error_by, importance_by_family
from training.models import FAMILIES, ForecastParams, fit_forecaster


def _preds() -> pd.DataFrame:
    y = np.array([100.0, 200.0, 100.0, 300.0])
    return pd.DataFrame(
        {
            "room_id": ["a", "a", "b", "b"],
            "gmv": y,
            "gmv__model_p10": y * [0.5, 0.5, 1.2, 0.5],
            "gmv__model_p50": y * [1.0, 1.0, 1.5, 1.5],
            "gmv__model_p90": y * [2.0, 2.0, 2.0, 0.9],
            "gmv__trailing_mean": [150.0, 150.0, 200.0, 200.0],
        }
    )


def test_error_by_room_measures_each_group_separately():
    table = error_by(_preds(), "room_id").set_index("room_id")
    assert list(table["target"]) == ["gmv", "gmv"]
    assert table.loc["a", "wape_model"] == pytest.approx(0.0)
    assert table.loc["b", "wape_model"] == pytest.approx(0.5)
    assert table.loc["b", "bias_model"] == pytest.approx(0.5)
    assert table.loc["a", "wape_trailing_mean"] == pytest.approx(100 / 300)
    assert table.loc["a", "n"] == 2
    assert "wape_oracle" not in table  # absent methods are not invented


def test_coverage_by_counts_outcomes_inside_the_interval():
    table = coverage_by(_preds(), "room_id").set_index("room_id")
    assert table.loc["a", "coverage"] == 1.0
    assert table.loc["b", "coverage"] == 0.0


def test_bad_group_or_target_is_named():
    with pytest.raises(ValueError, match="no column 'slot'"):
        error_by(_preds(), "slot")
    with pytest.raises(ValueError, match="viewers"):
        coverage_by(_preds(), "room_id", targets=["viewers"])


def test_importance_by_family_shares_sum_to_one(small_frame):
    params = ForecastParams(max_rounds=40, early_stopping_rounds=5, num_threads=1)
    fc = fit_forecaster(small_frame, params, targets=("gmv",))
    table = importance_by_family(fc)
    assert list(table["family"]) == list(FAMILIES)
    assert table["share"].sum() == pytest.approx(1.0)
    total = fc.models["gmv"].booster.feature_importance(importance_type="gain").sum()
    assert table["gain"].sum() == pytest.approx(total)


def test_promotion_dry_run_decides_without_moving_anything(small_dataset, mlflow_uri, tmp_path):
    from training.bundle import CHAMPION_FILE
    from training.promote import promote
    from training.registry import CHALLENGER, CHAMPION, alias_version
    from training.train import train

    params = ForecastParams(max_rounds=40, early_stopping_rounds=5, num_threads=1)
    models = tmp_path / "models"
    result = train(
        small_dataset,
        params=params,
        models_dir=models,
        report_dir=tmp_path / "report",
        mlflow_uri=mlflow_uri,
        folds=1,
        horizon_days=20,
    )
    dry = promote(uri=mlflow_uri, models_dir=models, train_id=result.train_id, dry_run=True)
    assert dry.promoted and dry.candidate.train_id == result.train_id
    assert alias_version("gmv", CHAMPION, mlflow_uri) is None
    assert alias_version("gmv", CHALLENGER, mlflow_uri) is None
    assert not (models / CHAMPION_FILE).exists()
    real = promote(uri=mlflow_uri, models_dir=models, train_id=result.train_id)
    assert real.promoted and (models / CHAMPION_FILE).exists()
    assert str(alias_version("gmv", CHAMPION, mlflow_uri).version) == result.versions["gmv"]


def test_ordered_groups_keep_their_order():
    preds = _preds()
    preds["band"] = pd.Categorical(
        ["prime", "night", "prime", "night"], ["prime", "night"], ordered=True
    )
    for table in (error_by(preds, "band"), coverage_by(preds, "band")):
        assert list(table["band"]) == ["prime", "night"]  # category order, not A-Z
        assert table["band"].dtype == preds["band"].dtype
