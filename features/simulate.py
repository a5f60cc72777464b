"""The simulator: realistic live-commerce data with a known truth (the embedded default data).

``simulate`` builds rooms, their session schedule and plans, the SKUs shown, the outcomes and a
fan base with its event stream, all from one ``numpy.random.default_rng(seed)`` and vectorised.
The same seed gives identical frames.

How an outcome is generated (all effects multiplicative, i.e. additive in logs):

* expected viewers = room reach (followers ** 0.8, platform, a slow unobserved drift)
  x time-slot exposure (integral of the hour-of-day audience curve over the planned duration)
  x weekday x festival x session type x host x warm-up (videos, pushes, paid budget; saturating)
  x promo pull (lotteries, red envelopes, flash sales; saturating) x title hooks;
* expected conversion (orders / viewers) = room and category base x platform x type x festival
  (Spring Festival logistics lull lowers it) x promos x discount x product mix (price level,
  assortment size, main-category share, new-launch share), softly capped;
* expected units per SKU = expected orders x units per order x the SKU's share of demand;
  stock caps units; GMV is the sum of units x live price.

Realised values multiply the means by mean-one lognormal noise ``exp(s * Z - s**2 / 2)``:
``SIGMA_VIEWERS`` per session, ``SIGMA_CONVERSION`` per session and ``SIGMA_SKU`` per SKU.
``truth`` holds the noiseless means (expected viewers, orders, GMV), with the stock cap taken
into account in closed form. Every effect a planner controls is monotone in the direction a
planner expects: more warm-up never lowers traffic, promos never lower GMV, prime time beats the
small hours, a festival beats an ordinary day.

Units: money in CNY, durations in minutes, dwell and watch time in seconds, times in
Asia/Shanghai (timezone-aware).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.calendar import WINDOW_BEFORE, days_to_from, in_window
from features.contract import CATEGORIES, DEFAULT_TZ, EVENT_TYPES, SESSION_TYPES, validate
from features.io import Dataset

SIGMA_VIEWERS = 0.35
"""Lognormal sigma of the session-level viewer noise."""
SIGMA_CONVERSION = 0.30
"""Lognormal sigma of the session-level conversion noise."""
SIGMA_SKU = 0.25
"""Lognormal sigma of each SKU's demand noise (makes AOV noisy, averages out over SKUs)."""

# --- rooms ---------------------------------------------------------------------------------

PLATFORM_SHARES: dict[str, float] = {
    "douyin": 0.42,
    "kuaishou": 0.22,
    "taobao": 0.16,
    "channels": 0.12,
    "tiktok": 0.08,
}
# Per platform: reach multiplier, conversion multiplier, base dwell (seconds).
_PLATFORM_EFFECT: dict[str, tuple[float, float, float]] = {
    "douyin": (1.25, 1.0, 65.0),
    "kuaishou": (1.10, 1.2, 85.0),
    "taobao": (0.80, 1.5, 140.0),
    "channels": (0.75, 1.1, 100.0),
    "tiktok": (0.60, 0.7, 55.0),
}
_PLATFORM_EFFECT_ARR = np.array([_PLATFORM_EFFECT[p] for p in PLATFORM_SHARES])
# Per category: room share, median list price (CNY), conversion factor, extra units per order,
# refund rate, Chinese title word.
_CATEGORY: dict[str, tuple[float, float, float, float, float, str]] = {
    "beauty": (0.20, 159.0, 1.00, 0.25, 0.12, "美妆"),
    "apparel": (0.20, 139.0, 0.90, 0.15, 0.30, "服饰"),
    "accessories": (0.05, 79.0, 1.00, 0.20, 0.15, "配饰"),
    "jewellery": (0.06, 899.0, 0.45, 0.00, 0.10, "珠宝"),
    "food": (0.15, 49.0, 1.60, 0.80, 0.05, "美食"),
    "health": (0.06, 199.0, 0.90, 0.30, 0.06, "滋补"),
    "home": (0.09, 89.0, 1.10, 0.30, 0.10, "家居"),
    "furniture": (0.03, 1299.0, 0.35, 0.00, 0.12, "家具"),
    "electronics": (0.07, 599.0, 0.55, 0.05, 0.08, "数码"),
    "maternal_baby": (0.07, 119.0, 1.20, 0.40, 0.08, "母婴"),
    "other": (0.02, 69.0, 1.00, 0.20, 0.10, "好物"),
}
_CAT = {
    k: np.array([_CATEGORY[c][i] for c in CATEGORIES])
    for k, i in (("share", 0), ("price", 1), ("conv", 2), ("upo", 3), ("refund", 4))
}
_CAT_WORD = np.array([_CATEGORY[c][5] for c in CATEGORIES], dtype=object)

# --- calendar ------------------------------------------------------------------------------

_SELLING_FESTIVALS: tuple[str, ...] = ("f618", "d11", "d12", "w38", "mid_autumn")
# Lift at full festival intensity (log scale): traffic, conversion.
_FEST_TRAFFIC = np.array([0.85, 1.00, 0.50, 0.40, 0.35])
_FEST_CONV = np.array([0.35, 0.45, 0.25, 0.20, 0.20])
# Category affinity of each selling festival (rows: festivals, columns: CATEGORIES).
_FEST_AFFINITY = np.ones((len(_SELLING_FESTIVALS), len(CATEGORIES)))
for _c in ("beauty", "apparel", "jewellery", "accessories"):
    _FEST_AFFINITY[3, CATEGORIES.index(_c)] = 1.3
for _c in ("food", "health", "home", "furniture", "electronics", "maternal_baby", "other"):
    _FEST_AFFINITY[3, CATEGORIES.index(_c)] = 0.35
_FEST_AFFINITY[4, :] = 0.4
_FEST_AFFINITY[4, CATEGORIES.index("food")] = 1.6
_FEST_AFFINITY[4, CATEGORIES.index("health")] = 1.3
_FEST_AFFINITY[0:2, CATEGORIES.index("electronics")] = 1.15
_FEST_TAGS: tuple[tuple[str, ...], ...] = (
    ("618", "618年中大促", "618狂欢"),
    ("双11", "双十一", "双11狂欢"),
    ("双12", "双十二"),
    ("女神节", "38节"),
    ("中秋", "中秋礼遇"),
)
_SPRING_TRAFFIC, _SPRING_CONV, _SPRING_SESSIONS = -0.15, -0.60, 0.65

# Audience intensity by start hour (log scale, 0..24): prime time 19-22 strongest.
_HOUR_CURVE = np.array(
    [-0.84, -1.14, -1.56, -1.92, -2.04, -1.92, -1.56, -1.20, -0.96, -0.78, -0.66, -0.54, -0.48,
     -0.60, -0.84, -0.90, -0.78, -0.54, -0.24, 0.00, 0.06, 0.00, -0.18, -0.48, -0.84]
)  # fmt: skip
_WEEKDAY_TRAFFIC = np.array([-0.03, 0.0, 0.0, 0.0, 0.05, 0.08, 0.05])
_WEEKDAY_CONV = np.array([0.0, 0.0, 0.0, 0.0, 0.02, 0.05, 0.04])
# Start-hour slots a room chooses from: (first hour, last hour, base weight).
_SLOTS = np.array(
    [
        [2.0, 6.0, 0.02],  # small hours
        [6.0, 11.0, 0.12],  # morning
        [11.0, 14.0, 0.12],  # noon
        [14.0, 17.0, 0.08],  # afternoon
        [17.0, 19.0, 0.08],  # early evening
        [19.0, 22.0, 0.50],  # prime time
        [22.0, 25.0, 0.08],  # late night (>= 24 is after midnight)
    ]
)

