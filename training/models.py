"""The session forecaster: LightGBM models for viewers, orders and GMV with intervals and drivers.

Objective. Viewers, orders and GMV are heavy-tailed, multiplicative quantities (a big room sells
100x a small one; a festival doubles traffic). Each model therefore fits ``log1p(target)`` with
squared error: that is the median of a lognormal-like outcome, which is what WAPE and the
median APE reward, and it keeps big rooms from dominating the loss. Tweedie / poisson fit the
mean instead; on these targets they gave the same ranking but worse WAPE.

Intervals. Split-conformal on a time-ordered calibration window: a model fitted on the rows
before the window predicts it, and the empirical 10 % / 50 % / 90 % quantiles of the log
residuals become offsets added to the final model's log prediction. Offsets are sorted, so
P10 <= P50 <= P90 always holds. Cold-start rows (a room with no history) get their own offsets,
calibrated on the same window with the room's history masked, and never narrower than the warm
ones.

Base and trees. Each target model is a log-linear ridge regression (the *base*) plus LightGBM
trees boosted from it (the base is the trees' ``init_score``). Trees alone cannot forecast
beyond the largest outcome they were trained on, and the leaves near the top of the scale
average smaller sessions: a big room's biggest festival sessions come out far below their
expected GMV. The base is additive in logs, as the outcomes are multiplicative (room size x
slot x festival x promo), so a bigger room and a stronger festival push the forecast towards
and past the edge of the training range; the trees then learn what is not log-linear
(saturation, thresholds, interactions). The base reads every feature: numeric ones as they
are, or as ``log1p`` when non-negative and heavy-tailed; plan inputs clipped to their 1st-99th
training percentiles (a room's scale in its history is not clipped: it is what must
extrapolate; its rates, gaps and shares are held to their training range);
missing values imputed with the median plus a missing flag; categoricals one-hot. Its
contributions are exact and additive, so the drivers add them to the trees' ``pred_contrib``.

Cold start. Training adds a masked copy of a share of the rows (room history removed, as for a
room never seen) so the model learns to forecast from the plan, the platform, the category and
the follower count alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

# Waiting OpenMP threads sleep instead of spinning: spinning threads stall LightGBM ~10x on busy
# cores (README, "Threads"). Read once, when LightGBM loads libgomp: set before that import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import lightgbm as lgb
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from features.sessions import IDENTITY_COLUMN, apply_vocab, feature_columns, feature_families
from livecast.config import available_cores

TARGETS: tuple[str, ...] = ("viewers", "orders", "gmv")
QUANTILES: tuple[float, ...] = (0.1, 0.5, 0.9)
FAMILIES: tuple[str, ...] = ("topic", "slot", "mix", "promo", "warmup", "room")

# Room features a planner states for a new room: kept when history is masked for cold start.
COLD_START_KEEP: tuple[str, ...] = ("room__platform", "room__main_category", "room__followers")
SKU_NO_RECORD: tuple[str, ...] = ("room__sku_hist_units", "room__sku_hist_share")
IDENTITY_MIN_SESSIONS = 5
"""A room enters the identity vocabulary with at least this many training sessions with
outcomes; a rarer room reads as missing identity, like a new one."""


Objective = Literal["log_l2", "tweedie", "poisson"]
OBJECTIVES: tuple[str, ...] = ("log_l2", "tweedie", "poisson")
_LGB_OBJECTIVE = {"log_l2": "regression", "tweedie": "tweedie", "poisson": "poisson"}


EXECUTION_SETTINGS: frozenset[str] = frozenset({"num_threads"})
"""ForecastParams fields that change how a model is fitted, not which model: left out of the
train id and of tuned parameter files (1, 2 or 16 threads fit the same trees)."""


class ForecastParams(BaseModel):
    """LightGBM settings of one target model (the Optuna search space tunes these)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    objective: Objective = Field(
        "log_l2",
        description="log_l2: squared error on log1p(target) (the median of a lognormal-like "
        "outcome); tweedie / poisson: the raw target with a log link (the mean; zero outcomes "
        "are ordinary values, not log1p(0) outliers).",
    )
    identity: bool = Field(
        False,
        description="Also read the room id as a category (features.sessions.IDENTITY_COLUMN): "
        "a room's own level where few rooms have many sessions each.",
    )
    select: bool = Field(
        True,
        description="Choose objective, base and capacity per target by a time-ordered "
        "validation inside the training period (training.selection).",
    )
    ahead: bool = Field(
        False,
        description="Also train on each session's origin copy: its features from the room "
        "history frozen at a forecast origin 1-60 days before it (training.data.origin_copies), "
        "as a plan scored ahead sees it. A candidate of the model choice.",
    )

    learning_rate: float = Field(0.08, gt=0, le=0.5)
    num_leaves: int = Field(31, ge=4, le=512)
    min_data_in_leaf: int = Field(30, ge=1, le=2000)
    feature_fraction: float = Field(0.8, gt=0, le=1)
    bagging_fraction: float = Field(0.8, gt=0, le=1)
    lambda_l2: float = Field(1.0, ge=0, le=100)
    max_rounds: int = Field(1500, ge=10, le=20000)
    early_stopping_rounds: int = Field(50, ge=5, le=1000)
    cold_start_share: float = Field(0.25, ge=0, le=1, description="Masked copies added.")
    base: bool = Field(True, description="Boost from a log-linear base (else from the mean).")
    base_alpha: float = Field(
        300.0, ge=0, le=1e6, description="Ridge penalty of the log-linear base."
    )
    base_clip: float = Field(
        0.01, ge=0, lt=0.5, description="Plan inputs clipped to these quantiles in the base."
    )
    calibration_days: int = Field(60, ge=7, le=365)
    seed: int = 0
    num_threads: int = Field(
        0,
        ge=0,
        le=64,
        description="Training threads; 0: the cores this process may use (resolved at fit time "
        "by livecast.config.available_cores; LIVECAST_THREADS overrides). An execution setting: "
        "not part of the train id, and the trees do not depend on it.",
    )

    def threads(self) -> int:
        """The training threads: ``num_threads``, or the available cores when it is 0."""
        return self.num_threads or available_cores()

    def lgb_params(self) -> dict[str, Any]:
        return {
            "objective": _LGB_OBJECTIVE[self.objective],
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": 1 if self.bagging_fraction < 1 else 0,
            "lambda_l2": self.lambda_l2,
            "seed": self.seed,
            "deterministic": True,
            "force_col_wise": True,
            "num_threads": self.threads(),
            "verbose": -1,
        }


