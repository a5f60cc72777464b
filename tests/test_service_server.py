"""One real server: ``livecast serve`` on a free loopback port, a forecast, metrics, stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from service_support import build_service_models, future_start, known_room, plan_json

from features.plan import example_plan

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def service_models(small_dataset, tmp_path_factory):
    return build_service_models(tmp_path_factory.mktemp("service-models"), small_dataset)


def test_livecast_serve_answers_on_loopback(service_models, small_dataset, tmp_path):
    port = _free_port()
    env = {
        **os.environ,
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    livecast = Path(sys.executable).parent / "livecast"
    cmd = [str(livecast), "serve", "--port", str(port), "--bundle", str(service_models.root)]
    cmd += ["--tier-bundle", str(service_models.tiers)]
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.25)
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
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode is not None
