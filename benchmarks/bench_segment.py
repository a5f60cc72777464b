"""Benchmark ``livecast segment`` end to end, as a process, on inputs of varied shape.

Run from the project root::

    uv run python benchmarks/bench_segment.py [--sizes 1000000] [--shapes text-1y int-1y ...]
        [--repeats 3] [--partitions 0] [--data DIR] [--keep-data]

For each size and shape it generates contract fan events (not timed; about 30 events per fan in
Parquet files of 5 M events), then, ``--repeats`` times in turn:

* ``livecast segment --events DIR --out FILE --model MODEL`` as a fresh process: wall seconds
  from start to exit (Python start-up and imports included), CPU seconds and peak RSS of the
  process (``wait4``), and the run's own phase timings from its summary JSON;
* the yardstick, a plain DuckDB group-by over the same files in a fresh process
  (``SELECT fan_id, count(*), sum(amount), max(event_time) ... GROUP BY fan_id``, fetched as
  Arrow, DuckDB's default settings): the query's seconds, measured inside that process.

It reports the medians and the ratio (segment end to end / raw group-by), prints a table and
writes ``benchmarks/results/segment.json``. Shapes (:data:`SHAPES`): text or int64 fan ids; one
or two years of events; plain (PLAIN-encoded Parquet, Arrow strings) or dictionary-encoded
(Arrow dictionary columns, Parquet dictionary pages) id / room / type columns; rows in random
order or sorted by time. The model is the tier champion, else one fitted here on simulated
fans (saved under ``--data``). Generated data lives under ``--data`` (default
``data/bench_segment/``, git-ignored; 1 M fans take about 0.5 GB per shape) and is reused by
later runs; ``--drop-data`` deletes each shape's events after measuring it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from features.io import atomic_path  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "segment.json"
DATA = ROOT / "data" / "bench_segment"

# Event mix of the generated data (watch-heavy like a real room, a few percent orders).
_TYPES = np.array(["watch", "comment", "like", "share", "follow", "order", "refund"])
_TYPE_P = np.array([0.45, 0.15, 0.25, 0.04, 0.02, 0.08, 0.01])
_EVENTS_PER_FILE = 5_000_000
_ROWS_PER_GROUP = 1_000_000
_DAY_US = 86_400_000_000
_END_US = 1_735_660_800_000_000  # 2024-12-31 16:00 UTC (midnight in Asia/Shanghai)


@dataclass(frozen=True)
class Shape:
    """How generated events look on disk."""

    ids: str  # "text" (f00000042) or "int" (int64)
    years: int  # events spread over 365 * years days
    dictionary: bool  # Arrow dictionary columns + Parquet dictionary pages, else PLAIN strings
    sorted_by_time: bool  # rows in time order across the files, else random order


SHAPES: dict[str, Shape] = {
    "text-1y": Shape("text", 1, dictionary=False, sorted_by_time=False),
    "int-1y": Shape("int", 1, dictionary=False, sorted_by_time=False),
    "text-2y": Shape("text", 2, dictionary=False, sorted_by_time=False),
    "int-2y-sorted": Shape("int", 2, dictionary=False, sorted_by_time=True),
    "text-1y-dict": Shape("text", 1, dictionary=True, sorted_by_time=False),
    "text-2y-dict-sorted": Shape("text", 2, dictionary=True, sorted_by_time=True),
}


def _strings(values: list[str], dictionary: bool, idx: np.ndarray) -> pa.Array:
    dict_values = pa.array(values, type=pa.string())
    if dictionary:
        return pa.DictionaryArray.from_arrays(pa.array(idx.astype("int32")), dict_values)
    return dict_values.take(pa.array(idx))


def generate_events(
    out_dir: Path, fans: int, shape: Shape, *, events_per_fan: float = 30.0, seed: int = 0
) -> dict[str, int]:
    """Write contract fan events for about ``fans`` fans as Parquet files in ``out_dir``.

    Each file draws its events' fans from the whole population (heavy-tailed activity:
    lognormal weights), so no file and no row group is grouped by fan. Times spread over
    ``shape.years`` years with a recency tilt, timezone-aware (UTC instants); with
    ``shape.sorted_by_time`` the rows are in time order across the files. Vectorised numpy +
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
    text_ids = [f"f{i:08d}" for i in range(fans)] if shape.ids == "text" else []
    int_ids = rng.permutation(fans).astype("int64") * 7_919 + 10**11  # sparse, not in order
    rooms = [f"room{i:02d}" for i in range(40)]
    total = round(fans * events_per_fan)
    span_us = 365 * shape.years * _DAY_US
    ages = None
    if shape.sorted_by_time:  # oldest first: draw every event's age, then cut in files
        ages = np.sort((rng.random(total) ** 1.3) * span_us)[::-1]
    written = part = 0
    while written < total:
        n = min(_EVENTS_PER_FILE, total - written)
        fan_idx = np.searchsorted(cdf, rng.random(n), side="right")
        age = ages[written : written + n] if ages is not None else (rng.random(n) ** 1.3) * span_us
        t_us = (_END_US - age).astype("int64")
        kind = np.searchsorted(np.cumsum(_TYPE_P), rng.random(n) * _TYPE_P.sum(), side="right")
        kind = np.minimum(kind, len(_TYPES) - 1)
        is_watch = kind == 0
        is_money = kind >= 5
        watch = np.where(is_watch, rng.gamma(1.5, 200.0, n).round(1), np.nan)
        amount = np.where(is_money, rng.lognormal(4.5, 0.8, n).round(2), np.nan)
        if shape.ids == "text":
            fan_col = _strings(text_ids, shape.dictionary, fan_idx)
        else:
            fan_col = pa.array(int_ids[fan_idx])
        table = pa.table(
            {
                "fan_id": fan_col,
                "room_id": _strings(rooms, shape.dictionary, rng.integers(0, len(rooms), n)),
                "event_time": pa.array(t_us, type=pa.timestamp("us", tz="UTC")),
                "event_type": _strings(list(_TYPES), shape.dictionary, kind),
                "session_id": pa.nulls(n, type=pa.string()),
                "watch_seconds": pa.array(watch, from_pandas=True),
                "amount": pa.array(amount, from_pandas=True),
            }
        )
        pq.write_table(
            table,
            out_dir / f"part-{part:03d}.parquet",
            row_group_size=_ROWS_PER_GROUP,
            use_dictionary=shape.dictionary,
        )
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


