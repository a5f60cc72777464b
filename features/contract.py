"""The data contract: three tables every source (simulator, importers, real exports) must meet.

* ``sessions``          one row per live session (plan columns + outcome columns).
* ``session_products``  one row per SKU shown in a session.
* ``fan_events``        one row per fan action (watch, comment, like, share, follow, order, refund).

Each table is a pandera schema. Validation is lazy: every failing row and column is collected in
:class:`ContractError` (a table of failure cases), rows are never dropped silently.

Units: money in the room's currency (CNY for Chinese platforms), durations in minutes, dwell and
watch time in seconds, rates as fractions in [0, 1]. Times are timezone-aware; naive times are
read as :data:`DEFAULT_TZ`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
        parsed = localize(df[time_col], tz)
        bad = parsed.isna() & df[time_col].notna()
        missing = df[time_col].isna()
        if bad.any() or missing.any():
            idx = df.index[bad | missing]
            failures = pd.DataFrame(
                {
                    "row": list(idx),
                    "column": time_col,
                    "check": "parseable timestamp",
                    "value": list(df.loc[idx, time_col]),
                }
            )
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
