"""JSON request and response models of the HTTP service (pydantic, strict, bounded).

The request models reuse :class:`~features.plan.SessionPlan` (the same model the feature code
reads), so a plan that validates here is a plan the forecaster can score. Every list is bounded,
every number has bounds and rejects NaN / infinity, unknown fields are rejected: bad input is a
400 naming the field, never a 500.

Shapes (all money in the room's currency, durations in minutes):

* ``POST /v1/forecast``  :class:`ForecastRequest` -> :class:`ForecastResponse`
* ``POST /v1/compare``   :class:`CompareRequest`  -> :class:`CompareResponse`
* ``POST /v1/suggest``   :class:`SuggestRequest`  -> :class:`SuggestResponse`
* ``POST /v1/review``    :class:`ReviewRequest`   -> :class:`ReviewResponse`
* ``POST /v1/segment``   :class:`SegmentRequest`  -> :class:`SegmentResponse`
* ``POST /v1/sessions``  :class:`IngestRequest`   -> :class:`IngestResponse` (changes state:
  off unless an ingest token is set)
* errors: :class:`ErrorResponse` (400 validation, 415 content type, 422 unscorable input)
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from features.contract import (
    MAX_COUNT,
    MAX_DURATION_MIN,
    MAX_MONEY,
    Category,
    EventType,
    Platform,
    SessionType,
)
from features.plan import MAX_YEAR, MIN_YEAR, SessionPlan, example_plan

MAX_PLANS = 1000
"""Plans per forecast request."""
MAX_VARIANTS = 20
"""Named variants per compare request."""
MAX_CANDIDATES = 2000
"""Candidate variants one suggest search may score (one batch predict)."""
MAX_SUGGEST_LINES = 200_000
"""Plan lines one suggest request may score: (candidates + base + top-k re-scored) x the base
plan's product lines (at least 1). A search's cost and its response grow with both: 1,920
candidates of a 5,000-SKU plan took 29 s and answered 11 MB before this bound."""
MAX_EVENTS = 50_000
"""Fan events per segment request (a few thousand fans)."""
MAX_INGEST_SESSIONS = 1000
"""Finished sessions per ``/v1/sessions`` request."""
MAX_INGEST_PRODUCTS = 50_000
"""Product rows per ``/v1/sessions`` request."""

Target = Literal["viewers", "orders", "gmv"]
Family = Literal["topic", "slot", "mix", "promo", "warmup", "room"]
Objective = Literal["gmv", "viewers"]
Mechanic = Literal["lottery", "red_envelope", "flash_sale", "coupon"]
Tier = Literal["core", "active", "potential", "dormant"]

PROMO_FIELDS: dict[str, str] = {
    "lottery": "lottery_count",
    "red_envelope": "red_envelope_count",
    "flash_sale": "flash_sale_rounds",
    "coupon": "coupon_value",
}
"""Mechanic name -> the :class:`SessionPlan` field it switches."""
PROMO_ON_DEFAULTS: dict[str, float] = {
    "lottery": 3,
    "red_envelope": 2,
    "flash_sale": 2,
    "coupon": 10.0,
}
"""Value a mechanic gets when switched on and the base plan does not use it."""

_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
_OUT = ConfigDict(extra="forbid", allow_inf_nan=False)

NonNeg = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Money = Annotated[float, Field(ge=0, le=MAX_MONEY, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, le=int(MAX_COUNT))]
Name = Annotated[str, Field(min_length=1, max_length=100)]


# --------------------------------------------------------------------------- request examples

# One example per request model, in one place: each is the request schema's ``example`` in
# ``/docs.json`` (what Swagger UI's "Try it out" pre-fills; its OpenAPI 3.1 sampler reads a
# schema's ``examples[0]``, else its ``example``) and tests/test_docs_examples.py checks that each
# validates and is answered 2xx. Not a schema-level ``examples`` list: BentoML 1.4 copies the
# request schema into its OpenAPI ``Schema`` class, which has ``example`` but raises on
# ``examples``.

EXAMPLE_PLAN: dict[str, Any] = {
    "session_id": "618-beauty",
    **example_plan().model_dump(mode="json", exclude_none=True, exclude_defaults=True),
}
"""The draft plan of :func:`~features.plan.example_plan` as request JSON: a 618 festival beauty
session of ``room-000`` (a room of the simulated data) with three SKUs."""

EXAMPLE_COLD_PLAN: dict[str, Any] = {
    "session_id": "new-room-launch",
    "room_id": "room-new-01",
    "platform": "kuaishou",
    "start_time": "2026-06-20T19:30:00+08:00",
    "planned_duration_min": 120,
    "session_type": "new_launch",
    "title": "新品首发 宠粉福利",
    "followers_at_start": 25000,
    "room_category": "food",
    "warmup_videos": 3,
    "lottery_count": 2,
    "product_mix": {
        "n_skus": 12,
        "category_shares": {"food": 0.75, "home": 0.25},
        "price_band_shares": {"lt50": 0.5, "50_200": 0.5},
        "mean_live_price": 59.9,
        "mean_discount": 0.2,
        "new_launch_share": 0.5,
        "total_stock": 6000,
    },
}
"""A plan of a room without history (cold start) described by a product-mix summary."""

FORECAST_EXAMPLE: dict[str, Any] = {"plans": [EXAMPLE_PLAN, EXAMPLE_COLD_PLAN], "drivers": True}
COMPARE_EXAMPLE: dict[str, Any] = {
    "base": EXAMPLE_PLAN,
    "variants": [
        {
            "name": "no warm-up",
            "plan": {**EXAMPLE_PLAN, "warmup_videos": 0, "community_pushes": 0,
                     "paid_promo_budget": 0},
        },
        {"name": "late night", "plan": {**EXAMPLE_PLAN, "start_time": "2026-06-18T23:00:00+08:00"}},
    ],
    "drivers": True,
}  # fmt: skip
SUGGEST_EXAMPLE: dict[str, Any] = {
    "base": EXAMPLE_PLAN,
    "space": {
        "start_hour": {"min": 18, "max": 22},
        "duration_min": {"min": 120, "max": 240, "step": 60},
        "promos": ["lottery", "coupon"],
        "paid_promo_budget": [0, 5000, 10000],
    },
    "objective": "gmv",
    "top_k": 3,
    "drivers": True,
}
"""5 hours x 3 durations x 4 promo switches x 3 budgets = 180 candidates of a 3-SKU plan."""
REVIEW_EXAMPLE: dict[str, Any] = {
    "plan": EXAMPLE_PLAN,
    "actual": {"viewers": 186000, "orders": 4300, "gmv": 812000},
}
SEGMENT_EXAMPLE: dict[str, Any] = {
    "events": [
        {"fan_id": "fan-1", "room_id": "room-000", "event_time": "2026-06-10T20:05:00+08:00",
         "event_type": "watch", "watch_seconds": 1500},
        {"fan_id": "fan-1", "room_id": "room-000", "event_time": "2026-06-10T20:31:00+08:00",
         "event_type": "order", "amount": 199},
        {"fan_id": "fan-1", "room_id": "room-000", "event_time": "2026-06-18T20:02:00+08:00",
         "event_type": "watch", "watch_seconds": 2400},
        {"fan_id": "fan-1", "room_id": "room-000", "event_time": "2026-06-18T20:40:00+08:00",
         "event_type": "order", "amount": 398},
        {"fan_id": "fan-2", "room_id": "room-000", "event_time": "2026-06-12T21:00:00+08:00",
         "event_type": "watch", "watch_seconds": 300},
        {"fan_id": "fan-2", "room_id": "room-000", "event_time": "2026-06-12T21:03:00+08:00",
         "event_type": "comment"},
        {"fan_id": "fan-3", "room_id": "room-000", "event_time": "2026-05-02T19:45:00+08:00",
         "event_type": "follow"},
        {"fan_id": "fan-3", "room_id": "room-000", "event_time": "2026-05-02T19:50:00+08:00",
         "event_type": "watch", "watch_seconds": 90},
    ],
    "cutoff": "2026-06-20T00:00:00+08:00",
}  # fmt: skip
INGEST_EXAMPLE: dict[str, Any] = {
    "sessions": [
        {
            "session_id": "room-000-260108-2000",
            "room_id": "room-000",
            "platform": "douyin",
            "host_id": "room-000-h0",
            "start_time": "2026-01-08T20:00:00+08:00",
            "planned_duration_min": 180,
            "session_type": "daily",
            "title": "美妆 今日好物 秒杀 福袋",
            "followers_at_start": 940000,
            "warmup_videos": 3,
            "paid_promo_budget": 5000,
            "lottery_count": 4,
            "flash_sale_rounds": 2,
            "coupon_value": 20,
            "discount_depth": 0.3,
            "actual_duration_min": 185,
            "viewers": 186000,
            "peak_concurrent": 5200,
            "orders": 4300,
            "buyers": 3900,
            "gmv": 812000,
            "avg_dwell_seconds": 140,
            "new_followers": 2100,
        }
    ],
    "products": [
        {"session_id": "room-000-260108-2000", "sku_id": "sku-serum-30ml", "category": "beauty",
         "list_price": 399, "live_price": 299, "stock": 2000, "units_sold": 1500, "gmv": 448500},
        {"session_id": "room-000-260108-2000", "sku_id": "sku-mask-10", "category": "beauty",
         "list_price": 129, "live_price": 99, "stock": 5000, "units_sold": 3200, "gmv": 316800},
    ],
    "replace": False,
}  # fmt: skip
"""A finished session of ``room-000`` (after the simulated data ends) with two SKU rows."""


def _example(example: dict[str, Any]) -> ConfigDict:
    """The strict request config with ``example`` as the model's JSON-schema example."""
    return ConfigDict(**_STRICT, json_schema_extra={"example": example})


