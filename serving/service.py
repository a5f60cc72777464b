"""The livecast HTTP service: a BentoML 1.4 ``@bentoml.service`` with pydantic IO.

Endpoints (request / response models in :mod:`serving.schemas`):

* ``POST /v1/forecast``  draft plans -> P10 / P50 / P90 viewers, orders, GMV, drivers
* ``POST /v1/compare``   a base plan and named variants -> forecasts and differences
* ``POST /v1/suggest``   a base plan and a bounded search space -> the top-k variants
* ``POST /v1/review``    a finished session and its outcomes -> forecast against actual
* ``POST /v1/segment``   fan events -> tiers and probabilities (the batch run's function)
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
"""

from __future__ import annotations

import atexit
import functools
import gc
import logging
import os
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bentoml
from _bentoml_sdk.io_models import IOMixin
from pydantic import BaseModel, create_model
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles

from features.plan import SessionPlan
from livecast.config import get_settings
from serving.fastpath import PlanScorer
from serving.offload import HEAVY, HEAVY_ROUTES, INLINE_BODY_BYTES, LIGHT, is_heavy
from serving.schemas import (
    Actuals,
    CompareRequest,
    CompareResponse,
    ErrorResponse,
    FanEvent,
    ForecastRequest,
    ForecastResponse,
    ReviewRequest,
    ReviewResponse,
    SearchSpace,
    SegmentRequest,
    SegmentResponse,
    SuggestRequest,
    SuggestResponse,
    Variant,
)
from serving.suggest import compare_payload, review_payload, suggest_payload

logger = logging.getLogger(__name__)

BUNDLE_ENV = "LIVECAST_SERVE_BUNDLE"
"""Environment variable naming the forecaster bundle (folder, or models folder)."""
TIER_BUNDLE_ENV = "LIVECAST_SERVE_TIER_BUNDLE"
"""Environment variable naming the fan-tier bundle (default: the models folder)."""
STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_BODY_BYTES = 32 * 1024 * 1024
JSON_TYPES = ("application/json",)


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

    def __init__(self) -> None:
        from training.bundle import load_bundle

        die_with_parent()  # a worker never outlives its server (and holds its port)
        settings = get_settings()
        t0 = time.perf_counter()
        bundle = load_bundle(self.bundle_path)
        # several workers share the cores: one LightGBM thread per request
        self.scorer = PlanScorer(bundle, tz=settings.timezone, num_threads=1)
        self.scorer.warm_up()
        self.tz = settings.timezone
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

    @bentoml.api(route="/v1/forecast", input_spec=_input(ForecastRequest))
    async def forecast(self, plans: list[SessionPlan], drivers: bool = True) -> ForecastResponse:
        """Forecast one or more draft plans (P10 / P50 / P90, conversion, AOV, drivers)."""

        def build() -> ForecastResponse | JSONResponse:
            try:
                items = self.scorer.score(plans, drivers=drivers)
            except ValueError as exc:
                return _unscorable(exc)
            return ForecastResponse(forecasts=items, model=self.scorer.model_info)

        return await _answer(build)

    @bentoml.api(route="/v1/compare", input_spec=_input(CompareRequest))
    async def compare(
        self, base: SessionPlan, variants: list[Variant], drivers: bool = True
    ) -> CompareResponse:
        """Forecast a base plan and named variants side by side, with differences."""

        def build() -> CompareResponse | JSONResponse:
            try:
                return compare_payload(self.scorer, base, variants, drivers=drivers)
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
                    self.scorer, base, space, objective=objective, top_k=top_k, drivers=drivers
                )
            except ValueError as exc:
                return _unscorable(exc)

        return await _answer(build)

    @bentoml.api(route="/v1/review", input_spec=_input(ReviewRequest))
    async def review(self, plan: SessionPlan, actual: Actuals) -> ReviewResponse:
        """A finished session: its forecast against what happened."""

        def build() -> ReviewResponse | JSONResponse:
            try:
                return review_payload(self.scorer, plan, actual)
            except ValueError as exc:
                return _unscorable(exc)

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
