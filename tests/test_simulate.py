"""The simulator: determinism, contract, integrity, consistency and the effects planners expect."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.calendar import in_window
from features.contract import validate
from features.simulate import SIGMA_VIEWERS, simulate, summarize

SMALL = {"rooms": 6, "days": 150, "fans": 2000, "start": "2024-05-01"}  # covers 618


@pytest.fixture(scope="module")
def ds():
    return simulate(seed=0, **SMALL)


@pytest.fixture(scope="module")
def joined(ds):
    return ds.sessions.merge(ds.truth, on="session_id", validate="one_to_one")


def _local_date(times: pd.Series) -> pd.Series:
    return times.dt.tz_localize(None).dt.normalize()


def _relative_to_room(s: pd.DataFrame, col: str) -> pd.Series:
    """``col`` divided by the room's median, so that room size does not confound comparisons."""
    return s[col] / s.groupby("room_id")[col].transform("median")


def test_same_seed_same_frames_other_seed_other_frames(ds):
    again = simulate(seed=0, **SMALL)
    for name in ("sessions", "session_products", "fan_events", "truth"):
        pd.testing.assert_frame_equal(getattr(ds, name), getattr(again, name))
    other = simulate(seed=1, **SMALL)
    assert not ds.sessions["session_id"].equals(other.sessions["session_id"])
    assert not np.allclose(
        ds.truth["expected_viewers"].iloc[:50], other.truth["expected_viewers"].iloc[:50]
    )


def test_every_table_passes_the_contract(ds):
    for table in ("sessions", "session_products", "fan_events"):
        frame = getattr(ds, table)
        assert len(frame) > 0
        validate(frame, table)  # raises ContractError on any failure
    s = ds.sessions
    assert str(s["start_time"].dt.tz) == "Asia/Shanghai"
    plan_cols = ["followers_at_start", "planned_duration_min", "warmup_videos", "discount_depth"]
    assert s[plan_cols].notna().all().all()
    assert s["session_id"].is_unique
    assert set(ds.truth.columns) == {
        "session_id",
        "expected_viewers",
        "expected_orders",
        "expected_gmv",
    }
    assert ds.truth["session_id"].equals(s["session_id"].reset_index(drop=True))


def test_products_and_events_reference_real_sessions_of_their_room(ds):
    s = ds.sessions.set_index("session_id")
    p, e = ds.session_products, ds.fan_events
    assert p["session_id"].isin(s.index).all()
    assert e["session_id"].isin(s.index).all()
    assert (e["room_id"].to_numpy() == s.loc[e["session_id"], "room_id"].to_numpy()).all()
    sess = s.loc[e["session_id"]].reset_index(drop=True)
    start = sess["start_time"]
    end = start + pd.to_timedelta(sess["actual_duration_min"], unit="min")
    t = e["event_time"].reset_index(drop=True)
    live = (e["event_type"] != "refund").to_numpy()
    assert ((t >= start) & (t <= end))[live].all()
    assert (t[~live] > end[~live]).all()  # refunds come after the session
    watch = e["event_type"] == "watch"
    assert (e.loc[watch, "watch_seconds"] > 0).all()
    assert e.loc[~watch, "watch_seconds"].isna().all()
    money = e["event_type"].isin(["order", "refund"])
    assert (e.loc[money, "amount"] > 0).all() and e.loc[~money, "amount"].isna().all()


def test_outcomes_are_consistent(ds):
    s = ds.sessions.set_index("session_id")
    p = ds.session_products
    assert (s["buyers"] <= s["orders"]).all()
    assert (s["orders"] <= s["viewers"]).all()
    assert (s["peak_concurrent"] <= s["viewers"]).all()
    assert (s["avg_dwell_seconds"] <= s["actual_duration_min"] * 60).all()
    assert (p["units_sold"] <= p["stock"]).all()
    assert (p["live_price"] <= p["list_price"]).all()
    assert np.allclose(p["gmv"], p["units_sold"] * p["live_price"], atol=0.01)
    by_session = p.groupby("session_id").agg(
        gmv=("gmv", "sum"),
        units=("units_sold", "sum"),
        lo=("live_price", "min"),
        hi=("live_price", "max"),
        n=("sku_id", "size"),
        disc=("live_price", "size"),
    )
    by_session["disc"] = (1 - p["live_price"] / p["list_price"]).groupby(p["session_id"]).mean()
    by_session = by_session.reindex(s.index)
    assert np.allclose(by_session["gmv"], s["gmv"], rtol=1e-9, atol=0.05)
    assert by_session["n"].between(3, 60).all()
    assert np.allclose(by_session["disc"], s["discount_depth"], atol=1e-3)
    sold = s["orders"] > 0
    aov = s.loc[sold, "gmv"] / s.loc[sold, "orders"]
    # an order buys one or a few units at the session's live prices
    assert (s.loc[sold, "orders"] <= by_session.loc[sold, "units"]).all()
    assert (aov >= by_session.loc[sold, "lo"] * 0.999).all()
    assert (aov <= by_session.loc[sold, "hi"] * 3).all()


