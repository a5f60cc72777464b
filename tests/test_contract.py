"""Data tier: the contract accepts valid tables and reports every failing row and column."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from features.contract import ContractError, columns, validate
from features.io import Dataset, load_dataset, read_table, write_dataset
from features.plan import ProductMix, SessionPlan, example_plan, plans_to_frames


def _sessions(n: int = 4) -> pd.DataFrame:
    start = pd.Timestamp("2025-03-01 20:00")
    return pd.DataFrame(
        {
            "session_id": [f"s{i}" for i in range(n)],
            "room_id": "room-a",
            "platform": "douyin",
            "host_id": "host-a",
            "start_time": [start + pd.Timedelta(days=i) for i in range(n)],
            "planned_duration_min": 120.0,
            "session_type": "daily",
            "title": "日常直播",
            "viewers": [1000.0 + i for i in range(n)],
            "gmv": [5000.0] * n,
        }
    )


def test_valid_table_gets_full_contract_and_aware_times():
    out = validate(_sessions(), "sessions")
    assert list(out.columns[: len(_sessions().columns)]) == list(_sessions().columns)
    assert set(columns("sessions")) <= set(out.columns)
    assert str(out["start_time"].dt.tz) == "Asia/Shanghai"
    # naive times are read in the contract's default timezone
    assert out["start_time"].iloc[0].hour == 20
    assert out["orders"].isna().all()  # optional outcome added as missing, not invented


def test_every_failing_row_and_column_is_reported():
    bad = _sessions(5)
    bad.loc[1, "platform"] = "weibo"
    bad.loc[3, "viewers"] = -1.0
    bad.loc[4, "planned_duration_min"] = 5000.0
    bad.loc[2, "session_id"] = "s0"  # duplicate id
    with pytest.raises(ContractError) as info:
        validate(bad, "sessions", source="export.csv")
    fails = info.value.failures
    reported = set(zip(fails["row"], fails["column"], strict=True))
    assert {(1, "platform"), (3, "viewers"), (4, "planned_duration_min")} <= reported
    assert {row for row, col in reported if col == "session_id"} >= {2}
    text = str(info.value)
    assert "export.csv" in text and "weibo" in text


def test_missing_required_column_and_unparseable_time():
    no_room = _sessions().drop(columns=["room_id"])
    with pytest.raises(ContractError) as info:
        validate(no_room, "sessions")
    assert "room_id" in set(info.value.failures["value"].astype(str)) | set(
        info.value.failures["column"].astype(str)
    )
    bad_time = _sessions().astype({"start_time": object})
    bad_time.loc[2, "start_time"] = "not a time"
    with pytest.raises(ContractError) as info:
        validate(bad_time, "sessions")
    assert list(info.value.failures["row"]) == [2]


def test_fan_events_contract_rejects_unknown_event_type_and_negative_amount():
    events = pd.DataFrame(
        {
            "fan_id": ["f1", "f2", "f3"],
            "room_id": "room-a",
            "event_time": pd.to_datetime(["2025-01-01 20:00"] * 3).tz_localize("Asia/Shanghai"),
            "event_type": ["order", "gift", "order"],
            "amount": [10.0, np.nan, -3.0],
        }
    )
    with pytest.raises(ContractError) as info:
        validate(events, "fan_events")
    reported = set(zip(info.value.failures["row"], info.value.failures["column"], strict=True))
    assert reported == {(1, "event_type"), (2, "amount")}


def test_roundtrip_through_parquet_csv_and_excel(tmp_path):
    sessions = validate(_sessions(), "sessions")
    products = pd.DataFrame(
        {
            "session_id": ["s0", "s0", "s1"],
            "sku_id": ["a", "b", "a"],
            "category": ["beauty", "food", "beauty"],
            "list_price": [100.0, 20.0, 100.0],
            "live_price": [80.0, 15.0, 70.0],
            "is_new_launch": [False, True, False],
        }
    )
    write_dataset(Dataset(sessions, validate(products, "session_products")), tmp_path / "ds")
    ds = load_dataset(tmp_path / "ds")
    pd.testing.assert_frame_equal(ds.sessions, sessions)
    assert len(ds.session_products) == 3
    raw = _sessions()
    raw.to_csv(tmp_path / "s.csv", index=False)
    raw.to_excel(tmp_path / "s.xlsx", index=False)
    from_csv = read_table(tmp_path / "s.csv", "sessions")
    from_xlsx = read_table(tmp_path / "s.xlsx", "sessions")
    assert (from_csv["start_time"] == sessions["start_time"]).all()
    assert (from_xlsx["viewers"] == sessions["viewers"]).all()
    assert not list(tmp_path.glob("ds/.*tmp"))  # atomic writes leave no temporary files


def test_plan_is_a_valid_contract_row_and_rejects_bad_values():
    sessions, products = plans_to_frames([example_plan()])
    validate(sessions, "sessions")
    validate(products, "session_products")
    good = example_plan().model_dump()
    for field, value in [
        ("platform", "weibo"),
        ("planned_duration_min", float("nan")),
        ("planned_duration_min", 0),
        ("paid_promo_budget", float("inf")),
        ("lottery_count", -1),
        ("start_time", datetime(2026, 6, 18, 20)),  # naive: timezone required
    ]:
        with pytest.raises(ValidationError) as info:
            SessionPlan(**(good | {field: value}))
        assert field in str(info.value)


def test_product_mix_shares_must_sum_to_one():
    with pytest.raises(ValidationError, match="sum to 1"):
        ProductMix(n_skus=10, category_shares={"beauty": 0.5}, mean_live_price=99)
    mix = ProductMix(n_skus=10, category_shares={"beauty": 0.7, "food": 0.3}, mean_live_price=99)
    plan = example_plan().model_copy(update={"products": None, "product_mix": mix})
    assert plan.to_product_rows() == []
    assert plan.start_time - example_plan().start_time == timedelta(0)
