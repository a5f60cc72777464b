"""Browser test of the planner page, against the real service in a subprocess.

A small forecaster bundle is fitted on the small simulated dataset, the BentoML service is
started on it on a free loopback port, and headless Debian Chromium (Playwright, sync API)
drives the page served at ``/``: it fills the draft-plan form, submits, and checks that every
number shown equals the API's answer for the same plan (exact values sit in ``data-value``
attributes, the text is checked against the page's formatting). It also checks that a bad input
shows the API's own error next to the form, exercises compare and suggest, and that the page
loads nothing from outside the service (it works offline).

Regenerate the README screenshot with::

    LIVECAST_PAGE_SCREENSHOT=docs/planner_page.png uv run --frozen pytest tests/test_page.py
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from service_support import free_port, running_service

from features.plan import ProductLine, SessionPlan

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT_ENV = "LIVECAST_PAGE_SCREENSHOT"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium)",
)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def page_bundle(small_dataset, tmp_path_factory) -> Path:
    """A small forecaster bundle (few trees: the page test checks plumbing, not accuracy)."""
    from training.bundle import save_bundle
    from training.data import training_frame
    from training.models import ForecastParams, fit_forecaster

    frame = training_frame(small_dataset.sessions, small_dataset.session_products)
    forecaster = fit_forecaster(frame, ForecastParams(max_rounds=80, num_threads=1))
    forecaster.metadata.update({"train_id": "page-test"})
    out = tmp_path_factory.mktemp("page-models") / "forecaster-page-test"
    return save_bundle(forecaster, small_dataset.sessions, small_dataset.session_products, out)


@pytest.fixture(scope="module")
def service(page_bundle: Path, tmp_path_factory) -> Iterator[str]:
    """The real service on a free loopback port; yields its base URL."""
    port = free_port()
    work = tmp_path_factory.mktemp("page-service")
    env = {
        **os.environ,
        "LIVECAST_SERVE_BUNDLE": str(page_bundle),
        "LIVECAST_SERVE_TIER_BUNDLE": str(page_bundle.parent),
        "LIVECAST_MODELS_DIR": str(page_bundle.parent),
        "BENTOML_HOME": str(work / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    # what `livecast serve --bundle DIR` runs, without its extra interpreter start (~5 s CPU)
    bentoml = Path(sys.executable).parent / "bentoml"
    cmd = [str(bentoml), "serve", "serving.service:Livecast", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--working-dir", str(ROOT)]
    with running_service(cmd, port, env, work / "service.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield b
        finally:
            b.close()


class PageRun:
    """One browser tab on the planner page, recording console errors and off-site requests."""

    def __init__(self, browser: Any, url: str) -> None:
        self.url = url
        self.context = browser.new_context(
            viewport={"width": 1440, "height": 1000}, locale="en-GB", timezone_id="Asia/Shanghai"
        )
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.foreign: list[str] = []
        host = urlparse(url).netloc
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on(
            "console",
            lambda m: (
                self.errors.append(m.text)
                if m.type == "error" and "status of 400" not in m.text
                else None
            ),
        )

        def guard(route: Any) -> None:
            if urlparse(route.request.url).netloc not in (host, ""):
                self.foreign.append(route.request.url)
                route.abort()
            else:
                route.continue_()

        self.page.route("**/*", guard)
        self.page.goto(url + "/")
        self.page.wait_for_selector("body[data-ready='true']")

    def renders(self, view: str) -> int:
        return int(self.page.get_attribute(f"#view-{view}", "data-renders") or 0)

    def submit(self, view: str, button: str, endpoint: str) -> dict[str, Any]:
        """Click a button, wait for the view to show the answer; return the request body."""
        before = self.renders(view)
        with self.page.expect_request(f"**{endpoint}") as req:
            self.page.click(button)
        self.page.wait_for_function(
            f"Number(document.querySelector('#view-{view}').dataset.renders || 0) > {before}"
        )
        return req.value.post_data_json

    def value(self, field: str, root: str = "body") -> float:
        return float(self.page.get_attribute(f"{root} [data-field='{field}']", "data-value"))

    def text(self, field: str, root: str = "body") -> str:
        return self.page.inner_text(f"{root} [data-field='{field}']").strip()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def planner(browser: Any, service: str) -> Iterator[PageRun]:
    run = PageRun(browser, service)
    yield run
    assert not run.errors, f"browser errors: {run.errors}"
    assert not run.foreign, f"the page reached outside the service: {run.foreign}"
    run.close()


# --------------------------------------------------------------------------- helpers


def _count(v: float) -> str:
    return f"{v:,.0f}"


def _cny(v: float) -> str:
    return f"¥{v:,.0f}"


def _pct(v: float) -> str:
    return f"{v * 100:.2f}%"


def _cny2(v: float) -> str:
    return f"¥{v:,.2f}"


def _ratio(r: float | None) -> str:
    if r is None:
        return "n/a"
    pct = (r - 1) * 100
    sign = "+" if pct > 0.05 else "−" if pct < -0.05 else "±"
    return f"{sign}{abs(pct):.1f}%"


def _post(url: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=30)


DRAFT = SessionPlan(
    room_id="room-003",
    platform="kuaishou",
    start_time=datetime.fromisoformat("2026-11-10T20:30:00+08:00"),
    planned_duration_min=150,
    session_type="festival_promo",
    title="双11 狂欢 福利秒杀",
    lottery_count=2,
    red_envelope_count=1,
    flash_sale_rounds=5,
    coupon_value=15,
    warmup_videos=4,
    community_pushes=2,
    paid_promo_budget=3000,
    products=[
        ProductLine(sku_id="A-01", category="apparel", list_price=259, live_price=169, stock=600),
        ProductLine(sku_id="A-02", category="apparel", list_price=129, live_price=89, stock=900),
        ProductLine(
            sku_id="A-03",
            category="accessories",
            list_price=89,
            live_price=59,
            stock=400,
            is_new_launch=True,
        ),
        ProductLine(sku_id="A-04", category="apparel", list_price=399, live_price=299),
    ],
)


def _fill_plan(page: Any, plan: SessionPlan) -> None:
    """Type a plan into the form the way a planner would."""
    start = plan.start_time
    page.fill("#room_id", plan.room_id)
    page.fill("#host_id", plan.host_id or "")
    page.select_option("#platform", plan.platform)
    page.fill("#start_date", start.strftime("%Y-%m-%d"))
    page.fill("#start_clock", start.strftime("%H:%M"))
    page.select_option("#start_tz", start.strftime("%z")[:3] + ":" + start.strftime("%z")[3:])
    page.fill("#planned_duration_min", f"{plan.planned_duration_min:g}")
    page.select_option("#session_type", plan.session_type)
    page.fill("#title", plan.title)
    page.fill(
        "#followers_at_start",
        "" if plan.followers_at_start is None else str(plan.followers_at_start),
    )
    page.select_option("#room_category", plan.room_category or "")
    for name in (
        "lottery_count",
        "red_envelope_count",
        "flash_sale_rounds",
        "warmup_videos",
        "community_pushes",
    ):
        page.fill(f"#{name}", str(getattr(plan, name)))
    page.fill("#coupon_value", f"{plan.coupon_value:g}")
    page.fill("#paid_promo_budget", f"{plan.paid_promo_budget:g}")
    page.fill("#discount_depth", "" if plan.discount_depth is None else f"{plan.discount_depth:g}")
    products = plan.products or []
    while page.locator("#sku-rows tr").count() > len(products):
        page.click("#sku-rows tr:last-child .remove-sku")
    while page.locator("#sku-rows tr").count() < len(products):
        page.click("#add-sku")
    for i, p in enumerate(products, start=1):
        row = f"#sku-rows tr:nth-child({i})"
        page.fill(f"{row} .sku-id", p.sku_id)
        page.select_option(f"{row} .sku-cat", p.category)
        page.fill(f"{row} .sku-list", f"{p.list_price:g}")
        page.fill(f"{row} .sku-live", f"{p.live_price:g}")
        page.fill(f"{row} .sku-stock", "" if p.stock is None else str(p.stock))
        page.set_checked(f"{row} .sku-new", p.is_new_launch)


def _check_forecast(run: PageRun, api: dict[str, Any], model: dict[str, Any]) -> None:
    """Every number of the forecast view equals the API's answer."""
    root = "[data-testid='forecast']"
    for target, fmt in (("viewers", _count), ("orders", _count), ("gmv", _cny)):
        for q in ("p10", "p50", "p90"):
            field = f"{target}.{q}"
            assert run.value(field, root) == api[target][q], field
            assert run.text(field, root) == fmt(api[target][q]), field
    assert run.value("conversion", root) == api["conversion"]
    assert run.text("conversion", root) == _pct(api["conversion"])
    assert run.value("aov", root) == api["aov"]
    assert run.text("aov", root) == _cny2(api["aov"])
    held = run.page.locator("[data-testid='held-note']")
    assert held.get_attribute("data-value") == ",".join(api["held"])
    assert held.is_hidden() == (not api["held"])
    badge = run.page.locator("[data-testid='cold-start']")
    assert badge.get_attribute("data-value") == str(api["cold_start"]).lower()
    assert ("Cold start" in badge.inner_text()) == api["cold_start"]
    ex = api["explanation"]
    for fam, mult in ex["multipliers"].items():
        assert run.value(f"families.{fam}", root) == mult, fam
    shown = run.page.locator(f"{root} [data-testid='drivers'] tr[data-feature]")
    assert shown.count() == len(ex["drivers"])
    for i, d in enumerate(ex["drivers"]):
        assert shown.nth(i).get_attribute("data-feature") == d["feature"]
        assert run.value(f"drivers.{i}.multiplier", root) == d["multiplier"]
        assert f"×{d['multiplier']:.2f}" in run.text(f"drivers.{i}.multiplier", root)
    assert run.page.get_attribute("#model-info", "data-bundle") == model["bundle"]
    assert f"train {model['train_id']}" in run.page.inner_text("[data-testid='model-version']")
    # how fresh the history is: the day the API reports
    assert model["history_as_of"]
    assert run.page.get_attribute("#model-info", "data-history-as-of") == model["history_as_of"]
    assert f"history to {model['history_as_of'][:10]}" in run.page.inner_text("#model-info")


