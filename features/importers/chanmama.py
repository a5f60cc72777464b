"""Import a Chanmama (蝉妈妈) Douyin live-session export as a ``sessions`` table.

The layout is one row per live session with (English) headers such as ``Name_of_the_livestream``,
``Start_time``, ``Duration``, ``Views``, ``Total_sales_amount``; a few Chinese header names are
accepted as aliases (see :data:`COLUMN_ALIASES`). Headers are matched ignoring case, spaces and
underscores; column order does not matter and unknown columns are ignored. Several hosts may
share one file (the ``Name`` column tells them apart).

Parsing rules (all documented choices):

* ``Start_time`` is ``MM-DD HH:MM`` without a year. ``year`` is the year of each host's *first*
  row in the file. Walking each host's rows in file order, the direction of the export (newest
  first, as Chanmama lists them, or oldest first) is the majority direction of the steps; a
  step that jumps more than half a year *against* that direction crosses New Year, and the year
  rolls back (newest-first files) or forward (oldest-first files) from that row on. A cell that
  already carries a year (``2021-06-30 20:33``) is used as is. Times are Beijing time
  (Asia/Shanghai, Douyin's clock) and are converted to the ``tz`` argument.
* Durations (``Duration``, ``Average_length_of_stay``) are strings like ``13小时46分钟38秒``,
  ``46分钟38秒``, ``38秒``, ``2小时``, ``2分`` or ``H:MM:SS``.
* Percentages like ``3.40%`` become fractions (0.034); a bare number is read as a fraction
  already (what a spreadsheet stores for a percent cell).
* Counts and money accept thousands separators and the ``万`` / ``w`` (x 10,000) and ``亿``
  (x 100,000,000) suffixes. Blank cells are missing values; any other unparseable cell is an
  error (:class:`~features.contract.ContractError` listing row, column and value).
* ``Views`` (场观) -> ``viewers``; ``Peak_viewers`` -> ``peak_concurrent``; ``Total_sales_amount``
  -> ``gmv`` (CNY); ``Number_of_new_followers`` -> ``new_followers``; ``Average_length_of_stay``
  -> ``avg_dwell_seconds``; ``Duration`` -> ``actual_duration_min`` and, since the export has no
  plan, also ``planned_duration_min`` (missing when the duration is 0).
* ``orders`` is not in the export: it is derived as ``round(gmv / Per_customer_transaction)``
  when both are present and positive (0 when GMV is 0), else missing. Chanmama's 客单价 is GMV
  per *buyer*, so this treats one order per buyer; ``buyers`` is left missing.
* Host identity: ``Name`` gives ``host_id`` and ``room_id``, a readable slug (``Zi An`` ->
  ``zi-an``, ``舒畅`` -> ``舒畅``). Without a ``Name`` column, the ``host`` argument (default: the
  file name) names the single host. ``Online KOL`` and ``Occupation`` are kept as
  ``host_is_kol`` / ``host_occupation``.
* ``session_id`` = ``<room_id>-<YYYYMMDD>-<HHMM>`` (local start time): deterministic.
* ``session_type`` comes from the title keywords (:func:`infer_session_type`).
* Real exports come as they are, so before anything else (each step counted in the summary,
  no row dropped silently):

  - rows that are entirely blank are skipped;
  - rows repeated verbatim (every cell equal to an earlier row) are kept once;
  - **aborted restarts** are folded into the real broadcast. A host who restarts a stream
    leaves a row of a few seconds or minutes with no viewers and no sales, often at the same
    start minute as the real broadcast and sometimes under another stream name. A row with
    zero (or blank) views, GMV and units that lasted under :data:`ABORT_MAX_MIN` minutes is an
    aborted start; it is folded into the same host's broadcast (a row with viewers) that starts
    within :data:`FOLD_WINDOW_MIN` minutes after it, or that was already on air when it
    started. The broadcast keeps its own numbers and counts the folds in ``restarts_folded``.
    An aborted start with no broadcast to fold into is not a session either: it is dropped and
    its file row is listed in the summary (``aborted_rows``);
  - two real broadcasts of one host at the same start minute (two rooms) both stay: the later
    row in the file gets ``-2`` (``-3`` ...) after its ``session_id``;
  - a file with no rows (or no session left) is an error;
  - rows whose outcomes contradict each other (more orders than viewers...) are contract
    warnings listing the file rows (:func:`~features.contract.consistency_warnings`), errors
    with ``strict``. A wrong ``year`` shows up there: sessions after today with outcomes.

A CSV export's encoding is detected (UTF-8, UTF-8 with BOM, GB18030 / GBK) or given.

Extra (non-contract) columns kept for analysis: ``units_sold``, ``n_products``, ``likes``,
``gifts``, ``avg_online_viewers``, ``new_fan_club``, ``follower_conversion_rate``,
``sales_conversion_rate``, ``uv_value``, ``aov``, ``host_name``, ``host_is_kol``,
``host_occupation``, ``restarts_folded``. ``n_products`` (products listed in the session) is
also the contract's optional ``n_products`` column: the export has no product rows, and the
mix features read this count instead of going all-missing.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.contract import check_consistency, validate
from features.importers import ImportResult
from features.importers.generic import (
    check_timezone,
    drop_blank_rows,
    failure_table,
    missing_columns_error,
    raise_failures,
    read_export,
    require_rows,
)

SOURCE_TZ = "Asia/Shanghai"
"""Chanmama shows Douyin times on Beijing time."""

ROLL_DAYS = 183
"""A step against the export's direction longer than this (days) crosses New Year."""