# --------------------------------------------------------------------------- shared outputs


class Interval(BaseModel):
    """P10 / P50 / P90 of one target (P10 <= P50 <= P90, never negative)."""

    model_config = _OUT

    p10: NonNeg
    p50: NonNeg
    p90: NonNeg


class Driver(BaseModel):
    """One feature's contribution to the GMV forecast: ``multiplier = exp(contribution)``."""

    model_config = _OUT

    feature: str
    family: str
    value: float | str | bool | None = Field(description="The feature's value for this plan.")
    contribution: Finite = Field(description="Log-space contribution.")
    multiplier: NonNeg = Field(description="Factor this feature applies to the forecast.")


class Explanation(BaseModel):
    """Why the GMV forecast is what it is: contributions by feature family and top drivers."""

    model_config = _OUT

    target: Target = "gmv"
    baseline: Finite = Field(description="Model's average log forecast before any feature.")
    families: dict[Family, Finite] = Field(description="Log-space contribution per family.")
    multipliers: dict[Family, NonNeg] = Field(description="exp(contribution) per family.")
    drivers: list[Driver]


class ModelInfo(BaseModel):
    """Which model answered."""

    model_config = _OUT

    name: str = Field(description="Model family name.")
    bundle: str = Field(description="Bundle folder name under models/.")
    train_id: str | None = None
    trained_until: str | None = None
    versions: dict[str, str] = Field(
        default_factory=dict, description="Registered MLflow version per target, when known."
    )
    history_as_of: str | None = Field(
        None,
        description="Latest start_time (ISO 8601) of the room history the answer used: the "
        "bundle's history plus the sessions ingested since (livecast ingest, POST /v1/sessions).",
    )


