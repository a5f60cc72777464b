"""Draft plans read column-wise (``features.plan.plans_to_columns``) read as their contract rows.

The service reads a batch of plans in one pass (no per-plan rows or frames). These tests pin
that reading to the plan's fields one by one, and to the training path's reader of the same
plans as ``sessions`` / ``session_products`` tables, over what varies between plans: SKU lists
and mixes and neither, an empty SKU list, known and cold-start rooms, start times in several
UTC offsets (a DST zone, a fold, the year bounds), every optional field missing, an empty
``session_id`` / ``host_id`` / title.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from service_support import random_plans

from features.contract import validate
from features.plan import (
    PRODUCT_ROW_COLUMNS,
    SESSION_ROW_COLUMNS,
    ProductLine,
    ProductMix,
    SessionPlan,
    example_plan,
    plans_to_columns,
    plans_to_frames,
)
from features.sessions import (
    feature_columns,
    plan_features,
    plan_inputs,
    product_mix_summary,
    session_inputs,
    snapshot_session_features,
    summary_columns,
)

NEW_YORK = ZoneInfo("America/New_York")


def _odd_plans() -> list[SessionPlan]:
    """Plans at the edges of what a plan may state."""
    base = example_plan()
    mix = ProductMix(
        n_skus=4, category_shares={"food": 0.5, "home": 0.5}, mean_live_price=30, mean_discount=0.3
    )
    updates: list[dict[str, object]] = [
        {"session_id": "", "host_id": "", "title": ""},  # empty: plan-<i>, the room, no title
        {"start_time": datetime(2025, 3, 9, 3, 30, tzinfo=NEW_YORK)},  # just after DST starts
        {"start_time": datetime(2025, 11, 2, 1, 30, fold=0, tzinfo=NEW_YORK)},  # EDT
        {"start_time": datetime(2025, 11, 2, 1, 30, fold=1, tzinfo=NEW_YORK)},  # EST, same wall
        {"start_time": datetime(1990, 1, 1, 0, 0, 0, 1, tzinfo=timezone(-timedelta(hours=11)))},
        {"start_time": datetime(2100, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)},
        {"products": [], "room_id": "cold-room"},  # an empty SKU list, a room without history
        {"products": None, "n_products": 7, "followers_at_start": 0, "room_category": "home"},
        {
            "products": [  # above list price: the discount clips to 0, stock unknown
                ProductLine(sku_id="x", category="food", list_price=10, live_price=30),
            ],
            "host_id": "host-9",
        },
        {"discount_depth": 0.0},  # stated: never derived from the SKUs
        {"products": None, "product_mix": mix, "room_id": "cold-room-2"},
        {"products": None, "product_mix": mix.model_copy(update={"total_stock": 900})},
    ]
    plans = []
    for i, update in enumerate(updates):
        update = {"session_id": f"odd-{i}", **update}
        plans.append(SessionPlan.model_validate({**base.model_dump(), **update}))
    return plans


@pytest.fixture(scope="module")
def plans(small_dataset) -> list[SessionPlan]:
    return random_plans(small_dataset, 150, seed=11) + _odd_plans()


def _number(value: object) -> float:
    return math.nan if value is None else float(value)


def test_columns_read_each_plan_field(plans):
    cols = plans_to_columns(plans)
    assert len(cols) == len(plans)
    s = cols.sessions
    assert set(s) == set(SESSION_ROW_COLUMNS) - {"start_time"}
    for i, p in enumerate(plans):
        assert s["session_id"][i] == (p.session_id or f"plan-{i}")
        assert s["host_id"][i] == (p.host_id or p.room_id)
        for name in ("room_id", "platform", "session_type", "title"):
            assert s[name][i] == getattr(p, name)
        for name in SESSION_ROW_COLUMNS[5:]:
            if name not in ("session_type", "title", "discount_depth"):
                expected = _number(getattr(p, name))
                assert s[name][i] == expected or (math.isnan(expected) and math.isnan(s[name][i]))
        assert cols.start_ns[i] == pd.Timestamp(p.start_time).as_unit("ns").value
        assert cols.room_category[i] == p.room_category
        assert cols.product_mix[i] is p.product_mix
        discount = p.discount_depth
        if discount is None and p.products:
            mean = sum(1 - x.live_price / x.list_price for x in p.products) / len(p.products)
            discount = min(max(mean, 0.0), 1.0)
        if discount is None and p.product_mix is not None:
            discount = p.product_mix.mean_discount
        got = s["discount_depth"][i]
        assert got == pytest.approx(discount, rel=1e-15) if discount is not None else np.isnan(got)
    lines = cols.products
    assert set(lines) == {"plan", *PRODUCT_ROW_COLUMNS[1:]}
    flat = [(i, line) for i, p in enumerate(plans) for line in p.products or []]
    assert lines["plan"].tolist() == [i for i, _ in flat]
    assert lines["sku_id"].tolist() == [line.sku_id for _, line in flat]
    assert lines["category"].tolist() == [line.category for _, line in flat]
    np.testing.assert_array_equal(lines["live_price"], [x.live_price for _, x in flat])
    np.testing.assert_array_equal(lines["list_price"], [x.list_price for _, x in flat])
    np.testing.assert_array_equal(lines["stock"], [_number(x.stock) for _, x in flat])
    assert lines["is_new_launch"].tolist() == [x.is_new_launch for _, x in flat]
    assert lines["plan"].dtype == np.int64 and lines["stock"].dtype == np.float64


def test_rows_and_frames_are_the_columns(plans):
    """``to_session_row`` / ``to_product_rows`` / ``plans_to_frames`` read the same columns."""
    sessions, products = plans_to_frames(plans)
    cols = plans_to_columns(plans)
    assert list(sessions.columns) == list(SESSION_ROW_COLUMNS)
    assert list(products.columns) == list(PRODUCT_ROW_COLUMNS)
    for i, p in enumerate(plans):
        row = p.to_session_row(i)
        assert list(row) == list(SESSION_ROW_COLUMNS)
        assert row["start_time"] == pd.Timestamp(p.start_time)
        assert row["start_time"].utcoffset() == p.start_time.utcoffset()
        for name, value in row.items():
            if name != "start_time":
                assert type(value) in (str, float), name
                frame_value = sessions[name].iloc[i]
                assert value == frame_value or (math.isnan(value) and math.isnan(frame_value))
                assert value == cols.sessions[name][i] or math.isnan(value)
        lines = p.to_product_rows(i)
        assert [r["sku_id"] for r in lines] == [x.sku_id for x in p.products or []]
        assert all(r["session_id"] == row["session_id"] for r in lines)
    assert len(products) == len(cols.products["plan"])
    assert all(f.empty and not len(f.columns) for f in plans_to_frames([]))
    mix_only = [p for p in plans if p.products is None]
    assert plans_to_frames(mix_only)[1].empty


@pytest.mark.parametrize("tz", ["Asia/Shanghai", "UTC", "America/New_York"])
def test_plan_inputs_equal_the_training_reader(plans, tz):
    """The service's reader of plans gives exactly the inputs the training reader gives for
    the same plans as contract tables (bit for bit, local wall clock in ``tz`` included)."""
    inputs, summary, skus = plan_inputs(plans, tz)
    sessions, products = plans_to_frames(plans)
    sessions["start_time"] = pd.to_datetime(sessions["start_time"], utc=True)
    sessions = validate(sessions, "sessions", tz=tz)
    sessions["room_category"] = [p.room_category for p in plans]
    products = validate(products, "session_products", tz=tz)
    ref = session_inputs(sessions.reset_index(drop=True), tz)
    for name in ("session_id", "room_id", "host_id", "platform", "session_type", "title"):
        assert getattr(inputs, name).tolist() == getattr(ref, name).tolist(), name
    assert inputs.room_category.tolist() == ref.room_category.tolist()
    np.testing.assert_array_equal(inputs.t, ref.t)
    assert inputs.local.dtype == ref.local.dtype == np.dtype("datetime64[ns]")
    np.testing.assert_array_equal(inputs.local, ref.local)
    for name, values in ref.numeric.items():
        np.testing.assert_array_equal(inputs.numeric[name], values, err_msg=name)
    # the SKU lists' summary equals the training summary of the same rows (mixes are not rows)
    table = summary_columns(product_mix_summary(products), inputs.session_id)
    rows = np.array([p.product_mix is None for p in plans])
    for name, values in table.items():
        ours = summary[name][rows]
        if name == "top_category":  # missing: None here, NaN from a frame
            assert [None if pd.isna(v) else v for v in values[rows]] == ours.tolist()
        else:
            np.testing.assert_array_equal(ours, values[rows], err_msg=name)
    assert skus.session.tolist() == plans_to_columns(plans).products["plan"].tolist()


def test_plan_features_equal_the_snapshot_training_path(small_dataset, plans):
    """Feature rows of the plans (one batch) equal the training code's rows of the same plans
    as sessions scored from the same history snapshot, for every kind of plan but mixes
    (a mix is not a ``session_products`` table)."""
    batch = [p for p in plans if p.product_mix is None]
    history, history_products = small_dataset.sessions, small_dataset.session_products
    via_plan = plan_features(batch, history, history_products)
    sessions, products = plans_to_frames(batch)
    sessions["start_time"] = pd.to_datetime(sessions["start_time"], utc=True)
    sessions = validate(sessions, "sessions")
    products = validate(products, "session_products")
    via_build = snapshot_session_features(sessions, products, history, history_products)
    via_build = via_build.set_index("session_id").loc[via_plan["session_id"]].reset_index()
    cols = feature_columns(via_plan)
    # cold rooms, rooms with history and SKU track records are all in the batch
    assert via_plan["room__n_prior"].eq(0).sum() >= 5 and via_plan["room__n_prior"].gt(0).any()
    # a plan's room_category only exists for plans: compare the column where it is not stated
    stated = np.array([p.room_category is not None for p in batch])
    checked = [c for c in cols if c != "room__main_category"]
    pd.testing.assert_frame_equal(via_plan[checked], via_build[checked], check_exact=True)
    pd.testing.assert_series_equal(
        via_plan.loc[~stated, "room__main_category"],
        via_build.loc[~stated, "room__main_category"],
    )


@pytest.mark.parametrize("tz", ["Asia/Shanghai", "America/New_York"])
def test_one_plan_at_a_time_equals_the_batch(plans, tz):
    """A few plans take the per-start time-zone conversion, a batch the vectorised one: the
    same local times and inputs (the edge plans: DST, fold, year bounds, empty fields)."""
    whole, summary, _ = plan_inputs(plans, tz)
    picks = [0, 1, 2, *range(len(plans) - len(_odd_plans()), len(plans))]
    for i in picks:
        plan = plans[i].model_copy(update={"session_id": whole.session_id[i]})
        one, one_summary, _ = plan_inputs([plan], tz)
        assert one.t[0] == whole.t[i] and one.local[0] == whole.local[i], i
        assert one.host_id[0] == whole.host_id[i] and one.title[0] == whole.title[i]
        for name, values in one.numeric.items():
            a, b = values[0], whole.numeric[name][i]
            assert a == b or (np.isnan(a) and np.isnan(b)), name
        for name, values in one_summary.items():
            a, b = values[0], summary[name][i]
            assert a == b or (pd.isna(a) and pd.isna(b)), name
    # groups of up to four take the per-start path too
    few = plans[-4:]
    np.testing.assert_array_equal(plan_inputs(few, tz)[0].local, whole.local[-4:])


def test_no_plans_and_duplicate_ids():
    inputs, summary, skus = plan_inputs([])
    assert len(inputs) == 0 and len(skus.session) == 0
    assert all(len(v) == 0 for v in summary.values())
    plan = example_plan()
    with pytest.raises(ValueError, match="unique"):
        plan_inputs([plan.model_copy(update={"session_id": "a"})] * 2)
    # the default id of a plan is its position: plan-0 then a stated plan-0 clash
    with pytest.raises(ValueError, match="plan-0"):
        plan_inputs([plan, plan.model_copy(update={"session_id": "plan-0"})])
