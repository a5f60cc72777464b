"""Fan-tier model: scoring, decision rule, determinism, bundles, backtest, promotion gate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from features.btyd import BTYD_COLUMNS
from features.fans import FEATURE_COLUMNS, TIERS, TierRules, fan_features
from training.tiers import (
    PROBA_COLUMNS,
    TIER_CHAMPION_FILE,
    TierParams,
    choose_class_weights,
    decide,
    fit_tier_model,
    load_tier_bundle,
    macro_f1_codes,
    save_tier_bundle,
    score_fans,
    tier_frame,
)

CUTOFFS = list(pd.date_range("2024-04-01", periods=4, freq="30D"))
SCORE_AT = pd.Timestamp("2024-08-01")


@pytest.fixture(scope="session")
def fan_events():
    """Small simulated fan events (2,000 fans over 240 days)."""
    from features.simulate import simulate

    return simulate(seed=0, rooms=8, days=240, fans=2000).fan_events


@pytest.fixture(scope="session")
def frame(fan_events):
    return tier_frame(fan_events, CUTOFFS)


@pytest.fixture(scope="session")
def model(frame):
    return fit_tier_model(None, CUTOFFS, frame=frame)


@pytest.fixture(scope="session")
def feats(fan_events):
    return fan_features(fan_events, SCORE_AT)


def test_score_fans_shape_probabilities_and_tiers(model, feats):
    out = score_fans(model, feats)
    assert list(out.columns) == ["fan_id", "tier", *PROBA_COLUMNS]
    assert len(out) == len(feats) > 500
    assert out["fan_id"].tolist() == feats["fan_id"].tolist()
    assert list(out["tier"].cat.categories) == list(TIERS)
    proba = out[list(PROBA_COLUMNS)].to_numpy()
    assert proba.dtype == np.float64 and (proba >= 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    codes = out["tier"].cat.codes.to_numpy()
    np.testing.assert_array_equal(codes, decide(proba, model.class_weights))
    # the decision rule predicts more than one tier, including a rare one
    assert out["tier"].nunique() >= 3


def test_score_fans_rejects_missing_feature_columns(model, feats):
    with pytest.raises(ValueError, match="fan__days_since_last_event"):
        score_fans(model, feats.drop(columns=["fan__days_since_last_event"]))


def test_same_seed_same_model_and_predictions(frame, model, feats):
    again = fit_tier_model(None, CUTOFFS, frame=frame)
    assert again.class_weights == model.class_weights
    pd.testing.assert_frame_equal(score_fans(again, feats), score_fans(model, feats))


def test_p_dormant_rises_with_days_since_last_event(model, feats):
    out = score_fans(model, feats)
    days = feats["fan__days_since_last_event"]
    recent = out.loc[days < 7, "p_dormant"].mean()
    lapsed = out.loc[days > 60, "p_dormant"].mean()
    assert recent < lapsed - 0.2


def test_model_is_trained_with_weights_from_the_latest_cutoff(model):
    assert model.metadata["weights_cutoffs"] == [str(c) for c in CUTOFFS[-2:]]
    assert model.features == [*FEATURE_COLUMNS, *BTYD_COLUMNS]
    assert 1 <= model.metadata["num_trees"] <= TierParams().max_rounds
    # the buy-till-you-die models it scores with were fitted on its latest cutoff
    assert model.btyd is not None and model.btyd.fitted_at == str(pd.Timestamp(CUTOFFS[-1]))
    assert model.btyd.horizon_days == model.rules.window_days


def test_btyd_columns_are_derived_from_their_inputs_at_scoring(model, feats):
    """Scoring never trusts BTYD columns handed in: it derives them with the model's fit."""
    stale = feats.assign(**{c: 123.0 for c in BTYD_COLUMNS})
    pd.testing.assert_frame_equal(score_fans(model, stale), score_fans(model, feats))
    derived = model.derived(feats)
    buyer = feats["fan__orders_all"].to_numpy() >= 1
    for name in BTYD_COLUMNS:
        assert np.isnan(derived[name][~buyer]).all()  # the models describe buyers only
        assert np.isfinite(derived[name][buyer]).all()
    # more expected orders and a higher chance of being alive: a lower churn risk on average
    out = score_fans(model, feats)
    e = derived["fan__pnbd_expected_orders"]
    hi, lo = buyer & (e > np.nanquantile(e, 0.8)), buyer & (e < np.nanquantile(e, 0.2))
    assert out.loc[hi, "p_dormant"].mean() < out.loc[lo, "p_dormant"].mean() - 0.2
    with pytest.raises(ValueError, match="fan__days_since_first_order"):
        score_fans(model, feats.drop(columns=["fan__days_since_first_order"]))


