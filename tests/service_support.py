"""Small model bundles and plans shared by the service tests (built once per test process)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from features.plan import ProductLine, ProductMix, SessionPlan, example_plan

TIER_CUTOFFS = ("2024-05-01", "2024-06-01")
_CACHE: dict[str, ServiceModels] = {}


@dataclass(frozen=True)
class ServiceModels:
    root: Path
    bundle: Path  # forecaster bundle folder
    tiers: Path  # tier bundle folder


def build_service_models(root: Path, ds: Any) -> ServiceModels:
    """A small forecaster bundle (few trees) and a small tier bundle, fitted once per process."""
    if "models" in _CACHE:
        return _CACHE["models"]
    from training.bundle import save_bundle, set_champion
    from training.data import training_frame
    from training.models import ForecastParams, fit_forecaster
    from training.tiers import TierParams, fit_tier_model, save_tier_bundle

    frame = training_frame(ds.sessions, ds.session_products)
    forecaster = fit_forecaster(frame, ForecastParams(max_rounds=80, num_threads=1))
    forecaster.metadata.update({"train_id": "svc-test", "trained_until": "test"})
    bundle = save_bundle(forecaster, ds.sessions, ds.session_products, root / "forecaster-svc-test")
    set_champion(root, bundle, {"train_id": "svc-test"})
    tier_model = fit_tier_model(
        ds.fan_events,
        [pd.Timestamp(c) for c in TIER_CUTOFFS],
        params=TierParams(max_rounds=15, num_threads=1),
    )
    tiers = save_tier_bundle(tier_model, root / "tiers-svc-test")
    out = ServiceModels(root, bundle, Path(tiers))
    _CACHE["models"] = out
    return out


def random_plans(ds: Any, n: int, seed: int = 0) -> list[SessionPlan]:
    """Varied plans: known and unknown rooms, past and future starts, SKU lists (known and
    new SKUs), product mixes, no products, stated or missing followers."""
    rng = np.random.default_rng(seed)
    rooms = sorted(ds.sessions["room_id"].astype(str).unique())
    rooms_of = ds.sessions.set_index("session_id")["room_id"].astype(str)
    sp = ds.session_products.assign(room_id=ds.session_products["session_id"].map(rooms_of))
    skus = sp[["room_id", "sku_id", "category"]].drop_duplicates(["room_id", "sku_id"])
    t0 = ds.sessions["start_time"].min().to_pydatetime()
    t1 = ds.sessions["start_time"].max().to_pydatetime() + timedelta(days=60)
    base = example_plan()
    plans = []
    for i in range(n):
        start = t0 + (t1 - t0) * float(rng.random())
        start = start.replace(minute=int(rng.integers(0, 4)) * 15, second=0, microsecond=0)
        room = rooms[int(rng.integers(len(rooms)))] if rng.random() < 0.8 else f"new-room-{i}"
        kind = int(rng.integers(3))
        update: dict[str, Any] = {
            "session_id": f"p{i}",
            "room_id": room,
            "start_time": start,
            "planned_duration_min": float(rng.choice([45, 90, 120, 180, 240])),
            "session_type": str(
                rng.choice(["daily", "festival_promo", "fan_welfare", "new_launch", "clearance"])
            ),
            "title": str(rng.choice(["", "618 大促 福利", "新品首发", "清仓 秒杀", "daily live"])),
            "followers_at_start": None if rng.random() < 0.5 else int(rng.integers(1000, 10**6)),
            "room_category": None if rng.random() < 0.5 else "beauty",
            "lottery_count": int(rng.integers(0, 6)),
            "coupon_value": float(rng.choice([0, 5, 20])),
            "paid_promo_budget": float(rng.choice([0, 1000, 8000])),
            "discount_depth": None if rng.random() < 0.5 else float(rng.random() * 0.5),
            "products": None,
            "product_mix": None,
        }
        if kind == 0:
            own = skus[skus["room_id"] == room]
            pool = own if len(own) else skus
            pick = pool.sample(int(rng.integers(1, 6)), random_state=int(rng.integers(1 << 30)))
            lines = [
                ProductLine(
                    sku_id=str(r.sku_id) if rng.random() < 0.7 else f"new-sku-{i}-{j}",
                    category=str(r.category),
                    list_price=float(rng.integers(20, 900)),
                    live_price=float(rng.integers(10, 20)) if rng.random() < 0.3 else 15.0,
                    stock=None if rng.random() < 0.3 else int(rng.integers(10, 2000)),
                    is_new_launch=bool(rng.random() < 0.2),
                )
                for j, r in enumerate(pick.itertuples())
            ]
            update["products"] = lines
        elif kind == 1:
            update["product_mix"] = ProductMix(
                n_skus=int(rng.integers(1, 60)),
                category_shares={"beauty": 0.6, "food": 0.4},
                price_band_shares={} if rng.random() < 0.5 else {"lt50": 0.5, "50_200": 0.5},
                mean_live_price=float(rng.integers(20, 500)),
                mean_discount=float(rng.random() * 0.4),
            )
        plans.append(base.model_copy(update=update))
    return [SessionPlan.model_validate(json.loads(p.model_dump_json())) for p in plans]


def plan_json(plan: SessionPlan | None = None, **update: Any) -> dict[str, Any]:
    """A plan as request JSON (optionally with fields replaced)."""
    data = json.loads((plan or example_plan()).model_dump_json(exclude_none=True))
    data.update(update)
    return data


def known_room(ds: Any) -> str:
    return str(sorted(ds.sessions["room_id"].astype(str).unique())[0])


def future_start(ds: Any, days: int = 10, hour: int = 20) -> datetime:
    last = ds.sessions["start_time"].max().tz_convert("Asia/Shanghai")
    return (last + pd.Timedelta(days=days)).replace(hour=hour, minute=0, second=0).to_pydatetime()


def service_app(models: ServiceModels) -> Any:
    """The service's ASGI app on the test bundles, built once per process (BentoML registers
    its Prometheus metrics when the app is built, so a second build would clash)."""
    if "app" not in _APP:
        from serving.service import Livecast

        # the class reads its bundle paths at import: point it at the test bundles
        Livecast.inner.bundle_path = models.bundle
        Livecast.inner.tier_bundle_path = models.tiers
        # and an empty history store of its own, never the project's models/history
        Livecast.inner.history_path = models.root / "history"
        Livecast.inner.forecast_log_path = models.root / "forecasts.db"
        _APP["app"] = Livecast.to_asgi()
    return _APP["app"]


_APP: dict[str, Any] = {}

TEST_INGEST_TOKEN = "test-ingest-token-0123456789"
"""An ingest token for in-process service tests (``LIVECAST_INGEST_TOKEN``)."""


@contextmanager
def ingest_enabled(history: Path, token: str | None = TEST_INGEST_TOKEN) -> Iterator[None]:
    """Serve the in-process app with ``history`` as its history store and ``token`` as its
    ingest token (None: ingest off), for the services started inside the block (the service
    reads its store folder when it starts, the token at each request); restored afterwards.
    Build the app (:func:`service_app`) before entering: its first build sets the default."""
    import pytest

    from livecast.config import get_settings
    from serving.service import Livecast

    before = Livecast.inner.history_path
    with pytest.MonkeyPatch.context() as mp:
        if token is None:
            mp.delenv("LIVECAST_INGEST_TOKEN", raising=False)
        else:
            mp.setenv("LIVECAST_INGEST_TOKEN", token)
        get_settings.cache_clear()
        Livecast.inner.history_path = history
        try:
            yield
        finally:
            Livecast.inner.history_path = before
    get_settings.cache_clear()


def bearer(token: str = TEST_INGEST_TOKEN) -> dict[str, str]:
    """The ``Authorization`` header of ``POST /v1/sessions``."""
    return {"Authorization": f"Bearer {token}"}


ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 120


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_service(cmd: list[str], port: int, env: dict[str, str], log: Path) -> Iterator[str]:
    """Start a service command on loopback, wait for ``/readyz``, yield its URL, stop it.

    Fails (AssertionError with the log's tail) when the process exits or is not ready in time.
    """
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"service exited:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"not ready:\n{log.read_text()[-3000:]}"
            time.sleep(0.25)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
