"""The livecast HTTP service: a BentoML 1.4 ``@bentoml.service`` with pydantic IO.

Endpoints (request / response models in :mod:`serving.schemas`):

* ``POST /v1/forecast``  draft plans -> P10 / P50 / P90 viewers, orders, GMV, drivers
* ``POST /v1/compare``   a base plan and named variants -> forecasts and differences
* ``POST /v1/suggest``   a base plan and a bounded search space -> the top-k variants
* ``POST /v1/review``    a finished session and its outcomes -> forecast against actual
* ``POST /v1/segment``   fan events -> tiers and probabilities (the batch run's function)
* ``POST /v1/sessions``  finished sessions -> added to the history the forecasts read (changes
  state: off unless ``LIVECAST_INGEST_TOKEN`` is set, then ``Authorization: Bearer <token>``)
* ``GET /livez``, ``GET /readyz`` (ready once the models are loaded and warmed up),
  ``GET /metrics`` (Prometheus), ``GET /docs.json`` (OpenAPI), ``GET /`` the planner page.

Bundles are verified (checksums) before LightGBM reads them. A missing or damaged fan-tier
bundle disables only ``/v1/segment``: it answers 503 with the reason, while ``/readyz`` stays
ready, since readiness gates the forecasts (the service's main job) and a load balancer
taking the whole service out for the tier model would lose every endpoint. A damaged
forecaster bundle stops the worker with a BundleError; ``livecast serve`` checks it before
starting the server, so it exits 2 instead of spawning workers that fail.

The forecaster bundle is read from ``LIVECAST_SERVE_BUNDLE`` (a bundle folder, or a models
folder holding ``champion.json``), else the settings' ``models_dir`` champion. Bad input is a
4xx JSON error naming the field: BentoML returns pydantic errors as 400, the middleware below
answers 415 for non-JSON bodies and 413 for oversized ones, and scoring errors are 422.

Fresh history. The forecasts read the bundle's history plus the history store
(:mod:`features.history_store`, folder ``LIVECAST_HISTORY_DIR``). A background task checks the
store's manifest every ``LIVECAST_HISTORY_POLL_SECONDS`` (and at once after a
``POST /v1/sessions``); on a new version it rebuilds the scorer's history state off the event
loop, in a child process (:class:`serving.fastpath.HistoryBuilder`: the rebuild's pandas work
would hold the GIL against the requests), and swaps it in with one attribute assignment
(:meth:`serving.fastpath.PlanScorer.swap`): no restart, ``/readyz`` stays 200, and a request in
flight finishes on the state it started with. An ingest runs in that child too. A store that
cannot be read is logged and the service keeps the history it has.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import gc
import hmac
import logging
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import pandas as pd
from _bentoml_sdk.io_models import IOMixin
from pydantic import BaseModel, create_model
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles

from features.history_store import (
    BatchRejected,
    HistoryStoreError,
    load_store,
    merge_history,
    read_manifest,
)
from features.plan import SessionPlan
from livecast.config import get_settings
from serving.fastpath import HistoryBuilder, HistoryState, PlanScorer, release_state
from serving.monitor import BackgroundLog, ForecastLog, health_report
from serving.offload import HEAVY, HEAVY_ROUTES, INLINE_BODY_BYTES, LIGHT, is_heavy
from serving.schemas import (
    Actuals,
    CompareRequest,
    CompareResponse,
    ErrorResponse,
    FanEvent,
    ForecastRequest,
    ForecastResponse,
    HealthRequest,
    IngestRequest,
    IngestResponse,
    ModelHealthResponse,
    ProductRecord,
    ReviewRequest,
    ReviewResponse,
    SearchSpace,
    SegmentRequest,
    SegmentResponse,
    SessionRecord,
    SuggestRequest,
    SuggestResponse,
    Variant,
)
from serving.suggest import compare_payload, review_payload, suggest_payload
from training.drift import DRIFT_INPUTS

logger = logging.getLogger(__name__)

BUNDLE_ENV = "LIVECAST_SERVE_BUNDLE"
"""Environment variable naming the forecaster bundle (folder, or models folder)."""
TIER_BUNDLE_ENV = "LIVECAST_SERVE_TIER_BUNDLE"
"""Environment variable naming the fan-tier bundle (default: the models folder)."""
STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_BODY_BYTES = 32 * 1024 * 1024
JSON_TYPES = ("application/json",)
INGEST_ROUTE = "/v1/sessions"
"""The one route that changes state (off unless an ingest token is set)."""
MAX_ERROR_ITEMS = 200
"""Failing rows listed in a rejected ingest's 4xx body (the summary counts them all)."""
BUILDER_IDLE_S = 600.0
"""Seconds without a new history version after which the history builder's child process
is stopped (it holds the bundle's history; the next version starts a new one in ~5 s)."""