class PlanForecast(BaseModel):
    """The forecast of one plan."""

    model_config = _OUT

    session_id: str = Field(description="The plan's session_id, or plan-<index>.")
    room_id: str
    cold_start: bool = Field(description="True when the room has no history (unknown room).")
    viewers: Interval
    orders: Interval
    gmv: Interval
    conversion: NonNeg = Field(description="orders P50 / viewers P50.")
    aov: NonNeg = Field(description="GMV P50 / orders P50 (currency per order).")
    sources: dict[str, str] = Field(
        default_factory=dict,
        description="Per target, what forecasts it: 'model', or 'baseline:history_only' when "
        "the backtest found the model losing to that baseline (never worse than a spreadsheet).",
    )
    held: list[str] = Field(
        default_factory=list,
        description="Targets whose P50 was held to the room's range (within 10x its recent "
        "median; a room never seen: the largest training session): the plan's inputs pushed "
        "the model past anything the room's data supports, and the drivers explain the "
        "forecast before the hold.",
    )
    explanation: Explanation | None = Field(None, description="Absent when drivers=false.")


class ErrorItem(BaseModel):
    loc: list[str | int] = Field(description="Path to the failing field.")
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """Every 4xx body: a summary and, for validation errors, one item per failing field."""

    error: str
    detail: list[ErrorItem] = Field(default_factory=list)


