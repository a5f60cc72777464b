"""``tune``: an Optuna study over the forecaster's LightGBM settings.

The search space is a plain function of the trial. Each trial backtests fold by fold on the
same time-ordered folds, reporting the running WAPE so the median pruner can stop poor trials
early. The study runs under a parent MLflow run with one nested run per trial; the best
parameters are written to a JSON file that ``livecast train --params`` reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from features.io import atomic_path
from training.backtest import make_cuts, run_backtest
from training.models import EXECUTION_SETTINGS, ForecastParams

GATE_TARGETS = ("viewers", "gmv")


def search_space(trial: optuna.Trial, base: ForecastParams | None = None) -> ForecastParams:
    """The tuned settings, as a function of the trial."""
    base = base or ForecastParams()
    return base.model_copy(
        update={
            "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 8, 128, log=True),
            "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 10, 200, log=True),
            "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
            "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
            "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 30.0, log=True),
            "base_alpha": trial.suggest_float("base_alpha", 10.0, 3_000.0, log=True),
        }
    )


@dataclass(frozen=True)
class TuneResult:
    best_params: ForecastParams
    best_value: float
    n_trials: int
    n_pruned: int
    study: optuna.Study


def tune(
    frame: pd.DataFrame,
    *,
    n_trials: int = 20,
    seed: int = 0,
    folds: int = 3,
    horizon_days: int = 30,
    base: ForecastParams | None = None,
    mlflow_uri: str | None = None,
) -> TuneResult:
    """Run the study; the objective is the mean model WAPE over viewers and GMV."""
    base = base or ForecastParams(seed=seed)
    frame = frame.sort_values(["start_time", "session_id"]).reset_index(drop=True)
    windows = make_cuts(frame["start_time"], folds, horizon_days)
    parent = None
    if mlflow_uri:
        import mlflow

        from training.registry import configure, ensure_experiment

        configure(mlflow_uri)
        exp_id = ensure_experiment("livecast-tuning", mlflow_uri)
        parent = mlflow.start_run(experiment_id=exp_id, run_name=f"tune-{n_trials}-trials")

    def objective(trial: optuna.Trial) -> float:
        params = search_space(trial, base)
        scores = []
        for k, window in enumerate(windows):
            res = run_backtest(
                frame, params=params, windows=[window], targets=GATE_TARGETS, baselines=False
            )
            scores.append(sum(res.metrics[t]["model"]["wape"] for t in GATE_TARGETS) / 2)
            running = sum(scores) / len(scores)
            trial.report(running, step=k)
            if trial.should_prune():
                _log_trial(trial, params, running, pruned=True)
                raise optuna.TrialPruned()
        value = sum(scores) / len(scores)
        _log_trial(trial, params, value, pruned=False)
        return value

    def _log_trial(trial: optuna.Trial, params: ForecastParams, value: float, pruned: bool):
        if parent is None:
            return
        import mlflow

        with mlflow.start_run(
            experiment_id=parent.info.experiment_id, run_name=f"trial-{trial.number}", nested=True
        ):
            mlflow.log_params(trial.params)
            mlflow.log_metric("mean_wape", value)
            mlflow.set_tag("pruned", str(pruned))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
    )
    try:
        study.optimize(objective, n_trials=n_trials)
    finally:
        if parent is not None:
            import mlflow

            if study.best_trials:
                mlflow.log_params({f"best_{k}": v for k, v in study.best_params.items()})
                mlflow.log_metric("best_mean_wape", study.best_value)
            mlflow.end_run()
    best = search_space(optuna.trial.FixedTrial(study.best_params), base)
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    return TuneResult(best, float(study.best_value), len(study.trials), pruned, study)


def save_params(params: ForecastParams, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(params.model_dump(exclude=set(EXECUTION_SETTINGS)), indent=2))
    return path


def load_params(path: str | Path | None, **overrides: Any) -> ForecastParams:
    """Parameters from a JSON file written by ``tune`` (defaults when ``path`` is None).

    A file's ``num_threads`` (older files wrote 2) is ignored, so training uses the machine's
    cores; ``overrides`` are applied as given.
    """
    data: dict[str, Any] = {}
    if path is not None:
        data = json.loads(Path(path).read_text())
        for key in EXECUTION_SETTINGS:
            data.pop(key, None)
    return ForecastParams(**{**data, **overrides})
