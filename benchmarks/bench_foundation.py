"""Benchmark the data foundation: simulate the default data, then build the session features.

Run from the project root::

    uv run python benchmarks/bench_foundation.py [--seed 0] [--fans 100000] [--out FILE]

Prints a table (stage, seconds, rows, peak RSS MB) and writes ``benchmarks/results/foundation.json``
(the results folder is git-ignored). Peak RSS is the process high-water mark after each stage
(Linux ``ru_maxrss``), so it only grows from stage to stage.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from features.io import atomic_path  # noqa: E402
from features.simulate import simulate  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "foundation.json"


def _peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB (ru_maxrss is KB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def run(seed: int = 0, rooms: int = 40, days: int = 730, fans: int = 100_000) -> dict[str, object]:
    """Time each stage; return the result record (also what is written to JSON)."""
    stages: list[dict[str, object]] = []

    t0 = time.perf_counter()
    ds = simulate(seed=seed, rooms=rooms, days=days, fans=fans)
    events = 0 if ds.fan_events is None else len(ds.fan_events)
    stages.append(
        {
            "stage": "simulate",
            "seconds": round(time.perf_counter() - t0, 3),
            "rows": len(ds.sessions),
            "detail": f"{len(ds.session_products)} product rows, {events} fan events",
            "peak_rss_mb": round(_peak_rss_mb(), 1),
        }
    )

    try:
        from features.sessions import build_session_features
    except ImportError as err:
        stages.append(
            {
                "stage": "build_session_features",
                "seconds": None,
                "rows": None,
                "detail": f"not available ({err})",
                "peak_rss_mb": None,
            }
        )
    else:
        t0 = time.perf_counter()
        frame = build_session_features(ds.sessions, ds.session_products)
        stages.append(
            {
                "stage": "build_session_features",
                "seconds": round(time.perf_counter() - t0, 3),
                "rows": len(frame),
                "detail": f"{frame.shape[1]} columns",
                "peak_rss_mb": round(_peak_rss_mb(), 1),
            }
        )

    return {
        "benchmark": "foundation",
        "params": {"seed": seed, "rooms": rooms, "days": days, "fans": fans},
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "stages": stages,
    }


def _print_table(result: dict[str, object]) -> None:
    head = f"{'stage':<24} {'seconds':>9} {'rows':>9} {'peak RSS MB':>12}  detail"
    print(head)
    print("-" * len(head))
    for st in result["stages"]:  # type: ignore[union-attr]
        secs = "-" if st["seconds"] is None else f"{st['seconds']:.2f}"
        rows = "-" if st["rows"] is None else f"{st['rows']:,}"
        rss = "-" if st["peak_rss_mb"] is None else f"{st['peak_rss_mb']:.0f}"
        print(f"{st['stage']:<24} {secs:>9} {rows:>9} {rss:>12}  {st['detail']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rooms", type=int, default=40)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--fans", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=RESULT, help="JSON result file.")
    args = parser.parse_args(argv)
    result = run(seed=args.seed, rooms=args.rooms, days=args.days, fans=args.fans)
    _print_table(result)
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
