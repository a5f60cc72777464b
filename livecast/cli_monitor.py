"""``livecast monitor``: the watch on live accuracy (:mod:`serving.monitor`) as a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from livecast.config import get_settings

console = Console()


def monitor(
    log: Annotated[
        Path | None, typer.Option(help="Forecast log (default: the settings' forecast_log).")
    ] = None,
    window: Annotated[
        int, typer.Option(min=1, help="Sessions per room in the rolling figures.")
    ] = 20,
    h: Annotated[float, typer.Option(min=0.5, help="CUSUM alarm threshold (sigmas).")] = 5.0,
) -> None:
    """Rolling WAPE, bias and P10-P90 coverage of the served forecasts against actuals, by room
    and target, and the rooms whose forecasts drifted (exit 1 when one did: retraining is
    due)."""
    from serving.monitor import ForecastLog, rolling, watch

    path = log or get_settings().forecast_log
    joined = ForecastLog(path).joined()
    if joined.empty:
        console.print(f"no forecast with an actual yet in {path}")
        return
    acc = rolling(joined, window)
    table = Table(title=f"served forecasts against actuals (last {window} sessions per room)")
    for col in ("room", "target", "n", "WAPE", "bias", "P10-P90 coverage"):
        table.add_column(col)
    for r in acc.itertuples(index=False):
        table.add_row(
            str(r.room_id),
            r.target,
            str(r.n),
            f"{r.wape:.3f}",
            f"{r.bias:+.3f}",
            f"{r.coverage:.2f}",
        )
    console.print(table)
    alarms = watch(joined, h=h)
    if not alarms:
        console.print("no room drifted: the forecasts still describe every room")
        return
    for a in alarms:
        console.print(
            f"[red]drift[/] {a.room_id} {a.target}: actuals {a.direction} the forecasts since "
            f"about session {a.session_id} ({a.start_time.date()}, its room's session "
            f"{a.sessions_seen})"
        )
    console.print("retraining is due: livecast retrain --data DIR")
    raise typer.Exit(1)
