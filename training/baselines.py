"""Honest baselines: what a planner's spreadsheet would forecast.

* ``trailing_mean``: the room's mean over its last 5 finished sessions.
* ``slot_mean``: the room's mean in the same time slot (hour band) over the training period.
* ``history_only``: a LightGBM that sees only the room's history, not the plan (built in
  ``training.backtest`` with the same code as the model).

Rooms with no history fall back to the training period's median.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TRAILING_N = 5


def trailing_mean(frame: pd.DataFrame, target: str, n: int = TRAILING_N) -> pd.Series:
    """Mean of ``target`` over each room's previous ``n`` sessions with a known outcome.

    ``frame`` holds every session (training and test) with ``room_id``, ``start_time`` and the
    target; a test session sees finished sessions before it, as a spreadsheet updated daily does.
    Sessions of a room that start at the same time never see each other.
    """
    df = frame[["room_id", "start_time", target]].copy()
    df["_pos"] = np.arange(len(df))
    df = df.sort_values(["room_id", "start_time", "_pos"])
    out = np.full(len(df), np.nan)
    for _, g in df.groupby("room_id", sort=False):
        times = g["start_time"].to_numpy()
        vals = g[target].to_numpy(dtype=float)
        known_times = times[np.isfinite(vals)]
        known_vals = vals[np.isfinite(vals)]
        csum = np.concatenate([[0.0], np.cumsum(known_vals)])
        # number of known sessions strictly before each session's start
        k = np.searchsorted(known_times, times, side="left")
        lo = np.maximum(k - n, 0)
        cnt = k - lo
        with np.errstate(invalid="ignore", divide="ignore"):
            means = (csum[k] - csum[lo]) / cnt
        out[g["_pos"].to_numpy()] = np.where(cnt > 0, means, np.nan)
    return pd.Series(out, index=frame.index, name=f"trailing_mean_{target}")


def slot_mean(train: pd.DataFrame, test: pd.DataFrame, target: str) -> pd.Series:
    """Room x hour-band mean of ``target`` over ``train``; room mean, then median, as fallback."""
    known = train[train[target].notna()]
    by_slot = known.groupby(["room_id", "hour_band"], observed=True)[target].mean()
    by_room = known.groupby("room_id")[target].mean()
    keys = pd.MultiIndex.from_arrays([test["room_id"], test["hour_band"]])
    pred = pd.Series(by_slot.reindex(keys).to_numpy(), index=test.index)
    pred = pred.fillna(pd.Series(by_room.reindex(test["room_id"]).to_numpy(), index=test.index))
    return pred.fillna(float(known[target].median()))


def with_fallback(pred: pd.Series, train: pd.DataFrame, target: str) -> pd.Series:
    """Fill rooms without history with the training median."""
    return pred.fillna(float(train[target].median()))