SCALE_ROWS = 100_000
"""Rows with a known target up to which a fit uses its LightGBM settings as they are (the
default data, 22.5 k sessions, and 86 k sessions are below: their models are unchanged).

Early stopping runs more rounds the more rows there are (viewers: 234 trees at 22.5 k sessions,
580 at 86 k), and every round reads every row: a fit grew as about rows^1.5. Above
``SCALE_ROWS`` (:func:`fit_lgb_params`) the learning rate grows as ``sqrt(rows / SCALE_ROWS)``
(at most :data:`MAX_SCALED_RATE`), which keeps the number of rounds from growing, and each tree
reads a bag of at most :data:`BAG_ROWS` rows, so a round costs about the same at any size
(plus LightGBM's linear score update). The price is a coarser fit of big data: on a held-out
month at 86 k sessions this rule (as if applied there) cost about 1 % WAPE."""
BAG_ROWS = 200_000
"""Most rows a tree reads above :data:`SCALE_ROWS` (bagging; LightGBM's own row sampling)."""
MAX_SCALED_RATE = 0.3
"""Highest learning rate the size rule sets (a larger stated rate is kept as it is)."""


def fit_lgb_params(params: ForecastParams, rows: int) -> dict[str, Any]:
    """LightGBM parameters for a fit on ``rows`` rows with a known target (before the
    cold-start copies): ``params.lgb_params()``, with the size rule of :data:`SCALE_ROWS`
    above it. The early-stopped fit and the final refit of a target use the same ``rows`` so
    that the number of trees found carries over."""
    out = params.lgb_params()
    if rows <= SCALE_ROWS:
        return out
    rate = min(params.learning_rate * math.sqrt(rows / SCALE_ROWS), MAX_SCALED_RATE)
    out["learning_rate"] = max(params.learning_rate, rate)
    fit_rows = rows * (1.0 + params.cold_start_share)
    if fit_rows * params.bagging_fraction > BAG_ROWS:
        out["bagging_fraction"] = BAG_ROWS / fit_rows
        out["bagging_freq"] = 1
    return out


