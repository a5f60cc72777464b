"""``SessionPlan``: all a planner knows before going live, the single source of future inputs.

The same model is used by the feature code, the CLI, the HTTP service and the notebooks. Bounds
come from the data contract, so a plan that validates here is a valid ``sessions`` row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain
from operator import attrgetter
from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from features.contract import (
    MAX_COUNT,
    MAX_DURATION_MIN,
    MAX_MONEY,
    Category,
    Platform,
    SessionType,
)

PRICE_BANDS: tuple[tuple[str, float, float], ...] = (
    ("lt50", 0.0, 50.0),
    ("50_200", 50.0, 200.0),
    ("200_500", 200.0, 500.0),
    ("ge500", 500.0, math.inf),
)
"""Live-price bands (currency): name, lower bound (inclusive), upper bound (exclusive)."""

MIN_YEAR, MAX_YEAR = 1990, 2100
"""Plausible years of a session start (pandas timestamps cannot hold every year)."""

PriceBand = Annotated[str, Field(pattern="^(lt50|50_200|200_500|ge500)$")]

_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, str_strip_whitespace=True)

Count = Annotated[int, Field(ge=0, le=int(MAX_COUNT))]
Money = Annotated[float, Field(ge=0, le=MAX_MONEY, allow_inf_nan=False)]
Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class ProductLine(BaseModel):
    """One SKU planned for the session."""

    model_config = _STRICT

    sku_id: str = Field(min_length=1, max_length=200)
    category: Category
    list_price: Annotated[float, Field(gt=0, le=MAX_MONEY, allow_inf_nan=False)]
    live_price: Annotated[float, Field(gt=0, le=MAX_MONEY, allow_inf_nan=False)]
    stock: Count | None = None
    is_new_launch: bool = False


class ProductMix(BaseModel):
    """A summary of the planned product mix, when the SKU list is not known yet."""

    model_config = _STRICT

    n_skus: Annotated[int, Field(ge=1, le=5000)]
    category_shares: dict[Category, Share] = Field(
        description="Share of SKUs per category; shares sum to 1."
    )
    price_band_shares: dict[PriceBand, Share] = Field(
        default_factory=dict, description="Share of SKUs per live-price band (lt50, 50_200, ...)."
    )
    mean_live_price: Annotated[float, Field(gt=0, le=MAX_MONEY, allow_inf_nan=False)]
    mean_discount: Share = 0.0
    new_launch_share: Share = 0.0
    total_stock: Count | None = None

    @model_validator(mode="after")
    def _shares_sum_to_one(self) -> ProductMix:
        for name, shares in (
            ("category_shares", self.category_shares),
            ("price_band_shares", self.price_band_shares),
        ):
            if shares and abs(sum(shares.values()) - 1.0) > 0.02:
                raise ValueError(f"{name} must sum to 1 (got {sum(shares.values()):.3f})")
        if not self.category_shares:
            raise ValueError("category_shares must name at least one category")
        return self


class SessionPlan(BaseModel):
    """A draft live session: known before it starts. No outcome fields."""

    model_config = _STRICT

    session_id: str | None = Field(None, max_length=200, description="Optional id for the plan.")
    room_id: str = Field(min_length=1, max_length=200)
    host_id: str | None = Field(None, max_length=200)
    platform: Platform
    start_time: AwareDatetime
    planned_duration_min: Annotated[float, Field(gt=0, le=MAX_DURATION_MIN, allow_inf_nan=False)]
    session_type: SessionType = "daily"
    title: str = Field("", max_length=500)
    followers_at_start: Count | None = Field(
        None, description="Room followers now; used when the room has no history (cold start)."
    )
    room_category: Category | None = Field(
        None, description="Room's main category; used for cold start when no products given."
    )
    warmup_videos: Annotated[int, Field(ge=0, le=1000)] = 0
    community_pushes: Annotated[int, Field(ge=0, le=1000)] = 0
    paid_promo_budget: Money = 0.0
    lottery_count: Annotated[int, Field(ge=0, le=1000)] = 0
    red_envelope_count: Annotated[int, Field(ge=0, le=1000)] = 0
    flash_sale_rounds: Annotated[int, Field(ge=0, le=1000)] = 0
    coupon_value: Money = 0.0
    discount_depth: Share | None = Field(
        None, description="Mean discount off list; derived from products when omitted."
    )
    products: list[ProductLine] | None = Field(None, max_length=5000)
    product_mix: ProductMix | None = None
    n_products: Annotated[int, Field(ge=0, le=5000)] | None = Field(
        None,
        description="Products listed, when neither products nor product_mix is given (what a "
        "session export without product rows records).",
    )

    @field_validator("start_time")
    @classmethod
    def _plausible_start(cls, value: datetime) -> datetime:
        if not MIN_YEAR <= value.year <= MAX_YEAR:
            raise ValueError(f"start_time must be between {MIN_YEAR} and {MAX_YEAR}")
        return value

    @model_validator(mode="after")
    def _one_product_source(self) -> SessionPlan:
        if self.products is not None and self.product_mix is not None:
            raise ValueError("give either products or product_mix, not both")
        if self.products is not None:
            skus = [p.sku_id for p in self.products]
            if len(set(skus)) != len(skus):
                raise ValueError("products: sku_id values must be unique")
        return self

    def plan_id(self, index: int = 0) -> str:
        return self.session_id or f"plan-{index}"

    def to_session_row(self, index: int = 0) -> dict[str, object]:
        """This plan as a ``sessions`` contract row (outcomes missing): its row of
        :func:`plans_to_columns`, the start time as a ``pandas.Timestamp`` in its own offset."""
        cols = plans_to_columns([self])
        row: dict[str, object] = {c: _scalar(v[0]) for c, v in cols.sessions.items()}
        row["session_id"] = self.plan_id(index)
        row["start_time"] = pd.Timestamp(self.start_time)
        return {c: row[c] for c in SESSION_ROW_COLUMNS}

    def to_product_rows(self, index: int = 0) -> list[dict[str, object]]:
        """The planned SKUs as ``session_products`` rows (empty when only a mix is given)."""
        lines = plans_to_columns([self]).products
        sid = self.plan_id(index)
        return [
            {"session_id": sid, **{c: _scalar(lines[c][j]) for c in PRODUCT_ROW_COLUMNS[1:]}}
            for j in range(len(lines["plan"]))
        ]


SESSION_ROW_COLUMNS: tuple[str, ...] = (
    "session_id",
    "room_id",
    "platform",
    "host_id",
    "start_time",
    "planned_duration_min",
    "session_type",
    "title",
    "followers_at_start",
    "warmup_videos",
    "community_pushes",
    "paid_promo_budget",
    "lottery_count",
    "red_envelope_count",
    "flash_sale_rounds",
    "coupon_value",
    "discount_depth",
    "n_products",
)
"""The ``sessions`` contract columns a plan fills (outcomes missing), in row order."""
PRODUCT_ROW_COLUMNS: tuple[str, ...] = (
    "session_id",
    "sku_id",
    "category",
    "list_price",
    "live_price",
    "stock",
    "is_new_launch",
)
"""The ``session_products`` contract columns a plan's SKU lines fill, in row order."""

