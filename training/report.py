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
from training.metrics import bias, coverage, wape

BREAKDOWNS = ("host", "room", "duration_band", "month")
DURATION_BANDS = ("<1h", "1-2h", "2-4h", "4-8h", ">=8h")
BREAKDOWN_BASELINES = ("trailing_mean", "slot_mean", "history_only", "oracle")
# the naive baselines the model must beat (the oracle is a ceiling, not a baseline)
NAIVE_BASELINES = ("trailing_mean", "slot_mean", "history_only")
BREAKDOWN_TITLES = {
    "host": "Error by host",
    "room": "Error by room",
    "duration_band": "Error by duration band",
    "month": "Error by month",
}
REPORT_TOP_GROUPS = 25


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


def duration_band(minutes: pd.Series) -> pd.Series:
    """Planned-duration bands: ``<1h``, ``1-2h``, ``2-4h``, ``4-8h``, ``>=8h`` (lower edge
    inclusive, so 60 min is ``1-2h``); a missing duration is ``unknown``."""
    edges = [0, 60, 120, 240, 480, np.inf]
    band = pd.cut(minutes.astype(float), edges, labels=list(DURATION_BANDS), right=False)
    return band.astype(object).where(band.notna(), "unknown")


def _host_key(preds: pd.DataFrame) -> pd.Series:
    """The host of each row: ``host_id`` when the frame has it, else (or when missing) the room."""
    room = preds["room_id"].astype(str)
    if "host_id" not in preds:
        return room
    host = preds["host_id"]
    return host.astype(object).where(host.notna(), room).astype(str)


def _month_key(start_time: pd.Series, tz: str | None) -> pd.Series:
    """``YYYY-MM`` of the local start time (``tz`` converts aware times; naive ones are local)."""
    t = pd.to_datetime(start_time)
    if tz is not None and t.dt.tz is not None:
        t = t.dt.tz_convert(tz)
    return t.dt.strftime("%Y-%m")


def _group_key(preds: pd.DataFrame, by: str, tz: str | None) -> pd.Series | None:
    if by == "host":
        return _host_key(preds)
    if by == "room":
        return preds["room_id"].astype(str)
    if by == "duration_band":
        if "planned_duration_min" not in preds:
            return None
        return duration_band(preds["planned_duration_min"])
    if by == "month":
        return _month_key(preds["start_time"], tz)
    raise ValueError(f"unknown breakdown {by!r}: use one of {', '.join(BREAKDOWNS)}")


def _breakdown_columns(preds: pd.DataFrame, targets: list[str]) -> list[str]:
    base = [f"wape_{m}" for m in BREAKDOWN_BASELINES if any(f"{t}__{m}" in preds for t in targets)]
    return [
        "target",
        "group",
        "n",
        "actual_total",
        "wape_model",
        *base,
        "bias_model",
        "error_share",
        "best_baseline",
        "wape_best_baseline",
    ]


def error_breakdown(
    preds: pd.DataFrame, targets: list[str] | tuple[str, ...], by: str, *, tz: str | None = None
) -> pd.DataFrame:
    """Where the error is: one row per (target, group) of ``by``.

    ``by`` is ``host`` (``host_id``, the room when absent), ``room``, ``duration_band`` (of
    ``planned_duration_min``; empty frame when the column is absent) or ``month`` (``YYYY-MM`` of
    the local start time). Columns: ``n`` (rows with a known actual), ``actual_total``, the WAPE
    of the model P50 and of each baseline present, the model's bias, ``error_share`` (the
    group's share of the model's total absolute error for that target) and the WAPE of the
    target's overall best naive baseline in the group (``best_baseline`` names it). Sorted by
    target (in the given order), then error share descending.
    """
    targets = list(targets)
    columns = _breakdown_columns(preds, targets)
    key = _group_key(preds, by, tz)
    if key is None or len(preds) == 0:
        return pd.DataFrame(columns=columns)
    rows = []
    for t in targets:
        y_all = preds[t].to_numpy(float)
        p_all = preds[f"{t}__model_p50"].to_numpy(float)
        ok = np.isfinite(y_all) & np.isfinite(p_all)
        total_err = float(np.abs(y_all[ok] - p_all[ok]).sum())
        overall = {
            m: wape(y_all, preds[f"{t}__{m}"].to_numpy(float))
            for m in NAIVE_BASELINES
            if f"{t}__{m}" in preds
        }
        overall = {m: v for m, v in overall.items() if np.isfinite(v)}
        best = min(overall, key=overall.__getitem__) if overall else None
        t_rows = []
        for group, g in preds.groupby(key.to_numpy(), sort=True):
            y = g[t].to_numpy(float)
            p = g[f"{t}__model_p50"].to_numpy(float)
            both = np.isfinite(y) & np.isfinite(p)
            err = float(np.abs(y[both] - p[both]).sum())
            row: dict[str, Any] = {
                "target": t,
                "group": str(group),
                "n": int(np.isfinite(y).sum()),
                "actual_total": float(np.nansum(y)),
                "wape_model": wape(y, p),
            }
            for m in BREAKDOWN_BASELINES:
                if f"wape_{m}" in columns:
                    col = f"{t}__{m}"
                    row[f"wape_{m}"] = wape(y, g[col].to_numpy(float)) if col in g else np.nan
            row["bias_model"] = bias(y, p)
            row["error_share"] = err / total_err if total_err > 0 else np.nan
            row["best_baseline"] = best
            row["wape_best_baseline"] = (
                wape(y, g[f"{t}__{best}"].to_numpy(float)) if best else np.nan
            )
            t_rows.append(row)
        t_rows.sort(key=lambda r: (-np.nan_to_num(r["error_share"], nan=-1.0), r["group"]))
        rows.extend(t_rows)
    return pd.DataFrame(rows, columns=columns)


