"""``livecast segment``: score every fan's tier from a file or folder of fan events.

A thin command over :func:`serving.batch.segment`; registered in :mod:`livecast.cli`, which
wraps it in the friendly-errors decorator (bad rows: a table and exit code 2).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from livecast.config import get_settings


def segment(
    events: Annotated[
        Path, typer.Option(help="Fan events: a Parquet or CSV file, or a folder of them.")
    ],
    out: Annotated[Path, typer.Option(help="Output Parquet (fan_id, tier, probabilities).")],
    cutoff: Annotated[
        str | None,
        typer.Option(help="Score as of this time (default: midnight after the latest event)."),
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="Tier bundle folder (default: the tier champion).")
    ] = None,
    previous: Annotated[
        Path | None, typer.Option(help="A previous run's output, for the transition matrix.")
    ] = None,
    engine: Annotated[str, typer.Option(help="local (DuckDB buckets) or dask.")] = "local",
    scheduler: Annotated[
        str | None, typer.Option(help="Dask scheduler address (default: a local cluster).")
    ] = None,
    partitions: Annotated[
        int | None,
        typer.Option(min=1, help="Hash buckets / Dask partitions (default: from the size)."),
    ] = None,
) -> None:
    """Score every fan's tier (core / active / potential / dormant) with the tier champion."""
    from livecast.cli import console

    import_scoring()
    from serving.batch import segment as run_segment
    from training.tiers import load_tier_bundle

    if engine not in ("local", "dask"):
        raise ValueError(f"--engine must be local or dask, got {engine!r}")
    if scheduler is not None and engine != "dask":
        raise ValueError("--scheduler needs --engine dask")
    s = get_settings()
    tier_model = load_tier_bundle(model or s.models_dir)
    result = run_segment(
        events,
        out,
        model=tier_model,
        cutoff=cutoff,
        engine=engine,  # type: ignore[arg-type]
        scheduler=scheduler,
        previous=previous,
        partitions=partitions,
        tz=s.timezone,
    )
    console.print(tier_table(result.summary))
    if result.summary.get("transition"):
        console.print(transition_table(result.summary["transition"]))
    console.print(
        f"{result.fans:,} fans from {result.events:,} events scored as of"
        f" {result.cutoff.isoformat()} in {result.seconds:.1f} s ({result.engine},"
        f" {result.partitions} partitions): {result.out_path}, summary {result.summary_path}"
    )


def import_scoring() -> None:
    """Import the tier model's module (and so LightGBM) without scikit-learn.

    When scikit-learn is installed, ``import lightgbm`` imports it (and through it most of
    SciPy) for LightGBM's scikit-learn estimators: about half of this command's start-up,
    for estimators a batch run never uses (it predicts with a ``lightgbm.Booster``). If
    nothing in this process has imported LightGBM or scikit-learn yet, LightGBM is imported
    with scikit-learn hidden; scikit-learn stays importable afterwards as usual, only
    LightGBM's own scikit-learn estimators are then unavailable in this process. Otherwise
    (LightGBM already loaded, e.g. in tests) this does nothing.
    """
    if "lightgbm" in sys.modules or "sklearn" in sys.modules:
        return
    sys.modules["sklearn"] = None  # type: ignore[assignment]  # import sklearn: ImportError
    try:
        import training.tiers  # noqa: F401  (sets LightGBM's environment, then imports it)
    finally:
        del sys.modules["sklearn"]


def tier_table(summary: dict[str, Any]) -> Table:
    """Fans and GMV share per predicted tier."""
    window = summary["gmv_window_days"]
    table = Table(
        "tier",
        "fans",
        "fan share",
        f"GMV, last {window} days",
        "GMV share",
        title="fan tiers (GMV: order amounts before the cutoff, by predicted tier)",
    )
    for tier, row in summary["tiers"].items():
        table.add_row(
            tier,
            f"{row['fans']:,}",
            f"{row['fan_share']:.1%}",
            f"{row['gmv']:,.0f}",
            f"{row['gmv_share']:.1%}",
        )
    table.add_row("total", f"{summary['fans']:,}", "100%", f"{summary['gmv']:,.0f}", "100%")
    return table


def transition_table(transition: dict[str, Any]) -> Table:
    """Previous tier (rows) x new tier (columns), in fans."""
    matrix = transition["matrix"]
    cols = list(next(iter(matrix.values())))
    table = Table("previous \\ new", *cols, title=f"transitions from {transition['previous']}")
    for prev, row in matrix.items():
        table.add_row(prev, *(f"{row[c]:,}" for c in cols))
    return table
