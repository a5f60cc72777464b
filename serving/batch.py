"""Batch fan segmentation: score every fan's tier from a file or folder of fan events.

:func:`segment_frame` is the one function that featurises and scores fan events: the batch run
applies it (in SQL form, bucket by bucket), the Dask engine maps it over partitions, the HTTP
service's ``/v1/segment`` and the notebooks call it directly. Features come from the one SQL
definition in :mod:`features.fans`; probabilities and tiers from
:func:`training.tiers.score_fans`.

:func:`segment` is the batch run behind ``livecast segment``:

1. **Inputs.** A Parquet or CSV file, or a folder of them (one kind per folder). Parquet is read
   by DuckDB directly (never loaded whole into pandas); CSV is read with pandas and checked
   with the pandera contract (CSV exports are small; convert big ones to Parquet).
2. **Validation before anything is written.** For Parquet, one DuckDB scan checks the contract
   columns (missing columns, null / empty ids, unparseable or null times, unknown event types,
   negative or absurd amounts and watch times) and, in the same scan, counts the events and
   finds the latest event time. Problems raise :class:`features.contract.ContractError` listing
   the first rows of each problem (``file:row``, 0-based) with the number of failing rows.
3. **Cutoff.** Default: the local midnight (``tz``) just after the latest event, i.e. the start
   of the next day, so every event is used and day counts are calendar days, like training.
4. **Buckets.** Fans are split into ``K`` hash buckets (``hash(fan_id) % K`` on the id as text;
   ``K`` defaults to one bucket per :data:`BUCKET_EVENTS` events, about 1 M fans, which DuckDB
   aggregates within its ``memory_limit``; 5 M fans in one bucket run out of it). With
   ``K > 1``, one DuckDB ``COPY ... PARTITION_BY`` pass first writes the events (only the
   columns the fan SQL reads) into per-bucket Parquet files in the run's temporary folder, so
   each bucket reads only its own events: one extra read and write of the input instead of
   ``K`` full scans (at 5 M fans the split took 22 s of a 75 s run, against 248 s with
   rescans). Each bucket is featurised by the fan SQL, streamed out in Arrow record batches
   of :data:`BATCH_ROWS` fans, scored and appended to a Parquet writer, so memory is bounded
   by a batch and DuckDB's ``memory_limit``. Batches stay in Arrow: the booster reads a
   row-major float64 matrix built from the Arrow columns and the output table is built from
   the ids and the probabilities, no pandas frame in between (same values as
   :func:`training.tiers.score_fans`). DuckDB and LightGBM use the cores this process may
   use (:func:`batch_threads`). Integer fan ids are grouped as integers and turned into text
   once per fan (:class:`features.fans.EventSource`). See ``benchmarks/bench_segment.py``.
5. **Atomic output.** The Parquet (``fan_id``, ``tier``, ``p_core``, ``p_active``,
   ``p_potential``, ``p_dormant``; rows grouped by bucket, sorted by fan_id within a bucket) is
   written under a temporary name in the destination folder and renamed at the end, together
   with the summary JSON beside it (``<out stem>.summary.json``). An interrupted run leaves no
   partial file and a previous output untouched; rerunning is safe. DuckDB spills to a
   per-run folder ``livecast-duckdb-<pid>-...`` in the system temporary folder. On SIGTERM the
   run stops and removes its temporary files and folder; those of a killed run (``kill -9``)
   are removed by the next run (:func:`features.io.remove_stale`).
6. **Summary.** Fans per tier, GMV share per tier (order amounts in the ``rules.window_days``
   before the cutoff, i.e. the window the tier rules read, attributed to each fan's *predicted*
   tier) and, given a previous run's output, the transition matrix (previous tier x new tier,
   with ``(new)`` fans and fans ``(gone)`` from the new run). With a 30- or 90-day window the
   GMV is summed from the fan features during the run; other windows cost one more scan of
   the input.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.btyd import BTYD_INPUTS
from features.contract import (
    DEFAULT_TZ,
    EVENT_TYPES,
    MAX_COUNT,
    MAX_MONEY,
    ContractError,
    validate,
)
from features.fans import (
    DAY_US,
    INTEGER_TYPES,
    MONEY_SCALE,
    OPTIONAL_COLUMNS,
    TIERS,
    EventSource,
    _events_cte,
    connect,
    cutoff_us,
    fan_features,
    fan_features_sql,
    literal_pattern,
)
from features.io import atomic_path, read_frame, scratch_dir

if TYPE_CHECKING:
    from training.tiers import TierModel

SCORE_COLUMNS: tuple[str, ...] = (
    "fan_id",
    "tier",
    "p_core",
    "p_active",
    "p_potential",
    "p_dormant",
)
"""Columns of a segmentation output, in order."""
REQUIRED_COLUMNS: tuple[str, ...] = ("fan_id", "room_id", "event_time", "event_type")
"""Columns the fan_events contract requires (``session_id``, ``watch_seconds``, ``amount`` are
optional; a purchase-only log has no watch times)."""
BUCKET_EVENTS = 32_000_000
"""Default events per hash bucket: ``K = ceil(events / BUCKET_EVENTS)``."""
SPILL_PARQUET = "COMPRESSION lz4, WRITE_BLOOM_FILTER false"
"""Parquet options of the per-bucket event files: read once, so cheap to write beats small."""
BATCH_ROWS = 262_144
"""Fans per record batch streamed from DuckDB to the scorer and the Parquet writer."""
FIRST_ROWS = 20
"""Failing rows listed per problem (the total count is always given)."""
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".tsv", ".txt")
NEW, GONE = "(new)", "(gone)"
SPILL_PREFIX = "livecast-duckdb-"
"""Name prefix of a run's DuckDB spill folder in the system temporary folder."""
GMV_FEATURES: dict[int, str] = {30: "fan__order_amount_30d", 90: "fan__order_amount_90d"}
"""Fan features that are exactly the order amounts in the last N days before the cutoff: the
GMV summary reads them instead of rescanning the events when the rules window is N days."""

