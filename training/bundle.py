"""Self-contained model bundles in ``models/``: loadable without an MLflow server.

A bundle folder holds one LightGBM text model per target, ``bundle.json`` (features, category
vocabularies, each target's log-linear base and conformal offsets, parameters, metrics, library
versions) and the room-history
snapshot (past sessions and their products) that plan features are computed from.
``bundle.json`` also lists the sha256 checksum of every other file of the folder (``"files"``);
:func:`verify_bundle` checks them (and the json itself) before LightGBM reads a booster, since
LightGBM aborts the whole process (SIGABRT) on a truncated or damaged model file instead of
raising. Bundles written before the checksums still load: their boosters are checked for a
complete LightGBM text model (see :func:`check_booster_text`) and their parquet files for the
parquet magic bytes.
``version_bundle`` finds the bundle of a registered MLflow model version: the local export, or
the copy logged with the training run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
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
"""Bundle layout version. The ``"files"`` checksums did not bump it: older readers ignore the
key and bundles without it still load (with the weaker completeness checks)."""
FILES_KEY = "files"
"""``bundle.json`` key: ``{file name: sha256 hex digest}`` of the bundle's other files."""
HISTORY_FILES = ("history_sessions.parquet", "history_products.parquet")


class BundleError(ValueError):
    """A bundle folder that must not be loaded: its ``bundle.json`` does not parse or lacks a
    key, a file it names is missing, or a file fails its checksum or completeness check.

    The message names the bundle folder and the bad file.
    """

    def __init__(self, path: str | Path, file: str, problem: str) -> None:
        self.path = Path(path)
        self.file = file
        self.problem = problem
        super().__init__(f"{self.path}: corrupted model bundle: {file} {problem}")