_TEXT = ("room_id", "platform", "session_type", "title")
_NUMBERS = (
    "planned_duration_min",
    "followers_at_start",
    "warmup_videos",
    "community_pushes",
    "paid_promo_budget",
    "lottery_count",
    "red_envelope_count",
    "flash_sale_rounds",
    "coupon_value",
    "n_products",
)
_PLAN_FIELDS = (
    "session_id",
    "host_id",
    "start_time",
    "room_category",
    "discount_depth",
    "products",
    "product_mix",
    *_TEXT,
    *_NUMBERS,
)
_read_plan = attrgetter(*_PLAN_FIELDS)
_LINE_FIELDS = ("sku_id", "category", "list_price", "live_price", "stock", "is_new_launch")
_read_line = attrgetter(*_LINE_FIELDS)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class PlanColumns:
    """Draft plans read column-wise: aligned numpy arrays, one pass over the pydantic models.

    ``sessions``: the :data:`SESSION_ROW_COLUMNS` but ``start_time`` (text as object arrays of
    ``str``, numbers as float64 with NaN where not stated); ``start_ns``: the start as UTC epoch
    nanoseconds; ``room_category``: object, None where not stated; ``product_mix``: object,
    the :class:`ProductMix` or None; ``products``: every plan's SKU lines flattened in plan
    order, ``plan`` (int64 position of the line's plan) and the :data:`PRODUCT_ROW_COLUMNS` but
    ``session_id`` (``stock`` float64, NaN where unknown; ``is_new_launch`` bool).
    """

    sessions: dict[str, np.ndarray]
    start_ns: np.ndarray
    room_category: np.ndarray
    product_mix: np.ndarray
    products: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.start_ns)