def bundle_dir() -> Path:
    """The forecaster bundle this process serves."""
    return Path(os.environ.get(BUNDLE_ENV) or get_settings().models_dir)


def tier_bundle_dir() -> Path:
    return Path(os.environ.get(TIER_BUNDLE_ENV) or get_settings().models_dir)


def _error(status: int, message: str, loc: list[str | int], kind: str) -> JSONResponse:
    return JSONResponse(
        {"error": message, "detail": [{"loc": loc, "msg": message, "type": kind}]},
        status_code=status,
    )


def _ingest_denied(headers: dict[str, str]) -> JSONResponse | None:
    """Why a ``POST /v1/sessions`` may not go on (403: no token is set, the endpoint is off;
    401: no or a wrong ``Authorization: Bearer`` token), or None when it may. The token is
    compared in constant time and never echoed or logged."""
    token = get_settings().ingest_token
    if token is None:
        return _error(
            403,
            "ingesting sessions is off on this server: set LIVECAST_INGEST_TOKEN to turn "
            "POST /v1/sessions on (read endpoints need no token)",
            ["header", "authorization"],
            "ingest_disabled",
        )
    scheme, _, given = headers.get("authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        resp = _error(
            401,
            "POST /v1/sessions needs the header 'Authorization: Bearer <ingest token>'",
            ["header", "authorization"],
            "unauthorized",
        )
        resp.headers["WWW-Authenticate"] = "Bearer"
        return resp
    return None


async def _read_body(receive: Any, limit: int) -> list[dict[str, Any]] | None:
    """The messages of a request body up to its last chunk, or None as soon as the body passes
    ``limit`` bytes (the rest is left unread). Counts what arrives, so a chunked body (no
    ``content-length``) is held to the limit too."""
    messages: list[dict[str, Any]] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":  # the client left: let the app see it
            return messages
        size += len(message.get("body", b""))
        if size > limit:
            return None
        if not message.get("more_body", False):
            return messages


def _replay(messages: list[dict[str, Any]], receive: Any) -> Any:
    """A ``receive`` that returns ``messages`` first, then defers to ``receive``."""
    pending = deque(messages)

    async def replay() -> dict[str, Any]:
        return pending.popleft() if pending else await receive()

    return replay


