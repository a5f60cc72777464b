"""The ``livecast`` console command. Subcommands are thin: parse arguments, call a library function.

Heavy imports happen inside each command so that ``livecast --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

# Before any command loads LightGBM: waiting OpenMP threads sleep instead of spinning, which
# stalled training ~10x on busy cores (see training.models; README, "Threads").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer
from rich.console import Console
from rich.table import Table

from livecast.cli_segments import segments_app
from livecast.config import get_settings

app = typer.Typer(
    name="livecast",
    help="Forecast live-commerce sessions and tier fans.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
import_app = typer.Typer(help="Import real exports into the data contract.", no_args_is_help=True)
app.add_typer(import_app, name="import")
app.add_typer(segments_app, name="segments")

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def _friendly_errors(fn: F) -> F:
    """Turn data problems into a readable message and exit code 2 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from features.contract import ContractError
        from training.lock import TrainingBusy

        try:
            return fn(*args, **kwargs)
        except ContractError as err:
            _print_contract_error(err)
            raise typer.Exit(2) from None
        except TrainingBusy as err:  # one plain line: rich would wrap a long path at 80 columns
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        except (FileNotFoundError, ValueError) as err:
            err_console.print(f"[bold red]error:[/] {err}")
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _print_contract_error(err: Any) -> None:
    failures = err.failures
    where = f" in {err.source}" if err.source else ""
    err_console.print(
        f"[bold red]{err.table}{where}: {len(failures)} row/column failure(s)"
        " against the data contract[/]"
    )
    table = Table("row", "column", "check", "value", show_lines=False)
    for row in failures.head(100).itertuples(index=False):
        table.add_row(str(row.row), str(row.column), str(row.check), repr(row.value))
    err_console.print(table)
    if len(failures) > 100:
        err_console.print(f"... and {len(failures) - 100} more failures")


def _summary_table(title: str, items: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False)
    for key, value in items.items():
        table.add_row(str(key), f"{value:,.3f}" if isinstance(value, float) else str(value))
    return table


@app.command()
@_friendly_errors
def simulate(
    out: Annotated[Path, typer.Option(help="Output folder for the Parquet tables.")] = Path(
        "data/sim"
    ),
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same files.")] = 0,
    rooms: Annotated[int, typer.Option(min=1, help="Number of live rooms.")] = 40,
    days: Annotated[int, typer.Option(min=7, help="Days of history.")] = 730,
    fans: Annotated[int, typer.Option(min=0, help="Number of fans with events.")] = 100_000,
) -> None:
    """Simulate realistic sessions, products and fan events (the embedded default data)."""
    from features.io import write_dataset
    from features.simulate import simulate as run_simulation
    from features.simulate import summarize

    ds = run_simulation(seed=seed, rooms=rooms, days=days, fans=fans)
    write_dataset(ds, out)
    console.print(_summary_table(f"simulated data in {out}", summarize(ds)))


@app.command()
@_friendly_errors
def features(
    data: Annotated[Path, typer.Option(help="Dataset folder (simulate or import output).")] = Path(
        "data/sim"
    ),
    out: Annotated[Path, typer.Option(help="Output Parquet file.")] = Path(
        "data/sim/session_features.parquet"
    ),
) -> None:
    """Build the leakage-free session feature frame from past sessions."""
    from features.io import load_dataset, write_parquet
    from features.sessions import build_session_features, feature_families

    ds = load_dataset(data, fan_events=False, tz=get_settings().timezone)
    frame = build_session_features(ds.sessions, ds.session_products)
    write_parquet(frame, out)
    fams = feature_families(frame.columns)
    console.print(
        _summary_table(
            f"features written to {out}",
            {"rows": len(frame), "columns": frame.shape[1]}
            | {f"family {k}": len(v) for k, v in fams.items()},
        )
    )


EncodingOption = Annotated[
    str | None,
    typer.Option(help="Text encoding of a CSV (e.g. gb18030); default: utf-8 / BOM / gb18030."),
]
StrictOption = Annotated[
    bool,
    typer.Option(
        "--strict", help="Rows whose values contradict each other are errors, not warnings."
    ),
]
DayfirstOption = Annotated[
    bool | None,
    typer.Option(
        "--dayfirst/--monthfirst",
        help="Order of 01/02/2024-style dates (default: what the column's values show).",
    ),
]


