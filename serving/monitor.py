"""A watch on live accuracy: the forecasts the service gave, joined to what happened.

Every forecast is logged to a local SQLite file (:class:`ForecastLog`; stdlib ``sqlite3`` in WAL
mode, so the service appends while ``livecast monitor`` reads): plan id, room, model version,
start time, lead days and P10 / P50 / P90 per target. Actuals (a review, or finished sessions
ingested into the history) are logged by session id. :func:`joined` pairs each finished session
with the last forecast made for it before it started.

:func:`watch` judges each room by a two-sided CUSUM of its standardised log errors
``z = log((1 + actual) / (1 + P50)) / sigma``, where ``sigma`` comes from the forecast's own
interval (``(log P90 - log P10) / 2.563``, the P10-P90 width of a normal in log space). With
honest intervals ``z`` is about N(0, 1): the CUSUM ``S = max(0, S + |z| - k)`` on each side
stays low, and a lasting shift (a room whose traffic halved: ``z`` about -1.5 to -2 for a
typical interval) crosses ``h`` within a few sessions. ``k = 0.5`` and ``h = 5`` are the
textbook choice for a one-sigma shift (an in-control run length of several hundred sessions per
side). A room's own level is estimated from its earlier sessions (a
self-starting CUSUM): per-room bias that was there from the start is the model's, a change is
the room's. On simulated live forecasts (8 rooms, 60 days after a cut) this flagged no room
without a change, and each room 2-17 sessions after its traffic halved (median 7). With errors
drawn from N(0, 0.85) (the spread of these intervals' z), 4 % of rooms raise a false alarm per
100 sessions (19 % at N(0, 1)); ``h`` trades that against the delay.
A flagged room is one whose forecasts no longer describe it: retraining (``livecast retrain``)
is due. :func:`rolling` gives the rolling WAPE, bias and P10-P90 coverage for the report.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

TARGETS: tuple[str, ...] = ("viewers", "orders", "gmv")
Z_P10_P90 = 2.5631031310892007
"""Width of a standard normal's P10-P90 interval."""
CUSUM_K = 0.5
CUSUM_H = 5.0
REFERENCE_SESSIONS = 10
"""A room's first sessions in the log, which set its in-control error level."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS forecasts (
    plan_id TEXT NOT NULL, room_id TEXT NOT NULL, model TEXT NOT NULL,
    start_time TEXT NOT NULL, logged_at TEXT NOT NULL, lead_days REAL,
    target TEXT NOT NULL, p10 REAL NOT NULL, p50 REAL NOT NULL, p90 REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS forecasts_plan ON forecasts (plan_id);
CREATE TABLE IF NOT EXISTS plan_inputs (
    plan_id TEXT NOT NULL, logged_at TEXT NOT NULL, model TEXT NOT NULL, inputs TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS actuals (
    session_id TEXT NOT NULL, target TEXT NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (session_id, target)
);
"""


def _json(values: dict[str, Any]) -> str:
    """Plan inputs as JSON (a missing number as null, not NaN)."""
    return json.dumps(
        {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in values.items()},
        default=str,
    )


def _iso(value: Any) -> str:
    """An instant as ISO 8601 in UTC (naive values are taken as UTC)."""
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.isoformat()


