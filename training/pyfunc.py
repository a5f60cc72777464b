"""One forecaster target as an MLflow pyfunc model: what ``livecast train`` registers.

A target's forecast is its log-linear base plus the trees boosted from it, so the booster alone
is not the model. :class:`TargetPyfunc` loads both from one folder (:func:`save_target`) and
predicts the ``log1p`` forecast from a frame of feature columns, exactly as
:meth:`training.models.TargetModel.predict_log` does (tested). The project's ``features`` and
``training`` packages travel with the logged model (``code_paths``), so it loads without
livecast installed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow.pyfunc
import numpy as np
import pandas as pd

from features.sessions import apply_vocab
from training.models import TargetModel

TARGET_FILE = "target.json"
BOOSTER_FILE = "booster.lgb.txt"


def save_target(
    model: TargetModel, features: list[str], vocab: dict[str, tuple[str, ...]], folder: Path
) -> Path:
    """Write one target's booster, base, offsets, feature list and vocabulary to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    model.booster.save_model(str(folder / BOOSTER_FILE))
    meta = {
        "target": model.target,
        "features": list(features),
        "vocab": {k: list(v) for k, v in vocab.items()},
        **model.meta(),
    }
    (folder / TARGET_FILE).write_text(json.dumps(meta))
    return folder


def load_target(folder: Path) -> tuple[TargetModel, list[str], dict[str, tuple[str, ...]]]:
    """The :class:`TargetModel`, feature list and vocabulary saved by :func:`save_target`."""
    meta = json.loads((folder / TARGET_FILE).read_text())
    booster = lgb.Booster(model_file=str(folder / BOOSTER_FILE))
    model = TargetModel.from_meta(meta["target"], booster, meta)
    return model, list(meta["features"]), {k: tuple(v) for k, v in meta["vocab"].items()}


class TargetPyfunc(mlflow.pyfunc.PythonModel):
    """Feature frame in (the training columns), ``log1p`` forecast out."""

    def load_context(self, context: Any) -> None:
        self.model, self.features, self.vocab = load_target(Path(context.artifacts["target"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
        X = apply_vocab(pd.DataFrame(model_input)[self.features], self.vocab)
        return self.model.predict_log(X)


def plain_frame(X: pd.DataFrame) -> pd.DataFrame:
    """A model input with categorical columns as plain text (missing as None): the column types
    an MLflow signature can state and a caller can send."""
    out = X.copy()
    for col in out.columns:
        if isinstance(out[col].dtype, pd.CategoricalDtype):
            values = out[col].astype(object)
            out[col] = values.where(values.notna(), None)
    return out


def code_paths() -> list[str]:
    """The project packages the logged model imports."""
    import features
    import training

    return [str(Path(features.__file__).parent), str(Path(training.__file__).parent)]
