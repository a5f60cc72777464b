"""``SessionPlan``: all a planner knows before going live, the single source of future inputs.

The same model is used by the feature code, the CLI, the HTTP service and the notebooks. Bounds
come from the data contract, so a plan that validates here is a valid ``sessions`` row.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated

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
        """This plan as a ``sessions`` contract row (outcomes missing)."""
        start = pd.Timestamp(self.start_time)
        discount = self.discount_depth
        if discount is None and self.products:
            discount = sum(1 - p.live_price / p.list_price for p in self.products) / len(
                self.products
            )
            discount = min(max(discount, 0.0), 1.0)
        if discount is None and self.product_mix is not None:
            discount = self.product_mix.mean_discount
        return {
            "session_id": self.plan_id(index),
            "room_id": self.room_id,
            "platform": self.platform,
            "host_id": self.host_id or self.room_id,
            "start_time": start,
            "planned_duration_min": float(self.planned_duration_min),
            "session_type": self.session_type,
            "title": self.title,
            "followers_at_start": _opt_float(self.followers_at_start),
            "warmup_videos": float(self.warmup_videos),
            "community_pushes": float(self.community_pushes),
            "paid_promo_budget": float(self.paid_promo_budget),
            "lottery_count": float(self.lottery_count),
            "red_envelope_count": float(self.red_envelope_count),
            "flash_sale_rounds": float(self.flash_sale_rounds),
            "coupon_value": float(self.coupon_value),
            "discount_depth": _opt_float(discount),
            "n_products": _opt_float(self.n_products),
        }

    def to_product_rows(self, index: int = 0) -> list[dict[str, object]]:
        """The planned SKUs as ``session_products`` rows (empty when only a mix is given)."""
        sid = self.plan_id(index)
        return [
            {
                "session_id": sid,
                "sku_id": p.sku_id,
                "category": p.category,
                "list_price": float(p.list_price),
                "live_price": float(p.live_price),
                "stock": _opt_float(p.stock),
                "is_new_launch": bool(p.is_new_launch),
            }
            for p in (self.products or [])
        ]


def _opt_float(value: float | int | None) -> float:
    return float("nan") if value is None else float(value)


def plans_to_frames(plans: list[SessionPlan]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Plans as (sessions, session_products) frames in contract shape, outcomes missing."""
    sessions = pd.DataFrame([p.to_session_row(i) for i, p in enumerate(plans)])
    products = pd.DataFrame([r for i, p in enumerate(plans) for r in p.to_product_rows(i)])
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