ABORT_MAX_MIN = 15.0
"""A row without viewers, GMV and units that lasted less than this (minutes) is an aborted
start, not a session."""

FOLD_WINDOW_MIN = 60.0
"""An aborted start is folded into the host's broadcast that starts within this many minutes
after it (or that was on air when it started)."""

# canonical name -> accepted headers (matched after :func:`_norm`)
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "title": ("Name_of_the_livestream", "直播标题", "直播间标题", "标题"),
    "start": ("Start_time", "开播时间", "开始时间"),
    "peak": ("Peak_viewers", "人气峰值", "在线峰值"),
    "gifts": ("Gifts_from_viewers", "音浪", "音浪收入"),
    "n_products": ("Number_of_products", "商品数", "上架商品数"),
    "units": ("Number_of_goods_sold", "销量", "商品销量"),
    "gmv": ("Total_sales_amount", "销售额", "直播销售额"),
    "duration": ("Duration", "直播时长"),
    "views": ("Views", "观看人次", "场观"),
    "avg_online": ("Average_number_of_online_viewers", "平均在线", "平均在线人数"),
    "likes": ("Number_of_likes", "点赞数", "本场点赞"),
    "new_followers": ("Number_of_new_followers", "涨粉", "涨粉数", "新增粉丝"),
    "follower_rate": ("Fan Conversion Ratio", "转粉率"),
    "new_fan_club": ("Number_of_new_fans", "新增粉丝团", "粉丝团"),
    "aov": ("Per_customer_transaction", "客单价"),
    "orders": ("Number_of_orders", "Orders", "订单数"),
    "uv": ("UV", "UV价值"),
    "sales_rate": ("Sales_conversion_value_ratio", "转化率", "销售转化率"),
    "dwell": ("Average_length_of_stay", "平均停留时长", "人均停留时长"),
    "host": ("Name", "达人", "主播", "达人昵称"),
    "kol": ("Online KOL", "Online_KOL"),
    "occupation": ("Occupation",),
}
REQUIRED: tuple[str, ...] = ("start", "duration", "views")

# Title keywords per session type, checked in this order (first match wins).
FESTIVAL_WORDS = (
    r"(?<!\d)618(?!\d)", r"6\.18", "双11", "双十一", r"(?<!\d)1111(?!\d)", r"11\.11", "双12",
    "双十二", r"12\.12", r"(?<!\d)818(?!\d)", r"8\.18", "好物节", "大促", "年货节", "年中",
    "周年庆", "女神节", r"(?<!\d)38节",
)  # fmt: skip
CLEARANCE_WORDS = ("清仓", "甩卖", "尾货", "断码")
NEW_LAUNCH_WORDS = ("新品", "首发", "上新")
BRAND_WORDS = ("品牌", "联名", "旗舰")
FAN_WELFARE_WORDS = ("福利", "宠粉", "粉丝节", "感恩")
_FESTIVAL_RE = re.compile("|".join(FESTIVAL_WORDS), re.IGNORECASE)
_LATIN_BRAND_RE = re.compile(r"[A-Za-z][A-Za-z&'.]+")


