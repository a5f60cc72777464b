"""Fast per-request scoring of draft plans: the same feature functions, no per-request frames.

Every feature is defined once in :mod:`features.sessions` as a function from session inputs and
history state to numpy columns (:func:`features.sessions.session_columns`). Training wraps
those columns in a DataFrame; :class:`PlanScorer` builds the history state once at load time
(:func:`features.sessions.plan_context`), reads each request's plans column-wise straight from
their pydantic models (:func:`features.sessions.plan_columns`: one pass over the plans) and
predicts on a numpy matrix (:func:`features.sessions.model_matrix`: category codes of the
bundle's saved vocabulary; an unseen category is rejected, never read as missing). A pandas
frame in ``Booster.predict`` costs about 100x a numpy row, and pandas / pandera work per
request dominated the latency.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from features.contract import DEFAULT_TZ
from features.plan import SessionPlan, example_plan
from features.sessions import (
    model_matrix,
    plan_columns,
    plan_context,
    plan_features,
)
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
        """The model input of a feature frame as float64 numpy (:func:`model_matrix`):
        features in training order, categoricals as codes of the saved vocabulary."""
        cols = {
            c: frame[c].astype(object).to_numpy() if c in self.vocab else frame[c].to_numpy(float)
            for c in self.features
        }
        return model_matrix(cols, self.features, self.vocab)

    # ------------------------------------------------------------------ scoring

    def score(self, plans: list[SessionPlan], *, drivers: bool = True) -> list[dict[str, Any]]:
        """One dict per plan in the :class:`~serving.schemas.PlanForecast` shape.

        Column-wise end to end: the plans are read in one pass (:func:`plan_columns`), and the
        answers are built from the prediction arrays read once as lists, not per plan."""
        inputs, cols = plan_columns(plans, self.context)
        X = model_matrix(cols, self.features, self.vocab)
        fc = self.forecaster
        cold = cols["room__n_prior"] == 0
        pred = fc.predict_columns(X, cold, num_threads=self.num_threads)
        explained: list[dict[str, Any] | None] = [None] * len(plans)
        if drivers:
            explained = [
                *fc.explain_columns(X, lambda r, f: cols[f][r], num_threads=self.num_threads)
            ]
        targets = list(fc.models)
        sources = {t: fc.models[t].source for t in targets}
        quantiles = [
            (t, pred[f"{t}_p10"].tolist(), pred[f"{t}_p50"].tolist(), pred[f"{t}_p90"].tolist())
            for t in targets
        ]
        out = []
        for i, (sid, room, is_cold, conversion, aov, explanation) in enumerate(
            zip(
                inputs.session_id.tolist(),
                inputs.room_id.tolist(),
                cold.tolist(),
                pred["conversion_p50"].tolist(),
                pred["aov_p50"].tolist(),
                explained,
                strict=True,
            )
        ):
            item: dict[str, Any] = {"session_id": sid, "room_id": room, "cold_start": is_cold}
            for t, p10, p50, p90 in quantiles:
                item[t] = {"p10": p10[i], "p50": p50[i], "p90": p90[i]}
            item["conversion"] = conversion
            item["aov"] = aov
            item["sources"] = dict(sources)
            if explanation is not None:
                item["explanation"] = _explanation(explanation)
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
