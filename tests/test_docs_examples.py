"""Every ``/v1/`` request example in ``/docs.json`` works as Swagger UI's "Try it out" sends it.

For each ``/v1/`` POST operation of :func:`serving.service.openapi_document`, the example Swagger
UI pre-fills (the media type's ``example``, else the request schema's ``examples[0]``, else its
``example``) must (a) validate against the request model and (b) be answered 2xx by the service
(in-process, on the small test bundles).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel
from service_support import bearer, ingest_enabled, service_app

from serving.schemas import (
    COMPARE_EXAMPLE,
    FORECAST_EXAMPLE,
    HEALTH_EXAMPLE,
    INGEST_EXAMPLE,
    REVIEW_EXAMPLE,
    SEGMENT_EXAMPLE,
    SUGGEST_EXAMPLE,
    CompareRequest,
    ForecastRequest,
    HealthRequest,
    IngestRequest,
    ReviewRequest,
    SegmentRequest,
    SuggestRequest,
)

REQUESTS: dict[str, tuple[type[BaseModel], dict[str, Any]]] = {
    "/v1/forecast": (ForecastRequest, FORECAST_EXAMPLE),
    "/v1/compare": (CompareRequest, COMPARE_EXAMPLE),
    "/v1/suggest": (SuggestRequest, SUGGEST_EXAMPLE),
    "/v1/review": (ReviewRequest, REVIEW_EXAMPLE),
    "/v1/segment": (SegmentRequest, SEGMENT_EXAMPLE),
    "/v1/sessions": (IngestRequest, INGEST_EXAMPLE),
    "/v1/model-health": (HealthRequest, HEALTH_EXAMPLE),
}


@pytest.fixture(scope="module")
def client(service_models, tmp_path_factory) -> Iterator[Any]:
    from starlette.testclient import TestClient

    # /v1/sessions changes state: on with a token, into a history store of this module's own
    app = service_app(service_models)
    with ingest_enabled(tmp_path_factory.mktemp("docs-history")), TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    from serving.service import openapi_document

    # what the client receives: JSON, not the Python objects the document was built from
    return json.loads(json.dumps(openapi_document()))


def _v1_posts(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        path: item["post"]
        for path, item in spec["paths"].items()
        if path.startswith("/v1/") and "post" in item
    }


def _try_it_out_body(operation: dict[str, Any]) -> Any:
    """The request body Swagger UI (5.x) pre-fills for "Try it out": the media type's
    ``example`` (or its first named ``examples`` value), else the schema's ``examples[0]``,
    else the schema's ``example``; None when there is none (Swagger would then invent one
    from the schema: ``"string"``, ``0``, ... which the service rejects)."""
    media = operation["requestBody"]["content"]["application/json"]
    if "example" in media:
        return media["example"]
    if media.get("examples"):
        return next(iter(media["examples"].values()))["value"]
    schema = media["schema"]
    if schema.get("examples"):
        return schema["examples"][0]
    return schema.get("example")


def test_every_v1_operation_has_an_example(spec):
    posts = _v1_posts(spec)
    assert sorted(posts) == sorted(REQUESTS)
    for path, operation in posts.items():
        example = _try_it_out_body(operation)
        assert isinstance(example, dict) and example, f"{path}: no request example"
        # the document shows the examples kept in serving.schemas (one place)
        assert example == json.loads(json.dumps(REQUESTS[path][1])), path


def test_docs_json_serves_the_examples(client, spec):
    served = client.get("/docs.json")
    assert served.status_code == 200
    for path, operation in _v1_posts(served.json()).items():
        assert _try_it_out_body(operation) == _try_it_out_body(spec["paths"][path]["post"])


@pytest.mark.parametrize("path", sorted(REQUESTS))
def test_example_validates_and_is_answered_2xx(client, spec, path):
    model, _ = REQUESTS[path]
    example = _try_it_out_body(spec["paths"][path]["post"])
    model.model_validate(example)  # (a) a valid request, cross-field rules included
    headers = bearer() if path == "/v1/sessions" else {}  # (with the ingest token)
    response = client.post(path, json=example, headers=headers)  # (b) what "Try it out" sends
    assert 200 <= response.status_code < 300, response.text[:1000]
    body = response.json()
    if path == "/v1/forecast":
        # a known room of the simulated data and a new room: one warm, one cold start
        assert [f["cold_start"] for f in body["forecasts"]] == [False, True]
    if path == "/v1/suggest":
        assert body["n_candidates"] == SuggestRequest.model_validate(example).space.size()
        assert len(body["suggestions"]) == example["top_k"]
    if path == "/v1/segment":
        fans = {e["fan_id"] for e in example["events"]}
        assert sorted(f["fan_id"] for f in body["fans"]) == sorted(fans)
