"""``retrain``: backtest, train and promote in one step, to refresh the champion on new data.

Planners' sessions keep arriving; the champion was fitted on the data of its day. ``retrain``
runs :func:`training.train.train` on the current data (its rolling-origin backtest, the fit on
all sessions, the bundle and the registered versions), then :func:`training.promote.promote`.
The champion was backtested on older folds, so both configurations are backtested again on the
candidate's folds (:func:`rescorer`). The candidate replaces the champion when it scores better
there, or the same while fitted on newer sessions (``refresh``: the champion's own
configuration refitted on fresher data is the better model to serve). Either way a candidate
that loses to a spreadsheet baseline is refused by the gate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features.io import Dataset
from training.bundle import BUNDLE_FILE, champion_info, read_bundle_meta
from training.models import EXECUTION_SETTINGS, ForecastParams
from training.promote import Decision, promote
from training.train import TrainResult, train


@dataclass(frozen=True)
class RetrainResult:
    """What a retrain did: the candidate it trained and the gate's decision."""

    train: TrainResult
    decision: Decision
    refresh: bool
    """Whether the candidate's data ends after the champion's (a tie then promotes)."""
    champion_trained_until: str | None
    """The latest session start the champion was fitted on (None: no champion yet)."""


def rescorer(
    frame: pd.DataFrame,
    *,
    folds: int = 3,
    horizon_days: int = 30,
    tables: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> Callable[[dict[str, str]], dict[str, float]]:
    """A function from a registered run's parameters to its model WAPE per target, backtested
    on ``frame`` (the same folds for every configuration it is given). The thread count is this
    machine's, not the run's. ``tables`` (the sessions and products ``frame`` was built from)
    give the origin copies a configuration may choose or train on (built once, when first
    needed)."""
    from training.backtest import run_backtest
    from training.data import copies_for
    from training.tune import load_params

    cache: dict[int, pd.DataFrame | None] = {}

    def score(run_params: dict[str, str]) -> dict[str, float]:
        known = {
            k: v
            for k, v in run_params.items()
            if k in ForecastParams.model_fields and k not in EXECUTION_SETTINGS
        }
        params = load_params(None, **known)
        copies = None
        if tables is not None:
            if params.seed not in cache:
                cache[params.seed] = copies_for(params, *tables)
            copies = cache[params.seed]
        res = run_backtest(
            frame,
            params=params,
            folds=folds,
            horizon_days=horizon_days,
            baselines=False,
            copies=copies,
            sessions=tables[0] if copies is not None else None,
            products=tables[1] if copies is not None else None,
        )
        return {t: res.metrics[t]["model"]["wape"] for t in res.metrics}

    return score


def champion_trained_until(models_dir: Path) -> str | None:
    """``trained_until`` of the champion bundle in ``models_dir`` (None: no champion, or a
    bundle that does not say)."""
    info = champion_info(models_dir)
    folder = Path(models_dir) / info["bundle"] if info is not None else None
    if folder is None or not (folder / BUNDLE_FILE).is_file():
        return None
    value = read_bundle_meta(folder, ()).get("trained_until")
    return str(value) if value is not None else None


def is_newer(candidate_until: object, champion_until: str | None) -> bool:
    """Whether data ending at ``candidate_until`` ends after ``champion_until`` (times are
    compared as instants; a champion that does not say is treated as older)."""
    if champion_until is None:
        return True
    return pd.Timestamp(str(candidate_until)) > pd.Timestamp(champion_until)


def retrain(
    ds: Dataset,
    *,
    params: ForecastParams | None,
    models_dir: Path,
    report_dir: Path,
    mlflow_uri: str,
    folds: int = 3,
    horizon_days: int = 30,
    frame: pd.DataFrame | None = None,
) -> RetrainResult:
    """Train a candidate on ``ds`` and promote it if it wins (see the module docstring)."""
    from training.data import training_frame

    if frame is None:
        frame = training_frame(ds.sessions, ds.session_products)
    before = champion_trained_until(models_dir)
    result = train(
        ds,
        params=params,
        models_dir=models_dir,
        report_dir=report_dir,
        mlflow_uri=mlflow_uri,
        folds=folds,
        horizon_days=horizon_days,
        frame=frame,
    )
    refresh = is_newer(frame["start_time"].max(), before)
    decision = promote(
        uri=mlflow_uri,
        models_dir=models_dir,
        train_id=result.train_id,
        reevaluate=rescorer(
            frame,
            folds=folds,
            horizon_days=horizon_days,
            tables=(ds.sessions, ds.session_products),
        ),
        refresh=refresh,
    )
    return RetrainResult(result, decision, refresh, before)
