"""Fast per-request scoring of draft plans: the same feature functions, no per-request frames.

Every feature is defined once in :mod:`features.sessions` as a function from session inputs and
history state to numpy columns (:func:`features.sessions.session_columns`). Training wraps
those columns in a DataFrame; :class:`PlanScorer` builds the history state once at load time
(:func:`features.sessions.plan_context`), reads each request's plans column-wise straight from
their pydantic models (:func:`features.sessions.plan_columns`: one pass over the plans) and
predicts on a numpy matrix (:func:`features.sessions.model_matrix`: category codes of the
bundle's saved vocabulary; an unseen category is rejected, never read as missing). A pandas
frame in ``Booster.predict`` costs about 100x a numpy row, and pandas / pandera work per
request dominated the latency.

Fresh history: the history state (:class:`HistoryState`: the plan context, the known rooms and
``history_as_of``) is one immutable object held in one attribute. :meth:`PlanScorer.build_state`
builds a new one from given history frames (seconds at the default size: call it off the event
loop) and :meth:`PlanScorer.swap` puts it in place with one attribute assignment. A request reads
the attribute once (:meth:`PlanScorer.score`), or works on :meth:`PlanScorer.pinned`, so a request
in flight finishes on the state it started with.

The service builds new states in a child process (:class:`HistoryBuilder`): a rebuild is about
2 s of mostly pure-Python pandas work at the default size, and on a thread of the serving process
it held the GIL against the requests (open-loop p99 of a one-plan forecast at 40 requests/s with
a new history version every few seconds: 90-443 ms, against 19-25 ms without; 28-62 ms with the
child, see the README). The child (idle CPU priority) ingests, merges and builds; the state comes
back as pickled parts with their numpy arrays out of band (:func:`dump_parts`), loaded piece by
piece so that no piece holds the GIL for more than a few milliseconds (:func:`load_parts`), and
the old state is emptied piecewise once no request holds it (:func:`release_state`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import multiprocessing
import os
import pickle
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.contract import DEFAULT_TZ, validate
from features.history_store import IngestResult, history_as_of, ingest, load_store, merge_history
from features.plan import SessionPlan, example_plan
from features.sessions import (
    PlanContext,
    model_matrix,
    plan_columns,
    plan_context,
    plan_features,
)
from training.bundle import HISTORY_FILES, Bundle
from training.models import levels_of


@dataclass(frozen=True)
class HistoryState:
    """The history a scorer forecasts from, built once per history version (immutable)."""

    context: PlanContext
    known_rooms: frozenset[str]
    history_as_of: str | None
    """Latest ``start_time`` of the history (ISO 8601), None for an empty history."""
    n_sessions: int
    store_version: int
    """Version of the history store merged in (0: the bundle's history alone)."""
    model_info: dict[str, Any]
    """The :class:`~serving.schemas.ModelInfo` of answers scored on this state."""


class PlanScorer:
    """Scores :class:`~features.plan.SessionPlan` lists with a loaded bundle.

    ``history``: the history frames (sessions, products) to forecast from, default the
    bundle's; see :meth:`build_state` to replace them later.
    """

    def __init__(
        self,
        bundle: Bundle,
        *,
        tz: str = DEFAULT_TZ,
        num_threads: int = 0,
        history: tuple[pd.DataFrame, pd.DataFrame] | None = None,
        store_version: int = 0,
    ) -> None:
        self.bundle = bundle
        self.forecaster = bundle.forecaster
        self.num_threads = num_threads
        self.tz = tz
        self.features = list(self.forecaster.features)
        self.vocab = {k: v for k, v in self.forecaster.vocab.items() if k in self.features}
        meta = bundle.metadata
        self._model_base: dict[str, Any] = {
            "name": "livecast-forecaster",
            "bundle": bundle.path.name,
            "train_id": meta.get("train_id"),
            "trained_until": meta.get("trained_until"),
            "versions": {str(k): str(v) for k, v in (meta.get("versions") or {}).items()},
        }
        sessions, products = history or (bundle.history_sessions, bundle.history_products)
        self.state = self.build_state(sessions, products, store_version=store_version)

    # ------------------------------------------------------------------ history state

    def build_state(
        self, sessions: pd.DataFrame, products: pd.DataFrame, *, store_version: int = 0
    ) -> HistoryState:
        """A new history state from history frames (contract ``sessions`` and
        ``session_products``). Does not change the scorer; about 2 s for 22,500 sessions and
        420,000 product rows, so never on the event loop."""
        context = plan_context(sessions, products, tz=self.tz)
        as_of = history_as_of(sessions, self.tz)
        return HistoryState(
            context=context,
            known_rooms=frozenset(sessions["room_id"].astype(str)),
            history_as_of=as_of,
            n_sessions=len(sessions),
            store_version=store_version,
            model_info={**self._model_base, "history_as_of": as_of},
        )

    def state_from_parts(self, parts: StateParts) -> HistoryState:
        """The history state a :class:`HistoryBuilder` child built (see :func:`load_parts`)."""
        return HistoryState(
            context=load_parts(parts.context),
            known_rooms=parts.known_rooms,
            history_as_of=parts.history_as_of,
            n_sessions=parts.n_sessions,
            store_version=parts.store_version,
            model_info={**self._model_base, "history_as_of": parts.history_as_of},
        )

    def swap(self, state: HistoryState) -> None:
        """Serve ``state`` from now on: one attribute assignment (atomic under the GIL).
        Requests already scoring keep the state they read."""
        self.state = state

    def pinned(self) -> PlanScorer:
        """A shallow copy of this scorer bound to the current state: a request that scores
        several times (compare, suggest, review) uses one history throughout, even if a new
        state is swapped in meanwhile. Costs a few attribute copies."""
        return copy.copy(self)

    @property
    def context(self) -> PlanContext:
        """The current history state's plan context."""
        return self.state.context

    @property
    def known_rooms(self) -> frozenset[str]:
        """Rooms with history in the current state."""
        return self.state.known_rooms

    @property
    def model_info(self) -> dict[str, Any]:
        """The current state's :class:`~serving.schemas.ModelInfo` (with ``history_as_of``)."""
        return self.state.model_info

    @property
    def history_as_of(self) -> str | None:
        """Latest start time of the current history (ISO 8601)."""
        return self.state.history_as_of

    # ------------------------------------------------------------------ features and matrix

    def frame(self, plans: list[SessionPlan]) -> pd.DataFrame:
        """The feature rows of ``plans``: ``plan_features`` with the prebuilt history state."""
        return plan_features(plans, context=self.state.context)

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The model input of a feature frame as float64 numpy (:func:`model_matrix`):
        features in training order, categoricals as codes of the saved vocabulary."""
        cols = {
            c: frame[c].astype(object).to_numpy() if c in self.vocab else frame[c].to_numpy(float)
            for c in self.features
        }
        return model_matrix(cols, self.features, self.vocab)

    # ------------------------------------------------------------------ scoring

    def score(self, plans: list[SessionPlan], *, drivers: bool = True) -> list[dict[str, Any]]:
        """One dict per plan in the :class:`~serving.schemas.PlanForecast` shape.

        Column-wise end to end: the plans are read in one pass (:func:`plan_columns`), and the
        answers are built from the prediction arrays read once as lists, not per plan. The
        history state is read once, so a state swapped in meanwhile does not mix in."""
        return self.score_with_inputs(plans, drivers=drivers)[0]

    def score_with_inputs(
        self, plans: list[SessionPlan], *, drivers: bool = True, keep: tuple[str, ...] = ()
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """:meth:`score`, and per plan the values of the feature columns ``keep`` (those the
        model has) that the answers were computed from: the plan inputs the watch logs for
        drift (``training.drift``), from the same feature code as the forecast."""
        inputs, cols = plan_columns(plans, self.state.context)
        kept = {c: cols[c].tolist() for c in keep if c in cols}
        values = [{c: v[i] for c, v in kept.items()} for i in range(len(plans))] if kept else []
        X = model_matrix(cols, self.features, self.vocab)
        fc = self.forecaster
        cold = cols["room__n_prior"] == 0
        pred = fc.predict_columns(X, cold, num_threads=self.num_threads, levels=levels_of(cols))
        explained: list[dict[str, Any] | None] = [None] * len(plans)
        if drivers:
            explained = [
                *fc.explain_columns(X, lambda r, f: cols[f][r], num_threads=self.num_threads)
            ]
        targets = list(fc.models)
        sources = {t: fc.models[t].source for t in targets}
        flags = [(t, pred[f"{t}_held"].tolist()) for t in targets if f"{t}_held" in pred]
        quantiles = [
            (t, pred[f"{t}_p10"].tolist(), pred[f"{t}_p50"].tolist(), pred[f"{t}_p90"].tolist())
            for t in targets
        ]
        out = []
        for i, (sid, room, is_cold, conversion, aov, explanation) in enumerate(
            zip(
                inputs.session_id.tolist(),
                inputs.room_id.tolist(),
                cold.tolist(),
                pred["conversion_p50"].tolist(),
                pred["aov_p50"].tolist(),
                explained,
                strict=True,
            )
        ):
            item: dict[str, Any] = {"session_id": sid, "room_id": room, "cold_start": is_cold}
            for t, p10, p50, p90 in quantiles:
                item[t] = {"p10": p10[i], "p50": p50[i], "p90": p90[i]}
            item["conversion"] = conversion
            item["aov"] = aov
            item["sources"] = dict(sources)
            item["held"] = [t for t, held in flags if held[i]]
            if explanation is not None:
                item["explanation"] = _explanation(explanation)
            out.append(item)
        return out, values

    def warm_up(self) -> None:
        """Score a plan of a known room and a cold-start plan once (caches, allocations)."""
        room = next(iter(sorted(self.known_rooms)), "room-000")
        plan = example_plan().model_copy(update={"room_id": room})
        cold = plan.model_copy(update={"room_id": "__warm-up-new-room__", "session_id": "cold"})
        self.score([plan, cold], drivers=True)
        self.score([plan], drivers=False)


def _explanation(e: dict[str, Any]) -> dict[str, Any]:
    fams = e["families"]
    return {
        "target": "gmv",
        "baseline": e["baseline"],
        "families": fams,
        "multipliers": {k: float(np.exp(v)) for k, v in fams.items()},
        "drivers": e["drivers"],
    }


# --------------------------------------------------------------------------- child-process builds


@dataclass(frozen=True)
class StateParts:
    """A history state built in another process: the plan context as pickled parts (see
    :func:`dump_parts`) and the state's small fields."""

    context: Any
    known_rooms: frozenset[str]
    history_as_of: str | None
    n_sessions: int
    store_version: int


DICT_CHUNK = 4096
"""Items per piece of a large dictionary in :func:`dump_parts` (a few milliseconds to load)."""
PIECE_PAUSE_S = 0.001
"""Pause before loading each piece (seconds): the request threads get the GIL in between."""


def _piecewise(obj: Any) -> bool:
    """Whether :func:`dump_parts` takes ``obj`` apart: a dataclass instance, or an instance of
    a plain class of this project's feature code (e.g. ``AsOfTable``) with a ``__dict__``."""
    if isinstance(obj, type):
        return False
    if dataclasses.is_dataclass(obj):
        return True
    cls = type(obj)
    return cls.__module__.startswith("features.") and hasattr(obj, "__dict__")


def _attributes(obj: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(obj):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    return dict(vars(obj))


def dump_parts(obj: Any) -> Any:
    """``obj`` as picklable parts to load piece by piece (:func:`load_parts`): dataclasses and
    the feature code's plain objects as their class and their attributes' parts, dictionaries
    of more than :data:`DICT_CHUNK` items in pieces, anything else pickled (protocol 5) with its
    buffers (numpy arrays) out of band, so loading them is a copy, not a parse."""
    if _piecewise(obj):
        return ("object", type(obj), {k: dump_parts(v) for k, v in _attributes(obj).items()})
    if type(obj) is dict and len(obj) > DICT_CHUNK:
        items = list(obj.items())
        pieces = [
            pickle.dumps(dict(items[i : i + DICT_CHUNK]), protocol=5)
            for i in range(0, len(items), DICT_CHUNK)
        ]
        return ("dict", pieces)
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return ("pickle", data, [bytearray(b.raw()) for b in buffers])  # writeable arrays


def load_parts(parts: Any) -> Any:
    """The object of :func:`dump_parts`. The GIL is offered to other threads before every
    piece, so a request waits for one piece at most (a few milliseconds), not for the whole
    state (~40 ms at the default size, most of it the SKU table's dictionary)."""
    kind = parts[0]
    if kind == "object":
        _, cls, attributes = parts
        obj = object.__new__(cls)
        for name, value in attributes.items():
            object.__setattr__(obj, name, load_parts(value))
        return obj
    if kind == "dict":
        out: dict[Any, Any] = {}
        for piece in parts[1]:
            time.sleep(PIECE_PAUSE_S)
            out.update(pickle.loads(piece))
        return out
    _, data, buffers = parts
    time.sleep(PIECE_PAUSE_S)  # let waiting request threads run before this piece
    return pickle.loads(data, buffers=buffers)


def release_parts(obj: Any) -> None:
    """Empty the large dictionaries of an object :func:`dump_parts` would take apart, a piece
    at a time with the GIL offered in between. Freeing the old history state at once held the
    GIL for ~20 ms (its SKU dictionary); call this only once nothing reads ``obj`` any more."""
    if _piecewise(obj):
        for value in _attributes(obj).values():
            release_parts(value)
    elif type(obj) is dict and len(obj) > DICT_CHUNK:
        while obj:
            for _ in range(min(DICT_CHUNK, len(obj))):
                obj.popitem()
            time.sleep(PIECE_PAUSE_S)


def release_state(state: HistoryState, *, timeout_s: float = 30.0) -> bool:
    """Free a history state that was swapped out, piece by piece (:func:`release_parts`), once
    no request holds it: a pinned scorer of a request in flight keeps a reference, and the
    state is only emptied when the caller's reference is the last. Waits up to ``timeout_s``
    seconds (then leaves it to reference counting and returns False). Blocking: call it on a
    background thread, never on the event loop."""
    deadline = time.monotonic() + timeout_s
    # references: the caller's, this parameter, getrefcount's argument
    while sys.getrefcount(state) > 3 or sys.getrefcount(state.context) > 2:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    release_parts(state.context)
    return True


_CHILD_HISTORY: dict[tuple[str, str], tuple[pd.DataFrame, pd.DataFrame]] = {}
"""In the builder's child process: the bundle history it read, by (bundle folder, zone)."""


def _bundle_history(bundle_dir: str, tz: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    key = (bundle_dir, tz)
    if key not in _CHILD_HISTORY:
        _CHILD_HISTORY.clear()  # one bundle at a time
        folder = Path(bundle_dir)
        sessions = validate(pd.read_parquet(folder / HISTORY_FILES[0]), "sessions", tz=tz)
        products = validate(pd.read_parquet(folder / HISTORY_FILES[1]), "session_products", tz=tz)
        _CHILD_HISTORY[key] = (sessions, products)
    return _CHILD_HISTORY[key]


def build_parts(bundle_dir: str, history_dir: str, tz: str) -> StateParts:
    """The history state of a bundle's history plus the store's current version, as parts
    (runs in the builder's child process; any process may call it)."""
    base = _bundle_history(bundle_dir, tz)
    store = load_store(history_dir, tz=tz)
    sessions, products = merge_history(*base, store.sessions, store.products)
    context = plan_context(sessions, products, tz=tz)
    return StateParts(
        context=dump_parts(context),
        known_rooms=frozenset(sessions["room_id"].astype(str)),
        history_as_of=history_as_of(sessions, tz),
        n_sessions=len(sessions),
        store_version=store.version,
    )


def ingest_parts(
    bundle_dir: str,
    history_dir: str,
    tz: str,
    sessions: pd.DataFrame,
    products: pd.DataFrame | None,
    replace: bool,
) -> tuple[IngestResult, StateParts | None]:
    """Ingest a batch into the store (:func:`features.history_store.ingest`, all or nothing)
    and, when it changed the store, the new history state as parts (None: nothing changed, or
    the state could not be built: the stored batch stays, and the service's next check of the
    store retries the build and logs why). Raises
    :class:`~features.history_store.BatchRejected` for a failing batch."""
    result = ingest(history_dir, sessions, products, tz=tz, replace=replace, source="request")
    if result.added == 0 and result.replaced == 0:
        return result, None
    try:
        return result, build_parts(bundle_dir, history_dir, tz)
    except Exception:  # the batch is stored: never report it as not added
        return result, None


def _child_init(niceness: int) -> None:
    """The builder's child: the lowest CPU priority (Linux: ``SCHED_IDLE``, it runs only on
    cores nothing else wants; elsewhere ``nice``), and (Linux) SIGTERM when the thread that
    started it dies, so it never outlives its worker."""
    with contextlib.suppress(OSError):
        os.nice(niceness)
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)


class HistoryBuilder:
    """Builds a scorer's new history states in one child process (started on first use,
    ``spawn``: the serving process has threads, so never ``fork``), at the lowest CPU priority.

    Blocking: call its methods from one thread off the event loop (the service's history
    thread). A crashed child is replaced on the next call. As with any ``spawn`` child, the
    program's main module must be safe to import (the ``if __name__ == "__main__"`` idiom):
    ``livecast serve``'s workers and pytest are.
    """

    def __init__(
        self, bundle_dir: str | Path, history_dir: str | Path, tz: str, *, niceness: int = 19
    ) -> None:
        self.bundle_dir = str(bundle_dir)
        self.history_dir = str(history_dir)
        self.tz = tz
        self.niceness = niceness
        self._pool: ProcessPoolExecutor | None = None
        self._last_used = time.monotonic()

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_child_init,
                initargs=(self.niceness,),
            )
        return self._pool

    def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return self._executor().submit(fn, *args).result()
        except BrokenProcessPool:
            self.close()  # a new child next time
            raise
        finally:
            self._last_used = time.monotonic()

    def close_if_idle(self, seconds: float) -> bool:
        """Stop the child when it has not been used for ``seconds`` (it holds the bundle's
        history: about 430 MB at the default size); the next build starts a new one."""
        if self._pool is None or time.monotonic() - self._last_used < seconds:
            return False
        self.close()
        return True

    def rebuild(self, scorer: PlanScorer) -> HistoryState:
        """A new state of ``scorer`` from the bundle's history plus the store (not swapped)."""
        parts = self._run(build_parts, self.bundle_dir, self.history_dir, self.tz)
        return scorer.state_from_parts(parts)

    def ingest(
        self,
        scorer: PlanScorer,
        sessions: pd.DataFrame,
        products: pd.DataFrame | None,
        *,
        replace: bool = False,
    ) -> tuple[IngestResult, HistoryState | None]:
        """Ingest a batch into the store, then build the new state (None when the batch
        changed nothing). Raises :class:`~features.history_store.BatchRejected`."""
        result, parts = self._run(
            ingest_parts, self.bundle_dir, self.history_dir, self.tz, sessions, products, replace
        )
        return result, None if parts is None else scorer.state_from_parts(parts)

    def close(self) -> None:
        """Stop the child (it is started again on the next call)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