def test_macro_f1_codes_matches_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 500)
    pred = np.where(rng.random(500) < 0.6, y, rng.integers(0, 3, 500))
    expected = f1_score(y, pred, labels=range(4), average="macro", zero_division=0)
    assert macro_f1_codes(y, pred) == pytest.approx(expected)


def test_class_weights_lift_macro_f1_when_a_rare_class_is_never_argmax():
    rng = np.random.default_rng(1)
    n = 4000
    y = rng.choice(4, size=n, p=[0.05, 0.1, 0.15, 0.7])
    # an honest but timid classifier: the true class gets a bump too small to win argmax
    proba = np.tile([0.05, 0.1, 0.15, 0.7], (n, 1))
    proba[np.arange(n), y] += 0.2
    proba /= proba.sum(axis=1, keepdims=True)
    plain = macro_f1_codes(y, decide(proba, (1, 1, 1, 1)))
    w = choose_class_weights(proba, y)
    assert macro_f1_codes(y, decide(proba, w)) > plain + 0.3
    assert w[3] == 1.0


def test_bundle_round_trip_and_tier_champion_pointer(model, feats, tmp_path):
    from training.bundle import CHAMPION_FILE, set_champion

    path = save_tier_bundle(model, tmp_path / "models" / "tiers-abc")
    assert sorted(p.name for p in path.iterdir()) == ["bundle.json", "tiers.lgb.txt"]
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".")]
    loaded = load_tier_bundle(path)
    assert loaded.rules == model.rules and loaded.class_weights == model.class_weights
    assert loaded.btyd == model.btyd and loaded.calibration == model.calibration
    pd.testing.assert_frame_equal(score_fans(loaded, feats), score_fans(model, feats))
    with pytest.raises(FileNotFoundError, match=r"no bundle\.json"):
        load_tier_bundle(tmp_path / "models")
    set_champion(tmp_path / "models", path, {"train_id": "abc"}, TIER_CHAMPION_FILE)
    assert not (tmp_path / "models" / CHAMPION_FILE).exists()
    assert load_tier_bundle(tmp_path / "models").metadata["bundle"] == "tiers-abc"


def test_rules_shape_the_labels_and_travel_with_the_model(fan_events, frame):
    rules = TierRules(window_days=30, core_min_spend=50.0)
    m = fit_tier_model(fan_events, CUTOFFS[-2:], rules=rules)
    assert m.rules == rules
    default_core = frame.loc[frame["cutoff"].isin(CUTOFFS[-2:]), "tier"].eq("core").sum()
    assert m.metadata["label_counts"]["core"] > default_core


# ----------------------------------------------------------------------------------------------
# Backtest, report, CLI


@pytest.fixture(scope="session")
def backtest(fan_events):
    from training.tiers_backtest import run_tier_backtest

    return run_tier_backtest(fan_events, train_cutoffs=4)