class ForecastLog:
    """The forecast and actuals store (one SQLite file; created on first use)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=30)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute(
                "PRAGMA synchronous=NORMAL"
            )  # WAL: durable at checkpoints, no fsync per write
            con.executescript(_SCHEMA)
            with con:  # one transaction: all rows or none
                yield con
        finally:
            con.close()

    def log_forecasts(
        self, items: Iterable[dict[str, Any]], *, model: str, logged_at: datetime | None = None
    ) -> int:
        """Log forecast answers (``PlanForecast``-shaped dicts with ``session_id``, ``room_id``,
        ``start_time`` and per-target ``p10/p50/p90``). Returns the rows written."""
        now = logged_at or datetime.now(UTC)
        rows = []
        inputs = []
        for item in items:
            if item.get("inputs"):
                inputs.append((str(item["session_id"]), _iso(now), model, _json(item["inputs"])))
            start = pd.Timestamp(item["start_time"])
            lead = (start - pd.Timestamp(now)) / pd.Timedelta(days=1)
            for t in TARGETS:
                if t in item:
                    q = item[t]
                    rows.append(
                        (
                            str(item["session_id"]),
                            str(item["room_id"]),
                            model,
                            _iso(start),
                            _iso(now),
                            float(lead),
                            t,
                            float(q["p10"]),
                            float(q["p50"]),
                            float(q["p90"]),
                        )
                    )
        with self._connect() as con:
            con.executemany("INSERT INTO forecasts VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
            con.executemany("INSERT INTO plan_inputs VALUES (?,?,?,?)", inputs)
        return len(rows)

    def recent_inputs(self, limit: int = 200, model: str | None = None) -> pd.DataFrame:
        """The plan inputs (``training.drift.DRIFT_INPUTS``) logged with the last ``limit``
        forecasts (of ``model`` only, when given), one row per forecast, newest last."""
        if not self.path.exists():
            return pd.DataFrame()
        query = "SELECT logged_at, inputs FROM plan_inputs"
        args: tuple[Any, ...] = ()
        if model is not None:
            query += " WHERE model = ?"
            args = (model,)
        query += " ORDER BY logged_at DESC, rowid DESC LIMIT ?"
        with self._connect() as con:
            rows = con.execute(query, (*args, int(limit))).fetchall()
        frame = pd.DataFrame([json.loads(r[1]) for r in reversed(rows)])
        return frame.astype({c: object for c in frame.columns if frame[c].dtype == object})

    def log_actuals(self, sessions: pd.DataFrame) -> int:
        """Log finished sessions' outcomes (``session_id`` and any of the targets); a session
        logged again replaces its values. Returns the rows written."""
        rows = [
            (str(sid), t, float(v))
            for t in TARGETS
            if t in sessions.columns
            for sid, v in zip(sessions["session_id"], sessions[t], strict=True)
            if pd.notna(v)
        ]
        with self._connect() as con:
            con.executemany("INSERT OR REPLACE INTO actuals VALUES (?,?,?)", rows)
        return len(rows)

    def joined(self) -> pd.DataFrame:
        """One row per (finished session, target): the last forecast logged for it before it
        started (or the last one, when all came later), with the actual."""
        if not self.path.exists():
            return _empty_joined()
        query = """
            SELECT f.plan_id AS session_id, f.room_id, f.model, f.start_time, f.logged_at,
                   f.lead_days, f.target, f.p10, f.p50, f.p90, a.value AS actual
            FROM forecasts f JOIN actuals a ON a.session_id = f.plan_id AND a.target = f.target
        """
        with self._connect() as con:
            frame = pd.read_sql_query(query, con)
        if frame.empty:
            return _empty_joined()
        frame["start_time"] = pd.to_datetime(frame["start_time"], utc=True, format="ISO8601")
        frame["logged_at"] = pd.to_datetime(frame["logged_at"], utc=True, format="ISO8601")
        frame["before"] = frame["logged_at"] <= frame["start_time"]
        frame = frame.sort_values(["before", "logged_at"], kind="stable")
        frame = frame.drop_duplicates(["session_id", "target"], keep="last").drop(columns="before")
        return frame.sort_values(["start_time", "session_id", "target"], ignore_index=True)


class BackgroundLog:
    """Appends to a :class:`ForecastLog` from a daemon thread, in batches, so a request never
    waits for SQLite: :meth:`forecasts` and :meth:`actuals` only queue. A failed write is
    logged as a warning and dropped (the watch is advisory; a forecast is never refused for
    it). :meth:`flush` waits until everything queued so far is written."""

    def __init__(self, log: ForecastLog) -> None:
        self.log = log
        self._queue: queue.Queue[tuple[str, Any, Any] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="livecast-forecast-log", daemon=True
                )
                self._thread.start()

    def forecasts(self, items: list[dict[str, Any]], model: str) -> None:
        self._start()
        self._queue.put(("forecasts", items, model))

    def actuals(self, sessions: pd.DataFrame) -> None:
        self._start()
        self._queue.put(("actuals", sessions, None))

    def flush(self, timeout: float = 30.0) -> None:
        self._start()
        done = threading.Event()
        self._queue.put(("flush", done, None))
        done.wait(timeout)

    def _run(self) -> None:
        while True:
            kind, payload, model = self._queue.get()
            try:
                if kind == "flush":
                    payload.set()
                    continue
                batch = [(kind, payload, model)]
                while not self._queue.empty() and len(batch) < 256:
                    nxt = self._queue.get()
                    if nxt[0] == "flush":
                        self._queue.put(nxt)  # after this batch
                        break
                    batch.append(nxt)
                items: dict[str, list[dict[str, Any]]] = {}
                for k, p, m in batch:
                    if k == "forecasts":
                        items.setdefault(m, []).extend(p)
                    else:
                        self.log.log_actuals(p)
                for m, rows in items.items():
                    self.log.log_forecasts(rows, model=m)
            except Exception as exc:  # advisory: never take the service down
                logger.warning("forecast log write failed: %s", exc)


def _empty_joined() -> pd.DataFrame:
    cols = [
        "session_id", "room_id", "model", "start_time", "logged_at", "lead_days",
        "target", "p10", "p50", "p90", "actual",
    ]  # fmt: skip
    return pd.DataFrame(columns=cols)


def standardised_errors(joined: pd.DataFrame) -> np.ndarray:
    """``z = log((1 + actual) / (1 + P50)) / sigma`` per row, ``sigma`` from the forecast's
    P10-P90 interval in log space (floored at 0.05, so a degenerate interval cannot make every
    error huge)."""
    spread = np.log1p(joined["p90"].to_numpy(float)) - np.log1p(joined["p10"].to_numpy(float))
    sigma = np.maximum(spread / Z_P10_P90, 0.05)
    err = np.log1p(joined["actual"].to_numpy(float)) - np.log1p(joined["p50"].to_numpy(float))
    return err / sigma


@dataclass(frozen=True)
class Alarm:
    """A room whose forecasts stopped describing it."""

    room_id: str
    target: str
    direction: str  # "below" (actuals under the forecasts) or "above"
    session_id: str  # the session at which the CUSUM crossed h
    start_time: pd.Timestamp
    sessions_seen: int  # the room's sessions with actuals up to and including that one


def cusum(z: np.ndarray, k: float = CUSUM_K, h: float = CUSUM_H) -> tuple[int, str] | None:
    """The first index at which a two-sided CUSUM of ``z`` crosses ``h``, and the side
    (``"below"``: negative errors), or None."""
    low = high = 0.0
    for i, value in enumerate(z):
        low = max(0.0, low - value - k)
        high = max(0.0, high + value - k)
        if low > h:
            return i, "below"
        if high > h:
            return i, "above"
    return None


def innovations(z: np.ndarray) -> np.ndarray:
    """Each ``z`` minus the mean of the ones before it (0 before the first): the error against
    the room's own level so far, whose estimate sharpens as sessions accumulate."""
    before = np.concatenate([[0.0], np.cumsum(z)[:-1]])
    count = np.arange(len(z), dtype=float)
    return z - np.divide(before, count, out=np.zeros(len(z)), where=count > 0)


