"""Fan-tier model: scoring, decision rule, determinism, bundles, backtest, promotion gate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

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
    assert model.metadata["weights_cutoff"] == str(CUTOFFS[-1])
    assert model.features == list(FEATURE_COLUMNS)
    assert 1 <= model.metadata["num_trees"] <= TierParams().max_rounds


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
