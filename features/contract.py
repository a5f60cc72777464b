"""The data contract: three tables every source (simulator, importers, real exports) must meet.

* ``sessions``          one row per live session (plan columns + outcome columns).
* ``session_products``  one row per SKU shown in a session.
* ``fan_events``        one row per fan action (watch, comment, like, share, follow, order, refund).

Each table is a pandera schema. Validation is lazy: every failing row and column is collected in
:class:`ContractError` (a table of failure cases), rows are never dropped silently.

Units: money in the room's currency (CNY for Chinese platforms), durations in minutes, dwell and
watch time in seconds, rates as fractions in [0, 1]. Times are timezone-aware; naive times are
read as :data:`DEFAULT_TZ`, and must fall in :data:`TIME_RANGE` (the nanosecond timestamps the
tables are stored as).

Beyond the schema, :func:`consistency_warnings` lists rows whose outcomes contradict each other
(more orders than viewers, GMV 0 with orders, a live price above the list price, outcomes of a
session that has not started yet...). Real exports do have such rows, so they are warnings, not
failures; :func:`check_consistency` turns them into a :class:`ContractError` when asked (the
importers' ``strict`` mode).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pandera.pandas as pa

DEFAULT_TZ = "Asia/Shanghai"

PLATFORMS: tuple[str, ...] = ("douyin", "kuaishou", "channels", "taobao", "tiktok", "other")
SESSION_TYPES: tuple[str, ...] = (
    "daily",
    "festival_promo",
    "brand_collab",
    "fan_welfare",
    "new_launch",
    "clearance",
    "other",
)
CATEGORIES: tuple[str, ...] = (
    "beauty",
    "apparel",
    "accessories",
    "jewellery",
    "food",
    "health",
    "home",
    "furniture",
    "electronics",
    "maternal_baby",
    "other",
)
EVENT_TYPES: tuple[str, ...] = ("watch", "comment", "like", "share", "follow", "order", "refund")

Platform = Literal["douyin", "kuaishou", "channels", "taobao", "tiktok", "other"]
SessionType = Literal[
    "daily", "festival_promo", "brand_collab", "fan_welfare", "new_launch", "clearance", "other"
]
Category = Literal[
    "beauty",
    "apparel",
    "accessories",
    "jewellery",
    "food",
    "health",
    "home",
    "furniture",
    "electronics",
    "maternal_baby",
    "other",
]
EventType = Literal["watch", "comment", "like", "share", "follow", "order", "refund"]

MAX_DURATION_MIN = 24 * 60
MAX_MONEY = 1e11  # far above any single session's GMV; catches unit mistakes (fen vs yuan)
MAX_COUNT = 1e9
TIME_RANGE = (pd.Timestamp("1678-01-01", tz="UTC"), pd.Timestamp("2262-01-01", tz="UTC"))
"""Times must fall in this range: the tables store nanosecond timestamps (1677-09-21 to
2262-04-11), and a year outside it is a typo or a unit mistake anyway."""

# Outcome columns of the sessions table: known only after the session ends. Features never
# read them for the session they describe.
SESSION_OUTCOMES: tuple[str, ...] = (
    "actual_duration_min",
    "viewers",
    "peak_concurrent",
    "gmv",
    "orders",
    "buyers",
    "avg_dwell_seconds",
    "new_followers",
)
PRODUCT_OUTCOMES: tuple[str, ...] = ("units_sold", "gmv")


def _tz_aware(series: pd.Series) -> bool:
    return isinstance(series.dtype, pd.DatetimeTZDtype)


def _count(description: str, *, nullable: bool = True) -> pa.Column:
    return pa.Column(
        float,
        [pa.Check.ge(0), pa.Check.le(MAX_COUNT)],
        nullable=nullable,
        coerce=True,
        required=False,
        description=description,
    )


def _money(description: str, *, nullable: bool = True, positive: bool = False) -> pa.Column:
    low = pa.Check.gt(0) if positive else pa.Check.ge(0)
    return pa.Column(
        float,
        [low, pa.Check.le(MAX_MONEY)],
        nullable=nullable,
        coerce=True,
        required=False,
        description=description,
    )


def _id(
    description: str, *, nullable: bool = False, unique: bool = False, required: bool = True
) -> pa.Column:
    return pa.Column(
        str,
        pa.Check.str_length(min_value=1, max_value=200),
        nullable=nullable,
        unique=unique,
        coerce=True,
        required=required,
        description=description,
    )


def _time(description: str) -> pa.Column:
    return pa.Column(
        checks=pa.Check(_tz_aware, element_wise=False, error="timestamps must be timezone-aware"),
        nullable=False,
        description=description,
    )


SESSIONS_SCHEMA = pa.DataFrameSchema(
    name="sessions",
    columns={
        "session_id": _id("Unique session identifier.", unique=True),
        "room_id": _id("Live room (account) identifier."),
        "platform": pa.Column(str, pa.Check.isin(PLATFORMS), coerce=True, description="Platform."),
        "host_id": _id("Host (anchor) identifier; the room id when unknown."),
        "start_time": _time("Scheduled start, timezone-aware."),
        "planned_duration_min": pa.Column(
            float,
            [pa.Check.gt(0), pa.Check.le(MAX_DURATION_MIN)],
            nullable=True,
            coerce=True,
            description="Planned duration in minutes (known before the session).",
        ),
        "session_type": pa.Column(
            str, pa.Check.isin(SESSION_TYPES), coerce=True, description="Kind of session."
        ),
        "title": pa.Column(str, nullable=True, coerce=True, required=False, description="Title."),
        "followers_at_start": _count("Room followers when the session starts (fan base)."),
        "warmup_videos": _count("Short warm-up videos posted before the session."),
        "community_pushes": _count("Community / fan-group pushes before the session."),
        "paid_promo_budget": _money("Paid traffic budget (e.g. Qianchuan / DOU+), currency."),
        "lottery_count": _count("Timed lotteries (福袋) during the session."),
        "red_envelope_count": _count("Red-envelope codes dropped during the session."),
        "flash_sale_rounds": _count("Flash-sale (秒杀) rounds."),
        "coupon_value": _money("Face value of the session coupon, currency."),
        "n_products": _count(
            "Products listed in the session, for exports without product rows (the mix "
            "features read it when the session has no session_products rows)."
        ),
        "discount_depth": pa.Column(
            float,
            [pa.Check.ge(0), pa.Check.le(1)],
            nullable=True,
            coerce=True,
            required=False,
            description="Mean discount off list price, fraction in [0, 1].",
        ),
        # outcomes
        "actual_duration_min": pa.Column(
            float,
            [pa.Check.ge(0), pa.Check.le(MAX_DURATION_MIN)],
            nullable=True,
            coerce=True,
            required=False,
            description="Actual duration in minutes (outcome).",
        ),
        "viewers": _count("Cumulative viewers, 场观 (outcome)."),
        "peak_concurrent": _count("Peak concurrent viewers (outcome)."),
        "gmv": _money("Gross merchandise value, currency (outcome)."),
        "orders": _count("Orders (outcome)."),
        "buyers": _count("Distinct buyers (outcome)."),
        "avg_dwell_seconds": _count("Average dwell time per viewer, seconds (outcome)."),
        "new_followers": _count("New followers gained (outcome)."),
    },
    strict=False,
    coerce=False,
)

SESSION_PRODUCTS_SCHEMA = pa.DataFrameSchema(
    name="session_products",
    columns={
        "session_id": _id("Session the SKU was sold in."),
        "sku_id": _id("Product (SKU) identifier."),
        "category": pa.Column(
            str, pa.Check.isin(CATEGORIES), coerce=True, description="Product category."
        ),
        "list_price": _money("List price, currency.", nullable=False, positive=True),
        "live_price": _money("Live (deal) price, currency.", nullable=False, positive=True),
        "stock": _count("Units of stock allocated to the session."),
        "is_new_launch": pa.Column(bool, coerce=True, description="First time on sale."),
        "units_sold": _count("Units sold (outcome)."),
        "gmv": _money("GMV of this SKU, currency (outcome)."),
    },
    unique=["session_id", "sku_id"],
    strict=False,
    coerce=False,
)

FAN_EVENTS_SCHEMA = pa.DataFrameSchema(
    name="fan_events",
    columns={
        "fan_id": _id("Fan (user) identifier."),
        "room_id": _id("Room the event happened in."),
        "event_time": _time("When it happened, timezone-aware."),
        "event_type": pa.Column(
            str, pa.Check.isin(EVENT_TYPES), coerce=True, description="What the fan did."
        ),
        "session_id": _id(
            "Session the event belongs to (during it; refunds name the order's session).",
            nullable=True,
            required=False,
        ),
        "watch_seconds": _count("Seconds watched (watch events)."),
        "amount": _money("Order or refund amount, currency (order / refund events)."),
    },
    strict=False,
    coerce=False,
)

SCHEMAS: dict[str, pa.DataFrameSchema] = {
    "sessions": SESSIONS_SCHEMA,
    "session_products": SESSION_PRODUCTS_SCHEMA,
    "fan_events": FAN_EVENTS_SCHEMA,
}
TIME_COLUMNS: dict[str, str] = {"sessions": "start_time", "fan_events": "event_time"}


@dataclass
class ContractError(ValueError):
    """A table failed its contract. ``failures`` lists every failing row and column."""

    table: str
    failures: pd.DataFrame
    source: str = ""

    def __str__(self) -> str:
        where = f" ({self.source})" if self.source else ""
        n = len(self.failures)
        head = f"{self.table}{where}: {n} contract failure{'s' if n != 1 else ''}"
        lines = [head]
        for row in self.failures.head(50).itertuples(index=False):
            lines.append(f"  row {row.row}: column {row.column!s}: {row.check} (got {row.value!r})")
        if n > 50:
            lines.append(f"  ... and {n - 50} more")
        return "\n".join(lines)


def _failure_table(err: pa.errors.SchemaErrors) -> pd.DataFrame:
    fc = err.failure_cases.copy()
    missing = fc["check"].astype(str) == "column_in_dataframe"
    fc.loc[missing, "column"] = fc.loc[missing, "failure_case"]
    fc.loc[missing, "check"] = "required column is missing"
    out = pd.DataFrame(
        {
            "row": fc["index"].astype("object").where(fc["index"].notna(), "-"),
            "column": fc["column"].astype("object").where(fc["column"].notna(), "-"),
            "check": fc["check"].astype(str),
            "value": fc["failure_case"].astype("object"),
        }
    )
    return out.reset_index(drop=True)


def localize(series: pd.Series, tz: str = DEFAULT_TZ) -> pd.Series:
    """Parse to timezone-aware timestamps: naive values are read as ``tz``, aware ones converted."""
    if not pd.api.types.is_datetime64_any_dtype(series.dtype):
        series = pd.to_datetime(series, errors="coerce", format="mixed")
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert(tz)
    return series.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")


def _localize_cells(series: pd.Series, tz: str) -> pd.Series:
    """Each cell as a Timestamp in ``tz`` (naive read as ``tz``, aware converted), NaT when it
    does not parse; slow, for columns :func:`localize` cannot take as a whole (cells with
    different UTC offsets, values beyond the nanosecond range)."""
    values = []
    for value in series:
        try:
            t = pd.Timestamp(value)
            if t is not pd.NaT:
                t = (
                    t.tz_convert(tz)
                    if t.tzinfo is not None
                    else t.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
                )
        except (ValueError, TypeError, OverflowError):
            t = pd.NaT
        values.append(t)
    return pd.Series(values, index=series.index, dtype=object)


def _checked_times(series: pd.Series, column: str, tz: str) -> tuple[pd.Series, pd.DataFrame]:
    """``series`` as timezone-aware times in ``tz`` (see :func:`localize`) and the failure table
    of its missing, unparseable and out-of-range (:data:`TIME_RANGE`) cells. Cells with an
    explicit UTC offset are exact instants: they are converted, whatever their offset. Never
    raises a pandas error."""
    lo, hi = TIME_RANGE
    try:
        parsed = localize(series, tz)
        outside = parsed.notna() & ((parsed < lo) | (parsed >= hi))
    except (ValueError, TypeError, OverflowError):  # mixed offsets, out-of-bounds values
        cells = _localize_cells(series, tz)
        inside = cells.map(lambda t: t is not pd.NaT and lo <= t < hi).astype(bool)
        outside = cells.notna() & ~inside
        parsed = pd.to_datetime(cells.where(inside), utc=True).dt.tz_convert(tz)
    bad = parsed.isna() & ~outside
    check = pd.Series("parseable timestamp", index=series.index).where(
        ~outside, f"time between {lo.year} and {hi.year - 1}"
    )
    failing = bad | outside
    failures = pd.DataFrame(
        {
            "row": list(series.index[failing]),
            "column": column,
            "check": list(check[failing]),
            "value": list(series[failing]),
        }
    )
    return parsed.where(~outside), failures


def _numbers(df: pd.DataFrame, column: str) -> pd.Series:
    if column not in df.columns:
        return pd.Series(float("nan"), index=df.index)
    return pd.to_numeric(df[column], errors="coerce").astype(float)


def _fmt(values: pd.Series, i: int) -> str:
    """The ``i``-th number for a message: ``1,500`` or ``12.50``."""
    x = float(values.iloc[i])
    return f"{x:,.0f}" if x.is_integer() else f"{x:,.2f}"


def consistency_warnings(
    df: pd.DataFrame, table: str, *, now: pd.Timestamp | None = None
) -> pd.DataFrame:
    """Rows of a validated ``table`` whose values contradict each other, as a failure table
    (``row``, ``column``, ``check``, ``value``; ``row`` is the index label, e.g. a file row).

    * sessions: more orders than viewers, more buyers than orders, a peak above the cumulative
      viewers, GMV 0 with orders, orders 0 with GMV, outcomes of a session starting after
      ``now`` (a session that has not started has no outcomes);
    * session_products: a live price above the list price, GMV 0 with units sold, units 0 with
      GMV;
    * fan_events: an event after ``now``.

    ``now`` defaults to the current time. Missing values contradict nothing.
    """
    now = pd.Timestamp.now(tz="UTC") if now is None else now
    when = f"now ({now.tz_convert('UTC'):%Y-%m-%d %H:%M} UTC)"
    found: list[tuple[int, tuple[object, str, str, object]]] = []

    def add(mask: pd.Series, column: str, check: Callable[[int], str]) -> None:
        for i in np.flatnonzero(mask.fillna(False).to_numpy(dtype=bool)):
            value = df[column].iloc[i]
            value = value.item() if isinstance(value, np.generic) else value
            found.append((int(i), (df.index[i], column, check(i), value)))

    def after_now(column: str) -> pd.Series:
        if column not in df.columns or not isinstance(df[column].dtype, pd.DatetimeTZDtype):
            return pd.Series(False, index=df.index)
        return df[column] > now

    num = {c: _numbers(df, c) for c in ("viewers", "orders", "buyers", "peak_concurrent", "gmv")}
    num |= {c: _numbers(df, c) for c in ("list_price", "live_price", "units_sold")}

    def above(column: str, other: str, what: str) -> None:
        add(num[column] > num[other], column, lambda i: f"{what} ({other} {_fmt(num[other], i)})")

    def zero_with(column: str, other: str) -> None:
        mask = num[column].eq(0) & (num[other] > 0)
        add(mask, column, lambda i: f"{column} 0 with {other} {_fmt(num[other], i)}")

    if table == "sessions":
        above("orders", "viewers", "more orders than viewers")
        above("buyers", "orders", "more buyers than orders")
        above("peak_concurrent", "viewers", "peak above the cumulative viewers")
        zero_with("gmv", "orders")
        zero_with("orders", "gmv")
        present = [c for c in SESSION_OUTCOMES if c in df.columns]
        has = df[present].notna()

        def outcomes(i: int) -> str:
            names = ", ".join(c for c in present if has[c].iloc[i])
            return f"starts after {when} yet has outcomes ({names})"

        add(after_now("start_time") & has.any(axis=1), "start_time", outcomes)
    elif table == "session_products":
        above("live_price", "list_price", "live price above the list price")
        zero_with("gmv", "units_sold")
        zero_with("units_sold", "gmv")
    elif table == "fan_events":
        add(after_now("event_time"), "event_time", lambda i: f"event after {when}")
    found.sort(key=lambda item: item[0])
    return pd.DataFrame(
        [record for _, record in found], columns=["row", "column", "check", "value"], dtype=object
    )


def check_consistency(
    df: pd.DataFrame,
    table: str,
    *,
    source: str = "",
    strict: bool = False,
    now: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """:func:`consistency_warnings` of ``df``; with ``strict`` they are errors: a
    :class:`ContractError` listing them."""
    warnings = consistency_warnings(df, table, now=now)
    if strict and len(warnings):
        raise ContractError(table, warnings, source)
    return warnings


def validate(
    df: pd.DataFrame, table: str, *, source: str = "", tz: str = DEFAULT_TZ
) -> pd.DataFrame:
    """Validate ``df`` against the contract of ``table``; return the coerced frame.

    Raises :class:`ContractError` listing every failure (lazy validation). Missing optional
    columns are added as nulls so downstream code sees the full contract.
    """
    schema = SCHEMAS[table]
    df = df.copy()
    time_col = TIME_COLUMNS.get(table)
    if time_col and time_col in df.columns:
        parsed, failures = _checked_times(df[time_col], time_col, tz)
        if len(failures):
            raise ContractError(table, failures, source)
        df[time_col] = parsed.astype(f"datetime64[ns, {parsed.dt.tz}]")
    try:
        out = schema.validate(df, lazy=True)
    except pa.errors.SchemaErrors as err:
        raise ContractError(table, _failure_table(err), source) from None
    for name, col in schema.columns.items():
        if name not in out.columns and not col.required:
            is_text = col.dtype is not None and pd.api.types.is_string_dtype(col.dtype.type)
            dtype = "str" if is_text else "float64"
            out[name] = pd.Series(pd.NA if dtype == "str" else float("nan"), index=out.index)
            out[name] = out[name].astype(dtype)
    return out


def columns(table: str) -> list[str]:
    """The contract's column names for ``table``, in order."""
    return list(SCHEMAS[table].columns)