def _timed_process(cmd: list[str], log: Path) -> dict[str, float]:
    """Run ``cmd`` (output to ``log``); its wall seconds, CPU seconds and peak RSS (MB)."""
    with log.open("w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed:\n{log.read_text()[-3000:]}")
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


_CLI = "import sys; from livecast.cli import main; sys.argv[0] = 'livecast'; main()"
"""The ``livecast`` console script, run with this interpreter."""

_GROUP_BY = """
import sys, time, duckdb
files = sys.argv[1:]
con = duckdb.connect()
t0 = time.perf_counter()
con.sql(
    "SELECT fan_id, count(*) AS n, sum(amount) AS amount, max(event_time) AS last"
    " FROM read_parquet(?) GROUP BY fan_id", params=[files]
).to_arrow_table()
print(time.perf_counter() - t0)
"""
"""The yardstick: a plain DuckDB group-by over the same files (default settings)."""


def run_segment(events: Path, model: Path, partitions: int, work: Path) -> dict[str, object]:
    """One ``livecast segment`` process on ``events``; its figures and its summary timings."""
    out = work / f"{events.name}.parquet"
    cmd = [sys.executable, "-c", _CLI, "segment", "--events", str(events), "--out", str(out)]
    cmd += ["--model", str(model)]
    if partitions:
        cmd += ["--partitions", str(partitions)]
    measured = _timed_process(cmd, work / "segment.log")
    summary_path = out.with_name(out.stem + ".summary.json")
    summary = json.loads(summary_path.read_text())
    out.unlink(missing_ok=True)
    summary_path.unlink(missing_ok=True)
    return {
        **measured,
        "in_process": summary["seconds"],
        "timings": summary["timings"],
        "fans": summary["fans"],
        "events": summary["events"],
        "partitions": summary["partitions"],
    }


