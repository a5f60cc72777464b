"""Session features: no leakage, one definition for history and plans, families, vocabularies,
cold start, and hand-computed values on tiny frames."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from features.contract import CATEGORIES, PLATFORMS, SESSION_OUTCOMES, SESSION_TYPES, validate
from features.plan import ProductLine, ProductMix, SessionPlan, plans_to_frames
from features.sessions import (
    CATEGORICAL_VOCAB,
    FAMILIES,
    IDENTITY_COLUMN,
    LEVEL_COLUMNS,
    UnknownCategoryError,
    apply_vocab,
    build_session_features,
    cold_start,
    feature_columns,
    feature_families,
    origin_session_features,
    plan_features,
    product_mix_summary,
    snapshot_session_features,
)

TZ = "Asia/Shanghai"
SHANGHAI = timezone(timedelta(hours=8))


def _session(sid: str, room: str, start: str, **values: object) -> dict[str, object]:
    row: dict[str, object] = {
        "session_id": sid,
        "room_id": room,
        "platform": "douyin",
        "host_id": room,
        "start_time": pd.Timestamp(start, tz=TZ),
        "planned_duration_min": 120.0,
        "session_type": "daily",
        "title": "日常直播",
        "followers_at_start": 10_000.0,
        "viewers": 1_000.0,
        "gmv": 20_000.0,
        "orders": 100.0,
        "avg_dwell_seconds": 60.0,
    }
    row.update(values)
    return row


def _tables(
    sessions: list[dict[str, object]], products: list[dict[str, object]] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Contract-valid (sessions, session_products) frames from row dicts."""
    s = validate(pd.DataFrame(sessions), "sessions")
    products = [{"is_new_launch": False, **row} for row in products or []]
    p = pd.DataFrame(
        products
        or {
            "session_id": pd.Series(dtype="str"),
            "sku_id": pd.Series(dtype="str"),
            "category": pd.Series(dtype="str"),
            "list_price": pd.Series(dtype="float64"),
            "live_price": pd.Series(dtype="float64"),
            "is_new_launch": pd.Series(dtype="bool"),
        }
    )
    return s, validate(p, "session_products")


def _random_tables(n: int = 300, rooms: int = 6, seed: int = 0) -> tuple[pd.DataFrame, ...]:
    """Random contract-valid sessions (with start-time ties and missing outcomes) and SKUs."""
    rng = np.random.default_rng(seed)
    room = rng.integers(0, rooms, n)
    # 4-hour grid over ~100 days: several sessions of one room share a start time
    start = pd.Timestamp("2025-05-01", tz=TZ) + pd.to_timedelta(
        rng.integers(0, 600, n) * 4, unit="h"
    )
    viewers = rng.lognormal(8, 1, n).round()
    s = pd.DataFrame(
        {
            "session_id": [f"s{i:04d}" for i in range(n)],
            "room_id": [f"room-{r}" for r in room],
            "platform": np.array(PLATFORMS)[room % len(PLATFORMS)],
            # some hosts stated, some not (the room id): a separate stream keeps the rest as is
            "host_id": [
                f"room-{r}" if k == 0 else f"host-{r}-{k}"
                for r, k in zip(
                    room, np.random.default_rng(seed + 1000).integers(0, 3, n), strict=True
                )
            ],
            "start_time": start,
            "planned_duration_min": rng.choice([60.0, 120.0, 180.0, 240.0], n),
            "session_type": rng.choice(SESSION_TYPES, n),
            "title": rng.choice(["618 大促", "福利秒杀", None, "新品首发 品牌专场", "清仓"], n),
            "followers_at_start": np.where(rng.random(n) < 0.2, np.nan, rng.integers(1, 10**6, n)),
            "warmup_videos": rng.integers(0, 6, n).astype(float),
            "community_pushes": rng.integers(0, 4, n).astype(float),
            "paid_promo_budget": rng.integers(0, 5_000, n).astype(float),
            "lottery_count": rng.integers(0, 5, n).astype(float),
            "red_envelope_count": rng.integers(0, 3, n).astype(float),
            "flash_sale_rounds": rng.integers(0, 4, n).astype(float),
            "coupon_value": rng.choice([0.0, 10.0, 20.0], n),
            "discount_depth": np.where(rng.random(n) < 0.5, np.nan, rng.uniform(0, 0.5, n)),
            "viewers": np.where(rng.random(n) < 0.1, np.nan, viewers),
            "gmv": (viewers * rng.uniform(1, 40, n)).round(2),
            "orders": (viewers * rng.uniform(0.005, 0.05, n)).round(),
            "avg_dwell_seconds": rng.uniform(20, 200, n).round(1),
            "new_followers": rng.integers(0, 500, n).astype(float),
        }
    )
    k = rng.integers(0, 5, n)  # some sessions have no SKU rows
    sid = np.repeat(s["session_id"].to_numpy(), k)
    lst = rng.uniform(10, 900, len(sid)).round(2)
    p = pd.DataFrame(
        {
            "session_id": sid,
            "sku_id": [f"sku-{i}" for i in range(len(sid))],
            "category": rng.choice(CATEGORIES, len(sid)),
            "list_price": lst,
            "live_price": (lst * rng.uniform(0.5, 1.0, len(sid))).round(2),
            "stock": rng.integers(10, 1000, len(sid)).astype(float),
            "is_new_launch": rng.random(len(sid)) < 0.2,
            "units_sold": rng.integers(0, 100, len(sid)).astype(float),
            "gmv": rng.uniform(0, 10_000, len(sid)),
        }
    )
    return validate(s, "sessions"), validate(p, "session_products")