def mask_room_history(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as it would look for rooms never seen before (cold start)."""
    out = frame.copy()
    for col in feature_families(frame.columns).get("room", []):
        if col in COLD_START_KEEP:
            continue
        if col == "room__n_prior":
            out[col] = 0.0
        elif col in SKU_NO_RECORD:
            # a new room's SKUs have no track record: zero where the session lists SKUs
            out[col] = out[col].where(out[col].isna(), 0.0)
        elif isinstance(out[col].dtype, pd.CategoricalDtype):
            out[col] = pd.Categorical([None] * len(out), dtype=out[col].dtype)
        else:
            out[col] = np.nan
    return out


def is_cold(frame: pd.DataFrame) -> np.ndarray:
    """True for rows whose room has no prior session with outcomes."""
    return frame["room__n_prior"].fillna(0).to_numpy() == 0


LEVEL_FACTOR = 10.0
"""A forecast's P50 is held within this factor of the room's recent level (the median of its
last 20 sessions): at most ``LEVEL_FACTOR`` times it, and at least ``1 / LEVEL_FACTOR`` times
it scaled down by a shorter planned duration than the room's usual."""


def levels_of(columns: Any) -> dict[str, np.ndarray]:
    """The inputs of :func:`hold_to_level` from a feature frame or a feature-column dict: per
    target the room's recent level (``log1p`` of its median), and ``duration_ratio``, the
    planned duration over the room's usual. Empty when the columns are not there (a frame
    built before the level columns existed)."""
    from features.sessions import LEVEL_COLUMNS

    out = {t: np.asarray(columns[c], dtype=float) for t, c in LEVEL_COLUMNS.items() if c in columns}
    if out and "room__duration_ratio" in columns:
        out["duration_ratio"] = np.asarray(columns["room__duration_ratio"], dtype=float)
    return out


def hold_to_level(
    out: dict[str, np.ndarray],
    levels: dict[str, np.ndarray],
    target_max: dict[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """Hold each target's P10 / P50 / P90 (``out``, in place, returned) within what the data
    supports; ``<target>_held`` marks the rows whose P50 was moved. For a room with
    history, P50 lies in ``[level / F * min(1, duration_ratio), level * F]``, with ``level``
    the median of the room's last 20 sessions and ``F`` = :data:`LEVEL_FACTOR`; a P50 outside
    is moved to the bound, and its P10 and P90 move by the same factor, so the interval keeps
    its shape. For a room without history (no level), P50 is at most the largest value of the
    target in the training data (``target_max``).

    Trees cannot leave the range of their training targets, but the forecast can: the log-linear
    base and the room's scale combine plan inputs a room never had (a budget 100 times its
    usual, a small room's first festival) into numbers no session of the room came near. On the
    backtests few test forecasts reach a bound (Douyin: 4 of 162 orders forecasts; NS Home
    Shopping: 35 of 1,633 viewers forecasts; the simulator: 2 / 48 / 26 of 3,093) and no
    headline WAPE moves by more than 0.001."""
    ratio = levels.get("duration_ratio")
    for target, lv in levels.items():
        if target == "duration_ratio" or f"{target}_p50" not in out:
            continue
        p50 = out[f"{target}_p50"]
        known = ~np.isnan(lv)
        median = np.expm1(np.where(known, lv, 0.0))
        upper = np.where(known, np.maximum(median, 1.0) * LEVEL_FACTOR, np.inf)
        shorter = np.ones_like(p50) if ratio is None else np.nan_to_num(ratio, nan=1.0)
        lower = np.where(known, median / LEVEL_FACTOR * np.clip(shorter, 0.0, 1.0), 0.0)
        if target_max and target in target_max:
            upper = np.where(known, upper, float(target_max[target]))
        held = np.clip(p50, lower, upper)
        moved = held != p50
        out[f"{target}_held"] = moved
        if not moved.any():
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            factor = np.where(p50 > 0, held / p50, 1.0)
        for q in ("p10", "p90"):
            col = out[f"{target}_{q}"]
            out[f"{target}_{q}"] = np.where(moved, col * factor, col)
        out[f"{target}_p10"] = np.minimum(out[f"{target}_p10"], held)
        out[f"{target}_p90"] = np.maximum(out[f"{target}_p90"], held)
        out[f"{target}_p50"] = held
    return out


def float_matrix(X: pd.DataFrame | np.ndarray) -> np.ndarray:
    """A model input as float64 numpy: categoricals as their codes, missing as NaN (the layout
    of :func:`features.sessions.model_matrix`)."""
    if isinstance(X, np.ndarray):
        return np.asarray(X, dtype=float)
    # column-major: each column is written (and read by the base's statistics) in one run
    out = np.empty((len(X), X.shape[1]), order="F")
    for j, col in enumerate(X.columns):
        values = X[col]
        if isinstance(values.dtype, pd.CategoricalDtype):
            codes = values.cat.codes.to_numpy().astype(float)
            out[:, j] = np.where(codes < 0, np.nan, codes)
        else:
            out[:, j] = values.to_numpy(dtype=float)
    return out


def _inf_to_none(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else float(v) for v in values]


def _none_to_inf(values: list[float | None], sign: float) -> np.ndarray:
    return np.array([sign * np.inf if v is None else v for v in values], dtype=float)


_BLOCK_ROWS = 65_536
"""Rows per block where the base builds its design matrix (see :meth:`LogLinear.design`)."""


@dataclass(frozen=True)
class LogLinear:
    """The log-linear base of a target model: a ridge regression on a fixed design of the
    features, that the trees are boosted from (see the module docstring).

    Per feature: ``levels`` (number of categories; 0 for a numeric feature), ``log`` (log1p
    applied), clip bounds ``lower`` / ``upper`` (after the transform), the imputed value
    ``fill`` and ``flag`` (a missing-value column). Per design column: its feature ``owner``,
    its coefficient ``coef`` and its training mean ``center``. A prediction is ``intercept``
    (the training mean) plus one contribution per feature.
    """

    levels: np.ndarray
    log: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    fill: np.ndarray
    flag: np.ndarray
    owner: np.ndarray
    coef: np.ndarray
    center: np.ndarray
    intercept: float

    @classmethod
    def fit(
        cls,
        X: pd.DataFrame | np.ndarray,
        y: np.ndarray,
        levels: np.ndarray,
        clip_mask: np.ndarray,
        alpha: float,
        clip: float,
    ) -> LogLinear:
        """Fit on model input ``X``; ``levels`` as above, ``clip_mask`` the features clipped to
        their ``clip`` .. ``1 - clip`` quantiles. The other numeric features extrapolate only when
        they are scales (non-negative and heavy-tailed, read as ``log1p``: a room bigger than any
        seen is forecast bigger); rates, gaps and shares are held to their training range (a room
        back after months away gets the longest gap's effect, not a line extended without
        bound)."""
        from sklearn.linear_model import Ridge

        A = float_matrix(X)
        levels = np.asarray(levels, dtype=int)
        numeric = levels == 0
        # column statistics column by column (numpy's axis=0 reductions compute these one
        # column at a time too, after copying the whole matrix): memory for big fits
        every = np.ones(A.shape[1], dtype=bool)
        with _quiet_nan_warnings():
            low = np.fmin.reduce(A, axis=0, initial=np.inf)  # the minimum, NaN skipped
            q99 = _by_column(np.nanquantile, A, every, 0.99)
        log = numeric & (low >= 0) & (q99 > 20)  # NaN q99 (all missing) compares False
        T = _log1p_where(A, log)
        lower = np.full(A.shape[1], -np.inf)
        upper = np.full(A.shape[1], np.inf)
        clipped = numeric & np.asarray(clip_mask, dtype=bool)
        if clip > 0 and clipped.any():
            with _quiet_nan_warnings():
                lower[clipped] = _by_column(np.nanquantile, T, clipped, clip)
                upper[clipped] = _by_column(np.nanquantile, T, clipped, 1 - clip)
        ranged = numeric & ~clipped & ~log
        if ranged.any():  # rates, gaps and shares: never past what training saw
            with _quiet_nan_warnings():
                lower[ranged] = _by_column(np.nanmin, T, ranged)
                upper[ranged] = _by_column(np.nanmax, T, ranged)
        lower, upper = np.nan_to_num(lower, nan=-np.inf), np.nan_to_num(upper, nan=np.inf)
        with _quiet_nan_warnings():
            if len(T) < 600:  # numpy's small-median path reads the whole (small) matrix
                median = np.nanmedian(np.clip(T, lower, upper), axis=0)
            else:
                median = np.array(
                    [np.nanmedian(np.clip(T[:, j], lower[j], upper[j])) for j in range(T.shape[1])]
                )
            fill = np.nan_to_num(median, nan=0.0)
        flag = numeric & np.isnan(A).any(axis=0)
        owner = np.concatenate(
            [
                np.flatnonzero(numeric),
                np.flatnonzero(flag),
                *[np.full(levels[j] + 1, j) for j in np.flatnonzero(~numeric)],
            ]
        ).astype(int)
        shell = cls(levels, log, lower, upper, fill, flag, owner, np.zeros(len(owner)),
                    np.zeros(len(owner)), 0.0)  # fmt: skip
        del T
        D = shell.design(A)
        del A
        center = D.mean(axis=0)
        scale = _column_std(D)
        scale[scale == 0] = 1.0
        # standardised in place (the same arithmetic as (D - center) / scale, without two more
        # copies of the design), and the ridge centres it in place: memory for big fits
        D -= center
        D /= scale
        ridge = Ridge(alpha=alpha, copy_X=False).fit(D, y)
        del D
        return cls(levels, log, lower, upper, fill, flag, owner, ridge.coef_ / scale, center,
                   float(ridge.intercept_))  # fmt: skip

    def design(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """The design matrix: transformed numeric features, missing flags, one-hot categories
        (last column of each: missing). Built in blocks of rows (each row's values are its
        own), so its temporaries stay small for millions of rows."""
        A = float_matrix(X)
        D = np.empty((len(A), len(self.owner)))
        for start in range(0, len(A), _BLOCK_ROWS):
            rows = slice(start, start + _BLOCK_ROWS)
            D[rows] = self._design_rows(A[rows])
        return D

    def _design_rows(self, A: np.ndarray) -> np.ndarray:
        """:meth:`design` of a float model input ``A``."""
        numeric = self.levels == 0
        N = _log1p_where(A, self.log)
        missing = np.isnan(N)
        N = np.where(missing, self.fill, np.clip(N, self.lower, self.upper))
        parts = [N[:, numeric], missing[:, self.flag].astype(float)]
        for j in np.flatnonzero(~numeric):
            k = int(self.levels[j])
            codes = np.where(np.isnan(A[:, j]), k, A[:, j]).astype(int)
            onehot = np.zeros((len(A), k + 1))
            onehot[np.arange(len(A)), codes] = 1.0
            parts.append(onehot)
        return np.hstack(parts)

    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """The base's log forecast. Row by row (no matrix product, whose BLAS kernels round a
        row differently by its position in the batch): a plan scores the same in any batch."""
        A = float_matrix(X)
        out = np.empty(len(A))
        for start in range(0, len(A), _BLOCK_ROWS):  # blocks of rows: small temporaries
            rows = slice(start, start + _BLOCK_ROWS)
            terms = (self._design_rows(A[rows]) - self.center) * self.coef
            out[rows] = self.intercept + terms.sum(axis=1)
        return out

    def contributions(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Per row and feature, the base's contribution (rows sum to ``predict - intercept``)."""
        A = float_matrix(X)
        out = np.zeros((len(A), len(self.levels)))
        for start in range(0, len(A), _BLOCK_ROWS):
            rows = slice(start, start + _BLOCK_ROWS)
            terms = (self._design_rows(A[rows]) - self.center) * self.coef
            np.add.at(out[rows].T, self.owner, terms.T)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "levels": self.levels.tolist(),
            "log": self.log.tolist(),
            "lower": _inf_to_none(self.lower),
            "upper": _inf_to_none(self.upper),
            "fill": self.fill.tolist(),
            "flag": self.flag.tolist(),
            "owner": self.owner.tolist(),
            "coef": self.coef.tolist(),
            "center": self.center.tolist(),
            "intercept": self.intercept,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LogLinear:
        return cls(
            np.asarray(d["levels"], dtype=int),
            np.asarray(d["log"], dtype=bool),
            _none_to_inf(d["lower"], -1.0),
            _none_to_inf(d["upper"], 1.0),
            np.asarray(d["fill"], dtype=float),
            np.asarray(d["flag"], dtype=bool),
            np.asarray(d["owner"], dtype=int),
            np.asarray(d["coef"], dtype=float),
            np.asarray(d["center"], dtype=float),
            float(d["intercept"]),
        )


def _by_column(
    fn: Callable[..., Any], M: np.ndarray, columns: np.ndarray, *args: Any
) -> np.ndarray:
    """``fn(M[:, j], *args)`` for the ``columns`` (a mask) of ``M``: the values of
    ``fn(M[:, columns], *args, axis=0)`` without copying those columns at once."""
    return np.array([fn(M[:, j], *args) for j in np.flatnonzero(columns)], dtype=float)


def _column_std(D: np.ndarray) -> np.ndarray:
    """``D.std(axis=0)``, bit for bit, without a temporary the size of ``D``.

    numpy reduces a C-ordered matrix along axis 0 row after row (a running sum per column), so
    the squared deviations of each block of rows, summed onto the running total carried as the
    block's first row, give the same sums. A single column (reduced pairwise) or a small matrix
    goes to numpy."""
    n, width = D.shape
    if n <= _BLOCK_ROWS or width < 2 or not D.flags.c_contiguous:
        return D.std(axis=0)
    mean = np.add.reduce(D, axis=0, keepdims=True)
    mean = np.true_divide(mean, n, out=mean)
    total: np.ndarray | None = None
    for start in range(0, n, _BLOCK_ROWS):
        x = D[start : start + _BLOCK_ROWS] - mean
        np.multiply(x, x, out=x)
        if total is not None:
            x = np.concatenate([total, x])
        total = np.add.reduce(x, axis=0, keepdims=True)
    assert total is not None
    return np.sqrt(np.true_divide(total[0], n))


def _log1p_exp(raw: np.ndarray) -> np.ndarray:
    """log1p(exp(raw)) without overflow: a log-link score as a log1p forecast."""
    return np.logaddexp(0.0, raw)


def _log1p_where(A: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = A.copy(order="K")
    out[:, mask] = np.log1p(np.clip(A[:, mask], 0, None))
    return out


@contextlib.contextmanager
def _quiet_nan_warnings() -> Iterator[None]:
    """All-missing columns (e.g. room history in a cold-start-only frame) are expected."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


@dataclass
class TargetModel:
    """One target's booster and its conformal offsets (log space), warm and cold."""

    target: str
    booster: lgb.Booster
    offsets_warm: tuple[float, float, float]
    offsets_cold: tuple[float, float, float]
    best_iteration: int
    base: LogLinear | None = None
    objective: str = "log_l2"
    columns: tuple[int, ...] | None = None
    """Positions (in the forecaster's feature list) this model reads; None: all of them. A
    baseline that stands in for the model (``source``) reads the room family only."""
    source: str = "model"
    """``model``, or ``baseline:<name>`` when the backtest found the model losing to that
    baseline and the baseline serves this target instead."""

    def _input(self, X: pd.DataFrame | np.ndarray) -> pd.DataFrame | np.ndarray:
        if self.columns is None:
            return X
        idx = list(self.columns)
        return X.iloc[:, idx] if isinstance(X, pd.DataFrame) else np.asarray(X)[:, idx]

    def meta(self) -> dict[str, Any]:
        """Everything but the booster, as JSON-ready values (see :meth:`from_meta`)."""
        return {
            "offsets_warm": list(self.offsets_warm),
            "offsets_cold": list(self.offsets_cold),
            "best_iteration": self.best_iteration,
            "base": None if self.base is None else self.base.to_dict(),
            "objective": self.objective,
            "columns": None if self.columns is None else list(self.columns),
            "source": self.source,
        }

    @classmethod
    def from_meta(cls, target: str, booster: lgb.Booster, meta: dict[str, Any]) -> TargetModel:
        """The model saved as ``booster`` plus :meth:`meta` (a missing base: trees only)."""
        base = meta.get("base")
        return cls(
            target,
            booster,
            tuple(meta["offsets_warm"]),  # type: ignore[arg-type]
            tuple(meta["offsets_cold"]),  # type: ignore[arg-type]
            int(meta["best_iteration"]),
            None if base is None else LogLinear.from_dict(base),
            str(meta.get("objective", "log_l2")),
            None if meta.get("columns") is None else tuple(int(c) for c in meta["columns"]),
            str(meta.get("source", "model")),
        )

    def predict_log(
        self, X: pd.DataFrame | np.ndarray, num_threads: int = 0, num_iteration: int | None = None
    ) -> np.ndarray:
        """The log1p forecast: the base plus the trees (the first ``num_iteration`` of them).

        A tweedie / poisson model's raw score is log(mean); it is returned as log1p(mean)."""
        kwargs: dict[str, Any] = {"num_threads": num_threads} if num_threads else {}
        if num_iteration is not None:
            kwargs["num_iteration"] = num_iteration
        X = self._input(X)
        trees = np.asarray(self.booster.predict(X, raw_score=True, **kwargs), dtype=float)
        raw = trees if self.base is None else trees + self.base.predict(X)
        return raw if self.objective == "log_l2" else _log1p_exp(raw)

    def contributions(self, X: pd.DataFrame | np.ndarray, num_threads: int = 0) -> np.ndarray:
        """Per row: each feature's log contribution (trees plus base), then the baseline (the
        average log forecast before any feature is known); a row sums to :meth:`predict_log`."""
        kwargs = {"num_threads": num_threads} if num_threads else {}
        width = X.shape[1]
        X = self._input(X)
        contrib = np.asarray(self.booster.predict(X, pred_contrib=True, **kwargs), dtype=float)
        if self.base is not None:
            contrib[:, :-1] += self.base.contributions(X)
            contrib[:, -1] += self.base.intercept
        if self.objective != "log_l2":
            # log link: the row sums to log(mean); the baseline takes log1p(mean) - log(mean)
            raw = contrib.sum(axis=1)
            contrib[:, -1] += _log1p_exp(raw) - raw
        if self.columns is not None:  # back onto the forecaster's feature positions
            full = np.zeros((contrib.shape[0], width + 1))
            full[:, list(self.columns)] = contrib[:, :-1]
            full[:, -1] = contrib[:, -1]
            contrib = full
        return contrib

    def quantiles(self, log_pred: np.ndarray, cold: np.ndarray) -> np.ndarray:
        """P10 / P50 / P90 (n x 3) on the original scale, never crossing, never negative."""
        warm = np.asarray(self.offsets_warm)
        coldo = np.asarray(self.offsets_cold)
        offs = np.where(cold[:, None], coldo[None, :], warm[None, :])
        q = np.expm1(log_pred[:, None] + offs)
        q = np.maximum.accumulate(np.clip(q, 0, None), axis=1)
        return q


@dataclass
class Forecaster:
    """Viewers, orders and GMV models sharing one feature list and vocabulary."""

    models: dict[str, TargetModel]
    features: list[str]
    vocab: dict[str, tuple[str, ...]]
    params: ForecastParams
    metadata: dict[str, Any] = field(default_factory=dict)

    @functools.cached_property
    def _family_index(self) -> dict[str, list[int]]:
        """Family -> positions of its features in :attr:`features` (computed once)."""
        position = {c: i for i, c in enumerate(self.features)}
        fams = feature_families(self.features)
        return {fam: [position[c] for c in fams.get(fam, [])] for fam in FAMILIES}

    def matrix(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model input: feature columns in training order, categories in the saved vocab."""
        X = apply_vocab(frame[self.features], self.vocab)
        return X

    def predict_columns(
        self,
        X: pd.DataFrame | np.ndarray,
        cold: np.ndarray,
        num_threads: int = 0,
        levels: dict[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Per row of the model input ``X``: ``<target>_p10/_p50/_p90``, derived
        ``conversion_p50`` and ``aov_p50``, and ``cold_start`` (``cold``) as named arrays.
        ``levels`` (:func:`levels_of` the rows' feature columns) holds the quantiles to the
        room's recent level (:func:`hold_to_level`)."""
        out: dict[str, np.ndarray] = {}
        for target, model in self.models.items():
            q = model.quantiles(model.predict_log(X, num_threads), cold)
            for j, name in enumerate(("p10", "p50", "p90")):
                out[f"{target}_{name}"] = q[:, j]
        if levels:
            hold_to_level(out, levels, self.metadata.get("target_max"))
        if {"viewers", "orders"} <= set(self.models):
            out["conversion_p50"] = out["orders_p50"] / np.maximum(out["viewers_p50"], 1.0)
        if {"orders", "gmv"} <= set(self.models):
            out["aov_p50"] = out["gmv_p50"] / np.maximum(out["orders_p50"], 1.0)
        out["cold_start"] = np.asarray(cold, dtype=bool)
        return out

    def predict(
        self, frame: pd.DataFrame, num_threads: int = 0, X: np.ndarray | None = None
    ) -> pd.DataFrame:
        """:meth:`predict_columns` of a feature frame, as a frame on its index.

        ``X``: the model input of ``frame`` already built (e.g. numpy, category codes).
        """
        X = self.matrix(frame) if X is None else X
        pred = self.predict_columns(X, is_cold(frame), num_threads, levels_of(frame))
        return pd.DataFrame(pred, index=frame.index)

    def explain_columns(
        self,
        X: pd.DataFrame | np.ndarray,
        values: Callable[[int, str], Any],
        target: str = "gmv",
        top: int = 5,
        num_threads: int = 0,
    ) -> list[dict[str, Any]]:
        """Per row of the model input ``X``: log-space contributions summed by feature family,
        and the top drivers (``values(row, feature)`` gives a driver's input value).

        A contribution ``c`` multiplies the forecast by ``exp(c)``; ``baseline`` is the
        model's average (log) forecast before any feature is known.
        """
        contrib = self.models[target].contributions(X, num_threads)
        family_index = self._family_index
        out = []
        for r in range(contrib.shape[0]):
            row = contrib[r]
            by_family = {fam: float(row[idx].sum()) for fam, idx in family_index.items()}
            order = np.argsort(-np.abs(row[:-1]), kind="stable")[:top]
            drivers = [
                {
                    "feature": self.features[i],
                    "family": self.features[i].split("__", 1)[0],
                    "value": _jsonable(values(r, self.features[i])),
                    "contribution": float(row[i]),
                    "multiplier": float(np.exp(row[i])),
                }
                for i in order
            ]
            out.append({"baseline": float(row[-1]), "families": by_family, "drivers": drivers})
        return out

    def explain(
        self,
        frame: pd.DataFrame,
        target: str = "gmv",
        top: int = 5,
        num_threads: int = 0,
        X: np.ndarray | None = None,
    ) -> list[dict[str, Any]]:
        """:meth:`explain_columns` of a feature frame (``X`` as in :meth:`predict`)."""
        X = self.matrix(frame) if X is None else X
        return self.explain_columns(
            X, lambda r, f: frame[f].iloc[r], target=target, top=top, num_threads=num_threads
        )


def _jsonable(value: Any) -> Any:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return None
    if pd.isna(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value if isinstance(value, (int, float, str, bool)) else str(value)


def _dataset(
    X: pd.DataFrame,
    y: np.ndarray,
    base: LogLinear | None,
    reference: lgb.Dataset | None = None,
    objective: str = "log_l2",
) -> lgb.Dataset:
    """Trees boost from the base's forecast (``init_score``), if any. ``y`` is log1p(target);
    a tweedie / poisson model learns the raw target (its log link starts from the base)."""
    init = None if base is None else base.predict(X)
    label = y if objective == "log_l2" else np.expm1(y)
    return lgb.Dataset(X, label=label, init_score=init, reference=reference, free_raw_data=False)


def _fit_base(X: pd.DataFrame, y: np.ndarray, params: ForecastParams) -> LogLinear | None:
    """The log-linear base on model input ``X`` (plan features clipped to their 1 % tails,
    room history's rates and gaps to their training range, its scales not);
    None when ``params.base`` is off (trees boost from the mean)."""
    if not params.base:
        return None
    levels = np.array(
        [len(X[c].cat.categories) if isinstance(X[c].dtype, pd.CategoricalDtype) else 0
         for c in X.columns]
    )  # fmt: skip
    clip_mask = np.array([not str(c).startswith("room__") for c in X.columns])
    return LogLinear.fit(X, y, levels, clip_mask, params.base_alpha, params.base_clip)


def _augment(X: pd.DataFrame, y: np.ndarray, share: float, seed: int):
    """Append masked (cold-start) copies of a seeded share of the rows."""
    if share <= 0 or len(X) == 0:
        return X, y
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(X), size=max(1, int(share * len(X))), replace=False))
    masked = mask_room_history(X.iloc[pick])
    return pd.concat([X, masked], ignore_index=True), np.concatenate([y, y[pick]])


def _early_stopped(
    target: str, X: pd.DataFrame, y: np.ndarray, params: ForecastParams, rows: int | None = None
) -> TargetModel:
    """Base and trees on the first 90 % of ``X`` (time order, ``y`` in log1p), the number of
    trees early-stopped on the last 10 %; no calibration (offsets 0). ``rows``: the size the
    LightGBM settings are chosen for (:func:`fit_lgb_params`; default ``len(X)``)."""
    n_val = max(1, int(0.1 * len(X)))
    X_fit, y_fit = _augment(X.iloc[:-n_val], y[:-n_val], params.cold_start_share, params.seed)
    base = _fit_base(X_fit, y_fit, params)
    obj = params.objective
    dtrain = _dataset(X_fit, y_fit, base, objective=obj)
    dval = _dataset(X.iloc[-n_val:], y[-n_val:], base, dtrain, obj)
    booster = lgb.train(
        fit_lgb_params(params, len(X) if rows is None else rows),
        dtrain,
        num_boost_round=params.max_rounds,
        valid_sets=[dval],
        callbacks=[lgb.early_stopping(params.early_stopping_rounds, verbose=False)],
    )
    best = max(1, booster.best_iteration or params.max_rounds)
    return TargetModel(target, booster, (0.0,) * 3, (0.0,) * 3, best, base, obj)


def _target_rows(
    train: pd.DataFrame, target: str, features: list[str], vocab: dict[str, tuple[str, ...]]
) -> tuple[pd.Series, pd.DataFrame, np.ndarray]:
    """The start times of the rows with a known ``target`` in time order, their model input
    and log1p target. The input is one copy of the feature columns of those rows (not of the
    whole frame, then of its features, then of those in the vocabulary)."""
    known = np.flatnonzero(train[target].notna().to_numpy())
    if len(known) < 50:
        raise ValueError(f"{target}: only {len(known)} rows with outcomes; need at least 50")
    keys = train[["start_time", "session_id"]].iloc[known].reset_index(drop=True)
    order = keys.sort_values(["start_time", "session_id"]).index.to_numpy()
    rows = known[order]
    columns = [train.columns.get_loc(c) for c in features]
    X = apply_vocab(train.iloc[rows, columns].reset_index(drop=True), vocab, copy=False)
    times = keys["start_time"].iloc[order].reset_index(drop=True)
    return times, X, np.log1p(train[target].to_numpy(dtype=float)[rows])


def fit_candidate(
    train: pd.DataFrame,
    target: str,
    features: list[str],
    vocab: dict[str, tuple[str, ...]],
    params: ForecastParams,
) -> TargetModel:
    """One early-stopped fit of a target on ``train`` (no calibration, no refit): what model
    selection scores. Raises ``ValueError`` below 50 rows with outcomes."""
    _, X, y = _target_rows(train, target, features, vocab)
    return _early_stopped(target, X, y, params)


def _fit_target(
    train: pd.DataFrame,
    target: str,
    features: list[str],
    vocab: dict[str, tuple[str, ...]],
    params: ForecastParams,
) -> TargetModel:
    times, X_all, y_all = _target_rows(train, target, features, vocab)
    cal_start = times.max() - pd.Timedelta(days=params.calibration_days)
    in_cal = (times >= cal_start).to_numpy()
    if in_cal.mean() > 0.5 or in_cal.sum() < 20:  # short history: calibrate on the last 20 %
        in_cal = np.zeros(len(times), dtype=bool)
        in_cal[int(0.8 * len(times)) :] = True
    rows = len(X_all)
    before = int(np.count_nonzero(~in_cal))
    # rows are in time order, so the window is the tail: the rows before it are a slice, not
    # a copy of the model input
    head = X_all.iloc[:before] if in_cal[before:].all() else X_all.iloc[np.flatnonzero(~in_cal)]
    start = _early_stopped(target, head, y_all[~in_cal], params, rows)
    del head
    best, _base_fit, obj = start.best_iteration, start.base, params.objective
    lgb_params = fit_lgb_params(params, rows)

    # conformal offsets: the early-stopped model has never seen the calibration window
    X_cal, y_cal = X_all[in_cal], y_all[in_cal]
    X_cal_cold = mask_room_history(X_cal)
    resid_warm = y_cal - start.predict_log(X_cal, num_iteration=best)
    resid_cold = y_cal - start.predict_log(X_cal_cold, num_iteration=best)
    offsets_warm = _offsets(resid_warm)
    # a room without history is never forecast more tightly than one with history
    offsets_cold = _offsets(resid_cold)
    offsets_cold = (
        min(offsets_cold[0], offsets_warm[0]),
        offsets_cold[1],
        max(offsets_cold[2], offsets_warm[2]),
    )

    X_final, y_final = _augment(X_all, y_all, params.cold_start_share, params.seed)
    base = _fit_base(X_final, y_final, params)
    final = lgb.train(
        lgb_params, _dataset(X_final, y_final, base, objective=obj), num_boost_round=best
    )
    return TargetModel(target, final, offsets_warm, offsets_cold, best, base, obj)


def _conformal_rank(n: int, q: float) -> int:
    """The order statistic (1-based) of ``n`` residuals that split-conformal prediction takes
    for level ``q``: ``ceil((n + 1) q)`` above the median, ``floor((n + 1) q)`` below it, so a
    new residual falls beyond it with probability at most ``1 - q`` (resp. ``q``), clipped to the
    sample (with few residuals the interval cannot be wider than the most extreme one)."""
    k = math.ceil((n + 1) * q) if q >= 0.5 else math.floor((n + 1) * q)
    return min(max(k, 1), n)


def _offsets(resid: np.ndarray) -> tuple[float, float, float]:
    """P10 / P50 / P90 offsets (log space) from calibration residuals: the split-conformal order
    statistics of the tails (finite-sample valid; on a few dozen sessions this widens the
    interval by an order statistic or two on each side), the median in the middle."""
    r = np.sort(np.asarray(resid, dtype=float))
    n = len(r)
    q = [
        float(np.median(r)) if level == 0.5 else float(r[_conformal_rank(n, level) - 1])
        for level in QUANTILES
    ]
    q.sort()
    return q[0], q[1], q[2]


def identity_vocab(train: pd.DataFrame, targets: tuple[str, ...] = TARGETS) -> tuple[str, ...]:
    """The room identity vocabulary of a training frame: rooms with at least
    :data:`IDENTITY_MIN_SESSIONS` sessions with a known outcome, sorted."""
    known = train[[t for t in targets if t in train.columns]].notna().any(axis=1)
    counts = train.loc[known, "room_id"].astype(str).value_counts()
    return tuple(sorted(counts.index[counts >= IDENTITY_MIN_SESSIONS]))


def with_identity(
    train: pd.DataFrame,
    features: list[str],
    vocab: dict[str, tuple[str, ...]],
    targets: tuple[str, ...] = TARGETS,
) -> tuple[list[str], dict[str, tuple[str, ...]]]:
    """``features`` and ``vocab`` with the room identity added (vocabulary from ``train``)."""
    if IDENTITY_COLUMN in features:
        return features, vocab
    return [*features, IDENTITY_COLUMN], {**vocab, IDENTITY_COLUMN: identity_vocab(train, targets)}


def fit_forecaster(
    train: pd.DataFrame,
    params: ForecastParams | None = None,
    *,
    targets: tuple[str, ...] = TARGETS,
    features: list[str] | None = None,
    vocab: dict[str, tuple[str, ...]] | None = None,
    per_target: dict[str, ForecastParams] | None = None,
    copies: pd.DataFrame | None = None,
) -> Forecaster:
    """Fit one model per target on a feature frame joined with its outcome columns.

    ``train`` holds ``session_id``, ``start_time``, feature columns and the target columns.
    ``features`` restricts the inputs (the history-only baseline uses the room family alone).
    ``per_target`` gives a target its own settings (the model choice of
    :mod:`training.selection`); other targets use ``params``. A target whose settings read the
    room identity gets :data:`~features.sessions.IDENTITY_COLUMN` (vocabulary:
    :func:`identity_vocab`); the others read the shared features without it. The metadata
    holds the training distribution of the main plan inputs (``drift_reference``, see
    :mod:`training.drift`), which the service's watch compares the plans it serves with.
    A target whose settings have ``ahead`` trains on ``train`` plus the origin copies of its
    sessions (``copies``, from :func:`training.data.origin_copies`; required then).
    """
    from features.sessions import CATEGORICAL_VOCAB

    params = params or ForecastParams()
    per_target = per_target or {}
    settings = {t: per_target.get(t, params) for t in targets}
    features = list(features or feature_columns(train))
    vocab = {k: v for k, v in (vocab or CATEGORICAL_VOCAB).items() if k in features}
    shared = features
    if any(p.identity for p in settings.values()):
        features, vocab = with_identity(train, features, vocab, targets)
    from training.data import with_copies

    if copies is None and any(p.ahead for p in settings.values()):
        raise ValueError("settings with ahead=True train on origin copies: pass copies")
    models = {}
    for t, p in settings.items():
        own = features if p.identity else shared
        rows = with_copies(train, copies) if p.ahead else train
        model = _fit_target(rows, t, own, vocab, p)
        if own is not features:
            model = dataclasses.replace(model, columns=tuple(range(len(own))))
        models[t] = model
    from training.drift import drift_reference  # the plan inputs' training distribution

    reference = drift_reference(train[[c for c in features if c in train.columns]])
    target_max = {t: float(np.nanmax(train[t].to_numpy(float))) for t in settings}
    meta = {"drift_reference": reference, "target_max": target_max}
    return Forecaster(models, list(features), vocab, params, meta)
