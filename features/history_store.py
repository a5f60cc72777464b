"""The history store: finished sessions ingested after a bundle was trained.

A forecaster bundle freezes the room history it was trained on. The store holds the finished
sessions (and their product rows) that arrived since, so the service reads fresh history
without retraining: its history is the bundle's plus the store's (:func:`merge_history`).

Layout of a store folder (the setting ``history_dir``, default ``<models_dir>/history``)::

    sessions-000007.parquet   the store's sessions (contract ``sessions`` table), version 7
    products-000007.parquet   their product rows (contract ``session_products`` table)
    manifest.json             {"version": 7, "sessions_file": ..., "products_file": ...,
                               "sha256": {...}, "history_as_of": ..., ...}, written last
    .ingest.lock              an advisory lock (``flock``) held by the writer

Every write makes a new version: the two tables are written under new names (atomically, see
:func:`features.io.write_parquet`), then the manifest is replaced atomically, then the files
of versions older than the previous one are removed. A reader reads the manifest, then the
files it names (checked against their sha256), so it sees a whole version or the previous one,
never a mix or a partial file; the manifest's ``version`` only grows, so a reader polls it to
notice changes cheaply (:func:`read_manifest`).

Ingest semantics (:func:`merge_batch`, pure):

* a batch is all or nothing: any failing row (contract failure, a session without its
  outcomes or starting in the future, a product row naming a session not in the batch, a
  conflict) rejects the whole batch and the store is left as it was;
* a session already in the store with the same content (its sessions row and, when the batch
  gives any, its product rows) is ``unchanged``: ingesting the same sessions twice is a no-op
  and does not bump the version;
* a session already in the store with other content is a conflict naming the session ids,
  unless ``replace`` is given: then the batch's row replaces the stored one, and its product
  rows replace the stored ones when the batch gives any for it (otherwise they are kept);
* product rows come with their sessions: a product-only batch is rejected.

Units are the contract's (money in the room's currency, durations in minutes, times
timezone-aware).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.contract import (
    DEFAULT_TZ,
    ContractError,
    columns,
    consistency_warnings,
    validate,
)
from features.io import atomic_path, write_parquet

MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".ingest.lock"
FORMAT_VERSION = 1
REQUIRED_OUTCOMES: tuple[str, ...] = ("viewers", "orders", "gmv")
"""Outcomes a finished session must have to enter the history (the forecast targets)."""
TABLE_NAMES: tuple[str, ...] = ("sessions", "session_products")
READ_ATTEMPTS = 3
"""A reader re-reads the manifest this many times when a writer removed the files it named."""
_VERSIONED = re.compile(r"(sessions|products)-(\d{6,})\.parquet")
_FAILURE_COLUMNS = ["row", "column", "check", "value"]


class HistoryStoreError(ValueError):
    """A store folder that cannot be read: its manifest does not parse or names a file that
    is missing or fails its checksum. The message names the folder and the file."""


class BatchRejected(ValueError):
    """A batch that was not ingested (nothing was added). ``errors`` lists a
    :class:`~features.contract.ContractError` per table with every failing row and column;
    ``conflict`` is True when the failures are sessions already stored with other content."""

    def __init__(self, errors: tuple[ContractError, ...], conflict: bool = False) -> None:
        super().__init__(*errors)
        self.errors = tuple(errors)
        self.conflict = conflict

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors) + "\nnothing was added"

    @property
    def n_failures(self) -> int:
        """Failing rows / cells over every table."""
        return sum(len(e.failures) for e in self.errors)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled with its tables (it crosses a process boundary: the service ingests in a
        child process)."""
        parts = [(e.table, e.failures, e.source) for e in self.errors]
        return (_rejected, (parts, self.conflict))


def _rejected(parts: list[tuple[str, pd.DataFrame, str]], conflict: bool) -> BatchRejected:
    return BatchRejected(tuple(ContractError(*p) for p in parts), conflict)


@dataclass(frozen=True)
class Manifest:
    """The store's current version (``manifest.json``)."""

    version: int
    sessions_file: str
    products_file: str
    sha256: dict[str, str]
    n_sessions: int
    n_products: int
    history_as_of: str | None
    updated_at: str

    def as_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "version": self.version,
            "sessions_file": self.sessions_file,
            "products_file": self.products_file,
            "sha256": dict(self.sha256),
            "n_sessions": self.n_sessions,
            "n_products": self.n_products,
            "history_as_of": self.history_as_of,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class StoreHistory:
    """The store's tables (contract-validated) and the manifest they were read under (None:
    an empty store, no version yet)."""

    sessions: pd.DataFrame
    products: pd.DataFrame
    manifest: Manifest | None

    @property
    def version(self) -> int:
        return self.manifest.version if self.manifest else 0