QUANTILE_NAMES = ("p10", "p50", "p90")
LEAD_BUCKETS = ((0, 8, "0-7"), (8, 15, "8-14"), (15, 31, "15-30"), (31, 61, "31-60"))
"""Lead-time buckets (days from the forecast's cut to the session's start, [low, high))."""


def error_by_lead(preds: pd.DataFrame, targets: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """WAPE, bias and P10-P90 coverage of the model by lead-time bucket (:data:`LEAD_BUCKETS`,
    then ``>60`` and ``all``), with the history refreshed before each session (``fresh``: the
    backtest's main columns) and, when the predictions hold them, frozen at the cut
    (``frozen``: what the service delivers for a plan made at the cut). Empty without
    ``lead_days``."""
    columns = ["target", "lead_days", "n", "history", "wape", "bias", "coverage_p10_p90"]
    if "lead_days" not in preds or len(preds) == 0:
        return pd.DataFrame(columns=columns)
    lead = preds["lead_days"].to_numpy(float)
    last = LEAD_BUCKETS[-1][1]
    buckets = [*LEAD_BUCKETS, (last, np.inf, f">{last - 1}"), (-np.inf, np.inf, "all")]
    rows = []
    for t in targets:
        for kind, col in (("fresh", "model"), ("frozen", "frozen")):
            if f"{t}__{col}_p50" not in preds:
                continue
            for low, high, name in buckets:
                g = preds[(lead >= low) & (lead < high)]
                y = g[t].to_numpy(float)
                if not np.isfinite(y).any():
                    continue
                p10, p50, p90 = (g[f"{t}__{col}_{q}"].to_numpy(float) for q in QUANTILE_NAMES)
                ok = np.isfinite(y)
                rows.append(
                    {
                        "target": t,
                        "lead_days": name,
                        "n": int(ok.sum()),
                        "history": kind,
                        "wape": wape(y, p50),
                        "bias": bias(y, p50),
                        "coverage_p10_p90": coverage(y[ok], p10[ok], p90[ok]),
                    }
                )
    return pd.DataFrame(rows, columns=columns)


def error_breakdowns(
    preds: pd.DataFrame, targets: list[str] | tuple[str, ...], *, tz: str | None = None
) -> dict[str, pd.DataFrame]:
    """The breakdowns that apply to ``preds``, in report order: host; room only when the room
    differs from the host for some row; duration band only when ``planned_duration_min`` is
    present; month."""
    out = {"host": error_breakdown(preds, targets, "host", tz=tz)}
    if (_host_key(preds) != preds["room_id"].astype(str)).any():
        out["room"] = error_breakdown(preds, targets, "room", tz=tz)
    if "planned_duration_min" in preds:
        out["duration_band"] = error_breakdown(preds, targets, "duration_band", tz=tz)
    out["month"] = error_breakdown(preds, targets, "month", tz=tz)
    return out


def breakdown_view(breakdown: pd.DataFrame, target: str, *, top: int | None = None) -> pd.DataFrame:
    """The compact view of one target's breakdown: group, n, model WAPE, best baseline WAPE,
    share of error, bias; the ``top`` groups by share of error when given."""
    df = breakdown[breakdown["target"] == target]
    if top is not None:
        df = df.head(top)
    return df[
        ["group", "n", "wape_model", "wape_best_baseline", "error_share", "bias_model"]
    ].reset_index(drop=True)


def _json_value(value: Any) -> Any:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def _breakdown_section(by: str, df: pd.DataFrame, targets: list[str]) -> list[str]:
    lines = [f"## {BREAKDOWN_TITLES[by]}", ""]
    groups = df["group"].nunique() if len(df) else 0
    if groups > REPORT_TOP_GROUPS:
        lines += [
            f"Top {REPORT_TOP_GROUPS} of {groups} groups per target by share of the model's "
            "absolute error; every group is in breakdown.json.",
            "",
        ]
    shown = df.groupby("target", sort=False).head(REPORT_TOP_GROUPS)
    shown = shown.drop(columns=["best_baseline", "wape_best_baseline"])
    return [*lines, markdown_table(shown), ""]


def write_report(
    result: BacktestResult, out_dir: str | Path, *, title: str = "livecast backtest"
) -> dict[str, Path]:
    """Write metrics.json, report.md (+ PNG plots), breakdown.json and predictions.parquet into
    ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = list(result.metrics)
    metrics_path = out_dir / "metrics.json"
    with atomic_path(metrics_path) as tmp:
        tmp.write_text(json.dumps(result.metrics, indent=2))
    write_parquet(result.predictions, out_dir / "predictions.parquet")
    _plot_pred_vs_actual(result.predictions, targets, out_dir / "pred_vs_actual.png")
    breakdowns = error_breakdowns(result.predictions, targets)
    breakdown_path = out_dir / "breakdown.json"
    payload = {
        by: [{k: _json_value(v) for k, v in row.items()} for row in df.to_dict("records")]
        for by, df in breakdowns.items()
    }
    by_lead = error_by_lead(result.predictions, targets)
    if len(by_lead):
        payload["lead"] = [
            {k: _json_value(v) for k, v in row.items()} for row in by_lead.to_dict("records")
        ]
    with atomic_path(breakdown_path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2))
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
    if len(by_lead):
        lines += [
            "## Error by lead time",
            "",
            "Days from the cut to the session. *fresh*: room history up to the session before "
            "(the table above); *frozen*: history as it was at the cut, as the service scores "
            "a plan made then.",
            "",
            markdown_table(by_lead),
            "",
        ]
    lines += served_section(result)
    lines += choice_section(result)
    for by, df in breakdowns.items():
        lines += _breakdown_section(by, df, targets)
    if result.selection is not None:
        with atomic_path(out_dir / "model_choice.json") as tmp:
            tmp.write_text(json.dumps(result.selection.record(), indent=2))
    report_path = out_dir / "report.md"
    with atomic_path(report_path) as tmp:
        tmp.write_text("\n".join(lines))
    return {"metrics": metrics_path, "report": report_path, "breakdown": breakdown_path}


def served_table(result: BacktestResult) -> pd.DataFrame:
    """Per target: what serves it (the model, or the baseline standing in for a model that
    lost), its backtest WAPE and the best baseline's."""
    return pd.DataFrame([{"target": t, **v} for t, v in result.served.items()])


def served_section(result: BacktestResult) -> list[str]:
    return [
        "## Served forecast (never worse than a spreadsheet)",
        "",
        "A target whose model loses to the best baseline on this backtest is served by the "
        "history-only baseline; `livecast promote` refuses a candidate whose served forecast "
        "still loses to a baseline.",
        "",
        markdown_table(served_table(result)),
        "",
    ]


def choice_table(result: BacktestResult) -> pd.DataFrame:
    """Every candidate's validation WAPE per target (chosen one marked)."""
    sel = result.selection
    rows = []
    if sel is None:
        return pd.DataFrame(rows)
    for target, scores in sel.scores.items():
        for name, score in sorted(scores.items(), key=lambda kv: kv[1]):
            rows.append(
                {
                    "target": target,
                    "candidate": name,
                    "validation_wape": score,
                    "chosen": name == sel.chosen[target],
                }
            )
    return pd.DataFrame(rows)


def choice_section(result: BacktestResult) -> list[str]:
    sel = result.selection
    if sel is None:
        return []
    v = sel.validation
    head = [
        "## Model choice (inside the training period)",
        "",
        f"Candidates fitted on {v['fit_rows']} rows, scored on {v['validation_rows']} rows "
        f"from {v['validation_start']} to {v['validation_end']} (before the first cut). "
        "Chosen: " + ", ".join(f"{t} {c}" for t, c in sel.chosen.items()) + ".",
        "",
    ]
    table = choice_table(result)
    return [*head, markdown_table(table), ""] if len(table) else head
