"""``predict``: score draft plans with a bundle (used by the CLI, the service and notebooks)."""

from __future__ import annotations

from typing import Any

from features.plan import SessionPlan
from features.sessions import plan_features
from training.bundle import Bundle


def score_plans(
    bundle: Bundle, plans: list[SessionPlan], *, drivers: bool = True, num_threads: int = 0
) -> list[dict[str, Any]]:
    """Forecast each plan: P10 / P50 / P90 per target, derived rates, cold-start flag, drivers."""
    frame = plan_features(plans, bundle.history_sessions, bundle.history_products)
    fc = bundle.forecaster
    pred = fc.predict(frame, num_threads=num_threads)
    explained = fc.explain(frame, num_threads=num_threads) if drivers else [None] * len(plans)
    out = []
    for i, plan in enumerate(plans):
        row = pred.iloc[i]
        item: dict[str, Any] = {
            "session_id": plan.plan_id(i),
            "room_id": plan.room_id,
            "cold_start": bool(row["cold_start"]),
        }
        for target in fc.models:
            item[target] = {q: float(row[f"{target}_{q}"]) for q in ("p10", "p50", "p90")}
        if "conversion_p50" in row:
            item["conversion"] = float(row["conversion_p50"])
        if "aov_p50" in row:
            item["aov"] = float(row["aov_p50"])
        item["sources"] = {t: m.source for t, m in fc.models.items()}
        item["held"] = [t for t in fc.models if bool(row.get(f"{t}_held", False))]
        if explained[i] is not None:
            item["explanation"] = explained[i]
        item["model"] = {
            "train_id": fc.metadata.get("train_id"),
            "bundle": bundle.path.name,
        }
        out.append(item)
    return out
