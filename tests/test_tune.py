"""Model tier: the Optuna study runs under a parent MLflow run with nested trial runs."""

from __future__ import annotations

import mlflow
import optuna

from training.models import ForecastParams
from training.tune import load_params, save_params, search_space, tune


def test_search_space_is_a_plain_function_of_the_trial():
    fixed = optuna.trial.FixedTrial(
        {
            "learning_rate": 0.07,
            "num_leaves": 15,
            "min_data_in_leaf": 20,
            "feature_fraction": 0.9,
            "bagging_fraction": 0.7,
            "lambda_l2": 2.0,
            "base_alpha": 50.0,
        }
    )
    params = search_space(fixed, ForecastParams(max_rounds=123))
    assert params.learning_rate == 0.07 and params.num_leaves == 15
    assert params.base_alpha == 50.0
    assert params.max_rounds == 123  # untuned settings come from the base


def test_tune_logs_nested_runs_and_feeds_train(small_frame, mlflow_uri, tmp_path):
    base = ForecastParams(max_rounds=60, early_stopping_rounds=10)
    result = tune(
        small_frame,
        n_trials=3,
        seed=0,
        folds=2,
        horizon_days=20,
        base=base,
        mlflow_uri=mlflow_uri,
    )
    assert result.n_trials == 3 and result.best_value > 0
    assert result.best_params.max_rounds == 60
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri)
    exp = client.get_experiment_by_name("livecast-tuning")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 3
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert parents[0].data.metrics["best_mean_wape"] == result.best_value
    path = save_params(result.best_params, tmp_path / "best.json")
    assert load_params(path) == result.best_params