# --------------------------------------------------------------------------- forecast


class ForecastRequest(BaseModel):
    model_config = _example(FORECAST_EXAMPLE)

    plans: list[SessionPlan] = Field(min_length=1, max_length=MAX_PLANS)
    drivers: bool = Field(True, description="Explain each plan (skip in bulk requests).")

    @model_validator(mode="after")
    def _unique_ids(self) -> ForecastRequest:
        _check_unique_ids(self.plans)
        return self


class ForecastResponse(BaseModel):
    model_config = _OUT

    forecasts: list[PlanForecast]
    model: ModelInfo


# --------------------------------------------------------------------------- compare


class Variant(BaseModel):
    model_config = _STRICT

    name: Name
    plan: SessionPlan


class CompareRequest(BaseModel):
    model_config = _example(COMPARE_EXAMPLE)

    base: SessionPlan
    variants: list[Variant] = Field(min_length=1, max_length=MAX_VARIANTS)
    drivers: bool = True

    @model_validator(mode="after")
    def _unique_names(self) -> CompareRequest:
        names = [v.name for v in self.variants]
        dup = sorted({n for n in names if names.count(n) > 1} | ({"base"} & set(names)))
        if dup:
            raise ValueError(f"variants: names must be unique and not 'base': {dup}")
        return self


class Delta(BaseModel):
    """A variant's P50 against the base: ``delta = variant - base``, ``ratio = variant / base``
    (null when the base is 0)."""

    model_config = _OUT

    base: NonNeg
    value: NonNeg
    delta: Finite
    ratio: NonNeg | None


class Differences(BaseModel):
    model_config = _OUT

    viewers: Delta
    orders: Delta
    gmv: Delta
    conversion: Delta
    aov: Delta


class VariantForecast(BaseModel):
    model_config = _OUT

    name: str
    forecast: PlanForecast
    differences: Differences


class CompareResponse(BaseModel):
    model_config = _OUT

    base: PlanForecast
    variants: list[VariantForecast]
    model: ModelInfo


# --------------------------------------------------------------------------- suggest


class HourRange(BaseModel):
    """Local start hours to try (inclusive), on the base plan's date and UTC offset."""

    model_config = _STRICT

    min: Annotated[int, Field(ge=0, le=23)]
    max: Annotated[int, Field(ge=0, le=23)]

    @model_validator(mode="after")
    def _ordered(self) -> HourRange:
        if self.min > self.max:
            raise ValueError("min must be <= max")
        return self

    def values(self) -> list[int]:
        return list(range(self.min, self.max + 1))


