"""``train``: backtest, fit the final forecaster, log and register it, export a bundle."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from features.io import Dataset
from training.backtest import SERVABLE_BASELINE, BacktestResult, run_backtest
from training.bundle import save_bundle
from training.data import copies_for, training_frame
from training.models import (
    EXECUTION_SETTINGS,
    TARGETS,
    Forecaster,
    ForecastParams,
    fit_forecaster,
)
from training.report import write_report


@dataclass(frozen=True)
class TrainResult:
    train_id: str
    forecaster: Forecaster
    backtest: BacktestResult
    bundle_dir: Path
    fold_signature: str
    versions: dict[str, str]


def fold_signature(frame: pd.DataFrame, cuts: list[pd.Timestamp], horizon_days: int) -> str:
    """Fingerprint of the evaluation: the data's sessions and outcomes, and the cut dates.

    Two runs with the same signature were evaluated on the same backtest folds.
    """
    h = hashlib.sha256()
    h.update(pd.util.hash_pandas_object(frame["session_id"], index=False).to_numpy().tobytes())
    for t in TARGETS:
        if t in frame:
            h.update(pd.util.hash_pandas_object(frame[t], index=False).to_numpy().tobytes())
    h.update(json.dumps([str(c) for c in cuts] + [horizon_days]).encode())
    return h.hexdigest()[:16]


def train_id_for(signature: str, params: ForecastParams) -> str:
    """The id of a configuration evaluated on ``signature``'s folds: the same on any machine
    (the thread count is left out: 1, 2 or 16 threads fit the same trees)."""
    payload = signature + json.dumps(
        params.model_dump(exclude=set(EXECUTION_SETTINGS)), sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:10]


def flat_metrics(metrics: dict[str, dict[str, dict[str, Any]]], target: str) -> dict[str, float]:
    """MLflow metric names for one target: ``<method>_<metric>``."""
    out = {}
    for method, vals in metrics[target].items():
        for k, v in (vals or {}).items():
            if v is not None:
                out[f"{method}_{k}"] = float(v)
    return out


def importance_table(forecaster: Forecaster, target: str) -> pd.DataFrame:
    model = forecaster.models[target]
    gain = model.booster.feature_importance(importance_type="gain")
    columns = range(len(forecaster.features)) if model.columns is None else model.columns
    df = pd.DataFrame({"feature": [forecaster.features[i] for i in columns], "gain": gain})
    df["family"] = df["feature"].str.split("__").str[0]
    return df.sort_values("gain", ascending=False, ignore_index=True)


def serve_baseline(
    forecaster: Forecaster, frame: pd.DataFrame, params: ForecastParams, targets: tuple[str, ...]
) -> None:
    """Replace the models of ``targets`` by the history-only baseline (the plain LightGBM on the
    room family, as backtested), fitted on ``frame`` and reading only the room columns."""
    from features.sessions import history_columns

    room = history_columns(forecaster.features)
    plain = params.model_copy(
        update={"base": False, "objective": "log_l2", "select": False, "ahead": False}
    )
    hist = fit_forecaster(frame, plain, targets=targets, features=room)
    position = {c: i for i, c in enumerate(forecaster.features)}
    columns = tuple(position[c] for c in hist.features)
    for t in targets:
        m = hist.models[t]
        forecaster.models[t] = dataclasses.replace(
            m, columns=columns, source=f"baseline:{SERVABLE_BASELINE}"
        )


def train(
    ds: Dataset,
    *,
    params: ForecastParams | None = None,
    models_dir: Path,
    report_dir: Path,
    mlflow_uri: str | None,
    folds: int = 3,
    horizon_days: int = 30,
    frame: pd.DataFrame | None = None,
) -> TrainResult:
    """Backtest the configuration, fit it on all data, export the bundle and register it.

    The bundle (shared by the targets) is logged once, as the ``bundle`` artifact of the first
    target's run; the other runs name that run in their ``bundle_run_id`` tag. With
    ``mlflow_uri=None`` nothing is logged (the bundle is still exported). ``frame``: the
    :func:`~training.data.training_frame` of ``ds`` when the caller has built it already.
    """
    params = params or ForecastParams()
    if frame is None:
        frame = training_frame(ds.sessions, ds.session_products)
    copies = copies_for(params, ds.sessions, ds.session_products)
    bt = run_backtest(
        frame,
        truth=ds.truth,
        params=params,
        folds=folds,
        horizon_days=horizon_days,
        copies=copies,
        sessions=ds.sessions if copies is not None else None,
        products=ds.session_products if copies is not None else None,
    )  # the tables give the model choice its ahead view (and the report the frozen one)
    signature = fold_signature(frame, bt.cuts, horizon_days)
    train_id = train_id_for(signature, params)
    report_dir = Path(report_dir)
    write_report(bt, report_dir, title=f"livecast backtest ({train_id})")
    forecaster = fit_forecaster(frame, params, per_target=bt.selection.params, copies=copies)
    served = bt.served
    fallback = [t for t in forecaster.models if served[t]["source"] != "model"]
    if fallback:
        serve_baseline(forecaster, frame, params, tuple(fallback))
    forecaster.metadata.update(
        {
            "train_id": train_id,
            "fold_signature": signature,
            "folds": folds,
            "horizon_days": horizon_days,
            "backtest": bt.metrics,
            "served": served,
            "model_choice": bt.selection.record() if bt.selection else None,
            "trained_until": str(frame["start_time"].max()),
            "n_train": len(frame),
        }
    )
    bundle_dir = save_bundle(
        forecaster, ds.sessions, ds.session_products, Path(models_dir) / f"forecaster-{train_id}"
    )
    versions: dict[str, str] = {}
    if mlflow_uri:
        from training.registry import BUNDLE_RUN_TAG, log_model_run

        example = forecaster.matrix(frame.tail(3))
        bundle_run: dict[str, str] = {}
        for target in forecaster.models:
            logged = log_model_run(
                uri=mlflow_uri,
                target=target,
                booster=forecaster.models[target].booster,
                params={**params.model_dump(), "folds": folds, "horizon_days": horizon_days},
                metrics={
                    **flat_metrics(bt.metrics, target),
                    "served_wape": float(served[target]["wape"]),
                    "best_baseline_wape": float(served[target]["best_baseline_wape"]),
                },
                tags={
                    "source": served[target]["source"],
                    "model_choice": str(
                        bt.selection.chosen.get(target, "-") if bt.selection else "-"
                    ),
                    "train_id": train_id,
                    "fold_signature": signature,
                    "bundle": bundle_dir.name,
                    "threads": str(params.threads()),
                    **bundle_run,
                },
                input_example=example,
                artifacts=[report_dir],
                importance=importance_table(forecaster, target),
                bundle=None if bundle_run else bundle_dir,
                forecast=(forecaster.models[target], forecaster.features, forecaster.vocab),
            )
            bundle_run = bundle_run or {BUNDLE_RUN_TAG: logged.run_id}
            versions[target] = logged.version
    return TrainResult(train_id, forecaster, bt, bundle_dir, signature, versions)