class GuardMiddleware:
    """ASGI middleware in front of the API: content type (415), body size (413), and the
    planner page at ``/``.

    A ``/v1/`` POST body is read here first, up to :data:`MAX_BODY_BYTES` (read at each
    request), and replayed to the app; past the limit the answer is 413 without reading further
    and the app is not called.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        method = scope.get("method", "GET")
        if path == "/docs.json" and method in ("GET", "HEAD"):
            await JSONResponse(openapi_document())(scope, receive, send)
            return
        if path == "/" and method in ("GET", "HEAD"):
            index = STATIC_DIR / "index.html"
            if index.exists():
                await FileResponse(index, media_type="text/html")(scope, receive, send)
                return
        if path.startswith("/v1/") and method == "POST":
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
            }
            if path == INGEST_ROUTE:  # before the body is read: no token, no work
                denied = _ingest_denied(headers)
                if denied is not None:
                    await denied(scope, receive, send)
                    return
            ctype = headers.get("content-type", "application/json").split(";")[0].strip().lower()
            if ctype not in JSON_TYPES:
                resp = _error(
                    415,
                    f"unsupported content type {ctype!r}: send application/json",
                    ["header", "content-type"],
                    "unsupported_media_type",
                )
                await resp(scope, receive, send)
                return
            limit = MAX_BODY_BYTES
            too_large = f"request body larger than {limit} bytes"
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                resp = _error(413, too_large, ["header", "content-length"], "body_too_large")
                await resp(scope, receive, send)
                return
            messages = await _read_body(receive, limit)
            if messages is None:
                await _error(413, too_large, ["body"], "body_too_large")(scope, receive, send)
                return
            receive = _replay(messages, receive)
            size = sum(len(m.get("body", b"")) for m in messages)
            if path in HEAVY_ROUTES or size > INLINE_BODY_BYTES:
                await self._heavy(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _heavy(self, scope: dict, receive: Any, send: Any) -> None:
        """Admit the request as heavy work (parsed, scored and answered off the event loop),
        or answer 429 with ``Retry-After`` when this worker already holds all it may."""
        if await HEAVY.guarded(lambda: self.app(scope, receive, send)):
            return
        wait = HEAVY.retry_after()
        resp = _error(
            429,
            f"the service is busy with other large requests; retry in {wait} s",
            ["body"],
            "too_many_requests",
        )
        resp.headers["Retry-After"] = str(wait)
        await resp(scope, receive, send)


_EXTRA_ERRORS = {
    "413": "Request body too large",
    "415": "Unsupported content type (send application/json)",
    "422": "The request validated but cannot be scored",
    "429": "The worker is busy with other large requests (see Retry-After)",
    "503": "The model this endpoint needs is not loaded",
}
_INGEST_ERRORS = {
    "401": "No or a wrong 'Authorization: Bearer <ingest token>' header",
    "403": "Ingesting is off on this server (no ingest token is set)",
    "409": "A session is already stored with other values (send replace=true to overwrite)",
    "503": "The history store cannot be read",
}


@functools.cache
def openapi_document() -> dict[str, Any]:
    """BentoML's OpenAPI document, completed: the 400 body's ``detail`` is the list of
    pydantic errors BentoML actually sends, and the service's own 4xx / 503 answers are
    declared on every ``/v1`` operation (so the schema describes every response)."""
    spec = Livecast.openapi_spec.asdict()
    # the component schemas are pydantic's JSON Schema 2020-12 (numeric exclusiveMinimum,
    # "type": "null"): that is OpenAPI 3.1, not the 3.0.2 BentoML states
    spec["openapi"] = "3.1.0"
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    ref = "#/components/schemas/{model}"
    err = ErrorResponse.model_json_schema(ref_template=ref)
    for name, sub in err.pop("$defs", {}).items():
        schemas[name] = sub
    schemas["ErrorResponse"] = err
    detail = schemas.get("InvalidArgument", {}).get("properties", {})
    if "detail" in detail:
        detail["detail"] = {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"$ref": ref.format(model="ErrorItem")}},
            ]
        }
    body = {"application/json": {"schema": {"$ref": ref.format(model="ErrorResponse")}}}
    for path, item in spec.get("paths", {}).items():
        if path.startswith("/v1/") and "post" in item:
            for code, text in _EXTRA_ERRORS.items():
                item["post"]["responses"][code] = {"description": text, "content": body}
            if path == INGEST_ROUTE:
                for code, text in _INGEST_ERRORS.items():
                    item["post"]["responses"][code] = {"description": text, "content": body}
    return spec


def _unscorable(exc: Exception) -> JSONResponse:
    return _error(422, f"cannot score the request: {exc}", ["body"], "unscorable")


class _OffLoopInput(IOMixin):
    """A request model whose body, when the request was admitted as heavy, is parsed and
    validated on the heavy-work pool rather than on the event loop (a 10 MB body takes about
    half a second to validate)."""

    @classmethod
    async def from_http_request(cls, request: Any, serde: Any) -> Any:
        body = await request.body()
        parse = functools.partial(cls.model_validate_json, body or b"{}")  # type: ignore[attr-defined]
        return await HEAVY.run(parse) if is_heavy() else parse()


def _input(model: type[BaseModel]) -> type[BaseModel]:
    """The BentoML input spec of ``model`` (named as BentoML names its own)."""
    return create_model(f"{model.__name__}IODescriptor", __base__=(_OffLoopInput, model))


def _as_response(answer: BaseModel | Response) -> Response:
    if isinstance(answer, Response):
        return answer
    return Response(answer.model_dump_json().encode(), media_type="application/json")


async def _answer(build: Any) -> Any:
    """``build()``'s answer, built and serialised off the event loop: on the light pool for a
    light request, on the heavy-work pool for a heavy one. The loop then writes one body of
    ready bytes."""
    pool = HEAVY if is_heavy() else LIGHT
    return await pool.run(lambda: _as_response(build()))


def die_with_parent() -> bool:
    """Ask Linux to send this process SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), so a
    worker never outlives a server killed with ``kill -9`` and keeps its port; exit at once if
    the parent is already gone. Returns whether the request was made (False off Linux)."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    if libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
    return True