def test_prime_time_draws_more_viewers_than_mornings(joined):
    hour = joined["start_time"].dt.hour
    rel = _relative_to_room(joined, "viewers")
    prime = rel[(hour >= 19) & (hour < 22)]
    early = rel[hour < 11]
    assert len(prime) > 50 and len(early) > 20
    assert prime.mean() > 1.2 * early.mean()


def test_618_window_sells_more_than_ordinary_days(joined):
    day = _local_date(joined["start_time"])
    f618 = in_window(day, "f618")
    ordinary = ~(f618 | in_window(day, "mid_autumn"))
    rel = _relative_to_room(joined, "gmv")
    assert f618.sum() > 30
    assert rel[f618].mean() > 2 * rel[ordinary].mean()
    # and planners label most of those sessions as festival promos with festival titles
    promo = joined["session_type"] == "festival_promo"
    assert promo[f618].mean() > 5 * promo[ordinary].mean()
    assert (
        joined.loc[f618 & (joined["session_type"] == "festival_promo"), "title"]
        .str.contains("618")
        .mean()
        > 0.5
    )


def test_spring_festival_lull_has_fewer_sessions_and_lower_conversion():
    s = simulate(seed=2, rooms=10, days=120, fans=0, start="2024-01-01").sessions
    day = _local_date(s["start_time"])
    lull = in_window(day, "spring")
    per_day = s.groupby(day).size().reindex(pd.date_range("2024-01-01", periods=120), fill_value=0)
    lull_days = in_window(pd.Series(per_day.index), "spring")
    assert per_day[lull_days].mean() < 0.75 * per_day[~lull_days].mean()
    conv = s["orders"] / s["viewers"]
    assert conv[lull].median() < 0.85 * conv[~lull].median()


def test_noise_is_calibrated_and_plans_vary_more_than_noise(joined):
    log_ratio = np.log(joined["viewers"] / joined["expected_viewers"])
    assert abs(log_ratio.std() - SIGMA_VIEWERS) < 0.04
    assert abs(log_ratio.mean() + SIGMA_VIEWERS**2 / 2) < 0.04  # mean-one noise
    spread = np.log(joined["expected_viewers"]).groupby(joined["room_id"]).std().mean()
    assert spread > 1.5 * SIGMA_VIEWERS


def test_truth_matches_realised_totals():
    # medium size (no fans): the sums are dominated by the largest rooms, so small data is noisy
    ds = simulate(seed=4, rooms=20, days=365, fans=0)
    s = ds.sessions.merge(ds.truth, on="session_id")
    assert len(s) > 4000
    for real, expected in (
        ("viewers", "expected_viewers"),
        ("orders", "expected_orders"),
        ("gmv", "expected_gmv"),
    ):
        assert s[real].sum() / s[expected].sum() == pytest.approx(1.0, abs=0.05)


def test_fans_have_a_mix_of_tiers(ds):
    e = ds.fan_events
    fans = e["fan_id"].nunique()
    assert fans > 0.9 * SMALL["fans"]
    assert 10 < len(e) / fans < 100
    assert set(e["event_type"]) == {
        "watch",
        "comment",
        "like",
        "share",
        "follow",
        "order",
        "refund",
    }
    lo = e["event_time"].max().normalize() - pd.Timedelta(days=30)
    window = e[e["event_time"] >= lo]
    seen_before = set(e.loc[e["event_time"] < lo, "fan_id"])
    dormant = len(seen_before - set(window["fan_id"]))
    orders = window.loc[window["event_type"] == "order"].groupby("fan_id").size()
    repeat = int((orders >= 2).sum())
    assert 0 < repeat < dormant
    assert window["fan_id"].nunique() < fans  # not everybody is active in any month
    # order amounts follow the room's basket size
    o = e[e["event_type"] == "order"].merge(
        ds.sessions[["session_id", "gmv", "orders"]], on="session_id"
    )
    aov = o["gmv"] / o["orders"]
    assert 0.5 < (o["amount"] / aov).median() < 1.5


def test_summary_reports_the_dataset(ds):
    summary = summarize(ds)
    assert summary["rooms"] == ds.sessions["room_id"].nunique() == SMALL["rooms"]
    assert summary["sessions"] == len(ds.sessions)
    assert summary["product rows"] == len(ds.session_products)
    assert summary["fan events"] == len(ds.fan_events)
    assert summary["total GMV (CNY)"] == pytest.approx(ds.sessions["gmv"].sum())
    assert summary["first session"] >= SMALL["start"]