class DurationRange(BaseModel):
    """Planned durations to try, minutes: ``min, min + step, ...`` up to ``max`` (<= 24 values)."""

    model_config = _STRICT

    min: Annotated[float, Field(gt=0, le=MAX_DURATION_MIN, allow_inf_nan=False)]
    max: Annotated[float, Field(gt=0, le=MAX_DURATION_MIN, allow_inf_nan=False)]
    step: Annotated[float, Field(ge=5, le=MAX_DURATION_MIN, allow_inf_nan=False)] = 30

    @model_validator(mode="after")
    def _ordered(self) -> DurationRange:
        if self.min > self.max:
            raise ValueError("min must be <= max")
        if len(self.values()) > 24:
            raise ValueError("at most 24 durations: raise step or narrow the range")
        return self

    def values(self) -> list[float]:
        n = int((self.max - self.min) // self.step) + 1
        return [self.min + i * self.step for i in range(n)]


class SearchSpace(BaseModel):
    """What may change; anything left out keeps the base plan's value."""

    model_config = _STRICT

    start_hour: HourRange | None = None
    duration_min: DurationRange | None = None
    promos: list[Mechanic] = Field(
        default_factory=list,
        max_length=4,
        description="Mechanics tried on and off (on = the base value, else PROMO_ON_DEFAULTS).",
    )
    paid_promo_budget: list[Money] = Field(
        default_factory=list, max_length=10, description="Warm-up paid budgets to try."
    )

    def size(self) -> int:
        n = len(self.start_hour.values()) if self.start_hour else 1
        n *= len(self.duration_min.values()) if self.duration_min else 1
        n *= 2 ** len(set(self.promos))
        n *= max(1, len(set(self.paid_promo_budget)))
        return n


class SuggestRequest(BaseModel):
    model_config = _example(SUGGEST_EXAMPLE)

    base: SessionPlan
    space: SearchSpace
    objective: Objective = "gmv"
    top_k: Annotated[int, Field(ge=1, le=20)] = 5
    drivers: bool = Field(True, description="Explain the top-k variants.")

    @model_validator(mode="after")
    def _bounded(self) -> SuggestRequest:
        size = self.space.size()
        if size > MAX_CANDIDATES:
            raise ValueError(f"space: {size} candidates, at most {MAX_CANDIDATES}; narrow it")
        lines = max(1, len(self.base.products or ()))
        work = (size + 1 + self.top_k) * lines
        if work > MAX_SUGGEST_LINES:
            raise ValueError(
                f"space: {size} candidates x {lines} product lines = {work} plan lines to score,"
                f" at most {MAX_SUGGEST_LINES}; narrow the space, lower top_k or send fewer lines"
            )
        return self


class Suggestion(BaseModel):
    model_config = _OUT

    rank: int
    changes: dict[str, float | str] = Field(
        description="Fields that differ from the base plan (start_time as ISO text)."
    )
    plan: SessionPlan
    forecast: PlanForecast
    gain: Delta = Field(description="Objective P50 against the base plan.")


class SuggestResponse(BaseModel):
    model_config = _OUT

    objective: Objective
    n_candidates: int
    base: PlanForecast
    suggestions: list[Suggestion]
    model: ModelInfo


# --------------------------------------------------------------------------- review


class Actuals(BaseModel):
    """What happened (the contract's outcome columns)."""

    model_config = _STRICT

    viewers: Count
    orders: Count
    gmv: Money


class TargetReview(BaseModel):
    model_config = _OUT

    target: Target
    forecast: Interval
    actual: NonNeg
    error: Finite = Field(description="actual - P50.")
    abs_pct_error: NonNeg | None = Field(description="|actual - P50| / actual; null if 0.")
    log_ratio: Finite = Field(description="log1p(actual) - log1p(P50).")
    position: Literal["below", "within", "above"] = Field(description="Actual vs P10-P90.")


class FamilyWeight(BaseModel):
    model_config = _OUT

    family: Family
    contribution: Finite
    multiplier: NonNeg


class ReviewRequest(BaseModel):
    model_config = _example(REVIEW_EXAMPLE)

    plan: SessionPlan
    actual: Actuals


class ReviewResponse(BaseModel):
    model_config = _OUT

    forecast: PlanForecast
    review: list[TargetReview]
    leaned_on: list[FamilyWeight] = Field(
        description="Families of the GMV forecast, largest |contribution| first."
    )
    model: ModelInfo


# --------------------------------------------------------------------------- segment


def _plausible_time(value: datetime | None) -> datetime | None:
    if value is not None and not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"must be between {MIN_YEAR} and {MAX_YEAR}")
    return value