Scores = pd.DataFrame | pa.Table
"""Scored fans: a frame (:func:`segment_frame`, the Dask engine) or an Arrow table with the
output schema (the local engine, which never converts its batches to pandas)."""
Batch = tuple[int, Scores, np.ndarray | None]
"""(bucket / partition, scored fans, each fan's window spend or None)."""

OUTPUT_SCHEMA = pa.schema(
    [
        ("fan_id", pa.string()),
        ("tier", pa.dictionary(pa.int8(), pa.string())),
        ("p_core", pa.float64()),
        ("p_active", pa.float64()),
        ("p_potential", pa.float64()),
        ("p_dormant", pa.float64()),
    ]
)

Engine = Literal["local", "dask"]


def empty_scores() -> pd.DataFrame:
    """A segmentation frame with no rows and the output dtypes (also the Dask ``meta``)."""
    out = pd.DataFrame(
        {
            "fan_id": pd.Series(dtype="str"),
            "tier": pd.Series(pd.Categorical([], categories=list(TIERS))),
        }
    )
    for col in SCORE_COLUMNS[2:]:
        out[col] = pd.Series(dtype="float64")
    return out


def batch_threads() -> int:
    """Threads of a batch run (DuckDB and LightGBM): the cores this process may use, its CPU
    affinity bounded by a cgroup CPU quota (a container's ``--cpus``)."""
    from livecast.config import detected_cores

    return detected_cores()


def _score(model: TierModel, feats: pd.DataFrame | pa.Table, num_threads: int) -> Scores:
    """Scores of a batch of fan features: a frame for a frame (:func:`score_fans`), an Arrow
    table with the output schema for an Arrow table (:func:`_score_arrow`)."""
    from training.tiers import score_fans

    if isinstance(feats, pa.Table):
        return _score_arrow(model, feats, num_threads)
    if feats.empty:
        return empty_scores()
    return score_fans(model, feats, num_threads=num_threads)


def _arrow_column(feats: pa.Table, name: str) -> np.ndarray:
    col = feats.column(name).cast(pa.float64())
    if col.null_count:
        col = pc.fill_null(col, np.nan)
    return col.to_numpy()


def _feature_matrix(feats: pa.Table, model: TierModel) -> np.ndarray:
    """The C-contiguous float64 model matrix of Arrow fan features (null -> NaN), built
    column by column without pandas: the same values as ``TierModel.matrix`` of the frame
    (derived columns, the buy-till-you-die ones, computed from their inputs the same way)."""
    missing = [c for c in model.inputs() if c not in feats.column_names]
    if missing:
        raise ValueError(
            f"fan features lack column(s) {', '.join(missing)}"
            " (build them with features.fans.fan_features)"
        )
    names = list(model.features)
    inputs = {c: _arrow_column(feats, c) for c in BTYD_INPUTS if c in feats.column_names}
    derived = model.derived(inputs) if inputs else {}
    X = np.empty((feats.num_rows, len(names)), dtype="float64")
    for j, name in enumerate(names):
        X[:, j] = derived[name] if name in derived else _arrow_column(feats, name)
    return X


_TIER_DICTIONARY = pa.array(TIERS, type=pa.string())


def _score_arrow(model: TierModel, feats: pa.Table, num_threads: int) -> pa.Table:
    """:func:`training.tiers.score_fans` for Arrow fan features, returning an Arrow table of
    the output schema: the booster reads a row-major float64 matrix built straight from the
    Arrow columns, and the ids go to the output without a detour through Python strings.
    Same probabilities and tiers as ``score_fans`` on the same features as a frame."""
    if "fan_id" not in feats.column_names:
        raise ValueError("fan features lack column fan_id")
    X = _feature_matrix(feats, model)
    proba = model.predict_proba(X, num_threads=num_threads)
    codes = model.decide(proba).astype("int8")
    by_column = np.asfortranarray(proba)
    fan_id = feats.column("fan_id")
    if fan_id.type != pa.string():
        fan_id = fan_id.cast(pa.string())
    arrays = [
        fan_id,
        pa.DictionaryArray.from_arrays(pa.array(codes, type=pa.int8()), _TIER_DICTIONARY),
        *(pa.array(by_column[:, i]) for i in range(by_column.shape[1])),
    ]
    return pa.Table.from_arrays(arrays, schema=OUTPUT_SCHEMA)


