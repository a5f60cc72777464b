"""Assemble the training frame: session features joined with the outcomes they predict."""

from __future__ import annotations

import pandas as pd

from features.sessions import build_session_features

OUTCOMES = ("viewers", "orders", "gmv")
LABEL_COLUMNS = (*OUTCOMES, "host_id", "planned_duration_min", "hour_band")
"""What :func:`training_frame` adds to the session features (labels and report keys)."""


def training_frame(sessions: pd.DataFrame, products: pd.DataFrame) -> pd.DataFrame:
    """Features of every session plus its outcome columns, sorted by start time.

    The features never read a session's own outcomes (see ``features.sessions``); the outcomes
    are joined here, by session id, only as labels.
    """
    frame = build_session_features(sessions, products)
    labels = sessions.set_index("session_id")[[*OUTCOMES, "host_id", "planned_duration_min"]]
    labels = labels.reindex(frame["session_id"]).reset_index(drop=True)
    frame = frame.reset_index(drop=True)
    for col in OUTCOMES:
        frame[col] = labels[col].to_numpy(dtype=float)
    # for the report's error breakdowns (not features: no column of a family prefix)
    frame["host_id"] = labels["host_id"].astype(str).to_numpy()
    frame["planned_duration_min"] = labels["planned_duration_min"].to_numpy(dtype=float)
    frame["hour_band"] = frame["slot__hour_band"].astype(str)
    return frame


def features_part(frame: pd.DataFrame) -> pd.DataFrame:
    """The session features of a training frame (:func:`training_frame` without its labels)."""
    return frame.drop(columns=[c for c in LABEL_COLUMNS if c in frame.columns])