PlausibleTime = Annotated[AwareDatetime, AfterValidator(_plausible_time)]


class FanEvent(BaseModel):
    """One ``fan_events`` contract row."""

    model_config = _STRICT

    fan_id: str = Field(min_length=1, max_length=200)
    room_id: str = Field(min_length=1, max_length=200)
    event_time: PlausibleTime
    event_type: EventType
    session_id: str | None = Field(None, min_length=1, max_length=200)
    watch_seconds: Annotated[float, Field(ge=0, le=MAX_COUNT, allow_inf_nan=False)] | None = None
    amount: Money | None = None


class SegmentRequest(BaseModel):
    model_config = _example(SEGMENT_EXAMPLE)

    events: list[FanEvent] = Field(min_length=1, max_length=MAX_EVENTS)
    cutoff: PlausibleTime | None = Field(
        None, description="Score as of this time (default: just after the last event)."
    )


class FanTier(BaseModel):
    model_config = _OUT

    fan_id: str
    tier: Tier
    p_core: NonNeg
    p_active: NonNeg
    p_potential: NonNeg
    p_dormant: NonNeg = Field(description="Churn-risk score.")


class SegmentResponse(BaseModel):
    model_config = _OUT

    cutoff: str
    fans: list[FanTier]
    model: ModelInfo


# --------------------------------------------------------------------------- sessions (ingest)

Id = Annotated[str, Field(min_length=1, max_length=200)]
OptCount = Count | None
OptMoney = Money | None


class SessionRecord(BaseModel):
    """One finished session: a ``sessions`` contract row with its outcomes (viewers, orders and
    GMV required). Money in the room's currency, durations in minutes, dwell in seconds."""

    model_config = _STRICT

    session_id: Id
    room_id: Id
    platform: Platform
    host_id: Id | None = Field(None, description="The host; default: the room id (unknown).")
    start_time: PlausibleTime
    planned_duration_min: (
        Annotated[float, Field(gt=0, le=MAX_DURATION_MIN, allow_inf_nan=False)] | None
    ) = None
    session_type: SessionType = "daily"
    title: str | None = Field(None, max_length=500)
    followers_at_start: OptCount = None
    warmup_videos: OptCount = None
    community_pushes: OptCount = None
    paid_promo_budget: OptMoney = None
    lottery_count: OptCount = None
    red_envelope_count: OptCount = None
    flash_sale_rounds: OptCount = None
    coupon_value: OptMoney = None
    n_products: OptCount = None
    discount_depth: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    actual_duration_min: (
        Annotated[float, Field(ge=0, le=MAX_DURATION_MIN, allow_inf_nan=False)] | None
    ) = None
    viewers: Count = Field(description="Cumulative viewers (场观).")
    peak_concurrent: OptCount = None
    gmv: Money
    orders: Count
    buyers: OptCount = None
    avg_dwell_seconds: Annotated[float, Field(ge=0, le=MAX_COUNT, allow_inf_nan=False)] | None = (
        None
    )
    new_followers: OptCount = None