@dataclass(frozen=True)
class Batch:
    """A validated batch of finished sessions and their product rows, ready to merge."""

    sessions: pd.DataFrame
    products: pd.DataFrame
    warnings: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=_FAILURE_COLUMNS, dtype=object)
    )
    """Contract warnings (rows kept whose values contradict each other)."""


@dataclass(frozen=True)
class MergeResult:
    """The store's tables after a batch, and what the batch did (session ids)."""

    sessions: pd.DataFrame
    products: pd.DataFrame
    added: list[str]
    unchanged: list[str]
    replaced: list[str]
    products_written: int
    """Product rows of the batch written to the store (of added or replaced sessions)."""

    @property
    def changed(self) -> bool:
        return bool(self.added or self.replaced)


@dataclass(frozen=True)
class IngestResult:
    """What an ingest did, and the store's version after it."""

    added: int
    unchanged: int
    replaced: int
    products_written: int
    version: int
    history_as_of: str | None
    warnings: pd.DataFrame

    def summary(self) -> dict[str, Any]:
        """The counts as a flat dict (the CLI's summary table)."""
        return {
            "sessions added": self.added,
            "sessions unchanged": self.unchanged,
            "sessions replaced": self.replaced,
            "product rows written": self.products_written,
            "rejected rows": 0,
            "store version": self.version,
            "store history as of": self.history_as_of or "-",
            "contract warnings": len(self.warnings),
        }


# --------------------------------------------------------------------------- pure functions


def empty_table(table: str, tz: str = DEFAULT_TZ) -> pd.DataFrame:
    """A validated contract ``table`` (``sessions`` or ``session_products``) with no rows."""
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in columns(table)})
    for c in ("session_id", "room_id", "platform", "host_id", "session_type", "title"):
        if c in frame.columns:
            frame[c] = frame[c].astype("str")
    if table == "sessions":
        frame["start_time"] = pd.Series(dtype=f"datetime64[ns, {tz}]")
    else:
        frame[["sku_id", "category"]] = frame[["sku_id", "category"]].astype("str")
        frame["is_new_launch"] = frame["is_new_launch"].astype(bool)
    return validate(frame, table, tz=tz)


