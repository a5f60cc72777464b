"""Model choice inside the training period, and the baseline that serves a losing target."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.backtest import choose_source, served
from training.bundle import load_bundle, save_bundle
from training.models import ForecastParams, fit_forecaster
from training.promote import Candidate, decide
from training.selection import select_params, stage_one, stage_two
from training.train import serve_baseline

QUICK = ForecastParams(learning_rate=0.2, max_rounds=60, early_stopping_rounds=10, num_threads=1)


def test_selection_scores_every_candidate_before_the_cut(small_frame) -> None:
    before = small_frame["start_time"].max() - pd.Timedelta(days=40)
    # rows at or after the cut hold nonsense: the choice must not change
    poisoned = small_frame.copy()
    late = poisoned["start_time"] >= before
    poisoned.loc[late, ["viewers", "orders", "gmv"]] = 1e9
    sel = select_params(small_frame, QUICK, before=before, horizon_days=20, targets=("gmv",))
    again = select_params(poisoned, QUICK, before=before, horizon_days=20, targets=("gmv",))
    assert sel.record() == again.record()
    names = {n for n, _ in stage_one(QUICK)}
    assert names <= set(sel.scores["gmv"])
    assert len(sel.scores["gmv"]) == len(names) + 2  # plus the winner's other capacities
    assert sel.chosen["gmv"] == min(sel.scores["gmv"], key=sel.scores["gmv"].__getitem__)
    assert pd.Timestamp(sel.validation["validation_end"]) < before
    chosen = sel.params["gmv"]
    assert chosen.objective in {"log_l2", "tweedie", "poisson"}
    assert [p.objective for _, p in stage_two(chosen)] == [chosen.objective] * 2


def test_selection_off_keeps_the_given_settings(small_frame) -> None:
    before = small_frame["start_time"].max() - pd.Timedelta(days=40)
    given = QUICK.model_copy(update={"select": False, "objective": "tweedie"})
    sel = select_params(small_frame, given, before=before, horizon_days=20)
    assert all(p == given for p in sel.params.values())
    assert sel.scores == {}


@pytest.mark.parametrize("objective", ["tweedie", "poisson"])
def test_count_objectives_forecast_and_explain_consistently(small_frame, objective) -> None:
    params = QUICK.model_copy(update={"objective": objective, "select": False})
    fc = fit_forecaster(small_frame, params, targets=("gmv",))
    X = fc.matrix(small_frame.tail(20))
    log = fc.models["gmv"].predict_log(X)
    assert np.all(np.isfinite(log)) and np.all(log > 0)
    contrib = fc.models["gmv"].contributions(X)
    assert contrib.sum(axis=1) == pytest.approx(log)


def _metrics(model: float, trailing: float, history: float) -> dict:
    m = {"wape": None}
    return {
        "gmv": {
            "model": {**m, "wape": model},
            "trailing_mean": {**m, "wape": trailing},
            "slot_mean": {**m, "wape": 0.9},
            "history_only": {**m, "wape": history},
        }
    }


def test_a_losing_target_is_served_by_the_baseline() -> None:
    assert choose_source(_metrics(0.30, 0.50, 0.40), "gmv") == "model"
    assert choose_source(_metrics(0.45, 0.50, 0.40), "gmv") == "baseline:history_only"
    out = served(_metrics(0.45, 0.50, 0.40))["gmv"]
    assert out["wape"] == 0.40 and not out["loses_to_baseline"]
    # only a spreadsheet rule beats the model: the model serves, and it is flagged
    out = served(_metrics(0.45, 0.40, 0.50))["gmv"]
    assert out["source"] == "model" and out["loses_to_baseline"]


def test_served_baseline_reads_only_room_history_and_survives_the_bundle(
    small_dataset, small_frame, tmp_path
) -> None:
    params = QUICK.model_copy(update={"select": False})
    fc = fit_forecaster(small_frame, params)
    serve_baseline(fc, small_frame, params, ("viewers",))
    model = fc.models["viewers"]
    assert model.source == "baseline:history_only"
    room = [fc.features[i] for i in model.columns]
    assert room and all(c.startswith("room__") for c in room)
    rows = small_frame.tail(30)
    X = fc.matrix(rows)
    # changing the plan (not the room history) does not move the served viewers forecast
    moved = rows.copy()
    moved["slot__duration_min"] = moved["slot__duration_min"] * 3
    assert model.predict_log(fc.matrix(moved)) == pytest.approx(model.predict_log(X))
    contrib = model.contributions(X)
    assert contrib.shape == (len(rows), len(fc.features) + 1)
    assert contrib.sum(axis=1) == pytest.approx(model.predict_log(X))
    path = save_bundle(fc, small_dataset.sessions, small_dataset.session_products, tmp_path / "b")
    loaded = load_bundle(path).forecaster
    assert loaded.models["viewers"].source == "baseline:history_only"
    assert loaded.predict(rows)["viewers_p50"].to_numpy() == pytest.approx(
        fc.predict(rows)["viewers_p50"].to_numpy()
    )
    assert loaded.models["gmv"].source == "model"


def test_promote_refuses_a_candidate_that_loses_to_a_baseline() -> None:
    def cand(train_id, scores, baseline):
        return Candidate(train_id, dict.fromkeys(scores, "1"), scores, "s", "b", {},
                         baseline=baseline)  # fmt: skip

    ok, reason = decide(cand("a", {"viewers": 0.5, "gmv": 0.3}, {"viewers": 0.4, "gmv": 0.5}), None)
    assert not ok and "viewers" in reason and "baseline" in reason
    ok, _ = decide(cand("a", {"viewers": 0.3, "gmv": 0.3}, {"viewers": 0.4, "gmv": 0.5}), None)
    assert ok