def _plan(**update: object) -> SessionPlan:
    base: dict[str, object] = {
        "room_id": "room-1",
        "platform": "kuaishou",
        "start_time": datetime(2025, 6, 20, 20, 0, tzinfo=SHANGHAI),
        "planned_duration_min": 150,
        "session_type": "fan_welfare",
        "title": "宠粉福利 秒杀",
        "lottery_count": 2,
        "coupon_value": 15,
        "products": [
            ProductLine(sku_id="a", category="food", list_price=100, live_price=80, stock=50),
            ProductLine(sku_id="b", category="food", list_price=40, live_price=30, stock=20),
            ProductLine(
                sku_id="c",
                category="home",
                list_price=600,
                live_price=450,
                stock=5,
                is_new_launch=True,
            ),
        ],
    }
    base.update(update)
    return SessionPlan.model_validate(base)


# --------------------------------------------------------------------------- leakage


def test_later_sessions_altered_or_removed_leave_earlier_features_identical():
    sessions, products = _random_tables()
    rng = np.random.default_rng(1)
    cut = sessions["start_time"].quantile(0.5)
    later = sessions["start_time"] >= cut
    altered = sessions.copy()
    for col in SESSION_OUTCOMES:
        values = altered.loc[later, col].to_numpy(dtype=float)
        noisy = values * rng.uniform(0.1, 10.0, len(values))
        noisy[rng.random(len(values)) < 0.2] = np.nan
        altered.loc[later, col] = noisy
    dropped = altered.loc[later, "session_id"].sample(frac=0.3, random_state=2)
    altered = altered[~altered["session_id"].isin(dropped)]
    altered_products = products[~products["session_id"].isin(dropped)].copy()
    altered_products["units_sold"] = altered_products["units_sold"] * 3

    before = build_session_features(sessions, products)
    after = build_session_features(altered, altered_products)
    early_before = before[before["start_time"] < cut].reset_index(drop=True)
    early_after = after[after["start_time"] < cut].reset_index(drop=True)
    assert len(early_before) > 100
    pd.testing.assert_frame_equal(early_before, early_after, check_exact=True)
    # the alteration is visible after the cut: the test can fail
    late_ids = before.loc[before["start_time"] >= cut, "session_id"]
    late_after = after[after["session_id"].isin(late_ids)].set_index("session_id")
    late_before = before.set_index("session_id").loc[late_after.index]
    assert not np.allclose(
        late_before["room__viewers_mean_5"], late_after["room__viewers_mean_5"], equal_nan=True
    )


def test_a_sessions_own_outcomes_never_change_its_features():
    sessions, products = _random_tables(n=200, seed=3)
    base = build_session_features(sessions, products).set_index("session_id")
    rng = np.random.default_rng(4)
    changed_somewhere = False
    for sid in rng.choice(sessions["session_id"].to_numpy(), 8, replace=False):
        altered = sessions.copy()
        mask = altered["session_id"] == sid
        for col in SESSION_OUTCOMES:
            altered.loc[mask, col] = rng.uniform(1, 1e6)
        out = build_session_features(altered, products).set_index("session_id")
        pd.testing.assert_series_equal(out.loc[sid], base.loc[sid], check_exact=True)
        changed_somewhere |= not out.drop(index=sid).equals(base.drop(index=sid))
    assert changed_somewhere  # later sessions of the room did see the altered outcomes