def _print_warnings(table: str, warnings: Any, source: Path) -> None:
    """Contract warnings (rows kept) as a table like the contract failures, on stderr."""
    if len(warnings) == 0:
        return
    err_console.print(
        f"[bold yellow]{table} in {source}: {len(warnings)} contract warning(s): rows kept, "
        "their values contradict each other (--strict makes them errors)[/]"
    )
    # the kind of check, without the row's own values ("... (viewers 10)", "... gmv 100")
    kind = warnings["check"].astype(str).str.split(" (", regex=False).str[0]
    kind = kind.str.replace(r"\s+[-\d.]+$", "", regex=True)
    counts = kind.value_counts()
    err_console.print("by check: " + "; ".join(f"{c}: {n}" for c, n in counts.items()))
    top = 20
    table_view = Table("row", "column", "check", "value", show_lines=False)
    for row in warnings.head(top).itertuples(index=False):
        table_view.add_row(str(row.row), str(row.column), str(row.check), repr(row.value))
    err_console.print(table_view)
    if len(warnings) > top:
        err_console.print(f"... and {len(warnings) - top} more warnings")


@import_app.command("chanmama")
@_friendly_errors
def import_chanmama(
    file: Annotated[Path, typer.Argument(help="Chanmama Douyin session export (.xlsx or .csv).")],
    year: Annotated[int, typer.Option(help="Year of the sessions (the export omits it).")],
    out: Annotated[Path, typer.Option(help="Output dataset folder.")],
    host: Annotated[
        str | None, typer.Option(help="Host name when the file has no Name column.")
    ] = None,
    encoding: EncodingOption = None,
    strict: StrictOption = False,
) -> None:
    """Import a Chanmama (蝉妈妈) Douyin live-session export into a sessions table."""
    from features.importers.chanmama import import_chanmama as run_import
    from features.io import write_parquet

    result = run_import(
        file, year=year, tz=get_settings().timezone, host=host, encoding=encoding, strict=strict
    )
    write_parquet(result.table, out / "sessions.parquet")
    console.print(_summary_table(f"sessions written to {out}", result.summary))
    _print_warnings("sessions", result.warnings, file)


@import_app.command("transactions")
@_friendly_errors
def import_transactions(
    file: Annotated[Path, typer.Argument(help="Purchase log (CSV / TXT / Parquet / Excel).")],
    out: Annotated[Path, typer.Option(help="Output dataset folder.")],
    fan_col: Annotated[str, typer.Option(help="Column holding the fan / customer id.")] = (
        "customer_id"
    ),
    time_col: Annotated[str, typer.Option(help="Column holding the purchase time.")] = "date",
    amount_col: Annotated[str, typer.Option(help="Column holding the amount.")] = "dollar_value",
    sep: Annotated[
        str | None, typer.Option(help=r"Field separator; default ',' ('\s+' for whitespace).")
    ] = None,
    time_format: Annotated[
        str | None, typer.Option(help="strftime format of the time column, e.g. %Y%m%d.")
    ] = None,
    room_id: Annotated[str, typer.Option(help="Room id to file the purchases under.")] = "store",
    dayfirst: DayfirstOption = None,
    encoding: EncodingOption = None,
    strict: StrictOption = False,
) -> None:
    """Import a purchase-only transaction log as fan_events (order events)."""
    from features.importers.transactions import import_transactions as run_import
    from features.io import write_parquet

    result = run_import(
        file,
        fan_col=fan_col,
        time_col=time_col,
        amount_col=amount_col,
        sep=sep,
        time_format=time_format,
        room_id=room_id,
        tz=get_settings().timezone,
        dayfirst=dayfirst,
        encoding=encoding,
        strict=strict,
    )
    write_parquet(result.table, out / "fan_events.parquet")
    console.print(_summary_table(f"fan_events written to {out}", result.summary))
    _print_warnings("fan_events", result.warnings, file)


