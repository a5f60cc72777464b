"""Drift of the main plan inputs: what planners plan now against what the model was trained on.

At training, :func:`drift_reference` summarises each input of :data:`DRIFT_INPUTS` (columns of
the session feature frame, so the same feature code defines them in training and in the
service) over the training sessions: a numeric input by its training deciles and the share of
training sessions in each of the ten bins (and missing), a categorical one by the share of each
category. The summary travels in ``bundle.json`` (``drift_reference``). In the service the same
columns of the plans it forecast are logged (:mod:`serving.monitor`), and :func:`input_drift`
compares the latest of them with the reference by the population stability index

    PSI = sum over bins of (recent share - training share) * ln(recent share / training share)

the usual score for a shift of a distribution over fixed bins: below 0.1 the inputs are stable,
0.1-0.25 they are moving, above 0.25 they have drifted (plans now sit where the model saw few
training sessions, so its forecasts lean on extrapolation). Shares are floored at
:data:`PSI_FLOOR` so an empty bin does not make the score infinite. Fewer than
:data:`MIN_RECENT` logged plans are not judged.

Plain numpy and pandas, not a drift library: a dozen columns, fixed bins stored in the bundle
and one formula; a report library (Evidently and the like) would add a large install and its
own HTML to the service for the same number.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd

DRIFT_INPUTS: tuple[str, ...] = (
    "slot__duration_min",
    "slot__hour",
    "topic__session_type",
    "mix__n_skus",
    "mix__mean_live_price",
    "mix__mean_discount",
    "promo__n_mechanics",
    "promo__coupon_value",
    "warmup__videos",
    "warmup__community_pushes",
    "warmup__paid_promo_budget",
)
"""The main plan inputs watched for drift (plan features only; room history is the room's)."""

PSI_MOVING = 0.1
PSI_DRIFTED = 0.25
PSI_FLOOR = 1e-4
MIN_RECENT = 30
"""Logged plans needed before an input is judged."""
MISSING = "(missing)"


def _bins(edges: list[float], values: np.ndarray) -> np.ndarray:
    """Bin index of each value: ``i`` for ``edges[i-1] < v <= edges[i]``, ``len(edges)`` above
    the last edge, and ``len(edges) + 1`` for missing."""
    out = np.searchsorted(np.asarray(edges, float), values, side="left")
    return np.where(np.isnan(values), len(edges) + 1, out)


def _numeric(series: pd.Series) -> np.ndarray:
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def drift_reference(frame: pd.DataFrame) -> dict[str, Any]:
    """The training distribution of each :data:`DRIFT_INPUTS` column present in ``frame``:
    ``{"kind": "numeric", "edges": [...], "shares": [...]}`` (deciles, then one share per bin
    and a last one for missing) or ``{"kind": "category", "shares": {value: share}}``, plus
    ``"n"`` and the training ``"median"`` of a numeric input."""
    out: dict[str, Any] = {}
    for col in DRIFT_INPUTS:
        if col not in frame.columns or len(frame) == 0:
            continue
        s = frame[col]
        if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            shares = s.astype(object).fillna(MISSING).astype(str).value_counts(normalize=True)
            out[col] = {
                "kind": "category",
                "n": len(s),
                "shares": {str(k): float(v) for k, v in shares.sort_index().items()},
            }
            continue
        values = _numeric(s)
        known = values[~np.isnan(values)]
        edges = (
            sorted({float(q) for q in np.quantile(known, np.linspace(0.1, 0.9, 9))})
            if len(known)
            else []
        )
        counts = np.bincount(_bins(edges, values), minlength=len(edges) + 2)
        out[col] = {
            "kind": "numeric",
            "n": len(values),
            "edges": edges,
            "shares": (counts / counts.sum()).tolist(),
            "median": float(np.median(known)) if len(known) else None,
        }
    return out


def psi(expected: np.ndarray, actual: np.ndarray, floor: float = PSI_FLOOR) -> float:
    """The population stability index of shares ``actual`` against ``expected`` (same bins)."""
    e = np.maximum(np.asarray(expected, float), floor)
    a = np.maximum(np.asarray(actual, float), floor)
    return float(np.sum((a - e) * np.log(a / e)))


def status(value: float) -> str:
    if not np.isfinite(value):
        return "too few plans"
    if value > PSI_DRIFTED:
        return "drifted"
    return "moving" if value > PSI_MOVING else "stable"


def input_drift(
    reference: Mapping[str, Any], recent: pd.DataFrame, *, min_recent: int = MIN_RECENT
) -> pd.DataFrame:
    """One row per referenced input: ``feature``, ``n`` (recent plans), ``psi``, ``status``
    (stable / moving / drifted / too few plans), the training and recent medians of a numeric
    input and ``top_shift``, the bin or category whose share moved most (``"(180, 210]"``,
    ``"festival_promo"``) with its training and recent shares."""
    rows = []
    for col, ref in reference.items():
        n = len(recent)
        row: dict[str, Any] = {"feature": col, "n": n}
        if col not in recent.columns or n < min_recent:
            rows.append({**row, "psi": float("nan"), "status": status(float("nan"))})
            continue
        if ref["kind"] == "category":
            labels = list(ref["shares"])
            values = recent[col].astype(object).where(recent[col].notna(), MISSING).astype(str)
            now = values.value_counts(normalize=True)
            labels += [v for v in now.index if v not in ref["shares"]]
            expected = np.array([ref["shares"].get(v, 0.0) for v in labels])
            actual = np.array([float(now.get(v, 0.0)) for v in labels])
        else:
            edges = ref["edges"]
            labels = _bin_labels(edges)
            values_num = _numeric(recent[col])
            counts = np.bincount(_bins(edges, values_num), minlength=len(edges) + 2)
            expected = np.asarray(ref["shares"], float)
            actual = counts / counts.sum()
            known = values_num[~np.isnan(values_num)]
            row["train_median"] = ref.get("median")
            row["recent_median"] = float(np.median(known)) if len(known) else None
        value = psi(expected, actual)
        j = int(np.argmax(np.abs(actual - expected)))
        rows.append(
            {
                **row,
                "psi": value,
                "status": status(value),
                "top_shift": labels[j],
                "train_share": float(expected[j]),
                "recent_share": float(actual[j]),
            }
        )
    cols = [
        "feature", "n", "psi", "status", "train_median", "recent_median",
        "top_shift", "train_share", "recent_share",
    ]  # fmt: skip
    return pd.DataFrame(rows).reindex(columns=cols)


def _bin_labels(edges: list[float]) -> list[str]:
    if not edges:
        return ["all", MISSING]
    labels = [f"<= {edges[0]:.4g}"]
    labels += [f"({lo:.4g}, {hi:.4g}]" for lo, hi in pairwise(edges)]
    return [*labels, f"> {edges[-1]:.4g}", MISSING]
