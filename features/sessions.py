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

One definition: each family is a function from :class:`SessionInputs` (what is known of a
session before it starts, as numpy arrays) and the history state to :data:`Columns`, and
:func:`session_columns` assembles them. :func:`build_session_features` (training) reads the
inputs from a validated ``sessions`` frame and wraps the columns in a DataFrame;
:func:`plan_columns` (the service) reads them straight from :class:`~features.plan.SessionPlan`
models and :func:`model_matrix` turns them into a model input without any per-request frame.

No leakage: a row never reads its own outcome columns, and the room history is an as-of join
(:func:`pandas.merge_asof`, strictly earlier start) onto per-room trailing statistics, so a
session's features never change when later sessions (of any room) change or disappear. Two
sessions of a room with the same start time do not see each other.

Units: money in the room's currency, durations in minutes, dwell in seconds, days as float days,
``log1p`` for viewers / orders / GMV statistics (heavy-tailed counts).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.calendar import (
    FESTIVALS,
    FIRST_YEAR,
    LAST_YEAR,
    WINDOW_AFTER,
    WINDOW_BEFORE,
    day_distances,
    festival_day,
    window_flags,
)
from features.contract import CATEGORIES, DEFAULT_TZ, PLATFORMS, SESSION_TYPES
from features.plan import PRICE_BANDS, ProductMix, SessionPlan, plans_to_columns

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
        "跨年", "狂欢", "818", "8.18", "好物节", "周年庆", "盛典", "嘉年华", "festival",
        "black friday",
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

IDENTITY_COLUMN = "room__identity"
"""The room id as a categorical input: a room's own level, for datasets with few rooms and many
sessions each. It is not a default model input (:func:`feature_columns` leaves it out); model
choice adds it where it wins (``training.selection``). Its vocabulary is the training rooms
(saved with the bundle); a room outside it reads as missing, which is what the model learnt
for rooms without identity (new rooms, and the masked cold-start copies of training rows)."""

OPEN_VOCAB: frozenset[str] = frozenset({IDENTITY_COLUMN})
"""Categorical columns whose values outside the saved vocabulary are missing, not an error."""

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
    """The default model inputs of ``frame``: family order (:data:`FAMILIES`), then column order.

    Keys, outcomes, any other column without a family prefix and the room identity
    (:data:`IDENTITY_COLUMN`, an input only where model choice adds it) are left out.
    """
    fams = feature_families(frame.columns)
    return [c for f in FAMILIES for c in fams[f] if c != IDENTITY_COLUMN]


def history_columns(columns: Iterable[object]) -> list[str]:
    """The room family's default inputs among ``columns`` (no identity): what the history-only
    baseline reads."""
    return [c for c in feature_families(columns)["room"] if c != IDENTITY_COLUMN]


def apply_vocab(
    frame: pd.DataFrame, vocab: dict[str, tuple[str, ...]] = CATEGORICAL_VOCAB, *, copy: bool = True
) -> pd.DataFrame:
    """Cast the vocabulary columns present in ``frame`` to ``category`` with exactly that vocab.

    Missing values stay missing. Raises :class:`UnknownCategoryError` when a value is outside the
    vocabulary (LightGBM would otherwise read it silently as missing), except in the
    :data:`OPEN_VOCAB` columns, where it becomes missing. Returns a copy (``copy=False``: casts
    the columns of ``frame`` itself, for a frame the caller has just built).
    """
    out = frame.copy() if copy else frame
    for col, allowed in vocab.items():
        if col not in out.columns:
            continue
        values = out[col]
        if isinstance(values.dtype, pd.CategoricalDtype):
            values = values.astype(object)
        seen = pd.unique(values[values.notna()].astype(str))
        unknown = set(seen) - set(allowed)
        if unknown and col not in OPEN_VOCAB:
            raise UnknownCategoryError(col, unknown, allowed)
        if unknown:
            values = values.where(~values.astype(str).isin(unknown))
        out[col] = pd.Series(pd.Categorical(values, categories=list(allowed)), index=out.index)
    return out


def cold_start(frame: pd.DataFrame) -> pd.Series:
    """True where the room has no prior session with outcomes (``room__n_prior == 0``)."""
    return frame["room__n_prior"].fillna(0).eq(0).rename("cold_start")


# --------------------------------------------------------------------------- inputs

Columns = dict[str, np.ndarray]
"""Named, aligned numpy columns (one value per session; object arrays for text and categories).

Every feature is defined once, as a function from :class:`SessionInputs` (and the history state)
to :data:`Columns`. Training wraps the columns in a DataFrame (:func:`build_session_features`);
the service turns them into a model matrix directly (:func:`plan_columns`), without per-request
pandas work."""

_NUMERIC_INPUTS: tuple[str, ...] = (
    "planned_duration_min",
    "followers_at_start",
    "lottery_count",
    "red_envelope_count",
    "flash_sale_rounds",
    "coupon_value",
    "discount_depth",
    "warmup_videos",
    "community_pushes",
    "paid_promo_budget",
    "n_products",
)
_OPTIONAL_INPUTS: frozenset[str] = frozenset({"n_products"})
"""Numeric inputs a ``sessions`` table may lack (missing then)."""
_MECHANICS: tuple[str, ...] = ("lottery_count", "red_envelope_count", "flash_sale_rounds")


@dataclass(frozen=True)
class SessionInputs:
    """What the features read of each session, all known before it starts, as aligned arrays.

    ``t`` is the start as UTC epoch nanoseconds, ``local`` the local wall-clock start
    (``datetime64[ns]`` in the feature time zone); ``host_id`` is the room id where the host is
    not stated (the contract's convention); ``title`` is ``""`` when missing;
    ``room_category`` is None where not stated (plans only); ``numeric`` holds the
    :data:`_NUMERIC_INPUTS` as float (NaN = unknown).
    """

    session_id: np.ndarray
    room_id: np.ndarray
    host_id: np.ndarray
    t: np.ndarray
    local: np.ndarray
    platform: np.ndarray
    session_type: np.ndarray
    title: np.ndarray
    room_category: np.ndarray
    numeric: Columns
    asof: np.ndarray | None = None
    """Where set, the history each session reads ends strictly before this instant (UTC epoch
    ns) instead of before its start: a forecast made at an origin ahead of the session
    (:func:`origin_session_features`). Gaps (days since the last session) still run to the
    start."""

    def __len__(self) -> int:
        return len(self.t)

    @property
    def history_t(self) -> np.ndarray:
        """The instant each session's history ends before (``asof``, else its start)."""
        return self.t if self.asof is None else self.asof


@dataclass(frozen=True)
class SkuList:
    """The SKUs listed for the sessions: each SKU's session (position in the inputs) and id
    (an object array, or a :class:`pandas.Categorical` of the ids for big product tables)."""

    session: np.ndarray
    sku_id: np.ndarray | pd.Categorical


def _object_array(values: Iterable[object]) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.ndim == 1:
        return values.astype(object, copy=True)
    if isinstance(values, (pd.Series, pd.Index, pd.api.extensions.ExtensionArray)):
        # the same elements as iterating, without a Python-level pass over Arrow strings
        return np.array(values.to_numpy(dtype=object), dtype=object, copy=True)
    values = list(values)
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _str_objects(values: np.ndarray) -> np.ndarray:
    """``values`` as an object array of ``str`` (``str(v)`` of each; no pass when they all are)."""
    values = np.asarray(values, dtype=object)
    if pd.api.types.infer_dtype(values, skipna=False) == "string":
        return values
    return np.array([str(v) for v in values], dtype=object)


class _ProductKeys:
    """A product table's session and SKU ids as integer codes, each factorised once (as
    strings) and shared by the mix summary, the SKU list and the SKU history: product rows
    outnumber sessions twenty to one, so string work per row is what a big table pays for."""

    def __init__(self, products: pd.DataFrame) -> None:
        self._products = products

    @functools.cached_property
    def session(self) -> tuple[np.ndarray, np.ndarray]:
        """Each row's session code (-1: missing) and the distinct session ids (object)."""
        codes, ids = pd.factorize(self._products["session_id"].astype(str))
        return codes.astype(np.int32 if len(ids) < 2**31 else np.int64), _object_array(ids)

    @functools.cached_property
    def sku(self) -> tuple[np.ndarray, np.ndarray]:
        """Each row's SKU code (-1: missing) and the distinct SKU ids (object)."""
        codes, ids = pd.factorize(self._products["sku_id"].astype(str))
        return codes.astype(np.int32 if len(ids) < 2**31 else np.int64), _object_array(ids)

    def positions(self, session_ids: np.ndarray) -> np.ndarray:
        """Each row's position in ``session_ids`` (distinct ids; -1: not there)."""
        codes, ids = self.session
        where = pd.Index(session_ids, dtype=object).get_indexer(ids)
        return np.where(codes >= 0, where[codes] if len(ids) else codes, -1).astype(np.int64)


def _titles(sessions: pd.DataFrame) -> np.ndarray:
    """Session titles as an object array of ``str`` (``""`` when missing)."""
    if "title" not in sessions.columns:
        return _object_array([""] * len(sessions))
    title = sessions["title"].astype(object)
    return _object_array(title.where(title.notna(), "").astype(str))