def infer_session_type(title: object) -> str:
    """The contract ``session_type`` of a session from its title keywords.

    First match wins, in this order:

    1. ``festival_promo``: 618 / 6.18, 双11 / 双十一 / 11.11, 双12 / 12.12, 818 / 8.18, 好物节,
       大促, 年货节, 年中, 周年庆, 女神节, 38节 (a digit keyword never matches inside a longer
       number);
    2. ``clearance``: 清仓, 甩卖, 尾货, 断码;
    3. ``new_launch``: 新品, 首发, 上新;
    4. ``brand_collab``: 品牌, 联名, 旗舰; or 专场 together with a brand (a Latin-script name of
       two or more letters such as ``GUCCI``, or 大牌);
    5. ``fan_welfare``: 福利, 宠粉, 粉丝节, 感恩;
    6. ``daily`` otherwise (also for a missing title).
    """
    if title is None or (isinstance(title, float) and np.isnan(title)):
        return "daily"
    text = unicodedata.normalize("NFKC", str(title))
    if _FESTIVAL_RE.search(text):
        return "festival_promo"
    if any(w in text for w in CLEARANCE_WORDS):
        return "clearance"
    if any(w in text for w in NEW_LAUNCH_WORDS):
        return "new_launch"
    if any(w in text for w in BRAND_WORDS):
        return "brand_collab"
    if "专场" in text and ("大牌" in text or _LATIN_BRAND_RE.search(text)):
        return "brand_collab"
    if any(w in text for w in FAN_WELFARE_WORDS):
        return "fan_welfare"
    return "daily"


def host_slug(name: str) -> str:
    """A readable, stable id from a host name: NFKC, lower case, non-word runs -> ``-``."""
    text = unicodedata.normalize("NFKC", str(name)).strip().lower()
    return re.sub(r"[\W_]+", "-", text).strip("-")


# --------------------------------------------------------------------------- cell parsers

_DURATION_RE = re.compile(
    r"^(?:(?P<h>\d+(?:\.\d+)?)\s*(?:小时|时|h))?\s*"
    r"(?:(?P<m>\d+(?:\.\d+)?)\s*(?:分钟|分|min|m))?\s*"
    r"(?:(?P<s>\d+(?:\.\d+)?)\s*(?:秒钟|秒|s))?$",
    re.IGNORECASE,
)
_CLOCK_RE = re.compile(r"^(?:(?P<h>\d+):)?(?P<m>\d{1,2}):(?P<s>\d{1,2}(?:\.\d+)?)$")
_NUMBER_RE = re.compile(r"^(?P<num>[-+]?\d+(?:\.\d+)?)\s*(?P<unit>万|w|亿)?$", re.IGNORECASE)
_UNIT = {"万": 1e4, "w": 1e4, "亿": 1e8}
_MD_RE = re.compile(
    r"^(?P<mo>\d{1,2})[-/.月](?P<d>\d{1,2})日?\s+(?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2}))?$"
)