def test_backtest_never_learns_from_labels_past_the_first_evaluation_cutoff(fan_events, backtest):
    plan = backtest.plan
    first_eval = plan.evaluation[0]
    window = pd.Timedelta(days=backtest.rules.window_days)
    assert plan.train and all(c + window <= first_eval for c in plan.train)
    first_model = backtest.models[first_eval]
    assert [pd.Timestamp(c) for c in first_model.metadata["cutoffs"]] == plan.train
    # walk-forward: every evaluation cutoff's model learnt only labels complete by that cutoff
    assert set(backtest.models) == set(plan.evaluation)
    for c, m in backtest.models.items():
        cuts = [pd.Timestamp(t) for t in m.metadata["cutoffs"]]
        assert cuts == plan.train_for(c) and all(t + window <= c for t in cuts)
    assert plan.train_for(plan.evaluation[-1])[-1] > plan.train[-1]  # the later one knows more
    # refit on events cut at the first evaluation cutoff: the very same model
    times = fan_events["event_time"].dt.tz_convert("Asia/Shanghai").dt.tz_localize(None)
    cut = fan_events[times < first_eval]
    again = fit_tier_model(cut, plan.train)
    assert again.btyd == first_model.btyd is not None
    feats = fan_features(fan_events, SCORE_AT)
    pd.testing.assert_frame_equal(score_fans(again, feats), score_fans(first_model, feats))


def test_model_beats_persistence_and_rfm_on_small_simulated_fans(backtest):
    m = backtest.metrics
    assert m["model"]["macro_f1"] > m["persistence"]["macro_f1"]
    assert m["model"]["macro_f1"] > m["rfm_rules"]["macro_f1"]
    assert m["model"]["dormant_auc"] > m["persistence"]["dormant_auc"]


def test_metrics_json_and_report(backtest, tmp_path):
    import json

    from training.tiers_backtest import METHODS, write_tier_report

    paths = write_tier_report(backtest, tmp_path / "r")
    metrics = json.loads(paths["metrics"].read_text())
    by_cutoff = metrics.pop("by_cutoff")
    assert set(metrics) == set(METHODS)
    n = metrics["model"]["n"]
    assert n == len(backtest.predictions) > 0
    for method, vals in metrics.items():
        assert set(vals) == {"macro_f1", "log_loss", "ece", "dormant_auc", "recall", "n"}
        assert set(vals["recall"]) == set(TIERS) and vals["n"] == n
        assert 0 <= vals["macro_f1"] <= 1 and 0.5 < vals["dormant_auc"] <= 1
        assert (vals["log_loss"] is None) == (method != "model")
        assert (vals["ece"] is None) == (method != "model")
    assert all(0 <= e < 0.05 for e in metrics["model"]["ece"].values())
    # per cutoff: every method at every evaluation cutoff, rows adding up to the pooled n
    assert list(by_cutoff) == [f"{c:%Y-%m-%d}" for c in backtest.plan.evaluation]
    assert all(set(v) == set(METHODS) for v in by_cutoff.values())
    assert sum(v["model"]["n"] for v in by_cutoff.values()) == n
    report = paths["report"].read_text()
    assert "Confusion matrix: model" in report and "persistence" in report
    assert "Bars at every evaluation cutoff" in report and "btyd" in report
    assert paths["plot"].stat().st_size > 1000 and paths["reliability"].stat().st_size > 1000
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.startswith(".")]


def test_purchase_only_histories_work(fan_events):
    """CDNOW-like input: only order / refund events (no watch or interaction features)."""
    from training.tiers_backtest import run_tier_backtest

    orders = fan_events[fan_events["event_type"].isin(["order", "refund"])].reset_index(drop=True)
    bt = run_tier_backtest(orders, rules=TierRules(window_days=60), train_cutoffs=3)
    assert bt.metrics["model"]["n"] > 0
    assert bt.metrics["model"]["dormant_auc"] > 0.6
    scored = score_fans(bt.model, fan_features(orders, SCORE_AT))
    assert scored["p_dormant"].notna().all() and scored["tier"].notna().all()