def _objects(values: tuple[object, ...] | list[object]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _table(columns: list, n: int, dtype: type) -> np.ndarray:
    """Equal-length value sequences as the rows of one ``(len(columns), n)`` array."""
    return np.array(columns, dtype=dtype).reshape(len(columns), n)


def _scalar(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


def plans_to_columns(plans: list[SessionPlan]) -> PlanColumns:
    """``plans`` column-wise (:class:`PlanColumns`): the one definition of a plan's ``sessions``
    / ``session_products`` contract values, which :meth:`SessionPlan.to_session_row`,
    :meth:`SessionPlan.to_product_rows` and the feature inputs
    (:func:`features.sessions.plan_inputs`) all read.

    A plan's id is its ``session_id``, else ``plan-<position>``; its host is its ``host_id``,
    else the room id (the contract's convention); its ``discount_depth``, when not stated, is
    the mean of ``1 - live / list`` over its SKUs (clipped to [0, 1]), else its mix's
    ``mean_discount``, else missing.
    """
    n = len(plans)
    rows = list(map(_read_plan, plans))
    columns = zip(*rows, strict=True) if n else [()] * len(_PLAN_FIELDS)
    fields = dict(zip(_PLAN_FIELDS, columns, strict=True))
    # few array constructions (one per dtype), whatever the number of plans and lines
    text = _table(
        [
            [s or f"plan-{i}" for i, s in enumerate(fields["session_id"])],
            [h or r for h, r in zip(fields["host_id"], fields["room_id"], strict=True)],
            *(fields[name] for name in _TEXT),
            fields["room_category"],
        ],
        n,
        object,
    )
    sessions = dict(zip(("session_id", "host_id", *_TEXT), text[:-1], strict=True))
    numbers = _table([fields[name] for name in (*_NUMBERS, "discount_depth")], n, float)
    sessions.update(zip(_NUMBERS, numbers[:-1], strict=True))  # None -> NaN
    micros = [(t - _EPOCH) // _MICROSECOND for t in fields["start_time"]]  # exact integers
    start_ns = np.array(micros, dtype=np.int64) * 1000
    products = fields["products"]
    counts = np.fromiter((len(p) if p else 0 for p in products), np.int64, n)
    lines = list(chain.from_iterable(p for p in products if p))
    m = len(lines)
    read = zip(*map(_read_line, lines), strict=True) if m else ((),) * len(_LINE_FIELDS)
    sku_id, category, list_price, live_price, stock, new = read
    names = _table([sku_id, category], m, object)
    prices = _table([list_price, live_price, stock], m, float)  # stock None -> NaN
    line_cols: dict[str, np.ndarray] = {
        "plan": np.arange(n, dtype=np.int64).repeat(counts),
        "sku_id": names[0],
        "category": names[1],
        "list_price": prices[0],
        "live_price": prices[1],
        "stock": prices[2],
        "is_new_launch": np.array(new, dtype=bool),
    }
    mix = _objects(fields["product_mix"])
    discount = numbers[-1]
    unstated = np.isnan(discount)
    if m and unstated.any():
        fill = unstated & (counts > 0)
        off = np.bincount(line_cols["plan"], weights=1 - prices[1] / prices[0], minlength=n)
        discount[fill] = np.minimum(np.maximum(off[fill] / counts[fill], 0.0), 1.0)
    if any(x is not None for x in fields["product_mix"]):  # a plan with a mix has no SKUs
        for i in np.flatnonzero(unstated & (counts == 0)):
            if mix[i] is not None:
                discount[i] = mix[i].mean_discount
    sessions["discount_depth"] = discount
    return PlanColumns(
        sessions=sessions,
        start_ns=start_ns,
        room_category=text[-1],
        product_mix=mix,
        products=line_cols,
    )


def plans_to_frames(plans: list[SessionPlan]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Plans as (sessions, session_products) frames in contract shape, outcomes missing: the
    frames of :func:`plans_to_columns` (each start time in its own offset). Without plans or
    SKU lines, the frame is empty and has no columns."""
    cols = plans_to_columns(plans)
    if not len(cols):
        return pd.DataFrame(), pd.DataFrame()
    starts = [pd.Timestamp(p.start_time) for p in plans]
    sessions = pd.DataFrame(
        {c: starts if c == "start_time" else cols.sessions[c] for c in SESSION_ROW_COLUMNS}
    )
    lines = cols.products
    if not len(lines["plan"]):
        return sessions, pd.DataFrame()
    products = pd.DataFrame(
        {
            "session_id": cols.sessions["session_id"][lines["plan"]],
            **{c: lines[c] for c in PRODUCT_ROW_COLUMNS[1:]},
        }
    )
    return sessions, products


def example_plan(start: datetime | None = None) -> SessionPlan:
    """A realistic draft plan, used by the CLI demo, the docs and the tests."""
    start = start or datetime.fromisoformat("2026-06-18T20:00:00+08:00")
    return SessionPlan(
        room_id="room-000",
        platform="douyin",
        start_time=start,
        planned_duration_min=180,
        session_type="festival_promo",
        title="618 年中大促 美妆专场 福利秒杀",
        warmup_videos=6,
        community_pushes=3,
        paid_promo_budget=5000,
        lottery_count=4,
        red_envelope_count=2,
        flash_sale_rounds=3,
        coupon_value=20,
        products=[
            ProductLine(
                sku_id="sku-1", category="beauty", list_price=299, live_price=199, stock=800
            ),
            ProductLine(
                sku_id="sku-2", category="beauty", list_price=159, live_price=99, stock=1500
            ),
            ProductLine(
                sku_id="sku-3",
                category="beauty",
                list_price=499,
                live_price=399,
                stock=300,
                is_new_launch=True,
            ),
        ],
    )