@import_app.command("table")
@_friendly_errors
def import_table(
    file: Annotated[Path, typer.Argument(help="CSV / Parquet / Excel export.")],
    table: Annotated[str, typer.Option(help="sessions, session_products or fan_events.")],
    out: Annotated[Path, typer.Option(help="Output dataset folder.")],
    mapping: Annotated[Path | None, typer.Option(help="YAML column mapping (see README).")] = None,
    on_duplicate: Annotated[
        Literal["error", "keep-first"],
        typer.Option(
            help="Rows repeating an earlier row's key (session_id; session_id + sku_id): "
            "'error' lists them, 'keep-first' keeps the first row per key and counts the rest."
        ),
    ] = "error",
    time_format: Annotated[
        str | None,
        typer.Option(help="strftime format of the time column (replaces the mapping's)."),
    ] = None,
    dayfirst: DayfirstOption = None,
    encoding: EncodingOption = None,
    strict: StrictOption = False,
) -> None:
    """Import any export for one contract table, renaming columns with a YAML mapping.

    Blank rows are skipped and rows repeated verbatim are kept once (both counted).
    """
    from features.importers.generic import import_table as run_import
    from features.io import TABLE_FILES, write_parquet

    result = run_import(
        file,
        table=table,
        mapping=mapping,
        tz=get_settings().timezone,
        on_duplicate=on_duplicate,
        time_format=time_format,
        dayfirst=dayfirst,
        encoding=encoding,
        strict=strict,
    )
    write_parquet(result.table, out / TABLE_FILES[table])
    console.print(_summary_table(f"{table} written to {out}", result.summary))
    _print_warnings(table, result.warnings, file)


@import_app.command("ns-homeshopping")
@_friendly_errors
def import_ns_homeshopping(
    file: Annotated[Path, typer.Argument(help="NS Home Shopping 2019 performance CSV.")],
    out: Annotated[Path, typer.Option(help="Output dataset folder.")],
    rating: Annotated[
        Path | None, typer.Option(help="Minute-level rating CSV (default: beside FILE).")
    ] = None,
    encoding: EncodingOption = None,
    strict: StrictOption = False,
) -> None:
    """Import NS Home Shopping broadcast slots as sessions (a show = consecutive slots)."""
    from features.importers.ns_homeshopping import import_ns_homeshopping as run_import
    from features.io import write_dataset

    result = run_import(file, rating=rating, encoding=encoding, strict=strict)
    write_dataset(result.dataset, out)
    console.print(_summary_table(f"dataset written to {out}", result.summary))
    for table, warnings in result.warnings.items():
        _print_warnings(table, warnings, file)


@app.command()
@_friendly_errors
def ingest(
    source: Annotated[
        Path,
        typer.Argument(
            help="A sessions file (CSV / Parquet / Excel, contract columns) or a folder holding "
            "sessions.<ext> and optionally session_products.<ext>."
        ),
    ],
    products: Annotated[
        Path | None,
        typer.Option(help="Product rows of those sessions (when SOURCE is a file)."),
    ] = None,
    replace: Annotated[
        bool,
        typer.Option(help="Overwrite sessions already stored with other values (else an error)."),
    ] = False,
    history_dir: Annotated[
        Path | None, typer.Option(help="History store folder (default: the settings').")
    ] = None,
    dayfirst: DayfirstOption = None,
    encoding: EncodingOption = None,
    strict: StrictOption = False,
) -> None:
    """Add finished sessions (with outcomes) to the history the service forecasts from.

    All or nothing: a failing row rejects the whole file (exit 2, every failing row listed).
    Sessions already stored with the same content are unchanged; a running service picks up
    the new version within seconds, without a restart.
    """
    from features.contract import ContractError
    from features.history_store import BatchRejected, find_table_files
    from features.history_store import ingest as run_ingest
    from features.importers.generic import import_table as read_table_file

    s = get_settings()
    store = history_dir or s.history_dir
    sessions_file, products_file = (
        find_table_files(source) if source.is_dir() else (source, products)
    )
    if source.is_dir() and products is not None:
        raise ValueError("give --products only with a sessions file, not a folder")

    def read(file: Path, table: str) -> Any:
        return read_table_file(
            file,
            table=table,
            mapping=None,
            tz=s.timezone,
            dayfirst=dayfirst,
            encoding=encoding,
            strict=strict,
        ).table

    try:
        sessions = read(sessions_file, "sessions")
        rows = read(products_file, "session_products") if products_file else None
        result = run_ingest(
            store, sessions, rows, tz=s.timezone, replace=replace, source=str(sessions_file)
        )
    except ContractError as err:
        _print_contract_error(err)
        err_console.print(f"rejected: {len(err.failures)} failing row(s); nothing was added")
        raise typer.Exit(2) from None
    except BatchRejected as err:
        for table_error in err.errors:
            _print_contract_error(table_error)
        err_console.print(f"rejected: {err.n_failures} failing row(s); nothing was added")
        raise typer.Exit(2) from None
    from serving.monitor import ForecastLog

    ForecastLog(s.forecast_log).log_actuals(sessions)  # the watch pairs them with forecasts
    console.print(_summary_table(f"history store {store}", result.summary()))
    _print_warnings("sessions", result.warnings, sessions_file)


