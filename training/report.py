"""Backtest reports: ``metrics.json``, a markdown report with plots, and the predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from features.io import atomic_path, write_parquet
from training.backtest import METHODS, BacktestResult, bars, room_size_band
from training.metrics import wape


def metrics_table(metrics: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per (target, method) with the metric columns."""
    rows = []
    for target, methods in metrics.items():
        for method in METHODS:
            m = methods.get(method)
            if m is None:
                continue
            rows.append({"target": target, "method": method, **m})
    return pd.DataFrame(rows)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def markdown_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(df.columns) + " |"
    sep = "| " + " | ".join("---" for _ in df.columns) + " |"
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def _plot_pred_vs_actual(preds: pd.DataFrame, targets: list[str], path: Path) -> None:
    # a Figure of its own: no pyplot state, no global backend switch
    fig = Figure(figsize=(5 * len(targets), 4.5))
    axes = fig.subplots(1, len(targets))
    for ax, t in zip(np.atleast_1d(axes), targets, strict=True):
        y = preds[t].to_numpy(float)
        p = preds[f"{t}__model_p50"].to_numpy(float)
        ok = np.isfinite(y) & np.isfinite(p) & (y > 0) & (p > 0)
        ax.scatter(y[ok], p[ok], s=4, alpha=0.3)
        lo, hi = np.nanmin(y[ok]), np.nanmax(y[ok])
        ax.plot([lo, hi], [lo, hi], color="k", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"actual {t}")
        ax.set_ylabel(f"predicted {t} (P50)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def error_by_room_size(preds: pd.DataFrame, targets: list[str]) -> pd.DataFrame:
    band = room_size_band(preds["room__followers"])
    rows = []
    for t in targets:
        for b, g in preds.groupby(band, observed=True):
            row = {"target": t, "room_size": str(b), "n": len(g)}
            for m in ("model_p50", "trailing_mean", "oracle"):
                col = f"{t}__{m}"
                if col in g:
                    row[f"wape_{m.replace('_p50', '')}"] = wape(g[t].to_numpy(), g[col].to_numpy())
            rows.append(row)
    return pd.DataFrame(rows)


def coverage_by_fold(preds: pd.DataFrame, targets: list[str]) -> pd.DataFrame:
    rows = []
    for t in targets:
        for (fold, cold), g in preds.groupby(["fold", "cold_start"]):
            y = g[t]
            inside = (y >= g[f"{t}__model_p10"]) & (y <= g[f"{t}__model_p90"])
            rows.append(
                {
                    "target": t,
                    "fold": int(fold),
                    "cold_start": bool(cold),
                    "n": int(y.notna().sum()),
                    "coverage_p10_p90": float(inside[y.notna()].mean()),
                }
            )
    return pd.DataFrame(rows)


def write_report(
    result: BacktestResult, out_dir: str | Path, *, title: str = "livecast backtest"
) -> dict[str, Path]:
    """Write metrics.json, report.md (+ PNG plots) and predictions.parquet into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = list(result.metrics)
    metrics_path = out_dir / "metrics.json"
    with atomic_path(metrics_path) as tmp:
        tmp.write_text(json.dumps(result.metrics, indent=2))
    write_parquet(result.predictions, out_dir / "predictions.parquet")
    _plot_pred_vs_actual(result.predictions, targets, out_dir / "pred_vs_actual.png")
    has_oracle = any(result.metrics[t].get("oracle") for t in targets)
    lines = [
        f"# {title}",
        "",
        "Cuts: " + ", ".join(str(c.date()) for c in result.cuts),
        f"Predicted sessions: {len(result.predictions)}",
        "",
        "## Metrics (lower is better; coverage should be near 0.80)",
        "",
        markdown_table(metrics_table(result.metrics)),
        "",
        "## Quality bars",
        "",
        markdown_table(pd.DataFrame(bars(result.metrics, oracle=has_oracle))),
        "",
        "## Predicted vs actual",
        "",
        "![predicted vs actual](pred_vs_actual.png)",
        "",
        "## Error by room size",
        "",
        markdown_table(error_by_room_size(result.predictions, targets)),
        "",
        "## Interval coverage by fold",
        "",
        markdown_table(coverage_by_fold(result.predictions, targets)),
        "",
    ]
    report_path = out_dir / "report.md"
    with atomic_path(report_path) as tmp:
        tmp.write_text("\n".join(lines))
    return {"metrics": metrics_path, "report": report_path}