def watch(
    joined: pd.DataFrame,
    *,
    targets: tuple[str, ...] = ("viewers", "gmv"),
    k: float = CUSUM_K,
    h: float = CUSUM_H,
    reference: int = REFERENCE_SESSIONS,
) -> list[Alarm]:
    """The rooms whose standardised errors changed (see the module docstring), one alarm per
    room and target, at the first session where the CUSUM crossed ``h``.

    Each session's ``z`` is judged against the mean of the room's earlier ones
    (:func:`innovations`: a room the model always under-forecasts a little is not a change);
    the CUSUM watches from the room's session ``reference`` + 1 on, when that level is known
    well enough. A room with no more than ``reference`` sessions is not judged yet."""
    alarms = []
    data = joined[joined["target"].isin(targets)].copy()
    if data.empty:
        return alarms
    data["z"] = standardised_errors(data)
    for (room, target), g in data.sort_values("start_time").groupby(["room_id", "target"]):
        z = g["z"].to_numpy()
        if len(z) <= reference:
            continue
        hit = cusum(innovations(z)[reference:], k, h)
        if hit is not None:
            i = hit[0] + reference
            side = hit[1]
            row = g.iloc[i]
            alarms.append(
                Alarm(
                    str(room), str(target), side, str(row["session_id"]), row["start_time"], i + 1
                )
            )
    return alarms


