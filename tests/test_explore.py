"""Data tier: the exploration tables answer the questions correctly on histories with a known
answer (simulated sessions whose outcomes are rewritten by a rule), and reject bad requests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import explore
from features.sessions import HOUR_BANDS, hour_band_code, product_mix_summary, slot_features
from features.simulate import simulate


@pytest.fixture(scope="module")
def year():
    """Three rooms over a whole year (every festival window is in it)."""
    return simulate(seed=3, rooms=3, days=365, fans=0)


def _with_gmv(sessions: pd.DataFrame, gmv: np.ndarray) -> pd.DataFrame:
    out = sessions.copy()
    out["gmv"] = gmv
    return out


def test_session_outcomes_derives_rates_and_skips_unfinished_sessions(year):
    s = year.sessions.head(4).copy()
    s.loc[s.index[0], "gmv"] = np.nan  # a planned session: no outcome yet
    s.loc[s.index[1], "viewers"] = 0.0
    out = explore.session_outcomes(s)
    assert list(out.index) == list(s.index[1:])
    assert np.isnan(out.loc[s.index[1], "conversion"])
    row = s.loc[s.index[2]]
    assert out.loc[s.index[2], "conversion"] == pytest.approx(row["orders"] / row["viewers"])
    assert out.loc[s.index[2], "aov"] == pytest.approx(row["gmv"] / row["orders"])
    with pytest.raises(ValueError, match="gmv"):
        explore.session_outcomes(s.drop(columns="gmv"))


def test_relative_to_room_divides_by_the_room_median():
    values = pd.Series([100.0, 200.0, 300.0, 10.0, 30.0, np.nan])
    rooms = pd.Series(["a", "a", "a", "b", "b", "b"])
    rel = explore.relative_to_room(values, rooms)
    np.testing.assert_allclose(rel.to_numpy()[:5], [0.5, 1.0, 1.5, 0.5, 1.5])
    assert np.isnan(rel.iloc[5])


def test_best_slot_is_the_band_that_sells_twice_as_much(year):
    s = year.sessions
    prime = HOUR_BANDS.index("prime")
    gmv = np.where(hour_band_code(s["start_time"]) == prime, 200.0, 100.0)
    table = explore.slot_table(_with_gmv(s, gmv), "gmv")
    assert list(table["hour_band"].cat.categories) == list(HOUR_BANDS)
    prime_rows = table[table["hour_band"] == "prime"]
    other_rows = table[table["hour_band"] != "prime"]
    assert (prime_rows["mean"] == 200.0).all() and (other_rows["mean"] == 100.0).all()
    assert table.groupby("room_id")["n"].sum().sum() == len(s)
    best = explore.best_slots(_with_gmv(s, gmv), "gmv", min_sessions=3)
    assert set(best["room_id"]) == set(s["room_id"])
    assert (best["best_slot"] == "prime").all()
    assert (best["vs_typical_slot"] >= 1.0).all()
    # a slot with too few sessions never wins
    assert explore.best_slots(_with_gmv(s, gmv), "gmv", min_sessions=10**6).empty


def test_weekday_slots_follow_the_local_calendar(year):
    s = year.sessions
    weekday = slot_features(s)["slot__weekday"].to_numpy()
    table = explore.slot_table(_with_gmv(s, np.where(weekday == 5, 300.0, 100.0)), slot="weekday")
    means = table.groupby("weekday", observed=True)["mean"].max()
    assert means["Sat"] == 300.0 and means.drop("Sat").eq(100.0).all()


def test_festival_uplift_recovers_a_planted_double_eleven_effect(year):
    s = year.sessions
    d11 = slot_features(s)["slot__in_window_d11"].to_numpy() == 1.0
    assert d11.any()
    table = explore.festival_uplift(_with_gmv(s, np.where(d11, 300.0, 100.0))).set_index("festival")
    assert table.loc["d11", "uplift"] == pytest.approx(3.0)
    assert table.loc["d11", "n"] == d11.sum()
    others = table.drop(index="d11")["uplift"].dropna()
    assert len(others) > 0 and np.allclose(others, 1.0)


def test_festival_uplift_on_the_simulator_shows_double_eleven_and_the_spring_lull(year):
    table = explore.festival_uplift(year.sessions, "gmv").set_index("festival")
    assert table.loc["d11", "uplift"] > 1.5
    assert table.loc["spring", "uplift"] < 1.0


def test_promo_conversion_pools_orders_over_viewers_per_level(year):
    s = year.sessions.copy()
    s["viewers"] = 1000.0
    s["orders"] = np.where(s["lottery_count"] > 0, 20.0, 10.0)
    table = explore.promo_conversion(s, year.session_products)
    lot = table[table["mechanic"] == "lottery_count"].set_index("level")
    assert list(lot.index) == [
        lv for lv in explore.PROMO_LEVELS["lottery_count"][1] if lv in lot.index
    ]
    assert lot.loc["0", "mean"] == pytest.approx(0.01)
    np.testing.assert_allclose(lot.drop(index="0")["mean"], 0.02)
    assert lot.loc["0", "relative"] < lot.drop(index="0")["relative"].min()
    assert lot["n"].sum() == len(s)
    assert set(table["mechanic"]) == set(explore.PROMO_LEVELS)


def test_mix_gmv_rises_with_assortment_when_gmv_does(year):
    s, p = year.sessions, year.session_products
    n_skus = product_mix_summary(p)["n_skus"].reindex(s["session_id"]).to_numpy()
    table = explore.mix_gmv(_with_gmv(s, 50.0 * n_skus), p)
    skus = table[table["mix"] == "n_skus"]
    assert skus["mean"].is_monotonic_increasing and len(skus) >= 2
    assert set(table["mix"]) == set(explore.MIX_LEVELS)


def test_bad_requests_are_named(year):
    with pytest.raises(ValueError, match="unknown metric 'revenue'"):
        explore.slot_table(year.sessions, "revenue")
    with pytest.raises(ValueError, match="unknown slot 'minute'"):
        explore.slot_table(year.sessions, slot="minute")
    with pytest.raises(ValueError, match="min_sessions"):
        explore.best_slots(year.sessions, min_sessions=0)
