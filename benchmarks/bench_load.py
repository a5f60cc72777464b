"""Load test of the HTTP service on loopback: health stays fast while forecasts, searches and
segment requests keep it busy.

Run from the project root after ``livecast pipeline`` (or point ``--bundle`` at any bundle)::

    uv run python benchmarks/bench_load.py [--bundle models] [--seconds 60] [--clients 20]

Starts ``livecast serve`` on a free 127.0.0.1 port and, once it is ready, runs three kinds of
load at the same time, each in its own process so that one's event loop never delays another's
clock:

* ``--clients`` closed-loop clients posting single-plan forecasts with drivers (the planner
  page's request), back to back;
* one client posting a suggest search (a 24-hour start-time range x 4 mechanics = 384
  candidates of a 40-SKU plan) and one posting a segment request of 5,000 fan events, back to
  back;
* a prober asking ``/livez`` and ``/readyz`` every 50 ms on its own connection.

The first ``--warm-up`` seconds are load without measurement. It reports requests, errors
(transport errors and any status other than 200; 429s are counted apart) and latency per
endpoint, the probes' p50 / p99 / max, and the worker's resident memory after the warm-up and at
the end. Bars (issue 17): 0 errors, ``/livez`` p99 <= 50 ms, worker RSS growth <= 50 MB. Prints
a table and writes ``benchmarks/results/load.json``. The load generator shares the server's
cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402

from benchmarks.bench_service import (  # noqa: E402
    _free_port,
    make_plans,
    start_server,
    stop_server,
    wait_ready,
)
from features.io import atomic_path  # noqa: E402
from livecast.config import get_settings  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "load.json"
PROBE_EVERY = 0.05


def _summary(latencies: list[float], codes: list[int]) -> dict[str, Any]:
    ms = np.asarray(latencies) * 1000 if latencies else np.zeros(0)
    errors = sum(1 for c in codes if c != 200 and c != 429)
    return {
        "requests": len(codes),
        "errors": errors,
        "throttled": sum(1 for c in codes if c == 429),
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
        "max_ms": float(ms.max()) if len(ms) else None,
    }


async def _client(
    client: httpx.AsyncClient, url: str, body: dict, until: float, start: float, out: dict
) -> None:
    while time.monotonic() < until:
        t = time.perf_counter()
        try:
            r = await client.post(url, json=body, timeout=60)
            code = r.status_code
        except httpx.HTTPError:
            code = -1
        if time.monotonic() >= start:  # past the warm-up
            out["lat"].append(time.perf_counter() - t)
            out["codes"].append(code)


def _load_process(
    base: str, jobs: list[tuple[str, dict, int]], start: float, until: float, queue: Any
) -> None:
    """Closed-loop clients: ``(route, body, clients)`` each; puts per-route summaries."""

    async def main() -> dict[str, Any]:
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        async with httpx.AsyncClient(limits=limits) as client:
            results = {route: {"lat": [], "codes": []} for route, _, _ in jobs}
            tasks = [
                _client(client, f"{base}{route}", body, until, start, results[route])
                for route, body, clients in jobs
                for _ in range(clients)
            ]
            await asyncio.gather(*tasks)
        return {route: _summary(r["lat"], r["codes"]) for route, r in results.items()}

    queue.put(asyncio.run(main()))


def _probe_process(base: str, start: float, until: float, queue: Any) -> None:
    out: dict[str, dict[str, list]] = {p: {"lat": [], "codes": []} for p in ("/livez", "/readyz")}
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < until:
            for path, r in out.items():
                t = time.perf_counter()
                try:
                    code = client.get(f"{base}{path}").status_code
                except httpx.HTTPError:
                    code = -1
                if time.monotonic() >= start:
                    r["lat"].append(time.perf_counter() - t)
                    r["codes"].append(code)
            time.sleep(PROBE_EVERY)
    queue.put({path: _summary(r["lat"], r["codes"]) for path, r in out.items()})


def worker_rss(server_pid: int) -> float:
    """Resident MB of the largest process under the server (the worker holding the models)."""
    try:
        procs = psutil.Process(server_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return float("nan")
    sizes = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            sizes.append(p.memory_info().rss)
    return max(sizes, default=0) / 2**20


def suggest_body(plan: dict[str, Any]) -> dict[str, Any]:
    products = [
        {
            "sku_id": f"sku-{i}",
            "category": ["beauty", "food", "apparel", "home"][i % 4],
            "list_price": 99.0 + i,
            "live_price": 79.0 + i,
            "stock": 500,
        }
        for i in range(40)
    ]
    base = {k: v for k, v in plan.items() if k != "products"} | {"products": products}
    return {
        "base": base,
        "space": {
            "start_hour": {"min": 0, "max": 23},
            "promos": ["lottery", "red_envelope", "flash_sale", "coupon"],
        },
        "top_k": 5,
    }


def segment_body(n_events: int, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    kinds = ["watch", "comment", "like", "order"]
    events = []
    for _i in range(n_events):
        kind = kinds[int(rng.integers(0, 4))]
        event = {
            "fan_id": f"fan-{int(rng.integers(0, n_events // 10))}",
            "room_id": "room-000",
            "event_time": f"2025-12-{1 + int(rng.integers(0, 28)):02d}T20:00:00+08:00",
            "event_type": kind,
        }
        if kind == "watch":
            event["watch_seconds"] = float(rng.integers(10, 3600))
        if kind == "order":
            event["amount"] = float(rng.integers(20, 500))
        events.append(event)
    return {"events": events}


def run(bundle_dir: Path, seconds: float, warm_up: float, clients: int) -> dict[str, Any]:
    from training.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    plan = make_plans(bundle, 1)[0]
    forecast = {"plans": [plan], "drivers": True}
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = RESULT.parent / "load-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    if bundle_dir.is_dir() and (bundle_dir / "tiers-champion.json").exists():
        os.environ.setdefault("LIVECAST_SERVE_TIER_BUNDLE", str(bundle_dir.resolve()))
    proc = start_server(bundle_dir, port, log)
    try:
        wait_ready(base, proc, log)
        # each body once, so that a bad one fails here rather than as a stream of errors
        for route, body in (
            ("/v1/forecast", forecast),
            ("/v1/suggest", suggest_body(plan)),
            ("/v1/segment", segment_body(5000)),
        ):
            r = httpx.post(f"{base}{route}", json=body, timeout=60)
            if r.status_code != 200:
                raise RuntimeError(f"{route}: {r.status_code} {r.text[:500]}")
        now = time.monotonic()
        start, until = now + warm_up, now + warm_up + seconds
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        jobs = [
            [("/v1/forecast", forecast, clients)],
            [("/v1/suggest", suggest_body(plan), 1), ("/v1/segment", segment_body(5000), 1)],
        ]
        procs = [
            ctx.Process(target=_load_process, args=(base, j, start, until, queue)) for j in jobs
        ]
        procs.append(ctx.Process(target=_probe_process, args=(base, start, until, queue)))
        for p in procs:
            p.start()
        time.sleep(max(0.0, start - time.monotonic()))
        rss_start = worker_rss(proc.pid)
        results: dict[str, Any] = {}
        for _ in procs:
            results.update(queue.get(timeout=seconds + warm_up + 120))
        for p in procs:
            p.join()
        rss_end = worker_rss(proc.pid)
    finally:
        stop_server(proc)
    livez = results["/livez"]
    errors = sum(r["errors"] for r in results.values())
    return {
        "machine": {"cpus": psutil.cpu_count(), "platform": platform.platform()},
        "seconds": seconds,
        "warm_up_seconds": warm_up,
        "forecast_clients": clients,
        "endpoints": results,
        "forecast_rps": results["/v1/forecast"]["requests"] / seconds,
        "worker_rss_mb": {"start": rss_start, "end": rss_end, "growth": rss_end - rss_start},
        "bars": {
            "errors": errors,
            "errors_ok": errors == 0,
            "livez_p99_ms": livez["p99_ms"],
            "livez_ok": livez["p99_ms"] is not None and livez["p99_ms"] <= 50,
            "rss_growth_ok": rss_end - rss_start <= 50,
        },
    }


def _print(res: dict[str, Any]) -> None:
    print(
        f"{'endpoint':<14}{'requests':>10}{'errors':>8}{'429':>6}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'max ms':>9}"
    )
    for route, r in res["endpoints"].items():
        cells = [
            f"{r[k]:>9.1f}" if r[k] is not None else f"{'-':>9}"
            for k in ("p50_ms", "p99_ms", "max_ms")
        ]
        print(f"{route:<14}{r['requests']:>10}{r['errors']:>8}{r['throttled']:>6}{''.join(cells)}")
    rss = res["worker_rss_mb"]
    print(
        f"forecasts/s {res['forecast_rps']:.1f}; worker RSS {rss['start']:.0f} -> "
        f"{rss['end']:.0f} MB ({rss['growth']:+.0f} MB)"
    )
    print("bars:", json.dumps(res["bars"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=None, help="bundle or models folder")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warm-up", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=20)
    args = ap.parse_args()
    bundle = args.bundle or get_settings().models_dir
    res = run(bundle, args.seconds, args.warm_up, args.clients)
    _print(res)
    with atomic_path(RESULT) as tmp:
        tmp.write_text(json.dumps(res, indent=2))
    print(f"wrote {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