def session_inputs(sessions: pd.DataFrame, tz: str = DEFAULT_TZ) -> SessionInputs:
    """The :class:`SessionInputs` of a validated ``sessions`` frame (positional order)."""
    start = sessions["start_time"]
    room_category = (
        sessions["room_category"].astype(object).where(sessions["room_category"].notna(), None)
        if "room_category" in sessions.columns
        else pd.Series(None, index=sessions.index, dtype=object)
    )
    return SessionInputs(
        session_id=_object_array(sessions["session_id"].astype(str)),
        room_id=_object_array(sessions["room_id"].astype(str)),
        host_id=_object_array(sessions["host_id"].astype(str)),
        t=_epoch_ns(start),
        local=start.dt.tz_convert(tz).dt.tz_localize(None).to_numpy().astype("datetime64[ns]"),
        platform=_object_array(sessions["platform"].astype(object)),
        session_type=_object_array(sessions["session_type"].astype(object)),
        title=_titles(sessions),
        room_category=_object_array(room_category),
        numeric={
            c: sessions[c].to_numpy(dtype=float)
            if c in sessions.columns or c not in _OPTIONAL_INPUTS
            else np.full(len(sessions), np.nan)
            for c in _NUMERIC_INPUTS
        },
    )


def sku_list(
    products: pd.DataFrame | None, session_ids: np.ndarray, *, keys: _ProductKeys | None = None
) -> SkuList:
    """The :class:`SkuList` of ``products`` rows whose session is in ``session_ids``
    (``keys``: the table's :class:`_ProductKeys`, when already built)."""
    if products is None or len(products) == 0:
        return SkuList(np.zeros(0, dtype=np.int64), _object_array([]))
    keys = keys or _ProductKeys(products)
    pos = keys.positions(session_ids)
    keep = pos >= 0
    codes, ids = keys.sku
    return SkuList(pos[keep], pd.Categorical.from_codes(codes[keep], categories=ids))


# --------------------------------------------------------------------------- product mix

_CATEGORY_CODE: dict[str, int] = {c: i for i, c in enumerate(CATEGORIES)}
_BAND_UPPER = np.array([hi for _, _, hi in PRICE_BANDS])


def _empty_summary() -> pd.DataFrame:
    out = pd.DataFrame({c: pd.Series(dtype="float64") for c in SUMMARY_COLUMNS})
    out["top_category"] = out["top_category"].astype(object)
    out.index = pd.Index([], dtype=object, name="session_id")
    return out


def _missing_summary(n: int) -> Columns:
    """Summary columns for ``n`` sessions without a known mix (all missing)."""
    cols: Columns = {c: np.full(n, np.nan) for c in SUMMARY_COLUMNS}
    cols["top_category"] = np.full(n, None, dtype=object)
    return cols


def _finish_summary(cols: Columns) -> Columns:
    """Derive ``n_categories`` and ``top_category`` from the category shares (ties: the first
    category of :data:`~features.contract.CATEGORIES`). One definition for both sources."""
    shares = np.column_stack([cols[c] for c in SHARE_COLUMNS]).astype(float)
    known = ~np.isnan(shares).all(axis=1)
    filled = np.nan_to_num(shares, nan=0.0)
    cols["n_categories"] = np.where(known, (filled > 0).sum(axis=1), np.nan).astype(float)
    top = np.array(CATEGORIES, dtype=object)[filled.argmax(axis=1)]
    cols["top_category"] = np.asarray(
        np.where(known & (filled.max(axis=1, initial=0.0) > 0), top, None), dtype=object
    )
    return {c: cols[c] for c in SUMMARY_COLUMNS}


def _category_codes(category: np.ndarray | pd.Series) -> np.ndarray:
    """Index into :data:`~features.contract.CATEGORIES` of each value as a string (-1: none).
    A table's column (a Series: millions of product rows) looks each distinct value up once;
    a plan's lines (an array) are looked up one by one, which is cheaper for a few."""
    if not isinstance(category, pd.Series):
        return np.fromiter(
            (_CATEGORY_CODE.get(str(c), -1) for c in category), np.int64, len(category)
        )
    codes, uniques = pd.factorize(category, use_na_sentinel=False)
    known = np.array([_CATEGORY_CODE.get(str(u), -1) for u in uniques], dtype=np.int64)
    return known[codes] if len(codes) else np.zeros(0, dtype=np.int64)


def _sku_summary_raw(
    session: np.ndarray,
    n_sessions: int,
    category: np.ndarray | pd.Series,
    live_price: np.ndarray,
    list_price: np.ndarray,
    stock: np.ndarray,
    new_launch: np.ndarray,
) -> Columns:
    """The mix summary of ``n_sessions`` sessions from their SKU rows (``session``: each row's
    session position), before :func:`_finish_summary` adds ``n_categories`` and
    ``top_category``; sessions without a row are all missing.

    ``n_skus``; ``share_<category>`` (fraction of SKUs); ``band_<band>`` (fraction of SKUs per
    live-price band of :data:`~features.plan.PRICE_BANDS`); ``mean_live_price`` /
    ``mean_list_price`` (currency); ``mean_discount`` = mean of ``1 - live / list`` clipped to
    [0, 1]; ``new_launch_share``; ``total_stock`` (units, NaN if any SKU's stock is unknown).
    """
    codes = _category_codes(category)
    if (codes < 0).any():
        raise UnknownCategoryError("category", set(np.asarray(category)[codes < 0]), CATEGORIES)
    n = np.bincount(session, minlength=n_sessions).astype(float)
    has = n > 0
    safe_n = np.where(has, n, 1.0)

    def mean(values: np.ndarray) -> np.ndarray:
        return np.where(
            has, np.bincount(session, weights=values, minlength=n_sessions) / safe_n, np.nan
        )

    def shares(group: np.ndarray, k: int) -> np.ndarray:
        counts = np.bincount(session * k + group, minlength=n_sessions * k).reshape(n_sessions, k)
        return np.where(has[:, None], counts / safe_n[:, None], np.nan)

    cols: Columns = {"n_skus": np.where(has, n, np.nan)}
    cat_shares = shares(codes, len(CATEGORIES))
    for i, c in enumerate(CATEGORIES):
        cols[f"share_{c}"] = cat_shares[:, i]
    band = np.searchsorted(_BAND_UPPER, live_price, side="right")
    band_shares = shares(band.astype(np.int64), len(_BAND_NAMES))
    for i, b in enumerate(_BAND_NAMES):
        cols[f"band_{b}"] = band_shares[:, i]
    cols["mean_live_price"] = mean(live_price)
    cols["mean_list_price"] = mean(list_price)
    cols["mean_discount"] = np.clip(mean(1.0 - live_price / list_price), 0.0, 1.0)
    cols["new_launch_share"] = mean(new_launch)
    missing = np.bincount(session, weights=np.isnan(stock).astype(float), minlength=n_sessions)
    total = np.bincount(session, weights=np.nan_to_num(stock, nan=0.0), minlength=n_sessions)
    cols["total_stock"] = np.where(has & (missing == 0), total, np.nan)
    return cols


def product_mix_summary(
    products: pd.DataFrame, *, keys: _ProductKeys | None = None
) -> pd.DataFrame:
    """One row per session (index ``session_id``, columns :data:`SUMMARY_COLUMNS`) summarising
    its SKUs: counts, category and price-band shares, mean prices and discount, new-launch
    share, total stock, number of categories and the top category. Sessions without SKUs get
    no row (their mix features are missing). ``keys``: the table's :class:`_ProductKeys`."""
    needed = {"session_id", "category", "list_price", "live_price"}
    if products is None or len(products) == 0 or not needed <= set(products.columns):
        return _empty_summary()
    p = products
    session, ids = (keys or _ProductKeys(products)).session
    stock = p["stock"].to_numpy(dtype=float) if "stock" in p.columns else np.full(len(p), np.nan)
    new = (
        p["is_new_launch"].fillna(False).to_numpy(dtype=float)
        if "is_new_launch" in p.columns
        else np.zeros(len(p))
    )
    raw = _sku_summary_raw(
        session.astype(np.int64),
        len(ids),
        p["category"].astype(str),
        p["live_price"].to_numpy(dtype=float),
        p["list_price"].to_numpy(dtype=float),
        stock,
        new,
    )
    return pd.DataFrame(_finish_summary(raw), index=pd.Index(ids, dtype=object, name="session_id"))


def mix_summary_row(mix: ProductMix) -> dict[str, float]:
    """A :class:`~features.plan.ProductMix` as summary values, before :func:`_finish_summary`.

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
    return row


def summary_columns(summary: pd.DataFrame, session_ids: np.ndarray) -> Columns:
    """The rows of a mix ``summary`` frame for ``session_ids`` (positional; missing if absent)."""
    s = summary.reindex(pd.Index(session_ids, dtype=object))
    return {
        c: _object_array(s[c]) if c == "top_category" else s[c].to_numpy(dtype=float)
        for c in SUMMARY_COLUMNS
    }


def mix_columns(summary: Columns) -> Columns:
    """``mix__*``: the session's mix summary (every column but ``mean_list_price``)."""
    return {f"mix__{c}": summary[c] for c in _MIX_FROM_SUMMARY}


