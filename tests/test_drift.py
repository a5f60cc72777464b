"""Drift of the plan inputs: the training summary a bundle carries, and the PSI of the latest
plans against it (stable for plans like the training sessions, drifted for shifted ones)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from training.drift import DRIFT_INPUTS, MISSING, drift_reference, input_drift, psi


def _frame(n: int, seed: int, scale: float = 1.0, festival: float = 0.1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    types = np.where(rng.random(n) < festival, "festival_promo", "daily")
    return pd.DataFrame(
        {
            "slot__duration_min": rng.choice([60.0, 120.0, 180.0, 240.0], n) * scale,
            "topic__session_type": pd.Categorical(types),
            "warmup__paid_promo_budget": np.where(rng.random(n) < 0.4, 0.0, rng.lognormal(7, 1, n)),
            "mix__mean_live_price": np.where(rng.random(n) < 0.2, np.nan, rng.lognormal(5, 0.5, n)),
            "room__viewers_mean_5": rng.lognormal(9, 1, n),  # history: not a plan input
        }
    )


def test_the_reference_summarises_the_plan_inputs_only_and_is_json():
    ref = drift_reference(_frame(2000, 0))
    assert set(ref) == {
        "slot__duration_min", "topic__session_type", "warmup__paid_promo_budget",
        "mix__mean_live_price",
    }  # fmt: skip
    assert set(ref) <= set(DRIFT_INPUTS)
    assert json.loads(json.dumps(ref)) == ref
    price = ref["mix__mean_live_price"]
    assert len(price["shares"]) == len(price["edges"]) + 2  # bins, then missing
    assert sum(price["shares"]) == pytest.approx(1.0)
    assert price["shares"][-1] == pytest.approx(0.2, abs=0.03)  # the missing share
    # a discrete input keeps each value in one bin: four durations, four edges at most
    assert len(ref["slot__duration_min"]["edges"]) <= 4
    assert ref["topic__session_type"]["shares"]["daily"] == pytest.approx(0.9, abs=0.03)


def test_plans_like_the_training_sessions_are_stable():
    ref = drift_reference(_frame(3000, 0))
    out = input_drift(ref, _frame(300, 1)).set_index("feature")
    assert (out["status"] == "stable").all(), out
    assert (out["psi"] < 0.1).all()


def test_shifted_plans_are_flagged_where_they_moved():
    ref = drift_reference(_frame(3000, 0))
    recent = _frame(300, 1, scale=3.0, festival=0.8)
    out = input_drift(ref, recent).set_index("feature")
    assert out.loc["slot__duration_min", "status"] == "drifted"
    assert out.loc["slot__duration_min", "recent_median"] == pytest.approx(
        3 * out.loc["slot__duration_min", "train_median"]
    )
    assert out.loc["topic__session_type", "status"] == "drifted"
    assert out.loc["topic__session_type", "top_shift"] in {"festival_promo", "daily"}
    assert out.loc["warmup__paid_promo_budget", "status"] == "stable"


def test_unseen_categories_missing_values_and_few_plans():
    ref = drift_reference(_frame(3000, 0))
    recent = _frame(100, 2)
    recent["topic__session_type"] = "brand_collab"  # never in training
    recent["mix__mean_live_price"] = np.nan  # products no longer listed
    out = input_drift(ref, recent).set_index("feature")
    assert out.loc["topic__session_type", "status"] == "drifted"
    assert out.loc["topic__session_type", "recent_share"] == 1.0
    assert out.loc["mix__mean_live_price", "status"] == "drifted"
    assert out.loc["mix__mean_live_price", "top_shift"] == MISSING
    few = input_drift(ref, recent.head(10))
    assert (few["status"] == "too few plans").all() and few["psi"].isna().all()


def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift():
    base = np.array([0.25, 0.25, 0.25, 0.25])
    assert psi(base, base) == 0.0
    small = psi(base, np.array([0.3, 0.2, 0.25, 0.25]))
    large = psi(base, np.array([0.7, 0.1, 0.1, 0.1]))
    assert 0 < small < 0.1 < 0.25 < large
    assert np.isfinite(psi(base, np.array([1.0, 0.0, 0.0, 0.0])))  # empty bins are floored


def test_a_fitted_forecaster_carries_the_reference(small_frame):
    from training.models import ForecastParams, fit_forecaster

    fc = fit_forecaster(small_frame, ForecastParams(max_rounds=10, num_threads=1, select=False))
    ref = fc.metadata["drift_reference"]
    assert set(ref) == set(DRIFT_INPUTS)
    assert ref["slot__duration_min"]["median"] == pytest.approx(
        small_frame["slot__duration_min"].median()
    )
    same = input_drift(ref, small_frame.sample(200, random_state=0))
    assert (same["status"] != "drifted").all(), same
