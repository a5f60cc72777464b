"""Model tier, behavioural: the time since a room's last session alone never moves a forecast
much (a plan scored weeks or years after the history ends reads the history as it was)."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from features.plan import example_plan
from serving.fastpath import PlanScorer
from training.bundle import load_bundle

TZ = "Asia/Shanghai"


@pytest.fixture(scope="module")
def scorer(service_models) -> PlanScorer:
    return PlanScorer(load_bundle(service_models.bundle), tz=TZ, num_threads=1)


def _day(history: pd.DataFrame, days: float) -> pd.Timestamp:
    last = history["start_time"].max().tz_convert(TZ)
    return (last + pd.Timedelta(days=days)).floor("15min")


@pytest.mark.parametrize("gap_days", [56, 364, 1092])
def test_the_gap_since_the_last_session_alone_moves_no_driver_past_x1_5(scorer, gap_days):
    """The same plan, one day after the room's last session and ``gap_days`` + 1 days after it
    (the whole history moved back, weekdays kept): only gap-aware features differ, and no
    family of drivers, nor the forecast, changes by more than x1.5."""
    bundle = scorer.bundle
    history = bundle.history_sessions
    moved = history.copy()
    for col in moved.columns:
        if pd.api.types.is_datetime64_any_dtype(moved[col]):
            moved[col] = moved[col] - pd.Timedelta(days=gap_days)
    later = PlanScorer(dataclasses.replace(bundle, history_sessions=moved), tz=TZ, num_threads=1)
    start = _day(history, 1).replace(hour=20, minute=0)
    plans = [
        example_plan().model_copy(update={"room_id": r, "start_time": start.to_pydatetime()})
        for r in sorted(history["room_id"].astype(str).unique())
    ]
    near, far = scorer.frame(plans), later.frame(plans)
    differ = {c for c in near.columns if not near[c].equals(far[c])}
    assert differ == {"room__days_since_last"}
    for a, b in zip(scorer.score(plans), later.score(plans), strict=True):
        for fam, mult in a["explanation"]["multipliers"].items():
            ratio = b["explanation"]["multipliers"][fam] / mult
            assert 1 / 1.5 <= ratio <= 1.5, (a["room_id"], fam, ratio)
        for target in ("viewers", "orders", "gmv"):
            ratio = b[target]["p50"] / a[target]["p50"]
            assert 1 / 1.5 <= ratio <= 1.5, (a["room_id"], target, ratio)