def _n_rows(scores: Scores) -> int:
    return scores.num_rows if isinstance(scores, pa.Table) else len(scores)


def _tier_codes(table: pa.Table) -> np.ndarray:
    """int codes into TIERS of an output table's tier column."""
    parts = []
    for chunk in table.column("tier").chunks:
        index = np.array([TIERS.index(t) for t in chunk.dictionary.to_pylist()], dtype="int64")
        parts.append(index[chunk.indices.to_numpy(zero_copy_only=False)])
    return np.concatenate(parts) if parts else np.zeros(0, dtype="int64")


def segment_frame(
    model: TierModel,
    events: pd.DataFrame,
    cutoff: pd.Timestamp | str,
    *,
    tz: str = DEFAULT_TZ,
    num_threads: int = 0,
) -> pd.DataFrame:
    """Contract fan_events rows -> ``score_fans(model, fan_features(events, cutoff))``.

    One row per fan with an event before ``cutoff``, sorted by fan_id: ``fan_id`` (str),
    ``tier`` (category, TIERS) and the four probabilities (float64; ``p_dormant`` is the
    churn-risk score). A naive ``cutoff`` is wall time in ``tz``. A frame of 2,000 fans (60,000
    events) takes about 0.1 s (a DuckDB connection is kept per thread). The events are expected
    to be contract-valid (validate user input first, e.g. with
    :func:`features.contract.validate`).
    """
    if events.empty:
        return empty_scores()
    feats = fan_features(events, cutoff, tz=tz, con=_frame_connection())
    return _score(model, feats, num_threads)


_LOCAL = threading.local()


def _frame_connection() -> duckdb.DuckDBPyConnection:
    """This thread's DuckDB connection for :func:`segment_frame` (opening one costs about as
    much as featurising a few thousand fans; a connection must not be shared across threads
    or forked processes)."""
    pid = os.getpid()
    held = getattr(_LOCAL, "con", None)
    if held is None or held[0] != pid:
        held = (pid, connect(threads=1))  # the service runs one per heavy-work thread
        _LOCAL.con = held
    return held[1]


# ----------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class EventInput:
    """The event files of one run: all Parquet or all CSV."""

    paths: tuple[Path, ...]
    kind: Literal["parquet", "csv"]
    label: str

    def row_label(self, path: str, row: int) -> str | int:
        """How a failing row is named: its 0-based row, prefixed by the file in a folder."""
        return f"{Path(path).name}:{row}" if len(self.paths) > 1 else row


