"""The HTTP service in-process (BentoML ASGI app + Starlette TestClient) on small bundles.

Covers: the fast path builds exactly ``plan_features``' rows and the slow path's predictions;
every endpoint's answer; every class of bad input gives a 4xx JSON error naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from service_support import (
    future_start,
    known_room,
    plan_json,
    random_plans,
    service_app,
)

from features.plan import example_plan
from features.sessions import feature_columns, plan_features
from serving.schemas import MAX_PLANS, ForecastResponse, SuggestResponse


@pytest.fixture(scope="module")
def client(service_models) -> Iterator[Any]:
    from starlette.testclient import TestClient

    with TestClient(service_app(service_models)) as c:
        yield c


@pytest.fixture(scope="module")
def scorer(service_models):
    from serving.fastpath import PlanScorer
    from training.bundle import load_bundle

    return PlanScorer(load_bundle(service_models.bundle), num_threads=1)


def _plan(ds, **update) -> dict[str, Any]:
    base = example_plan(start=future_start(ds)).model_copy(update={"room_id": known_room(ds)})
    return plan_json(base, **update)


# --------------------------------------------------------------------------- one definition


def test_fast_rows_equal_plan_features(small_dataset, scorer):
    plans = random_plans(small_dataset, 80, seed=1)
    slow = plan_features(plans, small_dataset.sessions, small_dataset.session_products)
    fast = scorer.frame(plans)
    cols = feature_columns(slow)
    assert cols == feature_columns(fast) and len(cols) > 80
    pd.testing.assert_frame_equal(fast, slow)
    # one plan at a time gives the same rows as the batch
    for i in (0, 7, 33):
        pd.testing.assert_frame_equal(
            scorer.frame([plans[i]]).reset_index(drop=True),
            slow.iloc[[i]].reset_index(drop=True),
        )
    # the sample covers what matters: cold rooms, SKU track records, mixes, no products
    assert slow["room__n_prior"].eq(0).sum() >= 5 and slow["room__n_prior"].gt(0).sum() >= 30
    assert slow["room__sku_hist_share"].gt(0).sum() >= 3
    assert slow["mix__n_skus"].isna().sum() >= 5


def test_numpy_predictions_equal_the_slow_path(small_dataset, scorer):
    from training.predict import score_plans

    plans = random_plans(small_dataset, 40, seed=2)
    fast = scorer.score(plans, drivers=True)
    slow = score_plans(scorer.bundle, plans, drivers=True, num_threads=1)
    for f, s in zip(fast, slow, strict=True):
        assert f["cold_start"] == s["cold_start"]
        for target in ("viewers", "orders", "gmv"):
            for q in ("p10", "p50", "p90"):
                assert f[target][q] == pytest.approx(s[target][q], rel=1e-12)
        assert f["explanation"]["families"] == pytest.approx(s["explanation"]["families"])
        assert [d["feature"] for d in f["explanation"]["drivers"]] == [
            d["feature"] for d in s["explanation"]["drivers"]
        ]


def test_unknown_vocabulary_value_is_rejected_not_missing(scorer, small_dataset):
    from features.sessions import UnknownCategoryError

    frame = scorer.frame(random_plans(small_dataset, 2))
    frame["room__platform"] = frame["room__platform"].astype(object)
    frame.loc[0, "room__platform"] = "weibo"
    with pytest.raises(UnknownCategoryError, match="weibo"):
        scorer.matrix(frame)


# --------------------------------------------------------------------------- endpoints


def test_health_docs_and_page(client):
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    spec = client.get("/docs.json").json()
    for path in ("/v1/forecast", "/v1/compare", "/v1/suggest", "/v1/review", "/v1/segment"):
        assert "post" in spec["paths"][path]
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]


def test_forecast_known_and_cold_rooms(client, small_dataset, scorer):
    plans = [_plan(small_dataset, session_id="a"), _plan(small_dataset, room_id="brand-new")]
    r = client.post("/v1/forecast", json={"plans": plans})
    assert r.status_code == 200, r.text
    body = ForecastResponse.model_validate(r.json())
    known, cold = body.forecasts
    assert (known.session_id, known.cold_start) == ("a", False)
    assert (cold.session_id, cold.cold_start) == ("plan-1", True)
    for item in body.forecasts:
        for q in (item.viewers, item.orders, item.gmv):
            assert 0 <= q.p10 <= q.p50 <= q.p90
        assert item.conversion == pytest.approx(item.orders.p50 / max(item.viewers.p50, 1.0))
        assert item.aov == pytest.approx(item.gmv.p50 / max(item.orders.p50, 1.0))
        assert item.explanation is not None and len(item.explanation.drivers) == 5
        fams = item.explanation.families
        assert item.explanation.multipliers["slot"] == pytest.approx(np.exp(fams["slot"]))
    assert body.model.bundle == "forecaster-svc-test" and body.model.train_id == "svc-test"
    # the answer is the scorer's answer for the same plans
    from features.plan import SessionPlan

    direct = scorer.score([SessionPlan.model_validate(p) for p in plans])
    assert known.gmv.p50 == pytest.approx(direct[0]["gmv"]["p50"], rel=1e-12)


def test_forecast_without_drivers_and_in_bulk(client, small_dataset):
    plans = [_plan(small_dataset, session_id=f"s{i}") for i in range(200)]
    r = client.post("/v1/forecast", json={"plans": plans, "drivers": False})
    assert r.status_code == 200
    items = r.json()["forecasts"]
    assert len(items) == 200 and all(it["explanation"] is None for it in items)
    assert [it["session_id"] for it in items] == [f"s{i}" for i in range(200)]


def test_prime_time_beats_night(client, small_dataset):
    start = future_start(small_dataset, hour=20)
    plans = [
        _plan(small_dataset, session_id="prime", start_time=start.isoformat()),
        _plan(small_dataset, session_id="night", start_time=start.replace(hour=3).isoformat()),
    ]
    prime, night = client.post("/v1/forecast", json={"plans": plans}).json()["forecasts"]
    assert prime["viewers"]["p50"] > night["viewers"]["p50"]


def test_compare_differences(client, small_dataset):
    base = _plan(small_dataset)
    start = future_start(small_dataset, hour=3).isoformat()
    variants = [
        {"name": "night", "plan": _plan(small_dataset, start_time=start)},
        {"name": "same", "plan": base},
    ]
    r = client.post("/v1/compare", json={"base": base, "variants": variants})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [v["name"] for v in body["variants"]] == ["night", "same"]
    for v in body["variants"]:
        for key in ("viewers", "orders", "gmv"):
            d = v["differences"][key]
            assert d["base"] == pytest.approx(body["base"][key]["p50"])
            assert d["value"] == pytest.approx(v["forecast"][key]["p50"])
            assert d["delta"] == pytest.approx(d["value"] - d["base"])
    same = body["variants"][1]["differences"]
    assert same["gmv"]["delta"] == 0 and same["gmv"]["ratio"] == 1


def test_suggest_scores_the_whole_space_and_ranks(client, small_dataset, scorer):
    from features.plan import SessionPlan
    from serving.schemas import SearchSpace
    from serving.suggest import candidates

    base = _plan(small_dataset, lottery_count=0, coupon_value=0.0)
    space = {
        "start_hour": {"min": 10, "max": 22},
        "duration_min": {"min": 60, "max": 180, "step": 60},
        "promos": ["lottery", "coupon"],
        "paid_promo_budget": [0, 5000],
    }
    r = client.post("/v1/suggest", json={"base": base, "space": space, "top_k": 4})
    assert r.status_code == 200, r.text
    body = SuggestResponse.model_validate(r.json())
    assert body.n_candidates == 13 * 3 * 4 * 2
    gmv = [s.forecast.gmv.p50 for s in body.suggestions]
    assert len(gmv) == 4 and gmv == sorted(gmv, reverse=True)
    # the best suggestion is the best of the whole space, scored directly
    cands = candidates(SessionPlan.model_validate(base), SearchSpace.model_validate(space))
    plans = [c.model_copy(update={"session_id": f"c{i}"}) for i, (c, _) in enumerate(cands)]
    best = max(it["gmv"]["p50"] for it in scorer.score(plans, drivers=False))
    assert gmv[0] == pytest.approx(best, rel=1e-12)
    top = body.suggestions[0]
    assert top.gain.value == pytest.approx(gmv[0])
    assert top.gain.base == pytest.approx(body.base.gmv.p50)
    assert top.forecast.explanation is not None
    for s in body.suggestions:  # the changes are what differs from the base
        assert 10 <= s.plan.start_time.hour <= 22
        assert s.plan.lottery_count in (0, 3) and s.plan.coupon_value in (0.0, 10.0)
        for field, value in s.changes.items():
            assert field in {
                "start_time",
                "planned_duration_min",
                "lottery_count",
                "coupon_value",
                "paid_promo_budget",
            }
            if field != "start_time":
                assert getattr(s.plan, field) == value


def test_suggest_by_viewers(client, small_dataset):
    base = _plan(small_dataset)
    space = {"start_hour": {"min": 0, "max": 23}}
    r = client.post(
        "/v1/suggest",
        json={"base": base, "space": space, "objective": "viewers", "top_k": 3, "drivers": False},
    )
    body = r.json()
    assert r.status_code == 200 and body["n_candidates"] == 24
    views = [s["forecast"]["viewers"]["p50"] for s in body["suggestions"]]
    assert views == sorted(views, reverse=True)
    assert all(s["forecast"]["explanation"] is None for s in body["suggestions"])


def test_review_against_actuals(client, small_dataset):
    row = small_dataset.sessions.dropna(subset=["gmv"]).iloc[-1]
    plan = _plan(
        small_dataset,
        room_id=str(row["room_id"]),
        start_time=row["start_time"].isoformat(),
    )
    actual = {"viewers": int(row["viewers"]), "orders": int(row["orders"]), "gmv": row["gmv"]}
    r = client.post("/v1/review", json={"plan": plan, "actual": actual})
    assert r.status_code == 200, r.text
    body = r.json()
    rows = {x["target"]: x for x in body["review"]}
    for target, value in actual.items():
        x = rows[target]
        q = x["forecast"]
        assert x["actual"] == pytest.approx(value)
        assert x["error"] == pytest.approx(value - q["p50"])
        assert x["log_ratio"] == pytest.approx(np.log1p(value) - np.log1p(q["p50"]))
        expected = "below" if value < q["p10"] else "above" if value > q["p90"] else "within"
        assert x["position"] == expected
    leaned = [abs(f["contribution"]) for f in body["leaned_on"]]
    assert leaned == sorted(leaned, reverse=True) and len(leaned) == 6


def test_segment_uses_the_batch_function(client, small_dataset, service_models):
    from serving.batch import segment_frame
    from training.tiers import load_tier_bundle

    ev = small_dataset.fan_events
    fans = sorted(ev["fan_id"].unique())[:40]
    ev = ev[ev["fan_id"].isin(fans) & (ev["event_time"] < pd.Timestamp("2024-06-15", tz="UTC"))]
    events = json.loads(ev.to_json(orient="records", date_format="iso"))
    events = [{k: v for k, v in e.items() if v is not None} for e in events]
    cutoff = "2024-06-15T00:00:00+08:00"
    r = client.post("/v1/segment", json={"events": events, "cutoff": cutoff})
    assert r.status_code == 200, r.text
    body = r.json()
    direct = segment_frame(load_tier_bundle(service_models.tiers), ev, pd.Timestamp(cutoff))
    assert [f["fan_id"] for f in body["fans"]] == direct["fan_id"].tolist()
    assert [f["tier"] for f in body["fans"]] == direct["tier"].astype(str).tolist()
    proba = np.array(
        [[f["p_core"], f["p_active"], f["p_potential"], f["p_dormant"]] for f in body["fans"]]
    )
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(proba[:, 3], direct["p_dormant"].to_numpy())


# --------------------------------------------------------------------------- bad input


def _raw_with(plan: dict[str, Any], field: str, literal: str) -> bytes:
    """A forecast request body whose ``field`` holds a JSON-ish literal (NaN, Infinity)."""
    text = json.dumps({"plans": [{**plan, field: 123456789}]})
    return text.replace("123456789", literal).encode()


def _bad_cases(ds) -> list[tuple[str, str, Any, str]]:
    """(name, route, body (dict or raw bytes), a field the 400 error must name)."""
    ok = _plan(ds)
    no_room = {k: v for k, v in ok.items() if k != "room_id"}
    bad_sku = {**ok["products"][0], "category": "cars"}
    huge = {
        "start_hour": {"min": 0, "max": 23},
        "duration_min": {"min": 30, "max": 720, "step": 30},
        "promos": ["lottery", "coupon"],
    }
    event = {
        "fan_id": "f",
        "room_id": "r",
        "event_time": "2024-05-01T10:00:00+08:00",
        "event_type": "dance",
    }
    fc = "/v1/forecast"

    def one(**update: Any) -> dict[str, Any]:
        return {"plans": [{**ok, **update}]}

    return [
        ("missing field", fc, {"plans": [no_room]}, "room_id"),
        ("missing plans", fc, {}, "plans"),
        ("wrong type", fc, one(lottery_count="many"), "lottery_count"),
        ("wrong type list", fc, {"plans": {"a": 1}}, "plans"),
        ("malformed json", fc, b'{"plans": [', ""),
        ("nan", fc, _raw_with(ok, "coupon_value", "NaN"), "coupon_value"),
        ("infinity", fc, _raw_with(ok, "coupon_value", "Infinity"), "coupon_value"),
        ("negative", fc, one(paid_promo_budget=-5), "paid_promo_budget"),
        ("absurd duration", fc, one(planned_duration_min=100000), "planned_duration_min"),
        ("absurd money", fc, one(coupon_value=1e15), "coupon_value"),
        ("naive time", fc, one(start_time="2026-06-18T20:00:00"), "start_time"),
        ("implausible year", fc, one(start_time="0095-07-27T16:43:28+08:00"), "start_time"),
        ("unknown platform", fc, one(platform="weibo"), "platform"),
        ("unknown session type", fc, one(session_type="gala"), "session_type"),
        ("unknown category", fc, one(products=[bad_sku]), "category"),
        ("extra field", fc, one(gmv=5), "gmv"),
        ("empty list", fc, {"plans": []}, "plans"),
        ("oversize list", fc, {"plans": [ok] * (MAX_PLANS + 1)}, "plans"),
        ("duplicate ids", fc, {"plans": [{**ok, "session_id": "x"}] * 2}, "x"),
        ("empty variants", "/v1/compare", {"base": ok, "variants": []}, "variants"),
        (
            "duplicate variant names",
            "/v1/compare",
            {"base": ok, "variants": [{"name": "a", "plan": ok}] * 2},
            "variants",
        ),
        ("space too big", "/v1/suggest", {"base": ok, "space": huge}, "space"),
        (
            "reversed range",
            "/v1/suggest",
            {"base": ok, "space": {"start_hour": {"min": 22, "max": 8}}},
            "start_hour",
        ),
        ("bad objective", "/v1/suggest", {"base": ok, "space": {}, "objective": "x"}, "objective"),
        (
            "negative actual",
            "/v1/review",
            {"plan": ok, "actual": {"viewers": -1, "orders": 0, "gmv": 0}},
            "viewers",
        ),
        ("unknown event type", "/v1/segment", {"events": [event]}, "event_type"),
        ("empty events", "/v1/segment", {"events": []}, "events"),
    ]


@pytest.mark.parametrize("index", range(27))
def test_bad_input_gives_a_4xx_naming_the_field(client, small_dataset, index):
    cases = _bad_cases(small_dataset)
    assert len(cases) == 27
    name, route, body, field = cases[index]
    if isinstance(body, bytes):
        r = client.post(route, content=body, headers={"content-type": "application/json"})
    else:
        r = client.post(route, json=body)
    assert r.status_code == 400, (name, r.status_code, r.text[:300])
    payload = r.json()
    assert isinstance(payload, dict) and payload["error"], name
    text = json.dumps(payload)
    assert field in text, (name, text[:400])
    if name == "malformed json":
        assert payload["detail"][0]["type"] == "json_invalid"
    if name.startswith("unknown platform"):
        assert "douyin" in text and "kuaishou" in text  # the allowed values are listed


@pytest.mark.parametrize(
    "content_type",
    ["application/vnd.bentoml+pickle", "application/x-www-form-urlencoded", "text/plain"],
)
def test_non_json_content_type_is_415(client, small_dataset, content_type):
    body = json.dumps({"plans": [_plan(small_dataset)]}).encode()
    r = client.post("/v1/forecast", content=body, headers={"content-type": content_type})
    assert r.status_code == 415
    assert r.json()["detail"][0]["loc"] == ["header", "content-type"]
