"""Shared fixtures: paths to the shared real data, a small seeded simulated dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"


def shared_file(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test with a reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {Path(*parts)}")
    return path


@pytest.fixture(scope="session")
def _mlflow_template(tmp_path_factory) -> Path:
    """An MLflow SQLite store migrated once per test session (migrations cost seconds)."""
    import mlflow

    db = tmp_path_factory.mktemp("mlflow-template") / "mlruns.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def mlflow_uri(_mlflow_template, tmp_path, monkeypatch) -> str:
    """A fresh MLflow store for one test: a copy of the migrated template."""
    import shutil

    db = tmp_path / "mlruns.db"
    shutil.copy(_mlflow_template, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="session")
def small_dataset():
    """A small seeded simulated dataset shared by the model-tier tests."""
    from features.simulate import simulate

    return simulate(seed=0, rooms=8, days=240, fans=500)


@pytest.fixture(scope="session")
def small_frame(small_dataset):
    """The training frame (features + outcomes) of the small dataset."""
    from training.data import training_frame

    return training_frame(small_dataset.sessions, small_dataset.session_products)


@pytest.fixture(scope="session")
def service_models(small_dataset, tmp_path_factory):
    """A small forecaster bundle and tier bundle for the service tests (fitted once)."""
    from service_support import build_service_models

    return build_service_models(tmp_path_factory.mktemp("service-models"), small_dataset)
