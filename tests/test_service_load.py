"""Heavy requests under load: bounded work, off the event loop, 429 with Retry-After when full.

Issue 17 item 5: a 5,000-SKU suggest search ran 29 s and answered 11 MB, and large compare and
segment bodies were parsed on the event loop, stalling ``/livez``. These tests hold the fix:

- a suggest search is bounded by candidates x product lines (400 naming the space);
- a heavy request's body is validated on the heavy-work pool: ``/livez`` answers while it is
  held mid-parse (the parse is paused on an event, so nothing here depends on timing);
- a worker already holding all the heavy work it may answers 429 with ``Retry-After`` at once,
  while light forecasts and health checks still answer.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from service_support import future_start, known_room, plan_json, service_app

from features.plan import example_plan
from serving.offload import HEAVY, HEAVY_ROUTES, Offload, is_heavy
from serving.schemas import MAX_SUGGEST_LINES


@pytest.fixture(scope="module")
def client(service_models) -> Iterator[Any]:
    from starlette.testclient import TestClient

    with TestClient(service_app(service_models)) as c:
        yield c


def _plan(ds, **update) -> dict[str, Any]:
    base = example_plan(start=future_start(ds)).model_copy(update={"room_id": known_room(ds)})
    return plan_json(base, **update)


def _products(n: int) -> list[dict[str, Any]]:
    return [
        {"sku_id": f"s{i}", "category": "beauty", "list_price": 99.0, "live_price": 79.0}
        for i in range(n)
    ]


# --------------------------------------------------------------------------- bounded work


def test_a_suggest_search_is_bounded_by_candidates_times_lines(client, small_dataset):
    space = {"start_hour": {"min": 0, "max": 23}, "promos": ["lottery", "coupon"]}  # 96
    base = _plan(small_dataset, products=_products(5000))
    r = client.post("/v1/suggest", json={"base": base, "space": space})
    assert r.status_code == 400
    msg = r.json()["detail"][0]["msg"]
    assert "96 candidates x 5000 product lines" in msg and str(MAX_SUGGEST_LINES) in msg


def test_the_same_search_of_a_short_plan_is_answered(client, small_dataset):
    space = {"start_hour": {"min": 0, "max": 23}, "promos": ["lottery", "coupon"]}
    base = _plan(small_dataset, products=_products(20))
    r = client.post("/v1/suggest", json={"base": base, "space": space, "top_k": 3})
    assert r.status_code == 200, r.text
    assert r.json()["n_candidates"] == 96 and len(r.json()["suggestions"]) == 3


# --------------------------------------------------------------------------- off the loop


def test_a_heavy_body_is_parsed_off_the_event_loop(client, small_dataset):
    """Hold the segment request's validation on an event; /livez must answer meanwhile. Were
    the body parsed on the event loop, /livez could only answer after the parse returned."""
    from serving.service import Livecast

    spec = Livecast.apis["segment"].input_spec
    original = spec.model_validate_json
    parsing, release = threading.Event(), threading.Event()
    order: list[str] = []

    def held(body: bytes, *args: Any, **kwargs: Any) -> Any:
        parsing.set()
        release.wait(10)
        order.append("parsed")
        return original(body, *args, **kwargs)

    events = [
        {
            "fan_id": f"f{i % 50}",
            "room_id": known_room(small_dataset),
            "event_time": "2024-05-20T20:00:00+08:00",
            "event_type": "watch",
            "watch_seconds": 60.0,
        }
        for i in range(200)
    ]
    answers: dict[str, Any] = {}
    spec.model_validate_json = held
    try:
        t = threading.Thread(
            target=lambda: answers.update(
                segment=client.post("/v1/segment", json={"events": events})
            )
        )
        t.start()
        assert parsing.wait(10), "the segment request never reached its parse"
        live = client.get("/livez")
        order.append("livez")
        ready = client.get("/readyz")
        release.set()
        t.join(30)
    finally:
        spec.model_validate_json = original
        release.set()
    assert order == ["livez", "parsed"]
    assert live.status_code == 200 and ready.status_code == 200
    assert answers["segment"].status_code == 200, answers["segment"].text
    assert len(answers["segment"].json()["fans"]) == 50


# --------------------------------------------------------------------------- admission


@pytest.fixture
def full_worker(monkeypatch) -> Offload:
    monkeypatch.setattr(HEAVY, "in_flight", HEAVY.capacity)
    return HEAVY


@pytest.mark.parametrize("route", sorted(HEAVY_ROUTES))
def test_a_full_worker_answers_429_with_retry_after(client, small_dataset, full_worker, route):
    base = _plan(small_dataset)
    body = {
        "/v1/compare": {"base": base, "variants": [{"name": "v", "plan": base}]},
        "/v1/suggest": {"base": base, "space": {"start_hour": {"min": 18, "max": 21}}},
        "/v1/segment": {
            "events": [
                {
                    "fan_id": "f",
                    "room_id": "r",
                    "event_time": "2024-05-20T20:00:00+08:00",
                    "event_type": "watch",
                }
            ]
        },
        "/v1/model-health": {},
    }[route]
    r = client.post(route, json=body)
    assert r.status_code == 429
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert r.json()["detail"][0]["type"] == "too_many_requests"
    assert full_worker.in_flight == full_worker.capacity  # a refusal takes no place


def test_a_full_worker_still_answers_light_forecasts_and_health(client, small_dataset, full_worker):
    r = client.post("/v1/forecast", json={"plans": [_plan(small_dataset)]})
    assert r.status_code == 200, r.text
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_a_large_forecast_body_is_heavy_work(client, small_dataset, full_worker):
    plans = [_plan(small_dataset, session_id=f"p{i}") for i in range(60)]
    r = client.post("/v1/forecast", json={"plans": plans, "drivers": False})
    assert r.status_code == 429


def test_heavy_places_are_given_back(client, small_dataset):
    before = HEAVY.in_flight
    base = _plan(small_dataset)
    for _ in range(HEAVY.capacity + 2):  # more than the capacity, one after the other
        r = client.post(
            "/v1/compare", json={"base": base, "variants": [{"name": "v", "plan": base}]}
        )
        assert r.status_code == 200, r.text
    bad = client.post("/v1/compare", json={"base": base, "variants": []})
    assert bad.status_code == 400
    assert HEAVY.in_flight == before


def test_heavy_answers_equal_light_ones(client, small_dataset):
    """A forecast answered off the loop (large body) equals the same plans answered inline."""
    plans = [_plan(small_dataset, session_id=f"p{i}") for i in range(40)]
    heavy = client.post("/v1/forecast", json={"plans": plans}).json()
    light = [client.post("/v1/forecast", json={"plans": [p]}).json() for p in plans[:3]]
    for i in range(3):
        assert heavy["forecasts"][i] == light[i]["forecasts"][0]


# --------------------------------------------------------------------------- the pool itself


def test_admission_counts_and_refuses_past_capacity():
    pool = Offload(threads=2, queue=1)
    assert [pool.admit() for _ in range(4)] == [True, True, True, False]
    pool.release(2.0)
    assert pool.admit()
    assert 1 <= pool.retry_after() <= 60
    with pytest.raises(ValueError):
        Offload(threads=0)


def test_heavy_work_runs_on_the_pool_not_the_caller_thread():
    import asyncio

    pool = Offload(threads=1, queue=0)

    async def main() -> tuple[str, bool]:
        seen: list[bool] = []

        async def call() -> None:
            name = await pool.run(lambda: threading.current_thread().name)
            seen.append(await pool.run(is_heavy))
            seen.append(name.startswith("livecast-heavy"))

        assert await pool.guarded(call)
        return "ok", all(seen)

    assert asyncio.run(main()) == ("ok", True)
    assert pool.in_flight == 0
