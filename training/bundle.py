"""Self-contained model bundles in ``models/``: loadable without an MLflow server.

A bundle folder holds one LightGBM text model per target, ``bundle.json`` (features, category
vocabularies, each target's log-linear base and conformal offsets, parameters, metrics, library
versions) and the room-history
snapshot (past sessions and their products) that plan features are computed from.
``version_bundle`` finds the bundle of a registered MLflow model version: the local export, or
the copy logged with the training run.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import lightgbm as lgb
import pandas as pd

from features.contract import validate
from features.io import atomic_path, write_parquet
from training.models import TARGETS, Forecaster, ForecastParams, TargetModel

BUNDLE_FILE = "bundle.json"
CHAMPION_FILE = "champion.json"
VERSION_CACHE = "mlflow"
"""Folder under ``models/`` holding bundles downloaded from MLflow runs."""
FORMAT_VERSION = 2


@dataclass(frozen=True)
class Bundle:
    forecaster: Forecaster
    history_sessions: pd.DataFrame
    history_products: pd.DataFrame
    metadata: dict[str, Any]
    path: Path


def _lib_versions() -> dict[str, str]:
    return {p: version(p) for p in ("lightgbm", "pandas", "numpy", "scikit-learn", "mlflow")}


@contextmanager
def atomic_dir(out_dir: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``out_dir``; on success it replaces ``out_dir``.

    An interrupted or failing write leaves ``out_dir`` as it was and no temporary folder.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def save_bundle(
    forecaster: Forecaster,
    history_sessions: pd.DataFrame,
    history_products: pd.DataFrame,
    out_dir: str | Path,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write a bundle folder atomically (built beside the target, then renamed into place)."""
    with atomic_dir(out_dir) as tmp:
        models = {}
        for target, m in forecaster.models.items():
            fname = f"{target}.lgb.txt"
            m.booster.save_model(str(tmp / fname))
            models[target] = {"file": fname, **m.meta()}
        meta = {
            "format_version": FORMAT_VERSION,
            "features": forecaster.features,
            "vocab": {k: list(v) for k, v in forecaster.vocab.items()},
            "params": forecaster.params.model_dump(),
            "models": models,
            "libraries": _lib_versions(),
            **forecaster.metadata,
            **(metadata or {}),
        }
        (tmp / BUNDLE_FILE).write_text(json.dumps(meta, indent=2, default=str))
        write_parquet(history_sessions, tmp / "history_sessions.parquet")
        write_parquet(history_products, tmp / "history_products.parquet")
    return Path(out_dir)


def load_bundle(path: str | Path) -> Bundle:
    """Load a bundle folder (or the champion named by ``models/champion.json``)."""
    path = Path(path)
    if (path / CHAMPION_FILE).exists() and not (path / BUNDLE_FILE).exists():
        path = champion_path(path)
    meta_file = path / BUNDLE_FILE
    if not meta_file.exists():
        raise FileNotFoundError(
            f"{path}: not a model bundle (no {BUNDLE_FILE}); run livecast train"
        )
    meta = json.loads(meta_file.read_text())
    models = {
        target: TargetModel.from_meta(target, lgb.Booster(model_file=str(path / m["file"])), m)
        for target, m in meta["models"].items()
    }
    forecaster = Forecaster(
        models,
        list(meta["features"]),
        {k: tuple(v) for k, v in meta["vocab"].items()},
        ForecastParams(**meta["params"]),
        {k: v for k, v in meta.items() if k not in {"features", "vocab", "params", "models"}},
    )
    sessions = validate(pd.read_parquet(path / "history_sessions.parquet"), "sessions")
    products = validate(pd.read_parquet(path / "history_products.parquet"), "session_products")
    return Bundle(forecaster, sessions, products, meta, path)


def set_champion(
    models_dir: str | Path,
    bundle_dir: str | Path,
    info: dict[str, Any],
    pointer: str = CHAMPION_FILE,
) -> Path:
    """Point ``models/<pointer>`` (default ``champion.json``) at a bundle folder, atomically."""
    models_dir = Path(models_dir)
    target = models_dir / pointer
    payload = {"bundle": Path(bundle_dir).name, **info}
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=str))
    return target


def champion_info(models_dir: str | Path, pointer: str = CHAMPION_FILE) -> dict[str, Any] | None:
    f = Path(models_dir) / pointer
    return json.loads(f.read_text()) if f.exists() else None


def champion_path(models_dir: str | Path, pointer: str = CHAMPION_FILE) -> Path:
    info = champion_info(models_dir, pointer)
    if info is None:
        raise FileNotFoundError(f"{models_dir}: no champion yet; run livecast train and promote")
    return Path(models_dir) / info["bundle"]


def _holds_bundle(path: Path, train_id: str) -> bool:
    meta = path / BUNDLE_FILE
    return meta.is_file() and json.loads(meta.read_text()).get("train_id") == train_id


def version_bundle(ref: str, *, target: str = "gmv", uri: str, models_dir: str | Path) -> Path:
    """The bundle folder of a registered version of ``livecast-<target>``.

    ``ref`` is a version number (``3``) or an alias (``@champion`` or ``champion``). The local
    export ``models/<bundle tag>`` is used when its train id matches the run's; otherwise the
    bundle artifact logged at training is downloaded (atomically, once) into
    ``models/mlflow/<bundle tag>``. Raises ``ValueError`` for an unknown target, version or
    alias, or a run without a bundle artifact, and ``FileNotFoundError`` without a store.
    """
    from training.registry import (
        BUNDLE_ARTIFACT,
        BUNDLE_RUN_TAG,
        check_bundle_name,
        download_artifact_dir,
        model_name,
        model_version,
        run_data,
    )

    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; allowed: {', '.join(TARGETS)}")
    mv = model_version(target, ref, uri)
    _, _, tags = run_data(mv.run_id, uri)
    if "bundle" not in tags or "train_id" not in tags:
        raise ValueError(f"{model_name(target)} version {mv.version} has no bundle tag")
    name = check_bundle_name(tags["bundle"])  # run_data checked it too: this is the join
    local = Path(models_dir) / name
    cached = Path(models_dir) / VERSION_CACHE / name
    for path in (local, cached):
        if _holds_bundle(path, tags["train_id"]):
            return path
    try:
        with atomic_dir(cached) as tmp:
            download_artifact_dir(tags.get(BUNDLE_RUN_TAG, mv.run_id), BUNDLE_ARTIFACT, tmp, uri)
    except ValueError as exc:
        raise ValueError(
            f"{model_name(target)} version {mv.version}: {name} is not in "
            f"{models_dir} and its run has no usable bundle artifact ({exc})"
        ) from exc
    return cached
