"""``livecast monitor``: the watch on live accuracy (:mod:`serving.monitor`) as a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from livecast.config import get_settings

console = Console()


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _champion_meta(bundle: Path | None) -> dict[str, Any]:
    """``bundle.json`` of ``bundle`` (a bundle folder), or of the champion; {} when there is
    none (the accuracy figures need no bundle; the band and the input drift do)."""
    from training.bundle import BundleError, champion_path, read_bundle_meta

    try:
        path = bundle or champion_path(get_settings().models_dir)
        return read_bundle_meta(path, ())
    except (FileNotFoundError, BundleError) as exc:
        console.print(f"[yellow]no bundle to compare with[/] ({exc}): band and drift skipped")
        return {}


def monitor(
    log: Annotated[
        Path | None, typer.Option(help="Forecast log (default: the settings' forecast_log).")
    ] = None,
    bundle: Annotated[
        Path | None,
        typer.Option(help="Bundle folder of the served model (default: the champion)."),
    ] = None,
    window: Annotated[
        int, typer.Option(min=1, help="Sessions per room in the rolling figures.")
    ] = 20,
    h: Annotated[float, typer.Option(min=0.5, help="CUSUM alarm threshold (sigmas).")] = 5.0,
) -> None:
    """Rolling WAPE, bias and P10-P90 coverage of the served forecasts against actuals, by room,
    target and lead time; the rooms whose forecasts drifted; the targets outside the backtest's
    band; the drift of the plan inputs against the training data. Exits 1 when retraining is
    due."""
    from serving.monitor import ForecastLog, health_report

    path = log or get_settings().forecast_log
    report = health_report(ForecastLog(path), _champion_meta(bundle), window=window, h=h)
    if report["sessions_with_actuals"] == 0:
        console.print(f"no forecast with an actual yet in {path}")
    else:
        _accuracy_tables(report)
    _drift_table(report)
    for a in report["alarms"]:
        console.print(
            f"[red]drift[/] {a['room_id']} {a['target']}: actuals {a['direction']} the "
            f"forecasts since about session {a['session_id']} ({a['start_time'][:10]}, its "
            f"room's session {a['sessions_seen']})"
        )
    if not report["retrain_due"]:
        if report["sessions_with_actuals"]:
            console.print("no room drifted: the forecasts still describe every room")
        return
    for reason in report["reasons"]:
        console.print(f"[red]retrain[/] {reason}")
    console.print("retraining is due: livecast retrain --data DIR")
    raise typer.Exit(1)


def _accuracy_tables(report: dict[str, Any]) -> None:
    window = report["window"]
    _print_accuracy(
        f"served forecasts against actuals (last {window} sessions per room)",
        ("room", "target"),
        [(str(r["room_id"]), r["target"], r) for r in report["rooms"]],
    )
    _print_accuracy(
        "by lead time (days from the forecast to the session)",
        ("target", "lead days"),
        [(r["target"], r["lead"], r) for r in report["lead"]],
    )
    for b in report["bands"]:
        mark = "[red]outside[/]" if b["outside"] else "within"
        console.print(
            f"{b['target']}: last {b['n']} sessions WAPE {b['wape']:.3f} (backtest "
            f"{b['backtest_wape']:.3f}), coverage {b['coverage']:.2f} (band "
            f"{b['coverage_low']:.2f}-{b['coverage_high']:.2f}): {mark}"
        )


def _print_accuracy(title: str, keys: tuple[str, str], rows: list[tuple[str, str, Any]]) -> None:
    """A table of WAPE, bias and coverage rows (``rows``: two key cells, then the row)."""
    table = Table(title=title)
    for col in (*keys, "n", "WAPE", "bias", "P10-P90 coverage"):
        table.add_column(col)
    for a, b, r in rows:
        table.add_row(
            a,
            b,
            str(r["n"]),
            _fmt(r["wape"], ".3f"),
            _fmt(r["bias"], "+.3f"),
            _fmt(r["coverage"], ".2f"),
        )
    console.print(table)


def _drift_table(report: dict[str, Any]) -> None:
    if not report["drift"]:
        if not report["drift_reference"]:
            console.print("input drift: the bundle has no training summary (retrain to add it)")
        return
    table = Table(title="plan inputs: latest plans against the training data (PSI)")
    for col in ("input", "plans", "PSI", "status", "median train / now", "largest shift"):
        table.add_column(col)
    for r in report["drift"]:
        medians = (
            f"{_fmt(r['train_median'], '.4g')} / {_fmt(r['recent_median'], '.4g')}"
            if r.get("train_median") is not None
            else ""
        )
        shift = (
            f"{r['top_shift']}: {r['train_share']:.0%} -> {r['recent_share']:.0%}"
            if r.get("top_shift") is not None
            else ""
        )
        style = {"drifted": "red", "moving": "yellow"}.get(r["status"], "")
        status = f"[{style}]{r['status']}[/]" if style else r["status"]
        table.add_row(r["feature"], str(r["n"]), _fmt(r["psi"], ".3f"), status, medians, shift)
    console.print(table)
