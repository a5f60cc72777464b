"""The questions a live-ops team asks of its session history, as plain DataFrame functions.

Each function takes contract tables (``sessions`` and, where the product mix matters,
``session_products``) and returns a tidy table that a notebook plots:

* :func:`slot_table` / :func:`best_slots`: which time slots work best for each room;
* :func:`festival_uplift`: how much each festival window lifts a room over its ordinary days;
* :func:`promo_conversion`: conversion at each level of each promo mechanic;
* :func:`mix_gmv`: GMV at each level of the product mix (assortment size, discount, price, new
  launches, number of categories).

Rooms differ by orders of magnitude, so every comparison is made *within a room*: each session's
outcome is divided by its room's median (``relative``: 1.0 is a typical session of that room),
and groups report the median of these ratios. Only finished sessions (with the outcome known)
count. Time slots, festival windows, promo levels and the product mix come from the session
feature code (:mod:`features.sessions`), so the exploration reads the same definitions as the
forecaster.

These tables are descriptive, not causal: a festival session also tends to run more promos.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.calendar import FESTIVALS
from features.contract import DEFAULT_TZ
from features.sessions import (
    HOUR_BANDS,
    mix_features,
    product_mix_summary,
    promo_features,
    slot_features,
)

METRICS: tuple[str, ...] = ("viewers", "orders", "gmv", "conversion", "aov")
"""Outcomes the tables can compare: the contract outcomes plus derived conversion and AOV."""
SLOTS: dict[str, str] = {
    "hour_band": "slot__hour_band",
    "hour": "slot__hour",
    "weekday": "slot__weekday",
}
"""Slot granularities of :func:`slot_table` and the slot feature each one reads."""
WEEKDAYS: tuple[str, ...] = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

PROMO_LEVELS: dict[str, tuple[list[float], list[str]]] = {
    "lottery_count": ([-np.inf, 0, 2, 5, np.inf], ["0", "1-2", "3-5", "6+"]),
    "red_envelope_count": ([-np.inf, 0, 2, 5, np.inf], ["0", "1-2", "3-5", "6+"]),
    "flash_sale_rounds": ([-np.inf, 0, 2, 4, np.inf], ["0", "1-2", "3-4", "5+"]),
    "coupon_value": ([-np.inf, 0, 10, 30, np.inf], ["0", "1-10", "11-30", "30+"]),
    "discount_depth": (
        [-np.inf, 0.05, 0.15, 0.30, np.inf],
        ["<5%", "5-15%", "15-30%", "30%+"],
    ),
    "n_mechanics": ([-np.inf, 0, 1, 2, 3, np.inf], ["0", "1", "2", "3", "4"]),
}
"""Promo mechanic -> (bin edges, labels); bins are right-closed, e.g. ``(0, 2]`` is ``1-2``."""

MIX_LEVELS: dict[str, tuple[list[float], list[str]]] = {
    "n_skus": ([0, 5, 10, 20, 40, np.inf], ["1-5", "6-10", "11-20", "21-40", "41+"]),
    "mean_discount": ([-np.inf, 0.1, 0.2, 0.3, np.inf], ["<10%", "10-20%", "20-30%", "30%+"]),
    "mean_live_price": (
        [0, 50, 100, 200, 500, np.inf],
        ["<50", "50-100", "100-200", "200-500", "500+"],
    ),
    "new_launch_share": ([-np.inf, 0, 0.25, 0.5, np.inf], ["0", "<=25%", "25-50%", ">50%"]),
    "n_categories": ([0, 1, 2, 3, np.inf], ["1", "2", "3", "4+"]),
}
"""Product-mix summary column -> (bin edges, labels). (The top category is left out: within a
room it is nearly always the room's own category, so it explains nothing there.)"""


def session_outcomes(sessions: pd.DataFrame) -> pd.DataFrame:
    """Finished sessions with their outcomes and the derived rates.

    Columns ``session_id``, ``room_id``, ``start_time``, ``viewers``, ``orders``, ``gmv``,
    ``conversion`` (orders / viewers; missing without viewers) and ``aov`` (GMV / orders;
    missing without orders). A session without a known GMV, orders or viewers is left out.
    Index: the input's index (so rows align with feature frames built from ``sessions``).
    """
    missing = [
        c for c in ("session_id", "room_id", "start_time", *METRICS[:3]) if c not in sessions
    ]
    if missing:
        raise ValueError(f"sessions lack column(s) {', '.join(missing)}")
    out = sessions[["session_id", "room_id", "start_time", "viewers", "orders", "gmv"]].copy()
    for col in ("viewers", "orders", "gmv"):
        out[col] = out[col].astype("float64")
    out = out[out[["viewers", "orders", "gmv"]].notna().all(axis=1)]
    out["conversion"] = (out["orders"] / out["viewers"]).where(out["viewers"] > 0)
    out["aov"] = (out["gmv"] / out["orders"]).where(out["orders"] > 0)
    return out


def relative_to_room(values: pd.Series, rooms: pd.Series) -> pd.Series:
    """Each value divided by its room's median value (1.0 = a typical session of that room).

    Missing where the value is missing or the room's median is not positive.
    """
    values = values.astype("float64")
    median = values.groupby(rooms).transform("median")
    return (values / median).where(median > 0)


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")


def _relative(sessions: pd.DataFrame, metric: str) -> pd.DataFrame:
    _check_metric(metric)
    out = session_outcomes(sessions)
    out["relative"] = relative_to_room(out[metric], out["room_id"])
    return out


def _summarise(frame: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame:
    """Per group: sessions, rooms, the median relative outcome and the pooled metric."""
    grouped = frame.groupby(keys, observed=True, sort=True)
    out = grouped.agg(
        n=("session_id", "size"),
        rooms=("room_id", "nunique"),
        relative=("relative", "median"),
        mean=(metric, "mean"),
    )
    if metric == "conversion":  # the pooled rate: total orders over total viewers
        sums = grouped[["orders", "viewers"]].sum()
        out["mean"] = sums["orders"] / sums["viewers"].where(sums["viewers"] > 0)
    return out.reset_index()


# --------------------------------------------------------------------------- time slots


def slot_table(
    sessions: pd.DataFrame,
    metric: str = "gmv",
    *,
    slot: str = "hour_band",
    tz: str = DEFAULT_TZ,
) -> pd.DataFrame:
    """Room x time slot: ``n`` sessions, median ``relative`` outcome and ``mean`` outcome.

    ``slot`` is ``hour_band`` (night, morning, noon, afternoon, prime, late), ``hour`` (local
    hour 0-23) or ``weekday`` (Mon..Sun), read from the slot features in ``tz``. The slot column
    is ordered (a ``category``) so tables and plots keep the natural order.
    """
    if slot not in SLOTS:
        raise ValueError(f"unknown slot {slot!r}; use one of {', '.join(SLOTS)}")
    rel = _relative(sessions, metric)
    feats = slot_features(sessions.loc[rel.index], tz)
    values = feats[SLOTS[slot]]
    if slot == "hour_band":
        rel[slot] = pd.Categorical(values, categories=list(HOUR_BANDS), ordered=True)
    elif slot == "weekday":
        rel[slot] = pd.Categorical.from_codes(
            values.astype(int).to_numpy(), categories=list(WEEKDAYS), ordered=True
        )
    else:
        rel[slot] = values.astype(int)
    return _summarise(rel, ["room_id", slot], metric)


def best_slots(
    sessions: pd.DataFrame,
    metric: str = "gmv",
    *,
    slot: str = "hour_band",
    min_sessions: int = 5,
    tz: str = DEFAULT_TZ,
) -> pd.DataFrame:
    """Per room, the slot with the highest median relative outcome among slots with at least
    ``min_sessions`` sessions: ``room_id``, ``best_slot``, ``n``, ``relative`` (its median
    relative outcome) and ``vs_typical_slot`` (best over the median of the room's slots).

    A room without any slot of ``min_sessions`` sessions is left out.
    """
    if min_sessions < 1:
        raise ValueError("min_sessions must be at least 1")
    table = slot_table(sessions, metric, slot=slot, tz=tz)
    table = table[(table["n"] >= min_sessions) & table["relative"].notna()]
    if table.empty:
        return pd.DataFrame(columns=["room_id", "best_slot", "n", "relative", "vs_typical_slot"])
    best = table.loc[table.groupby("room_id")["relative"].idxmax()]
    typical = table.groupby("room_id")["relative"].median()
    out = pd.DataFrame(
        {
            "room_id": best["room_id"].to_numpy(),
            "best_slot": best[slot].astype(str).to_numpy(),
            "n": best["n"].to_numpy(),
            "relative": best["relative"].to_numpy(),
        }
    )
    out["vs_typical_slot"] = out["relative"] / typical.reindex(out["room_id"]).to_numpy()
    return out.sort_values("room_id", ignore_index=True)


# --------------------------------------------------------------------------- festivals


def festival_uplift(
    sessions: pd.DataFrame, metric: str = "gmv", *, tz: str = DEFAULT_TZ
) -> pd.DataFrame:
    """Per festival window: the outcome of a room's sessions in the window over the same room's
    ordinary sessions (in no festival window at all).

    Columns ``festival`` (a key of :data:`~features.calendar.FESTIVALS`), ``n`` (sessions in the
    window), ``rooms`` (rooms with sessions both in the window and on ordinary days) and
    ``uplift``: the median over those rooms of (room's median outcome in the window / room's
    median ordinary outcome). ``uplift`` > 1 means the window sells more. The spring window
    is the logistics lull around the Spring Festival. Festivals without such rooms have a
    missing uplift.
    """
    _check_metric(metric)
    out = session_outcomes(sessions)
    feats = slot_features(sessions.loc[out.index], tz)
    windows = {f: feats[f"slot__in_window_{f}"].to_numpy() == 1.0 for f in FESTIVALS}
    ordinary = ~np.logical_or.reduce(list(windows.values()))
    base = out[ordinary].groupby("room_id")[metric].median()
    rows = []
    for name, flag in windows.items():
        inside = out[flag].groupby("room_id")[metric].median()
        ratio = (inside / base.reindex(inside.index)).where(lambda r: np.isfinite(r)).dropna()
        rows.append(
            {
                "festival": name,
                "n": int(flag.sum()),
                "rooms": len(ratio),
                "uplift": float(ratio.median()) if len(ratio) else np.nan,
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- promos and mix


def _mix(sessions: pd.DataFrame, products: pd.DataFrame | None) -> pd.DataFrame:
    summary = product_mix_summary(products if products is not None else pd.DataFrame())
    return mix_features(summary, sessions["session_id"])


def _levels(values: pd.Series, edges: list[float], labels: list[str]) -> pd.Series:
    return pd.cut(values.astype("float64"), edges, labels=labels, right=True, ordered=True)


def _effect_table(
    rel: pd.DataFrame,
    columns: dict[str, pd.Series],
    levels: dict[str, tuple[list[float], list[str]]],
    metric: str,
    name: str,
) -> pd.DataFrame:
    parts = []
    for col, values in columns.items():
        if col in levels:
            edges, labels = levels[col]
            level = _levels(values, edges, labels)
        else:
            level = values.astype("category")
        frame = rel.assign(level=pd.Series(level.array, index=rel.index))
        table = _summarise(frame[frame["level"].notna()], ["level"], metric)
        table.insert(0, name, col)
        table["level"] = table["level"].astype(str)
        parts.append(table)
    return pd.concat(parts, ignore_index=True)


def promo_conversion(
    sessions: pd.DataFrame, products: pd.DataFrame | None = None, metric: str = "conversion"
) -> pd.DataFrame:
    """Conversion (or another ``metric``) at each level of each promo mechanic.

    Columns ``mechanic`` (a key of :data:`PROMO_LEVELS`), ``level`` (bin label, in bin order),
    ``n``, ``rooms``, ``relative`` (median of conversion / the room's median conversion) and
    ``mean`` (the pooled conversion: total orders / total viewers). Promo values come from the
    promo features (discount depth falls back to the SKUs' mean discount when not stated).
    Sessions whose mechanic is unknown are left out of that mechanic's rows.
    """
    rel = _relative(sessions, metric)
    s = sessions.loc[rel.index]
    promo = promo_features(s, _mix(s, products))
    columns = {m: promo[f"promo__{m}"] for m in PROMO_LEVELS}
    return _effect_table(rel, columns, PROMO_LEVELS, metric, "mechanic")


def mix_gmv(sessions: pd.DataFrame, products: pd.DataFrame, metric: str = "gmv") -> pd.DataFrame:
    """GMV (or another ``metric``) at each level of the product mix.

    Columns ``mix`` (a key of :data:`MIX_LEVELS`: ``n_skus``, ``mean_discount``,
    ``mean_live_price``, ``new_launch_share``, ``n_categories``), ``level``, ``n``, ``rooms``,
    ``relative`` (median of GMV / the room's median GMV) and ``mean`` (mean GMV). The mix
    comes from the SKU list through the product-mix summary of the session features; sessions
    without SKUs are left out.
    """
    rel = _relative(sessions, metric)
    mix = _mix(sessions.loc[rel.index], products)
    columns = {c: mix[f"mix__{c}"] for c in MIX_LEVELS}
    return _effect_table(rel, columns, MIX_LEVELS, metric, "mix")