@bentoml.service(
    name="livecast",
    workers=1,
    traffic={"timeout": 60, "max_concurrency": 256},
    metrics={"enabled": True},
    # health probes and scrapes arrive every few seconds: no trace spans for them
    tracing={"excluded_urls": ["/livez", "/readyz", "/metrics"]},
)
class Livecast:
    """Forecasts, comparisons, suggestions, reviews and fan tiers over the loaded bundles."""

    bundle_path: Path = bundle_dir()
    tier_bundle_path: Path = tier_bundle_dir()
    history_path: Path | None = None
    """The history store folder; None: the settings' ``history_dir`` (read at start)."""
    forecast_log_path: Path | None = None
    """The watch's forecast log; None: the settings' ``forecast_log``."""

    def __init__(self) -> None:
        from training.bundle import load_bundle

        die_with_parent()  # a worker never outlives its server (and holds its port)
        settings = get_settings()
        t0 = time.perf_counter()
        bundle = load_bundle(self.bundle_path)
        self.tz = settings.timezone
        self.history_dir = Path(self.history_path or settings.history_dir)
        self.history_poll_seconds = settings.history_poll_seconds
        self._bundle_history = (bundle.history_sessions, bundle.history_products)
        self._failed_store_version: int | None = None
        history, store_version = self._startup_history()
        # several workers share the cores: one LightGBM thread per request
        self.scorer = PlanScorer(
            bundle,
            tz=settings.timezone,
            num_threads=1,
            history=history,
            store_version=store_version,
        )
        self.scorer.warm_up()
        # history rebuilds and ingests run one at a time, driven from their own thread (never
        # the event loop, never the pools that score requests), built in a child process
        self._history_pool = ThreadPoolExecutor(1, thread_name_prefix="livecast-history")
        self._builder = HistoryBuilder(bundle.path, self.history_dir, self.tz)
        self._history_watch: asyncio.Task[None] | None = None
        # the watch on live accuracy: served forecasts and actuals, appended off the request
        self.watch = BackgroundLog(ForecastLog(self.forecast_log_path or settings.forecast_log))
        self.tiers, self.tiers_error = _load_tiers(self.tier_bundle_path)
        if self.tiers is not None:  # warm up the fan-feature SQL and the booster
            segment_payload(self.tiers, [_WARM_UP_EVENT], None, tz=self.tz)
        # the loaded models and history state live as long as the process: keep them out of
        # the cyclic collector, whose full passes over them took ~50-100 ms (latency spikes)
        gc.collect()
        gc.freeze()
        atexit.register(gc.unfreeze)  # let the exit-time collection free them cleanly
        self._ready = True
        logger.info("livecast service ready in %.1f s", time.perf_counter() - t0)

    async def __is_ready__(self) -> bool:  # async: answered on the loop, no thread hop
        return getattr(self, "_ready", False)

    # ------------------------------------------------------------------ fresh history

    def _startup_history(self) -> tuple[tuple[Any, Any] | None, int]:
        """The bundle's history merged with the store's current version, and that version
        (None and 0: the bundle's history alone, when the store is empty or unreadable)."""
        try:
            store = load_store(self.history_dir, tz=self.tz)
        except (HistoryStoreError, ValueError, OSError) as exc:
            logger.warning(
                "history store %s not read, serving the bundle's history: %s",
                self.history_dir,
                exc,
            )
            return None, 0
        if store.manifest is None:
            return None, 0
        merged = merge_history(*self._bundle_history, store.sessions, store.products)
        return merged, store.version

    def _reload_history(self) -> HistoryState:
        """On the history thread: when the store's manifest names another version than the
        one served, rebuild the history state from the bundle's history and the store (in the
        builder's child) and swap it in. Returns the state served afterwards. A store that
        cannot be read is logged (once per version) and the current state is kept."""
        current = self.scorer.state
        try:
            manifest = read_manifest(self.history_dir)
        except (HistoryStoreError, OSError) as exc:
            if self._failed_store_version != -1:
                logger.warning("history store manifest unreadable: %s", exc)
            self._failed_store_version = -1
            return current
        version = manifest.version if manifest else 0
        if version in (current.store_version, self._failed_store_version):
            self._builder.close_if_idle(BUILDER_IDLE_S)
            return current
        t0 = time.perf_counter()
        try:
            state = self._builder.rebuild(self.scorer)
        except (HistoryStoreError, ValueError, OSError, BrokenProcessPool) as exc:
            logger.warning(
                "history store version %d not loaded, keeping version %d: %s",
                version,
                current.store_version,
                exc,
            )
            self._failed_store_version = version
            return current
        self._swap(state, t0)
        return state

    def _swap(self, state: HistoryState, t0: float) -> None:
        """Serve ``state`` (on the history thread); the old state is emptied piecewise once
        the requests holding it are done (a job queued on this thread)."""
        old = self.scorer.state
        self.scorer.swap(state)
        self._history_pool.submit(release_state, old)
        del old
        self._failed_store_version = None
        # the old state was freed by reference counting; keep the new one out of the cyclic
        # collector's full passes like the first (see __init__); freezing costs no pass
        gc.freeze()
        logger.info(
            "history store version %d swapped in (%d sessions, as of %s) in %.2f s",
            state.store_version,
            state.n_sessions,
            state.history_as_of,
            time.perf_counter() - t0,
        )

    async def _on_history_thread(self, fn: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._history_pool, fn)

    async def _watch_history(self) -> None:
        """Check the store every ``history_poll_seconds`` for the life of the worker."""
        while True:
            await asyncio.sleep(self.history_poll_seconds)
            try:
                await self._on_history_thread(self._reload_history)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the watch die: log and check again next time
                logger.exception("history store check failed")

    @bentoml.on_startup
    async def _start_history_watch(self) -> None:
        self._history_watch = asyncio.create_task(self._watch_history())

    @bentoml.on_shutdown
    async def _stop_history_watch(self) -> None:
        if self._history_watch is not None:
            self._history_watch.cancel()
            self._history_watch = None
        self._history_pool.shutdown(wait=False, cancel_futures=True)
        self._builder.close()

    @bentoml.api(route=INGEST_ROUTE, input_spec=_input(IngestRequest))
    async def ingest_sessions(
        self,
        sessions: list[SessionRecord],
        products: list[ProductRecord] | None = None,
        replace: bool = False,
    ) -> IngestResponse:
        """Add finished sessions (and their product rows) to the history store, all or
        nothing, and serve the new history at once (the token was checked by the guard)."""

        def build() -> IngestResponse | JSONResponse:
            frames = _ingest_frames(sessions, products or [])
            t0 = time.perf_counter()
            try:
                result, state = self._builder.ingest(self.scorer, *frames, replace=replace)
            except BatchRejected as err:
                return _rejected(err)
            except (ValueError, OSError, BrokenProcessPool) as exc:  # a damaged store
                logger.warning("ingest failed, nothing was added: %s", exc)
                return _error(
                    503,
                    "the history store cannot be written or read now; nothing was added",
                    ["store"],
                    "store_unavailable",
                )
            if state is not None:
                self._swap(state, t0)
            self.watch.actuals(frames[0])  # their outcomes, for the watch on live accuracy
            state = self.scorer.state
            return IngestResponse(
                added=result.added,
                unchanged=result.unchanged,
                replaced=result.replaced,
                products_written=result.products_written,
                warnings=len(result.warnings),
                store_version=result.version,
                history_as_of=state.history_as_of,
            )

        return await self._on_history_thread(lambda: _as_response(build()))

    def _log_served(
        self,
        plans: list[SessionPlan],
        items: list[dict[str, Any]],
        model: dict[str, Any],
        inputs: list[dict[str, Any]] | None = None,
    ) -> None:
        """Queue the forecasts of plans that carry a ``session_id`` for the watch (a plan
        without one cannot be paired with its outcome later), with their plan inputs for the
        drift watch when given."""
        rows = [
            {**item, "start_time": plan.start_time, "inputs": inputs[i] if inputs else None}
            for i, (plan, item) in enumerate(zip(plans, items, strict=True))
            if plan.session_id is not None
        ]
        if rows:
            self.watch.forecasts(rows, model=str(model.get("train_id") or model.get("bundle")))

    @bentoml.api(route="/v1/forecast", input_spec=_input(ForecastRequest))
    async def forecast(self, plans: list[SessionPlan], drivers: bool = True) -> ForecastResponse:
        """Forecast one or more draft plans (P10 / P50 / P90, conversion, AOV, drivers)."""

        def build() -> ForecastResponse | JSONResponse:
            scorer = self.scorer.pinned()  # one history state for the whole answer
            keep = DRIFT_INPUTS if any(p.session_id is not None for p in plans) else ()
            try:
                items, inputs = scorer.score_with_inputs(plans, drivers=drivers, keep=keep)
            except ValueError as exc:
                return _unscorable(exc)
            self._log_served(plans, items, scorer.model_info, inputs)
            return ForecastResponse(forecasts=items, model=scorer.model_info)

        return await _answer(build)

    @bentoml.api(route="/v1/compare", input_spec=_input(CompareRequest))
    async def compare(
        self, base: SessionPlan, variants: list[Variant], drivers: bool = True
    ) -> CompareResponse:
        """Forecast a base plan and named variants side by side, with differences."""

        def build() -> CompareResponse | JSONResponse:
            try:
                return compare_payload(self.scorer.pinned(), base, variants, drivers=drivers)
            except ValueError as exc:
                return _unscorable(exc)

        return await _answer(build)

    @bentoml.api(route="/v1/suggest", input_spec=_input(SuggestRequest))
    async def suggest(
        self,
        base: SessionPlan,
        space: SearchSpace,
        objective: str = "gmv",
        top_k: int = 5,
        drivers: bool = True,
    ) -> SuggestResponse:
        """Search the variants of a base plan (one batch predict) and return the top k."""

        def build() -> SuggestResponse | JSONResponse:
            try:
                return suggest_payload(
                    self.scorer.pinned(),
                    base,
                    space,
                    objective=objective,
                    top_k=top_k,
                    drivers=drivers,
                )
            except ValueError as exc:
                return _unscorable(exc)

        return await _answer(build)

    @bentoml.api(route="/v1/review", input_spec=_input(ReviewRequest))
    async def review(self, plan: SessionPlan, actual: Actuals) -> ReviewResponse:
        """A finished session: its forecast against what happened."""

        def build() -> ReviewResponse | JSONResponse:
            try:
                answer = review_payload(self.scorer.pinned(), plan, actual)
            except ValueError as exc:
                return _unscorable(exc)
            if plan.session_id is not None:  # the session's outcomes, for the watch
                self._log_served([plan], [answer.forecast.model_dump()], answer.model.model_dump())
                self.watch.actuals(
                    pd.DataFrame([{"session_id": plan.session_id, **actual.model_dump()}])
                )
            return answer

        return await _answer(build)

    @bentoml.api(route="/v1/model-health", input_spec=_input(HealthRequest))
    async def model_health(self, window: int = 20, h: float = 5.0) -> ModelHealthResponse:
        """The watch on live accuracy: served forecasts against actuals (by room, lead bucket
        and over time), drifted rooms, drift of the plan inputs, and whether to retrain."""

        def build() -> ModelHealthResponse:
            scorer = self.scorer.pinned()
            self.watch.flush(timeout=5.0)  # what was served until now is in the report
            report = health_report(self.watch.log, scorer.forecaster.metadata, window=window, h=h)
            return ModelHealthResponse(**{**report, "model": scorer.model_info})

        return await _answer(build)

    @bentoml.api(route="/v1/segment", input_spec=_input(SegmentRequest))
    async def segment(
        self, events: list[FanEvent], cutoff: datetime | None = None
    ) -> SegmentResponse:
        """Fan events -> tier and probabilities, through the batch run's ``segment_frame``."""
        if self.tiers is None:
            return _error(  # type: ignore[return-value]
                503, f"no fan-tier model is loaded: {self.tiers_error}", ["model"], "no_model"
            )

        def build() -> SegmentResponse | JSONResponse:
            try:
                return segment_payload(self.tiers, events, cutoff, tz=self.tz)
            except ValueError as exc:
                return _unscorable(exc)

        return await _answer(build)


