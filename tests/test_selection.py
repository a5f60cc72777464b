"""Model choice inside the training period, and the baseline that serves a losing target."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.plan import example_plan
from features.sessions import IDENTITY_COLUMN, apply_vocab, feature_columns, model_matrix
from serving.fastpath import PlanScorer
from training.backtest import choose_source, served
from training.bundle import load_bundle, save_bundle
from training.models import IDENTITY_MIN_SESSIONS, ForecastParams, fit_forecaster
from training.promote import Candidate, decide
from training.selection import MAX_IDENTITY_ROOMS, select_params, stage_one, stage_two
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
    # plus the winner's other capacities and, with 8 rooms, the winner with the room identity
    assert small_frame["room_id"].nunique() <= MAX_IDENTITY_ROOMS
    assert len(sel.scores["gmv"]) == len(names) + 3
    assert sum(n.endswith("+room") for n in sel.scores["gmv"]) == 1
    assert sel.chosen["gmv"] == min(sel.scores["gmv"], key=sel.scores["gmv"].__getitem__)
    assert pd.Timestamp(sel.validation["validation_end"]) < before
    chosen = sel.params["gmv"]
    assert chosen.objective in {"log_l2", "tweedie", "poisson"}
    assert [p.objective for _, p in stage_two(chosen)] == [chosen.objective] * 2
    plain = chosen.model_copy(update={"identity": False})
    assert [p.identity for _, p in stage_two(plain, identity=True)] == [False, False, True]


def test_identity_is_tried_only_with_few_rooms(small_frame, monkeypatch) -> None:
    import training.selection as selection

    before = small_frame["start_time"].max() - pd.Timedelta(days=40)
    monkeypatch.setattr(selection, "MAX_IDENTITY_ROOMS", small_frame["room_id"].nunique() - 1)
    sel = select_params(small_frame, QUICK, before=before, horizon_days=20, targets=("gmv",))
    assert not any(n.endswith("+room") for n in sel.scores["gmv"])
    assert not sel.params["gmv"].identity


def test_room_identity_is_read_only_by_the_targets_that_chose_it(
    small_dataset, small_frame, tmp_path
) -> None:
    # the feature frame carries the room id once, as text; it is not a default model input
    assert (small_frame[IDENTITY_COLUMN] == small_frame["room_id"]).all()
    assert IDENTITY_COLUMN not in feature_columns(small_frame)
    params = QUICK.model_copy(update={"select": False})
    per_target = {"gmv": params.model_copy(update={"identity": True})}
    fc = fit_forecaster(small_frame, params, per_target=per_target)
    assert fc.features == [*feature_columns(small_frame), IDENTITY_COLUMN]
    counts = small_frame.groupby("room_id")["gmv"].count()
    assert fc.vocab[IDENTITY_COLUMN] == tuple(sorted(counts[counts >= IDENTITY_MIN_SESSIONS].index))
    assert fc.models["gmv"].columns is None
    assert fc.models["viewers"].columns == tuple(range(len(fc.features) - 1))
    assert fc.models["gmv"].booster.num_feature() == len(fc.features)
    assert fc.models["viewers"].booster.num_feature() == len(fc.features) - 1

    rows = small_frame.tail(30)
    before = fc.predict(rows)
    # a room outside the vocabulary reads as missing identity: no error, viewers unmoved
    renamed = rows.assign(**{IDENTITY_COLUMN: "room-never-seen"})
    after = fc.predict(renamed)
    assert after["viewers_p50"].to_numpy() == pytest.approx(before["viewers_p50"].to_numpy())
    assert np.isfinite(after["gmv_p50"]).all() and (after["gmv_p50"] >= 0).all()
    assert fc.matrix(renamed)[IDENTITY_COLUMN].isna().all()
    cols = {c: renamed[c].to_numpy(dtype=object) for c in fc.features}
    assert np.isnan(model_matrix(cols, fc.features, fc.vocab)[:, -1]).all()
    contrib = fc.models["gmv"].contributions(fc.matrix(rows))
    assert contrib.sum(axis=1) == pytest.approx(fc.models["gmv"].predict_log(fc.matrix(rows)))

    path = save_bundle(fc, small_dataset.sessions, small_dataset.session_products, tmp_path / "b")
    bundle = load_bundle(path)
    assert bundle.forecaster.vocab[IDENTITY_COLUMN] == fc.vocab[IDENTITY_COLUMN]
    assert bundle.forecaster.predict(rows)["gmv_p50"].to_numpy() == pytest.approx(
        before["gmv_p50"].to_numpy()
    )
    # the service scores a known room and a new one alike
    scorer = PlanScorer(bundle)
    known = example_plan().model_copy(update={"room_id": str(small_frame["room_id"].iloc[0])})
    new = known.model_copy(update={"room_id": "room-never-seen"})
    out = scorer.score([known, new], drivers=True)
    assert [o["cold_start"] for o in out] == [False, True]
    assert all(o["gmv"]["p50"] > 0 for o in out)


def test_open_vocabulary_reads_unknown_rooms_as_missing() -> None:
    frame = pd.DataFrame({IDENTITY_COLUMN: ["a", "b", "zzz", None]})
    out = apply_vocab(frame, {IDENTITY_COLUMN: ("a", "b")})
    assert out[IDENTITY_COLUMN].tolist()[:2] == ["a", "b"]
    assert out[IDENTITY_COLUMN].isna().tolist() == [False, False, True, True]


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