class ProductRecord(BaseModel):
    """One ``session_products`` contract row of a session in the same request."""

    model_config = _STRICT

    session_id: Id
    sku_id: Id
    category: Category
    list_price: Annotated[float, Field(gt=0, le=MAX_MONEY, allow_inf_nan=False)]
    live_price: Annotated[float, Field(gt=0, le=MAX_MONEY, allow_inf_nan=False)]
    stock: OptCount = None
    is_new_launch: bool = False
    units_sold: OptCount = None
    gmv: OptMoney = None


class IngestRequest(BaseModel):
    """Finished sessions (and their product rows) to add to the history the forecasts read."""

    model_config = _example(INGEST_EXAMPLE)

    sessions: list[SessionRecord] = Field(min_length=1, max_length=MAX_INGEST_SESSIONS)
    products: list[ProductRecord] = Field(default_factory=list, max_length=MAX_INGEST_PRODUCTS)
    replace: bool = Field(
        False,
        description="Overwrite sessions already stored with other values (default: such a "
        "session is a 409 naming it, and nothing is added).",
    )


class IngestResponse(BaseModel):
    """What an ingest did, and the history the service forecasts from now."""

    model_config = _OUT

    added: int = Field(description="Sessions new to the history store.")
    unchanged: int = Field(description="Sessions already stored with the same content.")
    replaced: int = Field(description="Sessions overwritten (replace=true).")
    products_written: int = Field(
        description="Product rows written with added or replaced sessions."
    )
    rejected: int = Field(0, description="Failing rows (always 0 here: a failure is a 4xx).")
    warnings: int = Field(0, description="Rows kept whose values contradict each other.")
    store_version: int = Field(description="The history store's version after the ingest.")
    history_as_of: str | None = Field(
        description="Latest start_time of the history the service now forecasts from."
    )


def _check_unique_ids(plans: list[SessionPlan]) -> None:
    counts = Counter(p.plan_id(i) for i, p in enumerate(plans))
    dup = sorted(i for i, n in counts.items() if n > 1)
    if dup:
        raise ValueError(f"plans: session_id values must be unique: {dup}")


# --------------------------------------------------------------------------- model health


HEALTH_EXAMPLE: dict[str, Any] = {"window": 20, "h": 5.0}
"""The Model health tab's request: rolling figures over each room's last 20 sessions."""


class HealthRequest(BaseModel):
    """What the Model health tab asks for (every field has a default: ``{}`` is a request)."""

    model_config = _example(HEALTH_EXAMPLE)

    window: Annotated[int, Field(ge=1, le=1000)] = Field(
        20, description="Sessions per room in the rolling figures."
    )
    h: Annotated[float, Field(ge=0.5, le=50, allow_inf_nan=False)] = Field(
        5.0, description="CUSUM alarm threshold (sigmas) for a room's drift."
    )


class ModelHealthResponse(BaseModel):
    """The watch on live accuracy (``serving.monitor.health_report``): served forecasts
    against actuals by room, lead bucket and over time; drifted rooms; targets outside the
    backtest's band; drift of the plan inputs against the training data; retrain due."""

    model_config = _OUT

    model: ModelInfo
    sessions_with_actuals: int
    window: int
    rooms: list[dict[str, Any]] = Field(description="Rolling WAPE, bias, coverage per room.")
    lead: list[dict[str, Any]] = Field(description="Accuracy per target and lead bucket.")
    series: list[dict[str, Any]] = Field(
        description="Per target, the accuracy over the last 30 sessions after each session."
    )
    alarms: list[dict[str, Any]] = Field(description="Rooms whose forecasts drifted (CUSUM).")
    bands: list[dict[str, Any]] = Field(
        description="Per target, live WAPE and coverage against the backtest's band."
    )
    drift: list[dict[str, Any]] = Field(
        description="Per plan input, PSI of the latest plans against the training data."
    )
    drift_reference: bool = Field(description="Whether the bundle holds the training summary.")
    drifted_inputs: list[str]
    retrain_due: bool
    reasons: list[str]