def rolling(joined: pd.DataFrame, window: int = 20) -> pd.DataFrame:
    """Per room and target, over its last ``window`` sessions with actuals: WAPE, bias
    (sum of P50 - actual over sum of actual) and P10-P90 coverage; plus an ``all rooms`` row
    per target over the last ``window`` sessions of every room."""
    rows = []
    for (room, target), g in joined.sort_values("start_time").groupby(["room_id", "target"]):
        rows.append(_accuracy(g.tail(window), room, target))
    for target, g in joined.groupby("target"):
        last = g.sort_values("start_time").groupby("room_id").tail(window)
        rows.append(_accuracy(last, "all rooms", target))
    cols = ["room_id", "target", "n", "wape", "bias", "coverage"]
    return pd.DataFrame(rows, columns=cols)


def _accuracy(g: pd.DataFrame, room: str, target: str) -> dict[str, Any]:
    actual = g["actual"].to_numpy(float)
    p50 = g["p50"].to_numpy(float)
    total = actual.sum()
    inside = (g["p10"].to_numpy(float) <= actual) & (actual <= g["p90"].to_numpy(float))
    return {
        "room_id": room,
        "target": target,
        "n": len(g),
        "wape": float(np.abs(p50 - actual).sum() / total) if total > 0 else float("nan"),
        "bias": float((p50 - actual).sum() / total) if total > 0 else float("nan"),
        "coverage": float(inside.mean()) if len(g) else float("nan"),
    }


def by_lead(joined: pd.DataFrame) -> pd.DataFrame:
    """WAPE, bias and P10-P90 coverage per target and lead bucket (days from the forecast to
    the session; the backtest's buckets, ``training.report.LEAD_BUCKETS``, then longer, and
    ``after start`` for a session whose only forecast came after it began)."""
    from training.report import LEAD_BUCKETS

    last = LEAD_BUCKETS[-1][1]
    buckets = [(-np.inf, 0, "after start"), *LEAD_BUCKETS, (last, np.inf, f">{last - 1}")]
    lead = joined["lead_days"].to_numpy(float)
    rows = []
    for target, g in joined.groupby("target", sort=False):
        lead_t = lead[joined["target"].to_numpy() == target]
        for low, high, name in buckets:
            part = g[(lead_t >= low) & (lead_t < high)]
            if len(part):
                rows.append({**_accuracy(part, "all rooms", str(target)), "lead": name})
    cols = ["target", "lead", "n", "wape", "bias", "coverage"]
    return pd.DataFrame(rows).reindex(columns=cols)


def series(joined: pd.DataFrame, window: int = 30) -> pd.DataFrame:
    """Per target, after each session with an actual (in start order, all rooms): WAPE, bias
    and P10-P90 coverage over the last ``window`` sessions; the Model health page plots it."""
    out = []
    for target, g in joined.sort_values("start_time", kind="stable").groupby("target", sort=False):
        actual = g["actual"].to_numpy(float)
        p50 = g["p50"].to_numpy(float)
        inside = (g["p10"].to_numpy(float) <= actual) & (actual <= g["p90"].to_numpy(float))
        roll = (
            pd.DataFrame(
                {"err": np.abs(p50 - actual), "dev": p50 - actual, "act": actual, "in": inside}
            )
            .rolling(window, min_periods=1)
            .sum()
        )
        total = roll["act"].to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            wape_ = np.where(total > 0, roll["err"].to_numpy() / total, np.nan)
            bias_ = np.where(total > 0, roll["dev"].to_numpy() / total, np.nan)
        n = np.minimum(np.arange(1, len(g) + 1), window)
        out.append(
            pd.DataFrame(
                {
                    "target": target,
                    "start_time": g["start_time"].to_numpy(),
                    "n": n,
                    "wape": wape_,
                    "bias": bias_,
                    "coverage": roll["in"].to_numpy() / n,
                }
            )
        )
    cols = ["target", "start_time", "n", "wape", "bias", "coverage"]
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=cols)


BAND_SESSIONS = 30
"""Sessions (all rooms, latest first) over which the live accuracy is held to the backtest's
band."""
BAND_WAPE_RATIO = 1.5
"""Live WAPE above this multiple of the backtest's is outside the band."""


@dataclass(frozen=True)
class BandCheck:
    """Live accuracy of one target over the last :data:`BAND_SESSIONS` sessions against the
    backtest that promoted the model."""

    target: str
    n: int
    wape: float
    backtest_wape: float
    coverage: float
    coverage_low: float
    coverage_high: float
    outside: tuple[str, ...]  # "wape" and / or "coverage"