def _print_metrics(metrics: dict[str, Any]) -> None:
    from training.report import metrics_table

    df = metrics_table(metrics)
    table = Table(title="backtest (lower is better; coverage should be near 0.80)")
    for col in df.columns:
        table.add_column(str(col))
    for row in df.itertuples(index=False):
        table.add_row(*[_cell(v) for v in row])
    console.print(table)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _print_bars(metrics: dict[str, Any], oracle: bool) -> None:
    from training.backtest import bars

    table = Table("quality bar", "value", "holds", title="quality bars")
    for b in bars(metrics, oracle=oracle):
        table.add_row(b["bar"], "-" if b["value"] is None else f"{b['value']:.3f}", str(b["holds"]))
    console.print(table)


def _print_breakdowns(preds: Any, top: int = 10) -> None:
    from training.report import BREAKDOWN_TITLES, breakdown_view, error_breakdown

    targets = [t for t in ("viewers", "gmv") if t in preds]
    for by in ("host", "duration_band"):
        df = error_breakdown(preds, targets, by)
        if len(df) == 0:  # no planned_duration_min column
            continue
        for t in targets:
            sub = df[df["target"] == t]
            more = f" (top {top} of {len(sub)})" if len(sub) > top else ""
            base = f"best baseline ({sub['best_baseline'].iloc[0]}) WAPE"
            cols = ("group", "n", "model WAPE", base, "share of error", "bias")
            table = Table(*cols, title=f"{BREAKDOWN_TITLES[by].lower()}: {t}{more}")
            for row in breakdown_view(df, t, top=top).itertuples(index=False):
                table.add_row(str(row[0]), *[_cell(v) for v in row[1:]])
            console.print(table)


def _print_lead(preds: Any) -> None:
    """WAPE / bias / coverage by lead time, history refreshed and frozen at the cut."""
    from training.report import error_by_lead

    targets = [t for t in ("viewers", "gmv") if t in preds]
    df = error_by_lead(preds, targets)
    if len(df) == 0:
        return
    table = Table("target", "lead days", "n", "history", "WAPE", "bias", "P10-P90 coverage",
                  title="error by lead time (frozen: history as at the cut)")  # fmt: skip
    for row in df.itertuples(index=False):
        table.add_row(*[str(v) for v in row[:4]], *[_cell(v) for v in row[4:]])
    console.print(table)


def _print_served(result: Any) -> None:
    """The model choice and what serves each target."""
    sel = result.selection
    table = Table("target", "chosen model", "served by", "served WAPE", "best baseline",
                  title="model choice and served forecast")  # fmt: skip
    for t, v in result.served.items():
        chosen = sel.chosen.get(t, "-") if sel is not None else "-"
        flag = " (loses)" if v["loses_to_baseline"] else ""
        table.add_row(t, chosen, v["source"], _cell(v["wape"]) + flag,
                      f"{v['best_baseline']} {_cell(v['best_baseline_wape'])}")  # fmt: skip
    console.print(table)


WaitOption = Annotated[
    bool,
    typer.Option(
        "--wait",
        help="When another training holds the training lock, wait for it to finish"
        " (default: fail at once with exit code 2).",
    ),
]


