"""Fast per-request scoring of draft plans: the same feature functions, no per-call history work.

:func:`features.sessions.plan_features` recomputes the room-history statistics from the whole
history snapshot on every call, and a pandas frame in ``Booster.predict`` costs about 100x a
numpy row. :class:`PlanScorer` builds the history state once at load time
(:func:`features.sessions.plan_context`, the same statistics functions) and at request time
calls ``plan_features(plans, context=...)`` (the same code, hence exactly the same rows), then
predicts on a numpy matrix (category codes of the bundle's saved vocabulary; an unseen category
is rejected by :func:`features.sessions.apply_vocab`, never read as missing).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from features.contract import DEFAULT_TZ
from features.plan import SessionPlan, example_plan
from features.sessions import apply_vocab, plan_context, plan_features
from training.bundle import Bundle


class PlanScorer:
    """Scores :class:`~features.plan.SessionPlan` lists with a loaded bundle."""

    def __init__(self, bundle: Bundle, *, tz: str = DEFAULT_TZ, num_threads: int = 0) -> None:
        self.bundle = bundle
        self.forecaster = bundle.forecaster
        self.num_threads = num_threads
        self.context = plan_context(bundle.history_sessions, bundle.history_products, tz=tz)
        self.features = list(self.forecaster.features)
        self.vocab = {k: v for k, v in self.forecaster.vocab.items() if k in self.features}
        meta = bundle.metadata
        self.model_info: dict[str, Any] = {
            "name": "livecast-forecaster",
            "bundle": bundle.path.name,
            "train_id": meta.get("train_id"),
            "trained_until": meta.get("trained_until"),
            "versions": {str(k): str(v) for k, v in (meta.get("versions") or {}).items()},
        }
        self.known_rooms = frozenset(bundle.history_sessions["room_id"].astype(str))

    # ------------------------------------------------------------------ features and matrix

    def frame(self, plans: list[SessionPlan]) -> pd.DataFrame:
        """The feature rows of ``plans``: ``plan_features`` with the prebuilt history state."""
        return plan_features(plans, context=self.context)

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The model input as float64 numpy: features in training order, categoricals as codes
        of the saved vocabulary (missing -> NaN). Unknown categories raise."""
        X = apply_vocab(frame[self.features], self.vocab)
        cols = []
        for c in self.features:
            col = X[c]
            if isinstance(col.dtype, pd.CategoricalDtype):
                codes = col.cat.codes.to_numpy().astype(np.float64)
                codes[codes < 0] = np.nan
                cols.append(codes)
            else:
                cols.append(col.to_numpy(dtype=np.float64))
        return np.ascontiguousarray(np.column_stack(cols))

    # ------------------------------------------------------------------ scoring

    def score(self, plans: list[SessionPlan], *, drivers: bool = True) -> list[dict[str, Any]]:
        """One dict per plan in the :class:`~serving.schemas.PlanForecast` shape."""
        frame = self.frame(plans)
        X = self.matrix(frame)
        fc = self.forecaster
        pred = fc.predict(frame, num_threads=self.num_threads, X=X)
        explained = (
            fc.explain(frame, num_threads=self.num_threads, X=X) if drivers else [None] * len(plans)
        )
        targets = list(fc.models)
        q = {t: pred[[f"{t}_p10", f"{t}_p50", f"{t}_p90"]].to_numpy(dtype=float) for t in targets}
        conv = pred["conversion_p50"].to_numpy(dtype=float)
        aov = pred["aov_p50"].to_numpy(dtype=float)
        cold = pred["cold_start"].to_numpy(dtype=bool)
        out = []
        for i, plan in enumerate(plans):
            item: dict[str, Any] = {
                "session_id": plan.plan_id(i),
                "room_id": plan.room_id,
                "cold_start": bool(cold[i]),
            }
            for t in targets:
                row = q[t][i]
                item[t] = {"p10": float(row[0]), "p50": float(row[1]), "p90": float(row[2])}
            item["conversion"] = float(conv[i])
            item["aov"] = float(aov[i])
            if explained[i] is not None:
                item["explanation"] = _explanation(explained[i])
            out.append(item)
        return out

    def warm_up(self) -> None:
        """Score a plan of a known room and a cold-start plan once (caches, allocations)."""
        room = next(iter(sorted(self.known_rooms)), "room-000")
        plan = example_plan().model_copy(update={"room_id": room})
        cold = plan.model_copy(update={"room_id": "__warm-up-new-room__", "session_id": "cold"})
        self.score([plan, cold], drivers=True)
        self.score([plan], drivers=False)


def _explanation(e: dict[str, Any]) -> dict[str, Any]:
    fams = e["families"]
    return {
        "target": "gmv",
        "baseline": e["baseline"],
        "families": fams,
        "multipliers": {k: float(np.exp(v)) for k, v in fams.items()},
        "drivers": e["drivers"],
    }
