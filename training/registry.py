"""MLflow tracking and registry: one experiment and one registered model per target.

Shared by the forecaster and the fan-tier model: ``log_model_run`` logs a run (parameters,
metrics, artifacts, the LightGBM model with signature, input example and explicit pip
requirements, optionally the exported bundle folder) and registers a new version; ``move_alias``
moves an alias such as ``@champion``; ``model_version`` finds a version by number or alias and
``download_artifact_dir`` fetches a run's artifact folder. Registry stages are never used.

Tags and artifacts read back are checked before they touch the disk: a run's ``bundle`` tag
names a folder under ``models/`` that serving may replace, so it must be a plain folder name
(``../x`` or an absolute path is refused), and a downloaded ``bundle`` artifact must hold the
bundle's ``bundle.json``.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pandas as pd

CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_PREFIX = "livecast"
BUNDLE_ARTIFACT = "bundle"
"""Artifact path of the exported bundle folder in the run that logged it."""
BUNDLE_RUN_TAG = "bundle_run_id"
"""Tag of the runs of one training that point at the run holding the shared bundle artifact."""
BUNDLE_TAG = "bundle"
"""Tag naming the run's bundle folder under ``models/``."""


def model_name(target: str) -> str:
    """Registered model (and experiment) name of a target, e.g. ``livecast-gmv``."""
    return f"{MODEL_PREFIX}-{target}"


def configure(uri: str) -> None:
    """Point MLflow tracking and registry at ``uri`` (SQLite by default)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


def _sqlite_file(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def require_store(uri: str) -> None:
    """Fail with a clear message when a SQLite store does not exist (MLflow would create one)."""
    db = _sqlite_file(uri)
    if db is not None and not db.is_file():
        raise FileNotFoundError(f"no MLflow store at {uri}: run livecast train first")


def artifact_root(uri: str) -> str | None:
    """Artifacts of a SQLite store live beside the database file, not in the working folder."""
    db = _sqlite_file(uri)
    if db is not None:
        return (db.parent / f"{db.stem}-artifacts").resolve().as_uri()
    return None


def ensure_experiment(name: str, uri: str) -> str:
    import mlflow

    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return mlflow.create_experiment(name, artifact_location=artifact_root(uri))


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in ("mlflow", "alembic")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, levels, strict=True):
            lg.setLevel(lvl)


def pip_requirements(extra: tuple[str, ...] = ()) -> list[str]:
    """Pinned requirements of a logged model (``extra``: packages beyond the LightGBM stack)."""
    packages = ("lightgbm", "pandas", "numpy", "scikit-learn", *extra)
    return [f"{p}=={version(p)}" for p in packages]


@dataclass(frozen=True)
class LoggedModel:
    target: str
    run_id: str
    model_uri: str
    version: str


def log_model_run(
    *,
    uri: str,
    target: str,
    booster: Any,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
    input_example: pd.DataFrame,
    artifacts: list[Path] | None = None,
    importance: pd.DataFrame | None = None,
    bundle: Path | None = None,
    register: bool = True,
    parent_run_id: str | None = None,
    forecast: tuple[Any, list[str], dict[str, tuple[str, ...]]] | None = None,
) -> LoggedModel:
    """Log one target's run and register the model as a new version of ``livecast-<target>``.

    ``bundle``: an exported bundle folder, logged under the artifact path ``bundle``.
    ``forecast``: a forecaster target as (``TargetModel``, features, vocabulary), logged as a
    pyfunc model (base plus trees, :mod:`training.pyfunc`); otherwise ``booster`` is logged
    with MLflow's LightGBM flavour.
    """
    import mlflow
    from mlflow.models import infer_signature

    configure(uri)
    exp_id = ensure_experiment(model_name(target), uri)
    with _quiet_mlflow(), mlflow.start_run(experiment_id=exp_id, tags=tags) as run:
        mlflow.log_params(params)
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
        for path in artifacts or []:
            if Path(path).is_dir():
                mlflow.log_artifacts(str(path), artifact_path="report")
            elif Path(path).exists():
                mlflow.log_artifact(str(path), artifact_path="report")
        if importance is not None:
            with tempfile.TemporaryDirectory() as tmp:
                f = Path(tmp) / "feature_importance.csv"
                importance.to_csv(f, index=False)
                mlflow.log_artifact(str(f))
        if bundle is not None:
            mlflow.log_artifacts(str(bundle), artifact_path=BUNDLE_ARTIFACT)
        registered = model_name(target) if register else None
        if forecast is None:
            signature = infer_signature(input_example, booster.predict(input_example))
            info = mlflow.lightgbm.log_model(
                booster,
                name="model",
                signature=signature,
                input_example=input_example,
                pip_requirements=pip_requirements(),
                registered_model_name=registered,
            )
        else:
            from training.pyfunc import TargetPyfunc, code_paths, plain_frame, save_target

            model, features, vocab = forecast
            example = plain_frame(input_example)
            with tempfile.TemporaryDirectory() as tmp:
                folder = save_target(model, features, vocab, Path(tmp) / "target")
                signature = infer_signature(example, model.predict_log(input_example))
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=TargetPyfunc(),
                    artifacts={"target": str(folder)},
                    code_paths=code_paths(),
                    signature=signature,
                    input_example=example,
                    # the project code it carries imports these (contract, plan models)
                    pip_requirements=pip_requirements(("pandera", "pydantic")),
                    registered_model_name=registered,
                )
        ver = str(info.registered_model_version) if register else ""
        if register:
            mlflow.MlflowClient().set_model_version_tag(
                model_name(target), ver, "train_id", tags.get("train_id", "")
            )
    return LoggedModel(target, run.info.run_id, info.model_uri, ver)


def move_alias(target: str, alias: str, version: str, uri: str) -> None:
    import mlflow

    configure(uri)
    mlflow.MlflowClient().set_registered_model_alias(model_name(target), alias, version)


def alias_version(target: str, alias: str, uri: str) -> Any | None:
    """The model version behind ``alias`` (None when the alias or the model does not exist)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    configure(uri)
    try:
        return mlflow.MlflowClient().get_model_version_by_alias(model_name(target), alias)
    except MlflowException:
        return None