def _text(value: object) -> str | None:
    """Cell text as written, stripped; ``None`` for a blank cell."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    text = str(value).strip()
    return text or None


def _clean(value: object) -> str | None:
    """Cell text for parsing (NFKC: full-width digits and signs folded), ``None`` if blank."""
    text = _text(value)
    return unicodedata.normalize("NFKC", text).strip() or None if text is not None else None


def parse_duration_seconds(value: object) -> float | None:
    """Seconds in a duration cell (``13小时46分钟38秒``, ``2分``, ``3:16:47``); ``None`` if blank.

    Raises ``ValueError`` for text that is not a duration (a bare number is ambiguous: error).
    """
    text = _clean(value)
    if text is None:
        return None
    m = _DURATION_RE.match(text)
    if m and any(m.group(g) for g in ("h", "m", "s")):
        h, mi, s = (float(m.group(g) or 0) for g in ("h", "m", "s"))
        return h * 3600 + mi * 60 + s
    m = _CLOCK_RE.match(text)
    if m:
        return float(m.group("h") or 0) * 3600 + float(m.group("m")) * 60 + float(m.group("s"))
    raise ValueError(f"not a duration: {text!r}")


def parse_number(value: object) -> float | None:
    """A count or amount (``1,234``, ``1.2万``, ``3.5亿``); ``None`` if blank, else ValueError."""
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        return None if np.isnan(value) else float(value)
    text = _clean(value)
    if text is None:
        return None
    text = text.replace(",", "").replace("¥", "").replace("￥", "").strip()
    m = _NUMBER_RE.match(text)
    if not m:
        raise ValueError(f"not a number: {text!r}")
    return float(m.group("num")) * _UNIT.get((m.group("unit") or "").lower(), 1.0)


def parse_percent(value: object) -> float | None:
    """A rate as a fraction: ``3.40%`` -> 0.034; a bare number is already a fraction."""
    text = _clean(value)
    if text is None:
        return None
    if text.endswith("%"):
        number = parse_number(text[:-1])
        return None if number is None else number / 100.0
    return parse_number(text)


def parse_bool(value: object) -> bool | None:
    """``T`` / ``F`` style flags (also 是 / 否, yes / no, 1 / 0)."""
    text = _clean(value)
    if text is None:
        return None
    low = text.lower()
    if low in {"t", "true", "y", "yes", "1", "是"}:
        return True
    if low in {"f", "false", "n", "no", "0", "否"}:
        return False
    raise ValueError(f"not a yes/no flag: {text!r}")


# --------------------------------------------------------------------------- frame logic


def _norm(name: object) -> str:
    return re.sub(r"[\s_]+", "", unicodedata.normalize("NFKC", str(name))).lower()


def resolve_columns(
    available: list[str], *, source: str = "export", need_host: bool = False
) -> dict[str, str]:
    """Canonical name -> the file's header, for the headers found; missing required -> error."""
    by_norm = {_norm(c): c for c in available}
    found: dict[str, str] = {}
    for canon, aliases in COLUMN_ALIASES.items():
        for alias in aliases:
            if _norm(alias) in by_norm:
                found[canon] = by_norm[_norm(alias)]
                break
    required = [*REQUIRED, "host"] if need_host else list(REQUIRED)
    missing = [COLUMN_ALIASES[c][0] for c in required if c not in found]
    if missing:
        raise missing_columns_error(source, missing, available, what="required column")
    return found


def _parse_column(
    raw: pd.DataFrame,
    header: str | None,
    parser: Any,
    check: str,
    failures: list[tuple[object, str, str, object]],
) -> pd.Series:
    """Apply a cell parser to one column; unparseable cells are recorded as failures."""
    if header is None:
        return pd.Series(np.nan, index=raw.index, dtype=float)
    out: dict[object, Any] = {}
    for row, value in raw[header].items():
        try:
            parsed = parser(value)
        except (ValueError, TypeError):
            failures.append((row, header, check, value))
            parsed = None
        out[row] = parsed
    return pd.Series(out, index=raw.index, dtype=object)


def _month_day_parts(value: object) -> tuple[int, int, int, int, int] | pd.Timestamp | None:
    """(month, day, hour, minute, second) of ``MM-DD HH:MM``, a Timestamp if the cell has a
    year, ``None`` if blank; ValueError otherwise."""
    if isinstance(value, pd.Timestamp | np.datetime64):
        return pd.Timestamp(value)
    text = _clean(value)
    if text is None:
        return None
    m = _MD_RE.match(text)
    if m:
        parts = (m.group("mo"), m.group("d"), m.group("H"), m.group("M"), m.group("S") or 0)
        mo, d, hh, mi, ss = (int(p) for p in parts)
        pd.Timestamp(2000, mo, d, hh, mi, ss)  # validates the fields (2000 is a leap year)
        return (mo, d, hh, mi, ss)
    if re.match(r"^\d{4}[-/.年]", text):
        return pd.Timestamp(
            pd.to_datetime(text.replace("年", "-").replace("月", "-").replace("日", ""))
        )
    raise ValueError(f"not a start time: {text!r}")