def _ingest_frames(sessions: list[SessionRecord], products: list[ProductRecord]) -> tuple[Any, Any]:
    """A request's sessions and product rows as raw contract frames (row = list position;
    an unstated host is the room id, the contract's convention)."""
    import pandas as pd

    frame = pd.DataFrame([r.model_dump() for r in sessions])
    frame["host_id"] = frame["host_id"].where(frame["host_id"].notna(), frame["room_id"])
    frame["start_time"] = pd.to_datetime(frame["start_time"], utc=True)
    rows = pd.DataFrame([r.model_dump() for r in products]) if products else None
    return frame, rows


def _rejected(err: BatchRejected) -> JSONResponse:
    """A rejected batch as a 400 (contract failures) or 409 (stored with other values) naming
    each failing row and field: ``loc`` is ``["body", "sessions" | "products", row, column]``."""
    items: list[dict[str, Any]] = []
    for table_error in err.errors:
        key = "sessions" if table_error.table == "sessions" else "products"
        for row in table_error.failures.itertuples(index=False):
            loc: list[str | int] = ["body", key]
            if isinstance(row.row, int | np.integer):
                loc.append(int(row.row))
            loc.append(str(row.column))
            msg = str(row.check) if row.value is None else f"{row.check} (got {row.value!r})"
            items.append(
                {"loc": loc, "msg": msg, "type": "conflict" if err.conflict else "contract"}
            )
    n = len(items)
    what = "already stored with other values" if err.conflict else "failing the data contract"
    message = f"{n} row/field failure{'s' if n != 1 else ''} {what}; nothing was added"
    return JSONResponse(
        {"error": message, "detail": items[:MAX_ERROR_ITEMS]},
        status_code=409 if err.conflict else 400,
    )


