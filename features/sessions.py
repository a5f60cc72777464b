"""Leakage-free session features: one definition for training, the HTTP service and batch jobs.

:func:`build_session_features` turns past sessions (and their SKUs) into one feature row per
session; :func:`plan_features` turns draft :class:`~features.plan.SessionPlan` objects into rows
through the same functions. Every feature column is named ``<family>__<name>``:

* ``topic``  session type and title keyword flags (what the session is about);
* ``slot``   local hour, hour band, weekday, month, planned duration, festival distances;
* ``mix``    the product mix, read only from :func:`product_mix_summary` (one row per session),
  which a SKU list and a :class:`~features.plan.ProductMix` summary both map onto;
* ``promo``  in-session mechanics: lotteries, red envelopes, flash sales, coupon, discount;
* ``warmup`` effort before the session: warm-up videos, community pushes, paid budget;
* ``room``   the room's history, from its sessions that started strictly before this one.

No leakage: a row never reads its own outcome columns, and the room history is an as-of join
(:func:`pandas.merge_asof`, strictly earlier start) onto per-room trailing statistics, so a
session's features never change when later sessions (of any room) change or disappear. Two
sessions of a room with the same start time do not see each other.

Units: money in the room's currency, durations in minutes, dwell in seconds, days as float days,
``log1p`` for viewers / orders / GMV statistics (heavy-tailed counts).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.calendar import (
    FESTIVALS,
    FIRST_YEAR,
    LAST_YEAR,
    WINDOW_AFTER,
    WINDOW_BEFORE,
    days_to_from,
    festival_day,
    in_window,
)
from features.contract import CATEGORIES, DEFAULT_TZ, PLATFORMS, SESSION_TYPES, validate
from features.plan import PRICE_BANDS, ProductMix, SessionPlan, plans_to_frames

FAMILIES: tuple[str, ...] = ("topic", "slot", "mix", "promo", "warmup", "room")
KEY_COLUMNS: tuple[str, ...] = ("session_id", "room_id", "start_time")

HOUR_BANDS: tuple[str, ...] = ("night", "morning", "noon", "afternoon", "prime", "late")
# Local hour -> band: night 0-6, morning 6-11, noon 11-14, afternoon 14-19, prime 19-23, late 23-24.
_HOUR_BAND_CODE = np.array([0] * 6 + [1] * 5 + [2] * 3 + [3] * 5 + [4] * 4 + [5], dtype=np.int64)

FESTIVAL_CAP_DAYS = 60
"""Days to / from a festival are capped here: far-away festivals all look alike."""

TITLE_KEYWORDS: dict[str, tuple[str, ...]] = {
    "festival": (
        "大促", "618", "6.18", "双11", "双十一", "11.11", "双12", "双十二", "12.12", "年货",
        "年中", "中秋", "女神节", "妇女节", "38节", "3.8", "春节", "元旦", "七夕", "情人节",
        "跨年", "狂欢", "festival", "black friday",
    ),
    "welfare": ("福利", "宠粉", "粉丝", "回馈", "福袋", "抽奖", "免单", "感恩", "giveaway"),
    "flash": ("秒杀", "限时", "抢购", "开抢", "1元", "9.9", "flash"),
    "new": ("新品", "首发", "上新", "新款", "首秀", "发布", "new arrival", "launch"),
    "brand": ("品牌", "联名", "专场", "旗舰", "官方", "大牌", "正品", "brand", "collab"),
    "clearance": ("清仓", "特卖", "断码", "尾货", "甩卖", "折扣", "捡漏", "clearance", "outlet"),
    "source": ("工厂", "源头", "产地", "厂家", "直供", "基地", "原产", "factory"),
    "deal": ("满减", "包邮", "优惠券", "买一送一", "赠品", "红包", "coupon"),
}  # fmt: skip
"""Title keyword flags: flag -> keywords (case-insensitive substring; a keyword that starts or
ends with a digit does not match inside a longer number, so ``618`` does not match ``1618``)."""

_BAND_NAMES: tuple[str, ...] = tuple(name for name, _, _ in PRICE_BANDS)
SHARE_COLUMNS: tuple[str, ...] = tuple(f"share_{c}" for c in CATEGORIES)
BAND_COLUMNS: tuple[str, ...] = tuple(f"band_{b}" for b in _BAND_NAMES)
SUMMARY_COLUMNS: tuple[str, ...] = (
    "n_skus",
    *SHARE_COLUMNS,
    *BAND_COLUMNS,
    "mean_live_price",
    "mean_list_price",
    "mean_discount",
    "new_launch_share",
    "total_stock",
    "n_categories",
    "top_category",
)
"""Columns of :func:`product_mix_summary`. ``mean_list_price`` is informational only (a
``ProductMix`` does not state it), so no mix feature reads it."""

_MIX_FROM_SUMMARY: tuple[str, ...] = tuple(c for c in SUMMARY_COLUMNS if c != "mean_list_price")

CATEGORICAL_VOCAB: dict[str, tuple[str, ...]] = {
    "topic__session_type": SESSION_TYPES,
    "slot__hour_band": HOUR_BANDS,
    "mix__top_category": CATEGORIES,
    "room__platform": PLATFORMS,
    "room__main_category": CATEGORIES,
}
"""Fixed vocabularies of the categorical feature columns (saved with a model bundle)."""

_NS_PER_DAY = 86_400 * 10**9


class UnknownCategoryError(ValueError):
    """A categorical feature holds a value outside its fixed vocabulary."""

    def __init__(self, column: str, values: Iterable[object], allowed: Iterable[str]) -> None:
        self.column = column
        self.values = sorted(str(v) for v in values)
        self.allowed = tuple(allowed)
        super().__init__(
            f"column {column!r}: unknown value(s) {self.values}; allowed: {', '.join(self.allowed)}"
        )


# --------------------------------------------------------------------------- columns and vocab


def _family(column: object) -> str | None:
    name = str(column)
    family, sep, rest = name.partition("__")
    return family if sep and rest and family in FAMILIES else None


def feature_families(columns: Iterable[object]) -> dict[str, list[str]]:
    """Family -> its feature columns (by the ``<family>__`` prefix), all six families as keys."""
    out: dict[str, list[str]] = {f: [] for f in FAMILIES}
    for col in columns:
        fam = _family(col)
        if fam is not None:
            out[fam].append(str(col))
    return out


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """The feature columns of ``frame``: family order (:data:`FAMILIES`), then column order.

    Keys, outcomes and any other column without a family prefix are left out.
    """
    fams = feature_families(frame.columns)
    return [c for f in FAMILIES for c in fams[f]]


def apply_vocab(
    frame: pd.DataFrame, vocab: dict[str, tuple[str, ...]] = CATEGORICAL_VOCAB
) -> pd.DataFrame:
    """Cast the vocabulary columns present in ``frame`` to ``category`` with exactly that vocab.

    Missing values stay missing. Raises :class:`UnknownCategoryError` when a value is outside the
    vocabulary (LightGBM would otherwise read it silently as missing). Returns a copy.
    """
    out = frame.copy()
    for col, allowed in vocab.items():
        if col not in out.columns:
            continue
        values = out[col]
        if isinstance(values.dtype, pd.CategoricalDtype):
            values = values.astype(object)
        seen = pd.unique(values[values.notna()].astype(str))
        unknown = set(seen) - set(allowed)
        if unknown:
            raise UnknownCategoryError(col, unknown, allowed)
        out[col] = pd.Series(pd.Categorical(values, categories=list(allowed)), index=out.index)
    return out


def cold_start(frame: pd.DataFrame) -> pd.Series:
    """True where the room has no prior session with outcomes (``room__n_prior == 0``)."""
    return frame["room__n_prior"].fillna(0).eq(0).rename("cold_start")


# --------------------------------------------------------------------------- product mix


def _empty_summary() -> pd.DataFrame:
    out = pd.DataFrame({c: pd.Series(dtype="float64") for c in SUMMARY_COLUMNS})
    out["top_category"] = out["top_category"].astype(object)
    out.index = pd.Index([], dtype=object, name="session_id")
    return out


def _finish_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """Derive ``n_categories`` and ``top_category`` from the category shares (ties: the first
    category of :data:`~features.contract.CATEGORIES`). One definition for both sources."""
    shares = summary[list(SHARE_COLUMNS)].to_numpy(dtype=float)
    known = ~np.isnan(shares).all(axis=1)
    filled = np.nan_to_num(shares, nan=0.0)
    summary["n_categories"] = np.where(known, (filled > 0).sum(axis=1), np.nan).astype(float)
    top = np.array(CATEGORIES, dtype=object)[filled.argmax(axis=1)] if len(summary) else []
    summary["top_category"] = pd.Series(top, index=summary.index, dtype=object).where(
        known & (filled.max(axis=1, initial=0.0) > 0), None
    )
    return summary[list(SUMMARY_COLUMNS)]


def product_mix_summary(products: pd.DataFrame) -> pd.DataFrame:
    """One row per session (index ``session_id``) summarising its SKUs.

    Columns (:data:`SUMMARY_COLUMNS`): ``n_skus``; ``share_<category>`` (fraction of SKUs);
    ``band_<band>`` (fraction of SKUs per live-price band of :data:`~features.plan.PRICE_BANDS`);
    ``mean_live_price`` / ``mean_list_price`` (currency); ``mean_discount`` = mean of
    ``1 - live / list`` clipped to [0, 1]; ``new_launch_share``; ``total_stock`` (units, NaN if
    any SKU's stock is unknown); ``n_categories``; ``top_category``. Sessions without SKUs get
    no row (their mix features are missing).
    """
    needed = {"session_id", "category", "list_price", "live_price"}
    if products is None or len(products) == 0 or not needed <= set(products.columns):
        return _empty_summary()
    p = products
    sid = p["session_id"].astype(str)
    live = p["live_price"].to_numpy(dtype=float)
    lst = p["list_price"].to_numpy(dtype=float)
    bands = pd.cut(
        live,
        bins=[PRICE_BANDS[0][1], *(hi for _, _, hi in PRICE_BANDS)],
        right=False,
        labels=list(_BAND_NAMES),
    )
    stock = p["stock"].to_numpy(dtype=float) if "stock" in p.columns else np.full(len(p), np.nan)
    new = (
        p["is_new_launch"].fillna(False).to_numpy(dtype=float)
        if "is_new_launch" in p.columns
        else np.zeros(len(p))
    )
    sess, ids = pd.factorize(sid)
    n_sess = len(ids)
    n = np.bincount(sess, minlength=n_sess).astype(float)

    def per_session_sum(values: np.ndarray) -> np.ndarray:
        return np.bincount(sess, weights=values, minlength=n_sess)

    def shares(codes: np.ndarray, k: int) -> np.ndarray:
        counts = np.bincount(sess * k + codes, minlength=n_sess * k).reshape(n_sess, k)
        return counts / n[:, None]

    cat_code = pd.Categorical(p["category"].astype(str).to_numpy(), categories=CATEGORIES).codes
    if (cat_code < 0).any():
        bad = set(p["category"].astype(str).to_numpy()[cat_code < 0])
        raise UnknownCategoryError("category", bad, CATEGORIES)
    summary = pd.DataFrame(index=pd.Index(ids, dtype=object, name="session_id"))
    summary["n_skus"] = n
    cat_shares = shares(cat_code.astype(np.int64), len(CATEGORIES))
    for i, c in enumerate(CATEGORIES):
        summary[f"share_{c}"] = cat_shares[:, i]
    band_shares = shares(np.asarray(bands.codes, dtype=np.int64), len(_BAND_NAMES))
    for i, b in enumerate(_BAND_NAMES):
        summary[f"band_{b}"] = band_shares[:, i]
    summary["mean_live_price"] = per_session_sum(live) / n
    summary["mean_list_price"] = per_session_sum(lst) / n
    summary["mean_discount"] = np.clip(per_session_sum(1.0 - live / lst) / n, 0.0, 1.0)
    summary["new_launch_share"] = per_session_sum(new) / n
    missing = np.bincount(sess, weights=np.isnan(stock).astype(float), minlength=n_sess)
    total = per_session_sum(np.nan_to_num(stock, nan=0.0))
    summary["total_stock"] = np.where(missing > 0, np.nan, total)
    return _finish_summary(summary)


def mix_to_summary(mix: ProductMix, session_id: str) -> pd.DataFrame:
    """A :class:`~features.plan.ProductMix` as one :func:`product_mix_summary` row.

    Category shares are renormalised to sum to 1; price-band shares are missing when the mix
    gives none; ``mean_list_price`` is missing (a mix does not state it).
    """
    cat_shares: dict[str, float] = {str(k): float(v) for k, v in mix.category_shares.items()}
    cat_total = sum(cat_shares.values())
    row: dict[str, float] = {"n_skus": float(mix.n_skus)}
    for c in CATEGORIES:
        row[f"share_{c}"] = float(cat_shares.get(c, 0.0)) / cat_total
    band_total = sum(mix.price_band_shares.values())
    for b in _BAND_NAMES:
        row[f"band_{b}"] = (
            float(mix.price_band_shares.get(b, 0.0)) / band_total if band_total > 0 else math.nan
        )
    row["mean_live_price"] = float(mix.mean_live_price)
    row["mean_list_price"] = math.nan
    row["mean_discount"] = float(mix.mean_discount)
    row["new_launch_share"] = float(mix.new_launch_share)
    row["total_stock"] = math.nan if mix.total_stock is None else float(mix.total_stock)
    out = pd.DataFrame([row], index=pd.Index([session_id], dtype=object, name="session_id"))
    return _finish_summary(out)


def mix_features(summary: pd.DataFrame, session_ids: pd.Series) -> pd.DataFrame:
    """``mix__*`` columns for ``session_ids`` (positional order), read from a mix summary only."""
    ids = session_ids.astype(str).to_numpy()
    s = summary.reindex(pd.Index(ids, dtype=object))
    out = pd.DataFrame(index=session_ids.index)
    for col in _MIX_FROM_SUMMARY:
        values = s[col].to_numpy()
        out[f"mix__{col}"] = values if col == "top_category" else values.astype(float)
    return out


# --------------------------------------------------------------------------- topic


def _keyword_pattern(keywords: Iterable[str]) -> str:
    parts = []
    for kw in keywords:
        pat = re.escape(kw)
        if kw[0].isdigit():
            pat = r"(?:^|\D)" + pat
        if kw[-1].isdigit():
            pat = pat + r"(?:\D|$)"
        parts.append(pat)
    return "|".join(parts)


_KEYWORD_PATTERNS: dict[str, str] = {
    flag: _keyword_pattern(kws) for flag, kws in TITLE_KEYWORDS.items()
}  # no look-around, so pyarrow's regex engine runs them vectorised


def topic_features(sessions: pd.DataFrame) -> pd.DataFrame:
    """``topic__session_type``, one 0/1 flag per :data:`TITLE_KEYWORDS` entry, title length
    (characters). A missing title has no flags and length 0."""
    title = (
        sessions["title"].astype(object).where(sessions["title"].notna(), "")
        if "title" in sessions.columns
        else pd.Series("", index=sessions.index, dtype=object)
    ).astype(str)
    out = pd.DataFrame(index=sessions.index)
    out["topic__session_type"] = sessions["session_type"].astype(object).to_numpy()
    for flag, pattern in _KEYWORD_PATTERNS.items():
        out[f"topic__kw_{flag}"] = title.str.contains(pattern, case=False, regex=True).astype(float)
    out["topic__title_len"] = title.str.len().astype(float)
    return out


def is_festival_session(sessions: pd.DataFrame, topic: pd.DataFrame) -> pd.Series:
    """A festival session: type ``festival_promo`` or a festival keyword in the title."""
    return sessions["session_type"].astype(str).eq("festival_promo") | topic[
        "topic__kw_festival"
    ].eq(1.0)


# --------------------------------------------------------------------------- slot


def hour_band_code(start_time: pd.Series, tz: str = DEFAULT_TZ) -> np.ndarray:
    """Index into :data:`HOUR_BANDS` of each start's local hour in ``tz``."""
    return _HOUR_BAND_CODE[start_time.dt.tz_convert(tz).dt.hour.to_numpy()]


def _festival_days(local_days: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Days to / from ``name`` (uncapped, NaN outside the calendar) and the in-window flag."""
    n = len(local_days)
    to_next = np.full(n, np.nan)
    from_prev = np.full(n, np.nan)
    window = np.zeros(n, dtype=bool)
    first = np.datetime64(festival_day(name, FIRST_YEAR), "D")
    last = np.datetime64(festival_day(name, LAST_YEAR), "D")
    ok = (local_days >= first) & (local_days <= last)
    if ok.any():
        idx = pd.DatetimeIndex(local_days[ok])
        t, f = days_to_from(idx, name)
        to_next[ok] = t
        from_prev[ok] = f
        window[ok] = in_window(idx, name)
    before = local_days < first
    to_next[before] = (first - local_days[before]).astype(int)
    after = local_days > last
    from_prev[after] = (local_days[after] - last).astype(int)
    window[before] = to_next[before] <= WINDOW_BEFORE[name]
    window[after] = from_prev[after] <= WINDOW_AFTER[name]
    return to_next, from_prev, window


def slot_features(sessions: pd.DataFrame, tz: str = DEFAULT_TZ) -> pd.DataFrame:
    """When the session runs, in local time of ``tz``.

    ``slot__hour`` (0-23), ``slot__hour_band`` (category), ``slot__weekday`` (0 = Monday),
    ``slot__is_weekend``, ``slot__month``, ``slot__duration_min`` (planned, minutes), and per
    festival of :data:`~features.calendar.FESTIVALS` the days to the next / since the previous
    festival day (capped at :data:`FESTIVAL_CAP_DAYS`) and whether the day is in its window.
    """
    local = sessions["start_time"].dt.tz_convert(tz)
    out = pd.DataFrame(index=sessions.index)
    hour = local.dt.hour.to_numpy()
    out["slot__hour"] = hour.astype(float)
    out["slot__hour_band"] = np.array(HOUR_BANDS, dtype=object)[_HOUR_BAND_CODE[hour]]
    weekday = local.dt.day_of_week.to_numpy()
    out["slot__weekday"] = weekday.astype(float)
    out["slot__is_weekend"] = (weekday >= 5).astype(float)
    out["slot__month"] = local.dt.month.to_numpy().astype(float)
    out["slot__duration_min"] = sessions["planned_duration_min"].to_numpy(dtype=float)
    days = local.dt.tz_localize(None).to_numpy().astype("datetime64[D]")
    any_window = np.zeros(len(sessions), dtype=bool)
    for name in FESTIVALS:
        to_next, from_prev, window = _festival_days(days, name)
        out[f"slot__days_to_{name}"] = np.minimum(to_next, FESTIVAL_CAP_DAYS)
        out[f"slot__days_from_{name}"] = np.minimum(from_prev, FESTIVAL_CAP_DAYS)
        out[f"slot__in_window_{name}"] = window.astype(float)
        if name != "spring":  # the spring window is a logistics lull, not a selling window
            any_window |= window
    out["slot__in_promo_window"] = any_window.astype(float)
    return out


# --------------------------------------------------------------------------- promo and warm-up

_MECHANICS: tuple[str, ...] = ("lottery_count", "red_envelope_count", "flash_sale_rounds")


def promo_features(sessions: pd.DataFrame, mix: pd.DataFrame) -> pd.DataFrame:
    """In-session mechanics: counts, coupon value (currency), discount depth (fraction; from the
    SKUs' mean discount when not stated), number of mechanics used (lottery, red envelope,
    flash sale, coupon; missing when none is known) and coupon value / mean live price."""
    out = pd.DataFrame(index=sessions.index)
    for col in _MECHANICS:
        out[f"promo__{col}"] = sessions[col].to_numpy(dtype=float)
    coupon = sessions["coupon_value"].to_numpy(dtype=float)
    out["promo__coupon_value"] = coupon
    out["promo__discount_depth"] = (
        sessions["discount_depth"].astype(float).fillna(mix["mix__mean_discount"]).to_numpy()
    )
    used = np.column_stack([sessions[c].to_numpy(dtype=float) for c in _MECHANICS] + [coupon])
    n_used = (np.nan_to_num(used, nan=0.0) > 0).sum(axis=1).astype(float)
    out["promo__n_mechanics"] = np.where(np.isnan(used).all(axis=1), np.nan, n_used)
    price = mix["mix__mean_live_price"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["promo__coupon_rel_price"] = np.where(price > 0, coupon / price, np.nan)
    return out


def warmup_features(sessions: pd.DataFrame) -> pd.DataFrame:
    """Warm-up effort: videos and community pushes (counts), paid budget (currency), and the
    number of organic warm-up actions (videos + pushes)."""
    out = pd.DataFrame(index=sessions.index)
    videos = sessions["warmup_videos"].to_numpy(dtype=float)
    pushes = sessions["community_pushes"].to_numpy(dtype=float)
    out["warmup__videos"] = videos
    out["warmup__community_pushes"] = pushes
    out["warmup__paid_promo_budget"] = sessions["paid_promo_budget"].to_numpy(dtype=float)
    out["warmup__n_actions"] = videos + pushes
    return out


# --------------------------------------------------------------------------- room history


def _epoch_ns(start_time: pd.Series) -> np.ndarray:
    return pd.DatetimeIndex(start_time).as_unit("ns").asi8


def _trailing_mean(
    values: pd.DataFrame, groups: np.ndarray, window: int, skip: int = 0
) -> pd.DataFrame:
    """Mean of each row's group values over lags ``skip .. skip + window - 1`` (lag 0 = the row
    itself), NaN skipped, missing when no value is there.

    Rows of one group must be contiguous and in time order. Each row sums only its own window,
    in a fixed order, so its value is the same whatever the other rows (or groups) hold.
    """
    x = values.to_numpy(dtype=float)
    n = len(x)
    total = np.zeros_like(x)
    count = np.zeros_like(x)
    for lag in range(skip, skip + window):
        if lag >= n:
            break
        same = np.zeros(n, dtype=bool)
        same[lag:] = groups[lag:] == groups[: n - lag]
        lagged = np.full_like(x, np.nan)
        lagged[lag:] = x[: n - lag]
        lagged[~same] = np.nan
        ok = ~np.isnan(lagged)
        total += np.where(ok, lagged, 0.0)
        count += ok
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(count > 0, total / count, np.nan)
    return pd.DataFrame(mean, index=values.index, columns=values.columns)


class AsOfTable:
    """Per-group as-of lookup over cumulative statistics, built once, queried many times.

    For a query (group key, ``_t``) it returns ``columns`` of the last ``stats`` row of the same
    ``by`` group with ``_t`` strictly earlier than the query's; missing when there is none.
    ``stats`` must hold cumulative / trailing values in time order within each group; of rows
    sharing a start time only the last (which includes all of them) is kept, so ties never see
    each other. Non-numeric keys compare as strings.
    """

    def __init__(self, stats: pd.DataFrame, by: list[str], columns: list[str]) -> None:
        right = stats.drop_duplicates([*by, "_t"], keep="last")[[*by, "_t", *columns]]
        right = right.sort_values([*by, "_t"], kind="stable").reset_index(drop=True)
        self.by = list(by)
        self.columns = list(columns)
        self._numeric = [pd.api.types.is_numeric_dtype(right[c]) for c in by]
        self._t = right["_t"].to_numpy(dtype=np.int64)
        self._values = right[self.columns].to_numpy(dtype=float)
        keys = self._key_tuples([right[c].to_numpy() for c in by])
        self._slices: dict[tuple, tuple[int, int]] = {}
        for i, key in enumerate(keys):  # rows of a group are contiguous after the sort
            start, _ = self._slices.get(key, (i, i))
            self._slices[key] = (start, i + 1)

    def _key_tuples(self, arrays: list[np.ndarray]) -> list[tuple]:
        cols = [
            a.astype(np.int64).tolist() if num else [str(v) for v in a]
            for a, num in zip(arrays, self._numeric, strict=True)
        ]
        return list(zip(*cols, strict=True))

    def lookup(self, keys: list[np.ndarray], t: np.ndarray) -> np.ndarray:
        """Values (n x len(columns), float) for queries given as key arrays and ``_t``."""
        t = np.asarray(t, dtype=np.int64)
        out = np.full((len(t), len(self.columns)), np.nan)
        groups: dict[tuple, list[int]] = {}
        for i, key in enumerate(self._key_tuples([np.asarray(k) for k in keys])):
            groups.setdefault(key, []).append(i)
        for key, rows in groups.items():
            span = self._slices.get(key)
            if span is None:
                continue
            idx = np.asarray(rows)
            pos = np.searchsorted(self._t[span[0] : span[1]], t[idx], side="left") - 1
            ok = pos >= 0
            out[idx[ok]] = self._values[span[0] + pos[ok]]
        return out

    def frame(self, queries: pd.DataFrame) -> pd.DataFrame:
        """:meth:`lookup` for a frame holding the ``by`` columns and ``_t``."""
        values = self.lookup([queries[c].to_numpy() for c in self.by], queries["_t"].to_numpy())
        return pd.DataFrame(values, index=queries.index, columns=self.columns)


def _history_table(history: pd.DataFrame, history_summary: pd.DataFrame, tz: str) -> pd.DataFrame:
    """History sessions sorted by (room, start, id) with the per-session values the room
    statistics read (outcomes of past sessions in log space, plan inputs)."""
    h = history.sort_values(["room_id", "start_time", "session_id"], kind="stable")
    h = h.reset_index(drop=True)
    viewers = h["viewers"].to_numpy(dtype=float)
    orders = h["orders"].to_numpy(dtype=float)
    gmv = h["gmv"].to_numpy(dtype=float)
    topic = topic_features(h)
    with np.errstate(divide="ignore", invalid="ignore"):
        conv = np.where(viewers > 0, orders / viewers, np.nan)
        aov = np.where(orders > 0, gmv / orders, np.nan)
    counts = history_summary.reindex(pd.Index(h["session_id"].astype(str), dtype=object))
    n_skus = counts["n_skus"].to_numpy(dtype=float)[:, None]
    cat_counts = np.nan_to_num(
        np.round(counts[list(SHARE_COLUMNS)].to_numpy(dtype=float) * n_skus), nan=0.0
    )
    table = pd.DataFrame(
        {
            "room_id": h["room_id"].astype(str).to_numpy(),
            "_t": _epoch_ns(h["start_time"]),
            "_band": hour_band_code(h["start_time"], tz),
            "session_type": h["session_type"].astype(str).to_numpy(),
            "has_outcome": ~(np.isnan(viewers) & np.isnan(orders) & np.isnan(gmv)),
            "lv": np.log1p(viewers),
            "lg": np.log1p(gmv),
            "lo": np.log1p(orders),
            "conv": conv,
            "aov": aov,
            "dwell": h["avg_dwell_seconds"].to_numpy(dtype=float),
            "followers": h["followers_at_start"].to_numpy(dtype=float),
            "festival": is_festival_session(h, topic).to_numpy(dtype=float),
            "duration": h["planned_duration_min"].to_numpy(dtype=float),
        }
    )
    for i, c in enumerate(CATEGORIES):
        table[f"cat_{c}"] = cat_counts[:, i]
    return table


def _outcome_stats(h: pd.DataFrame) -> pd.DataFrame:
    """Trailing statistics over each room's sessions with outcomes, this session included."""
    o = h[h["has_outcome"]].reset_index(drop=True)
    room = pd.factorize(o["room_id"])[0]
    logs = o[["lv", "lg", "lo"]]
    m5 = _trailing_mean(logs, room, 5)
    m20 = _trailing_mean(o[["lv", "lg", "lo", "conv", "aov", "dwell"]], room, 20)
    last = logs.groupby(room, sort=False).ffill()
    prev20 = _trailing_mean(o[["lv", "lg"]], room, 20, skip=5)
    stats = pd.DataFrame({"room_id": o["room_id"], "_t": o["_t"]})
    stats["n_prior"] = o.groupby(room, sort=False).cumcount().to_numpy(dtype=float) + 1.0
    for src, name in (("lv", "viewers"), ("lg", "gmv"), ("lo", "orders")):
        stats[f"{name}_mean_5"] = m5[src].to_numpy()
        stats[f"{name}_mean_20"] = m20[src].to_numpy()
        stats[f"{name}_last"] = last[src].to_numpy()
    stats["conversion_mean_20"] = m20["conv"].to_numpy()
    stats["aov_mean_20"] = m20["aov"].to_numpy()
    stats["dwell_mean_20"] = m20["dwell"].to_numpy()
    stats["viewers_trend"] = m5["lv"].to_numpy() - prev20["lv"].to_numpy()
    stats["gmv_trend"] = m5["lg"].to_numpy() - prev20["lg"].to_numpy()
    return stats


def _group_stats(h: pd.DataFrame, key: str, sources: dict[str, str]) -> pd.DataFrame:
    """Mean of the last 10 sessions with outcomes of the same room and ``key`` value."""
    o = h[h["has_outcome"]].sort_values(["room_id", key, "_t"], kind="stable")
    o = o.reset_index(drop=True)
    groups = o.groupby(["room_id", key], sort=False).ngroup().to_numpy()
    rolled = _trailing_mean(o[list(sources)], groups, 10)
    stats = o[["room_id", key, "_t"]].copy()
    for src, name in sources.items():
        stats[name] = rolled[src].to_numpy()
    return stats


def _plan_stats(h: pd.DataFrame) -> pd.DataFrame:
    """Cumulative statistics over each room's sessions (outcomes not needed), this included."""
    room = pd.factorize(h["room_id"])[0]
    g = h.groupby(room, sort=False)
    stats = pd.DataFrame({"room_id": h["room_id"], "_t": h["_t"]})
    stats["prev_t"] = h["_t"].to_numpy(dtype=float)
    stats["followers_last"] = g["followers"].ffill().to_numpy()
    stats["festival_share"] = g["festival"].cumsum().to_numpy() / (
        g.cumcount().to_numpy(dtype=float) + 1.0
    )
    stats["duration_median"] = (
        h[["duration"]]
        .groupby(room, sort=False)
        .expanding(min_periods=1)
        .median()
        .droplevel(0)
        .reindex(h.index)["duration"]
        .to_numpy()
    )
    cum = h[[f"cat_{c}" for c in CATEGORIES]].groupby(room, sort=False).cumsum().to_numpy()
    code = np.where(cum.max(axis=1, initial=0.0) > 0, cum.argmax(axis=1), -1)
    stats["main_category_code"] = code.astype(float)
    return stats


_ROOM_OUTCOME_COLUMNS: tuple[str, ...] = (
    "n_prior",
    "viewers_mean_5",
    "viewers_mean_20",
    "viewers_last",
    "gmv_mean_5",
    "gmv_mean_20",
    "gmv_last",
    "orders_mean_5",
    "orders_mean_20",
    "orders_last",
    "conversion_mean_20",
    "aov_mean_20",
    "dwell_mean_20",
    "viewers_trend",
    "gmv_trend",
)


@dataclass(frozen=True)
class RoomHistory:
    """The per-room history state :func:`room_features` reads (as-of tables of the room
    statistics), computed once from a history snapshot by :func:`room_history`."""

    outcome: AsOfTable
    band: AsOfTable
    session_type: AsOfTable
    plan: AsOfTable


_PLAN_STAT_COLUMNS: list[str] = [
    "prev_t",
    "followers_last",
    "festival_share",
    "duration_median",
    "main_category_code",
]


def room_history(
    history: pd.DataFrame, history_summary: pd.DataFrame, tz: str = DEFAULT_TZ
) -> RoomHistory:
    """The room statistics of ``history`` (sessions and their mix summary) as as-of tables."""
    h = _history_table(history, history_summary, tz)
    return RoomHistory(
        outcome=AsOfTable(_outcome_stats(h), ["room_id"], list(_ROOM_OUTCOME_COLUMNS)),
        band=AsOfTable(
            _group_stats(h, "_band", {"lv": "band_viewers_mean_10", "lg": "band_gmv_mean_10"}),
            ["room_id", "_band"],
            ["band_viewers_mean_10", "band_gmv_mean_10"],
        ),
        session_type=AsOfTable(
            _group_stats(h, "session_type", {"lg": "type_gmv_mean_10"}),
            ["room_id", "session_type"],
            ["type_gmv_mean_10"],
        ),
        plan=AsOfTable(_plan_stats(h), ["room_id"], _PLAN_STAT_COLUMNS),
    )


def room_features(
    sessions: pd.DataFrame,
    history: pd.DataFrame | None,
    history_summary: pd.DataFrame | None,
    top_category: pd.Series,
    tz: str = DEFAULT_TZ,
    *,
    state: RoomHistory | None = None,
) -> pd.DataFrame:
    """The room's history before each session (only ``history`` rows of the same room that
    started strictly earlier), plus the plan's own room inputs.

    Outcome statistics skip sessions without outcomes: ``room__n_prior`` (count), trailing
    means of ``log1p`` viewers / GMV / orders over the last 5 and 20, the last value,
    conversion (orders / viewers), AOV (currency per order) and dwell (seconds) means over the
    last 20, trend (mean of last 5 minus mean of the 20 before, log space), same hour band
    (last 10) and same session type (last 10) means. From all earlier sessions:
    ``room__days_since_last`` (days), ``room__festival_share``, ``room__duration_ratio``
    (planned duration / the room's median earlier planned duration). ``room__followers`` is
    the session's ``followers_at_start``, else the room's last known value;
    ``room__main_category`` is the most frequent SKU category of earlier sessions, else the
    plan's ``room_category`` (when the frame has that column), else ``top_category``.
    ``state`` (from :func:`room_history`) replaces ``history`` / ``history_summary``.
    """
    if state is None:
        state = room_history(history, history_summary, tz)
    q = pd.DataFrame(
        {
            "room_id": sessions["room_id"].astype(str).to_numpy(),
            "_t": _epoch_ns(sessions["start_time"]),
            "_band": hour_band_code(sessions["start_time"], tz),
            "session_type": sessions["session_type"].astype(str).to_numpy(),
        },
        index=sessions.index,
    )
    out = pd.DataFrame(index=sessions.index)
    main = state.outcome.frame(q)
    for col in _ROOM_OUTCOME_COLUMNS:
        out[f"room__{col}"] = main[col].to_numpy()
    out["room__n_prior"] = out["room__n_prior"].fillna(0.0)
    band = state.band.frame(q)
    out["room__band_viewers_mean_10"] = band["band_viewers_mean_10"].to_numpy()
    out["room__band_gmv_mean_10"] = band["band_gmv_mean_10"].to_numpy()
    typ = state.session_type.frame(q)
    out["room__type_gmv_mean_10"] = typ["type_gmv_mean_10"].to_numpy()
    plan = state.plan.frame(q)
    out["room__days_since_last"] = (q["_t"].to_numpy(dtype=float) - plan["prev_t"]) / _NS_PER_DAY
    out["room__festival_share"] = plan["festival_share"].to_numpy()
    planned = sessions["planned_duration_min"].to_numpy(dtype=float)
    median = plan["duration_median"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        out["room__duration_ratio"] = np.where(median > 0, planned / median, np.nan)
    own = sessions["followers_at_start"].to_numpy(dtype=float)
    out["room__followers"] = np.where(np.isnan(own), plan["followers_last"].to_numpy(), own)
    out["room__platform"] = sessions["platform"].astype(object).to_numpy()
    code = plan["main_category_code"].to_numpy()
    known = ~np.isnan(code) & (code >= 0)
    cats = np.array(CATEGORIES, dtype=object)
    main_cat = pd.Series(
        np.where(known, cats[np.where(known, code, 0).astype(int)], None),
        index=sessions.index,
        dtype=object,
    )
    if "room_category" in sessions.columns:
        main_cat = main_cat.fillna(sessions["room_category"].astype(object))
    out["room__main_category"] = main_cat.fillna(top_category.astype(object))
    return out


def sku_history(history: pd.DataFrame, history_products: pd.DataFrame) -> AsOfTable | None:
    """The SKU track records :func:`sku_history_features` reads: per (room, SKU) cumulative
    appearances ``cn``, units ``cu`` and log1p units ``clg`` as an as-of table; None when the
    history has no ``units_sold`` column."""
    if history_products is None or "units_sold" not in history_products.columns:
        return None
    hs = history[["session_id", "room_id", "start_time"]].assign(
        session_id=lambda d: d["session_id"].astype(str), room_id=lambda d: d["room_id"].astype(str)
    )
    hp = history_products[["session_id", "sku_id", "units_sold"]].copy()
    hp["session_id"] = hp["session_id"].astype(str)
    hp = hp[hp["units_sold"].notna()].merge(hs, on="session_id", how="inner")
    hp["sku_id"] = hp["sku_id"].astype(str)
    hp["_t"] = _epoch_ns(hp["start_time"])
    hp["_log"] = np.log1p(hp["units_sold"].astype(float))
    # one row per (room, sku, start time): sessions starting together never see each other
    g = (
        hp.groupby(["room_id", "sku_id", "_t"], sort=True)
        .agg(n=("units_sold", "size"), u=("units_sold", "sum"), lg=("_log", "sum"))
        .reset_index()
    )
    g[["cn", "cu", "clg"]] = g.groupby(["room_id", "sku_id"])[["n", "u", "lg"]].cumsum()
    return AsOfTable(g, ["room_id", "sku_id"], ["cn", "cu", "clg"])


_NO_STATE = object()


def sku_history_features(
    sessions: pd.DataFrame,
    products: pd.DataFrame,
    history: pd.DataFrame | None,
    history_products: pd.DataFrame | None,
    *,
    state: AsOfTable | object | None = _NO_STATE,
) -> pd.DataFrame:
    """Track record of the session's SKUs in the same room, from earlier sessions only.

    For each planned SKU: the mean units sold over its earlier appearances in the room (only
    sessions that started strictly before this one and have ``units_sold``). Per session:
    ``room__sku_hist_units`` (sum over SKUs with a track record, units),
    ``room__sku_hist_log_units`` (mean log1p units over those SKUs) and
    ``room__sku_hist_share`` (share of the session's SKUs with a track record). Missing when
    the session lists no SKUs. ``state`` (from :func:`sku_history`) replaces ``history`` /
    ``history_products``.
    """
    cols = ["room__sku_hist_units", "room__sku_hist_log_units", "room__sku_hist_share"]
    out = pd.DataFrame(np.nan, index=sessions.index, columns=cols)
    if len(products) == 0:
        return out
    if state is _NO_STATE:
        state = sku_history(history, history_products)
    if state is None:
        return out
    tgt_s = sessions[["session_id", "room_id", "start_time"]].copy()
    tgt_s["session_id"] = tgt_s["session_id"].astype(str)
    tgt_s["room_id"] = tgt_s["room_id"].astype(str)
    tp = products[["session_id", "sku_id"]].copy()
    tp["session_id"] = tp["session_id"].astype(str)
    tp["sku_id"] = tp["sku_id"].astype(str)
    tp = tp.merge(tgt_s, on="session_id", how="inner")
    if len(tp) == 0:
        return out
    tp["_t"] = _epoch_ns(tp["start_time"])
    m = pd.concat([tp, state.frame(tp)], axis=1)
    m["mean_u"] = m["cu"] / m["cn"]
    m["mean_lg"] = m["clg"] / m["cn"]
    m["has"] = m["cn"].notna().astype(float)
    agg = m.groupby("session_id").agg(
        units=("mean_u", "sum"), log_units=("mean_lg", "mean"), share=("has", "mean")
    )
    sid = sessions["session_id"].astype(str)
    out["room__sku_hist_units"] = agg["units"].reindex(sid).to_numpy()
    out["room__sku_hist_log_units"] = agg["log_units"].reindex(sid).to_numpy()
    out["room__sku_hist_share"] = agg["share"].reindex(sid).to_numpy()
    return out


# --------------------------------------------------------------------------- assembly


def _features(
    sessions: pd.DataFrame,
    summary: pd.DataFrame,
    history: pd.DataFrame,
    history_summary: pd.DataFrame,
    tz: str,
    products: pd.DataFrame | None = None,
    history_products: pd.DataFrame | None = None,
    context: PlanContext | None = None,
) -> pd.DataFrame:
    """Keys plus all six families for ``sessions`` (positional order kept). With ``context``
    the room and SKU history state come from it instead of ``history`` / ``history_*``."""
    sessions = sessions.reset_index(drop=True)
    keys = sessions[list(KEY_COLUMNS)].copy()
    keys["session_id"] = keys["session_id"].astype(str)
    keys["room_id"] = keys["room_id"].astype(str)
    mix = mix_features(summary, sessions["session_id"])
    parts = [
        keys,
        topic_features(sessions),
        slot_features(sessions, tz),
        mix,
        promo_features(sessions, mix),
        warmup_features(sessions),
        room_features(
            sessions,
            history,
            history_summary,
            mix["mix__top_category"],
            tz,
            state=context.rooms if context is not None else None,
        ),
    ]
    if context is not None and products is not None:
        parts.append(sku_history_features(sessions, products, None, None, state=context.skus))
    elif products is not None and history_products is not None:
        parts.append(sku_history_features(sessions, products, history, history_products))
    frame = pd.concat(parts, axis=1)
    for col in feature_columns(frame):
        if col not in CATEGORICAL_VOCAB:
            frame[col] = frame[col].astype("float64")
    return apply_vocab(frame)


def build_session_features(
    sessions: pd.DataFrame, products: pd.DataFrame, *, tz: str = DEFAULT_TZ
) -> pd.DataFrame:
    """One feature row per session of a validated ``sessions`` table.

    Rows are ordered by (``start_time``, ``session_id``); columns are ``session_id``,
    ``room_id``, ``start_time`` then the feature columns (``<family>__<name>``), categoricals
    already cast by :func:`apply_vocab`. ``products`` (validated ``session_products``) may be
    empty or lack some sessions (their mix features are missing). Outcome columns are not in
    the output, and no row reads its own outcomes or any later session. ``tz`` is the local
    time zone of the slot features.
    """
    ordered = sessions.sort_values(["start_time", "session_id"], kind="stable")
    ordered = ordered.reset_index(drop=True)
    summary = product_mix_summary(products)
    return _features(ordered, summary, ordered, summary, tz, products, products)


@dataclass(frozen=True)
class PlanContext:
    """The history state plan features read, computed once from a history snapshot (the
    service builds it at load time; :func:`plan_features` builds one per call otherwise)."""

    rooms: RoomHistory
    skus: AsOfTable | None
    empty_sessions: pd.DataFrame
    empty_products: pd.DataFrame
    tz: str


def plan_context(
    history_sessions: pd.DataFrame,
    history_products: pd.DataFrame,
    *,
    tz: str = DEFAULT_TZ,
    rooms: Iterable[str] | None = None,
) -> PlanContext:
    """The :class:`PlanContext` of a history snapshot (optionally only some rooms: every
    history statistic is per room, so other rooms' sessions cannot change a plan's row)."""
    if rooms is not None:
        history_sessions = history_sessions[history_sessions["room_id"].isin(set(rooms))]
        if history_products is not None and "session_id" in history_products.columns:
            keep = history_products["session_id"].isin(set(history_sessions["session_id"]))
            history_products = history_products[keep]
    history_summary = product_mix_summary(history_products)
    return PlanContext(
        rooms=room_history(history_sessions, history_summary, tz),
        skus=sku_history(history_sessions, history_products),
        empty_sessions=history_sessions.iloc[:0],
        empty_products=history_products.iloc[:0],
        tz=tz,
    )


def plan_features(
    plans: list[SessionPlan],
    history_sessions: pd.DataFrame | None = None,
    history_products: pd.DataFrame | None = None,
    *,
    tz: str = DEFAULT_TZ,
    context: PlanContext | None = None,
) -> pd.DataFrame:
    """Feature rows for draft plans, in plan order, keyed by the plan id (``session_id``).

    Same code as :func:`build_session_features`: a plan's room history comes from the
    ``history_sessions`` of its room that started strictly before the plan (other plans are
    never history). A plan's ``products`` and ``product_mix`` both go through the mix summary;
    with neither, mix features are missing. ``room_category`` and ``followers_at_start`` fill
    in for a room without history (cold start). ``context`` (from :func:`plan_context`, built
    once) replaces the history arguments: the rows are the same, without the per-call work.
    """
    if context is not None:
        tz = context.tz
    if not plans:
        if context is not None:
            return build_session_features(context.empty_sessions, context.empty_products, tz=tz)
        empty = history_sessions.iloc[:0]
        return build_session_features(empty, history_products.iloc[:0], tz=tz)
    raw, raw_products = plans_to_frames(plans)
    ids = raw["session_id"].astype(str)
    if ids.duplicated().any():
        raise ValueError(f"plan ids must be unique: {sorted(set(ids[ids.duplicated()]))}")
    raw["start_time"] = pd.to_datetime(raw["start_time"], utc=True)
    frame = validate(raw, "sessions", source="plans", tz=tz)
    frame["room_category"] = pd.Series(
        [p.room_category for p in plans], index=frame.index, dtype=object
    )
    # validated once: the mix summary and the SKU track records read the same rows
    plan_products = validate(raw_products, "session_products", tz=tz) if len(raw_products) else None
    parts = []
    if len(raw_products):
        parts.append(product_mix_summary(plan_products))
    for i, plan in enumerate(plans):
        if plan.product_mix is not None:
            parts.append(mix_to_summary(plan.product_mix, plan.plan_id(i)))
    summary = pd.concat(parts) if parts else _empty_summary()
    if context is None:
        # every history statistic is per room: other rooms' sessions cannot change a plan's row
        context = plan_context(history_sessions, history_products, tz=tz, rooms=frame["room_id"])
    if plan_products is None:
        plan_products = context.empty_products
    return _features(frame, summary, None, None, tz, plan_products, None, context)