def _assign_years(
    parts: pd.Series, hosts: pd.Series, year: int
) -> tuple[pd.Series, int, list[tuple[object, str]]]:
    """Naive start timestamps with years assigned per host (see the module docstring).

    Returns the timestamps, the number of New-Year rolls and (row, message) for impossible
    dates (29 February in a non-leap year)."""
    out = pd.Series(pd.NaT, index=parts.index, dtype="datetime64[us]")
    rolls = 0
    bad: list[tuple[object, str]] = []
    for _, rows in parts.groupby(hosts, sort=False):
        rows = rows.dropna()
        md = rows[rows.map(lambda p: isinstance(p, tuple))]
        for row, p in rows.items():
            if isinstance(p, pd.Timestamp):
                out.loc[row] = p.tz_localize(None) if p.tzinfo else p
        if md.empty:
            continue
        # Position in a leap reference year, in days, to find the direction and the wraps.
        ref = (
            np.array(
                [(pd.Timestamp(2000, *p) - pd.Timestamp(2000, 1, 1)).total_seconds() for p in md]
            )
            / 86400.0
        )
        steps = np.diff(ref)
        small = steps[np.abs(steps) <= ROLL_DAYS]
        descending = bool((small < 0).sum() > (small > 0).sum())
        offsets = np.zeros(len(md), dtype=int)
        current = 0
        for i, step in enumerate(steps, start=1):
            if descending and step > ROLL_DAYS:
                current -= 1
                rolls += 1
            elif not descending and step < -ROLL_DAYS:
                current += 1
                rolls += 1
            offsets[i] = current
        for (row, p), off in zip(md.items(), offsets, strict=True):
            try:
                out.loc[row] = pd.Timestamp(year + int(off), *p)
            except ValueError:
                bad.append((row, f"{year + int(off)}-{p[0]:02d}-{p[1]:02d} is not a date"))
    return out, rolls, bad