def mix_features(summary: pd.DataFrame, session_ids: pd.Series) -> pd.DataFrame:
    """``mix__*`` columns for ``session_ids`` (positional order), read from a mix summary only."""
    ids = session_ids.astype(str).to_numpy(dtype=object)
    return pd.DataFrame(mix_columns(summary_columns(summary, ids)), index=session_ids.index)


# --------------------------------------------------------------------------- topic


def _keyword_pattern(keywords: Iterable[str]) -> re.Pattern[str]:
    parts = []
    for kw in keywords:
        pat = re.escape(kw)
        if kw[0].isdigit():
            pat = r"(?:^|[^0-9])" + pat
        if kw[-1].isdigit():
            pat = pat + r"(?:[^0-9]|$)"
        parts.append(pat)
    return re.compile("|".join(parts), re.IGNORECASE)


_KEYWORD_PATTERNS: dict[str, re.Pattern[str]] = {
    flag: _keyword_pattern(kws) for flag, kws in TITLE_KEYWORDS.items()
}


def topic_columns(session_type: np.ndarray, title: np.ndarray) -> Columns:
    """``topic__session_type``, one 0/1 flag per :data:`TITLE_KEYWORDS` entry, title length
    (characters). A missing title (``""``) has no flags and length 0."""
    # each distinct title is read once (titles repeat: templates, daily shows); a dict, as
    # cheap as a factorisation for a million titles and much cheaper for one plan's
    first: dict[str, int] = {}
    which = np.fromiter((first.setdefault(str(t), len(first)) for t in title), np.int64, len(title))
    titles = list(first)
    cols: Columns = {"topic__session_type": session_type}
    for flag, pattern in _KEYWORD_PATTERNS.items():
        flags = np.fromiter((pattern.search(t) is not None for t in titles), float, len(titles))
        cols[f"topic__kw_{flag}"] = flags[which]
    cols["topic__title_len"] = np.fromiter((len(t) for t in titles), float, len(titles))[which]
    return cols


def topic_features(sessions: pd.DataFrame) -> pd.DataFrame:
    """:func:`topic_columns` of a ``sessions`` frame."""
    session_type = _object_array(sessions["session_type"].astype(object))
    return pd.DataFrame(topic_columns(session_type, _titles(sessions)), index=sessions.index)


def festival_flag(session_type: np.ndarray, kw_festival: np.ndarray) -> np.ndarray:
    """A festival session: type ``festival_promo`` or a festival keyword in the title (0/1)."""
    return ((session_type == "festival_promo") | (kw_festival == 1.0)).astype(float)


# --------------------------------------------------------------------------- slot


