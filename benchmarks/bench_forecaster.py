"""Benchmark the forecaster: training time and per-row prediction time at the default size.

Run from the project root::

    uv run python benchmarks/bench_forecaster.py [--seed 0]

Prints a table and writes ``benchmarks/results/forecaster.json`` (git-ignored). Data generation
and feature building are not timed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from features.io import atomic_path  # noqa: E402
from features.simulate import simulate  # noqa: E402
from training.data import training_frame  # noqa: E402
from training.models import ForecastParams, fit_forecaster  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "forecaster.json"


def _timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def run(seed: int = 0) -> list[dict[str, object]]:
    ds = simulate(seed=seed, fans=0)
    frame = training_frame(ds.sessions, ds.session_products)
    params = ForecastParams(seed=seed)
    rows: list[dict[str, object]] = []
    t = time.perf_counter()
    fc = fit_forecaster(frame, params)
    rows.append(
        {
            "stage": "fit 3 targets",
            "rows": len(frame),
            "seconds": time.perf_counter() - t,
            "per_row_ms": None,
        }
    )
    batch = frame.tail(1000)
    one = frame.tail(1)
    for name, data, fn in [
        ("predict 1,000 rows", batch, lambda: fc.predict(batch)),
        ("predict 1 row", one, lambda: fc.predict(one)),
        ("predict + drivers 1,000 rows", batch, lambda: (fc.predict(batch), fc.explain(batch))),
        ("predict + drivers 1 row", one, lambda: (fc.predict(one), fc.explain(one))),
    ]:
        sec = _timed(fn, repeat=3)
        rows.append(
            {"stage": name, "rows": len(data), "seconds": sec, "per_row_ms": 1000 * sec / len(data)}
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = run(args.seed)
    print(f"{'stage':32} {'rows':>7} {'seconds':>9} {'ms/row':>9}")
    for r in rows:
        ms = "-" if r["per_row_ms"] is None else f"{r['per_row_ms']:.3f}"
        print(f"{r['stage']:32} {r['rows']:>7} {r['seconds']:>9.3f} {ms:>9}")
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(RESULT) as tmp:
        tmp.write_text(json.dumps(rows, indent=2))
    print(f"written {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
