"""Model tier, behavioural: forecasts stay within what the data supports.

Random plans anywhere within the contract's bounds (durations from minutes to a day, budgets
up to the contract's maximum, a thousand lotteries), for every room of the simulated data and
for rooms never seen, starting from the end of the history to three years past it (festival
days included): P50 stays within a factor of 10 of the room's recent median (the median of its
last 20 sessions, computed here from the data, not from the model's columns), scaled down for a
plan shorter than the room's usual duration; an unknown room stays within the largest session
of the training data. Plus the arithmetic of :func:`training.models.hold_to_level`.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from features.contract import MAX_DURATION_MIN, MAX_MONEY
from features.plan import SessionPlan, example_plan
from serving.fastpath import PlanScorer
from training.bundle import load_bundle
from training.models import LEVEL_FACTOR, hold_to_level

TZ = "Asia/Shanghai"
TARGETS = ("viewers", "orders", "gmv")
FESTIVAL_DAYS = ("06-18", "08-18", "11-11", "12-12")


@pytest.fixture(scope="module")
def scorer(service_models) -> PlanScorer:
    return PlanScorer(load_bundle(service_models.bundle), tz=TZ, num_threads=1)


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _random_plans(history: pd.DataFrame, rooms: list[str], n: int, seed: int) -> list[SessionPlan]:
    rng = np.random.default_rng(seed)
    origin = history["start_time"].max().tz_convert(TZ)
    base = example_plan()
    plans = []
    for i in range(n):
        if i % 4 == 0:  # a festival day in one of the next three years
            day = FESTIVAL_DAYS[i % len(FESTIVAL_DAYS)]
            start = pd.Timestamp(f"{origin.year + 1 + i % 3}-{day} 20:00", tz=TZ)
        else:
            start = (origin + timedelta(days=float(rng.uniform(0, 3 * 365)))).floor("15min")
        update = {
            "room_id": rooms[i % len(rooms)],
            "session_id": f"bound-{i}",
            "start_time": start.to_pydatetime(),
            "planned_duration_min": _log_uniform(rng, 5, MAX_DURATION_MIN),
            "session_type": str(rng.choice(["daily", "festival_promo", "brand_collab", "other"])),
            "warmup_videos": int(rng.integers(0, 1001)),
            "community_pushes": int(rng.integers(0, 1001)),
            "paid_promo_budget": _log_uniform(rng, 1, MAX_MONEY) if rng.random() < 0.8 else 0.0,
            "lottery_count": int(rng.integers(0, 1001)),
            "red_envelope_count": int(rng.integers(0, 1001)),
            "flash_sale_rounds": int(rng.integers(0, 1001)),
            "coupon_value": _log_uniform(rng, 1, 1e6) if rng.random() < 0.5 else 0.0,
        }
        plans.append(base.model_copy(update=update))
    return plans


def test_forecasts_stay_within_ten_times_the_rooms_recent_median(scorer):
    history = scorer.bundle.history_sessions.sort_values("start_time")
    rooms = sorted(history["room_id"].astype(str).unique())
    plans = _random_plans(history, rooms, 400, seed=0)
    answers = scorer.score(plans, drivers=False)
    done = history.dropna(subset=list(TARGETS))
    last20 = done.groupby("room_id").tail(20).groupby("room_id")[list(TARGETS)]
    recent = last20.median()
    # the level the model holds to: the median in log1p space (for 20 values, the middle
    # pair's geometric mean, at most their arithmetic mean)
    level = np.expm1(last20.agg(lambda v: np.nanmedian(np.log1p(v.to_numpy(float)))))
    usual = history.groupby("room_id")["planned_duration_min"].median()
    held = 0
    for plan, answer in zip(plans, answers, strict=True):
        shorter = min(1.0, plan.planned_duration_min / usual[plan.room_id])
        for t in TARGETS:
            median = recent.loc[plan.room_id, t]
            p10, p50, p90 = (answer[t][q] for q in ("p10", "p50", "p90"))
            top = LEVEL_FACTOR * max(median, 1.0)
            assert p50 <= top * (1 + 1e-9), (plan.room_id, t, p50)
            assert p50 >= median / LEVEL_FACTOR * shorter * (1 - 1e-9), (plan.room_id, t, p50)
            assert 0 <= p10 <= p50 <= p90 and np.isfinite(p90)
            if t in answer["held"]:  # the answer says so, and sits on a bound
                held += 1
                own = level.loc[plan.room_id, t]
                assert p50 == pytest.approx(LEVEL_FACTOR * max(own, 1.0)) or p50 < own
    assert held > 0  # random plans do reach past the rooms' range: the hold is exercised


def test_a_room_never_seen_stays_within_the_largest_training_session(scorer):
    history = scorer.bundle.history_sessions
    plans = _random_plans(history, ["room-never-seen"], 120, seed=1)
    answers = scorer.score(plans, drivers=False)
    assert all(a["cold_start"] for a in answers)
    for t in TARGETS:
        largest = float(history[t].max())
        assert max(a[t]["p50"] for a in answers) <= largest * (1 + 1e-9), t


def test_hold_to_level_moves_the_interval_with_its_median():
    out = {
        "gmv_p10": np.array([50.0, 5_000.0, 0.0, 10.0, 10.0]),
        "gmv_p50": np.array([100.0, 50_000.0, 0.0, 20.0, 9e9]),
        "gmv_p90": np.array([200.0, 90_000.0, 0.0, 40.0, 1e10]),
    }
    level = np.log1p(np.array([1_000.0, 1_000.0, 1_000.0, 1_000.0, np.nan]))
    ratio = np.array([1.0, 1.0, 2.0, 0.01, np.nan])
    hold_to_level(out, {"gmv": level, "duration_ratio": ratio}, {"gmv": 1e6})
    # inside the range: untouched
    assert out["gmv_p50"][0] == 100.0 and out["gmv_p10"][0] == 50.0
    # above 10x the level: the whole interval scaled by the same factor
    assert out["gmv_p50"][1] == pytest.approx(10_000.0)
    assert out["gmv_p10"][1] == pytest.approx(1_000.0)
    assert out["gmv_p90"][1] == pytest.approx(18_000.0)
    # a zero forecast of a usual-length session is lifted to a tenth of the level
    assert out["gmv_p50"][2] == pytest.approx(100.0)
    assert out["gmv_p10"][2] == 0.0 and out["gmv_p90"][2] == pytest.approx(100.0)
    # a plan a hundredth of the room's usual length may sit far lower
    assert out["gmv_p50"][3] == 20.0
    # a room without history: the largest training value
    assert out["gmv_p50"][4] == pytest.approx(1e6)
    assert out["gmv_p10"][4] <= out["gmv_p50"][4] <= out["gmv_p90"][4]