_WARM_UP_EVENT = FanEvent(
    fan_id="warm-up",
    room_id="warm-up",
    event_time=datetime(2026, 1, 1, 20, 0, tzinfo=UTC),
    event_type="watch",
    watch_seconds=60,
)


def segment_payload(
    model: Any, events: list[FanEvent], cutoff: datetime | None, *, tz: str
) -> SegmentResponse:
    """Score fan events with ``serving.batch.segment_frame`` (the batch run's function)."""
    import pandas as pd

    from features.contract import validate
    from serving.batch import default_cutoff, segment_frame

    frame = pd.DataFrame([e.model_dump() for e in events])
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    frame = validate(frame, "fan_events", source="request", tz=tz)
    if cutoff is None:
        latest = int(frame["event_time"].max().value // 1000)
        when = default_cutoff(latest, tz)
    else:
        when = pd.Timestamp(cutoff)
    scores = segment_frame(model, frame, when, tz=tz, num_threads=1)
    meta = getattr(model, "metadata", {}) or {}
    return SegmentResponse(
        cutoff=when.isoformat(),
        fans=[
            {
                "fan_id": str(r.fan_id),
                "tier": str(r.tier),
                "p_core": float(r.p_core),
                "p_active": float(r.p_active),
                "p_potential": float(r.p_potential),
                "p_dormant": float(r.p_dormant),
            }
            for r in scores.itertuples(index=False)
        ],
        model={
            "name": "livecast-tiers",
            "bundle": str(meta.get("bundle", "")),
            "train_id": meta.get("train_id"),
            "trained_until": None,
            "versions": {},
        },
    )


def _load_tiers(path: Path) -> tuple[Any, str | None]:
    """The fan-tier model and None, or None and the reason there is none (``/v1/segment``
    then answers 503 with it). The bundle is verified before LightGBM reads it, so a damaged
    one is a BundleError here, not a crash of the process."""
    try:
        from training.tiers import load_tier_bundle
    except ImportError as exc:
        return None, f"the tier model code is unavailable ({exc})"
    from training.bundle import BundleError

    try:
        return load_tier_bundle(path), None
    except Exception as exc:  # a broken tier bundle must not stop the forecaster
        logger.warning("no fan-tier model loaded from %s: %s", path, exc)
        if isinstance(exc, BundleError):  # the folder's name, not the server's paths
            return None, f"tier bundle {exc.path.name} is corrupted: {exc.file} {exc.problem}"
        if isinstance(exc, FileNotFoundError):
            return None, "no tier bundle is installed; run livecast segments train and promote"
        return None, str(exc)


Livecast.add_asgi_middleware(GuardMiddleware)
Livecast.mount_asgi_app(StaticFiles(directory=STATIC_DIR, check_dir=False), path="/static")
