"""``livecast segments``: backtest, train and promote the fan-tier model (thin commands)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from livecast.config import get_settings

F = TypeVar("F", bound=Callable[..., Any])


def _friendly_errors(fn: F) -> F:
    """``livecast.cli._friendly_errors`` (bad input: a clear message and exit code 2), looked up
    at call time: ``livecast.cli`` imports this module while it is being defined."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from livecast.cli import _friendly_errors as friendly

        return friendly(fn)(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _console() -> Any:
    from livecast.cli import console

    return console


def _cell(value: Any) -> str:
    from livecast.cli import _cell as cell

    return cell(value)


def _training_lock(wait: bool) -> Any:
    """``livecast.cli.training_lock`` (one training at a time), looked up at call time."""
    from livecast.cli import training_lock

    return training_lock(wait)


segments_app = typer.Typer(
    help="Fan tiers (core / active / potential / dormant): backtest, train, promote.",
    no_args_is_help=True,
)

EventsOpt = Annotated[
    Path,
    typer.Option(
        help="Fan events: a Parquet / CSV file, a dataset folder (fan_events.parquet) or a"
        " folder of files, in the fan_events contract."
    ),
]
WindowOpt = Annotated[int, typer.Option(min=1, max=366, help="Tier window length, days.")]
CutoffsOpt = Annotated[
    int, typer.Option(min=1, help="Evaluation cutoffs (latest ones, one window apart).")
]
TrainCutoffsOpt = Annotated[int, typer.Option(min=1, help="Training cutoffs (step-days apart).")]
StepOpt = Annotated[int, typer.Option(min=1, help="Days between training cutoffs.")]
SpendOpt = Annotated[
    float | None, typer.Option(min=0, help="Window spend for core (currency); default 300.")
]
OrdersOpt = Annotated[int | None, typer.Option(min=1, help="Orders for a repeat buyer.")]
SeedOpt = Annotated[int, typer.Option(help="Random seed.")]
WaitOpt = Annotated[
    bool,
    typer.Option(
        "--wait",
        help="When another training holds the training lock, wait for it to finish"
        " (default: fail at once with exit code 2).",
    ),
]


def _rules(window_days: int, core_min_spend: float | None, core_min_orders: int | None) -> Any:
    from features.fans import TierRules

    given = {"core_min_spend": core_min_spend, "core_min_orders": core_min_orders}
    return TierRules(window_days=window_days, **{k: v for k, v in given.items() if v is not None})


def print_tier_metrics(metrics: dict[str, Any], per_cutoff: list[dict] | None = None) -> None:
    """The backtest table, the quality bars and, given, the bars at every evaluation cutoff."""
    from training.tiers_backtest import bars, metrics_frame

    df = metrics_frame(metrics)[["method", "macro_f1", "log_loss", "dormant_auc", "n"]]
    table = Table(title="fan-tier backtest (higher is better, except log loss)")
    for col in df.columns:
        table.add_column(str(col))
    for row in df.itertuples(index=False):
        table.add_row(*[_cell(v) for v in row])
    _console().print(table)
    bar_table = Table("quality bar", "model", "baseline", "holds", title="quality bars")
    for b in bars(metrics):
        bar_table.add_row(b["bar"], _cell(b["model"]), _cell(b["baseline"]), str(b["holds"]))
    _console().print(bar_table)
    if per_cutoff:
        cut_table = Table(
            "cutoff", "bar", "model", "baseline", "holds", title="bars at every evaluation cutoff"
        )
        for b in per_cutoff:
            cut_table.add_row(
                b["cutoff"], b["bar"], _cell(b["model"]), _cell(b["baseline"]), str(b["holds"])
            )
        _console().print(cut_table)


@segments_app.command("backtest")
@_friendly_errors
def backtest(
    events: EventsOpt,
    out: Annotated[Path, typer.Option(help="Report folder.")] = Path("reports/segments"),
    window_days: WindowOpt = 30,
    cutoffs: CutoffsOpt = 2,
    train_cutoffs: TrainCutoffsOpt = 6,
    step_days: StepOpt = 30,
    core_min_spend: SpendOpt = None,
    core_min_orders: OrdersOpt = None,
    seed: SeedOpt = 0,
) -> None:
    """Evaluate the tier model against persistence and RFM rules on later, held-out cutoffs."""
    from training.tiers import TierParams
    from training.tiers_backtest import (
        cutoff_bars,
        read_fan_events,
        run_tier_backtest,
        write_tier_report,
    )

    s = get_settings()
    ev = read_fan_events(events, tz=s.timezone)
    bt = run_tier_backtest(
        ev,
        rules=_rules(window_days, core_min_spend, core_min_orders),
        params=TierParams(seed=seed),
        eval_cutoffs=cutoffs,
        train_cutoffs=train_cutoffs,
        step_days=step_days,
        tz=s.timezone,
    )
    paths = write_tier_report(bt, out)
    print_tier_metrics(bt.metrics, cutoff_bars(bt))
    _console().print(f"report: {paths['report']}  metrics: {paths['metrics']}")


@segments_app.command("train")
@_friendly_errors
def train(
    events: EventsOpt,
    window_days: WindowOpt = 30,
    cutoffs: CutoffsOpt = 2,
    train_cutoffs: TrainCutoffsOpt = 6,
    step_days: StepOpt = 30,
    core_min_spend: SpendOpt = None,
    core_min_orders: OrdersOpt = None,
    seed: SeedOpt = 0,
    wait: WaitOpt = False,
) -> None:
    """Backtest, fit on the latest cutoffs, register livecast-tiers in MLflow, export a bundle."""
    s = get_settings()
    with _training_lock(wait):  # before the heavy imports: a busy machine fails at once
        from training.tiers import TierParams
        from training.tiers_backtest import cutoff_bars, read_fan_events, train_tiers

        ev = read_fan_events(events, tz=s.timezone)
        result = train_tiers(
            ev,
            models_dir=s.models_dir,
            report_dir=s.reports_dir / "segments-train",
            mlflow_uri=s.mlflow_uri,
            rules=_rules(window_days, core_min_spend, core_min_orders),
            params=TierParams(seed=seed),
            eval_cutoffs=cutoffs,
            train_cutoffs=train_cutoffs,
            step_days=step_days,
            tz=s.timezone,
        )
    print_tier_metrics(result.backtest.metrics, cutoff_bars(result.backtest))
    _console().print(
        f"train id {result.train_id}: bundle {result.bundle_dir},"
        f" registered livecast-tiers v{result.version}"
    )


@segments_app.command("promote")
@_friendly_errors
def promote(
    train_id: Annotated[
        str | None, typer.Option(help="Candidate train id (default: latest registered).")
    ] = None,
    events: Annotated[
        Path | None,
        typer.Option(help="Fan events to backtest both on if their evaluation cutoffs differ."),
    ] = None,
) -> None:
    """Move @champion of livecast-tiers only if the candidate beats it on macro-F1."""
    from training.promote import promote as run_promote
    from training.tiers_backtest import TIER_GATE, read_fan_events, reevaluator

    s = get_settings()
    reevaluate = None
    if events is not None:
        reevaluate = reevaluator(read_fan_events(events, tz=s.timezone), tz=s.timezone)
    decision = run_promote(
        uri=s.mlflow_uri,
        models_dir=s.models_dir,
        train_id=train_id,
        reevaluate=reevaluate,
        gate=TIER_GATE,
    )
    verdict = "[green]promoted[/]" if decision.promoted else "[yellow]not promoted[/]"
    _console().print(f"{verdict} {decision.candidate.train_id}: {decision.reason}")


def tier_step(events: Any, data_dir: Path, *, seed: int = 0, train_cutoffs: int = 3) -> None:
    """The main job's fan-tier part: backtest, train, register and promote the tier model on
    ``events``, score every fan of ``data_dir/fan_events.parquet`` with the batch run and print
    the tier table (fans, mean P(dormant), GMV share of the last window per predicted tier)."""
    import pandas as pd

    from serving.batch import segment
    from training.promote import promote as run_promote
    from training.tiers import TierParams
    from training.tiers_backtest import (
        TIER_GATE,
        cutoff_bars,
        data_end,
        reevaluator,
        train_tiers,
    )

    s = get_settings()
    result = train_tiers(
        events,
        models_dir=s.models_dir,
        report_dir=s.reports_dir / "segments-train",
        mlflow_uri=s.mlflow_uri,
        params=TierParams(seed=seed),
        train_cutoffs=train_cutoffs,
        tz=s.timezone,
    )
    print_tier_metrics(result.backtest.metrics, cutoff_bars(result.backtest))
    decision = run_promote(
        uri=s.mlflow_uri,
        models_dir=s.models_dir,
        train_id=result.train_id,
        reevaluate=reevaluator(events, tz=s.timezone),
        gate=TIER_GATE,
    )
    verdict = "promoted" if decision.promoted else "not promoted"
    _console().print(f"tier model {result.train_id} {verdict}: {decision.reason}")
    events_file, out = Path(data_dir) / "fan_events.parquet", Path(data_dir) / "fan_tiers.parquet"
    cutoff = data_end(events, s.timezone)
    seg = segment(
        events_file, out, model=result.model, cutoff=cutoff, tz=s.timezone, progress=False
    )
    scores = pd.read_parquet(out, columns=["tier", "p_dormant"])
    p_dormant = scores.groupby("tier", observed=False)["p_dormant"].mean()
    table = Table(
        "tier",
        "fans",
        "share",
        "mean P(dormant)",
        f"GMV share (last {result.model.rules.window_days} days)",
        title=f"fan tiers at {seg.cutoff:%Y-%m-%d} ({seg.fans:,} fans, {seg.seconds:.1f} s)",
    )
    for tier, row in seg.summary["tiers"].items():
        table.add_row(
            tier,
            f"{row['fans']:,}",
            f"{row['fan_share']:.1%}",
            _cell(float(p_dormant.get(tier, float("nan")))),
            f"{row['gmv_share']:.1%}",
        )
    _console().print(table)
    _console().print(f"fan tiers: {out}")
