"""Compare, suggest and review: response builders over a :class:`~serving.fastpath.PlanScorer`.

Pure functions (no HTTP): the service calls them, and so can a notebook. Every request is scored
in one batch call of the scorer; the suggest search scores all its candidates without drivers
in that one call, then explains only the top k.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from features.plan import SessionPlan
from serving.fastpath import PlanScorer
from serving.schemas import (
    PROMO_FIELDS,
    PROMO_ON_DEFAULTS,
    Actuals,
    CompareResponse,
    Delta,
    Differences,
    ReviewResponse,
    SearchSpace,
    SuggestResponse,
    Variant,
)

_DIFF_KEYS: tuple[str, ...] = ("viewers", "orders", "gmv", "conversion", "aov")


def _p50(item: dict[str, Any], key: str) -> float:
    value = item[key]
    return float(value["p50"] if isinstance(value, dict) else value)


def delta(base: float, value: float) -> Delta:
    ratio = value / base if base > 0 else None
    return Delta(base=base, value=value, delta=value - base, ratio=ratio)


def differences(base: dict[str, Any], other: dict[str, Any]) -> Differences:
    return Differences(**{k: delta(_p50(base, k), _p50(other, k)) for k in _DIFF_KEYS})


def _with_ids(plans: list[SessionPlan], prefix: str) -> list[SessionPlan]:
    """Copies with unique internal ids (the feature code keys plans by id)."""
    return [p.model_copy(update={"session_id": f"{prefix}{i}"}) for i, p in enumerate(plans)]


def _restore(item: dict[str, Any], plan: SessionPlan, index: int) -> dict[str, Any]:
    return {**item, "session_id": plan.plan_id(index)}


def compare_payload(
    scorer: PlanScorer, base: SessionPlan, variants: list[Variant], *, drivers: bool = True
) -> CompareResponse:
    plans = [base, *(v.plan for v in variants)]
    items = scorer.score(_with_ids(plans, "__compare-"), drivers=drivers)
    items = [_restore(it, p, i) for i, (it, p) in enumerate(zip(items, plans, strict=True))]
    base_item = items[0]
    return CompareResponse(
        base=base_item,
        variants=[
            {"name": v.name, "forecast": it, "differences": differences(base_item, it)}
            for v, it in zip(variants, items[1:], strict=True)
        ],
        model=scorer.model_info,
    )


def candidates(base: SessionPlan, space: SearchSpace) -> list[tuple[SessionPlan, dict[str, Any]]]:
    """Every variant of ``base`` in ``space`` (the base itself included) with its changes.

    Start hours keep the base's date, minutes and UTC offset. A mechanic switched on keeps the
    base plan's value when it uses one, else :data:`~serving.schemas.PROMO_ON_DEFAULTS`.
    """
    axes: list[list[dict[str, Any]]] = []
    if space.start_hour is not None:
        axes.append(
            [{"start_time": base.start_time.replace(hour=h)} for h in space.start_hour.values()]
        )
    if space.duration_min is not None:
        axes.append([{"planned_duration_min": d} for d in space.duration_min.values()])
    for mech in dict.fromkeys(space.promos):
        field = PROMO_FIELDS[mech]
        current = getattr(base, field)
        on = current if current > 0 else type(current)(PROMO_ON_DEFAULTS[mech])
        axes.append([{field: type(current)(0)}, {field: on}])
    if space.paid_promo_budget:
        budgets = dict.fromkeys(space.paid_promo_budget)
        axes.append([{"paid_promo_budget": float(b)} for b in budgets])
    out = []
    seen: set[tuple] = set()
    for combo in itertools.product(*axes):
        update: dict[str, Any] = {}
        for part in combo:
            update.update(part)
        key = tuple(sorted((k, str(v)) for k, v in update.items()))
        if key in seen:
            continue
        seen.add(key)
        changes = {
            k: (v.isoformat() if k == "start_time" else v)
            for k, v in update.items()
            if getattr(base, k) != v
        }
        out.append((base.model_copy(update=update), changes))
    return out


def suggest_payload(
    scorer: PlanScorer,
    base: SessionPlan,
    space: SearchSpace,
    *,
    objective: str = "gmv",
    top_k: int = 5,
    drivers: bool = True,
) -> SuggestResponse:
    cands = candidates(base, space)
    plans = [base] + [c for c, _ in cands]
    # one batch predict for the base and every candidate, no drivers
    items = scorer.score(_with_ids(plans, "__suggest-"), drivers=False)
    base_item = _restore(items[0], base, 0)
    scores = [_p50(it, objective) for it in items[1:]]
    order = sorted(range(len(cands)), key=lambda i: (-scores[i], i))[:top_k]
    top = [cands[i][0] for i in order]
    if drivers and top:
        top_items = scorer.score(_with_ids(top, "__top-"), drivers=True)
    else:
        top_items = [items[1 + i] for i in order]
    keep_id = base.session_id
    suggestions = []
    for rank, (i, it) in enumerate(zip(order, top_items, strict=True), start=1):
        plan = cands[i][0].model_copy(update={"session_id": keep_id})
        suggestions.append(
            {
                "rank": rank,
                "changes": cands[i][1],
                "plan": plan,
                "forecast": _restore(it, plan, 0),
                "gain": delta(_p50(base_item, objective), scores[i]),
            }
        )
    return SuggestResponse(
        objective=objective,
        n_candidates=len(cands),
        base=base_item,
        suggestions=suggestions,
        model=scorer.model_info,
    )


def review_payload(scorer: PlanScorer, plan: SessionPlan, actual: Actuals) -> ReviewResponse:
    item = scorer.score([plan], drivers=True)[0]
    rows = []
    for target in ("viewers", "orders", "gmv"):
        q = item[target]
        value = float(getattr(actual, target))
        err = value - q["p50"]
        position = "below" if value < q["p10"] else "above" if value > q["p90"] else "within"
        rows.append(
            {
                "target": target,
                "forecast": q,
                "actual": value,
                "error": err,
                "abs_pct_error": abs(err) / value if value > 0 else None,
                "log_ratio": math.log1p(value) - math.log1p(q["p50"]),
                "position": position,
            }
        )
    fams = item["explanation"]["families"]
    leaned = sorted(fams.items(), key=lambda kv: -abs(kv[1]))
    return ReviewResponse(
        forecast=item,
        review=rows,
        leaned_on=[{"family": f, "contribution": c, "multiplier": math.exp(c)} for f, c in leaned],
        model=scorer.model_info,
    )
