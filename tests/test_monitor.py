"""The watch on live accuracy: the forecast log, the join to actuals, the CUSUM alarm; and on a
simulated run, a room whose traffic halves is flagged within 10 of its sessions while no room
is flagged when nothing changed."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from livecast.cli import app
from livecast.config import get_settings
from serving.monitor import (
    ForecastLog,
    band_checks,
    by_lead,
    cusum,
    health_report,
    rolling,
    series,
    standardised_errors,
    watch,
)
from training.backtest import run_backtest
from training.drift import DRIFT_INPUTS
from training.models import ForecastParams

TARGETS = ("viewers", "orders", "gmv")


def test_cusum_flags_a_lasting_shift_not_noise():
    rng = np.random.default_rng(2)
    assert cusum(rng.normal(0, 0.85, 100)) is None  # in control
    shifted = np.concatenate([rng.normal(0, 1, 30), rng.normal(-2, 1, 30)])
    i, side = cusum(shifted)
    assert side == "below" and 30 <= i < 40
    assert cusum(np.full(20, 2.0))[1] == "above"


def _item(sid, room, start, p50, width=2.0):
    return {
        "session_id": sid,
        "room_id": room,
        "start_time": start,
        **{t: {"p10": p50 / width, "p50": p50, "p90": p50 * width} for t in TARGETS},
    }


def test_the_log_joins_the_last_forecast_made_before_the_session(tmp_path):
    log = ForecastLog(tmp_path / "watch" / "forecasts.db")
    start = pd.Timestamp("2026-03-01 20:00", tz="Asia/Shanghai")
    early = datetime(2026, 2, 1, tzinfo=UTC)
    late = datetime(2026, 2, 27, tzinfo=UTC)
    after = datetime(2026, 3, 2, tzinfo=UTC)
    log.log_forecasts([_item("s1", "r", start, 100.0)], model="m1", logged_at=early)
    log.log_forecasts([_item("s1", "r", start, 150.0)], model="m2", logged_at=late)
    log.log_forecasts([_item("s1", "r", start, 999.0)], model="m3", logged_at=after)
    assert log.joined().empty  # no actuals yet
    actual = pd.DataFrame({"session_id": ["s1"], "viewers": [120.0], "gmv": [np.nan]})
    assert log.log_actuals(actual) == 1  # a missing outcome is not logged
    log.log_actuals(actual.assign(viewers=140.0))  # logged again: replaced
    j = log.joined()
    assert j[["model", "target", "p50", "actual"]].values.tolist() == [
        ["m2", "viewers", 150.0, 140.0]
    ]
    assert j["lead_days"].iloc[0] == pytest.approx((start - pd.Timestamp(late)).days, abs=1)
    z = standardised_errors(j)
    assert z[0] == pytest.approx(np.log(141 / 151) / (np.log(301 / 76) / 2.5631), rel=1e-3)
    acc = rolling(j)
    assert acc.loc[acc["room_id"] == "r", "coverage"].item() == 1.0


@pytest.fixture(scope="module")
def live(small_dataset):
    """A simulated month of live forecasts: the backtest's predictions after one cut (each
    session forecast from the history before it), as the service would have logged them."""
    from training.data import training_frame

    ds = small_dataset
    frame = training_frame(ds.sessions, ds.session_products)
    cut = ds.sessions["start_time"].max() - pd.Timedelta(days=60)
    params = ForecastParams(max_rounds=80, select=False, num_threads=1)
    res = run_backtest(frame, params=params, cut=str(cut.date()), baselines=False)
    return res.predictions


def _logged(preds: pd.DataFrame, path, halve_room=None, after=None) -> ForecastLog:
    log = ForecastLog(path)
    items = [
        {
            "session_id": r["session_id"],
            "room_id": r["room_id"],
            "start_time": r["start_time"],
            **{t: {q: r[f"{t}__model_{q}"] for q in ("p10", "p50", "p90")} for t in TARGETS},
        }
        for r in preds.to_dict("records")
    ]
    log.log_forecasts(items, model="test", logged_at=datetime(2000, 1, 1, tzinfo=UTC))
    actual = preds[["session_id", "room_id", "start_time", *TARGETS]].copy()
    if halve_room is not None:
        hit = (actual["room_id"] == halve_room) & (actual["start_time"] >= after)
        for t in TARGETS:
            actual.loc[hit, t] = actual.loc[hit, t] * 0.5
    log.log_actuals(actual)
    return log


def test_no_room_is_flagged_when_nothing_changed(live, tmp_path):
    log = _logged(live, tmp_path / "same.db")
    assert watch(log.joined()) == []


def test_a_room_whose_traffic_halves_is_flagged_within_ten_sessions(live, tmp_path):
    rooms = live["room_id"].value_counts()
    room = rooms.index[0]  # the busiest room
    sessions = live[live["room_id"] == room].sort_values("start_time")
    after = sessions["start_time"].iloc[15]  # after the room's first sessions set its level
    log = _logged(live, tmp_path / "halved.db", halve_room=room, after=after)
    alarms = watch(log.joined())
    assert {a.room_id for a in alarms} == {room}
    first = min(alarms, key=lambda a: a.start_time)
    assert first.direction == "below" and first.start_time >= after
    since = (sessions["start_time"] >= after) & (sessions["start_time"] <= first.start_time)
    assert since.sum() <= 10


def test_monitor_command_prints_the_rooms_and_exits_1_on_an_alarm(live, tmp_path, monkeypatch):
    monkeypatch.setenv("LIVECAST_MODELS_DIR", str(tmp_path / "models"))
    get_settings.cache_clear()
    try:
        room = live["room_id"].value_counts().index[0]
        after = live[live["room_id"] == room]["start_time"].sort_values().iloc[12]
        path = get_settings().forecast_log
        _logged(live, path)
        ok = CliRunner().invoke(app, ["monitor"])
        assert ok.exit_code == 0, ok.output
        assert "no room" in ok.output and "all rooms" in ok.output
        path.unlink()
        _logged(live, path, halve_room=room, after=after)
        bad = CliRunner().invoke(app, ["monitor"])
        assert bad.exit_code == 1, bad.output
        assert room in bad.output and "retrain" in bad.output
    finally:
        get_settings.cache_clear()


def test_the_background_log_writes_what_it_queued(tmp_path):
    from serving.monitor import BackgroundLog

    log = ForecastLog(tmp_path / "bg.db")
    bg = BackgroundLog(log)
    start = pd.Timestamp("2026-03-01 20:00", tz="Asia/Shanghai")
    for i in range(50):
        bg.forecasts([_item(f"s{i}", "r", start, 100.0 + i)], model="m")
    bg.actuals(pd.DataFrame({"session_id": [f"s{i}" for i in range(50)], "gmv": 90.0}))
    bg.flush()
    j = log.joined()
    assert len(j) == 50 and set(j["target"]) == {"gmv"}
    assert sorted(j["p50"]) == [100.0 + i for i in range(50)]


def test_the_service_logs_forecasts_and_review_actuals_for_the_watch(service_models, small_dataset):
    """A forecast of a plan with a session id is logged; its review's outcomes are joined to
    it; a plan without an id is not logged (it could never be paired)."""
    import time

    from service_support import future_start, known_room, plan_json, service_app
    from starlette.testclient import TestClient

    from serving.service import Livecast

    plan = plan_json(
        room_id=known_room(small_dataset),
        start_time=future_start(small_dataset).isoformat(),
        session_id="watch-1",
    )
    anon = {k: v for k, v in plan.items() if k != "session_id"}
    with TestClient(service_app(service_models)) as client:
        assert client.post("/v1/forecast", json={"plans": [plan]}).status_code == 200
        assert client.post("/v1/forecast", json={"plans": [anon]}).status_code == 200
        actual = {"viewers": 1000, "orders": 50, "gmv": 5000.0}
        r = client.post("/v1/review", json={"plan": plan, "actual": actual})
        assert r.status_code == 200, r.text
        health = client.post("/v1/model-health", json={})
        assert health.status_code == 200, health.text
        bad = client.post("/v1/model-health", json={"window": 0})
        assert bad.status_code == 400 and "window" in bad.text
    report = health.json()
    assert report["model"]["train_id"] == "svc-test"
    assert report["sessions_with_actuals"] >= 1 and report["drift_reference"] is True
    assert {r["feature"] for r in report["drift"]} == set(DRIFT_INPUTS)
    assert any(r["room_id"] == plan["room_id"] for r in report["rooms"])
    log = ForecastLog(Livecast.inner.forecast_log_path)  # shared by the module's other tests
    for _ in range(100):  # the background writer drains within a moment
        j = log.joined()
        j = j[j["session_id"] == "watch-1"]
        if len(j) == len(TARGETS):
            break
        time.sleep(0.1)
    assert set(j["target"]) == set(TARGETS)
    assert j.set_index("target").loc["gmv", "actual"] == 5000.0
    with sqlite3.connect(log.path) as con:  # plans without a session id are never logged
        ids = {r[0] for r in con.execute("SELECT DISTINCT plan_id FROM forecasts")}
        query = "SELECT inputs FROM plan_inputs WHERE plan_id = 'watch-1'"
        inputs = [json.loads(r[0]) for r in con.execute(query)]
    assert "watch-1" in ids and not any(i.startswith("plan-") for i in ids)
    assert len(inputs) == 1 and set(inputs[0]) == set(DRIFT_INPUTS)  # the forecast's, once
    assert inputs[0]["slot__duration_min"] == plan["planned_duration_min"]
    assert inputs[0]["topic__session_type"] == plan.get("session_type", "daily")


def _backtest(live: pd.DataFrame) -> dict:
    """The backtest figures a bundle carries, from the same predictions (so live = backtest)."""
    out = {}
    for t in TARGETS:
        y, p = live[t].to_numpy(float), live[f"{t}__model_p50"].to_numpy(float)
        inside = (live[f"{t}__model_p10"] <= live[t]) & (live[t] <= live[f"{t}__model_p90"])
        out[t] = {"model": {"wape": float(np.abs(p - y).sum() / y.sum()),
                            "coverage_p10_p90": float(inside.mean())}}  # fmt: skip
    return out


def test_accuracy_by_lead_bucket_and_over_time(tmp_path):
    log = ForecastLog(tmp_path / "lead.db")
    start = pd.Timestamp("2026-03-01 20:00", tz="Asia/Shanghai")
    for i, days in enumerate([1, 3, 10, 20, 45, 90]):
        logged = (start - pd.Timedelta(days=days)).to_pydatetime()
        log.log_forecasts([_item(f"s{i}", "r", start, 100.0)], model="m", logged_at=logged)
    log.log_actuals(pd.DataFrame({"session_id": [f"s{i}" for i in range(6)], "gmv": 150.0}))
    j = log.joined()
    lead = by_lead(j).set_index("lead")
    assert list(lead.index) == ["0-7", "8-14", "15-30", "31-60", ">60"]
    assert lead.loc["0-7", "n"] == 2 and lead.loc[">60", "n"] == 1
    assert lead["bias"].tolist() == pytest.approx([-1 / 3] * 5)
    s = series(j, window=4)
    assert s["n"].tolist() == [1, 2, 3, 4, 4, 4]
    assert s["wape"].tolist() == pytest.approx([1 / 3] * 6)
    assert s["coverage"].tolist() == [1.0] * 6  # 150 lies within 50-200


def test_the_band_flags_a_target_whose_live_accuracy_left_the_backtests(live, tmp_path):
    backtest = _backtest(live)
    same = band_checks(_logged(live, tmp_path / "same.db").joined(), backtest)
    assert {b.target for b in same} == set(TARGETS)
    assert all(not b.outside for b in same), same
    worse = live.copy()
    for t in ("viewers", "gmv"):  # every session's outcome a third of what it was
        worse[t] = worse[t] / 3
    bad = {b.target: b for b in band_checks(_logged(worse, tmp_path / "bad.db").joined(), backtest)}
    assert "coverage" in bad["gmv"].outside and "wape" in bad["gmv"].outside
    assert not bad["orders"].outside
    assert bad["gmv"].coverage_low < backtest["gmv"]["model"]["coverage_p10_p90"]


def test_the_health_report_joins_accuracy_bands_and_input_drift(live, small_frame, tmp_path):
    from training.drift import drift_reference

    log = _logged(live, tmp_path / "health.db")
    plans = small_frame.sample(60, random_state=0)
    inputs = plans[["slot__duration_min", "topic__session_type"]].assign(
        slot__duration_min=plans["slot__duration_min"] * 4  # planners now book long sessions
    )
    items = [
        {**_item(f"plan-{i}", "r", pd.Timestamp("2030-01-01", tz="UTC"), 10.0), "inputs": row}
        for i, row in enumerate(inputs.astype(object).to_dict("records"))
    ]
    log.log_forecasts(items, model="m1")
    meta = {"train_id": "m1", "backtest": _backtest(live),
            "drift_reference": drift_reference(small_frame)}  # fmt: skip
    report = health_report(log, meta)
    assert report["sessions_with_actuals"] == live["session_id"].nunique()
    assert report["retrain_due"] is False and report["reasons"] == []
    assert report["drifted_inputs"] == ["slot__duration_min"]
    drift = {r["feature"]: r for r in report["drift"]}
    assert drift["topic__session_type"]["status"] in {"stable", "moving"}
    assert drift["warmup__videos"]["status"] == "too few plans"  # not logged: not judged
    assert {r["lead"] for r in report["lead"]} <= {"0-7", "8-14", "15-30", "31-60", ">60"}
    assert json.loads(json.dumps(report)) == report
    other = health_report(log, {**meta, "train_id": "m2"})  # another model's plans do not count
    assert all(r["status"] == "too few plans" for r in other["drift"])
    assert health_report(ForecastLog(tmp_path / "none.db"), {})["sessions_with_actuals"] == 0