def discover_inputs(path: str | Path) -> EventInput:
    """The Parquet or CSV files at ``path`` (a file, or a folder of files of one kind)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file or folder: {p}")
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith((".", "_")))
        parquet = [f for f in files if f.suffix.lower() in PARQUET_SUFFIXES]
        csv = [f for f in files if f.suffix.lower() in CSV_SUFFIXES]
        if parquet and csv:
            raise ValueError(f"{p}: holds both Parquet and CSV files; keep one kind per folder")
        if not parquet and not csv:
            raise FileNotFoundError(f"{p}: no .parquet or .csv files in this folder")
        return EventInput(tuple(parquet or csv), "parquet" if parquet else "csv", str(p))
    suffix = p.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return EventInput((p,), "parquet", str(p))
    if suffix in CSV_SUFFIXES:
        return EventInput((p,), "csv", str(p))
    raise ValueError(f"{p}: unsupported file type {suffix!r} (use .parquet or .csv)")


@dataclass
class OpenedEvents:
    """Validated events exposed to DuckDB as the view ``name``."""

    source: EventSource
    events: int
    max_time_us: int | None


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_list(values: Iterable[str]) -> str:
    return "(" + ", ".join(_sql_text(v) for v in values) + ")"


def _sql_files(paths: Iterable[Path]) -> str:
    """A DuckDB list of exactly these files (glob characters in their names match as such)."""
    return "[" + ", ".join(_sql_text(literal_pattern(p)) for p in paths) + "]"


def _parquet_relation(inp: EventInput) -> str:
    files = _sql_files(inp.paths)
    return f"read_parquet({files}, filename = true, file_row_number = true, union_by_name = true)"


_NAIVE = ("TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S", "DATE")
_AWARE = ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ", "TIMESTAMPTZ_NS")
_NUMERIC_PREFIXES = ("DOUBLE", "FLOAT", "DECIMAL", "BIGINT", "INTEGER", "SMALLINT", "TINYINT")


def _open_parquet(con: duckdb.DuckDBPyConnection, inp: EventInput, tz: str) -> OpenedEvents:
    """Expose Parquet events as a normalised view after checking them in one DuckDB scan."""
    tag = uuid.uuid4().hex[:10]
    raw, view = f"_raw_{tag}", f"_events_{tag}"
    try:
        con.execute(f"CREATE TEMP VIEW {raw} AS SELECT * FROM {_parquet_relation(inp)}")
        types = {r[0]: str(r[1]) for r in con.execute(f"DESCRIBE {raw}").fetchall()}
    except duckdb.Error as err:
        raise ValueError(f"{inp.label}: cannot read the Parquet input: {err}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in types]
    if missing:
        failures = pd.DataFrame(
            {"row": "-", "column": missing, "check": "required column is missing", "value": None}
        )
        raise ContractError("fan_events", failures, inp.label)

    time_type = types["event_time"].upper()
    if time_type in _AWARE or time_type in _NAIVE:
        t_expr = "event_time"
    else:  # text times: naive text is wall time in tz (the connection's TimeZone)
        t_expr = "TRY_CAST(CAST(event_time AS VARCHAR) AS TIMESTAMPTZ)"
    naive = time_type in _NAIVE
    present = [c for c in OPTIONAL_COLUMNS if c in types]

    def num(col: str) -> str:
        if types[col].upper().startswith(_NUMERIC_PREFIXES):
            return f"CAST({col} AS DOUBLE)"
        return f"TRY_CAST(CAST({col} AS VARCHAR) AS DOUBLE)"

    def bad_id(col: str) -> str:
        if types[col].upper() in INTEGER_TYPES:  # as text: 1 to 40 characters
            return f"{col} IS NULL"
        # length (characters) in [1, 200]: a non-empty text of at most 200 bytes passes
        # without counting its characters (a character takes at least one byte)
        v = f"CAST({col} AS VARCHAR)"
        return f"{col} IS NULL OR strlen({v}) = 0 OR (strlen({v}) > 200 AND length({v}) > 200)"

    checks: list[tuple[str, str, str]] = [
        ("fan_id", "non-empty id of at most 200 characters", bad_id("fan_id")),
        ("room_id", "non-empty id of at most 200 characters", bad_id("room_id")),
        ("event_time", "parseable timestamp", f"({t_expr}) IS NULL"),
        (
            "event_type",
            f"isin({list(EVENT_TYPES)})",
            f"event_type IS NULL OR CAST(event_type AS VARCHAR) NOT IN {_sql_list(EVENT_TYPES)}",
        ),
    ]
    limits = {"amount": MAX_MONEY, "watch_seconds": MAX_COUNT}
    for col in present:
        if _stats_prove_range(con, inp, col, types[col], limits[col]):
            continue  # every row group's min / max is in range: no row can fail
        v = num(col)
        checks.append(
            (
                col,
                f"number in [0, {limits[col]:g}]",
                # null and NaN are missing values (allowed); text that is not a number fails
                f"{col} IS NOT NULL AND ({v} IS NULL"
                f" OR (NOT isnan({v}) AND ({v} < 0 OR {v} > {limits[col]})))",
            )
        )
    counts = ", ".join(
        f"count(*) FILTER ({pred}) AS bad_{i}" for i, (_, _, pred) in enumerate(checks)
    )
    if naive:
        max_t = f"CAST(CAST(max({t_expr}) AS TIMESTAMP) AS VARCHAR)"
    else:
        max_t = f"epoch_us(CAST(max({t_expr}) AS TIMESTAMPTZ))"
    try:
        row = con.execute(f"SELECT count(*), {max_t}, {counts} FROM {raw}").fetchone()
    except duckdb.Error as err:
        raise ValueError(f"{inp.label}: cannot read the Parquet input: {err}") from None
    assert row is not None
    n_events, latest, bad = int(row[0]), row[1], [int(x) for x in row[2:]]
    if any(bad):
        parts = []
        for (col, desc, pred), n_bad in zip(checks, bad, strict=True):
            if not n_bad:
                continue
            rows = con.execute(
                f"SELECT filename, file_row_number, CAST({col} AS VARCHAR) FROM {raw}"
                f" WHERE {pred} ORDER BY filename, file_row_number LIMIT {FIRST_ROWS}"
            ).fetchall()
            parts.append(
                pd.DataFrame(
                    {
                        "row": [inp.row_label(f, int(r)) for f, r, _ in rows],
                        "column": col,
                        "check": f"{desc} ({n_bad:,} row{'s' if n_bad != 1 else ''} fail)",
                        "value": [v for _, _, v in rows],
                    }
                )
            )
        raise ContractError("fan_events", pd.concat(parts, ignore_index=True), inp.label)

    select = ["fan_id", f"{t_expr} AS event_time", "event_type"]
    select += [f"{num(c)} AS {c}" for c in present]
    con.execute(f"CREATE TEMP VIEW {view} AS SELECT {', '.join(select)} FROM {raw}")
    latest_us: int | None
    if latest is None:
        latest_us = None
    elif naive:
        latest_us = cutoff_us(pd.Timestamp(latest), tz)
    else:
        latest_us = int(latest)
    source = EventSource(
        view,
        frozenset(("fan_id", "event_time", "event_type", *present)),
        naive,
        int_ids=types["fan_id"].upper() in INTEGER_TYPES,
    )
    return OpenedEvents(source, n_events, latest_us)


def _stats_prove_range(
    con: duckdb.DuckDBPyConnection, inp: EventInput, col: str, col_type: str, high: float
) -> bool:
    """True when the Parquet row-group statistics show every value of ``col`` in [0, high].

    Statistics leave out nulls and NaN, which the contract allows; a row group without
    statistics (or a non-numeric column) means the rows must be scanned.
    """
    if col_type.upper() not in ("DOUBLE", "FLOAT", "BIGINT", "INTEGER", "SMALLINT"):
        return False
    files = _sql_files(inp.paths)
    try:
        rows = con.execute(
            f"SELECT stats_min_value, stats_max_value, num_values, stats_null_count"
            f" FROM parquet_metadata({files}) WHERE path_in_schema = ?",
            [col],
        ).fetchall()
    except duckdb.Error:
        return False
    try:
        for lo, hi, n_values, n_null in rows:
            if n_values is not None and n_null is not None and n_values == n_null:
                continue  # only nulls in this row group
            if lo is None or hi is None or not (float(lo) >= 0 and float(hi) <= high):
                return False
    except ValueError:
        return False
    return bool(rows)


def read_csv_events(inp: EventInput, tz: str) -> pd.DataFrame:
    """CSV event files read with pandas and validated by the contract (one file at a time)."""
    frames = []
    for path in inp.paths:
        raw = read_frame(path)
        frames.append(validate(raw, "fan_events", source=str(path), tz=tz))
    if len(frames) == 1:
        return frames[0]
    return pd.concat(frames, ignore_index=True)


def _open_frame(con: duckdb.DuckDBPyConnection, events: pd.DataFrame) -> OpenedEvents:
    name = f"_events_{uuid.uuid4().hex[:10]}"
    cols = [c for c in ("fan_id", "event_time", "event_type", *OPTIONAL_COLUMNS) if c in events]
    con.register(name, events[cols])
    latest = None if events.empty else int(events["event_time"].max().value // 1000)
    return OpenedEvents(EventSource(name, frozenset(cols), False), len(events), latest)


def default_cutoff(latest_us: int | None, tz: str = DEFAULT_TZ) -> pd.Timestamp:
    """The local midnight in ``tz`` strictly after the latest event (the default cutoff)."""
    if latest_us is None:
        raise ValueError("the input has no fan events: nothing to segment")
    latest = pd.Timestamp(latest_us, unit="us", tz="UTC").tz_convert(tz)
    return latest.normalize() + pd.Timedelta(days=1)


# ----------------------------------------------------------------------------------------------
# The run


@dataclass(frozen=True)
class SegmentResult:
    """What a batch run wrote and measured."""

    out_path: Path
    summary_path: Path
    summary: dict[str, Any]
    cutoff: pd.Timestamp
    fans: int
    events: int
    partitions: int
    engine: str
    seconds: float


def summary_path_for(out_path: str | Path) -> Path:
    """Where the summary JSON of an output goes: ``<stem>.summary.json`` beside it."""
    out = Path(out_path)
    return out.with_name(out.stem + ".summary.json")


def _table(scores: Scores) -> pa.Table:
    if isinstance(scores, pa.Table):
        return scores
    return pa.Table.from_pandas(
        scores[list(SCORE_COLUMNS)], schema=OUTPUT_SCHEMA, preserve_index=False
    )


def _partition_events(
    con: duckdb.DuckDBPyConnection, source: EventSource, k: int, folder: Path
) -> list[EventSource | None]:
    """Split the events into ``k`` hash buckets of fans in one scan, as Parquet under ``folder``.

    A fan's bucket is ``hash(fan_id) % k`` (the id as text), so each bucket holds whole fans.
    Only the columns the fan SQL reads are written, ids already as text. Returns each bucket's
    events (None for a bucket no fan hashed to).
    """
    cols = ["CAST(fan_id AS VARCHAR) AS fan_id"]
    cols += [c for c in ("event_time", "event_type", *OPTIONAL_COLUMNS) if c in source.columns]
    con.execute(
        f"COPY (SELECT {', '.join(cols)}, hash(CAST(fan_id AS VARCHAR)) % {k} AS bucket"
        f" FROM {source.relation})"
        f" TO {_sql_text(str(folder))} (FORMAT parquet, PARTITION_BY (bucket), {SPILL_PARQUET})"
    )
    buckets: list[EventSource | None] = []
    for b in range(k):
        part = folder / f"bucket={b}"
        if not part.is_dir():
            buckets.append(None)
            continue
        files = _sql_text(f"{literal_pattern(part)}/*.parquet")
        rel = f"read_parquet({files}, hive_partitioning = false)"
        buckets.append(EventSource(rel, source.columns, source.naive_times))
    return buckets


def _local_batches(
    con: duckdb.DuckDBPyConnection,
    opened: OpenedEvents,
    model: TierModel,
    cutoff: pd.Timestamp,
    k: int,
    tz: str,
    num_threads: int,
    clock: dict[str, float],
    spill_dir: Path,
) -> Generator[Batch]:
    """(bucket, scored batch, window spend) per bucket, featurised by the fan SQL over its events.

    With ``k > 1`` buckets the events are first split into per-bucket Parquet files under
    ``spill_dir`` (:func:`_partition_events`), so each bucket reads only its own events.
    Each bucket's features stream out of DuckDB (sorted by fan_id) in Arrow batches of
    :data:`BATCH_ROWS` fans that are scored from Arrow, never converted to pandas.
    ``clock`` keys (seconds, summed over buckets): ``partition`` (the split), ``features``
    (the fan SQL until its first batch: DuckDB aggregates and sorts first), ``read`` (the
    later batches), ``score`` (matrix, predict, output table). The
    third item is each fan's order amount in the rules window before the cutoff when a fan
    feature holds exactly that (:data:`GMV_FEATURES`), else None.
    """

    def tick(key: str, since: float) -> None:
        clock[key] = clock.get(key, 0.0) + time.perf_counter() - since

    spend_col = GMV_FEATURES.get(int(model.rules.window_days))
    if k == 1:
        buckets: list[EventSource | None] = [opened.source]
    else:
        t = time.perf_counter()
        buckets = _partition_events(con, opened.source, k, spill_dir)
        clock["partition"] = time.perf_counter() - t
    for b, bucket in enumerate(buckets):
        if bucket is None:  # no fan hashed to this bucket
            yield b, empty_scores(), None
            continue
        t = time.perf_counter()
        sql = fan_features_sql(bucket, cutoff, tz=tz)
        reader = con.sql(sql).to_arrow_reader(BATCH_ROWS)
        key = "features"  # DuckDB aggregates and sorts before the first batch comes out
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            tick(key, t)
            key = "read"
            t = time.perf_counter()
            feats = pa.Table.from_batches([batch])
            scores = _score(model, feats, num_threads)
            spend = None
            if spend_col:
                spend = pc.fill_null(feats.column(spend_col), 0.0).to_numpy()
            tick("score", t)
            yield b, scores, spend
            t = time.perf_counter()
        yield b, empty_scores(), None  # marks the end of the bucket (progress)


P = ParamSpec("P")
R = TypeVar("R")


def _exits_on_sigterm(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` with SIGTERM raising ``SystemExit(143)``, so its ``finally`` blocks remove
    the temporary files (a second SIGTERM kills at once). Only in the main thread, which
    Python signal handlers run in; elsewhere ``fn`` runs as is."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if threading.current_thread() is not threading.main_thread():
            return fn(*args, **kwargs)
        received: list[int] = []

        def stop(signum: int, frame: Any) -> None:
            received.append(signum)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            raise SystemExit(128 + signum)

        previous = signal.signal(signal.SIGTERM, stop)
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # DuckDB turns the SystemExit into "Query interrupted"
            if received:
                raise SystemExit(128 + received[0]) from exc
            raise
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

    return wrapper


@_exits_on_sigterm
def segment(
    events_path: str | Path,
    out_path: str | Path,
    *,
    model: TierModel,
    cutoff: pd.Timestamp | str | None = None,
    engine: Engine = "local",
    scheduler: Any = None,
    previous: str | Path | None = None,
    partitions: int | None = None,
    tz: str = DEFAULT_TZ,
    num_threads: int = 0,
    progress: bool = True,
) -> SegmentResult:
    """Score every fan in ``events_path`` and write ``out_path`` (Parquet) plus its summary.

    ``engine="local"`` runs DuckDB hash buckets in this process; ``engine="dask"`` maps
    :func:`segment_frame` over Dask partitions holding whole fans (``scheduler``: an address,
    a ``distributed.Client``, or None for a ``LocalCluster``). ``partitions`` is the number of
    buckets / Dask partitions (default from the event count). ``previous`` is an earlier output
    for the transition matrix. ``num_threads`` (DuckDB's threads and the local engine's
    LightGBM threads) defaults to the cores this process may use (:func:`batch_threads`).
    Raises ``ContractError`` (bad rows) or ``ValueError`` / ``FileNotFoundError`` (bad
    arguments) before writing anything.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    if engine not in ("local", "dask"):
        raise ValueError(f"engine must be 'local' or 'dask', got {engine!r}")
    if partitions is not None and partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    out_path = Path(out_path)
    if out_path.suffix.lower() not in PARQUET_SUFFIXES:
        raise ValueError(f"{out_path}: the output must be a .parquet file")
    previous_path = Path(previous) if previous is not None else None
    if previous_path is not None:
        _check_previous(previous_path)
    inp = discover_inputs(events_path)
    if out_path.resolve() in {p.resolve() for p in inp.paths}:
        raise ValueError(f"{out_path}: the output would overwrite an input file")

    threads = num_threads or batch_threads()
    # DuckDB spills to disk beyond its memory limit: keep that out of the working folder
    con = connect(threads=threads)
    spill = scratch_dir(SPILL_PREFIX)
    batches: Generator[Batch] | None = None
    try:
        con.execute("SET TimeZone = ?", [tz])  # parameters: never SQL text
        con.execute("SET temp_directory = ?", [str(spill)])
        csv_frame = read_csv_events(inp, tz) if inp.kind == "csv" else None
        if csv_frame is not None:
            opened = _open_frame(con, csv_frame)
        else:
            opened = _open_parquet(con, inp, tz)
        clock = {"read_and_validate": time.perf_counter() - t0}
        if cutoff is None:
            cut = default_cutoff(opened.max_time_us, tz)
        else:
            try:
                cut = pd.Timestamp(cutoff)
            except (ValueError, TypeError):
                cut = pd.NaT
            if cut is pd.NaT:
                raise ValueError(f"cutoff is not a time: {cutoff!r} (e.g. 2024-06-01)")
        if cut.tzinfo is None:
            cut = cut.tz_localize(tz)
        if engine == "local":
            k = partitions or max(1, math.ceil(opened.events / BUCKET_EVENTS))
            buckets_dir = spill / "buckets"
            batches = _local_batches(con, opened, model, cut, k, tz, threads, clock, buckets_dir)
        else:
            from serving.dask_engine import dask_batches, default_partitions

            k = partitions or default_partitions(opened.events)
            batches = dask_batches(inp, model, cut, k, tz=tz, scheduler=scheduler, frame=csv_frame)
        fans = 0
        summary_path = summary_path_for(out_path)
        with atomic_path(out_path) as tmp, atomic_path(summary_path) as tmp_summary:
            bar = tqdm(total=k, unit="bucket", desc="segment", disable=not progress)
            fans_by_tier = np.zeros(len(TIERS), dtype="int64")
            gmv_by_tier: np.ndarray | None = np.zeros(len(TIERS))
            with pq.ParquetWriter(tmp, OUTPUT_SCHEMA) as writer:
                done = -1
                for b, scores, spend in batches:
                    if not _n_rows(scores):
                        if b > done:
                            bar.update(b - done)
                            done = b
                        continue
                    t_write = time.perf_counter()
                    table = _table(scores)
                    writer.write_table(table)
                    codes = _tier_codes(table)
                    fans_by_tier += np.bincount(codes, minlength=len(TIERS))
                    if spend is None or gmv_by_tier is None:
                        gmv_by_tier = None
                    else:
                        gmv_by_tier += np.bincount(codes, weights=spend, minlength=len(TIERS))
                    fans += table.num_rows
                    clock["write"] = clock.get("write", 0.0) + time.perf_counter() - t_write
                    bar.set_postfix(fans=f"{fans:,}")
            bar.close()
            t_loop = time.perf_counter()
            clock["featurise_score_write"] = t_loop - t0 - clock["read_and_validate"]
            tally = None
            if gmv_by_tier is not None:
                tally = {
                    t: (int(n), float(v))
                    for t, n, v in zip(TIERS, fans_by_tier, gmv_by_tier, strict=True)
                }
            summary = summarise(con, tmp, opened.source, model, cut, tz, previous_path, tally)
            clock["summary"] = time.perf_counter() - t_loop
            summary.update(
                {
                    "events_path": str(events_path),
                    "out_path": str(out_path),
                    "cutoff": cut.isoformat(),
                    "events": opened.events,
                    "engine": engine,
                    "partitions": k,
                    "model": model.metadata.get("bundle") or model.metadata.get("id"),
                    "seconds": round(time.perf_counter() - t0, 3),
                    "timings": {key: round(v, 3) for key, v in clock.items()},
                }
            )
            tmp_summary.write_text(json.dumps(summary, indent=2, default=str))
    finally:
        if batches is not None:
            batches.close()  # releases an open DuckDB result or the Dask client
        con.close()  # drops the temporary views
        shutil.rmtree(spill, ignore_errors=True)
    return SegmentResult(
        out_path,
        summary_path,
        summary,
        cut,
        fans,
        opened.events,
        k,
        engine,
        round(time.perf_counter() - t0, 3),
    )


