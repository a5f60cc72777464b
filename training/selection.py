"""Model choice per dataset and target, made by the data inside the training period.

Live-commerce datasets differ: a simulator with 40 rooms and two years of sessions, a TV
shopping channel with thousands of shows, a Douyin export of eight hosts over three months.
No single objective or capacity is right for all of them. Before the backtest's first cut (and
so before any row it scores), :func:`select_params` holds out the most recent stretch of the
training period, fits a few small, principled candidates on the rows before it and keeps, per
target, the one with the lowest WAPE on the held-out stretch:

* the objective: squared error on ``log1p(target)`` (a median; robust to big rooms), or
  tweedie / poisson on the raw target with a log link (a mean; zero-GMV sessions are ordinary
  values instead of ``log1p(0)`` outliers);
* with or without the log-linear base under the trees;
* the capacity: smaller or larger trees than the default ones;
* with few rooms (at most :data:`MAX_IDENTITY_ROOMS` with enough sessions to be named), the
  room identity as a category: a room's own level, which its trailing history estimates only
  from its last sessions.

Stage one scores objective x base at the default capacity; stage two scores the capacities of
the stage-one winner and, with few rooms, the winner with the room identity. Each candidate is
one early-stopped fit (no calibration refit). On big datasets the candidates see only the most
recent :data:`MAX_SELECTION_ROWS` rows before the held-out stretch, which keeps the choice
affordable and recent. Optuna (``livecast tune``) stays the tuner for deeper searches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.sessions import CATEGORICAL_VOCAB, apply_vocab, feature_columns
from training.metrics import wape
from training.models import (
    TARGETS,
    ForecastParams,
    fit_candidate,
    identity_vocab,
    with_identity,
)

MAX_SELECTION_ROWS = 6000
"""Most recent training rows the candidates are fitted on."""

MIN_VALIDATION_ROWS = 30
MAX_VALIDATION_SHARE = 0.25
"""The held-out stretch: the last ``horizon_days`` before the cut, at most this share of the
rows before it (and at least :data:`MIN_VALIDATION_ROWS` rows)."""

MAX_IDENTITY_ROOMS = 50
"""Above this many named rooms (see ``training.models.identity_vocab``) the identity candidate
is not tried: room history carries the level, and a category of many levels overfits."""

CAPACITIES: dict[str, dict[str, Any]] = {
    "small": {"num_leaves": 7, "min_data_in_leaf": 10},
    "default": {},
    "large": {"num_leaves": 63, "min_data_in_leaf": 20},
}


def _candidate_name(objective: str, base: bool, capacity: str) -> str:
    return f"{objective}{'+base' if base else ''}/{capacity}"


def stage_one(params: ForecastParams) -> list[tuple[str, ForecastParams]]:
    """Objective x base at the default capacity."""
    out = []
    for objective in ("log_l2", "tweedie", "poisson"):
        for base in (True, False):
            cand = params.model_copy(update={"objective": objective, "base": base})
            out.append((_candidate_name(objective, base, "default"), cand))
    return out


def stage_two(winner: ForecastParams, identity: bool = False) -> list[tuple[str, ForecastParams]]:
    """The winner's objective and base at the other capacities, and with the room identity
    (``identity``: the data has few rooms)."""
    out = []
    name = _candidate_name(winner.objective, winner.base, "default")
    for capacity, update in CAPACITIES.items():
        if capacity == "default":
            continue
        out.append(
            (
                _candidate_name(winner.objective, winner.base, capacity),
                winner.model_copy(update=update),
            )
        )
    if identity:
        out.append((f"{name}+room", winner.model_copy(update={"identity": True})))
    return out


@dataclass(frozen=True)
class Selection:
    """The chosen settings per target and every candidate's validation WAPE."""

    params: dict[str, ForecastParams]
    chosen: dict[str, str]
    scores: dict[str, dict[str, float]]
    validation: dict[str, Any]

    def record(self) -> dict[str, Any]:
        """JSON-ready: what was chosen, every candidate's score, the validation window."""
        return {
            "chosen": dict(self.chosen),
            "scores": {t: dict(s) for t, s in self.scores.items()},
            "validation": dict(self.validation),
        }


