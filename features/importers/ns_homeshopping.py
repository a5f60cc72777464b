"""Import NS Home Shopping 2019 TV broadcasts as ``sessions`` and ``session_products``.

The performance file (UTF-8 CSV) has one row per broadcast slot and product:

* ``방송일시`` slot start (Korean local time), ``노출(분)`` minutes on air (0 on the secondary
  products of a slot: the slot's minutes are those of its first row), ``마더코드`` show family
  code, ``상품코드`` product code, ``상품명`` product name, ``상품군`` category (11 classes),
  ``판매단가`` unit price (KRW), ``취급액`` sales (KRW).

Rules (documented choices):

* A slot's family is the ``마더코드`` of its first row (the one carrying the minutes); a few
  slots also sell a second family, whose products stay in the same show.
* A show (session) is a run of consecutive slots of the same family; a pause of more than
  :data:`MAX_GAP_MIN` minutes between one slot's end and the next slot's start also starts a
  new show (the same family aired again later). ``room_id`` = ``host_id`` = the family code (a
  recurring show is a "room"); ``session_id`` = ``ns-<family>-<YYYYMMDD>-<HHMM>``.
* ``planned_duration_min`` = ``actual_duration_min`` = the show's minutes on air.
* ``gmv`` = sum of sales; ``orders`` = round(sum of sales / unit price); ``title`` = the
  show's product names joined with `` / `` (they carry the ``일시불`` lump-sum and ``무이자``
  interest-free-instalment offers; promo columns are left missing), ``platform`` = ``other``,
  ``session_type`` = ``daily``.
* ``viewers`` from the minute-level household rating file (``2019_rating.csv`` beside the
  performance file, or ``rating=``): the mean rating (%) over the show's minutes x
  :data:`TV_HOUSEHOLDS` / 100, i.e. the average number of households tuned in. The rating file's
  rows run from 02:00 to 01:59 (a broadcast day): times before 02:00 belong to the next
  calendar day. Without the rating file, or for minutes it lacks, viewers are missing.
* ``session_products``: one row per (show, product code); ``list_price`` = ``live_price`` =
  unit price (no list price in the data), ``units_sold`` = round(sum of sales / price),
  ``gmv`` = sum of sales, categories mapped by :data:`CATEGORY_MAP` (unknown -> ``other``),
  ``is_new_launch`` = False (not in the data).
* Rows with zero or missing sales are unsold products: kept with GMV 0. Rows with a missing or
  non-positive price cannot give units and are dropped, counted in the summary; rows with an
  unparseable slot time or family code are errors listing the rows, and so is a file with no
  rows.
* Shows and products whose values contradict each other (more orders than viewers...) are
  contract warnings naming the first file row of the show / product
  (:func:`~features.contract.consistency_warnings`), errors with ``strict``.
* The CSV files' encoding is detected (UTF-8, UTF-8 with BOM, GB18030) or given.

Times are read as Asia/Seoul and expressed in ``tz`` (default Asia/Seoul; the contract
accepts any zone, loaders convert to the project zone).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.contract import check_consistency, validate
from features.importers import DatasetImport
from features.importers.generic import (
    check_timezone,
    decode_text,
    drop_blank_rows,
    failure_table,
    missing_columns_error,
    raise_failures,
    read_export,
    require_rows,
)
from features.io import Dataset

SOURCE_TZ = "Asia/Seoul"
TV_HOUSEHOLDS = 10_000_000
"""Korean TV households used to turn a household rating (%) into viewers (an approximation:
about 20 million households, roughly half reachable through pay-TV channel line-ups)."""

MAX_GAP_MIN = 30
"""A pause longer than this (minutes) between two slots of the same family starts a new show."""

BROADCAST_DAY_START_HOUR = 2
"""The rating file's day starts at 02:00; earlier rows belong to the next calendar day."""

COL_TIME, COL_MIN, COL_MOTHER, COL_SKU = "방송일시", "노출(분)", "마더코드", "상품코드"
COL_NAME, COL_CAT, COL_PRICE, COL_SALES = "상품명", "상품군", "판매단가", "취급액"
COLUMNS = (COL_TIME, COL_MIN, COL_MOTHER, COL_SKU, COL_NAME, COL_CAT, COL_PRICE, COL_SALES)

CATEGORY_MAP: dict[str, str] = {
    "의류": "apparel",
    "속옷": "apparel",
    "주방": "home",
    "농수축": "food",
    "이미용": "beauty",
    "가전": "electronics",
    "생활용품": "home",
    "건강기능": "health",
    "잡화": "accessories",
    "가구": "furniture",
    "침구": "home",
}
"""Korean product group -> contract category: clothing, underwear, kitchen, farm / sea food,
beauty, appliances, household goods, health supplements, accessories, furniture, bedding."""