def band_checks(
    joined: pd.DataFrame, backtest: dict[str, Any], sessions: int = BAND_SESSIONS
) -> list[BandCheck]:
    """Per target with a backtest figure and at least ``sessions`` sessions with actuals: is the
    live WAPE within :data:`BAND_WAPE_RATIO` x the backtest's, and the live P10-P90 coverage
    within two binomial standard errors of the backtest's (``sqrt(c (1 - c) / n)``: 0.65-0.95
    for c = 0.80 over 30 sessions)? A target outside either is a reason to retrain."""
    out = []
    for target, g in joined.sort_values("start_time", kind="stable").groupby("target", sort=False):
        model = (backtest.get(str(target)) or {}).get("model") or {}
        ref_wape, ref_cov = model.get("wape"), model.get("coverage_p10_p90")
        if ref_wape is None or ref_cov is None or len(g) < sessions:
            continue
        acc = _accuracy(g.tail(sessions), "all rooms", str(target))
        se = float(np.sqrt(ref_cov * (1 - ref_cov) / sessions))
        low, high = ref_cov - 2 * se, ref_cov + 2 * se
        outside = []
        if acc["wape"] > BAND_WAPE_RATIO * ref_wape:
            outside.append("wape")
        if not low <= acc["coverage"] <= high:
            outside.append("coverage")
        out.append(
            BandCheck(
                target=str(target),
                n=sessions,
                wape=acc["wape"],
                backtest_wape=float(ref_wape),
                coverage=acc["coverage"],
                coverage_low=low,
                coverage_high=high,
                outside=tuple(outside),
            )
        )
    return out


def health_report(
    log: ForecastLog,
    metadata: dict[str, Any],
    *,
    window: int = 20,
    h: float = CUSUM_H,
    drift_plans: int = 200,
) -> dict[str, Any]:
    """Everything the Model health tab and ``livecast monitor`` show, JSON-ready: rolling
    accuracy by room, by lead bucket and over time; the drifted rooms (:func:`watch`); the
    targets outside the backtest's band (:func:`band_checks`); the drift of the last
    ``drift_plans`` plans' inputs against the served model's training data
    (``training.drift.input_drift``); and whether retraining is due, with the reasons."""
    from training.drift import input_drift

    joined = log.joined()
    reference = metadata.get("drift_reference") or {}
    model = str(metadata.get("train_id") or "")
    drift = (
        input_drift(reference, log.recent_inputs(drift_plans, model=model or None))
        if reference
        else pd.DataFrame()
    )
    alarms = watch(joined, h=h) if not joined.empty else []
    bands = band_checks(joined, metadata.get("backtest") or {}) if not joined.empty else []
    reasons = [
        f"{a.room_id} {a.target}: actuals {a.direction} the forecasts since {a.start_time.date()}"
        for a in alarms
    ]
    reasons += [
        f"{b.target}: {' and '.join(b.outside)} outside the backtest's band over the last "
        f"{b.n} sessions"
        for b in bands
        if b.outside
    ]
    drifted = [] if drift.empty else drift.loc[drift["status"] == "drifted", "feature"].tolist()
    return {
        "model": model,
        "sessions_with_actuals": int(joined["session_id"].nunique()) if len(joined) else 0,
        "window": window,
        "rooms": _records(rolling(joined, window)) if len(joined) else [],
        "lead": _records(by_lead(joined)) if len(joined) else [],
        "series": _records(series(joined, BAND_SESSIONS)) if len(joined) else [],
        "alarms": [
            {
                "room_id": a.room_id,
                "target": a.target,
                "direction": a.direction,
                "session_id": a.session_id,
                "start_time": a.start_time.isoformat(),
                "sessions_seen": a.sessions_seen,
            }
            for a in alarms
        ],
        "bands": [b.__dict__ | {"outside": list(b.outside)} for b in bands],
        "drift": _records(drift),
        "drift_reference": bool(reference),
        "drifted_inputs": drifted,
        "retrain_due": bool(reasons),
        "reasons": reasons,
    }


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts: timestamps as ISO text, NaN as None."""
    out = frame.copy()
    for c in out.columns:
        if isinstance(out[c].dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(
            out[c]
        ):
            out[c] = out[c].map(lambda t: t.isoformat())
    out = out.astype(object).where(out.notna(), None)
    return [
        {k: (float(v) if isinstance(v, np.floating) else v) for k, v in row.items()}
        for row in out.to_dict("records")
    ]