def parse_chanmama(
    raw: pd.DataFrame,
    *,
    year: int,
    tz: str,
    host: str | None = None,
    source: str = "export",
    strict: bool = False,
) -> ImportResult:
    """Turn a raw Chanmama export frame (index = file row numbers) into a ``sessions`` table.

    Pure (no I/O); see the module docstring for the rules. Raises ``ValueError`` for missing
    required columns or no rows, :class:`~features.contract.ContractError` listing
    unparseable cells (and, with ``strict``, rows whose outcomes contradict each other).
    """
    check_timezone(tz)
    if not 1900 <= year <= 2200:
        raise ValueError(f"year {year} is out of range")
    encoding = raw.attrs.get("encoding", "-")
    rows_read = len(raw)
    raw, blank = drop_blank_rows(raw)
    require_rows(raw, rows_read, source)
    repeated = raw.astype("str").duplicated(keep="first").to_numpy()
    raw = raw.loc[~repeated]
    cols = resolve_columns([str(c) for c in raw.columns], source=source, need_host=host is None)
    failures: list[tuple[object, str, str, object]] = []

    def col(canon: str, parser: Any, check: str) -> pd.Series:
        return _parse_column(raw, cols.get(canon), parser, check, failures)

    def num(canon: str) -> pd.Series:
        return col(canon, parse_number, "number").astype(float)

    duration_s = col("duration", parse_duration_seconds, "duration like 3小时16分钟47秒")
    dwell_s = col("dwell", parse_duration_seconds, "duration like 2分26秒")
    follower_rate = col("follower_rate", parse_percent, "percentage like 3.40%")
    sales_rate = col("sales_rate", parse_percent, "percentage like 3.40%")
    kol = col("kol", parse_bool, "T/F flag")
    parts = col("start", _month_day_parts, "start time like 06-30 20:33")
    views, peak, gmv, aov = num("views"), num("peak"), num("gmv"), num("aov")
    units, n_products, likes, gifts = num("units"), num("n_products"), num("likes"), num("gifts")
    avg_online, new_followers, new_fan_club = (
        num("avg_online"),
        num("new_followers"),
        num("new_fan_club"),
    )
    orders_given, uv = num("orders"), num("uv")

    if host is not None:
        host_name = pd.Series(host, index=raw.index, dtype=object)
    else:
        host_name = raw[cols["host"]].map(_text)
    for row in raw.index[host_name.isna()]:
        failures.append((row, cols.get("host", "Name"), "host name is required", None))
    for row in raw.index[raw[cols["start"]].map(_text).isna()]:
        failures.append((row, cols["start"], "start time is required", None))
    slugs = host_name.map(lambda n: host_slug(n) if n is not None else None)
    for row in raw.index[host_name.notna() & slugs.eq("")]:
        failures.append((row, cols.get("host", "Name"), "host name has no letters", host_name[row]))
    raise_failures("sessions", failure_table(failures), source)

    naive, rolls, bad_dates = _assign_years(parts, slugs, year)
    raise_failures(
        "sessions",
        failure_table((r, cols["start"], msg, raw.at[r, cols["start"]]) for r, msg in bad_dates),
        source,
    )
    start = naive.dt.tz_localize(SOURCE_TZ, ambiguous="NaT", nonexistent="NaT").dt.tz_convert(tz)
    local = naive.dt.strftime("%Y%m%d-%H%M")

    minutes = duration_s.astype(float) / 60.0
    has_orders = orders_given.notna()
    derivable = gmv.notna() & aov.notna() & (aov > 0)
    derived = np.where(gmv.fillna(0) > 0, np.round(gmv / aov.where(aov > 0)), 0.0)
    orders = orders_given.where(has_orders, pd.Series(derived, index=raw.index).where(derivable))
    orders = orders.where(~(gmv.eq(0) & orders.isna()), 0.0)

    title = raw[cols["title"]].map(_text) if "title" in cols else pd.Series(None, index=raw.index)
    sessions = pd.DataFrame(
        {
            "session_id": slugs + "-" + local,
            "room_id": slugs,
            "platform": "douyin",
            "host_id": slugs,
            "start_time": start,
            "planned_duration_min": minutes.where(minutes > 0),
            "session_type": title.map(infer_session_type),
            "title": title.astype("str"),
            "actual_duration_min": minutes,
            "viewers": views,
            "peak_concurrent": peak,
            "gmv": gmv,
            "orders": orders,
            "buyers": np.nan,
            "avg_dwell_seconds": dwell_s.astype(float),
            "new_followers": new_followers,
            # extra columns (not in the contract; kept for analysis)
            "units_sold": units,
            "n_products": n_products,
            "likes": likes,
            "gifts": gifts,
            "avg_online_viewers": avg_online,
            "new_fan_club": new_fan_club,
            "follower_conversion_rate": follower_rate.astype(float),
            "sales_conversion_rate": sales_rate.astype(float),
            "uv_value": uv,
            "aov": aov,
            "host_name": host_name.astype("str"),
            "host_is_kol": kol.astype("boolean") if "kol" in cols else pd.NA,
            "host_occupation": (
                raw[cols["occupation"]].map(_text).astype("str") if "occupation" in cols else None
            ),
            "restarts_folded": 0,
        },
        index=raw.index,
    )
    sessions, folds = fold_aborted_restarts(sessions)
    if sessions.empty:
        raise ValueError(
            f"{source}: no sessions: every row is an aborted start (no viewers, GMV or units, "
            f"under {ABORT_MAX_MIN:g} minutes; rows {_row_list(folds.dropped_rows)})"
        )
    sessions, renamed = _number_same_start(sessions)
    valid = validate(sessions, "sessions", source=source, tz=tz)
    warnings = check_consistency(valid, "sessions", source=source, strict=strict)
    valid = valid.sort_values(["room_id", "start_time"], kind="stable").reset_index(drop=True)
    summary: dict[str, Any] = {
        "rows_read": rows_read,
        "empty_rows_skipped": blank,
        "verbatim_repeats_dropped": int(repeated.sum()),
        "restarts_folded": folds.folded,
        "aborted_starts_dropped": len(folds.dropped_rows),
        "aborted_rows": _row_list(folds.dropped_rows),
        "same_start_renumbered": renamed,
        "sessions": len(valid),
        "hosts": int(valid["host_id"].nunique()),
        "first_start": str(valid["start_time"].min()) if len(valid) else "-",
        "last_start": str(valid["start_time"].max()) if len(valid) else "-",
        "year_rolls": rolls,
        "gmv_missing": int(valid["gmv"].isna().sum()),
        "orders_derived_from_aov": int((~has_orders & derivable).sum()),
        "total_gmv": float(valid["gmv"].sum()),
        "session_types": ", ".join(
            f"{k}={v}" for k, v in valid["session_type"].value_counts().items()
        ),
        "contract_warnings": len(warnings),
        "encoding": encoding,
    }
    return ImportResult(valid, summary, warnings)