def contract_columns(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """``frame`` with exactly the contract columns of ``table`` in contract order (the store
    keeps nothing else; a validated frame has every one of them)."""
    return frame[columns(table)].reset_index(drop=True)


def json_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Contract rows as the JSON records ``POST /v1/sessions`` takes: missing values left out,
    times as ISO 8601 text, numpy scalars as Python numbers."""
    out = []
    for record in frame.to_dict("records"):
        row: dict[str, Any] = {}
        for key, value in record.items():
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            if isinstance(value, pd.Timestamp):
                value = value.isoformat()
            elif hasattr(value, "item"):
                value = value.item()
            row[key] = value
        out.append(row)
    return out


def history_as_of(sessions: pd.DataFrame, tz: str | None = None) -> str | None:
    """The latest ``start_time`` of a history, ISO 8601 with its UTC offset (in ``tz`` when
    given, else in the column's zone); None for an empty history."""
    if sessions is None or len(sessions) == 0:
        return None
    latest = pd.Timestamp(sessions["start_time"].max())
    if tz is not None:
        latest = latest.tz_convert(tz)
    return latest.isoformat()


def missing_outcome_failures(sessions: pd.DataFrame) -> pd.DataFrame:
    """The failure table (``row``, ``column``, ``check``, ``value``) of sessions (raw or
    validated) lacking an outcome a finished session must have (:data:`REQUIRED_OUTCOMES`:
    viewers, orders, GMV); an absent column fails every row."""
    ids = (
        sessions["session_id"].astype(object).tolist()
        if "session_id" in sessions.columns
        else [None] * len(sessions)
    )
    records: list[tuple[int, tuple[object, str, str, object]]] = []
    for col in REQUIRED_OUTCOMES:
        missing = (
            sessions[col].isna() if col in sessions.columns else pd.Series(True, sessions.index)
        )
        for pos in np.flatnonzero(missing.to_numpy(dtype=bool)):
            check = f"a finished session needs its outcome {col} (session {ids[pos]})"
            records.append((int(pos), (sessions.index[pos], col, check, None)))
    records.sort(key=lambda r: r[0])
    return pd.DataFrame([r for _, r in records], columns=_FAILURE_COLUMNS, dtype=object)


def future_failures(sessions: pd.DataFrame, now: pd.Timestamp | None = None) -> pd.DataFrame:
    """The failure table of validated sessions starting after ``now`` (default: the current
    time): not finished sessions."""
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    late = (sessions["start_time"] > now).to_numpy(dtype=bool)
    when = f"{now.tz_convert('UTC'):%Y-%m-%d %H:%M} UTC"
    return pd.DataFrame(
        [
            (
                sessions.index[pos],
                "start_time",
                f"starts after now ({when}): not a finished session "
                f"(session {sessions['session_id'].iloc[pos]})",
                sessions["start_time"].iloc[pos].isoformat(),
            )
            for pos in np.flatnonzero(late)
        ],
        columns=_FAILURE_COLUMNS,
        dtype=object,
    )


def orphan_failures(products: pd.DataFrame, session_ids: set[str]) -> pd.DataFrame:
    """Product rows whose ``session_id`` is not among ``session_ids`` (the batch's sessions),
    as a failure table: product rows come with their sessions."""
    sid = products["session_id"].astype(str)
    bad = ~sid.isin(session_ids)
    return pd.DataFrame(
        {
            "row": list(products.index[bad]),
            "column": "session_id",
            "check": "names a session that is not in this batch (send product rows with their "
            "sessions)",
            "value": list(sid[bad]),
        },
        columns=_FAILURE_COLUMNS,
        dtype=object,
    )


def prepare_batch(
    sessions: pd.DataFrame,
    products: pd.DataFrame | None = None,
    *,
    tz: str = DEFAULT_TZ,
    source: str = "",
    now: pd.Timestamp | None = None,
) -> Batch:
    """Validate a batch against the contract and the store's rules; return it with exactly the
    contract columns, times in ``tz``.

    Raises :class:`BatchRejected` listing every failing row and column of both tables: contract
    failures, sessions without their outcomes or starting after ``now``, product rows naming a
    session not in the batch. Contract warnings (values contradicting each other) are kept in
    the batch's ``warnings``.
    """
    errors: list[ContractError] = []
    product_source = f"{source} products" if source else "products"
    failures = [missing_outcome_failures(sessions)]
    try:
        valid = validate(sessions, "sessions", source=source, tz=tz)
    except ContractError as err:
        failures.insert(0, err.failures)
        valid = None
    if valid is not None:
        failures.append(future_failures(valid, now))
    failures = [f for f in failures if len(f)]
    if failures:
        table = pd.concat(failures, ignore_index=True) if len(failures) > 1 else failures[0]
        errors.append(ContractError("sessions", table.reset_index(drop=True), source))
    raw_products = products if products is not None else empty_table("session_products", tz)
    try:
        valid_products = validate(raw_products, "session_products", source=product_source, tz=tz)
    except ContractError as err:
        errors.append(err)
        valid_products = None
    if valid_products is not None and "session_id" in sessions.columns:
        orphans = orphan_failures(valid_products, set(sessions["session_id"].astype(str)))
        if len(orphans):
            errors.append(ContractError("session_products", orphans, product_source))
    if errors or valid is None or valid_products is None:
        raise BatchRejected(tuple(errors))
    warnings = consistency_warnings(valid, "sessions", now=now)
    return Batch(
        contract_columns(valid, "sessions"),
        contract_columns(valid_products, "session_products"),
        warnings,
    )


def _canonical_column(series: pd.Series) -> list[object]:
    """A column's values in a form equal for equal contract values whatever the frame's dtypes:
    times as UTC nanoseconds, numbers as floats, missing values and empty text as None."""
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        ns = series.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("int64")
        return [None if m else int(v) for v, m in zip(ns, series.isna(), strict=True)]
    if pd.api.types.is_bool_dtype(series.dtype):
        return [bool(v) for v in series]
    if pd.api.types.is_numeric_dtype(series.dtype):
        values = series.to_numpy(dtype=float)
        return [None if np.isnan(v) else float(v) for v in values]
    return [None if (v is None or v is pd.NA or v != v or v == "") else str(v) for v in series]


def canonical_rows(frame: pd.DataFrame, table: str) -> list[tuple[object, ...]]:
    """Each row of a validated contract ``table`` as a tuple of canonical values in contract
    column order (see :func:`_canonical_column`), for content comparison."""
    cols = [_canonical_column(frame[c]) for c in columns(table)]
    return list(zip(*cols, strict=True)) if cols else []


def _products_by_session(products: pd.DataFrame) -> dict[str, list[tuple[object, ...]]]:
    rows = canonical_rows(products, "session_products")
    out: dict[str, list[tuple[object, ...]]] = {}
    for sid, row in zip(products["session_id"].astype(str), rows, strict=True):
        out.setdefault(sid, []).append(row)
    return {sid: sorted(rows, key=repr) for sid, rows in out.items()}


def merge_batch(
    store_sessions: pd.DataFrame,
    store_products: pd.DataFrame,
    batch: Batch,
    *,
    replace: bool = False,
    tz: str = DEFAULT_TZ,
    source: str = "",
) -> MergeResult:
    """The store's tables after ingesting ``batch`` (see the module docstring for the rules).

    Pure: returns new frames (sessions sorted by start time and id, products by session and
    SKU) and the session ids added, unchanged and replaced. Raises :class:`BatchRejected`
    (``conflict=True``) naming every session already stored with other content, unless
    ``replace``.
    """
    cols = columns("sessions")
    store_ids = store_sessions["session_id"].astype(str).tolist()
    stored_rows = dict(zip(store_ids, canonical_rows(store_sessions, "sessions"), strict=True))
    stored_products = _products_by_session(store_products)
    batch_ids = batch.sessions["session_id"].astype(str).tolist()
    batch_rows = canonical_rows(batch.sessions, "sessions")
    batch_products = _products_by_session(batch.products)
    added: list[str] = []
    unchanged: list[str] = []
    replaced: list[str] = []
    conflicts: list[tuple[object, str, str, object]] = []
    for label, sid, row in zip(batch.sessions.index, batch_ids, batch_rows, strict=True):
        if sid not in stored_rows:
            added.append(sid)
            continue
        differ = [c for c, a, b in zip(cols, row, stored_rows[sid], strict=True) if a != b]
        if sid in batch_products and batch_products[sid] != stored_products.get(sid, []):
            differ.append("product rows")
        if not differ:
            unchanged.append(sid)
        elif replace:
            replaced.append(sid)
        else:
            check = (
                f"session {sid} is already in the history store with other values "
                f"({', '.join(differ)} differ); ingest with replace to overwrite it"
            )
            conflicts.append((label, "session_id", check, sid))
    if conflicts:
        failures = pd.DataFrame(conflicts, columns=_FAILURE_COLUMNS, dtype=object)
        raise BatchRejected((ContractError("sessions", failures, source),), conflict=True)
    written = set(added) | set(replaced)
    new_products_for = {sid for sid in written if sid in batch_products}
    keep_sessions = store_sessions[~store_sessions["session_id"].astype(str).isin(replaced)]
    take_sessions = batch.sessions[batch.sessions["session_id"].astype(str).isin(written)]
    keep_products = store_products[~store_products["session_id"].astype(str).isin(new_products_for)]
    take_products = batch.products[batch.products["session_id"].astype(str).isin(written)]
    sessions = _concat([keep_sessions, take_sessions], "sessions", tz)
    sessions = sessions.sort_values(["start_time", "session_id"], kind="stable")
    products = _concat([keep_products, take_products], "session_products", tz)
    products = products.sort_values(["session_id", "sku_id"], kind="stable")
    return MergeResult(
        sessions.reset_index(drop=True),
        products.reset_index(drop=True),
        added,
        unchanged,
        replaced,
        len(take_products),
    )


def _concat(frames: list[pd.DataFrame], table: str, tz: str) -> pd.DataFrame:
    """Contract frames stacked, times in one zone (frames in different zones would stack as
    objects)."""
    parts = [contract_columns(f, table) for f in frames if len(f)]
    if not parts:
        return empty_table(table, tz)
    if table == "sessions":
        parts = [p.assign(start_time=p["start_time"].dt.tz_convert(tz)) for p in parts]
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


def merge_history(
    sessions: pd.DataFrame,
    products: pd.DataFrame,
    store_sessions: pd.DataFrame | None,
    store_products: pd.DataFrame | None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The history a forecast reads: a bundle's ``sessions`` / ``products`` plus the store's.

    Deduplicated by ``session_id``: a stored session replaces the bundle's row of the same id
    (the store holds the later word, e.g. corrected outcomes), and the store's product rows of
    a session replace the bundle's rows of that session when the store has any. Store times are
    converted to the bundle's zone. Returns the bundle's frames themselves when the store is
    empty.
    """
    if store_sessions is None or len(store_sessions) == 0:
        return sessions, products
    tz = sessions["start_time"].dt.tz if len(sessions) else store_sessions["start_time"].dt.tz
    store_sessions = store_sessions.assign(
        start_time=store_sessions["start_time"].dt.tz_convert(tz)
    )
    stored_ids = set(store_sessions["session_id"].astype(str))
    keep = sessions[~sessions["session_id"].astype(str).isin(stored_ids)]
    merged = pd.concat([keep, store_sessions], ignore_index=True)
    if store_products is None or len(store_products) == 0:
        return merged, products
    with_products = set(store_products["session_id"].astype(str))
    keep_products = products[~products["session_id"].astype(str).isin(with_products)]
    return merged, pd.concat([keep_products, store_products], ignore_index=True)


# --------------------------------------------------------------------------- I/O


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(history_dir: str | Path) -> Manifest | None:
    """The store's manifest, or None when the folder holds none (an empty store). Cheap: one
    small JSON file, read to notice a new version.

    Raises :class:`HistoryStoreError` when it does not parse or lacks a key.
    """
    path = Path(history_dir) / MANIFEST_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        manifest = Manifest(
            version=int(data["version"]),
            sessions_file=str(data["sessions_file"]),
            products_file=str(data["products_file"]),
            sha256={str(k): str(v) for k, v in dict(data["sha256"]).items()},
            n_sessions=int(data["n_sessions"]),
            n_products=int(data["n_products"]),
            history_as_of=data.get("history_as_of"),
            updated_at=str(data.get("updated_at", "")),
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise HistoryStoreError(f"{path}: not a history store manifest ({exc!r})") from None
    for name in (manifest.sessions_file, manifest.products_file):
        if Path(name).name != name or not _VERSIONED.fullmatch(name):
            raise HistoryStoreError(f"{path}: names a bad file {name!r}")
    return manifest


def _read_version(folder: Path, manifest: Manifest, tz: str) -> StoreHistory:
    tables = []
    for name, table in (
        (manifest.sessions_file, "sessions"),
        (manifest.products_file, "session_products"),
    ):
        file = folder / name
        expected = manifest.sha256.get(name)
        found = _sha256(file)  # FileNotFoundError: a writer removed it, the caller retries
        if expected != found:
            raise HistoryStoreError(
                f"{folder}: {name} fails its sha256 checksum in {MANIFEST_FILE} "
                f"(expected {str(expected)[:12]}..., found {found[:12]}...)"
            )
        tables.append(validate(pd.read_parquet(file), table, source=str(file), tz=tz))
    return StoreHistory(tables[0], tables[1], manifest)


def load_store(history_dir: str | Path, *, tz: str = DEFAULT_TZ) -> StoreHistory:
    """The store's current version (empty tables when the folder or its manifest is absent).

    Reads the manifest, then the files it names, checked against their sha256 and validated
    against the contract. When a writer removed those files in between, the manifest is read
    again (up to :data:`READ_ATTEMPTS` times). Raises :class:`HistoryStoreError` for a damaged
    store and :class:`~features.contract.ContractError` for a table that fails the contract.
    """
    folder = Path(history_dir)
    for _ in range(READ_ATTEMPTS):
        manifest = read_manifest(folder)
        if manifest is None:
            return StoreHistory(
                empty_table("sessions", tz), empty_table("session_products", tz), None
            )
        try:
            return _read_version(folder, manifest, tz)
        except FileNotFoundError:
            continue
    raise HistoryStoreError(f"{folder}: the files named by {MANIFEST_FILE} keep disappearing")


@contextlib.contextmanager
def store_lock(history_dir: str | Path) -> Iterator[Path]:
    """Hold the store's writer lock (``flock`` on ``.ingest.lock``; waits for another writer).
    The kernel drops it when the holder's process ends, however it ends."""
    folder = Path(history_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def write_store(
    history_dir: str | Path,
    sessions: pd.DataFrame,
    products: pd.DataFrame,
    *,
    version: int,
    now: datetime | None = None,
) -> Manifest:
    """Write version ``version`` of the store: both tables under new names, then the manifest
    (atomically, last), then remove the files of versions older than ``version - 1`` (a reader
    of the previous version may still be opening its files). The caller holds
    :func:`store_lock`."""
    folder = Path(history_dir)
    sessions_file = f"sessions-{version:06d}.parquet"
    products_file = f"products-{version:06d}.parquet"
    write_parquet(sessions, folder / sessions_file)
    write_parquet(products, folder / products_file)
    manifest = Manifest(
        version=version,
        sessions_file=sessions_file,
        products_file=products_file,
        sha256={n: _sha256(folder / n) for n in (sessions_file, products_file)},
        n_sessions=len(sessions),
        n_products=len(products),
        history_as_of=history_as_of(sessions),
        updated_at=(now or datetime.now(UTC)).isoformat(),
    )
    with atomic_path(folder / MANIFEST_FILE) as tmp:
        tmp.write_text(json.dumps(manifest.as_json(), indent=2), encoding="utf-8")
    for entry in folder.iterdir():
        found = _VERSIONED.fullmatch(entry.name)
        if found and int(found[2]) < version - 1:
            with contextlib.suppress(OSError):
                entry.unlink()
    return manifest


def ingest(
    history_dir: str | Path,
    sessions: pd.DataFrame,
    products: pd.DataFrame | None = None,
    *,
    tz: str = DEFAULT_TZ,
    replace: bool = False,
    source: str = "",
    now: pd.Timestamp | None = None,
) -> IngestResult:
    """Add a batch of finished sessions (and their product rows) to the store, all or nothing.

    The batch is checked first (:func:`prepare_batch`), then merged under the writer lock
    with the store's current version (:func:`merge_batch`); a new version is written only when
    something was added or replaced. Raises :class:`BatchRejected` (nothing written) for any
    failing row, :class:`HistoryStoreError` when the store cannot be read.
    """
    batch = prepare_batch(sessions, products, tz=tz, source=source, now=now)
    with store_lock(history_dir):
        store = load_store(history_dir, tz=tz)
        merged = merge_batch(
            store.sessions, store.products, batch, replace=replace, tz=tz, source=source
        )
        manifest = store.manifest
        if merged.changed:
            manifest = write_store(
                history_dir, merged.sessions, merged.products, version=store.version + 1
            )
    return IngestResult(
        added=len(merged.added),
        unchanged=len(merged.unchanged),
        replaced=len(merged.replaced),
        products_written=merged.products_written,
        version=manifest.version if manifest else 0,
        history_as_of=manifest.history_as_of if manifest else None,
        warnings=batch.warnings,
    )


SESSION_FILE_STEMS = ("sessions",)
PRODUCT_FILE_STEMS = ("session_products", "products")
TABLE_SUFFIXES = (".parquet", ".pq", ".csv", ".tsv", ".txt", ".xlsx", ".xlsm", ".xls")


def find_table_files(folder: str | Path) -> tuple[Path, Path | None]:
    """The sessions file and the product-rows file (or None) of a folder to ingest:
    ``sessions.<ext>`` and ``session_products.<ext>`` (or ``products.<ext>``), ext one of
    parquet, csv, tsv, txt, xlsx, xlsm, xls. Raises ``FileNotFoundError`` without a sessions
    file, ``ValueError`` when a table has several files."""
    folder = Path(folder)

    def one(stems: tuple[str, ...]) -> Path | None:
        found = [folder / f"{s}{x}" for s in stems for x in TABLE_SUFFIXES]
        found = [p for p in found if p.is_file()]
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise ValueError(f"{folder}: several files for one table ({names}); keep one")
        return found[0] if found else None

    sessions = one(SESSION_FILE_STEMS)
    if sessions is None:
        raise FileNotFoundError(
            f"{folder}: no sessions file (sessions.parquet, sessions.csv or sessions.xlsx)"
        )
    return sessions, one(PRODUCT_FILE_STEMS)