# --- session types -------------------------------------------------------------------------

TYPES: tuple[str, ...] = tuple(t for t in SESSION_TYPES if t != "other")
"""Simulated session types: the contract's, in its order, without ``other``."""
_P_ORDINARY = np.array([0.52, 0.02, 0.12, 0.12, 0.11, 0.11])
_P_FESTIVAL = np.array([0.15, 0.65, 0.08, 0.07, 0.03, 0.02])
_P_LULL = np.array([0.75, 0.0, 0.03, 0.15, 0.02, 0.05])
_TYPE_TRAFFIC = np.array([0.0, 0.45, 0.30, 0.20, 0.15, -0.05])
_TYPE_CONV = np.array([0.0, 0.25, 0.12, 0.25, -0.05, 0.30])
_TYPE_DISCOUNT = np.array([0.0, 0.12, 0.05, 0.08, -0.08, 0.30])
_TYPE_PRICE_POS = np.array([0.0, 0.0, 0.25, -0.20, 0.30, -0.35])
_TYPE_DURATION = np.array([1.0, 1.4, 1.1, 0.9, 0.9, 1.0])
_TYPE_NSKU = np.array([1.0, 1.3, 0.8, 1.0, 0.6, 1.4])
_TYPE_NEW_SHARE = np.array([0.05, 0.08, 0.10, 0.03, 0.60, 0.0])
_TYPE_WORDS: tuple[tuple[str, ...], ...] = (
    ("日常直播", "好物分享", "直播间", "今日好物"),
    ("大促", "狂欢专场", "大促专场"),
    ("品牌专场", "品牌日", "官方品牌专场"),
    ("粉丝福利", "宠粉福利", "粉丝节福利"),
    ("新品首发", "新品发布", "首发专场"),
    ("清仓", "断码清仓", "捡漏清仓"),
)
# Title hooks that are not tied to a mechanic, with their traffic lift (log scale).
_HOOKS: tuple[str, ...] = ("爆款", "限时", "直降", "源头好价")
_HOOK_LIFT = np.array([0.08, 0.05, 0.06, 0.04])


