"""Fan features and tier labels: one DuckDB SQL definition for training, batch runs and serving.

Everything is computed relative to a **cutoff** instant ``C``:

* :func:`fan_features` summarises each fan's events strictly before ``C`` (the model inputs).
* :func:`tier_labels` applies :class:`TierRules` to the window ``[C, C + window_days)`` (the
  target: the tier a fan will be in).
* :func:`current_tiers` applies the same rules to ``[C - window_days, C)`` (the fan's tier
  today: the persistence baseline and what live-ops see now).

The population is always every fan with at least one event before ``C``.

Time handling. Events are reduced to integer microseconds since the Unix epoch (UTC) inside
the SQL, so results never depend on DuckDB's ``TimeZone`` setting. Timezone-aware times
(``TIMESTAMP WITH TIME ZONE``, what the contract stores) are taken as the instants they are;
naive times are read as wall-clock times in ``tz`` (the contract's rule). A cutoff without a
timezone, e.g. ``"2024-06-01"``, means midnight in ``tz`` (default Asia/Shanghai). Day-based
counts ("active days", "last 30 days") use 24-hour days counted back from the cutoff, so with a
midnight cutoff they are local calendar days.

Input is a contract ``fan_events`` DataFrame or a Parquet file / folder of Parquet files, which
DuckDB reads directly (the events are never materialised in pandas). The same SQL text runs in
both cases; only the relation it reads from differs.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from features.contract import DEFAULT_TZ

TIERS: tuple[str, ...] = ("core", "active", "potential", "dormant")
"""Tier names in the fixed order used as class indices by the tier model."""

DAY_US = 86_400_000_000
"""Microseconds in one day."""

REQUIRED_COLUMNS: tuple[str, ...] = ("fan_id", "event_time", "event_type")
"""Columns the fan SQL reads; ``room_id`` and ``session_id`` are not used."""
OPTIONAL_COLUMNS: tuple[str, ...] = ("watch_seconds", "amount")
ENGAGEMENT_TYPES: tuple[str, ...] = ("watch", "comment", "like", "share")
"""Event types that make a day an *active day*."""
INTERACTION_TYPES: tuple[str, ...] = (*ENGAGEMENT_TYPES, "follow")
"""Event types counted as interactions / watches for the *potential* tier."""

WINDOW_COLUMNS: tuple[str, ...] = (
    "orders",
    "spend",
    "watch_sessions",
    "active_days",
    "interactions",
)
"""Per-fan window aggregates the tier rules read (see :func:`assign_tiers`)."""

_NAIVE_TIME_TYPES = ("TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S", "DATE")
_AWARE_TIME_TYPES = ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ", "TIMESTAMPTZ_NS")


class TierRules(BaseModel):
    """Thresholds that tier a fan from one window of events (money in the room's currency).

    Over the window's events, per fan: ``orders`` (order events), ``spend`` (sum of order
    amounts, refunds not subtracted), ``watch_sessions`` (watch events: one per visit to a live
    session), ``active_days`` (distinct days with a watch / comment / like / share event) and
    ``interactions`` (watch / comment / like / share / follow events). Then, first match wins:

    * **core**: a repeat buyer (``orders >= core_min_orders``) who spends a lot
      (``spend >= core_min_spend``) or also watches a lot
      (``watch_sessions >= core_min_watch_sessions``);
    * **active**: not core, but engages regularly (``active_days >= active_min_active_days``)
      or buys repeatedly with a low spend;
    * **potential**: some meaningful activity: any order, or
      ``interactions >= potential_min_events``;
    * **dormant**: nothing of the above in the window.

    Purchase-only histories (only order / refund events, e.g. CDNOW) have no watch or
    interaction events, so the rules degrade to: core = repeat buyer with spend at least
    ``core_min_spend``; active = repeat buyer below that spend; potential = exactly one order;
    dormant = no order in the window. Pick ``core_min_spend`` in the data's currency and scale
    (e.g. about 100 USD over 90 days for CDNOW's music buyers).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_days: int = Field(30, ge=1, le=366, description="Window length, days.")
    core_min_orders: int = Field(2, ge=1, description="Orders that make a repeat buyer.")
    core_min_spend: float = Field(
        300.0, ge=0, allow_inf_nan=False, description="Window spend for core, currency."
    )
    core_min_watch_sessions: int = Field(
        8, ge=1, description="Watch sessions that make a repeat buyer core despite low spend."
    )
    active_min_active_days: int = Field(
        4, ge=1, description="Distinct active days (watch/comment/like/share) for active."
    )
    potential_min_events: int = Field(
        2, ge=1, description="Interactions / watches for potential when there is no order."
    )


# ----------------------------------------------------------------------------------------------
# SQL (the one definition)


@dataclass(frozen=True)
class EventSource:
    """A relation of fan events as DuckDB sees it.

    ``relation`` is SQL text usable after ``FROM``: a registered view name or a
    ``read_parquet(...)`` call. ``columns`` are the columns it has; ``naive_times`` says the
    event times carry no timezone (they are then read in the caller's ``tz``); ``int_ids``
    says ``fan_id`` is an integer column: the fan features then group the integers and turn
    only each fan's id into text (the same ids as text: the cast is one-to-one on integers),
    instead of casting every event's id before grouping (about a third of a plain group-by).
    """

    relation: str
    columns: frozenset[str]
    naive_times: bool = False
    int_ids: bool = False


_SIGNED_INTS = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT")
INTEGER_TYPES = frozenset((*_SIGNED_INTS, *(f"U{t}" for t in _SIGNED_INTS)))
"""DuckDB integer types: a fan_id of one of these is grouped as is (:class:`EventSource`)."""


def _as_source(source: EventSource | str) -> EventSource:
    """A bare relation string is taken to have every contract column and aware times."""
    if isinstance(source, EventSource):
        return source
    return EventSource(source, frozenset((*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)))


_GLOB_CHARS = re.compile(r"([*?\[])")
"""Characters DuckDB and fsspec expand in a file path."""


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _in_list(values: Iterable[str]) -> str:
    return "(" + ", ".join(_quote(v) for v in values) + ")"


def cutoff_us(cutoff: pd.Timestamp | str, tz: str = DEFAULT_TZ) -> int:
    """The cutoff as integer microseconds since the epoch; a naive cutoff is wall time in ``tz``."""
    ts = pd.Timestamp(cutoff)
    if ts is pd.NaT:
        raise ValueError(f"cutoff is not a time: {cutoff!r}")
    if ts.tzinfo is None:
        ts = ts.tz_localize(tz)
    return int(ts.value // 1000)


MONEY_SCALE = 100
"""Amounts are summed in integer cents (1 / MONEY_SCALE of a currency unit)."""
WATCH_SCALE = 1000
"""Watch time is summed in integer milliseconds (1 / WATCH_SCALE of a second)."""


def _scaled(column: str, scale: int, present: bool) -> str:
    """SQL: ``column * scale`` rounded to an integer-valued DOUBLE; 0 when null, NaN or absent.

    Sums of integer-valued doubles below 2**53 are exact whatever the order of addition, so
    totals do not depend on DuckDB's thread scheduling (plain float sums would, in the last bits).
    """
    if not present:
        return "CAST(0 AS DOUBLE)"
    v = f"CAST({column} AS DOUBLE)"
    return f"CASE WHEN isfinite({v}) THEN round({v} * {scale}) ELSE 0 END"


def _events_cte(
    source: EventSource | str, tz: str, fan_ids_relation: str | None, *, raw_ids: bool = False
) -> str:
    """The normalising CTE ``ev``: string ids, event time as UTC microseconds, scaled amounts.

    ``amount_c`` is the amount in cents, ``watch_ms`` the watch time in milliseconds (see
    :func:`_scaled`). With ``raw_ids`` integer ids (``source.int_ids``) stay integers: the
    caller groups them and casts each group's id to text itself.
    """
    source = _as_source(source)
    fan_id = "fan_id" if raw_ids and source.int_ids else "CAST(fan_id AS VARCHAR)"
    cols = source.columns
    if source.naive_times:
        t_expr = f"epoch_us(timezone({_quote(tz)}, CAST(event_time AS TIMESTAMP)))"
    else:
        t_expr = "epoch_us(CAST(event_time AS TIMESTAMPTZ))"
    where = ""
    if fan_ids_relation is not None:
        where = f"\n    WHERE CAST(fan_id AS VARCHAR) IN (SELECT fan_id FROM {fan_ids_relation})"
    return f"""ev AS NOT MATERIALIZED (
    SELECT
        {fan_id} AS fan_id,
        CAST(event_type AS VARCHAR) AS event_type,
        {t_expr} AS t_us,
        {_scaled("watch_seconds", WATCH_SCALE, "watch_seconds" in cols)} AS watch_ms,
        {_scaled("amount", MONEY_SCALE, "amount" in cols)} AS amount_c
    FROM {source.relation}{where}
)"""


_MASK_BITS = 63
"""Days per BIGINT bitmask of active days (bit 63 is the sign bit, left unused)."""
ACTIVE_DAYS_HORIZON = 90
"""Longest window for distinct active days, days (bitmasks; see :func:`fan_features_sql`)."""


def _day_masks(flag: str, day: str, days: int, prefix: str) -> list[tuple[str, str]]:
    """(name, SQL aggregate) of bitmasks marking the days ``0 <= day < days`` where ``flag``.

    Mask ``k`` holds days ``63k .. 63k + 62`` in bits 0..62. The shift is taken modulo 63 so
    that it is valid on every row (DuckDB may evaluate aggregate inputs before the FILTER), so
    ``day`` must never be negative.
    Distinct days counted this way cost one filtered aggregate per 63 days; ``count(DISTINCT)``
    costs as much as all the other aggregates together at 30M events.
    """
    out = []
    for k, lo in enumerate(range(0, days, _MASK_BITS)):
        hi = min(lo + _MASK_BITS, days)
        expr = (
            f"COALESCE(bit_or(CAST(1 AS BIGINT) << ({day} % {_MASK_BITS}))"
            f" FILTER ({flag} AND {day} >= {lo} AND {day} < {hi}), 0)"
        )
        out.append((f"{prefix}{k}", expr))
    return out


def _bits_below(prefix: str, days: int) -> str:
    """SQL: the number of marked days in ``[0, days)`` from the masks ``{prefix}0, ...``."""
    terms = []
    for k, lo in enumerate(range(0, days, _MASK_BITS)):
        width = min(_MASK_BITS, days - lo)
        mask = f"{prefix}{k}" if width == _MASK_BITS else f"({prefix}{k} & {(1 << width) - 1})"
        terms.append(f"CAST(bit_count({mask}) AS INTEGER)")
    return " + ".join(terms)


# Per-fan aggregates over events before the cutoff: (column, SQL aggregate). Each one costs
# about 0.6 s of CPU at 30M events, so the list is kept to what the features need.
_AGGREGATES: tuple[tuple[str, str], ...] = (
    ("last_age", "min(age_us)"),
    ("first_age", "max(age_us)"),
    ("last_order_age", "min(age_us) FILTER (is_order)"),
    ("last_watch_age", "min(age_us) FILTER (is_watch)"),
    ("first_watch_age", "max(age_us) FILTER (is_watch)"),
    ("first_order_age", "max(age_us) FILTER (is_order)"),
    # sums of the orders' day indices as integer-valued doubles (exact below 2**53 in any
    # order of addition, so deterministic; 8-byte states keep the aggregate within memory)
    ("order_day_sum", "sum(CAST(day_idx AS DOUBLE)) FILTER (is_order)"),
    ("order_day_sq", "sum(CAST(day_idx * day_idx AS DOUBLE)) FILTER (is_order)"),
    ("events_all", "count(*)"),
    ("orders_all", "count(*) FILTER (is_order)"),
    ("orders_30d", "count(*) FILTER (is_order AND day_idx < 30)"),
    ("orders_90d", "count(*) FILTER (is_order AND day_idx < 90)"),
    ("watch_all", "count(*) FILTER (is_watch)"),
    ("watch_30d", "count(*) FILTER (is_watch AND day_idx < 30)"),
    ("watch_90d", "count(*) FILTER (is_watch AND day_idx < 90)"),
    ("amount_all", "sum(amount_c) FILTER (is_order)"),
    ("amount_30d", "sum(amount_c) FILTER (is_order AND day_idx < 30)"),
    ("amount_90d", "sum(amount_c) FILTER (is_order AND day_idx < 90)"),
    ("refunds_all", "count(*) FILTER (event_type = 'refund')"),
    ("watch_ms_30d", "sum(watch_ms) FILTER (is_watch AND day_idx < 30)"),
    ("watch_ms_90d", "sum(watch_ms) FILTER (is_watch AND day_idx < 90)"),
    ("comments_all", "count(*) FILTER (event_type = 'comment')"),
    ("likes_all", "count(*) FILTER (event_type = 'like')"),
    ("shares_all", "count(*) FILTER (event_type = 'share')"),
    ("follows_all", "count(*) FILTER (event_type = 'follow')"),
    *_day_masks("is_engaged", "day_idx", ACTIVE_DAYS_HORIZON, "active_mask"),
)

_M, _W = MONEY_SCALE, WATCH_SCALE
# Output features: (name, SQL over the per-fan aggregates). Every one is cast to DOUBLE.
_FEATURES: tuple[tuple[str, str], ...] = (
    ("fan__days_since_last_event", f"last_age / {DAY_US}"),
    ("fan__days_since_last_order", f"last_order_age / {DAY_US}"),
    ("fan__days_since_last_watch", f"last_watch_age / {DAY_US}"),
    ("fan__tenure_days", f"first_age / {DAY_US}"),
    ("fan__events_all", "events_all"),
    ("fan__orders_30d", "orders_30d"),
    ("fan__orders_90d", "orders_90d"),
    ("fan__orders_all", "orders_all"),
    ("fan__watch_sessions_30d", "watch_30d"),
    ("fan__watch_sessions_90d", "watch_90d"),
    ("fan__watch_sessions_all", "watch_all"),
    ("fan__active_days_30d", _bits_below("active_mask", 30)),
    ("fan__active_days_90d", _bits_below("active_mask", ACTIVE_DAYS_HORIZON)),
    ("fan__order_amount_30d", f"COALESCE(amount_30d, 0) / {_M}"),
    ("fan__order_amount_90d", f"COALESCE(amount_90d, 0) / {_M}"),
    ("fan__order_amount_all", f"COALESCE(amount_all, 0) / {_M}"),
    ("fan__mean_order_value", f"amount_all / {_M} / NULLIF(orders_all, 0)"),
    ("fan__refunds_all", "refunds_all"),
    ("fan__refund_rate", "refunds_all / NULLIF(orders_all, 0)"),
    ("fan__watch_seconds_30d", f"COALESCE(watch_ms_30d, 0) / {_W}"),
    ("fan__watch_seconds_90d", f"COALESCE(watch_ms_90d, 0) / {_W}"),
    ("fan__comments_all", "comments_all"),
    ("fan__likes_all", "likes_all"),
    ("fan__shares_all", "shares_all"),
    ("fan__follows_all", "follows_all"),
    ("fan__watch_trend", "(watch_30d + 1) / ((watch_90d - watch_30d) / 2 + 1)"),
    ("fan__order_trend", "(orders_30d + 1) / ((orders_90d - orders_30d) / 2 + 1)"),
    # rhythm of buying (order events; see fan_features_sql)
    ("fan__days_since_first_order", f"first_order_age / {DAY_US}"),
    (
        "fan__order_gap_mean",
        f"(first_order_age - last_order_age) / {DAY_US} / NULLIF(orders_all - 1, 0)",
    ),
    (
        "fan__order_day_spread",
        "sqrt(greatest(order_day_sq - order_day_sum * order_day_sum / orders_all, 0)"
        " / NULLIF(orders_all - 1, 0))",
    ),
    (
        "fan__order_gap_ratio",
        "last_order_age"
        " / NULLIF((first_order_age - last_order_age) / NULLIF(orders_all - 1, 0), 0)",
    ),
    (
        "fan__spend_trend",
        f"(COALESCE(amount_30d, 0) / {_M} + 1)"
        f" / ((COALESCE(amount_90d, 0) - COALESCE(amount_30d, 0)) / {_M} / 2 + 1)",
    ),
    # rhythm: visits (watch events)
    (
        "fan__visit_gap_mean",
        f"(first_watch_age - last_watch_age) / {DAY_US} / NULLIF(watch_all - 1, 0)",
    ),
    (
        "fan__visit_gap_ratio",
        "last_watch_age / NULLIF((first_watch_age - last_watch_age) / NULLIF(watch_all - 1, 0), 0)",
    ),
    (
        "fan__active_day_share_90d",
        f"({_bits_below('active_mask', ACTIVE_DAYS_HORIZON)})"
        f" / least({ACTIVE_DAYS_HORIZON}, ceil(first_age / {DAY_US}))",
    ),
)

FEATURE_COLUMNS: tuple[str, ...] = tuple(name for name, _ in _FEATURES)
"""The ``fan__*`` columns :func:`fan_features` returns, in order."""


def _select_list(items: Iterable[tuple[str, str]], indent: int, cast: str | None = None) -> str:
    sep = ",\n" + " " * indent
    if cast:
        return sep.join(f"CAST({expr} AS {cast}) AS {name}" for name, expr in items)
    return sep.join(f"{expr} AS {name}" for name, expr in items)


def fan_features_sql(
    source: EventSource | str,
    cutoff: pd.Timestamp | str,
    *,
    tz: str = DEFAULT_TZ,
    fan_ids_relation: str | None = None,
) -> str:
    """SQL text of the fan features at ``cutoff`` over ``source`` (one row per fan, by fan_id).

    ``source`` is an :class:`EventSource` or a bare relation such as
    ``"read_parquet('events/*.parquet')"`` (then taken to have every contract column and
    timezone-aware times). ``fan_ids_relation`` optionally names a relation with a ``fan_id``
    column that restricts the fans. A naive ``cutoff`` is wall time in ``tz``.

    Definitions (``age`` = cutoff minus event time; "last N days" = events at or after
    ``cutoff - N days``; day ``k`` = the 24 hours ``[cutoff - (k+1) days, cutoff - k days)``):

    * recency, days (fractional): ``fan__days_since_last_event`` / ``_order`` / ``_watch``;
      NaN when the fan never had such an event (LightGBM treats NaN as missing, no sentinel);
      ``fan__tenure_days``: days since the first event;
    * frequency, counts: ``fan__events_all``; ``fan__orders_30d/90d/all``;
      ``fan__watch_sessions_30d/90d/all`` (watch events: one per visit to a live session);
      ``fan__active_days_30d/90d``: distinct days with a watch / comment / like / share event;
    * monetary, currency: ``fan__order_amount_30d/90d/all``, ``fan__mean_order_value`` (NaN
      without orders), ``fan__refunds_all`` (refund events), ``fan__refund_rate`` (refund
      events per order event; NaN without orders);
    * watch time, seconds: ``fan__watch_seconds_30d/90d``;
    * interactions, all-time counts: ``fan__comments_all``, ``fan__likes_all``,
      ``fan__shares_all``, ``fan__follows_all``;
    * trends, the last 30 days against the 60 days before (days 30..89) as 30-day rates with
      +1 smoothing, ``(n_30d + 1) / ((n_90d - n_30d) / 2 + 1)``: 1 = steady, > 1 rising,
      < 1 falling; ``fan__watch_trend`` (watch sessions), ``fan__order_trend`` (orders) and
      ``fan__spend_trend`` (order amount);
    * rhythm of buying, over order events: ``fan__days_since_first_order`` (NaN without orders;
      with ``fan__orders_all`` and ``fan__days_since_last_order`` these are the repeat count,
      the last repeat and the age that buy-till-you-die models read, see
      :mod:`features.btyd`); ``fan__order_gap_mean``, days from the first to the last order over
      the number of orders minus one (NaN below 2 orders); ``fan__order_day_spread``, the
      standard deviation of the orders' day indices (NaN below 2 orders: small against the
      gap = bursts, about 0.29 x the span = even buying); ``fan__order_gap_ratio``, days since
      the last order over the mean gap (> 1: later than usual). Distinct order days, gaps
      between consecutive orders and the first order's value need a second pass or a window
      over the orders: measured at 1 M fans / 30 M events, they tripled the SQL's time (the
      aggregate no longer fits DuckDB's memory limit), so they are left out;
    * rhythm of watching: ``fan__visit_gap_mean``, days between watch events on average (first
      to last over their count minus one; NaN below 2 watches), ``fan__visit_gap_ratio``, days
      since the last watch over that gap, and ``fan__active_day_share_90d``, active days in the
      last 90 over the days the fan has been known in them (regularity of engagement).

    Cost drives the list: at 30M events every aggregate costs about 0.3 s of wall time, a
    ``count(DISTINCT ...)`` about 3 s (so distinct rooms and sessions are left out, and distinct
    days are counted with bitmasks, up to :data:`ACTIVE_DAYS_HORIZON` days). Every feature is
    DOUBLE.
    """
    c = cutoff_us(cutoff, tz)
    return f"""WITH {_events_cte(source, tz, fan_ids_relation, raw_ids=True)},
b AS NOT MATERIALIZED (
    SELECT
        fan_id, event_type, watch_ms, amount_c,
        {c} - t_us AS age_us,
        ({c} - 1 - t_us) // {DAY_US} AS day_idx,
        event_type = 'order' AS is_order,
        event_type = 'watch' AS is_watch,
        event_type IN {_in_list(ENGAGEMENT_TYPES)} AS is_engaged
    FROM ev
    WHERE t_us < {c}
),
fan AS (
    SELECT
        fan_id AS fan_key,
        {_select_list(_AGGREGATES, 8)}
    FROM b
    GROUP BY fan_id
)
SELECT
    CAST(fan_key AS VARCHAR) AS fan_id,
    {_select_list(_FEATURES, 4, "DOUBLE")}
FROM fan
ORDER BY fan_id"""


def tier_window_sql(
    source: EventSource | str,
    cutoff: pd.Timestamp | str,
    start_days: int,
    end_days: int,
    *,
    tz: str = DEFAULT_TZ,
    fan_ids_relation: str | None = None,
) -> str:
    """SQL text of the window aggregates :data:`WINDOW_COLUMNS` the tier rules read.

    The window is ``[cutoff + start_days, cutoff + end_days)`` (days may be negative); the rows
    are every fan with an event before ``cutoff`` (zeros when the window is empty), by fan_id.
    Active days are 24-hour days counted from the window start. One scan, one aggregation.
    """
    if end_days <= start_days:
        raise ValueError(f"empty window: start_days={start_days}, end_days={end_days}")
    c = cutoff_us(cutoff, tz)
    start, end = c + start_days * DAY_US, c + end_days * DAY_US
    masks = _day_masks(
        f"in_win AND event_type IN {_in_list(ENGAGEMENT_TYPES)}",
        "day_idx",
        end_days - start_days,
        "active_mask",
    )
    return f"""WITH {_events_cte(source, tz, fan_ids_relation)},
b AS NOT MATERIALIZED (
    SELECT
        fan_id, event_type, amount_c, t_us,
        t_us >= {start} AND t_us < {end} AS in_win,
        greatest((t_us - {start}) // {DAY_US}, 0) AS day_idx
    FROM ev
    WHERE t_us < {max(c, end)}
),
agg AS (
    SELECT
        fan_id,
        count(*) FILTER (t_us < {c}) AS n_before,
        count(*) FILTER (in_win AND event_type = 'order') AS orders,
        sum(amount_c) FILTER (in_win AND event_type = 'order') AS spend_c,
        count(*) FILTER (in_win AND event_type = 'watch') AS watch_sessions,
        count(*) FILTER (in_win AND event_type IN {_in_list(INTERACTION_TYPES)}) AS interactions,
        {_select_list(masks, 8)}
    FROM b
    GROUP BY fan_id
)
SELECT
    fan_id,
    CAST(orders AS DOUBLE) AS orders,
    CAST(COALESCE(spend_c, 0) AS DOUBLE) / {MONEY_SCALE} AS spend,
    CAST(watch_sessions AS DOUBLE) AS watch_sessions,
    CAST({_bits_below("active_mask", end_days - start_days)} AS DOUBLE) AS active_days,
    CAST(interactions AS DOUBLE) AS interactions
FROM agg
WHERE n_before > 0
ORDER BY fan_id"""


# ----------------------------------------------------------------------------------------------
# Running the SQL


def connect(*, threads: int | None = 2, memory_limit: str = "1500MB") -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection tuned for the fan aggregates (bounded threads and memory)."""
    con = duckdb.connect()
    if threads is not None:
        con.execute("SET threads = ?", [int(threads)])
    con.execute("SET memory_limit = ?", [memory_limit])  # settings are parameters, never SQL
    con.execute("SET preserve_insertion_order = false")
    return con


def literal_pattern(path: str | Path) -> str:
    """``path`` as a DuckDB / fsspec file pattern that matches that one file and no other.

    Both expand ``*``, ``?`` and ``[...]`` in every path they read, a list's items included,
    so ``ev[1].parquet`` would read ``ev1.parquet``; each such character is bracketed
    (``ev[[]1].parquet``), which matches it as itself.
    """
    return _GLOB_CHARS.sub(r"[\1]", str(path))


def _parquet_relation(path: str | Path) -> str:
    """``read_parquet`` of a Parquet file, or of a folder's ``*.parquet`` files (sorted).

    Paths are literal: a name with ``*``, ``?`` or ``[`` is that file, never a glob pattern.
    """
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith(".parquet"))
        if not files:
            raise FileNotFoundError(f"{p}: no .parquet files in this folder")
    elif p.exists():
        files = [p]
    else:
        hint = " (paths are literal, not glob patterns)" if _GLOB_CHARS.search(str(p)) else ""
        raise FileNotFoundError(f"no such file: {p}{hint}")
    return "read_parquet([" + ", ".join(_quote(literal_pattern(f)) for f in files) + "])"


def _check_columns(names: Collection[str], where: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise ValueError(
            f"{where}: fan events lack required column(s) {', '.join(missing)}"
            f" (need {', '.join(REQUIRED_COLUMNS)})"
        )


@contextmanager
def _session(
    events: pd.DataFrame | str | Path,
    con: duckdb.DuckDBPyConnection | None,
    fan_ids: Iterable[str] | None,
) -> Iterator[tuple[duckdb.DuckDBPyConnection, EventSource, str | None]]:
    """Open (or reuse) a connection, expose ``events`` and ``fan_ids`` as relations, clean up."""
    own = con is None
    conn = connect() if con is None else con
    tag = uuid.uuid4().hex[:12]
    registered: list[str] = []
    try:
        if isinstance(events, pd.DataFrame):
            _check_columns(events.columns, "DataFrame")
            name = f"_fan_events_{tag}"
            cols = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in events.columns]
            conn.register(name, events[cols])
            registered.append(name)
            relation, where = name, "DataFrame"
        else:
            relation, where = _parquet_relation(events), str(events)
        try:
            described = conn.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
        except duckdb.Error as err:
            raise ValueError(f"{where}: cannot read fan events: {err}") from None
        types = {row[0]: str(row[1]) for row in described}
        _check_columns(types, where)
        time_type = types["event_time"]
        if time_type not in _NAIVE_TIME_TYPES + _AWARE_TIME_TYPES:
            raise ValueError(
                f"{where}: event_time has type {time_type}, expected a timestamp"
                " (validate the table against the fan_events contract first)"
            )
        source = EventSource(
            relation,
            frozenset(types),
            time_type in _NAIVE_TIME_TYPES,
            int_ids=types["fan_id"] in INTEGER_TYPES,
        )
        ids_relation = None
        if fan_ids is not None:
            ids_relation = f"_fan_ids_{tag}"
            ids = pd.DataFrame({"fan_id": pd.Series(list(fan_ids), dtype="str")})
            conn.register(ids_relation, ids)
            registered.append(ids_relation)
        yield conn, source, ids_relation
    finally:
        for name in registered:
            conn.unregister(name)
        if own:
            conn.close()


def _run(con: duckdb.DuckDBPyConnection, sql: str) -> pd.DataFrame:
    frame = con.sql(sql).to_arrow_table().to_pandas()
    return frame.reset_index(drop=True)


def fan_features(
    events: pd.DataFrame | str | Path,
    cutoff: pd.Timestamp | str,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    fan_ids: Iterable[str] | None = None,
    tz: str = DEFAULT_TZ,
) -> pd.DataFrame:
    """Per-fan features from events strictly before ``cutoff`` (see :func:`fan_features_sql`).

    ``events`` is a contract ``fan_events`` frame or a Parquet file / folder (its
    ``*.parquet`` files) read by DuckDB directly; paths are literal, never glob patterns.
    ``fan_ids`` restricts the output to those fans. A naive ``cutoff`` is wall time in ``tz``.
    Returns ``fan_id`` (str) and float64 ``fan__*`` columns, one row per fan
    with at least one event before the cutoff, sorted by ``fan_id``.

    Raises ``ValueError`` naming the missing columns when a required column is absent.
    """
    with _session(events, con, fan_ids) as (conn, source, ids):
        return _run(conn, fan_features_sql(source, cutoff, tz=tz, fan_ids_relation=ids))


def tier_window(
    events: pd.DataFrame | str | Path,
    cutoff: pd.Timestamp | str,
    start_days: int,
    end_days: int,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    fan_ids: Iterable[str] | None = None,
    tz: str = DEFAULT_TZ,
) -> pd.DataFrame:
    """Window aggregates (:data:`WINDOW_COLUMNS`) over ``[cutoff + start_days, cutoff + end_days)``
    for every fan with an event before ``cutoff``, sorted by ``fan_id``."""
    with _session(events, con, fan_ids) as (conn, source, ids):
        sql = tier_window_sql(source, cutoff, start_days, end_days, tz=tz, fan_ids_relation=ids)
        return _run(conn, sql)


def assign_tiers(window: pd.DataFrame, rules: TierRules) -> pd.Series:
    """The tier of each row of per-fan window aggregates (columns :data:`WINDOW_COLUMNS`).

    Vectorised; returns a ``category`` Series with categories :data:`TIERS`, aligned with
    ``window``. See :class:`TierRules` for the rules.
    """
    missing = [c for c in WINDOW_COLUMNS if c not in window.columns]
    if missing:
        raise ValueError(f"window aggregates lack column(s) {', '.join(missing)}")
    orders = window["orders"].to_numpy(dtype="float64", na_value=0.0)
    spend = window["spend"].to_numpy(dtype="float64", na_value=0.0)
    watches = window["watch_sessions"].to_numpy(dtype="float64", na_value=0.0)
    days = window["active_days"].to_numpy(dtype="float64", na_value=0.0)
    inter = window["interactions"].to_numpy(dtype="float64", na_value=0.0)
    repeat = orders >= rules.core_min_orders
    core = repeat & ((spend >= rules.core_min_spend) | (watches >= rules.core_min_watch_sessions))
    active = (days >= rules.active_min_active_days) | repeat
    potential = (orders >= 1) | (inter >= rules.potential_min_events)
    codes = np.select([core, active, potential], [0, 1, 2], default=3).astype("int8")
    cats = pd.Categorical.from_codes(codes, categories=list(TIERS))
    return pd.Series(cats, index=window.index, name="tier")


def _tiers(
    events: pd.DataFrame | str | Path,
    cutoff: pd.Timestamp | str,
    rules: TierRules,
    start_days: int,
    end_days: int,
    con: duckdb.DuckDBPyConnection | None,
    fan_ids: Iterable[str] | None,
    tz: str,
) -> pd.DataFrame:
    window = tier_window(events, cutoff, start_days, end_days, con=con, fan_ids=fan_ids, tz=tz)
    return pd.DataFrame({"fan_id": window["fan_id"], "tier": assign_tiers(window, rules)})


def tier_labels(
    events: pd.DataFrame | str | Path,
    cutoff: pd.Timestamp | str,
    rules: TierRules | None = None,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    fan_ids: Iterable[str] | None = None,
    tz: str = DEFAULT_TZ,
) -> pd.DataFrame:
    """Target tiers: ``rules`` on ``[cutoff, cutoff + window_days)`` for every fan with an
    event before ``cutoff`` (dormant when the window is empty). Columns ``fan_id``, ``tier``
    (category, :data:`TIERS`), sorted by ``fan_id``, aligned with :func:`fan_features`."""
    rules = rules or TierRules()
    return _tiers(events, cutoff, rules, 0, rules.window_days, con, fan_ids, tz)


def current_tiers(
    events: pd.DataFrame | str | Path,
    cutoff: pd.Timestamp | str,
    rules: TierRules | None = None,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    fan_ids: Iterable[str] | None = None,
    tz: str = DEFAULT_TZ,
) -> pd.DataFrame:
    """Tiers today: ``rules`` on ``[cutoff - window_days, cutoff)`` (the persistence baseline).

    Same rows and columns as :func:`tier_labels`.
    """
    rules = rules or TierRules()
    return _tiers(events, cutoff, rules, -rules.window_days, 0, con, fan_ids, tz)
