"""Serving a registered model version: its bundle is the local export or the run's artifact."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from features.plan import example_plan
from livecast import cli_serve
from livecast.cli import app
from livecast.config import get_settings
from training.bundle import VERSION_CACHE, load_bundle, version_bundle
from training.models import ForecastParams
from training.predict import score_plans
from training.promote import promote
from training.train import train

runner = CliRunner()
FAST = ForecastParams(
    learning_rate=0.2,
    num_leaves=8,
    max_rounds=30,
    early_stopping_rounds=5,
    num_threads=1,
    select=False,
)


@pytest.fixture(scope="module")
def trained(small_dataset, _mlflow_template, tmp_path_factory):
    """One small training registered in a store of its own: (uri, models folder, result)."""
    tmp = tmp_path_factory.mktemp("serve-version")
    shutil.copy(_mlflow_template, tmp / "mlruns.db")
    uri = f"sqlite:///{tmp / 'mlruns.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        result = train(
            small_dataset,
            params=FAST,
            models_dir=tmp / "models",
            report_dir=tmp / "report",
            mlflow_uri=uri,
            folds=1,
            horizon_days=20,
        )
    return uri, tmp / "models", result


@pytest.fixture
def settings_env(trained, monkeypatch):
    uri, models_dir, _ = trained
    monkeypatch.setenv("LIVECAST_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("LIVECAST_MLFLOW_URI", uri)
    get_settings.cache_clear()
    yield trained
    get_settings.cache_clear()


def _forecast(path):
    bundle = load_bundle(path)
    plan = example_plan().model_copy(update={"room_id": str(bundle.history_sessions.room_id[0])})
    return [{k: v for k, v in item.items() if k != "model"} for item in score_plans(bundle, [plan])]


def test_a_version_resolves_to_the_local_export(trained):
    uri, models_dir, result = trained
    for target, version in result.versions.items():
        path = version_bundle(version, target=target, uri=uri, models_dir=models_dir)
        assert path == result.bundle_dir


def test_without_the_local_export_the_run_artifact_is_downloaded(trained, tmp_path):
    uri, _, result = trained
    elsewhere = tmp_path / "models"
    stale = elsewhere / result.bundle_dir.name  # same name, another training: not used
    stale.mkdir(parents=True)
    (stale / "bundle.json").write_text('{"train_id": "other"}')
    for target in ("viewers", "gmv"):  # the artifact lives in one run; any target finds it
        path = version_bundle(result.versions[target], target=target, uri=uri, models_dir=elsewhere)
        assert path == elsewhere / VERSION_CACHE / result.bundle_dir.name
    assert load_bundle(path).metadata["train_id"] == result.train_id
    assert _forecast(path) == _forecast(result.bundle_dir)
    assert [p.name for p in (elsewhere / VERSION_CACHE).iterdir()] == [result.bundle_dir.name]


def test_champion_alias_resolves_after_promotion(trained):
    uri, models_dir, result = trained
    with pytest.raises(ValueError, match="no alias @champion"):
        version_bundle("@champion", uri=uri, models_dir=models_dir)
    assert promote(uri=uri, models_dir=models_dir).promoted
    for ref in ("@champion", "champion"):
        assert version_bundle(ref, uri=uri, models_dir=models_dir) == result.bundle_dir


@pytest.mark.parametrize(
    ("ref", "message"),
    [("99", "livecast-gmv has no version 99"), ("@nope", "livecast-gmv has no alias @nope")],
)
def test_unknown_version_or_alias_is_a_clear_error(trained, ref, message):
    uri, models_dir, _ = trained
    with pytest.raises(ValueError, match=message):
        version_bundle(ref, uri=uri, models_dir=models_dir)


def test_a_run_without_a_bundle_artifact_is_a_clear_error(trained, tmp_path):
    import mlflow

    from training.registry import BUNDLE_RUN_TAG, model_version

    uri, _, result = trained
    client = mlflow.MlflowClient()
    run_id = model_version("orders", result.versions["orders"], uri).run_id
    holder = client.get_run(run_id).data.tags[BUNDLE_RUN_TAG]
    client.set_tag(run_id, BUNDLE_RUN_TAG, run_id)  # points at itself: a run without the artifact
    try:
        with pytest.raises(ValueError, match="has no usable bundle artifact"):
            version_bundle(result.versions["orders"], target="orders", uri=uri, models_dir=tmp_path)
    finally:
        client.set_tag(run_id, BUNDLE_RUN_TAG, holder)
    assert not (tmp_path / VERSION_CACHE).exists() or not any((tmp_path / VERSION_CACHE).iterdir())


def test_serve_model_version_hands_the_bundle_to_the_service(settings_env, monkeypatch):
    _, _, result = settings_env
    calls = []
    monkeypatch.setattr(cli_serve.os, "execve", lambda *args: calls.append(args))
    r = runner.invoke(
        app, ["serve", "--model-version", result.versions["viewers"], "--target", "viewers"]
    )
    assert r.exit_code == 0, r.output
    assert calls[0][2]["LIVECAST_SERVE_BUNDLE"] == str(result.bundle_dir.resolve())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model-version", "1", "--bundle", "."], "mutually exclusive"),
        (["--model-version", "99"], "has no version 99"),
        (["--model-version", "@nope"], "has no alias @nope"),
        (["--model-version", "1", "--target", "fans"], "unknown target 'fans'"),
    ],
)
def test_serve_argument_errors_exit_2_without_traceback(settings_env, args, message):
    r = runner.invoke(app, ["serve", *args])
    assert r.exit_code == 2 and message in r.output
    assert "Traceback" not in r.output


def test_serve_model_version_without_a_store(tmp_path, monkeypatch):
    missing = tmp_path / "missing.db"
    monkeypatch.setenv("LIVECAST_MLFLOW_URI", f"sqlite:///{missing}")
    get_settings.cache_clear()
    try:
        r = runner.invoke(app, ["serve", "--model-version", "@champion"])
    finally:
        get_settings.cache_clear()
    assert r.exit_code == 2 and "no MLflow store" in r.output
    assert not missing.exists()