def sha256_file(path: str | Path) -> str:
    """The sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_checksums(folder: Path, names: list[str]) -> dict[str, str]:
    """``{name: sha256}`` of the named files of ``folder`` (the ``"files"`` map of bundle.json)."""
    return {name: sha256_file(folder / name) for name in names}


_BOOSTER_TAIL = re.compile(rb"\nend of parameters\n\s*pandas_categorical:([^\n]*)\n?\Z")


def check_booster_text(file: Path) -> str | None:
    """Why a LightGBM text model file is not complete, or None when it looks whole.

    For bundles without checksums (LightGBM aborts the process on a model it cannot parse).
    A model saved by the Python package ends with the ``end of parameters`` line followed by
    the ``pandas_categorical:<json>`` line, and its header's ``tree_sizes=`` gives the byte
    size of every tree, so the trees must end exactly at the ``end of trees`` line. This
    catches truncation, added or lost bytes among the trees and NUL bytes (a zeroed byte made
    LightGBM 4.7 loop forever); another same-length change inside a tree needs the checksums.
    """
    data = file.read_bytes()
    if b"\0" in data:
        return "is damaged: a LightGBM text model holds no NUL bytes"
    tail = _BOOSTER_TAIL.search(data)
    if not data.startswith(b"tree\n") or tail is None:
        return "is not a complete LightGBM model (truncated: no end-of-parameters tail)"
    try:
        json.loads(tail.group(1))
    except ValueError:
        return "is not a complete LightGBM model (its pandas_categorical line does not parse)"
    sizes_line = re.search(rb"^tree_sizes=([0-9 ]*)$", data, re.MULTILINE)
    first = data.find(b"\nTree=0\n")
    end = data.find(b"\nend of trees\n")
    if sizes_line is None or first < 0 or end < 0:
        return "is not a complete LightGBM model (no tree_sizes header or tree section)"
    sizes = [int(x) for x in sizes_line.group(1).split()]
    if first + 1 + sum(sizes) != end + 1:
        return "is damaged: its trees do not match the tree_sizes header"
    return None


def _check_parquet(file: Path) -> str | None:
    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(4)
        f.seek(max(size - 4, 0))
        tail = f.read(4)
    if size < 12 or head != b"PAR1" or tail != b"PAR1":
        return "is not a complete parquet file"
    return None


def read_bundle_meta(path: Path, required: tuple[str, ...]) -> dict[str, Any]:
    """The parsed ``bundle.json`` of a bundle folder; BundleError when it does not parse, is
    not an object or lacks one of the ``required`` keys."""
    try:
        meta = json.loads((path / BUNDLE_FILE).read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(path, BUNDLE_FILE, f"does not parse as JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise BundleError(path, BUNDLE_FILE, "is not a JSON object")
    missing = [k for k in required if k not in meta]
    if missing:
        raise BundleError(path, BUNDLE_FILE, f"lacks key(s) {', '.join(missing)}")
    return meta


def verify_files(path: Path, meta: dict[str, Any], boosters: list[str], others: list[str]) -> None:
    """Check the files a bundle needs: present, and matching their ``"files"`` checksums (every
    listed file is checked); without checksums (older bundles), boosters must be complete
    LightGBM text models and the ``others`` complete parquet files. Raises BundleError."""
    sums = meta.get(FILES_KEY)
    if sums is not None and not (
        isinstance(sums, dict) and all(isinstance(v, str) for v in sums.values())
    ):
        raise BundleError(path, BUNDLE_FILE, f"has a malformed {FILES_KEY!r} checksum map")
    names = list(dict.fromkeys([*boosters, *others, *(sums or {})]))
    for name in names:
        if not isinstance(name, str) or not name or Path(name).name != name:
            raise BundleError(path, BUNDLE_FILE, f"names a bad file {name!r}")
    for name in names:
        file = path / name
        if not file.is_file():
            raise BundleError(path, name, "is missing")
        if sums is not None:
            if name not in sums:
                raise BundleError(path, name, f"has no checksum in {BUNDLE_FILE}")
            found = sha256_file(file)
            if found != sums[name]:
                raise BundleError(
                    path,
                    name,
                    f"fails its sha256 checksum (expected {sums[name][:12]}..., "
                    f"found {found[:12]}...)",
                )
        else:
            problem = check_booster_text(file) if name in boosters else _check_parquet(file)
            if problem:
                raise BundleError(path, name, problem)


_REQUIRED = ("features", "vocab", "params", "models")


def verify_bundle(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """Check a forecaster bundle folder (or the champion of a models folder) without loading
    it: ``bundle.json`` parses and has the keys the loader reads, and every file is present
    and intact (see :func:`verify_files`). Returns the bundle folder and its metadata.

    Raises FileNotFoundError when there is no bundle, BundleError when it is damaged.
    """
    path = Path(path)
    if (path / CHAMPION_FILE).exists() and not (path / BUNDLE_FILE).exists():
        path = champion_path(path)
    if not (path / BUNDLE_FILE).exists():
        raise FileNotFoundError(
            f"{path}: not a model bundle (no {BUNDLE_FILE}); run livecast train"
        )
    meta = read_bundle_meta(path, _REQUIRED)
    models = meta["models"]
    if not isinstance(models, dict) or not models:
        raise BundleError(path, BUNDLE_FILE, "has no models")
    if not all(isinstance(m, dict) and "file" in m for m in models.values()):
        raise BundleError(path, BUNDLE_FILE, "has a model entry without a file")
    verify_files(path, meta, [m["file"] for m in models.values()], list(HISTORY_FILES))
    return path, meta


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
    """Write a bundle folder atomically (built beside the target, then renamed into place).

    ``bundle.json`` is written last and lists the sha256 of the boosters and history files.
    """
    with atomic_dir(out_dir) as tmp:
        models = {}
        for target, m in forecaster.models.items():
            fname = f"{target}.lgb.txt"
            m.booster.save_model(str(tmp / fname))
            models[target] = {"file": fname, **m.meta()}
        write_parquet(history_sessions, tmp / HISTORY_FILES[0])
        write_parquet(history_products, tmp / HISTORY_FILES[1])
        files = [m["file"] for m in models.values()] + list(HISTORY_FILES)
        meta = {
            "format_version": FORMAT_VERSION,
            "features": forecaster.features,
            "vocab": {k: list(v) for k, v in forecaster.vocab.items()},
            "params": forecaster.params.model_dump(),
            "models": models,
            "libraries": _lib_versions(),
            **forecaster.metadata,
            **(metadata or {}),
            FILES_KEY: file_checksums(tmp, files),
        }
        (tmp / BUNDLE_FILE).write_text(json.dumps(meta, indent=2, default=str))
    return Path(out_dir)


def load_bundle(path: str | Path) -> Bundle:
    """Load a bundle folder (or the champion named by ``models/champion.json``).

    The folder is verified first (:func:`verify_bundle`): a damaged bundle raises BundleError
    before LightGBM reads any booster.
    """
    path, meta = verify_bundle(path)
    models = {
        target: TargetModel.from_meta(target, lgb.Booster(model_file=str(path / m["file"])), m)
        for target, m in meta["models"].items()
    }
    forecaster = Forecaster(
        models,
        list(meta["features"]),
        {k: tuple(v) for k, v in meta["vocab"].items()},
        ForecastParams(**meta["params"]),
        {k: v for k, v in meta.items() if k not in {*_REQUIRED, FILES_KEY}},
    )
    sessions = validate(pd.read_parquet(path / HISTORY_FILES[0]), "sessions")
    products = validate(pd.read_parquet(path / HISTORY_FILES[1]), "session_products")
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
    if not f.exists():
        return None
    try:
        info = json.loads(f.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(models_dir, pointer, f"does not parse as JSON ({exc})") from None
    if not isinstance(info, dict) or not isinstance(info.get("bundle"), str):
        raise BundleError(models_dir, pointer, "does not name a bundle")
    return info


def champion_path(models_dir: str | Path, pointer: str = CHAMPION_FILE) -> Path:
    info = champion_info(models_dir, pointer)
    if info is None:
        raise FileNotFoundError(f"{models_dir}: no champion yet; run livecast train and promote")
    return Path(models_dir) / info["bundle"]


def _holds_bundle(path: Path, train_id: str) -> bool:
    meta = path / BUNDLE_FILE
    if not meta.is_file():
        return False
    try:
        data = json.loads(meta.read_text())
    except (ValueError, UnicodeDecodeError):  # a damaged copy: fetch the run's bundle instead
        return False
    return isinstance(data, dict) and data.get("train_id") == train_id


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
    name = tags["bundle"]  # run_data refused a tag that is not a plain folder name
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
