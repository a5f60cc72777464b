"""Model tier: MLflow tracking, the registry and the promotion gate (a temporary store each)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest

from training.bundle import champion_info, load_bundle
from training.data import training_frame
from training.models import ForecastParams
from training.promote import Candidate, decide, promote
from training.pyfunc import plain_frame
from training.registry import CHALLENGER, CHAMPION, alias_version, model_name, run_data
from training.train import train

GOOD = ForecastParams(learning_rate=0.1, max_rounds=300, early_stopping_rounds=20, select=False)
WORSE = ForecastParams(
    learning_rate=0.02, max_rounds=10, early_stopping_rounds=5, num_leaves=4, select=False
)


def _cand(train_id, viewers, gmv, sig="s"):
    return Candidate(
        train_id,
        {"viewers": "1", "gmv": "1"},
        {"viewers": viewers, "gmv": gmv},
        sig,
        f"forecaster-{train_id}",
    )


def test_gate_rules():
    champ = _cand("a", 0.30, 0.40)
    assert decide(_cand("b", 0.29, 0.40), champ)[0]
    assert not decide(_cand("b", 0.30, 0.40), champ)[0]  # a tie is not a win
    assert not decide(_cand("b", 0.25, 0.50), champ)[0]  # mean WAPE worse
    assert decide(_cand("b", 0.9, 0.9), None)[0]  # the first candidate becomes champion
    with pytest.raises(ValueError, match="different folds"):
        decide(_cand("b", 0.1, 0.1, sig="other"), champ)


def test_train_registers_and_a_worse_candidate_is_not_promoted(small_dataset, mlflow_uri, tmp_path):
    models_dir = tmp_path / "models"
    first = train(
        small_dataset,
        params=GOOD,
        models_dir=models_dir,
        report_dir=tmp_path / "r1",
        mlflow_uri=mlflow_uri,
        folds=2,
        horizon_days=20,
    )
    assert set(first.versions) == {"viewers", "orders", "gmv"}
    params, metrics, tags = run_data(alias_or_latest(first, mlflow_uri), mlflow_uri)
    assert tags["train_id"] == first.train_id and "model_wape" in metrics
    assert params["learning_rate"] == "0.1"
    assert json.loads((tmp_path / "r1" / "metrics.json").read_text())["gmv"]["model"]["n"] > 0

    # the registered model is the whole forecast (log-linear base plus trees), not the booster
    frame = training_frame(small_dataset.sessions, small_dataset.session_products).tail(20)
    fc = first.forecaster
    uri = f"models:/{model_name('gmv')}/{first.versions['gmv']}"
    logged = mlflow.pyfunc.load_model(uri)
    # the project code it carries needs its own imports pinned beside the LightGBM stack
    reqs = Path(mlflow.pyfunc.get_model_dependencies(uri)).read_text()
    assert {"lightgbm", "pandera", "pydantic"} <= {r.split("==")[0] for r in reqs.split()}
    np.testing.assert_allclose(
        logged.predict(plain_frame(fc.matrix(frame))),
        fc.models["gmv"].predict_log(fc.matrix(frame)),
    )

    d1 = promote(uri=mlflow_uri, models_dir=models_dir)
    assert d1.promoted
    assert str(alias_version("gmv", CHAMPION, mlflow_uri).version) == first.versions["gmv"]
    assert champion_info(models_dir)["train_id"] == first.train_id
    assert load_bundle(models_dir).metadata["train_id"] == first.train_id

    second = train(
        small_dataset,
        params=WORSE,
        models_dir=models_dir,
        report_dir=tmp_path / "r2",
        mlflow_uri=mlflow_uri,
        folds=2,
        horizon_days=20,
    )
    d2 = promote(uri=mlflow_uri, models_dir=models_dir)
    assert not d2.promoted and "does not beat" in d2.reason
    assert str(alias_version("gmv", CHAMPION, mlflow_uri).version) == first.versions["gmv"]
    assert str(alias_version("gmv", CHALLENGER, mlflow_uri).version) == second.versions["gmv"]
    assert champion_info(models_dir)["train_id"] == first.train_id


def alias_or_latest(result, uri):
    import mlflow

    from training.registry import model_name

    mv = mlflow.MlflowClient(tracking_uri=uri).get_model_version(
        model_name("gmv"), result.versions["gmv"]
    )
    return mv.run_id
