"""Model tier: the forecaster on a small simulated dataset.

Behavioural checks (direction, invariance), interval order, cold start, determinism, the backtest's
time order, bundles and the promotion gate.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

import training.backtest as backtest_module
from features.plan import example_plan
from training.backtest import make_cuts, run_backtest
from training.bundle import load_bundle, save_bundle
from training.models import ForecastParams, fit_forecaster
from training.predict import score_plans

FAST = ForecastParams(
    learning_rate=0.1, max_rounds=300, early_stopping_rounds=20, num_threads=2, select=False
)


@pytest.fixture(scope="module")
def bundle(small_dataset, small_frame, tmp_path_factory):
    fc = fit_forecaster(small_frame, FAST)
    path = tmp_path_factory.mktemp("bundle") / "forecaster-test"
    save_bundle(fc, small_dataset.sessions, small_dataset.session_products, path)
    return load_bundle(path)


def _room_plan(ds, **update):
    """A plan for the busiest simulated room, one day after the data ends."""
    sessions = ds.sessions
    room = sessions["room_id"].value_counts().index[0]
    last = sessions.loc[sessions["room_id"] == room].iloc[-1]
    start = (sessions["start_time"].max() + pd.Timedelta(days=1)).normalize()
    start = start + pd.Timedelta(hours=20)
    base = example_plan().model_copy(
        update={
            "room_id": room,
            "platform": last["platform"],
            "start_time": start.to_pydatetime(),
            "session_type": "daily",
            "title": "日常直播",
        }
    )
    return base.model_copy(update=update)


def test_backtest_never_trains_on_rows_at_or_after_the_cut(small_frame, small_dataset, monkeypatch):
    seen = []
    real_fit = backtest_module.fit_forecaster

    def spy(train, *args, **kwargs):
        seen.append(train["start_time"].max())
        return real_fit(train, *args, **kwargs)

    monkeypatch.setattr(backtest_module, "fit_forecaster", spy)
    windows = make_cuts(small_frame["start_time"], folds=2, horizon_days=20)
    ds = small_dataset
    result = run_backtest(
        small_frame,
        params=FAST,
        windows=windows,
        baselines=False,
        sessions=ds.sessions,
        products=ds.session_products,
    )
    assert len(seen) == 2
    for latest, (cut, _end) in zip(seen, windows, strict=True):
        assert latest < cut
    preds = result.predictions
    assert (preds["start_time"] >= preds["cut"]).all()
    # lead time, and the forecast from the history frozen at the cut (as the service scores)
    assert preds["lead_days"].between(0, 20).all()
    first = preds.sort_values("start_time").groupby(["fold", "room_id"]).head(1).index
    later = preds.index.difference(first)
    for t in ("viewers", "gmv"):
        fresh, frozen = preds[f"{t}__model_p50"], preds[f"{t}__frozen_p50"]
        np.testing.assert_allclose(frozen[first], fresh[first])  # the same history
        assert (frozen[later] != fresh[later]).mean() > 0.9
    from training.report import error_by_lead

    lead = error_by_lead(preds, ["viewers", "gmv"])
    assert set(lead["history"]) == {"fresh", "frozen"}
    assert set(lead["lead_days"]) == {"0-7", "8-14", "15-30", "all"}
    total = lead[(lead["lead_days"] == "all") & (lead["target"] == "gmv")]
    assert total["n"].tolist() == [len(preds)] * 2


def test_intervals_never_cross_and_are_positive(bundle, small_frame):
    pred = bundle.forecaster.predict(small_frame.tail(300))
    for t in ("viewers", "orders", "gmv"):
        assert (pred[f"{t}_p10"] <= pred[f"{t}_p50"]).all()
        assert (pred[f"{t}_p50"] <= pred[f"{t}_p90"]).all()
        assert (pred[f"{t}_p10"] >= 0).all()
        assert np.isfinite(pred[f"{t}_p90"]).all()


def test_cold_start_plan_is_flagged_with_wider_intervals(bundle, small_dataset):
    warm = _room_plan(small_dataset)
    cold = warm.model_copy(update={"room_id": "a-brand-new-room", "followers_at_start": 50_000})
    w, c = score_plans(bundle, [warm, cold])
    assert not w["cold_start"] and c["cold_start"]
    for t in ("viewers", "gmv"):
        assert c[t]["p50"] > 0
        width_cold = np.log(c[t]["p90"] / c[t]["p10"])
        width_warm = np.log(w[t]["p90"] / w[t]["p10"])
        assert width_cold > width_warm


def test_prime_time_beats_3am(bundle, small_dataset):
    plan = _room_plan(small_dataset)
    night = plan.model_copy(update={"start_time": plan.start_time.replace(hour=3)})
    evening, early = score_plans(bundle, [plan, night], drivers=False)
    assert evening["viewers"]["p50"] > early["viewers"]["p50"]


def test_festival_beats_the_same_plan_on_an_ordinary_day(bundle, small_dataset):
    plan = _room_plan(small_dataset)
    tz = plan.start_time.tzinfo
    year = plan.start_time.year
    ordinary = plan.model_copy(update={"start_time": datetime(year, 9, 2, 20, tzinfo=tz)})
    festival = plan.model_copy(
        update={
            "start_time": datetime(year, 11, 10, 20, tzinfo=tz),
            "session_type": "festival_promo",
            "title": "双11 大促 狂欢专场",
        }
    )
    fest, ordi = score_plans(bundle, [festival, ordinary], drivers=False)
    assert fest["gmv"]["p50"] > ordi["gmv"]["p50"]
    assert fest["viewers"]["p50"] > ordi["viewers"]["p50"]


def test_switching_all_promos_off_does_not_raise_gmv(bundle, small_dataset):
    plan = _room_plan(small_dataset)
    off = plan.model_copy(
        update={
            "lottery_count": 0,
            "red_envelope_count": 0,
            "flash_sale_rounds": 0,
            "coupon_value": 0.0,
        }
    )
    with_promos, without = score_plans(bundle, [plan, off], drivers=False)
    assert without["gmv"]["p50"] <= with_promos["gmv"]["p50"]


def test_explanations_sum_to_the_log_forecast(bundle, small_dataset):
    plan = _room_plan(small_dataset)
    (item,) = score_plans(bundle, [plan])
    exp = item["explanation"]
    assert set(exp["families"]) == {"topic", "slot", "mix", "promo", "warmup", "room"}
    log_pred = exp["baseline"] + sum(exp["families"].values())
    median_offset = bundle.forecaster.models["gmv"].offsets_warm[1]
    assert np.expm1(log_pred + median_offset) == pytest.approx(item["gmv"]["p50"], rel=1e-6)
    assert len(exp["drivers"]) == 5


def test_the_base_carries_a_forecast_past_the_largest_training_outcome():
    """Trees alone cannot forecast above the outcomes their leaves average. The biggest room's
    festival session (festivals were only seen in smaller rooms) goes past every training
    outcome with the log-linear base."""
    rng = np.random.default_rng(0)
    n = 3_000
    level = rng.uniform(8, 14, n)  # the room's recent log GMV
    festival = (rng.random(n) < 0.15) & (level < 12)
    frame = pd.DataFrame(
        {
            "session_id": [f"s{i}" for i in range(n)],
            "start_time": pd.date_range("2024-01-01", periods=n, freq="h", tz="Asia/Shanghai"),
            "room__n_prior": 10.0,
            "room__gmv_mean_20": level,
            "slot__in_window_d11": festival.astype(float),
            "gmv": np.expm1(level + 1.0 * festival + rng.normal(0, 0.2, n)),
        }
    )
    fc = fit_forecaster(frame, FAST, targets=("gmv",))
    top = frame.iloc[[0]].assign(room__gmv_mean_20=14.0, slot__in_window_d11=1.0)
    p50 = fc.predict(top)["gmv_p50"].iloc[0]
    assert p50 > frame["gmv"].max()
    assert np.log1p(p50) == pytest.approx(15.0, abs=0.3)
    contrib = fc.models["gmv"].contributions(fc.matrix(top))
    assert contrib.sum() == pytest.approx(fc.models["gmv"].predict_log(fc.matrix(top))[0])


def test_same_seed_same_model_same_predictions(small_frame):
    a = fit_forecaster(small_frame, FAST).predict(small_frame.tail(200))
    b = fit_forecaster(small_frame, FAST).predict(small_frame.tail(200))
    pd.testing.assert_frame_equal(a, b)


def test_bundle_round_trip_predicts_identically(bundle, small_dataset, tmp_path):
    plan = _room_plan(small_dataset)
    save_bundle(bundle.forecaster, bundle.history_sessions, bundle.history_products, tmp_path / "b")
    again = load_bundle(tmp_path / "b")
    assert score_plans(again, [plan]) == [
        {**r, "model": {**r["model"], "bundle": "b"}} for r in score_plans(bundle, [plan])
    ]


def test_interval_offsets_keep_the_conformal_guarantee_on_few_sessions() -> None:
    from training.models import _conformal_rank, _offsets

    # 65 calibration sessions (a short export's last 20 %): the 6th and the 60th residual
    assert (_conformal_rank(65, 0.1), _conformal_rank(65, 0.9)) == (6, 60)
    # too few residuals for a 10 % tail: the most extreme one bounds the interval
    assert (_conformal_rank(5, 0.1), _conformal_rank(5, 0.9)) == (1, 5)
    # exchangeable residuals: a new one falls inside P10..P90 at least 80 % of the time
    rng = np.random.default_rng(0)
    inside = []
    for _ in range(8000):
        r = rng.standard_t(3, size=31)
        lo, mid, hi = _offsets(r[:30])
        assert lo <= mid <= hi
        inside.append(lo <= r[30] <= hi)
    # (25 / 31 = 0.806 in theory; empirical 10 % / 90 % quantiles give 24 / 31 = 0.774)
    assert 0.795 <= np.mean(inside) <= 0.83


def test_forecasts_do_not_grow_with_the_gap_since_the_rooms_last_session(bundle, small_dataset):
    # a plan 1 and 5 years after the data: room history is the same, only the gap since the
    # room's last session (and the weekday) differ; training never saw a gap of even a month
    near, far = (
        _room_plan(small_dataset, start_time=_room_plan(small_dataset).start_time + gap)
        for gap in (pd.Timedelta(days=365), pd.Timedelta(days=5 * 365 + 1))
    )
    a, b = score_plans(bundle, [near, far], drivers=False)
    room = small_dataset.sessions[small_dataset.sessions["room_id"] == near.room_id]
    for target in ("viewers", "gmv"):
        assert 0.5 < b[target]["p50"] / a[target]["p50"] < 2.0
        assert b[target]["p90"] < 10 * room[target].max()


def test_the_base_holds_rates_and_gaps_to_their_training_range_and_extrapolates_scales():
    from training.models import LogLinear

    rng = np.random.default_rng(0)
    gap = rng.uniform(0, 14, 500)  # days since the last session: a gap, not a scale
    level = np.exp(rng.normal(8, 1, 500))  # the room's trailing viewers: a scale
    y = 0.05 * gap + np.log1p(level) + rng.normal(0, 0.1, 500)
    X = np.column_stack([gap, level])
    base = LogLinear.fit(X, y, np.zeros(2, int), np.zeros(2, bool), alpha=1.0, clip=0.01)
    edge, past = base.predict(np.array([[gap.max(), 1e4], [10 * gap.max(), 1e4]]))
    assert past == pytest.approx(edge)
    small, big = base.predict(np.array([[7.0, level.max()], [7.0, 100 * level.max()]]))
    assert big - small == pytest.approx(np.log(100), rel=0.1)  # a bigger room, a bigger forecast