def validation_split(frame: pd.DataFrame, before: pd.Timestamp, horizon_days: int):
    """(fit rows, held-out rows) of ``frame`` before ``before``, in time order."""
    past = frame[frame["start_time"] < before].sort_values(["start_time", "session_id"])
    n = len(past)
    by_days = int((past["start_time"] >= before - pd.Timedelta(days=horizon_days)).sum())
    n_val = min(by_days, int(MAX_VALIDATION_SHARE * n))
    n_val = max(n_val, min(MIN_VALIDATION_ROWS, n // 4))
    fit, val = past.iloc[: n - n_val], past.iloc[n - n_val :]
    return fit.iloc[-MAX_SELECTION_ROWS:], val


def _predict(
    fit: pd.DataFrame, val: pd.DataFrame, target: str, params: ForecastParams
) -> np.ndarray | None:
    """A candidate's forecasts of ``val`` (None: too few rows with outcomes to fit it)."""
    features = feature_columns(fit)
    vocab = {k: v for k, v in CATEGORICAL_VOCAB.items() if k in features}
    if params.identity:
        features, vocab = with_identity(fit, features, vocab, (target,))
    try:
        model = fit_candidate(fit, target, features, vocab, params)
    except ValueError:  # too few rows with outcomes for this candidate
        return None
    X = apply_vocab(val[features], vocab)
    return np.expm1(model.predict_log(X, num_iteration=model.best_iteration))


def _score(fit: pd.DataFrame, val: pd.DataFrame, target: str, params: ForecastParams) -> float:
    pred = _predict(fit, val, target, params)
    if pred is None:
        return float("inf")
    score = wape(val[target].to_numpy(dtype=float), pred)
    return float(score) if np.isfinite(score) else float("inf")


def select_params(
    frame: pd.DataFrame,
    params: ForecastParams,
    *,
    before: pd.Timestamp,
    horizon_days: int,
    targets: tuple[str, ...] = TARGETS,
    copies: pd.DataFrame | None = None,
    tables: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> Selection:
    """Choose each target's settings on data before ``before`` only (see the module doc).

    Given the origin copies of the sessions (``training.data.origin_copies``) and the tables
    they come from (``tables``: sessions, products), a third stage asks whether training on
    the copies too (``+ahead``) forecasts better *ahead*: the best so far and the best with
    the copies of its fit rows are both scored on the held-out stretch as planners meet it,
    from the history frozen at the stretch's start (``training.data.frozen_frame``), and the
    copies are kept when they lower its WAPE there, the rule of every other candidate (the two
    scores are recorded with `` (ahead)``).
    With ``params.select`` off, or too little data, every target keeps ``params``."""
    from training.data import frozen_frame, with_copies

    fit, val = validation_split(frame, before, horizon_days)
    window = {
        "fit_rows": len(fit),
        "validation_rows": len(val),
        "validation_start": str(val["start_time"].min()) if len(val) else None,
        "validation_end": str(val["start_time"].max()) if len(val) else None,
    }
    keep = {t: params for t in targets}
    if not params.select or len(val) < 10 or len(fit) < 50:
        reason = "off" if not params.select else "too little data"
        return Selection(keep, {t: f"given ({reason})" for t in targets}, {}, window)
    chosen_params, chosen, scores = {}, {}, {}
    frozen = None
    if copies is not None and len(copies) and tables is not None:
        frozen = frozen_frame(*tables, val["session_id"], val["start_time"].min())
        frozen[list(targets)] = val[list(targets)].to_numpy()
    for t in targets:
        few_rooms = 0 < len(identity_vocab(fit, (t,))) <= MAX_IDENTITY_ROOMS
        cands = stage_one(params)
        tried = {name: _score(fit, val, t, cand) for name, cand in cands}
        first = min(tried, key=tried.__getitem__)
        more = stage_two(dict(cands)[first], identity=few_rooms)
        tried.update({name: _score(fit, val, t, cand) for name, cand in more})
        best = min(tried, key=tried.__getitem__)
        if frozen is not None:
            plain = dict(cands + more)[best]
            ahead = plain.model_copy(update={"ahead": True})
            more = [*more, (f"{best}+ahead", ahead)]
            y = frozen[t].to_numpy(dtype=float)
            now = _predict(fit, frozen, t, plain)
            then = _predict(with_copies(fit, copies), frozen, t, ahead)
            if now is not None and then is not None:
                tried[f"{best} (ahead)"] = wape(y[np.isfinite(y)], now[np.isfinite(y)])
                tried[f"{best}+ahead (ahead)"] = wape(y[np.isfinite(y)], then[np.isfinite(y)])
                if tried[f"{best}+ahead (ahead)"] < tried[f"{best} (ahead)"]:
                    best = f"{best}+ahead"
        chosen_params[t] = dict(cands + more)[best]
        chosen[t] = best
        scores[t] = {k: round(v, 6) for k, v in tried.items()}
    return Selection(chosen_params, chosen, scores, window)