def _local_hour(local: np.ndarray) -> np.ndarray:
    return ((local - local.astype("datetime64[D]")) // np.timedelta64(1, "h")).astype(np.int64)


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
        t, f = day_distances(local_days[ok], name)
        to_next[ok] = t
        from_prev[ok] = f
        window[ok] = window_flags(t, f, name)
    before = local_days < first
    to_next[before] = (first - local_days[before]).astype(int)
    after = local_days > last
    from_prev[after] = (local_days[after] - last).astype(int)
    window[before] = to_next[before] <= WINDOW_BEFORE[name]
    window[after] = from_prev[after] <= WINDOW_AFTER[name]
    return to_next, from_prev, window


def slot_columns(local: np.ndarray, planned_duration_min: np.ndarray) -> Columns:
    """When the session runs, from its local wall-clock start (``datetime64[ns]``).

    ``slot__hour`` (0-23), ``slot__hour_band`` (category), ``slot__weekday`` (0 = Monday),
    ``slot__is_weekend``, ``slot__month``, ``slot__duration_min`` (planned, minutes), and per
    festival of :data:`~features.calendar.FESTIVALS` the days to the next / since the previous
    festival day (capped at :data:`FESTIVAL_CAP_DAYS`) and whether the day is in its window.
    """
    days = local.astype("datetime64[D]")
    hour = _local_hour(local)
    weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    cols: Columns = {
        "slot__hour": hour.astype(float),
        "slot__hour_band": np.array(HOUR_BANDS, dtype=object)[_HOUR_BAND_CODE[hour]],
        "slot__weekday": weekday.astype(float),
        "slot__is_weekend": (weekday >= 5).astype(float),
        "slot__month": (local.astype("datetime64[M]").astype(np.int64) % 12 + 1).astype(float),
        "slot__duration_min": np.asarray(planned_duration_min, dtype=float),
    }
    any_window = np.zeros(len(local), dtype=bool)
    for name in FESTIVALS:
        to_next, from_prev, window = _festival_days(days, name)
        cols[f"slot__days_to_{name}"] = np.minimum(to_next, FESTIVAL_CAP_DAYS)
        cols[f"slot__days_from_{name}"] = np.minimum(from_prev, FESTIVAL_CAP_DAYS)
        cols[f"slot__in_window_{name}"] = window.astype(float)
        if name != "spring":  # the spring window is a logistics lull, not a selling window
            any_window |= window
    cols["slot__in_promo_window"] = any_window.astype(float)
    return cols


def slot_features(sessions: pd.DataFrame, tz: str = DEFAULT_TZ) -> pd.DataFrame:
    """:func:`slot_columns` of a ``sessions`` frame, in local time of ``tz``."""
    local = sessions["start_time"].dt.tz_convert(tz).dt.tz_localize(None).to_numpy()
    duration = sessions["planned_duration_min"].to_numpy(dtype=float)
    return pd.DataFrame(
        slot_columns(local.astype("datetime64[ns]"), duration), index=sessions.index
    )


# --------------------------------------------------------------------------- promo and warm-up


def promo_columns(numeric: Columns, mix: Columns) -> Columns:
    """In-session mechanics: counts, coupon value (currency), discount depth (fraction; from the
    SKUs' mean discount when not stated), number of mechanics used (lottery, red envelope,
    flash sale, coupon; missing when none is known) and coupon value / mean live price."""
    cols: Columns = {f"promo__{c}": numeric[c] for c in _MECHANICS}
    coupon = numeric["coupon_value"]
    cols["promo__coupon_value"] = coupon
    stated = numeric["discount_depth"]
    cols["promo__discount_depth"] = np.where(np.isnan(stated), mix["mix__mean_discount"], stated)
    used = np.column_stack([numeric[c] for c in _MECHANICS] + [coupon])
    n_used = (np.nan_to_num(used, nan=0.0) > 0).sum(axis=1).astype(float)
    cols["promo__n_mechanics"] = np.where(np.isnan(used).all(axis=1), np.nan, n_used)
    price = mix["mix__mean_live_price"]
    with np.errstate(divide="ignore", invalid="ignore"):
        cols["promo__coupon_rel_price"] = np.where(price > 0, coupon / price, np.nan)
    return cols


def promo_features(sessions: pd.DataFrame, mix: pd.DataFrame) -> pd.DataFrame:
    """:func:`promo_columns` of a ``sessions`` frame and its ``mix__*`` columns."""
    read = (*_MECHANICS, "coupon_value", "discount_depth")
    numeric = {c: sessions[c].to_numpy(dtype=float) for c in read}
    mix_cols = {
        c: mix[c].to_numpy(dtype=float) for c in ("mix__mean_discount", "mix__mean_live_price")
    }
    return pd.DataFrame(promo_columns(numeric, mix_cols), index=sessions.index)


def warmup_columns(numeric: Columns) -> Columns:
    """Warm-up effort: videos and community pushes (counts), paid budget (currency), and the
    number of organic warm-up actions (videos + pushes)."""
    videos = numeric["warmup_videos"]
    pushes = numeric["community_pushes"]
    return {
        "warmup__videos": videos,
        "warmup__community_pushes": pushes,
        "warmup__paid_promo_budget": numeric["paid_promo_budget"],
        "warmup__n_actions": videos + pushes,
    }


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


def _trailing_median(values: pd.DataFrame, groups: np.ndarray, window: int) -> pd.DataFrame:
    """Median of each row's group values over its last ``window`` rows (this one included),
    NaN skipped, missing when no value is there. Rows as for :func:`_trailing_mean`; each
    column is one ``(rows, window)`` block of lags, so a row's value depends on its own
    window only."""
    x = values.to_numpy(dtype=float)
    n = len(x)
    out = np.full_like(x, np.nan)
    for j in range(x.shape[1]):
        lags = np.full((n, window), np.nan)
        for lag in range(min(window, n)):
            same = np.zeros(n, dtype=bool)
            same[lag:] = groups[lag:] == groups[: n - lag]
            lagged = np.full(n, np.nan)
            lagged[lag:] = x[: n - lag, j]
            lagged[~same] = np.nan
            lags[:, lag] = lagged
        lags.sort(axis=1)  # NaN sorts last: the first k of a row are its k known values
        k = (~np.isnan(lags)).sum(axis=1)
        rows = np.flatnonzero(k > 0)
        lo, hi = (k[rows] - 1) // 2, k[rows] // 2
        out[rows, j] = (lags[rows, lo] + lags[rows, hi]) / 2.0
    return pd.DataFrame(out, index=values.index, columns=values.columns)


_LOOKUP_BLOCK = 1 << 20
"""Queries an :class:`AsOfTable` answers at a time (each query's answer is its own)."""
_KEY_LIMIT = 1 << 62
"""Combined integer keys stay below this (int64 without overflow)."""
_FEW_QUERIES = 16
"""Up to this many queries (a plan or two) an :class:`AsOfTable` answers one by one in Python:
the same hash probes and binary searches, without the fixed cost of a dozen array operations."""


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """Distinct values, sorted (a sort, not numpy's hash-based ``unique``: fast at any size)."""
    if len(values) == 0:
        return values.copy()
    s = np.sort(values)
    keep = np.empty(len(s), dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def _search(
    haystack: np.ndarray, needles: np.ndarray, side: str = "left", *, repeats: bool = False
) -> np.ndarray:
    """``np.searchsorted(haystack, needles, side)``, fast for millions of unsorted needles.

    A binary search per needle into a big array misses the cache at every step (it grew faster
    than the data): the needles are searched in sorted order. ``repeats``: few distinct
    needles (e.g. start times of SKU rows), each searched once."""
    if len(needles) <= 4096 or len(haystack) <= 4096:
        return np.searchsorted(haystack, needles, side=side)
    if repeats:
        codes, distinct = pd.factorize(needles)
        return _search(haystack, distinct, side)[codes]
    order = np.argsort(needles)
    found = np.empty(len(needles), dtype=np.int64)
    found[order] = np.searchsorted(haystack, needles[order], side=side)
    return found


@dataclass(frozen=True)
class Gathered:
    """An :class:`AsOfTable` query key column given as ``values[index]`` (``index``: positions
    in ``values``; e.g. the room of each SKU row as its session's room): the table codes each
    of ``values`` once."""

    values: np.ndarray
    index: np.ndarray


QueryKey = np.ndarray | pd.Categorical | Gathered
"""An :class:`AsOfTable` query key column: its values, a categorical, or :class:`Gathered`."""


class AsOfTable:
    """Per-group as-of lookup over cumulative statistics, built once, queried many times.

    For a query (group key, ``_t``) it returns ``columns`` of the last ``stats`` row of the same
    ``by`` group with ``_t`` strictly earlier than the query's; missing when there is none.
    ``stats`` must hold cumulative / trailing values in time order within each group; of rows
    sharing a start time only the last (which includes all of them) is kept, so ties never see
    each other. Non-numeric keys compare as strings (a :class:`pandas.Categorical` key column,
    table or query, is read through its categories).

    Vectorised, without Python work per row or per group: each key column is coded against the
    table's distinct values, the codes and the start time's rank among the table's times make
    one integer key, and a query is one binary search over the table's sorted keys. Everything
    built from the table is built once (the hash index of a key column's values on first use),
    so a lookup costs O(queries x log(table rows)): up to :data:`_FEW_QUERIES` queries are
    answered one by one, a single plan's latency does not grow with the history.
    """

    def __init__(self, stats: pd.DataFrame, by: list[str], columns: list[str]) -> None:
        self.by = list(by)
        self.columns = list(columns)
        self._numeric: list[bool] = []
        self._uniques: list[np.ndarray] = []
        codes = []
        for c in self.by:
            col = stats[c]
            numeric = not isinstance(col.dtype, pd.CategoricalDtype) and (
                pd.api.types.is_numeric_dtype(col)
            )
            self._numeric.append(numeric)
            if numeric:
                values = col.to_numpy().astype(np.int64)
                uniques = _sorted_unique(values)
                code = _search(uniques, values, repeats=True)
            else:
                code, uniques = self._factorize(col)
            self._uniques.append(uniques)
            codes.append(code)
        t = stats["_t"].to_numpy(dtype=np.int64)
        self._times = _sorted_unique(t)
        self._dense: np.ndarray | None = None  # distinct group codes, when they must be renumbered
        self._index: list[pd.Index | None] = [None] * len(self.by)
        group = self._group(codes)
        if len(group) and (int(group.max()) + 1) * (len(self._times) + 1) >= _KEY_LIMIT:
            self._dense = _sorted_unique(group)
            group = _search(self._dense, group)
        key = group * (len(self._times) + 1) + _search(self._times, t, repeats=True)
        # sorted by (group, _t); of equal (group, _t) the last row in ``stats`` order is kept
        order = np.argsort(key, kind="stable")
        key = key[order]
        last = np.ones(len(key), dtype=bool)
        np.not_equal(key[1:], key[:-1], out=last[:-1])
        keep = order[last]
        self._key = key[last]
        self._values = stats[self.columns].to_numpy(dtype=float)[keep]

    @classmethod
    def _presorted(
        cls,
        by: list[str],
        columns: list[str],
        uniques: list[np.ndarray],
        times: np.ndarray,
        key: np.ndarray,
        values: np.ndarray,
    ) -> AsOfTable:
        """A table of string keys from rows already coded as :meth:`__init__` codes them:
        ``uniques`` the distinct strings of each key column, ``key`` = the mixed-radix group of
        each row ``* (len(times) + 1)`` + the rank of its time in the sorted distinct ``times``
        (any superset of the rows' times), strictly increasing."""
        self = cls.__new__(cls)
        self.by, self.columns = list(by), list(columns)
        self._numeric = [False] * len(self.by)
        self._uniques = list(uniques)
        self._times = times
        self._dense = None
        self._index = [None] * len(self.by)
        self._key, self._values = key, values
        return self

    @staticmethod
    def _factorize(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """Codes of a non-numeric table column and its distinct values as strings."""
        if isinstance(col.dtype, pd.CategoricalDtype):
            cats = _str_objects(_object_array(col.cat.categories))
            code = col.cat.codes.to_numpy().astype(np.int64)
            if (code < 0).any():  # a missing value reads as the string "nan"
                cats = np.append(cats, np.array([str(np.nan)], dtype=object))
                code = np.where(code < 0, len(cats) - 1, code)
            remap, uniques = pd.factorize(cats)  # categories equal as strings: one code
            return remap.astype(np.int64)[code], np.asarray(uniques, dtype=object)
        code, uniques = pd.factorize(_str_objects(_object_array(col)))
        return code.astype(np.int64), np.asarray(uniques, dtype=object)

    def _group(self, codes: list[np.ndarray]) -> np.ndarray:
        """One integer per row from the per-column codes (mixed radix; -1: a value not in the
        table), renumbered as the table's groups were if they had to be."""
        group = codes[0]
        for j in range(1, len(codes)):
            radix = len(self._uniques[j])
            bad = (group < 0) | (codes[j] < 0)
            if (int(group.max(initial=0)) + 1) * radix >= _KEY_LIMIT:
                raise OverflowError("as-of keys: too many distinct key combinations")
            group = np.where(bad, -1, group * radix + codes[j])
        if self._dense is not None:
            pos = _search(self._dense, group)
            found = pos < len(self._dense)
            found[found] = self._dense[pos[found]] == group[found]
            group = np.where(found & (group >= 0), pos, -1)
        return group.astype(np.int64, copy=False)

    def _query_coder(self, j: int, values: QueryKey) -> Callable[[slice], np.ndarray]:
        """The codes of a query key column, by slices of its rows. A categorical column's
        categories (a missing value reads as the string "nan") and a :class:`Gathered`
        column's values are coded once."""
        if isinstance(values, Gathered):
            lookup, index = self._query_codes(j, values.values), values.index
            return lambda rows: lookup[index[rows]]
        if isinstance(values, pd.Categorical):
            cats = _object_array(values.categories)
            codes = values.codes
            uniques = self._uniques[j]
            if not self._numeric[j] and len(cats) == len(uniques) and (cats == uniques).all():
                # the table's own distinct values (the training path): codes as they are; a
                # missing value reads as the string "nan", as elsewhere
                nan = np.flatnonzero(uniques == str(np.nan))
                lookup = np.append(np.arange(len(cats)), nan[0] if len(nan) else -1)
            else:
                lookup = self._query_codes(j, np.append(cats, np.array([np.nan], dtype=object)))
            return lambda rows: lookup[np.where(codes[rows] < 0, len(cats), codes[rows])]
        values = np.asarray(values)
        return lambda rows: self._query_codes(j, values[rows])

    def _hash_index(self, j: int) -> pd.Index:
        """A hash index of the distinct values of key column ``j``, built on first use and
        kept: coding a query value then costs one hash probe, whatever the table's size."""
        index = self._index[j]
        if index is None:
            uniques = self._uniques[j]
            index = self._index[j] = pd.Index(uniques, dtype=uniques.dtype)
        return index

    def _query_codes(self, j: int, values: np.ndarray) -> np.ndarray:
        """Codes of query values of key column ``j`` (-1: not in the table): O(len(values))."""
        values = np.asarray(values)
        if self._numeric[j]:
            values = values.astype(np.int64)
        if len(values) <= _FEW_QUERIES:  # a plan or two: a probe each, no vectorised set-up
            index = self._hash_index(j)
            each = values.tolist() if self._numeric[j] else map(str, values.tolist())
            return np.array([index.get_loc(v) if v in index else -1 for v in each], np.int64)
        if self._numeric[j]:
            uniques = self._uniques[j]
            pos = _search(uniques, values, repeats=True)
            found = pos < len(uniques)
            found[found] = uniques[pos[found]] == values[found]
            return np.where(found, pos, -1).astype(np.int64)
        # an object Index as the target: pandas would otherwise infer (and cast to) strings
        target = pd.Index(_str_objects(values), dtype=object)
        return self._hash_index(j).get_indexer(target).astype(np.int64)

    def _answer(self, codes: list[np.ndarray], t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For queries given as key codes and ``_t`` (epoch ns): the positions of those that
        have an earlier row in their group, and that row's values. Two binary searches."""
        if len(t) <= _FEW_QUERIES:
            return self._answer_each(codes, t)
        start = self._group(codes) * (len(self._times) + 1)  # the group's first key (< 0: none)
        # strictly earlier: the last key below (group, rank of the query's time among the
        # table's times); it is of the query's group if it is not below the group's first key
        pos = _search(self._key, start + _search(self._times, t, repeats=True)) - 1
        found = np.flatnonzero((pos >= 0) & (self._key[pos] >= start))
        return found, self._values[pos[found]]

    def _answer_each(self, codes: list[np.ndarray], t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_answer` query by query in Python, the same searches one value at a time: a
        plan or two pays no set-up of a dozen array operations (the service's latency)."""
        span = len(self._times) + 1
        found: list[int] = []
        rows: list[int] = []
        for i, (when, *key) in enumerate(
            zip(t.tolist(), *(c.tolist() for c in codes), strict=True)
        ):
            group = key[0]
            for code, uniques in zip(key[1:], self._uniques[1:], strict=True):
                group = group * len(uniques) + code if group >= 0 and code >= 0 else -1
            if group >= 0 and self._dense is not None:
                dense = int(self._dense.searchsorted(group))
                ok = dense < len(self._dense) and self._dense[dense] == group
                group = dense if ok else -1
            if group < 0:
                continue
            start = group * span
            pos = int(self._key.searchsorted(start + int(self._times.searchsorted(when))))
            if pos > 0 and self._key[pos - 1] >= start:
                found.append(i)
                rows.append(pos - 1)
        return np.array(found, dtype=np.int64), self._values[rows]

    def lookup(self, keys: list[QueryKey], t: np.ndarray) -> np.ndarray:
        """Values (n x len(columns), float) for queries given as key columns and ``_t``."""
        t = np.asarray(t, dtype=np.int64)
        out = np.full((len(t), len(self.columns)), np.nan)
        if len(self._key) == 0:
            return out
        coders = [self._query_coder(j, k) for j, k in enumerate(keys)]
        for start in range(0, len(t), _LOOKUP_BLOCK):
            rows = slice(start, start + _LOOKUP_BLOCK)
            found, values = self._answer([code(rows) for code in coders], t[rows])
            out[start + found] = values
        return out

    def lookup_blocks(
        self,
        keys: list[QueryKey],
        times: Callable[[slice], np.ndarray],
        bounds: list[tuple[int, int]],
    ) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
        """:meth:`lookup` block by block of query rows (``bounds``: (start, stop) pairs), each
        block's ``_t`` from ``times(rows)``: per block the rows, the positions in it that have
        an earlier row and their values. Small temporaries for millions of queries."""
        if len(self._key) == 0:
            return
        coders = [self._query_coder(j, k) for j, k in enumerate(keys)]
        for start, stop in bounds:
            rows = slice(start, stop)
            t = np.asarray(times(rows), dtype=np.int64)
            yield rows, *self._answer([code(rows) for code in coders], t)

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
    stated = (
        h["n_products"].to_numpy(dtype=float)
        if "n_products" in h.columns
        else np.full(len(h), np.nan)
    )
    n_listed = np.where(np.isnan(n_skus[:, 0]), stated, n_skus[:, 0])
    duration = h["planned_duration_min"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_minutes = np.log(np.where(duration > 0, duration, np.nan))
    cat_counts = np.nan_to_num(
        np.round(counts[list(SHARE_COLUMNS)].to_numpy(dtype=float) * n_skus), nan=0.0
    )
    table = pd.DataFrame(
        {
            "room_id": h["room_id"].astype(str).to_numpy(),
            "host_id": h["host_id"].astype(str).to_numpy(),
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
            "festival": festival_flag(
                h["session_type"].astype(str).to_numpy(), topic["topic__kw_festival"].to_numpy()
            ),
            "duration": duration,
            "lv_pm": np.log1p(viewers) - log_minutes,
            "lg_pm": np.log1p(gmv) - log_minutes,
            "lnp": np.log1p(n_listed),
            "lg_pp": np.log1p(gmv) - np.log1p(n_listed),
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
    rate = o[["lv_pm", "lg_pm"]]
    r5, r20 = _trailing_mean(rate, room, 5), _trailing_mean(rate, room, 20)
    stats["viewers_per_min_5"] = r5["lv_pm"].to_numpy()
    stats["viewers_per_min_20"] = r20["lv_pm"].to_numpy()
    stats["gmv_per_min_5"] = r5["lg_pm"].to_numpy()
    stats["gmv_per_min_20"] = r20["lg_pm"].to_numpy()
    listed = _trailing_mean(o[["lnp", "lg_pp"]], room, 20)
    stats["products_mean_20"] = listed["lnp"].to_numpy()
    stats["gmv_per_product_20"] = listed["lg_pp"].to_numpy()
    med = _trailing_median(logs, room, LEVEL_WINDOW)
    for src, name in (("lv", "viewers"), ("lg", "gmv"), ("lo", "orders")):
        stats[f"{name}_median_{LEVEL_WINDOW}"] = med[src].to_numpy()
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


def _main_host(h: pd.DataFrame) -> np.ndarray:
    """Per history row (rows in room and time order), the room's main host so far, this row
    included: the stated host with the most sessions, the first to reach that count on a tie;
    the room id while no host is stated (a host equal to the room id is not stated)."""
    room = h["room_id"].to_numpy(dtype=object)
    host = h["host_id"].to_numpy(dtype=object)
    stated = h[host != room]
    count = stated.groupby(["room_id", "host_id"], sort=False).cumcount() + 1
    lead = count.groupby(stated["room_id"], sort=False).cummax()
    before = lead.groupby(stated["room_id"], sort=False).shift(1).fillna(0)
    new_lead = pd.Series(np.where(count > before, stated["host_id"], None), index=stated.index)
    main = pd.Series(None, index=h.index, dtype=object)
    main[stated.index] = new_lead.groupby(stated["room_id"], sort=False).ffill()
    main = main.groupby(room, sort=False).ffill()
    return np.where(pd.isna(main), room, main).astype(object)


def _plan_stats(h: pd.DataFrame, host_code: dict[str, int]) -> pd.DataFrame:
    """Cumulative statistics over each room's sessions (outcomes not needed), this included."""
    room = pd.factorize(h["room_id"])[0]
    g = h.groupby(room, sort=False)
    stats = pd.DataFrame({"room_id": h["room_id"], "_t": h["_t"]})
    stats["prev_t"] = h["_t"].to_numpy(dtype=float)
    n_sessions = g.cumcount().to_numpy(dtype=float) + 1.0
    stats["n_sessions"] = n_sessions
    stats["main_host_code"] = np.array([host_code[m] for m in _main_host(h)], dtype=float)
    stats["followers_last"] = g["followers"].ffill().to_numpy()
    stats["festival_share"] = g["festival"].cumsum().to_numpy() / n_sessions
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


LEVEL_WINDOW = 20
"""Sessions in a room's recent level (:data:`LEVEL_COLUMNS`)."""
LEVEL_COLUMNS: dict[str, str] = {
    t: f"level__{t}_median_{LEVEL_WINDOW}" for t in ("viewers", "orders", "gmv")
}
"""Per target, the frame column with ``log1p`` of the median outcome of the room's last
:data:`LEVEL_WINDOW` sessions before the session: the room's recent level, which the forecast
is held to (``training.models.hold_to_level``). Not a model input (``level`` is no feature
family): it bounds the answer, it does not shape it."""
_LEVEL_STATS: tuple[str, ...] = tuple(f"{t}_median_{LEVEL_WINDOW}" for t in LEVEL_COLUMNS)

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
    "viewers_per_min_5",
    "viewers_per_min_20",
    "gmv_per_min_5",
    "gmv_per_min_20",
    "products_mean_20",
    "gmv_per_product_20",
)


@dataclass(frozen=True)
class RoomHistory:
    """The per-room history state :func:`room_features` reads (as-of tables of the room
    statistics), computed once from a history snapshot by :func:`room_history`."""

    outcome: AsOfTable
    band: AsOfTable
    session_type: AsOfTable
    plan: AsOfTable
    host_count: AsOfTable
    host_outcome: AsOfTable
    hosts: np.ndarray
    """Host names by the codes ``plan`` stores as ``main_host_code``."""


_PLAN_STAT_COLUMNS: list[str] = [
    "prev_t",
    "n_sessions",
    "main_host_code",
    "followers_last",
    "festival_share",
    "duration_median",
    "main_category_code",
]
_MAIN_HOST = _PLAN_STAT_COLUMNS.index("main_host_code")


def room_history(
    history: pd.DataFrame, history_summary: pd.DataFrame, tz: str = DEFAULT_TZ
) -> RoomHistory:
    """The room statistics of ``history`` (sessions and their mix summary) as as-of tables."""
    h = _history_table(history, history_summary, tz)
    hosts = pd.unique(np.concatenate([h["host_id"].to_numpy(), h["room_id"].to_numpy()]))
    hosts = np.asarray(hosts, dtype=object)
    plan = AsOfTable(
        _plan_stats(h, {str(v): i for i, v in enumerate(hosts)}), ["room_id"], _PLAN_STAT_COLUMNS
    )
    h["host"] = resolve_host(
        h["room_id"].to_numpy(dtype=object),
        h["host_id"].to_numpy(dtype=object),
        plan.lookup([h["room_id"].to_numpy()], h["_t"].to_numpy())[:, _MAIN_HOST],
        hosts,
    )
    return RoomHistory(
        outcome=AsOfTable(_outcome_stats(h), ["room_id"], [*_ROOM_OUTCOME_COLUMNS, *_LEVEL_STATS]),
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
        plan=plan,
        host_count=AsOfTable(_host_counts(h), ["room_id", "host"], ["host_n"]),
        host_outcome=AsOfTable(
            _group_stats(h.assign(gdev=_gmv_deviation(h)), "host", {"gdev": "host_gmv_dev"}),
            ["room_id", "host"],
            ["host_gmv_dev"],
        ),
        hosts=hosts,
    )


def resolve_host(
    room: np.ndarray, host: np.ndarray, main_host_code: np.ndarray, hosts: np.ndarray
) -> np.ndarray:
    """Each session's host for the host statistics: the stated host, or where none is stated
    (the host id is the room id) the room's main host among earlier sessions."""
    known = ~np.isnan(main_host_code)
    main = np.array(room, dtype=object)
    main[known] = hosts[main_host_code[known].astype(int)]
    return np.where(host == room, main, host).astype(object)


def _host_counts(h: pd.DataFrame) -> pd.DataFrame:
    """Per (room, resolved host): sessions so far, this one included."""
    stats = h[["room_id", "host", "_t"]].copy()
    stats["host_n"] = h.groupby(["room_id", "host"], sort=False).cumcount().to_numpy(float) + 1.0
    return stats


def _gmv_deviation(h: pd.DataFrame) -> np.ndarray:
    """Per history row with outcomes: log1p GMV minus the mean over the room's 20 previous
    sessions with outcomes (missing for a room's first one and rows without outcomes)."""
    out = np.full(len(h), np.nan)
    o = h[h["has_outcome"]]
    room = pd.factorize(o["room_id"])[0]
    before = _trailing_mean(o[["lg"]], room, 20, skip=1)["lg"].to_numpy()
    out[np.flatnonzero(h["has_outcome"].to_numpy())] = o["lg"].to_numpy() - before
    return out


def _coalesce(*arrays: np.ndarray) -> np.ndarray:
    """Elementwise the first non-missing value of object arrays (None / NaN = missing)."""
    out = arrays[0]
    for fallback in arrays[1:]:
        out = np.where(pd.isna(out), fallback, out)
    return out


def room_columns(
    inputs: SessionInputs, state: RoomHistory, top_category: np.ndarray, n_skus: np.ndarray
) -> Columns:
    """The room's history before each session (only history sessions of the same room that
    started strictly earlier, from the as-of tables of ``state``), plus the plan's own room
    inputs.

    Outcome statistics skip sessions without outcomes: ``room__n_prior`` (count), trailing
    means of ``log1p`` viewers / GMV / orders over the last 5 and 20, the last value,
    conversion (orders / viewers), AOV (currency per order) and dwell (seconds) means over the
    last 20, trend (mean of last 5 minus mean of the 20 before, log space), same hour band
    (last 10) and same session type (last 10) means. From all earlier sessions:
    ``room__days_since_last`` (days), ``room__festival_share``, ``room__duration_ratio``
    (planned duration / the room's median earlier planned duration), ``room__host_share`` (share
    of the room's earlier sessions hosted by the session's host; a host that is not stated, i.e.
    the room id, is the room's main host so far) and ``room__host_gmv_dev`` (mean over the
    host's last 10 earlier sessions with outcomes of log1p GMV minus the room's mean over the 20
    sessions before each).

    Scale that carries across room sizes and session lengths: ``room__viewers_per_min_5`` /
    ``_20`` and ``room__gmv_per_min_5`` / ``_20`` (trailing means of ``log1p(outcome) -
    log(planned minutes)``), ``room__viewers_at_duration_5`` / ``_20`` and
    ``room__gmv_at_duration_5`` / ``_20`` (that rate at this session's planned minutes: the
    log outcome a spreadsheet would expect from the room's recent pace),
    ``room__gmv_per_product_20`` (trailing mean of ``log1p(GMV) - log1p(products listed)``)
    and ``room__products_ratio`` (``log1p`` of this session's product count minus the room's
    trailing mean of it; products listed are the SKU rows, else the table's ``n_products``).
    ``room__followers`` is
    the session's ``followers_at_start``, else the room's last known value;
    ``room__main_category`` is the most frequent SKU category of earlier sessions, else the
    plan's ``room_category``, else the session's ``top_category``. :data:`IDENTITY_COLUMN` is
    the room id itself (text; a model that reads it casts it with its saved vocabulary).
    """
    room, t, at = inputs.room_id, inputs.t, inputs.history_t
    band = _HOUR_BAND_CODE[_local_hour(inputs.local)]
    main = state.outcome.lookup([room], at)
    cols: Columns = {f"room__{c}": main[:, i] for i, c in enumerate(_ROOM_OUTCOME_COLUMNS)}
    for i, target in enumerate(LEVEL_COLUMNS):
        cols[LEVEL_COLUMNS[target]] = main[:, len(_ROOM_OUTCOME_COLUMNS) + i]
    cols["room__n_prior"] = np.nan_to_num(cols["room__n_prior"], nan=0.0)
    planned = inputs.numeric["planned_duration_min"]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_minutes = np.log(np.where(planned > 0, planned, np.nan))
    for name in ("viewers", "gmv"):
        for n in (5, 20):
            rate = cols[f"room__{name}_per_min_{n}"]
            cols[f"room__{name}_at_duration_{n}"] = rate + log_minutes
    listed = cols.pop("room__products_mean_20")
    cols["room__products_ratio"] = np.log1p(n_skus) - listed
    by_band = state.band.lookup([room, band], at)
    cols["room__band_viewers_mean_10"] = by_band[:, 0]
    cols["room__band_gmv_mean_10"] = by_band[:, 1]
    cols["room__type_gmv_mean_10"] = state.session_type.lookup([room, inputs.session_type], at)[
        :, 0
    ]
    plan = dict(zip(_PLAN_STAT_COLUMNS, state.plan.lookup([room], at).T, strict=True))
    cols["room__days_since_last"] = (t.astype(float) - plan["prev_t"]) / _NS_PER_DAY
    cols["room__festival_share"] = plan["festival_share"]
    host = resolve_host(room, inputs.host_id, plan["main_host_code"], state.hosts)
    host_n = np.nan_to_num(state.host_count.lookup([room, host], at)[:, 0], nan=0.0)
    n_sessions = plan["n_sessions"]
    with np.errstate(divide="ignore", invalid="ignore"):
        cols["room__host_share"] = np.where(n_sessions > 0, host_n / n_sessions, np.nan)
    cols["room__host_gmv_dev"] = state.host_outcome.lookup([room, host], at)[:, 0]
    median = plan["duration_median"]
    with np.errstate(divide="ignore", invalid="ignore"):
        cols["room__duration_ratio"] = np.where(median > 0, planned / median, np.nan)
    own = inputs.numeric["followers_at_start"]
    cols["room__followers"] = np.where(np.isnan(own), plan["followers_last"], own)
    cols["room__platform"] = inputs.platform
    code = plan["main_category_code"]
    known = ~np.isnan(code) & (code >= 0)
    cats = np.array(CATEGORIES, dtype=object)
    learnt = np.asarray(np.where(known, cats[np.where(known, code, 0).astype(int)], None))
    cols["room__main_category"] = _coalesce(learnt, inputs.room_category, top_category)
    cols[IDENTITY_COLUMN] = np.asarray(room, dtype=object)
    return cols


def sku_history(
    history: pd.DataFrame, history_products: pd.DataFrame, *, keys: _ProductKeys | None = None
) -> AsOfTable | None:
    """The SKU track records :func:`sku_columns` reads: per (room, SKU) cumulative appearances
    ``cn``, units ``cu`` and log1p units ``clg`` as an as-of table; None when the history has
    no ``units_sold`` column. ``keys``: the product table's :class:`_ProductKeys`.

    Products join their session by position (session ids are unique in a ``sessions`` table)
    and rooms and SKUs are integer codes: no string merge or string group-by over the product
    rows, which outnumber sessions twenty to one."""
    if history_products is None or "units_sold" not in history_products.columns:
        return None
    ids = _object_array(history["session_id"].astype(str))
    if not pd.Index(ids).is_unique:  # not a contract table: join as a merge would
        return _sku_history_merge(history, history_products)
    keys = keys or _ProductKeys(history_products)
    pos = keys.positions(ids)
    units = history_products["units_sold"].to_numpy(dtype=float, na_value=np.nan)
    room, rooms = pd.factorize(history["room_id"].astype(str))
    sku, skus = keys.sku
    # a row without a session in the history, units, a room or a SKU id has no track record
    known = (pos >= 0) & ~np.isnan(units) & (sku >= 0)
    known[known] = room[pos[known]] >= 0
    keep = np.flatnonzero(known)
    session = pos[keep]
    del known, pos
    # rows in (room, sku, start) order: a sort of one integer key (start as its rank)
    t = _epoch_ns(history["start_time"])
    times = _sorted_unique(t)
    radix = max(len(skus), 1)
    span = len(times) + 1
    key = room.astype(np.int64)[session]  # (room, sku) pair, then ... and the start's rank
    key *= radix
    key += sku[keep]
    key *= span
    key += np.searchsorted(times, t)[session]
    order = np.argsort(key, kind="stable")
    key = key[order]
    units = units[keep]
    units = units[order]
    tied = len(key) > 1 and bool((key[1:] == key[:-1]).any())
    overflow = (len(rooms) * radix + 1) * span >= _KEY_LIMIT
    if not tied and not overflow:
        # one row per (room, sku, start): the sums are the rows themselves, and the rows are
        # already in the as-of table's order; running totals column by column (memory)
        del keep, session, order
        pair = key // span
        cum = np.empty((len(key), 3))
        first = np.ones(len(pair), dtype=bool)
        np.not_equal(pair[1:], pair[:-1], out=first[1:])
        starts = np.flatnonzero(first)
        del first
        run = np.diff(np.append(starts, len(pair)))
        cum[:, 0] = np.arange(1, len(pair) + 1)
        cum[:, 0] -= np.repeat(starts, run)  # appearances so far: position in the run + 1
        del starts, run
        cum[:, 1] = pd.Series(units).groupby(pair, sort=False).cumsum().to_numpy()
        units = np.log1p(units, out=units)
        cum[:, 2] = pd.Series(units).groupby(pair, sort=False).cumsum().to_numpy()
        del pair, units
        uniques = [_object_array(rooms), skus]
        return AsOfTable._presorted(
            ["room_id", "sku_id"], ["cn", "cu", "clg"], uniques, times, key, cum
        )
    # sessions of a room starting together: sum them first
    hp = pd.DataFrame(
        {
            "room_id": room[session][order],
            "sku_id": sku[keep][order],
            "_t": t[session][order],
            "units_sold": units,
        }
    )
    hp["_log"] = np.log1p(units)
    g = _sku_cumulative(hp)
    g["room_id"] = pd.Categorical.from_codes(g["room_id"], categories=_object_array(rooms))
    g["sku_id"] = pd.Categorical.from_codes(g["sku_id"], categories=skus)
    return AsOfTable(g, ["room_id", "sku_id"], ["cn", "cu", "clg"])


def _sku_cumulative(hp: pd.DataFrame) -> pd.DataFrame:
    """Per (room, sku, start time) appearances and unit sums (rows in product order), then
    their running totals per (room, sku) in time order."""
    # one row per (room, sku, start time): sessions starting together never see each other
    g = (
        hp.groupby(["room_id", "sku_id", "_t"], sort=True)
        .agg(n=("units_sold", "size"), u=("units_sold", "sum"), lg=("_log", "sum"))
        .reset_index()
    )
    g[["cn", "cu", "clg"]] = g.groupby(["room_id", "sku_id"])[["n", "u", "lg"]].cumsum()
    return g


def _sku_history_merge(history: pd.DataFrame, history_products: pd.DataFrame) -> AsOfTable:
    """:func:`sku_history` by a merge on session id (a history whose session ids repeat)."""
    hs = history[["session_id", "room_id", "start_time"]].assign(
        session_id=lambda d: d["session_id"].astype(str), room_id=lambda d: d["room_id"].astype(str)
    )
    hp = history_products[["session_id", "sku_id", "units_sold"]].copy()
    hp["session_id"] = hp["session_id"].astype(str)
    hp = hp[hp["units_sold"].notna()].merge(hs, on="session_id", how="inner")
    hp["sku_id"] = hp["sku_id"].astype(str)
    hp["_t"] = _epoch_ns(hp["start_time"])
    hp["_log"] = np.log1p(hp["units_sold"].astype(float))
    return AsOfTable(_sku_cumulative(hp), ["room_id", "sku_id"], ["cn", "cu", "clg"])


SKU_HISTORY_COLUMNS: tuple[str, ...] = (
    "room__sku_hist_units",
    "room__sku_hist_log_units",
    "room__sku_hist_share",
)


def _session_blocks(session: np.ndarray) -> list[tuple[int, int]]:
    """Blocks of about :data:`_LOOKUP_BLOCK` SKU rows that never split a session's rows: cut
    where the session changes, when each session's rows are together (a product table lists a
    session's SKUs together); one block otherwise."""
    n = len(session)
    if n <= _LOOKUP_BLOCK:
        return [(0, n)]
    starts = np.flatnonzero(session[1:] != session[:-1]) + 1
    if len(starts) == 0 or len(starts) + 1 != len(pd.unique(session)):  # rows of one session apart
        return [(0, n)]
    cuts = np.unique(starts[np.minimum(
        np.searchsorted(starts, np.arange(_LOOKUP_BLOCK, n, _LOOKUP_BLOCK)), len(starts) - 1
    )])  # fmt: skip
    edges = [0, *cuts.tolist(), n]
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]


def sku_columns(inputs: SessionInputs, skus: SkuList, state: AsOfTable | None) -> Columns:
    """Track record of the session's SKUs in the same room, from earlier sessions only.

    For each listed SKU: the mean units sold over its earlier appearances in the room (only
    sessions that started strictly before this one and have ``units_sold``). Per session:
    ``room__sku_hist_units`` (sum over SKUs with a track record, units),
    ``room__sku_hist_log_units`` (mean log1p units over those SKUs) and
    ``room__sku_hist_share`` (share of the session's SKUs with a track record). Missing when
    the session lists no SKUs or the history has no unit sales.
    """
    n = len(inputs)
    cols: Columns = {c: np.full(n, np.nan) for c in SKU_HISTORY_COLUMNS}
    if state is None or len(skus.session) == 0:
        return cols
    s = skus.session
    # the room of each SKU row is its session's: coded once per session, no per-row strings
    room_of_sku = Gathered(np.asarray(inputs.room_id, dtype=object), s)
    listed = np.bincount(s, minlength=n).astype(float)
    n_has, units, logs = np.zeros(n), np.zeros(n), np.zeros(n)
    blocks = state.lookup_blocks(
        [room_of_sku, skus.sku_id], lambda rows: inputs.history_t[s[rows]], _session_blocks(s)
    )
    for rows, found, values in blocks:
        # a session's SKU rows are all in one block: its sums are those of one bincount over
        # the rows with a track record (appearances cn >= 1), in row order
        at = s[rows][found]
        n_has += np.bincount(at, minlength=n)
        units += np.bincount(at, weights=values[:, 1] / values[:, 0], minlength=n)
        logs += np.bincount(at, weights=values[:, 2] / values[:, 0], minlength=n)
    cols["room__sku_hist_units"] = np.where(listed > 0, units, np.nan)
    cols["room__sku_hist_log_units"] = np.where(n_has > 0, logs / np.maximum(n_has, 1.0), np.nan)
    cols["room__sku_hist_share"] = np.where(listed > 0, n_has / np.maximum(listed, 1.0), np.nan)
    return cols


# --------------------------------------------------------------------------- assembly


def session_columns(
    inputs: SessionInputs,
    summary: Columns,
    rooms: RoomHistory,
    sku_state: AsOfTable | None,
    skus: SkuList,
) -> Columns:
    """All six feature families for ``inputs`` (positional order): the one definition of
    every feature, for training frames, plan frames and the service's model matrix.

    A session without product rows or a mix summary still has a product count when its table
    states ``n_products`` (an export's count of listed products): ``mix__n_skus`` reads it."""
    stated = inputs.numeric["n_products"]
    n_skus = np.where(np.isnan(summary["n_skus"]), stated, summary["n_skus"])
    mix = mix_columns({**summary, "n_skus": n_skus})
    cols: Columns = {}
    cols.update(topic_columns(inputs.session_type, inputs.title))
    cols.update(slot_columns(inputs.local, inputs.numeric["planned_duration_min"]))
    cols.update(mix)
    cols.update(promo_columns(inputs.numeric, mix))
    cols.update(warmup_columns(inputs.numeric))
    cols.update(room_columns(inputs, rooms, mix["mix__top_category"], n_skus))
    cols.update(sku_columns(inputs, skus, sku_state))
    return cols


def _frame(inputs: SessionInputs, start_time: pd.Series, cols: Columns) -> pd.DataFrame:
    """Keys plus feature columns as a frame: floats as float64, categoricals in their vocab."""
    data: dict[str, object] = {
        "session_id": pd.Series(inputs.session_id, dtype=object).astype(str),
        "room_id": pd.Series(inputs.room_id, dtype=object).astype(str),
        "start_time": start_time.reset_index(drop=True),
    }
    for c, v in cols.items():
        data[c] = v if c in CATEGORICAL_VOCAB or c in OPEN_VOCAB else np.asarray(v, "float64")
    # one frame, cast in place: no concatenated or vocabulary copy of every column
    return apply_vocab(pd.DataFrame(data), copy=False)


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
    keys = _ProductKeys(products)
    summary = product_mix_summary(products, keys=keys)
    inputs = session_inputs(ordered, tz)
    cols = session_columns(
        inputs,
        summary_columns(summary, inputs.session_id),
        room_history(ordered, summary, tz),
        sku_history(ordered, products, keys=keys),
        sku_list(products, inputs.session_id, keys=keys),
    )
    return _frame(inputs, ordered["start_time"], cols)


def snapshot_session_features(
    sessions: pd.DataFrame,
    products: pd.DataFrame,
    history_sessions: pd.DataFrame,
    history_products: pd.DataFrame,
    *,
    tz: str = DEFAULT_TZ,
) -> pd.DataFrame:
    """Feature rows of ``sessions`` as the service scores them from a history snapshot.

    Room and SKU history come from ``history_sessions`` / ``history_products`` alone (what a
    bundle holds when it was trained); sessions of ``sessions`` never see each other, as plans
    scored days or weeks ahead do not. Plan inputs and the product mix come from the sessions'
    own rows. Same columns and row order as :func:`build_session_features`, which instead gives
    each session every earlier session (a history refreshed before each one).
    """
    return _features_from_history(sessions, products, history_sessions, history_products, tz)


def origin_session_features(
    sessions: pd.DataFrame,
    products: pd.DataFrame,
    origins: pd.Series,
    history_sessions: pd.DataFrame,
    history_products: pd.DataFrame,
    *,
    tz: str = DEFAULT_TZ,
) -> pd.DataFrame:
    """Feature rows of ``sessions`` as forecast at ``origins`` (one instant per session,
    aligned with ``sessions``, each before its session): every row reads only the part of
    ``history_sessions`` / ``history_products`` that started strictly before its own origin,
    as :func:`snapshot_session_features` with the history cut there would give it, but from
    one history state (no state per origin). Plan inputs and the product mix come from the
    sessions' own rows (``products``). Same columns as :func:`build_session_features`, in
    start order."""
    at = _epoch_ns(pd.Series(pd.to_datetime(origins), index=sessions.index))
    return _features_from_history(
        sessions, products, history_sessions, history_products, tz, asof=at
    )


def _features_from_history(
    sessions: pd.DataFrame,
    products: pd.DataFrame,
    history_sessions: pd.DataFrame,
    history_products: pd.DataFrame,
    tz: str,
    asof: np.ndarray | None = None,
) -> pd.DataFrame:
    """Feature rows of ``sessions`` (in start, then id, order) from one history state built on
    ``history_sessions`` / ``history_products``, each row reading it up to its start or, given
    ``asof`` (epoch ns aligned with ``sessions``), up to its own origin."""
    order = np.lexsort((sessions["session_id"].to_numpy(), _epoch_ns(sessions["start_time"])))
    ordered = sessions.iloc[order].reset_index(drop=True)
    keys = _ProductKeys(products)
    summary = product_mix_summary(products, keys=keys)
    inputs = session_inputs(ordered, tz)
    if asof is not None:
        inputs = dataclasses.replace(inputs, asof=asof[order])
    context = plan_context(history_sessions, history_products, tz=tz)
    cols = session_columns(
        inputs,
        summary_columns(summary, inputs.session_id),
        context.rooms,
        context.skus,
        sku_list(products, inputs.session_id, keys=keys),
    )
    return _frame(inputs, ordered["start_time"], cols)


@dataclass(frozen=True)
class PlanContext:
    """The history state plan features read, computed once from a history snapshot (the
    service builds it at load time; :func:`plan_features` builds one per call otherwise)."""

    rooms: RoomHistory
    skus: AsOfTable | None
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
    keys = _ProductKeys(history_products)
    history_summary = product_mix_summary(history_products, keys=keys)
    return PlanContext(
        rooms=room_history(history_sessions, history_summary, tz),
        skus=sku_history(history_sessions, history_products, keys=keys),
        tz=tz,
    )


_FEW_STARTS = 4
"""Up to this many starts, :func:`_wall_clock` converts each alone (cheaper than an index)."""


def _wall_clock(t: np.ndarray, tz: str) -> np.ndarray:
    """UTC epoch nanoseconds as local wall-clock ``datetime64[ns]`` in ``tz``: pandas' time-zone
    conversion, per start for a few (a single plan is the common request), else in one pass."""
    if len(t) <= _FEW_STARTS:
        local = [pd.Timestamp(v, tz=tz).tz_localize(None).value for v in t.tolist()]
        return np.array(local, dtype=np.int64).view("datetime64[ns]")
    start = pd.DatetimeIndex(t.view("datetime64[ns]")).tz_localize("UTC")
    return start.tz_convert(tz).tz_localize(None).to_numpy().astype("datetime64[ns]")


def plan_inputs(
    plans: list[SessionPlan], tz: str = DEFAULT_TZ
) -> tuple[SessionInputs, Columns, SkuList]:
    """The inputs, mix summary and SKU list of draft plans, read column-wise from the validated
    pydantic models (:func:`~features.plan.plans_to_columns`: one pass over the plans, SKU
    lines flattened once; no frames, no per-plan rows), so each plan reads exactly as its
    ``sessions`` / ``session_products`` contract rows would. A plan's ``products`` and
    ``product_mix`` both map onto the mix summary."""
    cols = plans_to_columns(plans)
    s = cols.sessions
    ids = s["session_id"].tolist()
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"plan ids must be unique: {dup}")
    inputs = SessionInputs(
        session_id=s["session_id"],
        room_id=s["room_id"],
        host_id=s["host_id"],
        t=cols.start_ns,
        local=_wall_clock(cols.start_ns, tz),
        platform=s["platform"],
        session_type=s["session_type"],
        title=s["title"],
        room_category=cols.room_category,
        numeric={c: s[c] for c in _NUMERIC_INPUTS},
    )
    lines = cols.products
    if len(lines["plan"]):
        raw = _sku_summary_raw(
            lines["plan"],
            len(plans),
            lines["category"],
            lines["live_price"],
            lines["list_price"],
            lines["stock"],
            lines["is_new_launch"].astype(float),
        )
    else:
        raw = _missing_summary(len(plans))
    for i, mix in enumerate(cols.product_mix):
        if mix is not None:
            for key, value in mix_summary_row(mix).items():
                raw[key][i] = value
    skus = SkuList(lines["plan"], lines["sku_id"])
    return inputs, _finish_summary(raw), skus


def plan_columns(plans: list[SessionPlan], context: PlanContext) -> tuple[SessionInputs, Columns]:
    """The feature columns of draft plans (plan order) with a prebuilt history state."""
    inputs, summary, skus = plan_inputs(plans, context.tz)
    return inputs, session_columns(inputs, summary, context.rooms, context.skus, skus)


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
    if context is None:
        # every history statistic is per room: other rooms' sessions cannot change a plan's row
        rooms = {p.room_id for p in plans}
        context = plan_context(history_sessions, history_products, tz=tz, rooms=rooms)
    inputs, cols = plan_columns(plans, context)
    start = pd.Series(pd.to_datetime(inputs.t, utc=True)).dt.tz_convert(context.tz)
    return _frame(inputs, start, cols)


def model_matrix(
    cols: Columns, features: list[str], vocab: dict[str, tuple[str, ...]]
) -> np.ndarray:
    """The model input as a float64 numpy matrix: ``features`` in order, categoricals as codes
    of ``vocab`` (missing -> NaN). Raises :class:`UnknownCategoryError` for a value outside
    the vocabulary (LightGBM would read it silently as missing); in the :data:`OPEN_VOCAB`
    columns such a value is missing."""
    out = np.empty((len(cols[features[0]]) if features else 0, len(features)))
    for j, name in enumerate(features):
        values = cols[name]
        if name in vocab:
            index = {v: float(i) for i, v in enumerate(vocab[name])}
            missing = pd.isna(values)
            unknown = {
                str(v) for v, m in zip(values, missing, strict=True) if not m and v not in index
            }
            if unknown and name not in OPEN_VOCAB:
                raise UnknownCategoryError(name, unknown, vocab[name])
            out[:, j] = [
                math.nan if m else index.get(v, math.nan)
                for v, m in zip(values, missing, strict=True)
            ]
        else:
            out[:, j] = values
    return out
