"""Origin copies: each session again, from the room history frozen at a forecast origin before
it (what a plan scored ahead sees). Leak-free, seeded, and a candidate of the model choice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.sessions import snapshot_session_features
from training.data import (
    MAX_LEAD_DAYS,
    ORIGIN_STEP_DAYS,
    origin_copies,
    with_copies,
)
from training.models import ForecastParams, fit_forecaster
from training.selection import select_params


@pytest.fixture(scope="module")
def tables(small_dataset):
    return small_dataset.sessions, small_dataset.session_products


@pytest.fixture(scope="module")
def copies(tables):
    return origin_copies(*tables)


def test_copies_have_the_training_frames_columns_and_labels(tables, copies, small_frame):
    sessions, _ = tables
    assert list(copies.columns) == list(small_frame.columns)
    assert copies["session_id"].is_unique
    assert 0.8 * len(sessions) < len(copies) <= len(sessions)  # all but the first two weeks
    own = small_frame.set_index("session_id").loc[copies["session_id"]]
    for col in ("start_time", "viewers", "gmv", "slot__duration_min", "promo__n_mechanics"):
        assert (copies[col].to_numpy() == own[col].to_numpy()).all(), col
    # the history is older: fewer earlier sessions counted, a longer gap since the last one
    assert (copies["room__n_prior"].to_numpy() <= own["room__n_prior"].to_numpy()).all()
    assert (copies["room__n_prior"].to_numpy() < own["room__n_prior"].to_numpy()).mean() > 0.5


def test_each_copy_is_the_snapshot_at_an_origin_1h_to_60_days_before_it(tables, copies):
    sessions, products = tables
    first = sessions["start_time"].min().tz_convert("UTC").floor("D")
    rng = np.random.default_rng(0)
    for i in rng.choice(len(copies), 6, replace=False):
        row = copies.iloc[i]
        start = row["start_time"]
        # find the grid origin whose snapshot reproduces the copy
        grid = [first + k * pd.Timedelta(days=ORIGIN_STEP_DAYS) for k in range(2, 200)]
        reach = [o for o in grid if start - pd.Timedelta(days=MAX_LEAD_DAYS) <= o]
        reach = [o for o in reach if o <= start - pd.Timedelta(hours=1)]
        assert reach, start
        matches = []
        for o in reach:
            hist = sessions[sessions["start_time"] < o]
            one = sessions[sessions["session_id"] == row["session_id"]]
            snap = snapshot_session_features(
                one,
                products[products["session_id"] == row["session_id"]],
                hist,
                products[products["session_id"].isin(set(hist["session_id"]))],
            ).iloc[0]
            cols = [c for c in snap.index if c.startswith("room__")]
            if snap[cols].astype(object).equals(row[cols].astype(object)):
                matches.append(o)
        assert matches, row["session_id"]


def test_copies_are_seeded_and_never_read_later_outcomes(tables, copies):
    sessions, products = tables
    again = origin_copies(sessions, products)
    pd.testing.assert_frame_equal(copies, again)
    other = origin_copies(sessions, products, seed=1)
    assert not other["room__n_prior"].equals(copies["room__n_prior"])
    # outcomes of sessions after a cut changed: the copies of sessions before it are the same
    cut = sessions["start_time"].quantile(0.6)
    altered = sessions.copy()
    later = altered["start_time"] >= cut
    altered.loc[later, ["viewers", "orders", "gmv"]] = (
        altered.loc[later, ["viewers", "orders", "gmv"]].to_numpy() * 7.0
    )
    changed = origin_copies(altered, products)
    early = copies["start_time"] < cut
    features = [c for c in copies.columns if "__" in c]
    pd.testing.assert_frame_equal(
        copies.loc[early, features].reset_index(drop=True),
        changed.loc[changed["start_time"] < cut, features].reset_index(drop=True),
    )


def test_with_copies_adds_only_the_training_windows_copies_in_time_order(small_frame, copies):
    train = small_frame[small_frame["start_time"] < small_frame["start_time"].quantile(0.5)]
    both = with_copies(train, copies)
    assert set(both["session_id"]) == set(train["session_id"])
    assert len(both) == len(train) + copies["session_id"].isin(set(train["session_id"])).sum()
    assert both["start_time"].is_monotonic_increasing
    assert with_copies(train, None) is train


def test_ahead_needs_copies_and_is_a_candidate_of_the_model_choice(small_frame, copies, tables):
    params = ForecastParams(max_rounds=30, num_threads=1, ahead=True, select=False)
    with pytest.raises(ValueError, match="origin copies"):
        fit_forecaster(small_frame, params)
    fitted = fit_forecaster(small_frame, params, copies=copies)
    assert set(fitted.models) == {"viewers", "orders", "gmv"}
    before = small_frame["start_time"].max() - pd.Timedelta(days=30)
    params = ForecastParams(max_rounds=30, num_threads=1)

    def choose(**extra):
        return select_params(
            small_frame, params, before=before, horizon_days=30, targets=("gmv",), **extra
        )

    sel = choose(copies=copies, tables=tables)
    scores = sel.scores["gmv"]
    ahead = [n for n in scores if n.endswith("+ahead (ahead)")]
    assert len(ahead) == 1  # the best so far, with and without the copies, scored ahead
    without = ahead[0].replace("+ahead (ahead)", " (ahead)")
    assert sel.params["gmv"].ahead == (scores[ahead[0]] < scores[without])
    assert sel.chosen["gmv"].endswith("+ahead") == sel.params["gmv"].ahead
    assert not any("ahead" in name for name in choose().scores["gmv"])  # no copies given