@contextlib.contextmanager
def training_lock(wait: bool = False) -> Iterator[Path]:
    """Hold the training lock of the models folder for a command (``training.lock``): one
    training at a time, as each uses every available core."""
    from livecast.config import available_cores
    from training.lock import describe
    from training.lock import training_lock as hold

    def waiting(holder: Any) -> None:
        typer.echo(f"waiting for the training lock, held by {describe(holder)}", err=True)

    with hold(get_settings().models_dir, wait=wait, on_wait=waiting) as path:
        threads = available_cores()
        console.print(
            f"LightGBM threads: {threads} (LIVECAST_THREADS overrides); training lock: {path}",
            style="dim",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        yield path


def _load_params(params: Path | None, seed: int) -> Any:
    from training.tune import load_params

    return load_params(params, seed=seed)


@app.command()
@_friendly_errors
def backtest(
    data: Annotated[Path, typer.Option(help="Dataset folder.")] = Path("data/sim"),
    out: Annotated[Path, typer.Option(help="Report folder.")] = Path("reports/backtest"),
    folds: Annotated[int, typer.Option(min=1, help="Rolling-origin folds.")] = 3,
    horizon_days: Annotated[int, typer.Option(min=1, help="Days predicted per fold.")] = 30,
    cut: Annotated[
        str | None, typer.Option(help="Single split: train before DATE, test from DATE on.")
    ] = None,
    params: Annotated[Path | None, typer.Option(help="Parameters JSON (from tune).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Rolling-origin backtest of the forecaster against baselines; writes metrics.json."""
    from features.io import load_dataset
    from training.backtest import run_backtest
    from training.data import copies_for, training_frame
    from training.report import write_report

    ds = load_dataset(data, fan_events=False, tz=get_settings().timezone)
    frame = training_frame(ds.sessions, ds.session_products)
    loaded = _load_params(params, seed)
    result = run_backtest(
        frame,
        truth=ds.truth,
        params=loaded,
        folds=folds,
        horizon_days=horizon_days,
        cut=cut,
        sessions=ds.sessions,
        products=ds.session_products,
        copies=copies_for(loaded, ds.sessions, ds.session_products),
    )
    paths = write_report(result, out)
    _print_metrics(result.metrics)
    _print_bars(result.metrics, oracle=ds.truth is not None)
    _print_breakdowns(result.predictions)
    _print_lead(result.predictions)
    _print_served(result)
    console.print(
        f"report: {paths['report']}  metrics: {paths['metrics']}  breakdown: {paths['breakdown']}"
    )


@app.command()
@_friendly_errors
def train(
    data: Annotated[Path, typer.Option(help="Dataset folder.")] = Path("data/sim"),
    params: Annotated[Path | None, typer.Option(help="Parameters JSON (from tune).")] = None,
    folds: Annotated[int, typer.Option(min=1, help="Backtest folds logged with the run.")] = 3,
    horizon_days: Annotated[int, typer.Option(min=1, help="Days per backtest fold.")] = 30,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    wait: WaitOption = False,
) -> None:
    """Train viewers / orders / GMV models, register them in MLflow, export a bundle."""
    s = get_settings()
    with training_lock(wait):  # before the heavy imports: a busy machine fails at once
        from features.io import load_dataset
        from training.train import train as run_train

        ds = load_dataset(data, fan_events=False, tz=s.timezone)
        result = run_train(
            ds,
            params=_load_params(params, seed),
            models_dir=s.models_dir,
            report_dir=s.reports_dir / "train",
            mlflow_uri=s.mlflow_uri,
            folds=folds,
            horizon_days=horizon_days,
        )
    _print_metrics(result.backtest.metrics)
    console.print(
        f"train id {result.train_id}: bundle {result.bundle_dir}, registered versions "
        + ", ".join(f"{t} v{v}" for t, v in result.versions.items())
    )


@app.command()
@_friendly_errors
def promote(
    train_id: Annotated[
        str | None, typer.Option(help="Candidate train id (default: latest registered).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Dataset to re-backtest both on if their folds differ.")
    ] = None,
) -> None:
    """Move @champion to the candidate only if it beats the champion on the same folds."""
    from training.promote import promote as run_promote

    s = get_settings()
    reevaluate = None
    if data is not None:
        from features.io import load_dataset
        from training.data import training_frame
        from training.retrain import rescorer

        ds = load_dataset(data, fan_events=False, tz=s.timezone)
        tables = (ds.sessions, ds.session_products)
        reevaluate = rescorer(training_frame(*tables), tables=tables)

    decision = run_promote(
        uri=s.mlflow_uri, models_dir=s.models_dir, train_id=train_id, reevaluate=reevaluate
    )
    verdict = "[green]promoted[/]" if decision.promoted else "[yellow]not promoted[/]"
    console.print(f"{verdict} {decision.candidate.train_id}: {decision.reason}")


@app.command()
@_friendly_errors
def retrain(
    data: Annotated[Path, typer.Option(help="Dataset folder.")] = Path("data/sim"),
    params: Annotated[Path | None, typer.Option(help="Parameters JSON (from tune).")] = None,
    folds: Annotated[int, typer.Option(min=1, help="Backtest folds.")] = 3,
    horizon_days: Annotated[int, typer.Option(min=1, help="Days per backtest fold.")] = 30,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    wait: WaitOption = False,
) -> None:
    """Backtest, train and promote in one step: the candidate replaces the champion only if it
    scores better on the same folds (or the same, fitted on newer sessions)."""
    s = get_settings()
    with training_lock(wait):
        from features.io import load_dataset
        from training.retrain import retrain as run_retrain

        ds = load_dataset(data, fan_events=False, tz=s.timezone)
        result = run_retrain(
            ds,
            params=_load_params(params, seed),
            models_dir=s.models_dir,
            report_dir=s.reports_dir / "train",
            mlflow_uri=s.mlflow_uri,
            folds=folds,
            horizon_days=horizon_days,
        )
    _print_metrics(result.train.backtest.metrics)
    d = result.decision
    verdict = "[green]promoted[/]" if d.promoted else "[yellow]not promoted[/]"
    console.print(f"{verdict} {d.candidate.train_id}: {d.reason}")
    console.print(
        f"champion data until {result.champion_trained_until or '-'}; candidate bundle "
        f"{result.train.bundle_dir.name}"
    )


@app.command()
@_friendly_errors
def tune(
    data: Annotated[Path, typer.Option(help="Dataset folder.")] = Path("data/sim"),
    trials: Annotated[int, typer.Option(min=1, help="Optuna trials.")] = 20,
    out: Annotated[Path, typer.Option(help="Where to write the best parameters.")] = Path(
        "models/best_params.json"
    ),
    folds: Annotated[int, typer.Option(min=1, help="Backtest folds per trial.")] = 3,
    horizon_days: Annotated[int, typer.Option(min=1, help="Days per fold.")] = 30,
    seed: Annotated[int, typer.Option(help="Sampler seed.")] = 0,
    wait: WaitOption = False,
) -> None:
    """Tune LightGBM settings with Optuna (nested MLflow runs); best params feed train."""
    s = get_settings()
    with training_lock(wait):  # before the heavy imports: a busy machine fails at once
        from features.io import load_dataset
        from training.data import training_frame
        from training.tune import save_params
        from training.tune import tune as run_tune

        ds = load_dataset(data, fan_events=False, tz=s.timezone)
        frame = training_frame(ds.sessions, ds.session_products)
        result = run_tune(
            frame,
            n_trials=trials,
            seed=seed,
            folds=folds,
            horizon_days=horizon_days,
            mlflow_uri=s.mlflow_uri,
        )
        save_params(result.best_params, out)
    console.print(
        f"best mean WAPE {result.best_value:.4f} after {result.n_trials} trials "
        f"({result.n_pruned} pruned); parameters written to {out}"
    )


@app.command()
@_friendly_errors
def forecast(
    plan: Annotated[
        Path | None, typer.Argument(help="Plan JSON file (a SessionPlan or a list of them).")
    ] = None,
    bundle: Annotated[
        Path | None, typer.Option(help="Bundle folder (default: the champion in models/).")
    ] = None,
) -> None:
    """Forecast draft plans (default: an example plan) with intervals and drivers, from the
    bundle's history plus the sessions ingested since (``livecast ingest``)."""
    import dataclasses
    import json

    from pydantic import TypeAdapter

    from features.history_store import history_as_of, load_store, merge_history
    from features.plan import SessionPlan, example_plan
    from training.bundle import BundleError, load_bundle
    from training.predict import score_plans

    s = get_settings()
    if plan is None:
        plans = [example_plan()]
    else:
        raw = json.loads(Path(plan).read_text())
        plans = TypeAdapter(list[SessionPlan]).validate_python(
            raw if isinstance(raw, list) else [raw]
        )
    try:  # verified before LightGBM reads a booster (a damaged one would abort the process)
        loaded = load_bundle(bundle or s.models_dir)
    except BundleError as err:  # one plain line: rich would wrap a long path at 80 columns
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    store = load_store(s.history_dir, tz=s.timezone)  # sessions ingested since training
    sessions, products = merge_history(
        loaded.history_sessions, loaded.history_products, store.sessions, store.products
    )
    loaded = dataclasses.replace(loaded, history_sessions=sessions, history_products=products)
    for item in score_plans(loaded, plans):
        _print_forecast(item)
    fresh = f" + history store version {store.version}" if store.version else ""
    as_of = history_as_of(sessions, s.timezone) or "-"
    typer.echo(f"history as of {as_of} (the bundle's history{fresh})")  # one line, unwrapped


def _print_forecast(item: dict[str, Any]) -> None:
    table = Table(
        "target",
        "P10",
        "P50",
        "P90",
        title=f"forecast {item['session_id']}"
        f" (room {item['room_id']}{', cold start' if item['cold_start'] else ''})",
    )
    for target in ("viewers", "orders", "gmv"):
        if target in item:
            q = item[target]
            table.add_row(target, f"{q['p10']:,.0f}", f"{q['p50']:,.0f}", f"{q['p90']:,.0f}")
    console.print(table)
    if "explanation" in item:
        exp = item["explanation"]
        fam = ", ".join(f"{k} x{math.exp(v):.2f}" for k, v in exp["families"].items())
        console.print(f"GMV by feature family: {fam}")
        for d in exp["drivers"]:
            console.print(
                f"  {d['feature']} = {d['value']}: x{d['multiplier']:.2f} ({d['family']})"
            )


@app.command()
@_friendly_errors
def pipeline(
    data: Annotated[Path, typer.Option(help="Working folder for the simulated data.")] = Path(
        "data/sim"
    ),
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    train_models: Annotated[
        bool, typer.Option("--train/--no-train", help="Also backtest, train, promote, forecast.")
    ] = True,
    wait: WaitOption = False,
) -> None:
    """The main job: simulate, build features, backtest, train, promote, forecast a plan."""
    # with --train, the training lock is taken first: a busy machine fails at once, not after
    # the simulation
    with training_lock(wait) if train_models else contextlib.nullcontext():
        _pipeline(data, seed, train_models)


def _pipeline(data: Path, seed: int, train_models: bool) -> None:
    """The body of ``pipeline`` (the caller holds the training lock when training)."""
    from features.io import write_dataset, write_parquet
    from features.sessions import feature_families
    from features.simulate import simulate as run_simulation
    from features.simulate import summarize
    from training.data import features_part, training_frame

    ds = run_simulation(seed=seed)
    write_dataset(ds, data)
    console.print(_summary_table(f"simulated data in {data}", summarize(ds)))
    frame = training_frame(ds.sessions, ds.session_products)
    write_parquet(features_part(frame), data / "session_features.parquet")
    fams = feature_families(frame.columns)
    console.print(
        _summary_table(
            "session features",
            {"rows": len(frame), "columns": frame.shape[1]}
            | {f"family {k}": len(v) for k, v in fams.items()},
        )
    )
    if not train_models:
        return
    from features.plan import example_plan
    from training.bundle import load_bundle
    from training.predict import score_plans
    from training.promote import promote as run_promote
    from training.train import train as run_train

    s = get_settings()
    result = run_train(
        ds,
        params=_load_params(None, seed),
        models_dir=s.models_dir,
        report_dir=s.reports_dir / "train",
        mlflow_uri=s.mlflow_uri,
        frame=frame,
    )
    _print_metrics(result.backtest.metrics)
    _print_bars(result.backtest.metrics, oracle=ds.truth is not None)
    console.print(f"backtest report: {s.reports_dir / 'train' / 'report.md'}")
    decision = run_promote(uri=s.mlflow_uri, models_dir=s.models_dir, train_id=result.train_id)
    verdict = "promoted" if decision.promoted else "not promoted"
    console.print(f"{result.train_id} {verdict}: {decision.reason}")
    plan = example_plan().model_copy(update={"room_id": str(ds.sessions["room_id"].iloc[0])})
    bundle = load_bundle(result.bundle_dir)
    for item in score_plans(bundle, [plan]):
        _print_forecast(item)
    if ds.fan_events is not None and not ds.fan_events.empty:
        from livecast.cli_segments import tier_step

        tier_step(ds.fan_events, data, seed=seed)


from livecast.cli_segment import segment as _segment  # noqa: E402

app.command("segment")(_friendly_errors(_segment))

from livecast.cli_serve import serve as _serve  # noqa: E402

app.command("serve")(_serve)

from livecast.cli_monitor import monitor as _monitor  # noqa: E402

app.command("monitor")(_friendly_errors(_monitor))


def main() -> None:  # pragma: no cover - console entry
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