def _primes(limit: int) -> np.ndarray:
    sieve = np.ones(limit + 1, dtype=bool)
    sieve[:2] = False
    for i in range(2, int(limit**0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = False
    return np.flatnonzero(sieve)


_PRIMES = _primes(2000)


def _next_prime(n: np.ndarray) -> np.ndarray:
    return _PRIMES[np.searchsorted(_PRIMES, n, side="left")]


def _norm_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF (Abramowitz-Stegun 7.1.26 erf, |error| < 1.5e-7)."""
    z = np.abs(x) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    erf = 1.0 - poly * np.exp(-z * z)
    return 0.5 * (1.0 + np.sign(x) * erf)


def _capped_mean(mean: np.ndarray, cap: np.ndarray, sigma: float) -> np.ndarray:
    """E[min(mean * X, cap)] for X lognormal with mean one and log-sd ``sigma``."""
    u = (np.log(cap / mean) + sigma**2 / 2) / sigma
    return mean * _norm_cdf(u - sigma) + cap * (1.0 - _norm_cdf(u))


def _noise(rng: np.random.Generator, sigma: float, size: int) -> np.ndarray:
    """Mean-one lognormal multipliers exp(sigma * Z - sigma**2 / 2)."""
    return np.exp(sigma * rng.standard_normal(size) - sigma**2 / 2)


def _stoch_round(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Round to an integer up or down at random so that the mean is unchanged."""
    return np.floor(x + rng.random(len(x)))


def _choice_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of ``probs`` (rows sum to one)."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cum[:, -1]
    return np.minimum((cum < u[:, None]).sum(axis=1), probs.shape[1] - 1)


_STR_TYPES = {pa.large_string(): pd.StringDtype("pyarrow", na_value=np.nan)}


def _as_arrow(codes: np.ndarray, names: np.ndarray | list[str]) -> pa.Array:
    """Strings ``names[codes]`` as an Arrow ``large_string`` array."""
    dictionary = pa.array([str(x) for x in names], type=pa.large_string())
    arr = pa.DictionaryArray.from_arrays(pa.array(np.asarray(codes, dtype=np.int32)), dictionary)
    return arr.cast(pa.large_string())


def _join(left: pa.Array, right: pa.Array, *, prefix: str = "", sep: str = "") -> pa.Array:
    """Element-wise ``prefix + left + sep + right`` of two Arrow string arrays."""

    def text(value: str) -> pa.Scalar:
        return pa.scalar(value, pa.large_string())

    out = pc.binary_join_element_wise(left, right, text(sep))
    if prefix:
        out = pc.binary_join_element_wise(text(prefix), out, text(""))
    return out


def _as_str(codes: np.ndarray, names: np.ndarray | list[str]) -> pd.Series:
    """Strings ``names[codes]`` as a pandas ``str`` column (fast for millions of rows)."""
    dictionary = pa.array([str(x) for x in names], type=pa.large_string())
    arr = pa.DictionaryArray.from_arrays(pa.array(np.asarray(codes, dtype=np.int32)), dictionary)
    return pd.Series(arr.cast(pa.large_string()).to_pandas(types_mapper=_STR_TYPES.get))


# --- the calendar of each simulated day ----------------------------------------------------


def _day_calendar(dates: pd.DatetimeIndex) -> dict[str, np.ndarray]:
    """Per local date: selling-festival intensities (0..1.3), the Spring lull depth (0..1)."""
    n = len(dates)
    intensity = np.zeros((len(_SELLING_FESTIVALS), n))
    to_next_all = np.zeros((len(_SELLING_FESTIVALS), n), dtype=int)
    for i, name in enumerate(_SELLING_FESTIVALS):
        to_next, _ = days_to_from(dates, name)
        window = in_window(dates, name)
        ramp = 0.3 + 0.7 * (1.0 - to_next / WINDOW_BEFORE[name]) ** 2
        ramp = np.where(to_next == 0, 1.3, ramp)
        if name == "d11":  # pre-sale opens about three weeks before the day
            ramp = ramp + np.where((to_next >= 16) & (to_next <= 21), 0.25, 0.0)
        intensity[i] = np.where(window, ramp, 0.0)
        to_next_all[i] = to_next
    s_next, s_prev = days_to_from(dates, "spring")
    lull = np.where(in_window(dates, "spring"), 1.0 - 0.5 * np.minimum(s_next, s_prev) / 10.0, 0.0)
    # just after 618 / Double 11: the clearance (返场) days
    after = np.zeros(n, dtype=bool)
    for name in ("f618", "d11"):
        _, from_prev = days_to_from(dates, name)
        after |= (from_prev >= 1) & (from_prev <= 10)
    return {"intensity": intensity, "to_next": to_next_all, "lull": lull, "after": after}


# --- rooms ---------------------------------------------------------------------------------


def _rooms(rng: np.random.Generator, n: int, days: int) -> dict[str, np.ndarray]:
    platforms = np.array(list(PLATFORM_SHARES))
    p_plat = np.array(list(PLATFORM_SHARES.values()))
    r = {
        "platform": rng.choice(len(platforms), size=n, p=p_plat / p_plat.sum()),
        "category": rng.choice(len(CATEGORIES), size=n, p=_CAT["share"] / _CAT["share"].sum()),
        "followers0": np.clip(np.exp(rng.normal(np.log(6e4), 1.4, n)), 1e3, 1e7),
        "growth": np.clip(rng.normal(0.2, 0.45, n), -0.8, 1.5),  # log-followers per year
        "reach": np.exp(rng.normal(0.0, 0.45, n)),
        "conv": np.exp(rng.normal(np.log(0.013), 0.4, n)),
        "start_day": np.where(rng.random(n) < 0.12, rng.integers(0, max(1, int(0.5 * days)), n), 0),
        "per_week": rng.uniform(4.0, 7.0, n),
        "weekday_habit": np.exp(rng.normal(0.0, 0.25, (n, 7))),
        "slot_weights": rng.dirichlet(_SLOTS[:, 2] * 6.0, n),
        "duration": np.exp(rng.uniform(np.log(110), np.log(280), n)),
        "type_taste": np.exp(rng.normal(0.0, 0.4, (n, len(TYPES)))),
        "n_hosts": rng.choice([1, 2, 3], size=n, p=[0.45, 0.35, 0.2]),
        "videos": rng.uniform(0.5, 6.0, n),
        "pushes": rng.uniform(0.3, 3.0, n),
        "paid_prob": rng.uniform(0.3, 0.9, n),
        "paid_scale": np.exp(rng.normal(np.log(0.08), 0.5, n)),
        "lottery": rng.uniform(0.0, 5.0, n),
        "red": rng.uniform(0.0, 3.0, n),
        "flash": rng.uniform(0.0, 4.0, n),
        "coupon_prob": rng.uniform(0.2, 0.8, n),
        "discount": rng.uniform(0.05, 0.3, n),
        "price_pos": rng.uniform(0.25, 0.75, n),
        "n_skus": rng.uniform(8.0, 30.0, n),
        "main_share": rng.uniform(0.6, 0.95, n),
        "catalogue_main": rng.choice(_PRIMES[(_PRIMES >= 211) & (_PRIMES <= 503)], n),
        "catalogue_other": rng.choice(_PRIMES[(_PRIMES >= 127) & (_PRIMES <= 257)], n),
        "host_traffic": np.concatenate([np.zeros((n, 1)), rng.normal(-0.25, 0.15, (n, 2))], axis=1),
        "host_conv": np.concatenate([np.zeros((n, 1)), rng.normal(-0.1, 0.1, (n, 2))], axis=1),
    }
    r["weekday_habit"] /= r["weekday_habit"].mean(axis=1, keepdims=True)
    r["start_day"][0] = 0  # at least one room with full history
    # secondary categories: the room sells a few others next to its main one
    others = rng.random((n, len(CATEGORIES))) * _CAT["share"][None, :]
    others[np.arange(n), r["category"]] = -1.0
    r["secondary"] = np.argsort(-others, axis=1)[:, :3]
    return r


def _catalogue(rng: np.random.Generator, rooms: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each room's SKU catalogue, price-sorted within the main and the secondary part."""
    n = len(rooms["category"])
    sizes = rooms["catalogue_main"] + rooms["catalogue_other"]
    room = np.repeat(np.arange(n), sizes)
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    pos = np.arange(len(room)) - first[room]
    is_main = pos < rooms["catalogue_main"][room]
    pick = rng.integers(0, 3, len(room))
    cat = np.where(is_main, rooms["category"][room], rooms["secondary"][room, pick])
    price = _CAT["price"][cat] * np.exp(rng.normal(0.0, 0.6, len(room)))
    price = np.where(price >= 20, np.round(price / 10.0) * 10.0 - 1.0, np.round(price, 0) + 0.9)
    hero = np.exp(rng.normal(0.0, 0.6, len(room)))
    # sort by (room, part, price) so a window over positions is a price band
    order = np.lexsort((price, ~is_main, room))
    room, is_main, cat, price, hero = (
        room[order],
        is_main[order],
        cat[order],
        price[order],
        hero[order],
    )
    local = np.arange(len(room)) - first[room]
    local = np.where(is_main, local, local - rooms["catalogue_main"][room])
    return {
        "first": first,
        "is_main": is_main,
        "category": cat,
        "price": price,
        "hero": hero,
        "local": local,
        "room": room,
    }


# --- schedule and plans --------------------------------------------------------------------


def _schedule(
    rng: np.random.Generator, rooms: dict[str, np.ndarray], cal: dict[str, np.ndarray], days: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Room, day, start minute (from midnight of the day, may pass 24:00) and is-extra flag."""
    n = len(rooms["category"])
    weekday = cal["weekday"]
    fest_any = cal["intensity"].max(axis=0)
    p = (rooms["per_week"][:, None] / 7.0) * rooms["weekday_habit"][:, weekday]
    p = p * (1.0 + 0.35 * np.minimum(fest_any, 1.0))[None, :]
    p = p * (1.0 - _SPRING_SESSIONS * cal["lull"])[None, :]
    p = np.where(np.arange(days)[None, :] >= rooms["start_day"][:, None], np.clip(p, 0, 0.97), 0)
    live = rng.random((n, days)) < p
    peak = (cal["to_next"][:3] <= 1).any(axis=0) & (cal["intensity"][:3] > 0).any(axis=0)
    extra = live & (rng.random((n, days)) < np.where(peak, 0.5, 0.03)[None, :])
    r_main, d_main = np.nonzero(live)
    r_extra, d_extra = np.nonzero(extra)
    slot = _choice_rows(rng, rooms["slot_weights"][r_main])
    has_extra = extra[r_main, d_main]
    slot = np.where(has_extra, 5, slot)  # the day's main show is in prime time
    lo, hi = _SLOTS[slot, 0], _SLOTS[slot, 1]
    hour = lo + (hi - lo) * rng.random(len(slot))
    step = np.where(rng.random(len(slot)) < 0.7, 30.0, 15.0)
    minute_main = np.floor(hour * 60.0 / step) * step
    hour_x = 9.0 + 2.0 * rng.random(len(r_extra))
    minute_extra = np.floor(hour_x * 2.0) * 30.0
    room = np.concatenate([r_main, r_extra])
    day = np.concatenate([d_main, d_extra])
    minute = np.concatenate([minute_main, minute_extra])
    is_extra = np.concatenate([np.zeros(len(r_main), bool), np.ones(len(r_extra), bool)])
    return room, day, minute, is_extra


def _drop_overlaps(room: np.ndarray, start: np.ndarray, duration: np.ndarray) -> np.ndarray:
    """Keep-mask removing sessions that start less than 30 min after the room's previous end."""
    keep = np.ones(len(room), dtype=bool)
    order = np.lexsort((start, room))
    while True:
        idx = order[keep[order]]
        same = room[idx][1:] == room[idx][:-1]
        clash = same & (start[idx][1:] < start[idx][:-1] + duration[idx][:-1] + 30.0)
        if not clash.any():
            return keep
        # drop the first later session of each clash chain; re-check the rest
        first = np.flatnonzero(clash)
        first = first[np.concatenate([[True], np.diff(first) > 1])]
        keep[idx[first + 1]] = False


def _titles(
    rng: np.random.Generator,
    stype: np.ndarray,
    fest_idx: np.ndarray,
    fest_on: np.ndarray,
    lull: np.ndarray,
    category: np.ndarray,
    flash: np.ndarray,
    lottery: np.ndarray,
    red: np.ndarray,
    coupon: np.ndarray,
    discount: np.ndarray,
    hooks: np.ndarray,
) -> np.ndarray:
    """Chinese session titles whose keywords follow type, festival, mechanics and hooks."""
    n = len(stype)
    parts: list[np.ndarray] = []
    fest_tag = np.full(n, "", dtype=object)
    for i, tags in enumerate(_FEST_TAGS):
        pick = np.asarray(tags, dtype=object)[rng.integers(0, len(tags), n)]
        fest_tag = np.where(fest_on & (fest_idx == i), pick, fest_tag)
    fest_tag = np.where(lull > 0, np.where(rng.random(n) < 0.6, "春节不打烊", ""), fest_tag)
    parts.append(fest_tag)
    parts.append(_CAT_WORD[category])
    words = np.full(n, "", dtype=object)
    for t, options in enumerate(_TYPE_WORDS):
        pick = np.asarray(options, dtype=object)[rng.integers(0, len(options), n)]
        words = np.where(stype == t, pick, words)
    parts.append(words)
    parts.append(np.where((flash > 0) & (rng.random(n) < 0.85), "秒杀", ""))
    parts.append(np.where((lottery >= 2) & (rng.random(n) < 0.7), "福袋", ""))
    parts.append(np.where((red > 0) & (rng.random(n) < 0.5), "红包雨", ""))
    parts.append(np.where((coupon > 0) & (rng.random(n) < 0.5), "领券", ""))
    zhe = np.maximum(1, np.round((1.0 - discount) * 10)).astype(int).astype(str)
    parts.append(
        np.where((discount >= 0.4) & (rng.random(n) < 0.7), "低至" + zhe.astype(object) + "折", "")
    )
    for h, word in enumerate(_HOOKS):
        parts.append(np.where(hooks[:, h], word, ""))
    out = parts[0]
    for p in parts[1:]:
        out = out + np.where((out != "") & (p != ""), " ", "") + p
    return out


# --- the main entry ------------------------------------------------------------------------


def simulate(
    seed: int = 0,
    rooms: int = 40,
    days: int = 730,
    fans: int = 100_000,
    start: str = "2024-01-01",
) -> Dataset:
    """Simulate ``rooms`` live rooms over ``days`` days from ``start`` with ``fans`` fans.

    Returns a :class:`~features.io.Dataset` whose ``sessions``, ``session_products`` and
    ``fan_events`` pass the data contract, plus ``truth``: per session the noiseless means
    ``expected_viewers``, ``expected_orders`` and ``expected_gmv`` (CNY) that generated the
    realised outcomes. Same arguments, same frames.
    """
    if rooms < 1 or days < 7 or fans < 0:
        raise ValueError("need rooms >= 1, days >= 7 and fans >= 0")
    rng = np.random.default_rng(seed)
    day0 = pd.Timestamp(start).normalize()
    dates = pd.date_range(day0, periods=days, freq="D")
    cal = _day_calendar(dates)
    cal["weekday"] = dates.day_of_week.to_numpy()
    cal["doy"] = dates.day_of_year.to_numpy()

    rm = _rooms(rng, rooms, days)
    catalogue = _catalogue(rng, rm)
    room_ids = np.array([f"room-{i:03d}" for i in range(rooms)], dtype=object)

    # schedule -----------------------------------------------------------------------------
    s_room, s_day, s_minute, s_extra = _schedule(rng, rm, cal, days)
    # from here on a session's day is the local calendar date it starts on (after midnight
    # for late shows), as feature code will see it; drop starts past the horizon
    start_min = s_day * 1440.0 + s_minute
    inside = start_min < days * 1440.0
    s_room, s_extra, start_min = s_room[inside], s_extra[inside], start_min[inside]
    s_day = (start_min // 1440).astype(int)
    s_minute = start_min - s_day * 1440.0
    n = len(s_room)
    cat = rm["category"][s_room]
    fest_i = cal["intensity"][:, s_day].T * _FEST_AFFINITY[:, cat].T  # (n, festivals)
    fest_idx = np.argmax(fest_i, axis=1)
    fest_level = fest_i.max(axis=1)
    lull = cal["lull"][s_day]

    # session type
    w = np.clip(0.3 + 0.6 * np.minimum(fest_level, 1.0), 0.0, 0.95) * (fest_level > 0)
    probs = (1 - w)[:, None] * _P_ORDINARY[None, :] + w[:, None] * _P_FESTIVAL[None, :]
    probs = np.where((lull > 0)[:, None], _P_LULL[None, :], probs)
    probs[:, 5] += 0.15 * cal["after"][s_day]
    probs = probs * rm["type_taste"][s_room]
    stype = _choice_rows(rng, probs / probs.sum(axis=1, keepdims=True))
    festive = (stype == 1) | (fest_level > 0)

    # duration (planned, minutes) and overlaps
    dur = rm["duration"][s_room] * _TYPE_DURATION[stype] * np.exp(rng.normal(0, 0.35, n))
    dur = np.clip(np.round(dur / 30.0) * 30.0, 60.0, 360.0)
    dur = np.where(s_extra, np.minimum(dur, 180.0), dur)
    keep = _drop_overlaps(s_room, start_min, dur)
    order = np.lexsort((s_room, start_min))
    order = order[keep[order]]
    n = len(order)
    s_room, s_day, s_minute, s_extra = s_room[order], s_day[order], s_minute[order], s_extra[order]
    cat, fest_i, fest_idx, fest_level = (
        cat[order],
        fest_i[order],
        fest_idx[order],
        fest_level[order],
    )
    lull, stype, festive, dur, start_min = (
        lull[order],
        stype[order],
        festive[order],
        dur[order],
        start_min[order],
    )
    weekday = cal["weekday"][s_day]
    plat = rm["platform"][s_room]

    # host
    n_hosts = rm["n_hosts"][s_room]
    p_main_host = np.where(festive, 0.85, 0.65)
    other_host = 1 + rng.integers(0, 2, n) % np.maximum(n_hosts - 1, 1)
    host = np.where((n_hosts > 1) & (rng.random(n) > p_main_host), other_host, 0)

    # followers (trend over time)
    years = (s_day - rm["start_day"][s_room]) / 365.0
    wiggle = 0.05 * np.sin(2 * np.pi * (s_day / 365.0 + s_room / 7.0))
    followers = rm["followers0"][s_room] * np.exp(rm["growth"][s_room] * years + wiggle)
    followers = np.round(np.clip(followers, 1e3, 1e7))

    # warm-up
    fest_boost = np.where(festive, 1.8, 1.0)
    big_type = np.isin(stype, (2, 4)).astype(float) * 0.5 + 1.0
    videos = rng.poisson(
        rm["videos"][s_room] * fest_boost * big_type * np.exp(rng.normal(0, 0.5, n))
    )
    pushes = rng.poisson(rm["pushes"][s_room] * fest_boost * np.exp(rng.normal(0, 0.5, n)))
    organic = 3.0 * followers**0.8 * rm["reach"][s_room] * _PLATFORM_EFFECT_ARR[plat, 0]
    paid_on = rng.random(n) < np.clip(rm["paid_prob"][s_room] * np.where(festive, 1.3, 1.0), 0, 1)
    budget = (
        rm["paid_scale"][s_room] * organic * fest_boost * big_type * np.exp(rng.normal(0, 0.9, n))
    )
    budget = np.where(paid_on, np.maximum(100.0, np.round(budget / 100.0) * 100.0), 0.0)

    # promos
    welfare = stype == 3
    lottery = rng.poisson(
        rm["lottery"][s_room] * np.where(welfare, 2.5, 1.0) * np.where(festive, 1.8, 1.0)
    )
    red = rng.poisson(rm["red"][s_room] * np.where(welfare, 2.0, 1.0) * np.where(festive, 1.5, 1.0))
    flash = rng.poisson(
        rm["flash"][s_room] * np.where(festive, 1.8, 1.0) * np.where(stype == 5, 1.5, 1.0)
    )
    coupon_on = rng.random(n) < np.clip(rm["coupon_prob"][s_room] + 0.35 * festive, 0, 0.95)
    coupon = _CAT["price"][cat] * rng.uniform(0.05, 0.3, n)
    coupon = np.where(coupon_on, np.maximum(5.0, np.round(coupon / 5.0) * 5.0), 0.0)
    hooks = rng.random((n, len(_HOOKS))) < 0.12

    # products ------------------------------------------------------------------------------
    disc_plan = np.clip(
        rm["discount"][s_room] + _TYPE_DISCOUNT[stype] + 0.08 * np.minimum(fest_level, 1.0)
        + rng.normal(0, 0.08, n), 0.0, 0.75
    )  # fmt: skip
    price_pos = np.clip(
        rm["price_pos"][s_room] + _TYPE_PRICE_POS[stype] + rng.normal(0, 0.22, n), 0, 1
    )
    n_sku = (
        rm["n_skus"][s_room]
        * np.sqrt(dur / 180.0)
        * _TYPE_NSKU[stype]
        * np.exp(rng.normal(0, 0.3, n))
    )
    n_sku = np.clip(np.round(n_sku), 3, 60).astype(int)
    new_share = np.clip(_TYPE_NEW_SHARE[stype] + rng.normal(0, 0.05, n), 0, 0.9)
    n_new = rng.binomial(n_sku, new_share)
    main_share = np.where(stype == 2, 0.98, rm["main_share"][s_room])
    n_other = rng.binomial(n_sku - n_new, 1 - main_share)
    n_main = n_sku - n_new - n_other
    prod = _session_products(
        rng, s_room, cat, n_main, n_other, n_new, price_pos, disc_plan, rm, catalogue
    )
    p_sess = prod["session"]
    live = prod["live_price"]
    lst = prod["list_price"]
    disc_k = 1.0 - live / lst
    counts = np.bincount(p_sess, minlength=n)
    discount = np.bincount(p_sess, disc_k, n) / counts
    rel_price = np.log(live / _CAT["price"][prod["category"]])
    price_idx = np.bincount(p_sess, rel_price, n) / counts
    mean_live = np.bincount(p_sess, live, n) / counts
    main_frac = np.bincount(p_sess, prod["category"] == cat[p_sess], n) / counts
    new_frac = np.bincount(p_sess, prod["is_new"], n) / counts

    # expected viewers ---------------------------------------------------------------------
    drift_t, drift_c = _drifts(rng, rooms, days)
    exposure = _exposure(s_minute, dur)
    log_ev = (
        np.log(organic)
        + drift_t[s_room, s_day]
        + 0.85 * np.log(exposure)
        + _WEEKDAY_TRAFFIC[weekday]
        + fest_i @ _FEST_TRAFFIC
        + _SPRING_TRAFFIC * lull
        + _TYPE_TRAFFIC[stype]
        + rm["host_traffic"][s_room, host]
        + 0.18 * np.log1p(videos)
        + 0.10 * np.log1p(pushes)
        + np.log1p(1.2 * np.log1p(budget / (0.3 * organic)))
        + 0.07 * np.log1p(lottery)
        + 0.04 * np.log1p(red)
        + 0.06 * np.log1p(flash)
        + hooks @ _HOOK_LIFT
        + 0.05 * np.cos(2 * np.pi * (cal["doy"][s_day] - 20) / 365.0)
    )
    ev = np.exp(log_ev)

    # expected conversion ------------------------------------------------------------------
    log_conv = (
        np.log(rm["conv"][s_room])
        + np.log(_CAT["conv"][cat])
        + np.log(_PLATFORM_EFFECT_ARR[plat, 1])
        + drift_c[s_room, s_day]
        + _TYPE_CONV[stype]
        + fest_i @ _FEST_CONV
        + _SPRING_CONV * lull
        + _WEEKDAY_CONV[weekday]
        + rm["host_conv"][s_room, host]
        + 0.04 * np.log1p(lottery)
        + 0.06 * np.log1p(red)
        + 0.15 * np.log1p(flash)
        + 0.03 * np.log1p(pushes)
        + 0.30 * (1.0 - np.exp(-coupon / (0.15 * mean_live)))
        - 1.3 * np.log1p(-np.minimum(discount, 0.9))
        - 0.35 * price_idx
        + 0.15 * np.log(counts / 15.0)
        + 0.30 * (main_frac - 0.8)
        - 0.30 * new_frac
    )
    conv = np.exp(log_conv)
    conv = conv / (1.0 + conv / 0.35)  # soft cap: at most ~35 % of viewers order
    eo = ev * conv

    # demand per SKU ----------------------------------------------------------------------
    weight = (
        np.exp(-0.5 * rel_price + 1.0 * disc_k)
        * prod["hero"]
        * np.where(prod["is_new"], 1.25, 1.0)
        * np.where(prod["category"] == cat[p_sess], 1.0, 0.7)
    )
    share = weight / np.bincount(p_sess, weight, n)[p_sess]
    upo = 1.0 + _CAT["upo"][cat] * np.exp(-mean_live / 150.0) + 0.3 * np.exp(-mean_live / 40.0)
    m_units = (eo * upo)[p_sess] * share
    # stock: planned from a noisy forecast of demand (a planner does not know the truth)
    room_typical = pd.Series(eo).groupby(s_room).transform("median").to_numpy()
    plan_units = (eo**0.6 * room_typical**0.4 * np.exp(rng.normal(0, 0.35, n)) * upo)[
        p_sess
    ] * share
    stock = np.maximum(
        10.0, np.ceil(plan_units * np.exp(rng.normal(np.log(3.0), 0.4, len(share))) / 10.0) * 10.0
    )
    sigma_tot = float(np.sqrt(SIGMA_VIEWERS**2 + SIGMA_CONVERSION**2 + SIGMA_SKU**2))
    capped = _capped_mean(m_units, stock, sigma_tot)
    exp_gmv = np.bincount(p_sess, capped * live, n)
    exp_units_capped = np.bincount(p_sess, capped, n)
    exp_units = np.bincount(p_sess, m_units, n)
    exp_orders = eo * exp_units_capped / exp_units

    # realised outcomes ---------------------------------------------------------------------
    x_v = _noise(rng, SIGMA_VIEWERS, n)
    x_c = _noise(rng, SIGMA_CONVERSION, n)
    x_k = _noise(rng, SIGMA_SKU, len(share))
    viewers_cont = ev * x_v
    viewers = np.maximum(_stoch_round(rng, viewers_cont), 1.0)
    raw_units = m_units * (x_v * x_c)[p_sess] * x_k
    units = _stoch_round(rng, np.minimum(raw_units, stock))
    gmv_k = np.round(units * live, 2)
    gmv = np.bincount(p_sess, gmv_k, n)
    tot_units = np.bincount(p_sess, units, n)
    tot_raw = np.bincount(p_sess, raw_units, n)
    orders = _stoch_round(
        rng, eo * x_v * x_c * np.bincount(p_sess, np.minimum(raw_units, stock), n) / tot_raw
    )
    orders = np.minimum(np.minimum(orders, tot_units), viewers)
    orders = np.where((tot_units > 0) & (orders < 1), 1.0, orders)
    buyers = np.where(
        orders > 0, np.maximum(1.0, np.floor(orders * rng.uniform(0.82, 0.98, n))), 0.0
    )
    actual = np.clip(
        np.round(dur * np.exp(rng.normal(0.02 + 0.04 * festive, 0.07, n))), 20.0, 1440.0
    )
    dwell = (
        _PLATFORM_EFFECT_ARR[plat, 2]
        * (dur / 180.0) ** 0.2
        * np.exp(
            0.12 * np.log1p(lottery) + 0.05 * np.log1p(red) + 0.05 * np.log1p(flash) + 0.1 * welfare
        )
        * np.exp(rng.normal(0, 0.2, n))
    )
    dwell = np.round(np.minimum(dwell, actual * 60.0), 1)
    peak = viewers * dwell / (actual * 60.0) * np.exp(rng.normal(np.log(2.5), 0.25, n))
    peak = np.clip(np.round(peak), 1.0, viewers)
    follow_rate = (
        0.012
        * (followers / 1e5) ** -0.15
        * np.exp(0.15 * np.log1p(lottery) + 0.2 * welfare)
        * np.exp(rng.normal(0, 0.3, n))
    )
    new_followers = np.round(viewers * np.minimum(follow_rate, 0.2))

    # frames ---------------------------------------------------------------------------------
    start_ns = day0.to_datetime64().astype("datetime64[ns]") + (start_min * 60).astype(
        "timedelta64[s]"
    )
    start_time = pd.DatetimeIndex(start_ns).tz_localize(DEFAULT_TZ)
    stamp = pd.Series(start_time).dt.strftime("%y%m%d-%H%M").to_numpy(dtype=object)
    session_id = room_ids[s_room] + "-" + stamp
    title = _titles(
        rng,
        stype,
        fest_idx,
        (stype == 1) | ((fest_level > 0) & (rng.random(n) < 0.4)),
        lull,
        cat,
        flash,
        lottery,
        red,
        coupon,
        discount,
        hooks,
    )
    host_id = room_ids[s_room] + "-h" + host.astype(str).astype(object)
    platforms = np.array(list(PLATFORM_SHARES), dtype=object)
    sessions = pd.DataFrame(
        {
            "session_id": session_id,
            "room_id": room_ids[s_room],
            "platform": platforms[plat],
            "host_id": host_id,
            "start_time": start_time,
            "planned_duration_min": dur,
            "session_type": np.array(TYPES, dtype=object)[stype],
            "title": title,
            "followers_at_start": followers,
            "warmup_videos": videos.astype(float),
            "community_pushes": pushes.astype(float),
            "paid_promo_budget": budget,
            "lottery_count": lottery.astype(float),
            "red_envelope_count": red.astype(float),
            "flash_sale_rounds": flash.astype(float),
            "coupon_value": coupon,
            "discount_depth": np.round(discount, 4),
            "actual_duration_min": actual,
            "viewers": viewers,
            "peak_concurrent": peak,
            "gmv": np.round(gmv, 2),
            "orders": orders,
            "buyers": buyers,
            "avg_dwell_seconds": dwell,
            "new_followers": new_followers,
        }
    )
    products = pd.DataFrame(
        {
            "session_id": _as_str(p_sess, session_id),
            "sku_id": pd.Series(prod["sku_id"].to_pandas(types_mapper=_STR_TYPES.get)),
            "category": np.array(CATEGORIES, dtype=object)[prod["category"]],
            "list_price": lst,
            "live_price": live,
            "stock": stock,
            "is_new_launch": prod["is_new"],
            "units_sold": units,
            "gmv": gmv_k,
        }
    )
    # the frame holds what is kept of the product rows: free the rest before validation
    # (which copies the frame) so that the peak stays near a few copies of the output
    del prod, p_sess, live, lst, disc_k, rel_price, weight, share, m_units, plan_units, stock
    del capped, x_k, raw_units, units, gmv_k
    truth = pd.DataFrame(
        {
            "session_id": pd.Series(session_id, dtype="str"),
            "expected_viewers": ev,
            "expected_orders": exp_orders,
            "expected_gmv": exp_gmv,
        }
    )
    sess_info = {
        "room": s_room,
        "start_sec": start_min * 60.0,
        "dur_sec": actual * 60.0,
        "dwell": dwell,
        "aov": exp_gmv / np.maximum(exp_orders, 1e-9),
        "conv": conv,
        "ev": ev,
        "stype": stype,
        "category": cat,
    }
    events = _fan_events(rng, fans, days, rm, sess_info, session_id, room_ids, day0)
    return Dataset(
        sessions=validate(sessions, "sessions", source="simulate"),
        session_products=validate(products, "session_products", source="simulate"),
        fan_events=validate(events, "fan_events", source="simulate"),
        truth=truth,
    )


def _drifts(rng: np.random.Generator, rooms: int, days: int) -> tuple[np.ndarray, np.ndarray]:
    """Slow unobserved AR(1) drifts of each room's reach and conversion (log scale, per day)."""
    phi = 0.99
    out = []
    for sd in (0.12, 0.10):
        shocks = rng.normal(0.0, sd * np.sqrt(1 - phi**2), (rooms, days))
        x = np.empty((rooms, days))
        x[:, 0] = rng.normal(0.0, sd, rooms)
        for t in range(1, days):
            x[:, t] = phi * x[:, t - 1] + shocks[:, t]
        out.append(x)
    return out[0], out[1]


def _exposure(start_minute: np.ndarray, duration_min: np.ndarray) -> np.ndarray:
    """Audience exposure of a session: the hour curve integrated over its minutes.

    Relative to a 180-minute session starting at 20:00 (= 1). Grows with duration, higher in
    prime time.
    """
    minutes = np.arange(3 * 1440)
    intensity = np.exp(np.interp((minutes % 1440) / 60.0, np.arange(25), _HOUR_CURVE))
    cum = np.concatenate([[0.0], np.cumsum(intensity)])
    s = start_minute.astype(int)
    e = s + duration_min.astype(int)
    ref = cum[20 * 60 + 180] - cum[20 * 60]
    return (cum[e] - cum[s]) / ref


def _session_products(
    rng: np.random.Generator,
    s_room: np.ndarray,
    cat: np.ndarray,
    n_main: np.ndarray,
    n_other: np.ndarray,
    n_new: np.ndarray,
    price_pos: np.ndarray,
    disc_plan: np.ndarray,
    rm: dict[str, np.ndarray],
    catalogue: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """SKUs of every session: distinct catalogue items in a price window, plus new launches."""
    n = len(s_room)
    rows_sess, rows_glob = [], []
    # a distinct sample from a price window of the catalogue: positions lo + (a + j * step) mod
    # width, with width prime, are distinct for j < width
    for counts, size_key, is_other in (
        (n_main, "catalogue_main", False),
        (n_other, "catalogue_other", True),
    ):
        size = rm[size_key][s_room]
        width = _next_prime(np.maximum(counts, np.round(0.45 * size)).astype(int))
        width = np.minimum(width, size)
        lo = np.round(price_pos * (size - width)).astype(int)
        step = 1 + (rng.random(n) * (width - 1)).astype(int)
        a = rng.integers(0, 1 << 30, n) % width
        sess = np.repeat(np.arange(n), counts)
        j = np.arange(len(sess)) - np.repeat(np.cumsum(counts) - counts, counts)
        local = lo[sess] + (a[sess] + j * step[sess]) % width[sess]
        base = catalogue["first"][s_room[sess]]
        if is_other:
            base = base + rm["catalogue_main"][s_room[sess]]
        rows_sess.append(sess)
        rows_glob.append(base + local)
    sess_old = np.concatenate(rows_sess)
    glob = np.concatenate(rows_glob)
    sess_new = np.repeat(np.arange(n), n_new)
    rows_new_j = np.arange(len(sess_new)) - np.repeat(np.cumsum(n_new) - n_new, n_new)
    new_cat = cat[sess_new]
    new_price = _CAT["price"][new_cat] * np.exp(rng.normal(0.2, 0.5, len(sess_new)))
    new_price = np.where(
        new_price >= 20, np.round(new_price / 10.0) * 10.0 - 1.0, np.round(new_price) + 0.9
    )
    sess = np.concatenate([sess_old, sess_new])
    category = np.concatenate([catalogue["category"][glob], new_cat])
    list_price = np.concatenate([catalogue["price"][glob], new_price])
    hero = np.concatenate([catalogue["hero"][glob], np.exp(rng.normal(0, 0.6, len(sess_new)))])
    is_new = np.concatenate([np.zeros(len(glob), bool), np.ones(len(sess_new), bool)])
    room_of = s_room[sess]
    d_k = np.clip(disc_plan[sess] + rng.normal(0, 0.06, len(sess)), 0.0, 0.85)
    live = np.maximum(0.9, np.round(list_price * (1 - d_k), 1))
    live = np.minimum(live, list_price)
    order = np.lexsort((np.arange(len(sess)), sess))
    # SKU ids "room-007-m12" (catalogue), "room-007-n00042-1" (new launch: session, number),
    # built by Arrow kernels: no Python string per product row
    old_names = _join(
        _as_arrow(np.where(catalogue["is_main"][glob], 0, 1), ["m", "x"]),
        pc.cast(pa.array(catalogue["local"][glob]), pa.large_string()),
    )
    new_names = _join(
        pc.utf8_lpad(pc.cast(pa.array(np.arange(n)[sess_new]), pa.large_string()), 5, "0"),
        pc.cast(pa.array(rows_new_j), pa.large_string()),
        prefix="n",
        sep="-",
    )
    prefix = [f"room-{i:03d}-" for i in range(len(rm["category"]))]
    names = pa.concat_arrays([old_names, new_names])
    sku = _join(_as_arrow(room_of, prefix), names).take(pa.array(order))
    return {
        "session": sess[order],
        "sku_id": sku,
        "category": category[order],
        "list_price": list_price[order],
        "live_price": live[order],
        "hero": hero[order],
        "is_new": is_new[order],
    }


# --- fans ----------------------------------------------------------------------------------


def _empty_events() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "fan_id": pd.Series(dtype="str"),
            "room_id": pd.Series(dtype="str"),
            "event_time": pd.Series(dtype=f"datetime64[ns, {DEFAULT_TZ}]"),
            "event_type": pd.Series(dtype="str"),
            "session_id": pd.Series(dtype="str"),
            "watch_seconds": pd.Series(dtype="float64"),
            "amount": pd.Series(dtype="float64"),
        }
    )


def _fan_events(
    rng: np.random.Generator,
    fans: int,
    days: int,
    rm: dict[str, np.ndarray],
    sess: dict[str, np.ndarray],
    session_id: np.ndarray,
    room_ids: np.ndarray,
    day0: pd.Timestamp,
) -> pd.DataFrame:
    """Fan event stream: fans follow 1-3 rooms, watch in engaged spells, churn and wake up.

    A fan's first spell starts when they join and lasts an exponential time (longer for
    engaged fans). After it the fan is dormant; a later fan-welfare or festival session of the
    room can wake them up for a shorter spell (at most two wake-ups). During a spell the fan
    watches a share of the room's sessions (more of the attractive ones, fewer as the spell
    ages) and comments, likes, shares, follows, orders (amount around the session's expected
    AOV) and sometimes refunds days later.
    """
    n_rooms = len(rm["category"])
    n_sess = len(session_id)
    if fans == 0 or n_sess == 0:
        return _empty_events()
    lam = np.exp(rng.normal(-0.3, 1.0, fans))  # engagement (heavy-tailed)
    beta = lam**0.7 * np.exp(rng.normal(0.0, 0.8, fans))  # buying propensity
    k = rng.choice([1, 2, 3], size=fans, p=[0.6, 0.3, 0.1])
    w = rm["followers0"] ** 0.7
    m_fan = np.repeat(np.arange(fans), k)
    m_room = rng.choice(n_rooms, size=len(m_fan), p=w / w.sum())
    member = np.unique(m_fan.astype(np.int64) * n_rooms + m_room)
    m_fan, m_room = member // n_rooms, member % n_rooms
    n_mem = len(member)
    join = np.where(rng.random(n_mem) < 0.35, 0.0, rng.uniform(0, days, n_mem))
    join = np.maximum(
        join,
        rm["start_day"][m_room]
        + np.where(rm["start_day"][m_room] > 0, rng.uniform(0, 30, n_mem), 0.0),
    )

    t_day = sess["start_sec"] / 86400.0
    by_room = np.lexsort((t_day, sess["room"]))
    span = days + 100.0
    skey = sess["room"][by_room] * span + t_day[by_room]
    wake = np.isin(sess["stype"][by_room], (1, 3))
    wkey, widx = skey[wake], by_room[wake]
    # a fan joins while watching a session of the room (the first one at or after joining)
    j_pos = np.minimum(np.searchsorted(skey, m_room * span + join), len(skey) - 1)
    j_sess = by_room[j_pos]
    joined = sess["room"][j_sess] == m_room
    joined &= t_day[j_sess] >= join
    join = np.where(joined, t_day[j_sess] - 1e-6, join)

    sp_member = [np.arange(n_mem)]
    sp_start = [join]
    sp_end = [join + rng.exponential(45.0 * lam[m_fan] ** 0.6)]
    cur, cur_end = sp_member[0], sp_end[0]
    for p_wake, mean_days in ((0.45, 25.0), (0.35, 20.0)):
        if len(wkey) == 0 or len(cur) == 0:
            break
        t_try = cur_end + rng.exponential(75.0, len(cur))
        pos = np.searchsorted(wkey, m_room[cur] * span + t_try)
        pos_c = np.minimum(pos, len(wkey) - 1)
        woke = (
            (pos < len(wkey))
            & (sess["room"][widx[pos_c]] == m_room[cur])
            & (rng.random(len(cur)) < np.clip(p_wake * lam[m_fan[cur]] ** 0.2, 0, 0.9))
        )
        begin = t_day[widx[pos_c]] - 1e-6
        end = begin + rng.exponential(mean_days * lam[m_fan[cur]] ** 0.5)
        cur, cur_end = cur[woke], end[woke]
        sp_member.append(cur)
        sp_start.append(begin[woke])
        sp_end.append(cur_end)
    spell_m = np.concatenate(sp_member)
    spell_room = m_room[spell_m]
    spell_fan = m_fan[spell_m]
    lo = np.searchsorted(skey, spell_room * span + np.concatenate(sp_start), side="left")
    hi = np.searchsorted(skey, spell_room * span + np.concatenate(sp_end), side="right")
    c = hi - lo
    p_watch = np.clip(0.15 * lam[spell_fan] ** 0.8, 0.01, 0.85)
    n_try = np.minimum(rng.poisson(c * p_watch * 1.5), 3 * c)
    rep = np.repeat(np.arange(len(c)), n_try)
    pos = lo[rep] + np.floor(c[rep] * rng.random(len(rep)) ** 1.4).astype(np.int64)
    s_idx = by_room[np.minimum(pos, len(by_room) - 1)]
    log_ev = np.log(sess["ev"])
    room_mean = np.bincount(sess["room"], log_ev, n_rooms) / np.maximum(
        np.bincount(sess["room"], minlength=n_rooms), 1
    )
    attract = np.exp(0.6 * (log_ev - room_mean[sess["room"]]))
    ok = rng.random(len(rep)) < np.clip(attract[s_idx] / 1.5, 0, 1)
    key = np.unique(
        np.concatenate(
            [
                spell_fan[rep][ok].astype(np.int64) * n_sess + s_idx[ok],
                m_fan[joined].astype(np.int64) * n_sess + j_sess[joined],
            ]
        )
    )
    w_fan, w_sess = key // n_sess, key % n_sess
    n_w = len(key)

    lam_w = lam[w_fan]
    dur = sess["dur_sec"][w_sess]
    watch = np.clip(3.0 * sess["dwell"][w_sess] * lam_w**0.35 * _noise(rng, 0.8, n_w), 5.0, dur)
    watch = np.round(watch)
    t0 = sess["start_sec"][w_sess] + rng.random(n_w) * (dur - watch)

    types, whos, times, secs, amounts = [], [], [], [], []

    def add(code: int, who: np.ndarray, at: np.ndarray, sec=None, amount=None) -> None:
        types.append(np.full(len(who), code, dtype=np.int8))
        whos.append(who)
        times.append(at)
        secs.append(np.full(len(who), np.nan) if sec is None else sec)
        amounts.append(np.full(len(who), np.nan) if amount is None else amount)

    code = {name: i for i, name in enumerate(EVENT_TYPES)}
    add(code["watch"], np.arange(n_w), t0, sec=watch)
    for name, rate, cap in (("comment", 0.25 * lam_w**0.6, 20), ("like", 0.5 * lam_w**0.5, 5)):
        cnt = np.minimum(rng.poisson(rate), cap)
        who = np.repeat(np.arange(n_w), cnt)
        add(code[name], who, t0[who] + rng.random(len(who)) * watch[who])
    share = np.flatnonzero(rng.random(n_w) < np.minimum(0.03 * lam_w**0.4, 0.5))
    add(code["share"], share, t0[share] + rng.random(len(share)) * watch[share])
    w_room = sess["room"][w_sess]
    _, first = np.unique(w_fan * n_rooms + w_room, return_index=True)
    follow = first[rng.random(len(first)) < 0.6]
    add(code["follow"], follow, t0[follow] + rng.random(len(follow)) * watch[follow])
    p_order = np.clip(beta[w_fan] * 0.05 * (sess["conv"][w_sess] / 0.015) ** 0.7, 0, 0.9)
    n_ord = (rng.random(n_w) < p_order).astype(int) + (rng.random(n_w) < 0.2 * p_order)
    buy = np.repeat(np.arange(n_w), n_ord)
    amount = np.maximum(0.01, np.round(sess["aov"][w_sess[buy]] * _noise(rng, 0.5, len(buy)), 2))
    t_buy = t0[buy] + rng.random(len(buy)) * watch[buy]
    add(code["order"], buy, t_buy, amount=amount)
    refund = rng.random(len(buy)) < _CAT["refund"][sess["category"][w_sess[buy]]]
    partial = np.where(rng.random(len(buy)) < 0.7, 1.0, rng.uniform(0.2, 0.9, len(buy)))
    add(
        code["refund"],
        buy[refund],
        t_buy[refund] + rng.uniform(0.5, 10.0, refund.sum()) * 86400.0,
        amount=np.maximum(0.01, np.round((amount * partial)[refund], 2)),
    )

    e_type = np.concatenate(types)
    e_watch = np.concatenate(whos)
    e_time = np.round(np.concatenate(times)).astype(np.int64)
    e_fan = w_fan[e_watch]
    e_sess = w_sess[e_watch]
    order = np.lexsort((e_type, e_fan, e_time))
    e_fan, e_sess, e_type, e_time = e_fan[order], e_sess[order], e_type[order], e_time[order]
    stamp = day0.to_datetime64().astype("datetime64[ns]") + e_time.astype("timedelta64[s]")
    width = max(6, len(str(fans - 1)))
    fan_names = np.char.add("fan-", np.char.zfill(np.arange(fans).astype(str), width))
    return pd.DataFrame(
        {
            "fan_id": _as_str(e_fan, fan_names),
            "room_id": _as_str(sess["room"][e_sess], room_ids),
            "event_time": pd.DatetimeIndex(stamp).tz_localize(DEFAULT_TZ),
            "event_type": _as_str(e_type, np.array(EVENT_TYPES)),
            "session_id": _as_str(e_sess, session_id),
            "watch_seconds": np.concatenate(secs)[order],
            "amount": np.concatenate(amounts)[order],
        }
    )


def summarize(ds: Dataset) -> dict[str, object]:
    """Headline figures of a dataset (what ``livecast simulate`` prints). Money in CNY."""
    s = ds.sessions
    out: dict[str, object] = {
        "rooms": int(s["room_id"].nunique()),
        "hosts": int(s["host_id"].nunique()),
        "sessions": len(s),
        "first session": str(s["start_time"].min().date()) if len(s) else "-",
        "last session": str(s["start_time"].max().date()) if len(s) else "-",
        "platforms": ", ".join(
            f"{k} {v}" for k, v in s.groupby("room_id")["platform"].first().value_counts().items()
        ),
        "festival_promo sessions": int((s["session_type"] == "festival_promo").sum()),
        "product rows": len(ds.session_products),
        "distinct SKUs": int(ds.session_products["sku_id"].nunique()),
        "total GMV (CNY)": float(s["gmv"].sum()),
        "median viewers": float(s["viewers"].median()),
        "median GMV (CNY)": float(s["gmv"].median()),
        "median orders": float(s["orders"].median()),
    }
    if ds.fan_events is not None:
        ev = ds.fan_events
        out["fans"] = int(ev["fan_id"].nunique())
        out["fan events"] = len(ev)
        counts = ev["event_type"].value_counts()
        for name in EVENT_TYPES:
            out[f"  {name} events"] = int(counts.get(name, 0))
    if ds.truth is not None:
        out["truth rows"] = len(ds.truth)
    return out
