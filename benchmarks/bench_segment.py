"""Benchmark the batch fan-segmentation run (``livecast segment``) at 100 k, 1 M and 5 M fans.

Run from the project root::

    uv run python benchmarks/bench_segment.py [--sizes 100000 1000000 5000000] [--partitions 0]
        [--data DIR]

For each size it generates contract fan events (not timed; about 30 events per fan, Parquet
files not sorted by fan), takes the tier champion (or fits a tier model on simulated fans
once), then times ``serving.batch.segment`` in a fresh subprocess so that the peak RSS is the
run's own (``ru_maxrss`` of the child), once per bucket count (0 = the default,
``ceil(events / BUCKET_EVENTS)``; far fewer buckets run out of DuckDB's memory limit at 5 M
fans). CPU seconds of the run (user + system, imports excluded) are reported too: on a shared
machine they say more than wall time. Prints a table and writes
``benchmarks/results/segment.json``.
Generated data lives under ``--data`` (default ``data/bench_segment/``, git-ignored; 150 M events
take 2.5 GB; delete it when done) and is reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from features.io import atomic_path  # noqa: E402
from serving.batch import BUCKET_EVENTS  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "segment.json"
DATA = ROOT / "data" / "bench_segment"

# Event mix of the generated data (watch-heavy like a real room, a few percent orders).
_TYPES = np.array(["watch", "comment", "like", "share", "follow", "order", "refund"])
_TYPE_P = np.array([0.45, 0.15, 0.25, 0.04, 0.02, 0.08, 0.01])
_EVENTS_PER_FILE = 5_000_000
_DAYS = 365


def generate_events(
    out_dir: Path, fans: int, *, events_per_fan: float = 30.0, seed: int = 0
) -> dict[str, int]:
    """Write contract fan events for about ``fans`` fans as Parquet files in ``out_dir``.

    Each file draws its events' fans from the whole population (heavy-tailed activity:
    lognormal weights), so no file and no row group is sorted or grouped by fan. Times are
    uniform over a year with a recency tilt, timezone-aware (UTC instants). Vectorised numpy +
    pyarrow; a folder that already holds the data (``_done.json``) is reused.
    """
    marker = out_dir / "_done.json"
    if marker.exists():
        return json.loads(marker.read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.parquet"):
        old.unlink()
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, 1.0, fans)
    cdf = np.cumsum(weights / weights.sum())
    cdf[-1] = 1.0
    ids = pa.array([f"f{i:08d}" for i in range(fans)], type=pa.string())
    rooms = pa.array([f"room{i:02d}" for i in range(40)], type=pa.string())
    total = round(fans * events_per_fan)
    end_us = 1_735_660_800_000_000  # 2024-12-31 16:00 UTC (midnight in Asia/Shanghai)
    span_us = _DAYS * 86_400_000_000
    written = 0
    part = 0
    while written < total:
        n = min(_EVENTS_PER_FILE, total - written)
        fan_idx = np.searchsorted(cdf, rng.random(n), side="right")
        age = (rng.random(n) ** 1.3) * span_us
        t_us = (end_us - age).astype("int64")
        kind = np.searchsorted(np.cumsum(_TYPE_P), rng.random(n) * _TYPE_P.sum(), side="right")
        kind = np.minimum(kind, len(_TYPES) - 1)
        is_watch = kind == 0
        is_money = kind >= 5
        watch = np.where(is_watch, rng.gamma(1.5, 200.0, n).round(1), np.nan)
        amount = np.where(is_money, rng.lognormal(4.5, 0.8, n).round(2), np.nan)
        table = pa.table(
            {
                "fan_id": ids.take(pa.array(fan_idx)),
                "room_id": pa.DictionaryArray.from_arrays(
                    pa.array(rng.integers(0, len(rooms), n).astype("int32")), rooms
                ),
                "event_time": pa.array(t_us, type=pa.timestamp("us", tz="UTC")),
                "event_type": pa.DictionaryArray.from_arrays(
                    pa.array(kind.astype("int32")), pa.array(_TYPES)
                ),
                "session_id": pa.nulls(n, type=pa.string()),
                "watch_seconds": pa.array(watch, from_pandas=True),
                "amount": pa.array(amount, from_pandas=True),
            }
        )
        pq.write_table(table, out_dir / f"part-{part:03d}.parquet", row_group_size=1_000_000)
        written += n
        part += 1
    info = {"fans_drawn": fans, "events": total, "files": part}
    marker.write_text(json.dumps(info))
    return info


def bench_model(model_dir: Path | None, data: Path) -> Path:
    """A tier bundle to score with: ``model_dir``, else the tier champion, else one fitted
    here on simulated fans with the default parameters (saved under ``data``)."""
    from livecast.config import get_settings
    from training.tiers import fit_tier_model, load_tier_bundle, save_tier_bundle

    if model_dir is not None:
        return model_dir
    try:
        load_tier_bundle(get_settings().models_dir)
        return get_settings().models_dir
    except (FileNotFoundError, ValueError):
        pass
    target = data / "model"
    if (target / "bundle.json").exists():
        return target
    from features.simulate import simulate

    events = simulate(seed=0, rooms=20, days=400, fans=20_000).fan_events
    model = fit_tier_model(events, ["2024-09-01", "2024-10-01", "2024-11-01", "2024-12-01"])
    return save_tier_bundle(model, target)


def _child(events: str, out: str, model: str, partitions: int | None) -> None:
    """Run one segmentation in this (fresh) process and print its measurements as JSON."""
    from serving.batch import segment
    from training.tiers import load_tier_bundle

    tier_model = load_tier_bundle(model)
    before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    result = segment(events, out, model=tier_model, partitions=partitions, progress=False)
    seconds = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak = usage.ru_maxrss / 1024
    record = {
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak),
        "fans": result.fans,
        "events": result.events,
        "partitions": result.partitions,
        "num_trees": tier_model.booster.num_trees() // 4,
        "cpu_seconds": round(
            usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime, 2
        ),
        "timings": result.summary["timings"],
    }
    print(json.dumps(record))


def run_one(events: Path, model: Path, partitions: int | None, data: Path) -> dict[str, object]:
    """Time a segmentation in a subprocess (its own peak RSS, nothing cached in this one)."""
    out = data / "out" / f"{events.name}.parquet"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(events), str(out)]
    cmd += [str(model), str(partitions or 0)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"segment run failed:\n{proc.stderr[-3000:]}")
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    record["wall_seconds_with_startup"] = round(wall, 2)
    out.unlink(missing_ok=True)
    return record


def frame_latency(model_dir: Path, fans: int = 2_000, repeats: int = 5) -> dict[str, object]:
    """Best-of-``repeats`` time of ``segment_frame`` on a simulated frame of ``fans`` fans (the
    size the HTTP service and notebooks pass)."""
    from features.simulate import simulate
    from serving.batch import default_cutoff, segment_frame
    from training.tiers import load_tier_bundle

    model = load_tier_bundle(model_dir)
    events = simulate(seed=0, rooms=8, days=240, fans=fans).fan_events
    cutoff = default_cutoff(int(events["event_time"].max().value // 1000))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = segment_frame(model, events, cutoff)
        best = min(best, time.perf_counter() - t0)
    return {"fans": len(out), "events": len(events), "seconds": round(best, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 5_000_000])
    parser.add_argument(
        "--partitions", type=int, nargs="+", default=[0], help="buckets (0: the default)"
    )
    parser.add_argument("--model", type=Path, default=None, help="tier bundle folder")
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--data", type=Path, default=DATA, help="generated data folder")
    parser.add_argument("--child", nargs=4, metavar=("EVENTS", "OUT", "MODEL", "K"))
    args = parser.parse_args()
    if args.child:
        events, out, model, k = args.child
        _child(events, out, model, int(k) or None)
        return

    from rich.console import Console
    from rich.table import Table

    model = bench_model(args.model, args.data)
    latency = frame_latency(model)
    print(json.dumps({"segment_frame": latency}), flush=True)
    rows = []
    for fans in args.sizes:
        folder = args.data / f"fans_{fans}"
        t0 = time.perf_counter()
        info = generate_events(folder, fans)
        gen = time.perf_counter() - t0
        auto = max(1, math.ceil(int(info["events"]) / BUCKET_EVENTS))
        for k in dict.fromkeys(k or auto for k in args.partitions):  # distinct bucket counts
            rec = run_one(folder, model, k, args.data)
            rec |= {
                "default_buckets": k == auto,
                "fans_drawn": fans,
                "files": info["files"],
                "generate_seconds": round(gen, 1),
            }
            rows.append(rec)
            print(json.dumps(rec), flush=True)

    table = Table(title="livecast segment (local engine)")
    for col in ("fans", "events", "buckets", "seconds", "CPU s", "peak RSS MB", "s per M fans"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            f"{r['fans']:,}",
            f"{r['events']:,}",
            f"{r['partitions']}{' (default)' if r['default_buckets'] else ''}",
            f"{r['seconds']:.1f}",
            f"{r['cpu_seconds']:.1f}",
            f"{r['peak_rss_mb']:,}",
            f"{r['seconds'] / max(r['fans'], 1) * 1e6:.1f}",
        )
    Console().print(table)
    print(
        f"segment_frame on {latency['fans']:,} fans ({latency['events']:,} events):"
        f" {latency['seconds'] * 1000:.0f} ms"
    )
    load = os.getloadavg()
    record = {
        "benchmark": "segment",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1_5_15": [round(x, 2) for x in load],
        },
        "model": str(model.name),
        "segment_frame": latency,
        "runs": rows,
    }
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
