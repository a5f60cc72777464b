"""Benchmark how featurising and fitting the forecaster scale with the number of sessions.

Run from the project root::

    uv run python benchmarks/bench_scale.py [--sizes 22k,86k,345k] [--seed 0] [--keep-data]

Each size is a number of simulated rooms over two years (``22k`` = 40 rooms, the default data;
``86k`` = 160, ``345k`` = 640, ``1m`` = 1,780; or ``rooms=N``). For each size a subprocess
simulates the data (``fans=0``; not timed against the goal) and writes it as Parquet under
``--data`` (default ``data/bench_scale/``, git-ignored); then a fresh subprocess loads it,
builds the training frame (``training.data.training_frame``) and fits the forecaster
(``training.models.fit_forecaster`` with ``ForecastParams(seed=...)``, the three targets with
calibration fits and bases), so that the peak RSS (``ru_maxrss`` of the child) is that run's
own. CPU seconds (user + system of the child, imports and loading excluded) are reported with
wall seconds: on a shared machine they say more. Prints a table with seconds per 100 k
sessions and writes ``benchmarks/results/scale.json``. The generated data is deleted after each
size unless ``--keep-data``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from features.io import atomic_path  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "scale.json"
DATA = ROOT / "data" / "bench_scale"
SIZES: dict[str, int] = {"22k": 40, "86k": 160, "345k": 640, "1m": 1780}
"""Size label -> simulated rooms (about 563 sessions a room over 730 days)."""
DEFAULT_SIZES = ("22k", "86k", "345k")


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rooms(label: str) -> int:
    if label in SIZES:
        return SIZES[label]
    if label.startswith("rooms="):
        return int(label.split("=", 1)[1])
    raise SystemExit(f"unknown size {label!r}: one of {', '.join(SIZES)} or rooms=N")


# --------------------------------------------------------------------------- child steps


def _simulate_child(rooms: int, seed: int, out: Path) -> dict[str, object]:
    from features.io import write_dataset
    from features.simulate import simulate

    t0, c0 = time.perf_counter(), _cpu()
    ds = simulate(seed=seed, rooms=rooms, fans=0)
    seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    write_dataset(ds, out)
    return {
        "sessions": len(ds.sessions),
        "product_rows": len(ds.session_products),
        "simulate_s": round(seconds, 2),
        "simulate_cpu_s": round(cpu, 2),
        "simulate_peak_rss_mb": round(_peak_rss_mb(), 1),
    }


def _fit_child(data: Path, seed: int) -> dict[str, object]:
    import pandas as pd
    import pyarrow as pa

    from features.io import TABLE_FILES
    from training.data import training_frame
    from training.models import ForecastParams, fit_forecaster

    # the tables as written by simulate (validated there): read as they are, and Arrow's
    # read buffers handed back, so that the peak is the featurising and fitting
    t0 = time.perf_counter()
    sessions = pd.read_parquet(data / TABLE_FILES["sessions"])
    products = pd.read_parquet(data / TABLE_FILES["session_products"])
    pa.default_memory_pool().release_unused()
    load_s = time.perf_counter() - t0
    load_peak = _peak_rss_mb()

    t0, c0 = time.perf_counter(), _cpu()
    frame = training_frame(sessions, products)
    featurise_s, featurise_cpu = time.perf_counter() - t0, _cpu() - c0
    featurise_peak = _peak_rss_mb()
    del sessions, products
    pa.default_memory_pool().release_unused()

    t0, c0 = time.perf_counter(), _cpu()
    fc = fit_forecaster(frame, ForecastParams(seed=seed))
    fit_s, fit_cpu = time.perf_counter() - t0, _cpu() - c0
    return {
        "rows": len(frame),
        "columns": frame.shape[1],
        "load_s": round(load_s, 2),
        "load_peak_rss_mb": round(load_peak, 1),
        "featurise_s": round(featurise_s, 2),
        "featurise_cpu_s": round(featurise_cpu, 2),
        "featurise_peak_rss_mb": round(featurise_peak, 1),
        "fit_s": round(fit_s, 2),
        "fit_cpu_s": round(fit_cpu, 2),
        "trees": {t: m.best_iteration for t, m in fc.models.items()},
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }


# --------------------------------------------------------------------------- parent


def _child(step: str, *args: str) -> dict[str, object]:
    """Run one step in a fresh interpreter; its last stdout line is the JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", step, *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{step} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_size(label: str, seed: int, data_root: Path, keep: bool) -> dict[str, object]:
    rooms = _rooms(label)
    data = data_root / f"rooms_{rooms}_seed_{seed}"
    marker = data / "_done.json"
    if marker.exists():
        sim = json.loads(marker.read_text())
    else:
        sim = _child("simulate", str(rooms), str(seed), str(data))
        marker.write_text(json.dumps(sim))
    try:
        fit = _child("fit", str(data), str(seed))
    finally:
        if not keep:
            shutil.rmtree(data, ignore_errors=True)
    sessions = int(sim["sessions"])  # type: ignore[arg-type]
    per = 100_000 / sessions
    total = float(fit["featurise_s"]) + float(fit["fit_s"])  # type: ignore[arg-type]
    return {
        "size": label,
        "rooms": rooms,
        **sim,
        **fit,
        "total_s": round(total, 2),
        "featurise_s_per_100k": round(float(fit["featurise_s"]) * per, 2),  # type: ignore[arg-type]
        "fit_s_per_100k": round(float(fit["fit_s"]) * per, 2),  # type: ignore[arg-type]
        "total_s_per_100k": round(total * per, 2),
    }


def _print_table(rows: list[dict[str, object]]) -> None:
    head = (
        f"{'sessions':>9} {'featurise s':>11} {'(cpu)':>7} {'fit s':>8} {'(cpu)':>8} "
        f"{'peak RSS MB':>11} {'feat s/100k':>11} {'fit s/100k':>10} {'total s/100k':>12}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['sessions']:>9,} {r['featurise_s']:>11.1f} {r['featurise_cpu_s']:>7.1f} "
            f"{r['fit_s']:>8.1f} {r['fit_cpu_s']:>8.1f} {r['peak_rss_mb']:>11,.0f} "
            f"{r['featurise_s_per_100k']:>11.2f} {r['fit_s_per_100k']:>10.2f} "
            f"{r['total_s_per_100k']:>12.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(DEFAULT_SIZES), help="e.g. 22k,86k,345k,1m")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=DATA, help="where generated data goes")
    parser.add_argument("--keep-data", action="store_true", help="do not delete generated data")
    parser.add_argument("--out", type=Path, default=RESULT, help="JSON result file")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        step, *rest = args.child
        if step == "simulate":
            result = _simulate_child(int(rest[0]), int(rest[1]), Path(rest[2]))
        else:
            result = _fit_child(Path(rest[0]), int(rest[1]))
        print(json.dumps(result))
        return 0

    rows = []
    for label in [s.strip() for s in args.sizes.split(",") if s.strip()]:
        rows.append(run_size(label, args.seed, args.data, args.keep_data))
        print(f"{label}: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    _print_table(rows)
    result = {
        "benchmark": "scale",
        "params": {"seed": args.seed},
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "sizes": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    shown = args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out
    print(f"\nwrote {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
