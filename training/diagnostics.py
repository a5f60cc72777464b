"""Diagnostics of a backtest and a trained forecaster, as tables a notebook plots.

* :func:`error_by`: WAPE and bias of the model and the baselines per group (room, time slot,
  fold, cold start...) of the backtest predictions;
* :func:`coverage_by`: P10-P90 interval coverage per group;
* :func:`importance_by_family`: LightGBM gain (:func:`training.train.importance_table`) summed
  per feature family.

All of them read the predictions frame of :func:`training.backtest.run_backtest` and the metric
definitions of :mod:`training.metrics`.
"""

from __future__ import annotations

import pandas as pd

from training.backtest import METHODS
from training.metrics import bias, coverage, wape
from training.models import FAMILIES, Forecaster
from training.train import importance_table


def _targets(preds: pd.DataFrame, targets: list[str] | tuple[str, ...] | None) -> list[str]:
    found = [t for t in ("viewers", "orders", "gmv") if f"{t}__model_p50" in preds]
    if targets is None:
        return found
    unknown = [t for t in targets if t not in found]
    if unknown:
        raise ValueError(f"no model predictions for {', '.join(unknown)}; have {found}")
    return list(targets)


def _keyed(rows: list[dict], preds: pd.DataFrame, by: str) -> pd.DataFrame:
    """The rows as a frame whose ``by`` column keeps the dtype of ``preds[by]`` (an ordered
    category such as the hour band stays in its order in pivots and plots)."""
    out = pd.DataFrame(rows)
    if len(out) and isinstance(preds[by].dtype, pd.CategoricalDtype):
        out[by] = out[by].astype(preds[by].dtype)
    return out


def _method_column(target: str, method: str) -> str:
    return f"{target}__model_p50" if method == "model" else f"{target}__{method}"


def error_by(
    preds: pd.DataFrame, by: str, targets: list[str] | tuple[str, ...] | None = None
) -> pd.DataFrame:
    """Per group of ``by`` (a column of ``preds``, e.g. ``room_id`` or ``hour_band``) and target:
    ``n`` sessions with an outcome, then ``wape_<method>`` and ``bias_<method>`` for the model
    (its P50) and every baseline present in ``preds``."""
    if by not in preds.columns:
        raise ValueError(f"predictions have no column {by!r}")
    rows = []
    for t in _targets(preds, targets):
        methods = [m for m in METHODS if _method_column(t, m) in preds]
        for key, g in preds.groupby(by, observed=True, sort=True):
            row = {by: key, "target": t, "n": int(g[t].notna().sum())}
            for m in methods:
                y, p = g[t].to_numpy(float), g[_method_column(t, m)].to_numpy(float)
                row[f"wape_{m}"] = wape(y, p)
                row[f"bias_{m}"] = bias(y, p)
            rows.append(row)
    return _keyed(rows, preds, by)


def coverage_by(
    preds: pd.DataFrame, by: str, targets: list[str] | tuple[str, ...] | None = None
) -> pd.DataFrame:
    """Per group of ``by`` and target: ``n`` and the share of outcomes inside [P10, P90]
    (``coverage``; 0.80 is the nominal value)."""
    if by not in preds.columns:
        raise ValueError(f"predictions have no column {by!r}")
    rows = []
    for t in _targets(preds, targets):
        for key, g in preds.groupby(by, observed=True, sort=True):
            rows.append(
                {
                    by: key,
                    "target": t,
                    "n": int(g[t].notna().sum()),
                    "coverage": coverage(
                        g[t].to_numpy(float),
                        g[f"{t}__model_p10"].to_numpy(float),
                        g[f"{t}__model_p90"].to_numpy(float),
                    ),
                }
            )
    return _keyed(rows, preds, by)


def importance_by_family(forecaster: Forecaster) -> pd.DataFrame:
    """Per target and feature family: total LightGBM ``gain`` and its ``share`` of the target's
    total gain (shares of a target sum to 1). Every family appears, with zero when unused."""
    rows = []
    for target in forecaster.models:
        table = importance_table(forecaster, target)
        fam = table.groupby("family")["gain"].sum().reindex(list(FAMILIES), fill_value=0.0)
        total = float(fam.sum())
        for family, g in fam.items():
            rows.append(
                {
                    "target": target,
                    "family": family,
                    "gain": float(g),
                    "share": float(g) / total if total > 0 else 0.0,
                }
            )
    return pd.DataFrame(rows)