# ----------------------------------------------------------------------------------------------
# Summary


def _check_previous(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"no such previous output: {path}")
    names = pq.read_schema(path).names
    missing = [c for c in ("fan_id", "tier") if c not in names]
    if missing:
        raise ValueError(
            f"{path}: not a segmentation output (lacks {', '.join(missing)});"
            " pass the Parquet a previous livecast segment run wrote"
        )


def _relation_of_file(path: Path) -> str:
    return f"read_parquet({_sql_text(literal_pattern(path))})"


def summarise(
    con: duckdb.DuckDBPyConnection,
    scores_path: Path,
    source: EventSource,
    model: TierModel,
    cutoff: pd.Timestamp,
    tz: str,
    previous: Path | None = None,
    tally: dict[str, tuple[int, float]] | None = None,
) -> dict[str, Any]:
    """Fans and GMV share per predicted tier, and the transition matrix against ``previous``.

    GMV is the sum of order amounts in ``[cutoff - rules.window_days, cutoff)`` (the window the
    tier rules read), per fan, attributed to the fan's predicted tier. ``tally`` (tier -> fans,
    GMV) is used when the run already summed them; otherwise one SQL query joins the output
    with the events.
    """
    scores = _relation_of_file(scores_path)
    window = int(model.rules.window_days)
    c = cutoff_us(cutoff, tz)
    gmv_sql = f"""WITH {_events_cte(source, tz, None)},
g AS (
    SELECT fan_id, sum(amount_c) AS amount_c FROM ev
    WHERE event_type = 'order' AND t_us >= {c - window * DAY_US} AND t_us < {c}
    GROUP BY fan_id
),
s AS (SELECT fan_id, CAST(tier AS VARCHAR) AS tier FROM {scores})
SELECT s.tier, count(*) AS fans, COALESCE(sum(g.amount_c), 0) / {MONEY_SCALE} AS gmv
FROM s LEFT JOIN g USING (fan_id)
GROUP BY s.tier"""
    if tally is None:
        rows = {t: (int(n), float(v)) for t, n, v in con.execute(gmv_sql).fetchall()}
    else:
        rows = tally
    total_fans = sum(n for n, _ in rows.values())
    total_gmv = sum(v for _, v in rows.values())
    tiers = {}
    for t in TIERS:
        n, v = rows.get(t, (0, 0.0))
        tiers[t] = {
            "fans": n,
            "fan_share": n / total_fans if total_fans else 0.0,
            "gmv": round(v, 2),
            "gmv_share": v / total_gmv if total_gmv else 0.0,
        }
    out: dict[str, Any] = {
        "fans": total_fans,
        "gmv_window_days": window,
        "gmv": round(total_gmv, 2),
        "tiers": tiers,
        "transition": None,
    }
    if previous is not None:
        out["transition"] = {
            "previous": str(previous),
            "matrix": transition_matrix(con, previous, scores_path),
        }
    return out


