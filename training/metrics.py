"""Forecast metrics. Pure numpy; every function ignores rows whose actual value is missing."""

from __future__ import annotations

import math

import numpy as np

METRIC_NAMES = ("wape", "mape_median", "rmsle", "bias", "coverage_p10_p90", "pinball", "n")


def _clean(y: np.ndarray, *preds: np.ndarray) -> tuple[np.ndarray, ...]:
    y = np.asarray(y, dtype=float)
    arrays = [np.asarray(p, dtype=float) for p in preds]
    ok = np.isfinite(y)
    for p in arrays:
        ok &= np.isfinite(p)
    return (y[ok], *(p[ok] for p in arrays))


def wape(y: np.ndarray, pred: np.ndarray) -> float:
    """Weighted absolute percentage error: sum |y - pred| / sum y."""
    y, pred = _clean(y, pred)
    total = y.sum()
    return float(np.abs(y - pred).sum() / total) if total > 0 else math.nan


def mape_median(y: np.ndarray, pred: np.ndarray) -> float:
    """Median absolute percentage error over rows with a positive actual."""
    y, pred = _clean(y, pred)
    pos = y > 0
    return float(np.median(np.abs(y[pos] - pred[pos]) / y[pos])) if pos.any() else math.nan


def rmsle(y: np.ndarray, pred: np.ndarray) -> float:
    """Root mean squared error of log1p values (negative predictions clipped to 0)."""
    y, pred = _clean(y, pred)
    if len(y) == 0:
        return math.nan
    return float(np.sqrt(np.mean((np.log1p(np.clip(pred, 0, None)) - np.log1p(y)) ** 2)))


def bias(y: np.ndarray, pred: np.ndarray) -> float:
    """Signed total error relative to the total actual: sum(pred - y) / sum y."""
    y, pred = _clean(y, pred)
    total = y.sum()
    return float((pred - y).sum() / total) if total > 0 else math.nan


def coverage(y: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    """Share of actuals inside [low, high]."""
    y, low, high = _clean(y, low, high)
    return float(np.mean((y >= low) & (y <= high))) if len(y) else math.nan


def pinball(y: np.ndarray, quantiles: dict[float, np.ndarray]) -> float:
    """Mean pinball loss over the given quantiles, divided by the mean actual (scale-free)."""
    if len(_clean(y)[0]) == 0:
        return math.nan
    losses = []
    for q, pred in quantiles.items():
        yy, pp = _clean(y, pred)
        diff = yy - pp
        if len(diff) == 0:
            return math.nan
        losses.append(np.mean(np.maximum(q * diff, (q - 1) * diff)))
    yy = _clean(y)[0]
    scale = yy.mean() if len(yy) else math.nan
    return float(np.mean(losses) / scale) if scale and scale > 0 else math.nan


def point_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float | int | None]:
    """Metrics of a point forecast; interval metrics are null."""
    yy, _pp = _clean(y, pred)
    return {
        "wape": _none(wape(y, pred)),
        "mape_median": _none(mape_median(y, pred)),
        "rmsle": _none(rmsle(y, pred)),
        "bias": _none(bias(y, pred)),
        "coverage_p10_p90": None,
        "pinball": None,
        "n": len(yy),
    }


def interval_metrics(
    y: np.ndarray, p10: np.ndarray, p50: np.ndarray, p90: np.ndarray
) -> dict[str, float | int | None]:
    """Metrics of a P10 / P50 / P90 forecast (point metrics use P50)."""
    out = point_metrics(y, p50)
    out["coverage_p10_p90"] = _none(coverage(y, p10, p90))
    out["pinball"] = _none(pinball(y, {0.1: p10, 0.5: p50, 0.9: p90}))
    return out


def _none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)