def model_version(target: str, ref: str, uri: str) -> Any:
    """The version of ``livecast-<target>`` named by ``ref``: a number (``3``) or an alias
    (``@champion`` or ``champion``). Raises ``ValueError`` naming what does not exist."""
    import mlflow
    from mlflow.exceptions import MlflowException

    require_store(uri)
    configure(uri)
    name = model_name(target)
    if not ref.isdigit():
        alias = ref.removeprefix("@")
        found = alias_version(target, alias, uri)
        if found is None:
            raise ValueError(f"{name} has no alias @{alias}: run livecast train and promote")
        return found
    try:
        return mlflow.MlflowClient().get_model_version(name, ref)
    except MlflowException as exc:
        raise ValueError(f"{name} has no version {ref} in {uri}") from exc


def check_bundle_name(name: str) -> str:
    """``name`` if it is a plain folder name (no path separator, not ``.`` or ``..``), so
    ``models_dir / name`` stays directly inside ``models_dir``; else a ``ValueError``."""
    if name in {"", ".", ".."} or any(c in name for c in "/\\\0") or Path(name).is_absolute():
        raise ValueError(f"bundle tag {name!r} is not a plain folder name")
    return name


def download_artifact_dir(run_id: str, artifact_path: str, out_dir: Path, uri: str) -> Path:
    """Download a run's artifact folder so that its files land directly in ``out_dir``.

    Raises ``ValueError`` when the run has no such artifact, or when a ``bundle`` artifact
    holds no ``bundle.json`` (``out_dir`` then keeps nothing of it).
    """
    import mlflow

    from training.bundle import BUNDLE_FILE

    configure(uri)
    client = mlflow.MlflowClient()
    if not client.list_artifacts(run_id, artifact_path):
        raise ValueError(f"run {run_id} has no {artifact_path!r} artifact")
    fetched = Path(client.download_artifacts(run_id, artifact_path, str(out_dir)))
    if artifact_path == BUNDLE_ARTIFACT and not (fetched / BUNDLE_FILE).is_file():
        shutil.rmtree(fetched)
        raise ValueError(f"run {run_id}: its {artifact_path!r} artifact holds no {BUNDLE_FILE}")
    for item in fetched.iterdir():
        item.rename(out_dir / item.name)
    fetched.rmdir()
    return out_dir


def run_data(run_id: str, uri: str) -> tuple[dict[str, str], dict[str, float], dict[str, str]]:
    """(params, metrics, tags) of a run. Raises ``ValueError`` naming a ``bundle`` tag that is
    not a plain folder name (:func:`check_bundle_name`) before anyone joins it to a path."""
    import mlflow

    configure(uri)
    run = mlflow.MlflowClient().get_run(run_id)
    tags = dict(run.data.tags)
    if BUNDLE_TAG in tags:
        try:
            check_bundle_name(tags[BUNDLE_TAG])
        except ValueError as exc:
            raise ValueError(f"run {run_id}: {exc}; refusing to use it") from None
    return dict(run.data.params), dict(run.data.metrics), tags
