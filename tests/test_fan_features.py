"""Fan features and tier labels on tiny hand-built histories whose values are known by hand."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from features.contract import validate
from features.fans import (
    FEATURE_COLUMNS,
    TIERS,
    TierRules,
    assign_tiers,
    current_tiers,
    fan_features,
    fan_features_sql,
    tier_labels,
)
from tests.conftest import shared_file

TZ = "Asia/Shanghai"
CUTOFF = "2024-06-01"  # midnight in Asia/Shanghai


def _event(fan, when, kind, *, room="r1", session=None, watch=None, amount=None):
    return {
        "fan_id": fan,
        "room_id": room,
        "session_id": session,
        "event_time": when,
        "event_type": kind,
        "watch_seconds": watch,
        "amount": amount,
    }


def _frame(rows: list[dict]) -> pd.DataFrame:
    return validate(pd.DataFrame(rows), "fan_events", tz=TZ)


def _feature_fan() -> list[dict]:
    """One fan with a history whose features are worked out in test_features_by_hand."""
    return [
        _event("x", "2024-05-31 12:00", "order", amount=100.5),  # 0.5 days before the cutoff
        _event("x", "2024-05-20 00:00", "watch", watch=600),  # 12 days
        _event("x", "2024-05-20 00:10", "comment"),  # 12 days - 10 min: same 24 h as the watch
        _event("x", "2024-04-01 00:00", "watch", watch=300, room="r2"),  # 61 days
        _event("x", "2024-02-25 00:00", "refund", amount=50.0),  # 97 days
        _event("x", "2024-02-20 00:00", "order", amount=50.0),  # 102 days (2024 is a leap year)
        _event("x", "2023-12-01 00:00", "like"),  # 183 days: first event
        # at or after the cutoff: never seen by the features
        _event("x", "2024-06-01 00:00", "order", amount=999.0),
        _event("x", "2024-06-01 00:30", "watch", watch=10),
        _event("y", "2024-05-01 00:00", "like"),  # a fan who never ordered nor watched
    ]


def test_features_by_hand():
    feats = fan_features(_frame(_feature_fan()), CUTOFF, tz=TZ).set_index("fan_id")
    x = feats.loc["x"]
    expected = {
        "fan__days_since_last_event": 0.5,
        "fan__days_since_last_order": 0.5,
        "fan__days_since_last_watch": 12.0,
        "fan__tenure_days": 183.0,
        "fan__events_all": 7.0,
        "fan__orders_30d": 1.0,
        "fan__orders_90d": 1.0,
        "fan__orders_all": 2.0,
        "fan__watch_sessions_30d": 1.0,
        "fan__watch_sessions_90d": 2.0,
        "fan__watch_sessions_all": 2.0,
        "fan__active_days_30d": 1.0,  # watch and comment fall in the same 24 hours
        "fan__active_days_90d": 2.0,
        "fan__order_amount_30d": 100.5,
        "fan__order_amount_90d": 100.5,
        "fan__order_amount_all": 150.5,
        "fan__mean_order_value": 75.25,
        "fan__refunds_all": 1.0,
        "fan__refund_rate": 0.5,
        "fan__watch_seconds_30d": 600.0,
        "fan__watch_seconds_90d": 900.0,
        "fan__comments_all": 1.0,
        "fan__likes_all": 1.0,
        "fan__shares_all": 0.0,
        "fan__follows_all": 0.0,
        # 1 watch in the last 30 days, 1 in days 30..89 (0.5 per 30 days): (1+1)/(0.5+1)
        "fan__watch_trend": 4 / 3,
        # 1 order in the last 30 days, none in days 30..89 (the older one is 102 days back)
        "fan__order_trend": 2.0,
        # rhythm: orders 102 and 0.5 days back (day indices 101 and 0)
        "fan__days_since_first_order": 102.0,
        "fan__order_gap_mean": 101.5,
        "fan__order_day_spread": np.std([101, 0], ddof=1),
        "fan__order_gap_ratio": 0.5 / 101.5,
        "fan__spend_trend": (100.5 + 1) / (0 / 2 + 1),
        "fan__visit_gap_mean": 49.0,  # watches 61 and 12 days back
        "fan__visit_gap_ratio": 12 / 49,
        "fan__active_day_share_90d": 2 / 90,
    }
    for name, value in expected.items():
        assert x[name] == pytest.approx(value), name
    y = feats.loc["y"]
    assert y["fan__days_since_last_event"] == pytest.approx(31.0)
    for never in ("fan__days_since_last_order", "fan__days_since_last_watch"):
        assert np.isnan(y[never]), never
    assert np.isnan(y["fan__mean_order_value"]) and np.isnan(y["fan__refund_rate"])
    assert y["fan__orders_all"] == 0.0 and y["fan__events_all"] == 1.0
    assert y["fan__watch_trend"] == 1.0 and y["fan__order_trend"] == 1.0  # (0+1)/(0+1)


def test_order_rhythm():
    rows = [
        _event("z", "2024-05-30 04:48", "order", amount=10.0),  # 1.8 days back: day 1
        _event("z", "2024-05-30 12:00", "order", amount=5.0),  # 1.5 days back: day 1 again
        _event("z", "2024-05-21 00:00", "order", amount=20.0),  # 11 days back: day 10
        _event("z", "2024-05-01 00:00", "order", amount=7.0),  # 31 days back: day 30
        _event("z", "2024-04-25 00:00", "watch", watch=60),  # a watch before the first order
    ]
    z = fan_features(_frame(rows), CUTOFF, tz=TZ).set_index("fan_id").loc["z"]
    assert z["fan__orders_all"] == 4.0
    assert z["fan__days_since_first_order"] == pytest.approx(31.0)
    assert z["fan__order_gap_mean"] == pytest.approx((31.0 - 1.5) / 3)
    assert z["fan__order_day_spread"] == pytest.approx(np.std([1, 1, 10, 30], ddof=1))
    assert z["fan__order_gap_ratio"] == pytest.approx(1.5 / ((31.0 - 1.5) / 3))
    assert z["fan__tenure_days"] == pytest.approx(37.0)  # the watch came first
    assert np.isnan(z["fan__visit_gap_mean"]) and np.isnan(z["fan__visit_gap_ratio"])
    # one order: no gap, no spread
    one = fan_features(_frame(rows[3:]), CUTOFF, tz=TZ).set_index("fan_id").loc["z"]
    for name in ("fan__order_gap_mean", "fan__order_day_spread", "fan__order_gap_ratio"):
        assert np.isnan(one[name]), name


def test_output_shape_and_types():
    rows = [
        *_feature_fan(),
        _event("a", "2024-05-30", "share"),
        _event("late", "2024-07-01", "like"),
    ]
    feats = fan_features(_frame(rows), CUTOFF, tz=TZ)
    assert list(feats.columns) == ["fan_id", *FEATURE_COLUMNS]
    assert all(c.startswith("fan__") for c in FEATURE_COLUMNS)
    assert list(feats["fan_id"]) == ["a", "x", "y"]  # sorted; "late" has no event before the cutoff
    assert (feats[list(FEATURE_COLUMNS)].dtypes == "float64").all()
    empty = fan_features(_frame(rows), "2020-01-01", tz=TZ)
    assert empty.empty and list(empty.columns) == ["fan_id", *FEATURE_COLUMNS]


def test_events_at_or_after_cutoff_never_change_features():
    base = _frame(_feature_fan())
    rng = np.random.default_rng(1)
    n = 200
    later = pd.DataFrame(
        {
            "fan_id": rng.choice(["x", "y", "z"], n),
            "room_id": rng.choice(["r1", "r9"], n),
            "event_time": pd.Timestamp("2024-06-01", tz=TZ)  # the first one exactly at the cutoff
            + pd.to_timedelta(np.r_[0, rng.integers(0, 90 * 86400, n - 1)], unit="s"),
            "event_type": rng.choice(["watch", "order", "like", "refund"], n),
            "watch_seconds": rng.uniform(0, 3000, n),
            "amount": rng.uniform(1, 500, n),
        }
    )
    polluted = pd.concat([base, validate(later, "fan_events", tz=TZ)], ignore_index=True)
    pd.testing.assert_frame_equal(
        fan_features(base, CUTOFF, tz=TZ), fan_features(polluted, CUTOFF, tz=TZ)
    )


def test_date_cutoff_means_local_midnight_and_tz_is_explicit():
    rows = [
        _event("a", "2024-05-31 23:00", "watch", watch=60),  # 1 hour before local midnight
        _event("a", "2024-06-01 00:30", "order", amount=10.0),  # after local midnight
    ]
    ev = _frame(rows)
    local = fan_features(ev, "2024-06-01", tz=TZ)
    assert local["fan__orders_all"].tolist() == [0.0]
    assert local["fan__days_since_last_event"].iloc[0] == pytest.approx(1 / 24)
    aware = fan_features(ev, pd.Timestamp("2024-06-01", tz=TZ), tz=TZ)
    pd.testing.assert_frame_equal(local, aware)
    # the same date read in UTC is 8 hours later: the 00:30 (+08:00) order is then included
    utc = fan_features(ev, "2024-06-01", tz="UTC")
    assert utc["fan__orders_all"].tolist() == [1.0]
    assert utc["fan__days_since_last_order"].iloc[0] == pytest.approx(7.5 / 24)


def test_naive_times_are_read_in_the_given_timezone():
    aware = _frame(_feature_fan())
    naive = aware.assign(event_time=aware["event_time"].dt.tz_localize(None))
    pd.testing.assert_frame_equal(
        fan_features(aware, CUTOFF, tz=TZ), fan_features(naive, CUTOFF, tz=TZ)
    )


def test_dataframe_and_parquet_folder_give_identical_results(tmp_path):
    ev = _frame([*_feature_fan(), *_tier_histories()])
    folder = tmp_path / "events"
    folder.mkdir()
    half = len(ev) // 2
    ev.iloc[:half].to_parquet(folder / "part-0.parquet", index=False)
    ev.iloc[half:].to_parquet(folder / "part-1.parquet", index=False)
    pd.testing.assert_frame_equal(
        fan_features(ev, CUTOFF, tz=TZ), fan_features(folder, CUTOFF, tz=TZ)
    )
    with pytest.raises(FileNotFoundError, match="literal"):  # a path, never a glob pattern
        fan_features(str(folder / "part-*.parquet"), CUTOFF)
    pd.testing.assert_frame_equal(tier_labels(ev, CUTOFF), tier_labels(folder, CUTOFF))


def test_sql_text_runs_as_is_on_a_plain_connection(tmp_path):
    ev = _frame([*_feature_fan(), *_tier_histories()])
    ev.to_parquet(tmp_path / "events.parquet", index=False)
    sql = fan_features_sql(f"read_parquet('{tmp_path / 'events.parquet'}')", CUTOFF, tz=TZ)
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'America/New_York'")  # the session zone must not matter
        direct = con.sql(sql).to_arrow_table().to_pandas()
    pd.testing.assert_frame_equal(direct, fan_features(ev, CUTOFF, tz=TZ))


def test_fan_ids_restrict_the_output():
    ev = _frame([*_feature_fan(), *_tier_histories()])
    full = fan_features(ev, CUTOFF, tz=TZ)
    some = fan_features(ev, CUTOFF, tz=TZ, fan_ids=["x", "core", "nobody"])
    assert some["fan_id"].tolist() == ["core", "x"]
    pd.testing.assert_frame_equal(
        some, full[full["fan_id"].isin(["x", "core"])].reset_index(drop=True)
    )


def test_missing_columns_are_named():
    ev = _frame(_feature_fan()).drop(columns=["event_type", "fan_id"])
    with pytest.raises(ValueError, match=r"fan_id, event_type"):
        fan_features(ev, CUTOFF)
    no_time_type = _frame(_feature_fan()).assign(event_time="2024-05-01")
    with pytest.raises(ValueError, match="event_time"):
        fan_features(no_time_type, CUTOFF)
    with pytest.raises(FileNotFoundError):
        fan_features("no/such/folder", CUTOFF)


def test_missing_optional_columns_count_as_zero():
    ev = _frame(_feature_fan())
    bare = ev[["fan_id", "room_id", "event_time", "event_type"]]
    feats = fan_features(bare, CUTOFF, tz=TZ).set_index("fan_id")
    assert feats.loc["x", "fan__orders_all"] == 2.0
    assert feats.loc["x", "fan__order_amount_all"] == 0.0
    assert feats.loc["x", "fan__watch_seconds_90d"] == 0.0


# ----------------------------------------------------------------------------------------------
# tiers


def _tier_histories() -> list[dict]:
    """Four fans whose tier in June (the label window) and in May (current) are known."""
    return [
        # core: 3 orders totalling 600 in June; in May two watches only (potential)
        _event("core", "2024-05-10 20:00", "watch", watch=300),
        _event("core", "2024-05-12 20:00", "watch", watch=300),
        _event("core", "2024-06-05 20:00", "order", amount=150.0),
        _event("core", "2024-06-10 20:00", "order", amount=250.0),
        _event("core", "2024-06-20 20:00", "order", amount=200.0),
        # active: watches on 6 different June days, no orders; in May nothing (dormant)
        _event("active", "2024-01-10 20:00", "like"),
        *[_event("active", f"2024-06-{d:02d} 20:00", "watch", watch=100) for d in range(2, 8)],
        # potential: one June order; in May watches on 5 days (active)
        *[_event("potential", f"2024-05-{d:02d} 21:00", "watch", watch=50) for d in range(20, 25)],
        _event("potential", "2024-06-15 12:00", "order", amount=35.0),
        # dormant: nothing in June; in May 2 orders worth 450 (core)
        _event("dormant", "2024-05-10 10:00", "order", amount=200.0),
        _event("dormant", "2024-05-20 10:00", "order", amount=250.0),
        # only after the cutoff: not a fan yet at the cutoff, so no row
        _event("newcomer", "2024-06-03 10:00", "order", amount=80.0),
    ]


def test_tier_labels_from_the_window_after_the_cutoff():
    labels = tier_labels(_frame(_tier_histories()), CUTOFF, TierRules(), tz=TZ)
    assert labels["tier"].dtype == "category"
    assert list(labels["tier"].cat.categories) == list(TIERS)
    got = dict(zip(labels["fan_id"], labels["tier"].astype(str), strict=True))
    assert got == {
        "active": "active",
        "core": "core",
        "dormant": "dormant",
        "potential": "potential",
    }


def test_current_tiers_use_the_window_before_the_cutoff():
    current = current_tiers(_frame(_tier_histories()), CUTOFF, TierRules(), tz=TZ)
    got = dict(zip(current["fan_id"], current["tier"].astype(str), strict=True))
    assert got == {
        "active": "dormant",
        "core": "potential",
        "dormant": "core",
        "potential": "active",
    }


def test_window_length_comes_from_the_rules():
    # with a 7-day window only the core fan's first June order (on the 5th) is inside
    labels = tier_labels(_frame(_tier_histories()), CUTOFF, TierRules(window_days=7), tz=TZ)
    got = dict(zip(labels["fan_id"], labels["tier"].astype(str), strict=True))
    assert got["core"] == "potential" and got["active"] == "active"


def test_rule_thresholds_are_inclusive_and_ordered():
    rules = TierRules()
    window = pd.DataFrame(
        {
            "orders": [2, 2, 2, 0, 0, 1, 0, 0, 0],
            "spend": [300.0, 299.99, 10.0, 0, 0, 5.0, 0, 0, 0],
            "watch_sessions": [0, 0, 8, 0, 4, 0, 1, 2, 0],
            "active_days": [0, 0, 0, 4, 3, 0, 1, 1, 0],
            "interactions": [0, 0, 8, 4, 4, 0, 1, 2, 0],
        }
    )
    tiers = assign_tiers(window, rules).astype(str).tolist()
    assert tiers == [
        "core",  # repeat buyer at exactly the spend threshold
        "active",  # repeat buyer just below it
        "core",  # repeat buyer with low spend but 8 watch sessions
        "active",  # 4 active days, no order
        "potential",  # 3 active days
        "potential",  # a single order
        "dormant",  # one interaction is not meaningful activity
        "potential",  # two are
        "dormant",
    ]
    with pytest.raises(ValueError, match="interactions"):
        assign_tiers(window.drop(columns=["interactions"]), rules)


def test_purchase_only_history_degrades_to_rfm_tiers():
    rows = [
        _event("big", "2024-05-01", "order", amount=10.0),
        _event("big", "2024-06-03", "order", amount=200.0),
        _event("big", "2024-06-09", "order", amount=150.0),
        _event("small", "2024-05-01", "order", amount=10.0),
        _event("small", "2024-06-03", "order", amount=20.0),
        _event("small", "2024-06-13", "order", amount=25.0),
        _event("once", "2024-05-01", "order", amount=10.0),
        _event("once", "2024-06-13", "order", amount=500.0),
        _event("gone", "2024-05-01", "order", amount=10.0),
        _event("gone", "2024-05-02", "refund", amount=10.0),
    ]
    labels = tier_labels(_frame(rows), CUTOFF, TierRules(), tz=TZ)
    got = dict(zip(labels["fan_id"], labels["tier"].astype(str), strict=True))
    assert got == {"big": "core", "small": "active", "once": "potential", "gone": "dormant"}
    feats = fan_features(_frame(rows), CUTOFF, tz=TZ).set_index("fan_id")
    assert np.isnan(feats["fan__days_since_last_watch"]).all()
    assert (feats["fan__active_days_90d"] == 0).all()


def test_rules_reject_unknown_or_bad_settings():
    with pytest.raises(ValueError):
        TierRules(window_days=0)
    with pytest.raises(ValueError):
        TierRules(core_min_spnd=100)  # typo: extra fields are forbidden
    with pytest.raises(ValueError):
        TierRules().window_days = 7  # frozen


@pytest.mark.shared
def test_cdnow_purchase_log_tiers_match_an_independent_count():
    path = shared_file("cdnow", "CDNOW_master.txt")
    raw = pd.read_csv(path, sep=r"\s+", dtype={"customer_id": str})
    events = validate(
        pd.DataFrame(
            {
                "fan_id": raw["customer_id"],
                "room_id": "cdnow",
                "event_time": pd.to_datetime(raw["date"].astype(str), format="%Y%m%d"),
                "event_type": "order",
                "amount": raw["dollar_value"].astype(float),
            }
        ),
        "fan_events",
        tz=TZ,
    )
    rules = TierRules(window_days=90, core_min_spend=100.0)
    cutoff = pd.Timestamp("1997-10-01", tz=TZ)
    labels = tier_labels(events, cutoff, rules, tz=TZ).set_index("fan_id")["tier"]

    # the documented purchase-only rules, counted independently with pandas
    t = events["event_time"]
    known = events.loc[t < cutoff, "fan_id"].unique()
    win = events[(t >= cutoff) & (t < cutoff + pd.Timedelta(days=90))]
    per = win.groupby("fan_id")["amount"].agg(["size", "sum"]).reindex(known, fill_value=0)
    expect = np.where(
        (per["size"] >= 2) & (per["sum"] >= 100.0),
        "core",
        np.where(per["size"] >= 2, "active", np.where(per["size"] == 1, "potential", "dormant")),
    )
    expect = pd.Series(expect, index=per.index).sort_index()
    assert len(labels) == len(known) == 23_570  # every CDNOW customer joined by 1997-03-31
    assert (labels.astype(str) == expect.reindex(labels.index)).all()
    shares = labels.value_counts(normalize=True)
    assert shares["dormant"] > 0.6  # most CDNOW customers never come back
    assert min(shares[t] for t in TIERS) > 0