def test_imported_purchase_log_is_scored(model):
    from features.importers.transactions import import_transactions
    from tests.conftest import ROOT

    result = import_transactions(
        ROOT / "tests" / "data" / "purchases.csv",
        fan_col="fan",
        time_col="time",
        amount_col="amount",
        sep=None,
        time_format=None,
        room_id="store",
        tz="Asia/Shanghai",
    )
    feats = fan_features(result.table, "2024-04-01")
    scored = score_fans(model, feats)
    assert len(scored) == result.table["fan_id"].nunique() > 0
    np.testing.assert_allclose(scored[list(PROBA_COLUMNS)].sum(axis=1), 1.0)


def test_too_short_history_is_a_clear_error(fan_events):
    from training.tiers_backtest import run_tier_backtest

    with pytest.raises(ValueError, match="too short"):
        run_tier_backtest(fan_events, rules=TierRules(window_days=120), eval_cutoffs=2)


def test_cli_backtest_writes_metrics_and_rejects_bad_input(fan_events, tmp_path):
    import json

    from typer.testing import CliRunner

    from livecast.cli import app

    data = tmp_path / "data"
    data.mkdir()
    fan_events.to_parquet(data / "fan_events.parquet")
    out = tmp_path / "report"
    runner = CliRunner()
    args = ["segments", "backtest", "--events", str(data), "--out", str(out)]
    res = runner.invoke(app, [*args, "--train-cutoffs", "3"])
    assert res.exit_code == 0, res.output
    assert set(json.loads((out / "metrics.json").read_text())) == {
        "model",
        "persistence",
        "rfm_rules",
        "btyd",
        "by_cutoff",
    }
    assert "macro_f1" in res.output
    bad = fan_events.head(50).copy()
    bad["event_type"] = bad["event_type"].astype(object)
    bad.loc[3, "event_type"] = "teleport"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    res = runner.invoke(
        app, ["segments", "backtest", "--events", str(tmp_path / "bad.csv"), "--out", str(out)]
    )
    assert res.exit_code == 2
    assert "event_type" in res.output and "teleport" in res.output


# ----------------------------------------------------------------------------------------------
# Tracking and promotion


def test_tier_gate_prefers_higher_macro_f1():
    from training.promote import Candidate, decide
    from training.tiers_backtest import TIER_GATE

    def cand(train_id, f1):
        bundle = f"tiers-{train_id}"
        return Candidate(train_id, {"tiers": "1"}, {"tiers": f1}, "s", bundle, {}, TIER_GATE)

    assert decide(cand("b", 0.51), cand("a", 0.50))[0]
    assert not decide(cand("b", 0.50), cand("a", 0.50))[0]
    ok, reason = decide(cand("b", 0.40), cand("a", 0.50))
    assert not ok and "macro-F1 0.4000 vs 0.5000" in reason


def test_train_registers_and_a_worse_tier_candidate_is_not_promoted(
    fan_events, mlflow_uri, tmp_path
):
    from training.bundle import CHAMPION_FILE, champion_info
    from training.promote import promote
    from training.registry import CHALLENGER, CHAMPION, alias_version, run_data
    from training.tiers_backtest import TARGET, TIER_GATE, train_tiers

    models = tmp_path / "models"
    kwargs = dict(models_dir=models, mlflow_uri=mlflow_uri, train_cutoffs=3)
    good = train_tiers(fan_events, report_dir=tmp_path / "r1", **kwargs)
    params, metrics, tags = run_data(alias_or_run(TARGET, good.version, mlflow_uri), mlflow_uri)
    assert tags["train_id"] == good.train_id and tags["bundle"] == f"tiers-{good.train_id}"
    assert metrics["model_macro_f1"] == pytest.approx(good.backtest.metrics["model"]["macro_f1"])
    assert "persistence_dormant_auc" in metrics and params["rule_window_days"] == "30"
    assert load_tier_bundle(good.bundle_dir).metadata["train_id"] == good.train_id

    first = promote(uri=mlflow_uri, models_dir=models, gate=TIER_GATE)
    assert first.promoted
    assert str(alias_version(TARGET, CHAMPION, mlflow_uri).version) == good.version
    assert champion_info(models, TIER_CHAMPION_FILE)["train_id"] == good.train_id
    assert not (models / CHAMPION_FILE).exists()  # the forecaster's pointer is untouched

    weak = TierParams(max_rounds=5, num_leaves=4, tune_weights=False)
    worse = train_tiers(fan_events, report_dir=tmp_path / "r2", params=weak, **kwargs)
    assert worse.backtest.signature == good.backtest.signature
    second = promote(uri=mlflow_uri, models_dir=models, gate=TIER_GATE)
    assert not second.promoted and "does not beat" in second.reason
    assert str(alias_version(TARGET, CHAMPION, mlflow_uri).version) == good.version
    assert str(alias_version(TARGET, CHALLENGER, mlflow_uri).version) == worse.version
    assert load_tier_bundle(models).metadata["train_id"] == good.train_id


