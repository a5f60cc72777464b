"""Benchmark the HTTP service on loopback: latency, saturation, open-loop p99, batch throughput.

Run from the project root after ``livecast pipeline`` (or point ``--bundle`` at any bundle)::

    uv run python benchmarks/bench_service.py [--bundle models] [--seconds 10]

Starts ``livecast serve`` on a free 127.0.0.1 port, then runs bounded phases (each stops after
``--seconds`` or its request cap): one sequential client (single-plan forecasts with drivers:
p50 / p99), closed-loop saturation with 10 and 50 concurrent clients (requests/s), an open-loop
load at half the best saturation rate (p99), and 1,000-plan batch requests with and without
drivers (plans/s). Beside them, the raw LightGBM predict time of the same rows in this process
(numpy input, the same boosters, one thread, with and without ``pred_contrib``): the physical
limit. Prints a table and writes ``benchmarks/results/service.json``. The load generator runs on
the same cores as the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from features.io import atomic_path  # noqa: E402
from features.plan import example_plan  # noqa: E402
from livecast.config import get_settings  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "service.json"
BATCH = 1000


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def start_server(bundle: Path, port: int, log: Path) -> subprocess.Popen:
    livecast = Path(sys.executable).parent / "livecast"
    cmd = [str(livecast), "serve", "--port", str(port), "--bundle", str(bundle)]
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true"}
    out = log.open("wb")
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 300) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return time.monotonic() - t0
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready in {timeout} s:\n{log.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def make_plans(bundle: Any, n: int) -> list[dict[str, Any]]:
    """``n`` varied plans of known rooms, starting after the history ends (JSON dicts)."""
    hist = bundle.history_sessions
    rooms = sorted(hist["room_id"].astype(str).unique())
    last = hist["start_time"].max().tz_convert("Asia/Shanghai").normalize()
    rng = np.random.default_rng(0)
    base = example_plan()
    out = []
    for i in range(n):
        start = last + np.timedelta64(int(rng.integers(1, 60)), "D")
        start = start.replace(hour=int(rng.integers(8, 24)))
        plan = base.model_copy(
            update={
                "session_id": f"b{i}",
                "room_id": rooms[i % len(rooms)],
                "start_time": start.to_pydatetime(),
                "planned_duration_min": float(rng.choice([60, 120, 180, 240])),
                "lottery_count": int(rng.integers(0, 6)),
            }
        )
        out.append(json.loads(plan.model_dump_json(exclude_none=True)))
    return out


async def _post(client: httpx.AsyncClient, url: str, body: dict) -> tuple[float, bool]:
    t = time.perf_counter()
    try:
        r = await client.post(url, json=body)
        ok = r.status_code == 200
    except httpx.HTTPError:
        ok = False
    return time.perf_counter() - t, ok


async def closed_loop(url: str, body: dict, clients: int, seconds: float, cap: int) -> dict:
    """``clients`` workers each sending back to back until the time or request cap."""
    lat: list[float] = []
    errors = 0
    sent = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        end = time.perf_counter() + seconds
        t0 = time.perf_counter()

        async def worker() -> None:
            nonlocal errors, sent
            while time.perf_counter() < end and sent < cap:
                sent += 1
                dt, ok = await _post(client, url, body)
                lat.append(dt)
                errors += not ok

        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    return {
        "clients": clients,
        "requests": len(lat),
        "errors": errors,
        "seconds": elapsed,
        "rps": len(lat) / elapsed,
        "p50_ms": _pct(lat, 50) * 1e3,
        "p99_ms": _pct(lat, 99) * 1e3,
    }


async def open_loop(url: str, body: dict, rate: float, seconds: float) -> dict:
    """Requests sent on a fixed schedule at ``rate``/s whatever the answers; latency is
    measured from the scheduled send time (no coordinated omission)."""
    n = max(1, int(rate * seconds))
    lat: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        t0 = time.perf_counter()

        async def one(at: float) -> None:
            nonlocal errors
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                r = await client.post(url, json=body)
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            lat.append(time.perf_counter() - at)
            errors += not ok

        await asyncio.gather(*(one(t0 + i / rate) for i in range(n)))
    return {
        "rate_rps": rate,
        "requests": n,
        "errors": errors,
        "p50_ms": _pct(lat, 50) * 1e3,
        "p99_ms": _pct(lat, 99) * 1e3,
    }


def sequential(url: str, body: dict, seconds: float, cap: int) -> dict:
    lat: list[float] = []
    errors = 0
    with httpx.Client(timeout=60) as client:
        for _ in range(5):  # connection and caches
            client.post(url, json=body)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end and len(lat) < cap:
            t = time.perf_counter()
            r = client.post(url, json=body)
            lat.append(time.perf_counter() - t)
            errors += r.status_code != 200
    return {
        "requests": len(lat),
        "errors": errors,
        "p50_ms": _pct(lat, 50) * 1e3,
        "p99_ms": _pct(lat, 99) * 1e3,
    }


def batch_rate(url: str, plans: list[dict], drivers: bool, repeats: int) -> dict:
    times = []
    errors = 0
    with httpx.Client(timeout=300) as client:
        for _ in range(repeats):
            t = time.perf_counter()
            r = client.post(url, json={"plans": plans, "drivers": drivers})
            times.append(time.perf_counter() - t)
            errors += r.status_code != 200
    best = min(times)
    return {
        "plans": len(plans),
        "seconds": best,
        "plans_per_s": len(plans) / best,
        "errors": errors,
    }


def raw_predict(bundle: Any, plans: list[dict]) -> dict:
    """LightGBM alone on the same rows: numpy input, one thread, 3 boosters (+ GMV contrib).
    Beside it, the in-process scorer on the same 1,000 plans without drivers (best of 7) and
    its first step, reading the plans into feature inputs: what the batch costs above the
    trees, without HTTP and JSON (history frozen out of the collector, as the service does)."""
    import gc

    from features.plan import SessionPlan
    from features.sessions import plan_inputs
    from serving.fastpath import PlanScorer

    scorer = PlanScorer(bundle, num_threads=1)
    objs = [SessionPlan.model_validate(p) for p in plans]
    X = scorer.matrix(scorer.frame(objs))
    # each booster on the columns it reads (a target fitted without the room identity column
    # reads the first ones only: ``TargetModel.columns``)
    inputs = {
        t: (m.booster, X if m.columns is None else X[:, list(m.columns)])
        for t, m in bundle.forecaster.models.items()
    }
    gmv, X_gmv = inputs["gmv"]
    ones = [(b, x[:1]) for b, x in inputs.values()]

    def best(fn, repeat: int = 3) -> float:
        out = float("inf")
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            out = min(out, time.perf_counter() - t)
        return out

    plain = best(lambda: [b.predict(x, num_threads=1) for b, x in inputs.values()])
    contrib = best(lambda: gmv.predict(X_gmv, pred_contrib=True, num_threads=1))
    one = X_gmv[:1]
    plain1 = best(lambda: [b.predict(x, num_threads=1) for b, x in ones], 50)
    contrib1 = best(lambda: gmv.predict(one, pred_contrib=True, num_threads=1), 50)
    t = time.perf_counter()
    for p in objs[:50]:
        scorer.score([p], drivers=True)
    in_process_1 = (time.perf_counter() - t) / 50
    gc.collect()
    gc.freeze()
    batch = best(lambda: scorer.score(objs, drivers=False), 7)
    read = best(lambda: plan_inputs(objs, scorer.context.tz), 7)
    gc.unfreeze()
    return {
        "rows": len(X),
        "trees": {k: m.booster.num_trees() for k, m in bundle.forecaster.models.items()},
        "predict_plans_per_s": len(X) / plain,
        "predict_contrib_plans_per_s": len(X) / (plain + contrib),
        "one_row_predict_ms": plain1 * 1e3,
        "one_row_predict_contrib_ms": (plain1 + contrib1) * 1e3,
        "in_process_score_1_plan_drivers_ms": in_process_1 * 1e3,
        "in_process_batch_no_drivers_ms": batch * 1e3,
        "in_process_read_plans_ms": read * 1e3,
        "predict_ms": plain * 1e3,
    }


def run(bundle_dir: Path, seconds: float, cap: int) -> dict[str, Any]:
    from training.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    plans = make_plans(bundle, BATCH)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = ROOT / "benchmarks" / "results" / "service_server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = start_server(bundle_dir, port, log)
    try:
        ready_s = wait_ready(url, proc, log)
        fc_url = f"{url}/v1/forecast"
        single = {"plans": [plans[0]], "drivers": True}
        seq = sequential(fc_url, single, seconds, cap)
        sat = [asyncio.run(closed_loop(fc_url, single, c, seconds, cap)) for c in (10, 50)]
        half = max(s["rps"] for s in sat) / 2
        ol = asyncio.run(open_loop(fc_url, single, half, seconds))
        with_drivers = batch_rate(fc_url, plans, True, 3)
        without = batch_rate(fc_url, plans, False, 3)
    finally:
        stop_server(proc)
    raw = raw_predict(bundle, plans)
    return {
        "bundle": bundle.path.name,
        "history_sessions": len(bundle.history_sessions),
        "cpu_count": os.cpu_count(),
        "ready_seconds": ready_s,
        "sequential_single_plan_drivers": seq,
        "saturation": sat,
        "open_loop_half_saturation": ol,
        "batch_1000_drivers": with_drivers,
        "batch_1000_no_drivers": without,
        "raw_lightgbm": raw,
        "batch_vs_raw": {
            "drivers": raw["predict_contrib_plans_per_s"] / with_drivers["plans_per_s"],
            "no_drivers": raw["predict_plans_per_s"] / without["plans_per_s"],
            "in_process_no_drivers": raw["in_process_batch_no_drivers_ms"] / raw["predict_ms"],
        },
    }


def _rows(res: dict[str, Any]) -> list[tuple[str, str, str]]:
    seq = res["sequential_single_plan_drivers"]
    ol = res["open_loop_half_saturation"]
    raw = res["raw_lightgbm"]
    rows = [
        (
            "1 client, 1 plan + drivers: p50 / p99 ms",
            f"{seq['p50_ms']:.1f} / {seq['p99_ms']:.1f}",
            str(seq["errors"]),
        )
    ]
    for s in res["saturation"]:
        label = f"{s['clients']} clients: requests/s (p99 ms)"
        rows.append((label, f"{s['rps']:.0f} ({s['p99_ms']:.0f})", str(s["errors"])))
    rows.append(
        (
            f"open loop at {ol['rate_rps']:.0f}/s: p50 / p99 ms",
            f"{ol['p50_ms']:.1f} / {ol['p99_ms']:.1f}",
            str(ol["errors"]),
        )
    )
    for key, rkey, label in (
        ("batch_1000_drivers", "predict_contrib_plans_per_s", "with drivers"),
        ("batch_1000_no_drivers", "predict_plans_per_s", "no drivers"),
    ):
        b = res[key]
        value = f"{b['plans_per_s']:.0f} ({raw[rkey]:.0f})"
        rows.append((f"1,000-plan batch {label}: plans/s (raw LightGBM)", value, str(b["errors"])))
    one = f"{raw['one_row_predict_ms']:.2f} ({raw['one_row_predict_contrib_ms']:.2f})"
    rows.append(("raw LightGBM 1 row, 3 models: ms (+ GMV contrib)", one, ""))
    score1 = f"{raw['in_process_score_1_plan_drivers_ms']:.1f}"
    rows.append(("in-process score 1 plan + drivers: ms", score1, ""))
    ratio = res["batch_vs_raw"]
    rows.append(
        (
            "1,000-plan batch no drivers / raw LightGBM: HTTP, in process",
            f"{ratio['no_drivers']:.1f}x, {ratio['in_process_no_drivers']:.1f}x",
            "",
        )
    )
    batch = (
        f"{raw['in_process_batch_no_drivers_ms']:.1f} ({raw['in_process_read_plans_ms']:.1f};"
        f" raw {raw['predict_ms']:.1f})"
    )
    rows.append(("in-process 1,000 plans no drivers: ms (reading plans; raw)", batch, ""))
    return rows


def _print(res: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"livecast service on loopback ({res['bundle']}, {res['cpu_count']} cores)")
    for col in ("measure", "value", "errors"):
        t.add_column(col)
    for row in _rows(res):
        t.add_row(*row)
    Console().print(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=get_settings().models_dir)
    ap.add_argument("--seconds", type=float, default=10.0, help="Length of each load phase.")
    ap.add_argument("--max-requests", type=int, default=5000, help="Cap per closed-loop phase.")
    args = ap.parse_args()
    res = run(args.bundle, args.seconds, args.max_requests)
    _print(res)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(RESULT) as tmp:
        tmp.write_text(json.dumps(res, indent=2))
    print(f"wrote {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