def _ids(values: pd.Series) -> pd.Series:
    """Codes as text without a trailing ``.0``."""
    num = pd.to_numeric(values, errors="coerce")
    whole = num.notna() & (num % 1 == 0)
    text = values.astype("str").str.strip()
    return text.where(~whole, num.where(whole).astype("Int64").astype("str"))


def read_rating(path: str | Path, encoding: str | None = None) -> pd.Series:
    """The minute-level household rating (%) as a Series indexed by naive local minute.

    ``encoding`` is the file's encoding, detected when ``None``."""
    text, _ = decode_text(path, encoding)
    return rating_series(pd.read_csv(io.StringIO(text)))


def rating_series(wide: pd.DataFrame) -> pd.Series:
    """Ratings in the file's wide form (first column ``H:MM`` time of day, one column per date
    ``YYYY-MM-DD``) -> a Series of rating (%) indexed by naive local minute, sorted.

    Rows before 02:00 belong to the calendar day after the column's date (broadcast day).
    Unparseable dates, times or ratings are left out (those minutes count as unknown)."""
    clock = wide.iloc[:, 0].astype("str").str.strip().str.split(":", n=1, expand=True)
    hour = pd.to_numeric(clock[0], errors="coerce").to_numpy(float)
    minute = pd.to_numeric(clock[1], errors="coerce").to_numpy(float)
    offset_min = hour * 60 + minute + np.where(hour < BROADCAST_DAY_START_HOUR, 24 * 60, 0)
    days = pd.to_datetime(pd.Series(wide.columns[1:]), format="%Y-%m-%d", errors="coerce")
    day_min = (days - pd.Timestamp("1970-01-01")).dt.total_seconds().to_numpy(float) / 60.0
    values = wide.iloc[:, 1:].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    stamp = offset_min[:, None] + day_min[None, :]
    ok = np.isfinite(stamp) & np.isfinite(values)
    index = pd.to_datetime(stamp[ok].astype(np.int64), unit="m")
    out = pd.Series(values[ok], index=index, name="rating")
    return out[~out.index.duplicated()].sort_index()


def mean_rating(rating: pd.Series, start: pd.Series, minutes: pd.Series) -> np.ndarray:
    """Mean rating (%) over ``[start, start + minutes)`` for each show; NaN when any minute of
    the show is absent from ``rating``. ``start`` is naive local time."""
    out = np.full(len(start), np.nan)
    if rating.empty:
        return out
    first = rating.index[0]
    step = pd.Timedelta(minutes=1)
    n = int((rating.index[-1] - first) / step) + 1
    grid = np.full(n, np.nan)
    pos = ((rating.index - first) / step).astype(int)
    grid[pos] = rating.to_numpy()
    known = np.concatenate([[0], np.cumsum(~np.isnan(grid))])
    csum = np.concatenate([[0.0], np.cumsum(np.nan_to_num(grid))])
    begin = ((pd.DatetimeIndex(start) - first) / step).to_numpy()
    length = minutes.to_numpy(float)
    lo = np.floor(begin).astype(int)
    hi = lo + np.round(length).astype(int)
    ok = (lo >= 0) & (hi <= n) & (hi > lo)
    lo_ok, hi_ok = lo[ok], hi[ok]
    full = (known[hi_ok] - known[lo_ok]) == (hi_ok - lo_ok)
    means = (csum[hi_ok] - csum[lo_ok]) / (hi_ok - lo_ok)
    out[np.flatnonzero(ok)] = np.where(full, means, np.nan)
    return out


def _join_names(rows: pd.DataFrame) -> pd.Series:
    """Product names per show joined with `` / `` (rows sorted by show, first-seen order)."""
    shows = rows["show"].to_numpy()
    names = rows["name"].to_numpy(dtype=object)
    cuts = np.flatnonzero(np.diff(shows)) + 1
    keys = shows[np.concatenate([[0], cuts])] if len(shows) else shows
    return pd.Series(
        [" / ".join(part) for part in np.split(names, cuts)] if len(shows) else [],
        index=keys,
        name="title",
        dtype=object,
    )


