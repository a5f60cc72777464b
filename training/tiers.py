"""The fan-tier model: LightGBM multiclass, (fan features at a cutoff) -> (tier in the next window).

Training frame. For each cutoff ``C`` the inputs are :func:`features.fans.fan_features` (events
before ``C``) plus the buy-till-you-die columns of :mod:`features.btyd` (a Pareto/NBD and a
BG/NBD fitted on the orders before ``C``: expected orders in the window and P(alive)), and the
label is :func:`features.fans.tier_labels` (the rules applied to ``[C, C + window_days)``);
frames of several cutoffs are stacked. The same feature SQL runs in training, in the batch run
and in the service, so there is one definition of every feature. The fitted model keeps the two
customer-base models of its latest training cutoff and derives their columns from the fan
features in closed form wherever it scores (:meth:`TierModel.matrix`, the batch run's Arrow
path): any columns of that name handed in are ignored.

Fit. Cutoffs are time-ordered; the booster is fitted on every cutoff but the latest
``holdout_cutoffs`` (default 2), with early stopping on those (modest size: the batch run scores a
million fans). The decision rule is then chosen on the same held-out latest cutoffs: the tier is
``argmax(proba * weights)`` with per-class weights found by coordinate ascent on a log grid to
maximise macro-F1 (two cutoffs rather than one make the weights of the rare tiers less noisy).
Plain argmax rarely predicts the rare tiers and loses to persistence on macro-F1; the weights
fix that without touching the probabilities. Finally the booster is refitted on all the cutoffs
with the number of trees early stopping chose (``refit=True``), so the latest behaviour is
learnt too.

Outputs: the four probabilities in :data:`features.fans.TIERS` order (``p_dormant`` is the
churn-risk score) and the decided tier. Everything is deterministic for a fixed seed
(``deterministic=True``; the trees are the same with 1 or 2 threads, measured).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

# Waiting OpenMP threads sleep instead of spinning (as in training.models): set before LightGBM
# loads libgomp. Spinning was what stalled LightGBM on busy cores (README, "Threads").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import lightgbm as lgb
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from features.btyd import BTYD_COLUMNS, BTYD_INPUTS, FanBtyd, fit_fan_btyd
from features.contract import DEFAULT_TZ
from features.fans import FEATURE_COLUMNS, TIERS, TierRules, connect, fan_features, tier_labels
from livecast.config import available_cores
from training.bundle import (
    FILES_KEY,
    BundleError,
    atomic_dir,
    champion_path,
    file_checksums,
    read_bundle_meta,
    verify_files,
)

BUNDLE_FILE = "bundle.json"
BOOSTER_FILE = "tiers.lgb.txt"
TIER_CHAMPION_FILE = "tiers-champion.json"
"""Champion pointer of the tier model in ``models/`` (the forecaster's is ``champion.json``)."""
FORMAT_VERSION = 1
KIND = "tiers"
PROBA_COLUMNS: tuple[str, ...] = tuple(f"p_{t}" for t in TIERS)
WEIGHT_GRID: tuple[float, ...] = tuple(float(x) for x in np.geomspace(0.25, 8.0, 16))
"""Candidate per-class weights of the decision rule (log grid, includes 1)."""


class TierParams(BaseModel):
    """LightGBM settings of the tier model (kept small: the batch run predicts 1M rows)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    learning_rate: float = Field(0.05, gt=0, le=0.5)
    num_leaves: int = Field(15, ge=4, le=512)
    min_data_in_leaf: int = Field(100, ge=1, le=5000)
    feature_fraction: float = Field(0.9, gt=0, le=1)
    lambda_l2: float = Field(1.0, ge=0, le=100)
    max_rounds: int = Field(200, ge=5, le=5000)
    early_stopping_rounds: int = Field(20, ge=2, le=500)
    tune_weights: bool = Field(True, description="Choose class weights for macro-F1.")
    calibrate: bool = Field(
        False,
        description="Recalibrate the probabilities on the held-out training cutoffs (vector "
        "scaling). Off by default: measured on CDNOW and the simulator, the booster's own "
        "probabilities had the same or lower log loss and calibration error at the evaluation "
        "cutoffs.",
    )
    lapsed_sample: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Share of lapsed fans (no event in the last two windows) the booster is "
        "fitted on, weighted back up (see lapsed_sample); 1 fits every row. Measured at 0.25: "
        "the simulator's backtest ran 1.5x faster at the same macro-F1 and 0.002 lower "
        "dormancy AUC, but CDNOW's dormancy AUC fell by 0.002-0.014 (8 % of its lapsed buyers "
        "come back), so every row is fitted by default.",
    )
    holdout_cutoffs: int = Field(
        2, ge=1, le=6, description="Latest training cutoffs held out for early stopping / weights."
    )
    refit: bool = Field(True, description="Refit on all cutoffs with the chosen tree count.")
    seed: int = 0
    num_threads: int = Field(
        0,
        ge=0,
        le=64,
        description="Training threads; 0: the cores this process may use, resolved at fit time "
        "(livecast.config.available_cores; LIVECAST_THREADS overrides). The stalls on busy cores "
        "that once kept this at 1 were spinning OpenMP threads: waiting threads now sleep.",
    )

    def lgb_params(self) -> dict[str, Any]:
        return {
            "objective": "multiclass",
            "num_class": len(TIERS),
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "lambda_l2": self.lambda_l2,
            "seed": self.seed,
            "deterministic": True,
            "force_col_wise": True,
            "num_threads": self.num_threads or available_cores(),
            "verbose": -1,
        }


@dataclass(frozen=True)
class Calibration:
    """Vector scaling of the booster's probabilities: ``softmax(log(p) / temperature + bias)``.

    Fitted by minimising the multiclass log loss on the held-out training cutoffs (the latest
    ones, never an evaluation cutoff); the dormant tier's bias is 0 (only differences matter).
    Five numbers: it fixes over- or under-confidence and the tiers' base rates as they were on
    the latest training cutoffs, without changing the order of fans within a tier much.
    """

    temperature: float = 1.0
    bias: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    def apply(self, proba: np.ndarray) -> np.ndarray:
        z = np.log(np.clip(proba, 1e-12, 1.0)) / self.temperature + np.asarray(self.bias)
        z -= z.max(axis=1, keepdims=True)
        out = np.exp(z)
        return out / out.sum(axis=1, keepdims=True)

    def to_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "bias": list(self.bias)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        return cls(float(d["temperature"]), tuple(float(b) for b in d["bias"]))  # type: ignore[arg-type]


def fit_calibration(proba: np.ndarray, y: np.ndarray) -> Calibration:
    """The :class:`Calibration` minimising the log loss of ``proba`` (n, 4) against codes ``y``.

    Deterministic (L-BFGS-B from the identity); falls back to the identity when the fit does
    not lower the log loss.
    """
    from scipy.optimize import minimize

    logp = np.log(np.clip(proba, 1e-12, 1.0))
    k = proba.shape[1]
    rows = np.arange(len(y))

    def loss(theta: np.ndarray) -> float:
        z = logp * np.exp(-theta[0])
        z[:, : k - 1] += theta[1:]
        z -= z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1))
        return float((lse - z[rows, y]).mean())

    start = np.zeros(k)
    res = minimize(loss, start, method="L-BFGS-B", bounds=[(-3.0, 3.0)] + [(-10.0, 10.0)] * (k - 1))
    if not np.all(np.isfinite(res.x)) or loss(res.x) >= loss(start):
        return Calibration()
    bias = (*(float(b) for b in res.x[1:]), 0.0)
    return Calibration(float(np.exp(res.x[0])), bias)  # type: ignore[arg-type]


@dataclass
class TierModel:
    """A fitted tier model: booster, feature list, label rules and the decision rule."""

    booster: lgb.Booster
    features: list[str]
    rules: TierRules
    class_weights: tuple[float, float, float, float]
    metadata: dict[str, Any] = field(default_factory=dict)
    calibration: Calibration = field(default_factory=Calibration)
    btyd: FanBtyd | None = None
    """The buy-till-you-die models fitted on the latest training cutoff: the model's
    :data:`~features.btyd.BTYD_COLUMNS` are derived with them from the fan features at scoring
    time (None: those columns are NaN, as they were in training)."""

    def derived(self, feats: Any) -> dict[str, np.ndarray]:
        """The model's derived columns (:data:`BTYD_COLUMNS`) for ``feats``, a frame or a
        mapping of columns holding :data:`BTYD_INPUTS`; empty when the model has none."""
        if not any(c in BTYD_COLUMNS for c in self.features):
            return {}
        n = len(np.asarray(feats[BTYD_INPUTS[0]]))
        if self.btyd is None:
            return {c: np.full(n, np.nan) for c in BTYD_COLUMNS}
        return self.btyd.columns(feats)

    def inputs(self) -> list[str]:
        """The fan-feature columns the model reads (derived columns replaced by their inputs)."""
        base = [c for c in self.features if c not in BTYD_COLUMNS]
        if len(base) < len(self.features):
            base += [c for c in BTYD_INPUTS if c not in base]
        return base

    def matrix(self, feats: pd.DataFrame) -> np.ndarray:
        """The float64 model matrix of a fan-feature frame; names missing columns."""
        missing = [c for c in self.inputs() if c not in feats.columns]
        if missing:
            raise ValueError(
                f"fan features lack column(s) {', '.join(missing)}"
                " (build them with features.fans.fan_features)"
            )
        derived = self.derived(feats)
        X = np.empty((len(feats), len(self.features)), dtype="float64")
        for j, name in enumerate(self.features):
            if name in derived:
                X[:, j] = derived[name]
            else:
                X[:, j] = feats[name].to_numpy(dtype="float64", na_value=np.nan)
        return X

    def predict_proba(self, feats: pd.DataFrame | np.ndarray, num_threads: int = 0) -> np.ndarray:
        """(n, 4) probabilities in TIERS order; rows sum to 1.

        ``feats`` is a fan-feature frame, or its model matrix already built (float64, one
        column per ``features`` in that order, NaN for missing), as the batch run builds it
        from Arrow. The booster reads a C-contiguous float64 matrix as is; a frame's matrix is
        column-major (pandas blocks), so it is laid out row by row first: LightGBM walks the
        trees row by row, and a strided row costs a cache miss per feature. Same values
        either way. ``num_threads`` 0 keeps the booster's own setting.
        """
        if isinstance(feats, np.ndarray):
            if feats.ndim != 2 or feats.shape[1] != len(self.features):
                raise ValueError(
                    f"a model matrix needs {len(self.features)} columns, got shape {feats.shape}"
                )
            X = feats
        else:
            X = self.matrix(feats)
        if len(X) == 0:
            return np.zeros((0, len(TIERS)))
        X = np.ascontiguousarray(X, dtype="float64")
        kwargs = {"num_threads": num_threads} if num_threads else {}
        proba = np.asarray(self.booster.predict(X, **kwargs), dtype="float64")
        if self.calibration != Calibration():
            return self.calibration.apply(proba)
        return proba / proba.sum(axis=1, keepdims=True)

    def decide(self, proba: np.ndarray) -> np.ndarray:
        """int8 tier codes (indices into TIERS): ``argmax(proba * class_weights)``."""
        return decide(proba, self.class_weights)


def decide(proba: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """The decision rule: ``argmax(proba * weights)`` as int8 codes into TIERS."""
    return np.argmax(np.asarray(proba) * np.asarray(weights)[None, :], axis=1).astype("int8")


def tier_codes(tiers: pd.Series) -> np.ndarray:
    """int8 codes into TIERS of a tier column (category or str); rejects unknown tiers."""
    cat = pd.Categorical(tiers, categories=list(TIERS))
    if (cat.codes < 0).any():
        bad = sorted(set(pd.Series(tiers)[cat.codes < 0].astype(str)))
        raise ValueError(f"unknown tier(s) {bad}; expected one of {list(TIERS)}")
    return cat.codes.astype("int8")


def macro_f1_codes(y: np.ndarray, pred: np.ndarray, k: int = len(TIERS)) -> float:
    """Macro-F1 over all ``k`` classes from int codes (a class never seen nor predicted scores 0).

    Same value as ``sklearn.metrics.f1_score(average="macro", labels=range(k),
    zero_division=0)``, computed from one bincount so that the weight search stays fast.
    """
    cm = np.bincount(y.astype(np.int64) * k + pred, minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(float)
    denom = cm.sum(axis=0) + cm.sum(axis=1)
    f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
    return float(f1.mean())


def choose_class_weights(
    proba: np.ndarray,
    y: np.ndarray,
    grid: Sequence[float] = WEIGHT_GRID,
    rounds: int = 3,
) -> tuple[float, float, float, float]:
    """Per-class weights maximising macro-F1 of ``argmax(proba * w)``: coordinate ascent.

    Starts from equal weights; each round tries every grid value for each class in turn
    (the dormant weight stays 1: only ratios matter) and keeps a change only when it strictly
    improves macro-F1, so ties keep the simpler rule. Deterministic.
    """
    k = proba.shape[1]
    w = np.ones(k)
    best = macro_f1_codes(y, decide(proba, w), k)
    for _ in range(rounds):
        improved = False
        for c in range(k - 1):
            for g in grid:
                trial = w.copy()
                trial[c] = g
                score = macro_f1_codes(y, decide(proba, trial), k)
                if score > best + 1e-12:
                    best, w, improved = score, trial, True
        if not improved:
            break
    return tuple(float(x) for x in w)  # type: ignore[return-value]


def tier_frame(
    events: pd.DataFrame | str | Path,
    cutoffs: Iterable[pd.Timestamp | str],
    rules: TierRules | None = None,
    *,
    tz: str = DEFAULT_TZ,
) -> pd.DataFrame:
    """Stacked training frame: per cutoff, ``fan_features`` + the ``tier`` label + ``cutoff``.

    One row per (cutoff, fan with an event before the cutoff), cutoffs in the given order.
    """
    from livecast.config import available_cores

    rules = rules or TierRules()
    parts = []
    con = connect(threads=available_cores())  # training threads (LIVECAST_THREADS overrides)
    try:
        for c in cutoffs:
            feats = fan_features(events, c, con=con, tz=tz)
            # buy-till-you-die columns with the models fitted on this cutoff's own history
            btyd = fit_fan_btyd(feats, rules.window_days, str(pd.Timestamp(c)))
            for name in BTYD_COLUMNS:
                feats[name] = np.nan
            if btyd is not None:
                for name, values in btyd.columns(feats).items():
                    feats[name] = values
            labels = tier_labels(events, c, rules, con=con, tz=tz)
            if not feats["fan_id"].equals(labels["fan_id"]):
                raise RuntimeError("fan features and labels are not aligned")  # pragma: no cover
            feats["tier"] = labels["tier"].to_numpy()
            feats["cutoff"] = pd.Timestamp(c)
            parts.append(feats)
    finally:
        con.close()
    if not parts:
        raise ValueError("no cutoffs given: need at least one cutoff to build a training frame")
    return pd.concat(parts, ignore_index=True)


def lapsed_sample(frame: pd.DataFrame, rules: TierRules, rate: float) -> np.ndarray:
    """Row weights of the training sample: 0 (left out), 1 or ``1 / rate``.

    Fans with no event in the last two windows (*lapsed*) are most of a mature fan base (82 %
    of the simulator's rows at 30-day windows) and nearly all stay dormant (97 %). A fixed
    share ``rate`` of them is kept, chosen by a hash of (fan, cutoff) so it is the same on
    every run, and weighted ``1 / rate``, so every loss and gradient stays an unbiased estimate
    of the full data's while the booster sees far fewer rows. ``rate`` 1 keeps every row.
    """
    weights = np.ones(len(frame))
    if rate >= 1 or frame.empty:
        return weights
    lapsed = frame["fan__days_since_last_event"].to_numpy(dtype="float64", na_value=np.inf) > (
        2 * rules.window_days
    )
    key = frame[["fan_id"]].assign(cutoff=frame["cutoff"].astype("str"))
    u = (pd.util.hash_pandas_object(key, index=False).to_numpy() % 1_000_000) / 1_000_000
    weights[lapsed] = np.where(u[lapsed] < rate, 1.0 / rate, 0.0)
    return weights


def _dataset(frame: pd.DataFrame, features: list[str], weights: np.ndarray) -> lgb.Dataset:
    keep = weights > 0
    rows = frame[keep]
    X = rows[features].to_numpy(dtype="float64", na_value=np.nan)
    return lgb.Dataset(
        X,
        label=tier_codes(rows["tier"]),
        weight=weights[keep],
        feature_name=features,
        free_raw_data=False,
    )


def fit_tier_model(
    events: pd.DataFrame | str | Path | None,
    cutoffs: Sequence[pd.Timestamp | str],
    rules: TierRules | None = None,
    params: TierParams | None = None,
    *,
    frame: pd.DataFrame | None = None,
    tz: str = DEFAULT_TZ,
) -> TierModel:
    """Fit the tier model on ``cutoffs`` (see the module docstring for the procedure).

    ``frame`` (from :func:`tier_frame` on the same cutoffs) skips rebuilding the features;
    then ``events`` may be None. With a single cutoff there is nothing to hold out: the booster
    uses ``max_rounds`` trees and equal class weights.
    """
    rules = rules or TierRules()
    params = params or TierParams()
    stamps = sorted(pd.Timestamp(c) for c in cutoffs)
    if not stamps:
        raise ValueError("fit_tier_model needs at least one cutoff")
    if frame is None:
        if events is None:
            raise ValueError("pass events or a prebuilt frame")
        frame = tier_frame(events, stamps, rules, tz=tz)
    else:
        frame = frame[frame["cutoff"].isin(stamps)]
    if frame.empty:
        raise ValueError("no fans with events before the cutoffs: nothing to train on")
    features = [*FEATURE_COLUMNS, *BTYD_COLUMNS]
    latest = frame[frame["cutoff"] == stamps[-1]]
    btyd = fit_fan_btyd(latest, rules.window_days, str(stamps[-1]))
    lgb_params = params.lgb_params()
    weights: tuple[float, ...] = (1.0,) * len(TIERS)
    calibration = Calibration()
    holdout_f1 = None
    n_hold = min(params.holdout_cutoffs, len(stamps) - 1)
    held = stamps[len(stamps) - n_hold :] if n_hold > 0 else []
    rate = params.lapsed_sample

    def full_set() -> lgb.Dataset:
        return _dataset(frame, features, lapsed_sample(frame, rules, rate))

    fit_part = frame[~frame["cutoff"].isin(held)]
    hold_part = frame[frame["cutoff"].isin(held)]
    if held and not fit_part.empty and not hold_part.empty:
        train_set = _dataset(fit_part, features, lapsed_sample(fit_part, rules, rate))
        valid_set = _dataset(hold_part, features, lapsed_sample(hold_part, rules, rate))
        booster = lgb.train(
            lgb_params,
            train_set,
            num_boost_round=params.max_rounds,
            valid_sets=[valid_set],
            callbacks=[lgb.early_stopping(params.early_stopping_rounds, verbose=False)],
        )
        rounds = max(int(booster.best_iteration or params.max_rounds), 1)
        X_hold = hold_part[features].to_numpy(dtype="float64", na_value=np.nan)
        proba = np.asarray(booster.predict(X_hold, num_iteration=rounds))
        y_hold = tier_codes(hold_part["tier"])
        if params.calibrate:
            calibration = fit_calibration(proba, y_hold)
            proba = calibration.apply(proba)
        if params.tune_weights:
            weights = choose_class_weights(proba, y_hold)
        holdout_f1 = macro_f1_codes(y_hold, decide(proba, weights))
        if params.refit:
            booster = lgb.train(lgb_params, full_set(), num_boost_round=rounds)
        else:
            booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=rounds))
    else:
        rounds = params.max_rounds
        booster = lgb.train(lgb_params, full_set(), num_boost_round=rounds)
    counts = frame["tier"].value_counts()
    metadata = {
        "cutoffs": [str(c) for c in stamps],
        "weights_cutoffs": [str(c) for c in held] if holdout_f1 is not None else [],
        "holdout_macro_f1": holdout_f1,
        "num_trees": rounds,
        "n_train": len(frame),
        "n_fitted": int((lapsed_sample(frame, rules, params.lapsed_sample) > 0).sum()),
        "label_counts": {t: int(counts.get(t, 0)) for t in TIERS},
        "params": params.model_dump(),
        "tz": tz,
    }
    metadata["calibration"] = calibration.to_dict()
    metadata["btyd"] = None if btyd is None else btyd.to_dict()
    return TierModel(
        booster,
        features,
        rules,
        tuple(weights),  # type: ignore[arg-type]
        metadata,
        calibration,
        btyd,
    )


def score_fans(model: TierModel, feats: pd.DataFrame, num_threads: int = 0) -> pd.DataFrame:
    """feats = output of :func:`features.fans.fan_features` (fan_id + fan__* columns) ->
    columns fan_id (str), tier (category with categories TIERS), p_core, p_active, p_potential,
    p_dormant (float64; p_dormant is the churn-risk score), same row order as feats."""
    if "fan_id" not in feats.columns:
        raise ValueError("fan features lack column fan_id")
    proba = model.predict_proba(feats, num_threads=num_threads)
    codes = model.decide(proba)
    # the ids keep their (str) array: no round trip through a numpy array of Python strings
    fan_id = feats["fan_id"].astype("str").array
    columns: dict[str, Any] = {
        "fan_id": fan_id,
        "tier": pd.Categorical.from_codes(codes, categories=list(TIERS)),
    }
    by_column = np.asfortranarray(proba)  # each probability column contiguous
    for i, col in enumerate(PROBA_COLUMNS):
        columns[col] = by_column[:, i]
    return pd.DataFrame(columns)


# ----------------------------------------------------------------------------------------------
# Bundles


def _lib_versions() -> dict[str, str]:
    return {p: version(p) for p in ("lightgbm", "pandas", "numpy", "duckdb")}


def save_tier_bundle(
    model: TierModel, out_dir: str | Path, metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``tiers.lgb.txt`` + ``bundle.json`` into ``out_dir`` atomically (built beside the
    target under a temporary name, then renamed into place). Returns ``out_dir``.

    ``bundle.json`` (written last) lists the booster's sha256 under ``"files"``.
    """
    with atomic_dir(out_dir) as tmp:
        model.booster.save_model(str(tmp / BOOSTER_FILE))
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": KIND,
            "tiers": list(TIERS),
            "features": list(model.features),
            "rules": model.rules.model_dump(),
            "class_weights": list(model.class_weights),
            "calibration": model.calibration.to_dict(),
            "btyd": None if model.btyd is None else model.btyd.to_dict(),
            "model_file": BOOSTER_FILE,
            "libraries": _lib_versions(),
            "metadata": {**model.metadata, **(metadata or {})},
            FILES_KEY: file_checksums(tmp, [BOOSTER_FILE]),
        }
        (tmp / BUNDLE_FILE).write_text(json.dumps(meta, indent=2, default=str))
    return Path(out_dir)


_REQUIRED = ("kind", "tiers", "features", "rules", "class_weights", "model_file", "metadata")


def verify_tier_bundle(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """Check a tier bundle folder (or the tier champion of a models folder) without loading
    it: ``bundle.json`` parses, is a tier bundle with the keys the loader reads, and the booster
    is present and intact (its checksum, or for older bundles a complete LightGBM model).
    Returns the bundle folder and its metadata.

    Raises FileNotFoundError when there is no tier bundle, BundleError when it is damaged and
    ValueError when it is another kind of bundle.
    """
    path = Path(path)
    if not (path / BUNDLE_FILE).exists() and (path / TIER_CHAMPION_FILE).exists():
        path = champion_path(path, TIER_CHAMPION_FILE)
    if not (path / BUNDLE_FILE).exists():
        raise FileNotFoundError(
            f"{path}: not a tier model bundle (no {BUNDLE_FILE}, no {TIER_CHAMPION_FILE});"
            " run livecast segments train and promote"
        )
    meta = read_bundle_meta(path, ())
    if meta.get("kind") != KIND:
        raise ValueError(f"{path}: bundle kind is {meta.get('kind')!r}, not a tier model")
    meta = read_bundle_meta(path, _REQUIRED)
    if not isinstance(meta["metadata"], dict):
        raise BundleError(path, BUNDLE_FILE, "has a malformed 'metadata' entry")
    if list(meta["tiers"]) != list(TIERS):
        raise ValueError(f"{path}: bundle tiers {meta['tiers']} differ from {list(TIERS)}")
    verify_files(path, meta, [meta["model_file"]], [])
    return path, meta


def load_tier_bundle(path: str | Path) -> TierModel:
    """Load a tier bundle folder, or the tier champion when given the ``models/`` folder.

    The folder is verified first (:func:`verify_tier_bundle`): a damaged bundle raises
    BundleError before LightGBM reads the booster.
    """
    path, meta = verify_tier_bundle(path)
    booster = lgb.Booster(model_file=str(path / meta["model_file"]))
    return TierModel(
        booster,
        list(meta["features"]),
        TierRules(**meta["rules"]),
        tuple(float(w) for w in meta["class_weights"]),  # type: ignore[arg-type]
        {**meta["metadata"], "bundle": path.name},
        Calibration.from_dict(meta["calibration"]) if "calibration" in meta else Calibration(),
        FanBtyd.from_dict(meta["btyd"]) if meta.get("btyd") else None,
    )