def test_sessions_of_a_room_with_the_same_start_do_not_see_each_other():
    sessions, products = _tables(
        [
            _session("a", "r", "2025-03-01 20:00", viewers=100.0),
            _session("b", "r", "2025-03-02 20:00", viewers=1_000.0),
            _session("c", "r", "2025-03-02 20:00", viewers=50_000.0),
            _session("d", "r", "2025-03-03 20:00", viewers=10.0),
        ]
    )
    f = build_session_features(sessions, products).set_index("session_id")
    assert f.loc["b", "room__n_prior"] == f.loc["c", "room__n_prior"] == 1
    assert f.loc["b", "room__viewers_mean_5"] == f.loc["c", "room__viewers_mean_5"]
    assert f.loc["b", "room__viewers_mean_5"] == pytest.approx(math.log1p(100))
    assert f.loc["d", "room__n_prior"] == 3
    expected = np.mean(np.log1p([100.0, 1_000.0, 50_000.0]))
    assert f.loc["d", "room__viewers_mean_5"] == pytest.approx(expected)


def test_the_rooms_level_is_the_median_of_its_last_20_earlier_sessions():
    sessions, products = _random_tables(n=300, seed=7)
    f = build_session_features(sessions, products).set_index("session_id")
    # the window is the room's last 20 sessions with any outcome; a missing value is skipped
    done = sessions.dropna(subset=["viewers", "orders", "gmv"], how="all")
    done = done.sort_values("start_time", kind="stable")
    checked = 0
    for sid, row in sessions.set_index("session_id").sample(40, random_state=0).iterrows():
        earlier = done[
            (done["room_id"] == row["room_id"]) & (done["start_time"] < row["start_time"])
        ]
        value = f.loc[sid, LEVEL_COLUMNS["viewers"]]
        if earlier.empty:
            assert np.isnan(value)
            continue
        expected = np.nanmedian(np.log1p(earlier["viewers"].to_numpy(float)[-20:]))
        assert value == pytest.approx(expected), sid
        checked += 1
    assert checked > 20
    assert not any(c.startswith("level__") for c in feature_columns(f.reset_index()))


def test_features_at_origins_equal_snapshots_cut_at_each_origin():
    """One history state read up to each row's own origin gives every column the snapshot of
    the history cut at that origin gives (the origin copies of training)."""
    sessions, products = _random_tables(n=300, seed=11)
    rng = np.random.default_rng(3)
    starts = sessions["start_time"]
    cuts = list(starts.quantile([0.3, 0.5, 0.8]))
    # each session after the first cut gets one of the cuts before it as its origin
    later = sessions[starts > cuts[0]]
    origins = pd.Series(
        [rng.choice([c for c in cuts if c < t]) for t in later["start_time"]], index=later.index
    )
    own = products[products["session_id"].isin(set(later["session_id"]))]
    got = origin_session_features(later, own, origins, sessions, products)
    got = got.set_index("session_id")
    assert len(got) == len(later)
    for cut in cuts:
        ids = origins.index[origins == cut]
        if len(ids) == 0:
            continue
        ahead = later.loc[ids]
        history = sessions[starts < cut]
        want = snapshot_session_features(
            ahead,
            products[products["session_id"].isin(set(ahead["session_id"]))],
            history,
            products[products["session_id"].isin(set(history["session_id"]))],
        ).set_index("session_id")
        pd.testing.assert_frame_equal(got.loc[want.index], want, check_exact=True)


# --------------------------------------------------------------------------- one definition


