"""Assemble the training frame: session features joined with the outcomes they predict."""

from __future__ import annotations

import numpy as np
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
    return _labelled(build_session_features(sessions, products), sessions)


ORIGIN_STEP_DAYS = 7
MAX_LEAD_DAYS = 60
"""Origins of :func:`origin_copies`: every ``ORIGIN_STEP_DAYS`` days, up to ``MAX_LEAD_DAYS``
before a session (the lead times planners use)."""


def origin_copies(
    sessions: pd.DataFrame,
    products: pd.DataFrame,
    *,
    step_days: int = ORIGIN_STEP_DAYS,
    max_lead_days: int = MAX_LEAD_DAYS,
    seed: int = 0,
) -> pd.DataFrame:
    """Each session once more, as a planner would have scored it ahead: its feature row from
    the history frozen at a forecast origin before it (the service's view: what
    ``snapshot_session_features`` gives with the history cut at the origin, computed for every
    origin at once by ``origin_session_features``), with its outcomes as labels; same columns
    as :func:`training_frame`.

    Origins lie on a grid every ``step_days`` days from the first session's day, from the
    second step on (an earlier origin holds almost no history: its copies would be cold
    starts, which the cold-start masking of training already covers); a session gets one origin
    drawn (seeded) among those 1 hour to ``max_lead_days`` days before its start, and none when
    there is no such origin. A copy reads only sessions that started before its
    origin, so a copy of a session before a cut never sees the cut's side: the copies of a
    training window are the copies of its sessions. ``ForecastParams.ahead`` trains on them
    too, so the model learns what stale room history (a gap, an old trend) means for the
    outcome instead of meeting it for the first time in the service.
    """
    from features.sessions import origin_session_features

    if len(sessions) == 0:
        return _labelled(build_session_features(sessions, products), sessions)
    ordered = sessions.sort_values(["start_time", "session_id"], kind="stable")
    start = ordered["start_time"]
    first = start.min().tz_convert("UTC").floor("D")
    step = pd.Timedelta(days=step_days)
    # the latest grid origin at least an hour before each start, and the earliest in reach
    latest = np.floor(((start - pd.Timedelta(hours=1) - first) / step).to_numpy(float))
    earliest = np.ceil(((start - pd.Timedelta(days=max_lead_days) - first) / step).to_numpy(float))
    earliest = np.maximum(earliest, 2)  # the first two weeks hold no history to freeze
    rng = np.random.default_rng(seed)
    draw = rng.random(len(ordered))
    ok = latest >= earliest
    chosen = np.where(ok, earliest + np.floor(draw * (latest - earliest + 1)), -1).astype(int)
    picked = ordered[chosen >= 0]
    origins = pd.Series(first + chosen[chosen >= 0] * step, index=picked.index)
    # one history state for every origin: each row reads the sessions before its own origin
    own = products[products["session_id"].isin(set(picked["session_id"]))]
    frame = origin_session_features(picked, own, origins, sessions, products)
    frame = frame.set_index("session_id").loc[picked["session_id"].to_numpy()].reset_index()
    return _labelled(frame, sessions)


def copies_for(
    params: object, sessions: pd.DataFrame, products: pd.DataFrame
) -> pd.DataFrame | None:
    """The origin copies a fit with ``params`` (a ``ForecastParams``) may use: when it chooses
    its settings (``select``: the ``+ahead`` candidate) or trains on them (``ahead``); else
    None, and no feature pass is spent on them."""
    if getattr(params, "select", False) or getattr(params, "ahead", False):
        return origin_copies(sessions, products, seed=int(getattr(params, "seed", 0)))
    return None


def frozen_frame(
    sessions: pd.DataFrame, products: pd.DataFrame, ids: pd.Series, cut: pd.Timestamp
) -> pd.DataFrame:
    """Features of the sessions ``ids`` (in that order) from the history before ``cut``: what
    the service scores for plans made at ``cut`` (``snapshot_session_features``)."""
    from features.sessions import snapshot_session_features

    history = sessions[sessions["start_time"] < cut]
    ahead = sessions[sessions["session_id"].isin(set(ids))]
    in_history = products["session_id"].isin(set(history["session_id"]))
    in_ahead = products["session_id"].isin(set(ahead["session_id"]))
    snap = snapshot_session_features(ahead, products[in_ahead], history, products[in_history])
    return snap.set_index("session_id").loc[pd.Series(ids).to_numpy()].reset_index()


def with_copies(train: pd.DataFrame, copies: pd.DataFrame | None) -> pd.DataFrame:
    """``train`` plus the origin copies of its sessions, in start order (a copy right after
    its session)."""
    if copies is None or len(copies) == 0:
        return train
    mine = copies[copies["session_id"].isin(set(train["session_id"]))]
    both = pd.concat([train, mine[train.columns]], ignore_index=True)
    return both.sort_values("start_time", kind="stable").reset_index(drop=True)


def _labelled(frame: pd.DataFrame, sessions: pd.DataFrame) -> pd.DataFrame:
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