def run_group_by(events: Path, work: Path) -> dict[str, float]:
    """The raw DuckDB group-by in a fresh process: query seconds, process wall, peak RSS."""
    files = sorted(str(p) for p in events.glob("*.parquet"))
    log = work / "group_by.log"
    measured = _timed_process([sys.executable, "-c", _GROUP_BY, *files], log)
    return {**measured, "query": float(log.read_text().split()[-1])}


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


def _median(runs: list[dict], key: str) -> float:
    return round(statistics.median(float(r[key]) for r in runs), 2)


def measure_shape(
    name: str, fans: int, model: Path, partitions: int, repeats: int, data: Path, drop: bool
) -> dict[str, object]:
    """Generate (or reuse) one shape's events and time segment and the group-by in turn."""
    shape = SHAPES[name]
    folder = data / f"{name}_{fans}"
    t0 = time.perf_counter()
    info = generate_events(folder, fans, shape)
    generated = time.perf_counter() - t0
    work = data / "out"
    work.mkdir(parents=True, exist_ok=True)
    seg_runs, gb_runs = [], []
    for _ in range(repeats):  # alternate, so that a drift of the machine hits both
        seg_runs.append(run_segment(folder, model, partitions, work))
        gb_runs.append(run_group_by(folder, work))
    if drop:
        shutil.rmtree(folder, ignore_errors=True)
    end_to_end, group_by = _median(seg_runs, "wall"), _median(gb_runs, "query")
    last = seg_runs[-1]
    return {
        "shape": name,
        **asdict(shape),
        "fans": last["fans"],
        "events": last["events"],
        "files": info["files"],
        "partitions": last["partitions"],
        "generate_seconds": round(generated, 1),
        "end_to_end_seconds": end_to_end,
        "in_process_seconds": _median(seg_runs, "in_process"),
        "cpu_seconds": _median(seg_runs, "cpu"),
        "peak_rss_mb": round(max(float(r["peak_rss_mb"]) for r in seg_runs)),
        "group_by_seconds": group_by,
        "group_by_process_seconds": _median(gb_runs, "wall"),
        "ratio": round(end_to_end / group_by, 2),
        "segment_runs": [
            {k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()}
            for r in seg_runs
        ],
        "group_by_runs": [{k: round(v, 2) for k, v in r.items()} for r in gb_runs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000], help="fans")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--repeats", type=int, default=3, help="runs of each command per shape")
    parser.add_argument("--partitions", type=int, default=0, help="buckets (0: the default)")
    parser.add_argument("--model", type=Path, default=None, help="tier bundle folder")
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--data", type=Path, default=DATA, help="generated data folder")
    parser.add_argument(
        "--drop-data", action="store_true", help="delete each shape's events once measured"
    )
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    model = bench_model(args.model, args.data)
    latency = frame_latency(model)
    print(json.dumps({"segment_frame": latency}), flush=True)
    rows = []
    for fans in args.sizes:
        for name in args.shapes:
            rec = measure_shape(
                name, fans, model, args.partitions, args.repeats, args.data, args.drop_data
            )
            rows.append(rec)
            brief = {k: v for k, v in rec.items() if not k.endswith("_runs")}
            print(json.dumps(brief), flush=True)

    table = Table(title="livecast segment end to end (a process, start-up included), medians")
    cols = ("shape", "fans", "events", "end to end s", "in process s", "CPU s", "peak RSS MB")
    for col in (*cols, "raw group-by s", "ratio"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["shape"]),
            f"{r['fans']:,}",
            f"{r['events']:,}",
            f"{r['end_to_end_seconds']:.1f}",
            f"{r['in_process_seconds']:.1f}",
            f"{r['cpu_seconds']:.1f}",
            f"{r['peak_rss_mb']:,}",
            f"{r['group_by_seconds']:.2f}",
            f"{r['ratio']:.1f}x",
        )
    Console(width=max(Console().width, 140)).print(table)
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
        "repeats": args.repeats,
        "segment_frame": latency,
        "runs": rows,
    }
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