# --------------------------------------------------------------------------- tests


def test_forecast_shows_the_api_answer(planner: PageRun, tmp_path: Path) -> None:
    _fill_plan(planner.page, DRAFT)
    sent = planner.submit("forecast", "#forecast-btn", "/v1/forecast")
    # the form produced exactly the plan that was typed in
    assert SessionPlan.model_validate(sent["plans"][0]) == DRAFT
    resp = _post(planner.url, "/v1/forecast", {"plans": [DRAFT.model_dump(mode="json")]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    api = body["forecasts"][0]
    assert api["cold_start"] is False
    _check_forecast(planner, api, body["model"])
    assert planner.page.is_hidden("#form-errors")

    shot = tmp_path / "planner_page.png"
    planner.page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if target := os.environ.get(SCREENSHOT_ENV):
        planner.page.screenshot(path=str(ROOT / target), full_page=True)


def test_unknown_room_is_flagged_cold_start(planner: PageRun) -> None:
    plan = DRAFT.model_copy(
        update={
            "room_id": "brand-new-room",
            "host_id": "host-new",
            "followers_at_start": 25_000,
            "room_category": "apparel",
        }
    )
    _fill_plan(planner.page, plan)
    sent = planner.submit("forecast", "#forecast-btn", "/v1/forecast")
    assert SessionPlan.model_validate(sent["plans"][0]) == plan
    body = _post(planner.url, "/v1/forecast", {"plans": [plan.model_dump(mode="json")]}).json()
    api = body["forecasts"][0]
    assert api["cold_start"] is True
    _check_forecast(planner, api, body["model"])


def test_bad_input_shows_the_api_error_beside_the_form(planner: PageRun) -> None:
    page = planner.page
    page.fill("#planned_duration_min", "-30")
    page.fill("#sku-rows tr:nth-child(2) .sku-live", "0")
    page.fill("#discount_depth", "1.5")
    sent = planner.submit("forecast", "#forecast-btn", "/v1/forecast")
    resp = _post(planner.url, "/v1/forecast", sent)
    assert resp.status_code == 400, resp.text
    shown = page.inner_text("[data-testid='form-errors']")
    assert "HTTP 400" in shown
    for field in ("planned_duration_min", "products[1].live_price", "discount_depth"):
        assert field in shown, (field, shown)
    for item in resp.json()["detail"]:
        assert item["msg"] in shown, item
    # the failing inputs are marked, the untouched ones are not
    assert "invalid" in page.get_attribute("#planned_duration_min", "class")
    assert "invalid" in page.get_attribute("#discount_depth", "class")
    assert "invalid" in page.get_attribute("#sku-rows tr:nth-child(2) .sku-live", "class")
    assert "invalid" not in (page.get_attribute("#room_id", "class") or "")
    assert page.is_hidden("[data-testid='forecast']")

    # fixing the input clears the errors and shows a forecast
    page.fill("#planned_duration_min", "180")
    page.fill("#sku-rows tr:nth-child(2) .sku-live", "99")
    page.fill("#discount_depth", "")
    planner.submit("forecast", "#forecast-btn", "/v1/forecast")
    assert page.is_hidden("#form-errors")
    assert page.is_visible("[data-testid='forecast']")

    # a missing start time is caught before sending, with the field marked
    page.fill("#start_date", "")
    page.click("#forecast-btn")
    page.wait_for_selector("#form-errors:not([hidden])")
    assert "start_time" in page.inner_text("#form-errors")
    assert "invalid" in page.get_attribute("#start_date", "class")


def test_compare_variants_match_the_api(planner: PageRun) -> None:
    page = planner.page
    page.click("#tab-compare")
    names = page.locator("#variant-rows .v-name")
    assert names.count() == 3  # presets: another start hour, no promos, double paid warm-up
    page.click("#add-variant")
    page.fill("#variant-rows tr:last-child .v-name", "Morning 10:00")
    page.fill("#variant-rows tr:last-child [data-key='start_hour']", "10")
    sent = planner.submit("compare", "#compare-btn", "/v1/compare")
    assert [v["name"] for v in sent["variants"]][-1] == "Morning 10:00"
    assert sent["variants"][-1]["plan"]["start_time"].startswith("2026-06-18T10:00:00")
    assert sent["variants"][1]["plan"]["lottery_count"] == 0
    resp = _post(planner.url, "/v1/compare", sent)
    assert resp.status_code == 200, resp.text
    api = resp.json()
    root = "[data-testid='compare-result']"
    headers = page.locator(f"{root} thead th").all_inner_texts()
    assert [h.strip() for h in headers[2:]] == [v["name"] for v in api["variants"]]
    assert planner.value("base.gmv", root) == api["base"]["gmv"]["p50"]
    assert planner.value("base.conversion", root) == api["base"]["conversion"]
    for i, v in enumerate(api["variants"]):
        for key, fmt in (("viewers", _count), ("gmv", _cny), ("aov", _cny2)):
            d = v["differences"][key]
            assert planner.value(f"variants.{i}.{key}.value", root) == d["value"]
            assert planner.text(f"variants.{i}.{key}.value", root) == fmt(d["value"])
            assert planner.text(f"variants.{i}.{key}.ratio", root) == _ratio(d["ratio"])


def test_suggest_shows_the_top_variants(planner: PageRun) -> None:
    page = planner.page
    page.click("#tab-suggest")
    sent = planner.submit("suggest", "#suggest-btn", "/v1/suggest")
    assert sent["space"]["start_hour"] == {"min": 17, "max": 23}
    resp = _post(planner.url, "/v1/suggest", sent)
    assert resp.status_code == 200, resp.text
    api = resp.json()
    root = "[data-testid='suggest-result']"
    assert planner.value("n_candidates", root) == api["n_candidates"]
    rows = page.locator(f"{root} tbody tr")
    assert rows.count() == len(api["suggestions"]) == sent["top_k"]
    for i, s in enumerate(api["suggestions"]):
        assert rows.nth(i).get_attribute("data-rank") == str(s["rank"])
        assert planner.value(f"suggestions.{i}.gmv.p50", root) == s["forecast"]["gmv"]["p50"]
        assert planner.text(f"suggestions.{i}.gmv.p50", root) == _cny(s["forecast"]["gmv"]["p50"])
    # the best suggestion loads into the form and is forecast as typed
    before = planner.renders("forecast")
    rows.nth(0).locator(".use-plan").click()
    page.wait_for_function(
        f"Number(document.querySelector('#view-forecast').dataset.renders || 0) > {before}"
    )
    shown = planner.value("gmv.p50", "[data-testid='forecast']")
    assert shown == api["suggestions"][0]["forecast"]["gmv"]["p50"]


def test_variant_error_points_at_the_variant_cell(planner: PageRun) -> None:
    page = planner.page
    page.click("#tab-compare")
    page.fill("#variant-rows tr:nth-child(2) [data-key='lottery_count']", "-1")
    sent = planner.submit("compare", "#compare-btn", "/v1/compare")
    resp = _post(planner.url, "/v1/compare", sent)
    assert resp.status_code == 400, resp.text
    shown = page.inner_text("#compare-errors")
    assert "variants[1].plan.lottery_count" in shown
    for item in resp.json()["detail"]:
        assert item["msg"] in shown, item
    cell = page.get_attribute("#variant-rows tr:nth-child(2) [data-key='lottery_count']", "class")
    assert "invalid" in cell
    assert "invalid" not in (page.get_attribute("#lottery_count", "class") or "")
    assert page.is_hidden("#form-errors")  # the draft plan itself is fine
    assert page.is_hidden("[data-testid='compare-result']")


def test_review_shows_forecast_against_actual(planner: PageRun) -> None:
    page = planner.page
    page.click("#tab-review")
    page.fill("#a-viewers", "61000")
    page.fill("#a-orders", "1400")
    page.fill("#a-gmv", "-5")
    sent = planner.submit("review", "#review-btn", "/v1/review")
    bad = _post(planner.url, "/v1/review", sent)
    assert bad.status_code == 400, bad.text
    assert "actual.gmv" in page.inner_text("#review-errors")
    assert "invalid" in page.get_attribute("#a-gmv", "class")

    page.fill("#a-gmv", "380000")
    sent = planner.submit("review", "#review-btn", "/v1/review")
    assert sent["actual"] == {"viewers": 61000, "orders": 1400, "gmv": 380000}
    resp = _post(planner.url, "/v1/review", sent)
    assert resp.status_code == 200, resp.text
    api = resp.json()
    root = "[data-testid='review-result']"
    for r in api["review"]:
        t = r["target"]
        assert planner.value(f"review.{t}.p50", root) == r["forecast"]["p50"]
        assert planner.value(f"review.{t}.actual", root) == r["actual"]
        assert planner.value(f"review.{t}.error", root) == r["error"]
        pos = page.get_attribute(f"{root} [data-field='review.{t}.position']", "data-value")
        assert pos == r["position"]
    families = page.locator(f"{root} svg.families g[data-family]")
    assert [families.nth(i).get_attribute("data-family") for i in range(families.count())] == [
        f["family"] for f in api["leaned_on"]
    ]


def test_model_health_tab_shows_the_watch(planner: PageRun) -> None:
    """Plans forecast with a session id and reviewed afterwards show up in the Model health
    tab: its badge, charts and tables are the API's report."""
    base = json.loads(DRAFT.model_dump_json(exclude_none=True))
    plans = [
        {**base, "session_id": f"health-{i}", "planned_duration_min": 60 + 30 * (i % 5)}
        for i in range(35)
    ]
    assert _post(planner.url, "/v1/forecast", {"plans": plans, "drivers": False}).is_success
    for plan in plans[:3]:
        actual = {"viewers": 50000, "orders": 1200, "gmv": 300000}
        assert _post(planner.url, "/v1/review", {"plan": plan, "actual": actual}).is_success
    page = planner.page
    before = planner.renders("health")
    with page.expect_request("**/v1/model-health"):
        page.click("#tab-health")
    page.wait_for_function(
        f"Number(document.querySelector('#view-health').dataset.renders || 0) > {before}"
    )
    api = _post(planner.url, "/v1/model-health", {}).json()
    root = "[data-testid='health-result']"
    assert api["sessions_with_actuals"] >= 3
    badge = page.get_attribute(f"{root} [data-testid='retrain-due']", "data-value")
    assert badge == str(api["retrain_due"]).lower()
    shown = page.locator("#drift-table tbody tr")
    assert [shown.nth(i).get_attribute("data-feature") for i in range(shown.count())] == [
        r["feature"] for r in api["drift"]
    ]
    judged = [r for r in api["drift"] if r["psi"] is not None]
    assert judged, api["drift"]  # 35 plans with inputs: each input is judged
    bars = page.locator(f"{root} svg.drift-chart g[data-feature]")
    assert bars.count() == len(judged)
    assert page.locator("#lead-table tbody tr").count() == len(api["lead"])
    cards = page.locator(f"{root} .health-card")
    assert {cards.nth(i).get_attribute("data-target") for i in range(cards.count())} == {
        p["target"] for p in api["series"]
    }
    if os.environ.get(SCREENSHOT_ENV):  # beside the planner page's screenshot
        target = ROOT / os.environ[SCREENSHOT_ENV]
        page.screenshot(path=str(target.with_name("model_health.png")), full_page=True)
