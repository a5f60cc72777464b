"""One real server: ``livecast serve`` on a free loopback port, a forecast, metrics, stop."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
from service_support import (
    free_port,
    future_start,
    known_room,
    plan_json,
    running_service,
)

from features.plan import example_plan


def test_livecast_serve_answers_on_loopback(service_models, small_dataset, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    livecast = Path(sys.executable).parent / "livecast"
    cmd = [str(livecast), "serve", "--port", str(port), "--bundle", str(service_models.root)]
    cmd += ["--tier-bundle", str(service_models.tiers)]
    with running_service(cmd, port, env, tmp_path / "serve.log") as url:
        plan = example_plan(start=future_start(small_dataset))
        plan = plan.model_copy(update={"room_id": known_room(small_dataset)})
        r = httpx.post(f"{url}/v1/forecast", json={"plans": [plan_json(plan)]}, timeout=30)
        assert r.status_code == 200, r.text
        item = r.json()["forecasts"][0]
        assert item["cold_start"] is False
        assert 0 < item["gmv"]["p10"] <= item["gmv"]["p50"] <= item["gmv"]["p90"]
        assert r.json()["model"]["bundle"] == service_models.bundle.name
        bad = httpx.post(
            f"{url}/v1/forecast",
            content=b"\x80\x04K\x01.",
            headers={"content-type": "application/vnd.bentoml+pickle"},
        )
        assert bad.status_code == 415
        metrics = httpx.get(f"{url}/metrics", timeout=10)
        assert metrics.status_code == 200
        assert "bentoml_service_request_total" in metrics.text
        assert "/v1/forecast" in metrics.text
        assert httpx.get(f"{url}/docs.json", timeout=10).json()["paths"]["/v1/forecast"]