def alias_or_run(target, version, uri):
    import mlflow

    from training.registry import model_name

    return (
        mlflow.MlflowClient(tracking_uri=uri).get_model_version(model_name(target), version).run_id
    )


@pytest.mark.shared
def test_cdnow_model_beats_persistence_and_rfm_rules():
    """CDNOW purchases, 90-day windows, core from 100 USD: the README's real-data bars."""
    from features.importers.transactions import import_transactions
    from tests.conftest import shared_file
    from training.tiers_backtest import run_tier_backtest

    path = shared_file("cdnow", "CDNOW_master.txt")
    events = import_transactions(
        path,
        fan_col="customer_id",
        time_col="date",
        amount_col="dollar_value",
        sep=r"\s+",
        time_format="%Y%m%d",
        room_id="store",
        tz="Asia/Shanghai",
    ).table
    bt = run_tier_backtest(events, rules=TierRules(window_days=90, core_min_spend=100.0))
    m = bt.metrics
    for base in ("persistence", "rfm_rules"):
        assert m["model"]["macro_f1"] > m[base]["macro_f1"], base
        assert m["model"]["dormant_auc"] > m[base]["dormant_auc"], base


def test_calibration_undoes_overconfidence_and_keeps_calibrated_probabilities():
    from training.tiers import Calibration, fit_calibration

    rng = np.random.default_rng(3)
    logits = rng.normal(0, 1.2, (20_000, 4))
    true = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(4, p=p) for p in true])
    sharp = Calibration(0.5).apply(true)  # over-confident: log p doubled
    fitted = fit_calibration(sharp, y)
    assert fitted.temperature == pytest.approx(2.0, rel=0.1)
    rows = np.arange(len(y))

    def loss(p):
        return -np.log(p[rows, y]).mean()

    assert loss(fitted.apply(sharp)) < loss(sharp) - 0.05
    assert abs(loss(fit_calibration(true, y).apply(true)) - loss(true)) < 0.002
    assert Calibration.from_dict(fitted.to_dict()) == fitted


def test_lapsed_sample_keeps_active_fans_and_weights_the_lapsed_back_up(frame):
    from training.tiers import lapsed_sample

    rules = TierRules()
    w = lapsed_sample(frame, rules, 0.25)
    lapsed = frame["fan__days_since_last_event"].to_numpy() > 2 * rules.window_days
    assert (w[~lapsed] == 1).all()
    assert set(np.unique(w[lapsed])) == {0.0, 4.0}
    assert abs((w[lapsed] > 0).mean() - 0.25) < 0.03
    assert w[lapsed].sum() == pytest.approx(lapsed.sum(), rel=0.1)  # unbiased in total
    np.testing.assert_array_equal(w, lapsed_sample(frame, rules, 0.25))  # the same every run
    assert (lapsed_sample(frame, rules, 1.0) == 1).all()
