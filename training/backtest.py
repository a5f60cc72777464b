"""Time-ordered backtest of the forecaster against honest baselines.

Rolling origin: for each cut, the model is trained on sessions that start before the cut and
predicts the sessions of the following window. Room-history features and the trailing-mean
baseline see sessions that finished before each predicted session (what the service sees with a
fresh history snapshot); the model itself never trains on a row at or after its cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from training.baselines import slot_mean, trailing_mean, with_fallback
from training.data import frozen_frame
from training.metrics import interval_metrics, point_metrics
from training.models import TARGETS, ForecastParams, fit_forecaster
from training.selection import Selection, select_params

METHODS = ("model", "trailing_mean", "slot_mean", "history_only", "oracle")
TRUTH_COLUMNS = {"viewers": "expected_viewers", "orders": "expected_orders", "gmv": "expected_gmv"}


@dataclass(frozen=True)
class BacktestResult:
    metrics: dict[str, dict[str, dict[str, Any]]]
    predictions: pd.DataFrame
    cuts: list[pd.Timestamp]
    selection: Selection | None = None

    @property
    def served(self) -> dict[str, dict[str, Any]]:
        """Per target, what serves it and how that did (see :func:`served`)."""
        return served(self.metrics)


def make_cuts(
    start_times: pd.Series, folds: int = 3, horizon_days: int = 30, cut: str | None = None
) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """(cut, end) windows: ``folds`` consecutive windows of ``horizon_days`` ending at the data's
    end, or a single split at ``cut`` (test from the cut to the end)."""
    last = start_times.max()
    tz = start_times.dt.tz
    if cut is not None:
        c = pd.Timestamp(cut)
        c = c.tz_localize(tz) if c.tzinfo is None else c.tz_convert(tz)
        if not start_times.min() < c <= last:
            raise ValueError(f"cut {cut} is outside the data ({start_times.min()} .. {last})")
        return [(c, last + pd.Timedelta(seconds=1))]
    end = last.normalize() + pd.Timedelta(days=1)
    windows = []
    for k in range(folds, 0, -1):
        c = end - pd.Timedelta(days=horizon_days * k)
        windows.append((c, c + pd.Timedelta(days=horizon_days)))
    if windows[0][0] <= start_times.min():
        raise ValueError("not enough history for that many folds: lower --folds or --horizon-days")
    return windows


def run_backtest(
    frame: pd.DataFrame,
    *,
    truth: pd.DataFrame | None = None,
    params: ForecastParams | None = None,
    folds: int = 3,
    horizon_days: int = 30,
    cut: str | None = None,
    targets: tuple[str, ...] = TARGETS,
    baselines: bool = True,
    windows: list[tuple[pd.Timestamp, pd.Timestamp]] | None = None,
    selection: Selection | None = None,
    sessions: pd.DataFrame | None = None,
    products: pd.DataFrame | None = None,
    copies: pd.DataFrame | None = None,
) -> BacktestResult:
    """Backtest on a training frame (``training.data.training_frame``).

    ``windows`` (from :func:`make_cuts`) overrides ``folds`` / ``horizon_days`` / ``cut``.
    Each target's settings are chosen once, on data before the first cut
    (:func:`training.selection.select_params`), and used in every fold; ``selection`` reuses
    an earlier choice instead.

    Every prediction carries ``lead_days`` (days from its fold's cut to its start). Given the
    contract tables the frame was built from (``sessions``, ``products``), the model also
    scores each test session from the history frozen at the cut (``<target>__frozen_p10`` ..
    ``_p90``, :func:`features.sessions.snapshot_session_features`): what the service delivers
    for a plan made at the cut, where the main columns give each session a history refreshed
    up to the session before it.

    ``copies`` (``training.data.origin_copies`` of the same sessions) lets the model choice try
    training on them too (``ahead``); a fold's model sees only the copies of its training
    sessions, each frozen at an origin before its session, so before the cut.
    """
    from features.sessions import history_columns

    params = params or ForecastParams()
    frame = frame.sort_values(["start_time", "session_id"]).reset_index(drop=True)
    if windows is None:
        windows = make_cuts(frame["start_time"], folds, horizon_days, cut)
    room_features = history_columns(frame.columns)
    if selection is None:
        span = (windows[0][1] - windows[0][0]).days if cut is None else horizon_days
        selection = select_params(
            frame,
            params,
            before=windows[0][0],
            horizon_days=max(span, 1),
            targets=targets,
            copies=copies,
            tables=(sessions, products) if sessions is not None and products is not None else None,
        )
    trailing = {t: trailing_mean(frame, t) for t in targets} if baselines else {}
    if truth is not None:
        truth = truth.set_index("session_id")
    parts = []
    for fold, (c, end) in enumerate(windows):
        train = frame[frame["start_time"] < c]
        test = frame[(frame["start_time"] >= c) & (frame["start_time"] < end)]
        if len(test) == 0:
            continue
        model = fit_forecaster(
            train, params, targets=targets, per_target=selection.params, copies=copies
        )
        pred = model.predict(test)
        keys = ["session_id", "room_id", "start_time", "hour_band", *targets]
        keys += [c for c in ("host_id", "planned_duration_min") if c in test.columns]
        part = test[keys].copy()
        part["fold"] = fold
        part["cut"] = c
        part["lead_days"] = ((test["start_time"] - c) / pd.Timedelta(days=1)).to_numpy()
        part["cold_start"] = pred["cold_start"].to_numpy()
        part["room__followers"] = test["room__followers"].to_numpy()
        for t in targets:
            for q in ("p10", "p50", "p90"):
                part[f"{t}__model_{q}"] = pred[f"{t}_{q}"].to_numpy()
        if sessions is not None and products is not None:
            frozen = model.predict(frozen_frame(sessions, products, test["session_id"], c))
            for t in targets:
                for q in ("p10", "p50", "p90"):
                    part[f"{t}__frozen_{q}"] = frozen[f"{t}_{q}"].to_numpy()
        if baselines:
            # the spreadsheet-level baseline: plain LightGBM on the room history, no base
            plain = params.model_copy(update={"base": False, "ahead": False})
            hist = fit_forecaster(train, plain, targets=targets, features=room_features)
            hist_pred = hist.predict(test)
            for t in targets:
                part[f"{t}__trailing_mean"] = with_fallback(trailing[t].loc[test.index], train, t)
                part[f"{t}__slot_mean"] = slot_mean(train, test, t).to_numpy()
                part[f"{t}__history_only"] = hist_pred[f"{t}_p50"].to_numpy()
        if truth is not None:
            for t in targets:
                col = TRUTH_COLUMNS[t]
                part[f"{t}__oracle"] = truth[col].reindex(test["session_id"]).to_numpy()
        parts.append(part)
    if not parts:
        raise ValueError("the backtest windows hold no sessions")
    preds = pd.concat(parts, ignore_index=True)
    return BacktestResult(
        compute_metrics(preds, targets), preds, [w[0] for w in windows], selection
    )


def compute_metrics(preds: pd.DataFrame, targets: tuple[str, ...] = TARGETS) -> dict:
    """``{target: {method: metrics}}`` from a predictions frame; absent methods are null."""
    out: dict[str, dict[str, Any]] = {}
    for t in targets:
        y = preds[t].to_numpy(dtype=float)
        methods: dict[str, Any] = {}
        methods["model"] = interval_metrics(
            y,
            preds[f"{t}__model_p10"].to_numpy(),
            preds[f"{t}__model_p50"].to_numpy(),
            preds[f"{t}__model_p90"].to_numpy(),
        )
        for m in METHODS[1:]:
            col = f"{t}__{m}"
            methods[m] = point_metrics(y, preds[col].to_numpy()) if col in preds else None
        out[t] = methods
    return out


def best_baseline(metrics: dict, target: str) -> tuple[str, float]:
    """The naive baseline with the lowest WAPE for ``target``."""
    cands = {
        m: metrics[target][m]["wape"]
        for m in ("trailing_mean", "slot_mean", "history_only")
        if metrics[target].get(m) and metrics[target][m]["wape"] is not None
    }
    name = min(cands, key=cands.__getitem__)
    return name, float(cands[name])


def bars(metrics: dict, *, oracle: bool) -> list[dict[str, Any]]:
    """The quality bars of the issue, each with its measured value and whether it holds."""
    rows = []
    for t in ("viewers", "gmv"):
        if t not in metrics:
            continue
        model = metrics[t]["model"]
        name, base = best_baseline(metrics, t)
        gain = 1 - model["wape"] / base
        rows.append(
            {
                "bar": f"{t}: WAPE >= 30% below best baseline ({name})",
                "value": round(gain, 4),
                "holds": bool(gain >= 0.30),
            }
        )
        if oracle and metrics[t].get("oracle"):
            ratio = model["wape"] / metrics[t]["oracle"]["wape"]
            rows.append(
                {
                    "bar": f"{t}: WAPE <= 1.15 x oracle",
                    "value": round(ratio, 4),
                    "holds": bool(ratio <= 1.15),
                }
            )
        cov = model["coverage_p10_p90"]
        rows.append(
            {
                "bar": f"{t}: P10-P90 coverage in [0.75, 0.85]",
                "value": cov,
                "holds": bool(cov is not None and 0.75 <= cov <= 0.85),
            }
        )
    return rows


def room_size_band(followers: pd.Series) -> pd.Series:
    """Room size bands by follower count (for the error-by-room-size view)."""
    edges = [0, 1e4, 1e5, 1e6, np.inf]
    labels = ["<10k", "10k-100k", "100k-1M", ">=1M"]
    return pd.cut(followers.fillna(0), edges, labels=labels, right=False)


SERVABLE_BASELINE = "history_only"
"""The baseline the bundle can carry and the service can score: the plain LightGBM on the
room family (the same feature matrix, its columns only)."""


def choose_source(metrics: dict, target: str) -> str:
    """``model``, or ``baseline:history_only`` when the model's backtest WAPE is above the
    best baseline's and the history-only model did better than the model.

    A spreadsheet rule (trailing or slot mean) that beats both is reported by :func:`served`
    (``loses_to_baseline``), and ``livecast promote`` refuses such a candidate."""
    model = metrics[target]["model"]["wape"]
    _, best = best_baseline(metrics, target)
    hist = (metrics[target].get(SERVABLE_BASELINE) or {}).get("wape")
    if model is None or model <= best or hist is None or hist >= model:
        return "model"
    return f"baseline:{SERVABLE_BASELINE}"


def served(metrics: dict) -> dict[str, dict[str, Any]]:
    """Per target: ``source`` (:func:`choose_source`), the served forecast's backtest WAPE,
    the best baseline and its WAPE, and whether the served forecast loses to it."""
    out = {}
    for t in metrics:
        source = choose_source(metrics, t)
        method = "model" if source == "model" else source.split(":", 1)[1]
        value = metrics[t][method]["wape"]
        name, best = best_baseline(metrics, t)
        out[t] = {
            "source": source,
            "wape": value,
            "best_baseline": name,
            "best_baseline_wape": best,
            "loses_to_baseline": bool(value is not None and value > best),
        }
    return out