def _as_session(plan: SessionPlan, index: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    s, p = plans_to_frames([plan])
    s["session_id"] = plan.plan_id(index)
    if len(p):
        p["session_id"] = plan.plan_id(index)
    s["start_time"] = pd.to_datetime(s["start_time"], utc=True)
    return validate(s, "sessions"), (
        validate(p, "session_products") if len(p) else p.reindex(columns=["session_id"])
    )


def test_plan_features_equal_history_features_of_the_plan_as_a_session():
    history, history_products = _random_tables(seed=5)
    start = history["start_time"].quantile(0.6).to_pydatetime()  # later history exists
    plan = _plan(session_id="draft-1", room_id="room-2", start_time=start)
    via_plan = plan_features([plan], history, history_products)

    s, p = _as_session(plan)
    combined = pd.concat([history, s], ignore_index=True)
    combined_products = pd.concat([history_products, p], ignore_index=True)
    built = build_session_features(combined, combined_products)
    via_build = built[built["session_id"] == "draft-1"].reset_index(drop=True)

    cols = feature_columns(via_build) + list(LEVEL_COLUMNS.values())  # and the room's level
    assert via_plan["room__n_prior"].iloc[0] > 5
    assert via_plan["session_id"].tolist() == ["draft-1"]
    pd.testing.assert_frame_equal(via_plan[cols], via_build[cols], check_exact=True)


def test_plans_do_not_see_each_other_and_keep_plan_order():
    history, history_products = _random_tables(seed=6)
    last = history["start_time"].max().to_pydatetime()
    early = _plan(session_id="p-early", room_id="room-3", start_time=last + timedelta(days=1))
    late = _plan(session_id="p-late", room_id="room-3", start_time=last + timedelta(days=2))
    both = plan_features([late, early], history, history_products)
    assert both["session_id"].tolist() == ["p-late", "p-early"]
    alone = plan_features([late], history, history_products)
    cols = feature_columns(alone)
    pd.testing.assert_frame_equal(both[cols].iloc[[0]], alone[cols], check_exact=True)
    assert both["room__n_prior"].iloc[0] == both["room__n_prior"].iloc[1]


# --------------------------------------------------------------------------- families and vocab


def test_every_feature_column_belongs_to_exactly_one_of_six_families():
    sessions, products = _random_tables(n=60, seed=7)
    frame = build_session_features(sessions, products)
    assert list(frame.columns[:3]) == ["session_id", "room_id", "start_time"]
    cols = feature_columns(frame)
    # every column after the keys is a default input, except the room identity (an input only
    # where the model choice adds it), which is the room id as text, and the room's level (it
    # bounds the forecast, it is no input)
    assert len(cols) == frame.shape[1] - 4 - len(LEVEL_COLUMNS)
    assert (frame[IDENTITY_COLUMN] == frame["room_id"]).all()
    fams = feature_families(frame.columns)
    assert list(fams) == list(FAMILIES)
    assert all(fams[f] for f in FAMILIES)
    owners = [f for c in cols for f in FAMILIES if c.startswith(f + "__")]
    assert len(owners) == len(cols)
    assert sorted(c for f in FAMILIES for c in fams[f]) == sorted([*cols, IDENTITY_COLUMN])
    assert not set(SESSION_OUTCOMES) & set(frame.columns)
    # outcome and helper columns joined later are not features
    joined = frame.assign(viewers=1.0, gmv=2.0, hour_band="prime")
    assert feature_columns(joined) == cols
    assert len(frame) == len(sessions)
    assert frame["start_time"].is_monotonic_increasing


def test_categorical_columns_have_the_fixed_vocabulary():
    sessions, products = _random_tables(n=60, seed=8)
    frame = build_session_features(sessions, products)
    for col, allowed in CATEGORICAL_VOCAB.items():
        assert isinstance(frame[col].dtype, pd.CategoricalDtype), col
        assert list(frame[col].cat.categories) == list(allowed), col
    assert CATEGORICAL_VOCAB["room__platform"] == PLATFORMS
    assert CATEGORICAL_VOCAB["topic__session_type"] == SESSION_TYPES
    assert CATEGORICAL_VOCAB["room__main_category"] == CATEGORIES
    assert CATEGORICAL_VOCAB["mix__top_category"] == CATEGORIES


@pytest.mark.parametrize(
    ("column", "value"), [("room__platform", "weibo"), ("topic__session_type", "auction")]
)
def test_unseen_category_raises_naming_column_and_allowed_values(column, value):
    frame = pd.DataFrame(
        {
            "room__platform": ["douyin", "taobao", None],
            "topic__session_type": ["daily", None, "clearance"],
        }
    )
    ok = apply_vocab(frame)
    assert ok["room__platform"].isna().tolist() == [False, False, True]
    assert list(ok["topic__session_type"].cat.categories) == list(SESSION_TYPES)
    frame.loc[1, column] = value
    with pytest.raises(UnknownCategoryError) as err:
        apply_vocab(frame)
    message = str(err.value)
    assert column in message and value in message
    assert all(v in message for v in CATEGORICAL_VOCAB[column])
    assert err.value.column == column and err.value.values == [value]
    assert isinstance(err.value, ValueError)


# --------------------------------------------------------------------------- cold start and mix


def test_plan_for_an_unknown_room_is_a_cold_start():
    history, history_products = _random_tables(n=80, seed=9)
    plan = _plan(room_id="brand-new", followers_at_start=42_000, room_category="beauty")
    f = plan_features([plan], history, history_products)
    assert f["room__n_prior"].tolist() == [0.0]
    assert cold_start(f).tolist() == [True]
    assert f["room__followers"].iloc[0] == 42_000
    assert f["room__main_category"].iloc[0] == "beauty"
    assert np.isnan(f["room__viewers_mean_5"].iloc[0])
    assert np.isnan(f["room__days_since_last"].iloc[0])
    # without room_category the plan's own top product category fills in
    g = plan_features([_plan(room_id="brand-new")], history, history_products)
    assert g["room__main_category"].iloc[0] == "food"
    assert np.isnan(g["room__followers"].iloc[0])


def test_warm_room_falls_back_to_last_known_followers():
    sessions, products = _tables(
        [
            _session("a", "r", "2025-03-01 20:00", followers_at_start=5_000.0),
            _session("b", "r", "2025-03-02 20:00", followers_at_start=np.nan),
        ]
    )
    f = plan_features([_plan(room_id="r")], sessions, products)
    assert f["room__followers"].iloc[0] == 5_000
    assert not cold_start(f).iloc[0]
    assert f["room__n_prior"].iloc[0] == 2


def test_product_mix_summary_and_sku_list_give_the_same_mix_features():
    history, history_products = _random_tables(n=50, seed=10)
    by_skus = _plan(session_id="skus")
    mix = ProductMix(
        n_skus=3,
        category_shares={"food": 2 / 3, "home": 1 / 3},
        price_band_shares={"50_200": 1 / 3, "lt50": 1 / 3, "200_500": 1 / 3},
        mean_live_price=(80 + 30 + 450) / 3,
        mean_discount=((1 - 80 / 100) + (1 - 30 / 40) + (1 - 450 / 600)) / 3,
        new_launch_share=1 / 3,
        total_stock=75,
    )
    by_mix = _plan(session_id="mix", products=None, product_mix=mix)
    nothing = _plan(session_id="none", products=None)
    f = plan_features([by_skus, by_mix, nothing], history, history_products)
    mix_cols = feature_families(f.columns)["mix"]
    numeric = [c for c in mix_cols if c != "mix__top_category"]
    np.testing.assert_allclose(
        f.loc[0, numeric].to_numpy(float), f.loc[1, numeric].to_numpy(float), rtol=1e-12
    )
    assert f.loc[0, "mix__top_category"] == f.loc[1, "mix__top_category"] == "food"
    assert f.loc[0, "promo__discount_depth"] == pytest.approx(f.loc[1, "promo__discount_depth"])
    assert f.loc[2, numeric].isna().all() and pd.isna(f.loc[2, "mix__top_category"])


def test_product_mix_summary_by_hand():
    _, products = _tables(
        [_session("x", "r", "2025-03-01 20:00")],
        [
            {"session_id": "x", "sku_id": "1", "category": "beauty", "list_price": 100.0,
             "live_price": 50.0, "stock": 10.0, "is_new_launch": True},
            {"session_id": "x", "sku_id": "2", "category": "beauty", "list_price": 40.0,
             "live_price": 40.0, "stock": np.nan, "is_new_launch": False},
            {"session_id": "x", "sku_id": "3", "category": "food", "list_price": 800.0,
             "live_price": 600.0, "stock": 5.0, "is_new_launch": False},
        ],
    )  # fmt: skip
    s = product_mix_summary(products).loc["x"]
    assert s["n_skus"] == 3
    assert s["share_beauty"] == pytest.approx(2 / 3) and s["share_food"] == pytest.approx(1 / 3)
    assert s["band_lt50"] == pytest.approx(1 / 3)  # 40 is below 50
    assert s["band_50_200"] == pytest.approx(1 / 3)  # 50 is the lower bound, inclusive
    assert s["band_ge500"] == pytest.approx(1 / 3)
    assert s["mean_live_price"] == pytest.approx(230.0)
    assert s["mean_list_price"] == pytest.approx(940 / 3)
    assert s["mean_discount"] == pytest.approx((0.5 + 0.0 + 0.25) / 3)
    assert s["new_launch_share"] == pytest.approx(1 / 3)
    assert np.isnan(s["total_stock"])  # one SKU's stock is unknown
    assert s["top_category"] == "beauty" and s["n_categories"] == 2


# --------------------------------------------------------------------------- hand-computed


def test_three_session_toy_room_by_hand():
    v = [1_000.0, 3_000.0, 2_000.0]
    o = [10.0, 60.0, 30.0]
    g = [5_000.0, 9_000.0, 7_000.0]
    sessions, products = _tables(
        [
            _session("t1", "toy", "2025-04-01 20:00", viewers=v[0], orders=o[0], gmv=g[0],
                     planned_duration_min=100.0),
            _session("t2", "toy", "2025-04-03 08:00", viewers=v[1], orders=o[1], gmv=g[1],
                     planned_duration_min=200.0),
            # a session without outcomes: skipped by outcome statistics, still a session
            _session("skip", "toy", "2025-04-04 08:00", viewers=np.nan, orders=np.nan,
                     gmv=np.nan, avg_dwell_seconds=np.nan, planned_duration_min=300.0),
            _session("t3", "toy", "2025-04-05 20:00", viewers=v[2], orders=o[2], gmv=g[2],
                     planned_duration_min=400.0, followers_at_start=np.nan),
            _session("other", "elsewhere", "2025-04-02 20:00", viewers=1e6, gmv=1e8),
        ],
        [
            {"session_id": "t1", "sku_id": "1", "category": "health", "list_price": 10.0,
             "live_price": 9.0},
            {"session_id": "t2", "sku_id": "1", "category": "health", "list_price": 10.0,
             "live_price": 9.0},
            {"session_id": "t2", "sku_id": "2", "category": "home", "list_price": 10.0,
             "live_price": 9.0},
        ],
    )  # fmt: skip
    f = build_session_features(sessions, products).set_index("session_id")
    assert f.index.tolist() == ["t1", "other", "t2", "skip", "t3"]
    first, third = f.loc["t1"], f.loc["t3"]
    assert first["room__n_prior"] == 0 and cold_start(f).loc["t1"]
    assert np.isnan(first["room__viewers_mean_5"]) and np.isnan(first["room__days_since_last"])
    assert third["room__n_prior"] == 2
    lv = np.log1p(v[:2])
    assert third["room__viewers_mean_5"] == pytest.approx(lv.mean())
    assert third["room__viewers_mean_20"] == pytest.approx(lv.mean())
    # per-minute history: the skipped session (no outcomes) is not in it
    rate_v = lv - np.log([100.0, 200.0])
    rate_g = np.log1p(g[:2]) - np.log([100.0, 200.0])
    assert third["room__viewers_per_min_5"] == pytest.approx(rate_v.mean())
    assert third["room__gmv_per_min_20"] == pytest.approx(rate_g.mean())
    assert third["room__viewers_at_duration_5"] == pytest.approx(rate_v.mean() + np.log(400.0))
    assert third["room__gmv_at_duration_20"] == pytest.approx(rate_g.mean() + np.log(400.0))
    # product rows: t1 listed 1 SKU, t2 2; t3 lists none, so its ratio is missing
    logs_listed = np.log1p([1.0, 2.0])
    assert third["room__gmv_per_product_20"] == pytest.approx(
        (np.log1p(g[:2]) - logs_listed).mean()
    )
    assert np.isnan(third["room__products_ratio"])
    assert f.loc["t2", "room__products_ratio"] == pytest.approx(np.log1p(2.0) - np.log1p(1.0))
    assert third["room__gmv_mean_5"] == pytest.approx(np.log1p(g[:2]).mean())
    assert third["room__viewers_last"] == pytest.approx(np.log1p(v[1]))
    assert third["room__conversion_mean_20"] == pytest.approx((o[0] / v[0] + o[1] / v[1]) / 2)
    assert third["room__aov_mean_20"] == pytest.approx((g[0] / o[0] + g[1] / o[1]) / 2)
    assert third["room__days_since_last"] == pytest.approx(1.5)  # since "skip", 08:00 -> 20:00
    assert third["room__duration_ratio"] == pytest.approx(400 / 200)  # median of 100, 200, 300
    assert third["room__followers"] == 10_000  # last known value
    assert third["room__main_category"] == "health"  # 2 of 3 earlier SKUs
    # same hour band (prime, 20:00): only t1 counts
    assert third["room__band_viewers_mean_10"] == pytest.approx(np.log1p(v[0]))
    assert third["room__type_gmv_mean_10"] == pytest.approx(np.log1p(g[:2]).mean())
    assert np.isnan(third["room__viewers_trend"])  # fewer than 6 earlier sessions
    assert f.loc["skip", "room__n_prior"] == 2
    assert f.loc["other", "room__n_prior"] == 0  # other rooms never count
    assert np.isnan(third["mix__n_skus"])  # t3 has no SKU rows


def test_host_features_by_hand():
    g = [1_000.0, 4_000.0, 2_000.0, 8_000.0, 3_000.0]
    hosts = ["A", "A", "B", "toy", "B"]  # "toy" (the room id): host not stated
    rows = [
        _session(f"h{i + 1}", "toy", f"2025-04-0{i + 1} 20:00", host_id=host, gmv=gmv)
        for i, (host, gmv) in enumerate(zip(hosts, g, strict=True))
    ]
    tie = [
        _session("x", "tie", "2025-04-01 20:00", host_id="X"),
        _session("y", "tie", "2025-04-02 20:00", host_id="Y"),
        _session("z", "tie", "2025-04-03 20:00", host_id="tie"),
    ]
    sessions, products = _tables(rows + tie)
    f = build_session_features(sessions, products).set_index("session_id")
    lg = np.log1p(g)
    assert np.isnan(f.loc["h1", "room__host_share"])  # no earlier session
    assert f.loc["h3", "room__host_share"] == 0.0  # B's first session
    # h4 states no host: the room's main host so far (A, 2 of 3), and counts as A afterwards
    assert f.loc["h4", "room__host_share"] == pytest.approx(2 / 3)
    assert f.loc["h5", "room__host_share"] == pytest.approx(1 / 4)
    # B's deviation from the room: h3 against the mean of the room's sessions before it
    assert f.loc["h5", "room__host_gmv_dev"] == pytest.approx(lg[2] - lg[:2].mean())
    assert f.loc["z", "room__host_share"] == pytest.approx(1 / 2)  # a tie: the first to lead

    plan = _plan(room_id="toy", start_time=datetime(2025, 4, 6, 20, 0, tzinfo=SHANGHAI))
    unstated, new_host, b = plan_features(
        [plan, plan.model_copy(update={"host_id": "C"}), plan.model_copy(update={"host_id": "B"})],
        sessions,
        products,
    ).itertuples(index=False)
    assert unstated.room__host_share == pytest.approx(3 / 5)  # A: h1, h2, h4
    a_dev = [lg[1] - lg[0], lg[3] - lg[:3].mean()]  # h1 has no room mean before it
    assert unstated.room__host_gmv_dev == pytest.approx(np.mean(a_dev))
    assert new_host.room__host_share == 0.0 and np.isnan(new_host.room__host_gmv_dev)
    assert b.room__host_share == pytest.approx(2 / 5)


def test_slot_and_topic_features_by_hand():
    sessions, products = _tables(
        [
            # 12:00 UTC is 20:00 in Shanghai: prime time, a Tuesday, 8 days before 618
            _session("a", "r", "2025-06-10 20:00", title="618 狂欢 宠粉专场"),
            _session("b", "r", "2025-09-01 03:00", title="新款上新 1618元起"),
            _session("c", "r", "2025-11-10 23:30", title=None),
        ]
    )
    sessions.loc[0, "start_time"] = pd.Timestamp("2025-06-10 12:00", tz="UTC")
    f = build_session_features(sessions, products).set_index("session_id")
    a, b, c = f.loc["a"], f.loc["b"], f.loc["c"]
    assert (a["slot__hour"], a["slot__hour_band"], a["slot__weekday"]) == (20, "prime", 1)
    assert a["slot__days_to_f618"] == 8 and a["slot__in_window_f618"] == 1
    assert a["slot__days_to_d11"] == 60  # capped
    assert a["slot__in_promo_window"] == 1 and b["slot__in_promo_window"] == 0
    assert b["slot__hour_band"] == "night" and c["slot__hour_band"] == "late"
    assert c["slot__days_to_d11"] == 1 and c["slot__in_window_d11"] == 1
    assert a["topic__kw_festival"] == 1 and a["topic__kw_welfare"] == 1
    assert a["topic__kw_brand"] == 1
    assert b["topic__kw_festival"] == 0  # 1618 is a price, not 618
    assert b["topic__kw_new"] == 1
    assert c["topic__title_len"] == 0 and c[[x for x in f if "__kw_" in x]].sum() == 0


# --------------------------------------------------------------------------- simulated data


def test_features_on_a_small_simulated_dataset():
    simulate = pytest.importorskip("features.simulate").simulate
    ds = simulate(seed=0, rooms=4, days=60, fans=50)
    f = build_session_features(ds.sessions, ds.session_products)
    assert len(f) == len(ds.sessions) and f["session_id"].is_unique
    assert f[[c for c in f if c.startswith("slot__")]].notna().all().all()
    first = ds.sessions.sort_values("start_time").groupby("room_id").head(1)["session_id"]
    assert cold_start(f.set_index("session_id")).loc[first].all()
    assert (f["room__n_prior"] > 0).mean() > 0.5


def test_sku_track_record_uses_only_earlier_sessions(small_dataset):
    """Product outcomes of later sessions, or of the session itself, never reach its row."""
    from features.sessions import build_session_features as build

    sessions, products = small_dataset.sessions, small_dataset.session_products
    base = build(sessions, products)
    cut = sessions["start_time"].sort_values().iloc[len(sessions) // 2]
    later = set(sessions.loc[sessions["start_time"] >= cut, "session_id"])
    altered = products.copy()
    hit = altered["session_id"].isin(later)
    altered.loc[hit, "units_sold"] = altered.loc[hit, "units_sold"] * 7 + 3
    after = build(sessions, altered)
    early = base["start_time"] < cut
    cols = ["room__sku_hist_units", "room__sku_hist_log_units", "room__sku_hist_share"]
    pd.testing.assert_frame_equal(base.loc[early, cols], after.loc[early, cols])
    assert not base.loc[~early, cols].equals(after.loc[~early, cols])
    assert base.loc[early, "room__sku_hist_share"].gt(0).any()


def test_snapshot_features_freeze_the_history_at_the_cut(small_dataset):
    from features.sessions import build_session_features, snapshot_session_features

    sessions, products = small_dataset.sessions, small_dataset.session_products
    cut = sessions["start_time"].max() - pd.Timedelta(days=30)
    history, ahead = sessions[sessions["start_time"] < cut], sessions[sessions["start_time"] >= cut]
    hist_p = products[products["session_id"].isin(history["session_id"])]
    ahead_p = products[products["session_id"].isin(ahead["session_id"])]
    snap = snapshot_session_features(ahead, ahead_p, history, hist_p).set_index("session_id")
    fresh = build_session_features(sessions, products).set_index("session_id").loc[snap.index]
    assert list(snap.columns) == list(fresh.columns)
    # a room's first session after the cut sees the same history either way: identical rows
    first = ahead.sort_values("start_time").groupby("room_id")["session_id"].first()
    pd.testing.assert_frame_equal(snap.loc[first], fresh.loc[first])
    # later sessions do not see the ones between the cut and them
    later = snap.index.difference(first)
    prior_at_cut = history.groupby("room_id").size()
    expected = snap.loc[later, "room_id"].map(prior_at_cut).fillna(0).to_numpy(float)
    np.testing.assert_array_equal(snap.loc[later, "room__n_prior"].fillna(0), expected)
    assert (fresh.loc[later, "room__n_prior"] > snap.loc[later, "room__n_prior"]).all()
    # so the outcomes of sessions after the cut cannot reach any of them
    altered = ahead.assign(viewers=ahead["viewers"] * 10, gmv=ahead["gmv"] * 10)
    again = snapshot_session_features(altered, ahead_p, history, hist_p).set_index("session_id")
    pd.testing.assert_frame_equal(again, snap)