def build_ns_dataset(
    raw: pd.DataFrame,
    *,
    rating: pd.Series | None = None,
    tz: str = SOURCE_TZ,
    source: str = "export",
    strict: bool = False,
) -> DatasetImport:
    """Shows and their products from the raw performance frame (index = file row numbers).

    Pure; see the module docstring for the rules. Money in KRW, durations in minutes. The
    result unpacks as ``dataset, summary``; its ``warnings`` hold each table's contract
    warnings (with ``strict``, the first table with any raises
    :class:`~features.contract.ContractError`).
    """
    check_timezone(tz)
    missing = [c for c in COLUMNS if c not in raw.columns]
    if missing:
        raise missing_columns_error(source, missing, raw.columns, what="required column")
    encoding = raw.attrs.get("encoding", "-")
    rows_read = len(raw)
    raw, blank = drop_blank_rows(raw)
    require_rows(raw, rows_read, source)
    start = pd.to_datetime(
        raw[COL_TIME].astype("str").str.strip(), errors="coerce", format="%Y-%m-%d %H:%M"
    )
    mother = _ids(raw[COL_MOTHER])
    sku = _ids(raw[COL_SKU])
    price = pd.to_numeric(raw[COL_PRICE], errors="coerce").astype(float)
    sales = pd.to_numeric(raw[COL_SALES], errors="coerce").astype(float)
    minutes = pd.to_numeric(raw[COL_MIN], errors="coerce").astype(float)
    records = [
        (r, COL_TIME, "time like 2019-01-01 6:00", raw.at[r, COL_TIME])
        for r in raw.index[start.isna()]
    ]
    records += [
        (r, COL_MOTHER, "family code", raw.at[r, COL_MOTHER])
        for r in raw.index[mother.isna() | mother.eq("")]
    ]
    records += [
        (r, COL_SKU, "product code", raw.at[r, COL_SKU]) for r in raw.index[sku.isna() | sku.eq("")]
    ]
    bad_sales = (
        sales.isna() & raw[COL_SALES].notna() & raw[COL_SALES].astype("str").str.strip().ne("")
    )
    records += [(r, COL_SALES, "number", raw.at[r, COL_SALES]) for r in raw.index[bad_sales]]
    raise_failures("session_products", failure_table(records), source)

    df = pd.DataFrame(
        {
            "start": start,
            "minutes": minutes,
            "mother": mother,
            "sku": sku,
            "name": raw[COL_NAME].astype("str").str.strip(),
            "group": raw[COL_CAT].astype("str").str.strip(),
            "price": price,
            "sales": sales.fillna(0.0),
            "row": raw.index,
        }
    )
    unsold = int((df["sales"] <= 0).sum())
    # Slots: rows sharing a start time; the first row carries minutes and the family.
    df = df.sort_values(["start", "row"], kind="stable").reset_index(drop=True)
    slot_first = ~df["start"].duplicated()
    slot_minutes = df["minutes"].where(slot_first).ffill()
    slot_minutes = slot_minutes.where(slot_minutes > 0)
    slots = df.loc[slot_first, ["start", "mother"]].assign(minutes=slot_minutes[slot_first])
    records = [
        (
            int(df.at[i, "row"]),
            COL_MIN,
            "minutes on air > 0 on a slot's first row",
            raw.at[int(df.at[i, "row"]), COL_MIN],
        )
        for i in slots.index[slots["minutes"].isna()]
    ]
    raise_failures("sessions", failure_table(records), source)
    end_prev = (slots["start"] + pd.to_timedelta(slots["minutes"], unit="min")).shift()
    gap_min = (slots["start"] - end_prev).dt.total_seconds() / 60.0
    new_show = slots["mother"].ne(slots["mother"].shift()) | (gap_min > MAX_GAP_MIN)
    slots["show"] = new_show.cumsum().astype(int) - 1
    df["show"] = slots["show"].reindex(df.index).ffill().astype(int)
    show_rows = df.groupby("show")["row"].min()  # a show's first file row, for warnings

    # Drop rows whose price cannot give units (counted).
    no_price = df["price"].isna() | (df["price"] <= 0)
    dropped_price = int(no_price.sum())
    df = df.loc[~no_price].copy()
    df["units"] = df["sales"] / df["price"]

    show_slots = slots.groupby("show").agg(
        start=("start", "first"), room=("mother", "first"), minutes=("minutes", "sum")
    )
    names = _join_names(df.drop_duplicates(["show", "name"]))
    totals = df.groupby("show").agg(gmv=("sales", "sum"), units=("units", "sum"))
    shows = show_slots.join(totals).join(names.rename("title"))
    shows["gmv"] = shows["gmv"].fillna(0.0)
    shows["units"] = shows["units"].fillna(0.0)
    local = shows["start"]
    shows["session_id"] = "ns-" + shows["room"] + "-" + local.dt.strftime("%Y%m%d-%H%M")
    viewers = np.full(len(shows), np.nan)
    if rating is not None:
        viewers = mean_rating(rating, local, shows["minutes"]) / 100.0 * TV_HOUSEHOLDS
    start_tz = local.dt.tz_localize(SOURCE_TZ, ambiguous="NaT", nonexistent="NaT").dt.tz_convert(tz)
    sessions = pd.DataFrame(
        {
            "session_id": shows["session_id"].to_numpy(),
            "room_id": shows["room"].to_numpy(),
            "platform": "other",
            "host_id": shows["room"].to_numpy(),
            "start_time": start_tz.reset_index(drop=True),
            "planned_duration_min": shows["minutes"].to_numpy(float),
            "session_type": "daily",
            "title": shows["title"].to_numpy(),
            "flash_sale_rounds": np.nan,
            "coupon_value": np.nan,
            "discount_depth": np.nan,
            "actual_duration_min": shows["minutes"].to_numpy(float),
            "viewers": np.round(viewers),
            "gmv": shows["gmv"].to_numpy(float),
            "orders": np.round(shows["units"].to_numpy(float)),
        }
    )
    sessions = validate(sessions, "sessions", source=source, tz=tz)
    at_rows = sessions.set_axis(show_rows.reindex(shows.index).to_numpy())
    warnings = {"sessions": check_consistency(at_rows, "sessions", source=source, strict=strict)}

    prod = (
        df.groupby(["show", "sku"], sort=False)
        .agg(
            price=("price", "first"),
            group=("group", "first"),
            units=("units", "sum"),
            gmv=("sales", "sum"),
            prices=("price", "nunique"),
            row=("row", "min"),
        )
        .reset_index()
    )
    prod["session_id"] = shows["session_id"].reindex(prod["show"]).to_numpy()
    products = pd.DataFrame(
        {
            "session_id": prod["session_id"],
            "sku_id": prod["sku"],
            "category": prod["group"].map(CATEGORY_MAP).fillna("other"),
            "list_price": prod["price"],
            "live_price": prod["price"],
            "stock": np.nan,
            "is_new_launch": False,
            "units_sold": np.round(prod["units"]),
            "gmv": prod["gmv"],
        }
    )
    products = validate(products, "session_products", source=source, tz=tz)
    warnings["session_products"] = check_consistency(
        products.set_axis(prod["row"].to_numpy()), "session_products", source=source, strict=strict
    )
    minutes_s = sessions["planned_duration_min"]
    summary: dict[str, Any] = {
        "rows_read": rows_read,
        "blank_rows_skipped": blank,
        "rows_dropped_missing_price": dropped_price,
        "unsold_rows_kept": unsold,
        "slots": len(slots),
        "shows": len(sessions),
        "rooms (families)": int(sessions["room_id"].nunique()),
        "product_rows": len(products),
        "share_60_min": float((minutes_s == 60).mean()) if len(sessions) else 0.0,
        "median_minutes": float(minutes_s.median()) if len(sessions) else 0.0,
        "total_gmv_krw": float(sessions["gmv"].sum()),
        "shows_with_viewers": int(sessions["viewers"].notna().sum()),
        "unmapped_categories": int((~prod["group"].isin(list(CATEGORY_MAP))).sum()),
        "products_with_price_changes": int((prod["prices"] > 1).sum()),
        "first_start": str(sessions["start_time"].min()) if len(sessions) else "-",
        "last_start": str(sessions["start_time"].max()) if len(sessions) else "-",
        "contract_warnings": sum(len(w) for w in warnings.values()),
        "encoding": encoding,
    }
    dataset = Dataset(sessions=sessions, session_products=products)
    return DatasetImport(dataset, summary, warnings)


def import_ns_homeshopping(
    path: str | Path,
    *,
    tz: str = SOURCE_TZ,
    rating: str | Path | None = None,
    encoding: str | None = None,
    strict: bool = False,
) -> DatasetImport:
    """Read the NS Home Shopping performance CSV and, when present, the rating file.

    ``rating`` defaults to ``2019_rating.csv`` beside ``path``; viewers are missing without it.
    ``tz`` is the output timezone of ``start_time``; ``encoding`` that of both CSV files
    (detected when ``None``); ``strict`` turns contract warnings into errors. Returns the
    dataset (sessions and session_products; no fan events), a summary of counts and the
    contract warnings; it unpacks as ``dataset, summary``.
    """
    path = Path(path)
    raw = read_export(path, text_columns=[COL_MOTHER, COL_SKU], encoding=encoding)
    rating_path = Path(rating) if rating is not None else path.with_name("2019_rating.csv")
    series = None
    if rating_path.exists():
        series = read_rating(rating_path, encoding)
    elif rating is not None:
        raise FileNotFoundError(f"no such rating file: {rating_path}")
    result = build_ns_dataset(raw, rating=series, tz=tz, source=str(path), strict=strict)
    result.summary["rating_file"] = rating_path.name if series is not None else "-"
    return result