@dataclass(frozen=True)
class FoldResult:
    """What :func:`fold_aborted_restarts` did: restarts folded into a broadcast, and the file
    rows of aborted starts that had no broadcast to fold into (dropped)."""

    folded: int
    dropped_rows: list[object]


def aborted_mask(sessions: pd.DataFrame) -> pd.Series:
    """True for aborted starts: no viewers, no GMV, no units (zero or blank), shorter than
    :data:`ABORT_MAX_MIN` minutes."""
    nothing = pd.Series(True, index=sessions.index)
    for col in ("viewers", "gmv", "units_sold"):
        if col in sessions.columns:
            nothing &= sessions[col].astype(float).fillna(0.0).eq(0.0)
    short = sessions["actual_duration_min"].astype(float).fillna(0.0) < ABORT_MAX_MIN
    return nothing & short


def fold_aborted_restarts(sessions: pd.DataFrame) -> tuple[pd.DataFrame, FoldResult]:
    """Fold each aborted start into its host's real broadcast (see the module docstring).

    ``sessions`` is the parsed frame (index = file rows) with ``host_id``, ``start_time``,
    ``actual_duration_min``, ``viewers``, ``gmv`` and ``units_sold``; the result has no aborted
    rows, and each broadcast's ``restarts_folded`` counts the rows folded into it. Pure.
    """
    aborted = aborted_mask(sessions)
    out = sessions.loc[~aborted].copy()
    if "restarts_folded" not in out.columns:
        out["restarts_folded"] = 0
    real = out[out["viewers"].astype(float).fillna(0.0) > 0]
    folded, dropped = 0, []
    window = pd.Timedelta(minutes=FOLD_WINDOW_MIN)
    for row, s in sessions.loc[aborted].iterrows():
        same = real[real["host_id"] == s["host_id"]]
        starts = same["start_time"]
        ends = starts + pd.to_timedelta(same["actual_duration_min"].fillna(0.0), unit="min")
        after = (starts >= s["start_time"]) & (starts <= s["start_time"] + window)
        on_air = (starts <= s["start_time"]) & (ends >= s["start_time"])
        hits = same[after | on_air]
        if len(hits) == 0:
            dropped.append(row)
            continue
        gap = (hits["start_time"] - s["start_time"]).abs()
        target = gap.idxmin()
        out.loc[target, "restarts_folded"] += 1
        folded += 1
    return out, FoldResult(folded, dropped)


def _number_same_start(sessions: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Give the second (third ...) broadcast of a host at one start minute ``-2`` (``-3``)
    after its ``session_id``, in file order; returns the frame and how many were renamed."""
    ids = sessions["session_id"]
    rank = ids.groupby(ids, sort=False).cumcount()
    out = sessions.copy()
    out["session_id"] = ids.where(rank == 0, ids + "-" + (rank + 1).astype(str))
    return out, int((rank > 0).sum())


def _row_list(rows: list[object], limit: int = 20) -> str:
    """File rows as a short text for the summary (``-`` when none)."""
    if not rows:
        return "-"
    text = ", ".join(str(r) for r in rows[:limit])
    return text + (f" (+{len(rows) - limit} more)" if len(rows) > limit else "")


def import_chanmama(
    path: str | Path,
    *,
    year: int,
    tz: str,
    host: str | None = None,
    encoding: str | None = None,
    strict: bool = False,
) -> ImportResult:
    """Read a Chanmama Douyin session export (.xlsx / .csv / .parquet) as ``sessions``.

    ``year`` is the year of each host's first listed session (the export omits years);
    ``tz`` the output timezone. ``host`` names the host when the file has no ``Name`` column
    (default: the file name without extension). ``encoding`` is a CSV's encoding (detected
    when ``None``); ``strict`` turns contract warnings into errors.
    """
    path = Path(path)
    raw = read_export(path, all_text=True, encoding=encoding)
    has_name = any(_norm(c) in {_norm(a) for a in COLUMN_ALIASES["host"]} for c in raw.columns)
    if not has_name and host is None:
        host = path.stem
    return parse_chanmama(
        raw,
        year=year,
        tz=tz,
        host=host if not has_name else None,
        source=str(path),
        strict=strict,
    )