def transition_matrix(
    con: duckdb.DuckDBPyConnection, previous: Path, current: Path
) -> dict[str, dict[str, int]]:
    """Fans by (previous tier, new tier): ``{previous: {new: count}}``.

    Rows are the previous tiers plus ``(new)`` (fans absent from the previous output); columns
    the new tiers plus ``(gone)`` (fans absent from the new output). Every cell is present.
    """
    sql = f"""SELECT
    COALESCE(CAST(p.tier AS VARCHAR), '{NEW}') AS prev,
    COALESCE(CAST(c.tier AS VARCHAR), '{GONE}') AS cur,
    count(*) AS n
FROM (SELECT CAST(fan_id AS VARCHAR) AS fan_id, tier FROM {_relation_of_file(previous)}) p
FULL OUTER JOIN (SELECT fan_id, tier FROM {_relation_of_file(current)}) c USING (fan_id)
GROUP BY ALL"""
    counts = con.execute(sql).fetchall()
    unknown = sorted({p for p, _, _ in counts} - {*TIERS, NEW})
    if unknown:
        raise ValueError(f"{previous}: unknown tier(s) {unknown}; expected one of {list(TIERS)}")
    matrix = {p: {c: 0 for c in (*TIERS, GONE)} for p in (*TIERS, NEW)}
    for p, c, n in counts:
        matrix[p][c] = int(n)
    return matrix


def read_scores(path: str | Path) -> pd.DataFrame:
    """A segmentation output as a frame sorted by fan_id (tier as category, TIERS order)."""
    df = pd.read_parquet(path)
    df["tier"] = pd.Categorical(df["tier"].astype("str"), categories=list(TIERS))
    return df.sort_values("fan_id", kind="stable").reset_index(drop=True)


__all__ = [
    "SCORE_COLUMNS",
    "EventInput",
    "SegmentResult",
    "default_cutoff",
    "discover_inputs",
    "empty_scores",
    "read_scores",
    "segment",
    "segment_frame",
    "summarise",
    "transition_matrix",
]
