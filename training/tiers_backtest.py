"""Backtest, baselines, metrics, report, training and the promotion gate of the fan-tier model.

Cutoffs. Every cutoff is a local midnight. The latest evaluation cutoff is the last one whose
label window ``[C, C + window_days)`` is fully observed (it ends at the midnight before the last
event); ``eval_cutoffs`` evaluation cutoffs go back from it ``window_days`` apart (their label
windows do not overlap). The model is trained on up to ``train_cutoffs`` earlier cutoffs,
``step_days`` apart, whose label windows end on or before the first evaluation cutoff (no label
the model learns from reaches into the evaluation period) and which leave at least
``min_history_days`` of history before them.

Methods compared on the same evaluation rows (every fan with an event before the cutoff):

* ``model``: the tier model (:mod:`training.tiers`), decided by ``argmax(proba * weights)``;
  dormancy score ``p_dormant``.
* ``persistence``: the fan's current tier (the same rules on the window before the cutoff,
  :func:`features.fans.current_tiers`); dormancy score the tier's rank (core 0, active 1,
  potential 2, dormant 3).
* ``rfm_rules``: a planner's spreadsheet RFM rule. Quintile scores 1-5 among the fans at the
  cutoff: R from days since the last event (recent = 5), F from the number of events, M from
  the order amount, all history before the cutoff. Then core = R, F and M all >= 4; active =
  R >= 4 and F >= 3; potential = R >= 3; dormant otherwise. Dormancy score: days since the last
  event.

Metrics, pooled over the evaluation cutoffs: macro-F1 over the four tiers, multiclass log loss
(model only: the baselines give no probabilities), the AUC of the dormancy score for "dormant in
the next window", the recall of each tier and the number of rows.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score, log_loss, recall_score, roc_auc_score

from features.contract import DEFAULT_TZ
from features.fans import TIERS, TierRules, connect, current_tiers
from training.promote import Gate
from training.tiers import (
    TIER_CHAMPION_FILE,
    TierModel,
    TierParams,
    fit_tier_model,
    save_tier_bundle,
    score_fans,
    tier_codes,
    tier_frame,
)

METHODS: tuple[str, ...] = ("model", "persistence", "rfm_rules")
TARGET = "tiers"
"""Registry target: the registered model is ``livecast-tiers``."""
TIER_GATE = Gate(
    targets=(TARGET,),
    gate_targets=(TARGET,),
    metric="model_macro_f1",
    label="macro-F1",
    higher_is_better=True,
    pointer=TIER_CHAMPION_FILE,
    train_command="livecast segments train",
)
"""Promotion gate of the tier model: higher macro-F1 on the same evaluation cutoffs wins.
Its champion pointer is ``models/tiers-champion.json``, beside the forecaster's."""


# ----------------------------------------------------------------------------------------------
# Cutoffs


@dataclass(frozen=True)
class CutoffPlan:
    train: list[pd.Timestamp]
    evaluation: list[pd.Timestamp]
    final: list[pd.Timestamp]
    """Cutoffs the final model is fitted on: the latest ones with a complete label window."""


def _event_span(events: pd.DataFrame, tz: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """First event and last non-refund event, in ``tz``.

    Refunds trail their orders by days after the last live session; counting them would put
    the end of the data after activity stopped, so the latest label window would end with
    empty days that make every fan look dormant.
    """
    if events.empty:
        raise ValueError("fan events are empty: nothing to tier")
    times = pd.to_datetime(events["event_time"])
    if times.dt.tz is None:
        times = times.dt.tz_localize(tz)
    times = times.dt.tz_convert(tz)
    active = times[events["event_type"].astype("str").to_numpy() != "refund"]
    return times.min(), (active if len(active) else times).max()


def data_end(events: pd.DataFrame, tz: str = DEFAULT_TZ) -> pd.Timestamp:
    """The local midnight (naive, in ``tz``) up to which the events are complete: the start of
    the day of the last non-refund event. Label windows end there; scoring "now" uses it."""
    return _event_span(events, tz)[1].tz_localize(None).normalize()


def plan_cutoffs(
    events: pd.DataFrame,
    rules: TierRules,
    *,
    eval_cutoffs: int = 2,
    train_cutoffs: int = 6,
    step_days: int = 30,
    min_history_days: int | None = None,
    tz: str = DEFAULT_TZ,
) -> CutoffPlan:
    """Evaluation, training and final cutoffs (see the module docstring). Naive local midnights.

    Raises ``ValueError`` saying how much history is needed when the events span too little.
    """
    w = rules.window_days
    min_hist = w if min_history_days is None else min_history_days
    first, last = _event_span(events, tz)
    last_end = data_end(events, tz)
    earliest = first.tz_localize(None).normalize() + pd.Timedelta(days=min_hist)
    latest = last_end - pd.Timedelta(days=w)
    evaluation = [latest - pd.Timedelta(days=w * i) for i in range(eval_cutoffs)][::-1]
    top = evaluation[0] - pd.Timedelta(days=w)
    train = [top - pd.Timedelta(days=step_days * i) for i in range(train_cutoffs)]
    train = [c for c in train if c >= earliest][::-1]
    final = [latest - pd.Timedelta(days=step_days * i) for i in range(train_cutoffs)]
    final = [c for c in final if c >= earliest][::-1]
    if not train or evaluation[0] < earliest:
        need = min_hist + w * (eval_cutoffs + 1)
        raise ValueError(
            f"fan events span {first:%Y-%m-%d} to {last:%Y-%m-%d}: too short for"
            f" {eval_cutoffs} evaluation cutoff(s) of {w}-day windows plus a training cutoff"
            f" (need about {need} days; use fewer --cutoffs or a shorter --window-days)"
        )
    return CutoffPlan(train, evaluation, final)


# ----------------------------------------------------------------------------------------------
# Baselines


def _quintile(values: pd.Series, higher_is_better: bool = True) -> np.ndarray:
    """Quintile score 1..5 (ties share a score); NaN counts as the worst value."""
    v = values.astype("float64")
    v = v.fillna(-np.inf if higher_is_better else np.inf)
    pct = v.rank(method="average", pct=True, ascending=higher_is_better).to_numpy()
    return np.clip(np.ceil(pct * 5), 1, 5).astype("int8")


def rfm_rules(feats: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The spreadsheet RFM baseline: (tier codes, dormancy score) for fan-feature rows."""
    r = _quintile(feats["fan__days_since_last_event"], higher_is_better=False)
    f = _quintile(feats["fan__events_all"])
    m = _quintile(feats["fan__order_amount_all"])
    core = (r >= 4) & (f >= 4) & (m >= 4)
    active = (r >= 4) & (f >= 3)
    potential = r >= 3
    codes = np.select([core, active, potential], [0, 1, 2], default=3).astype("int8")
    score = feats["fan__days_since_last_event"].to_numpy(dtype="float64", na_value=np.inf)
    return codes, score


# ----------------------------------------------------------------------------------------------
# Metrics


def tier_metrics(y: np.ndarray, pred: np.ndarray, dormant_score: np.ndarray, proba=None) -> dict:
    """macro_f1, log_loss (None without probabilities), dormant_auc, recall per tier, n."""
    labels = list(range(len(TIERS)))
    is_dormant = y == TIERS.index("dormant")
    auc = None
    if 0 < is_dormant.sum() < len(y):
        auc = float(roc_auc_score(is_dormant, dormant_score))
    ll = None
    if proba is not None and len(y):
        ll = float(log_loss(y, np.clip(proba, 1e-15, 1), labels=labels))
    recall = recall_score(y, pred, labels=labels, average=None, zero_division=0)
    return {
        "macro_f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "log_loss": ll,
        "dormant_auc": auc,
        "recall": {t: float(r) for t, r in zip(TIERS, recall, strict=True)},
        "n": len(y),
    }


# ----------------------------------------------------------------------------------------------
# Backtest


@dataclass
class TierBacktest:
    metrics: dict[str, dict[str, Any]]
    per_cutoff: pd.DataFrame
    confusion: dict[str, list[list[int]]]
    plan: CutoffPlan
    rules: TierRules
    params: TierParams
    model: TierModel
    signature: str
    predictions: pd.DataFrame = field(repr=False)
    frame: pd.DataFrame = field(repr=False)
    """The stacked features and labels of every planned cutoff (reused by the final fit)."""


def events_fingerprint(events: pd.DataFrame) -> str:
    """Hash of the events the metrics depend on (fan, time, type, amount), order-sensitive."""
    cols = [c for c in ("fan_id", "event_time", "event_type", "amount") if c in events.columns]
    hashed = pd.util.hash_pandas_object(events[cols], index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]


def eval_signature(fingerprint: str, plan: CutoffPlan, rules: TierRules) -> str:
    """Same signature = same evaluation rows and labels (data, cutoffs, rules)."""
    payload = json.dumps(
        [fingerprint, [str(c) for c in plan.evaluation], rules.model_dump()], sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def run_tier_backtest(
    events: pd.DataFrame,
    *,
    rules: TierRules | None = None,
    params: TierParams | None = None,
    eval_cutoffs: int = 2,
    train_cutoffs: int = 6,
    step_days: int = 30,
    tz: str = DEFAULT_TZ,
    baselines: bool = True,
    fingerprint: str | None = None,
) -> TierBacktest:
    """Fit on the training cutoffs, evaluate the model and the baselines on the later ones."""
    rules = rules or TierRules()
    params = params or TierParams()
    plan = plan_cutoffs(
        events,
        rules,
        eval_cutoffs=eval_cutoffs,
        train_cutoffs=train_cutoffs,
        step_days=step_days,
        tz=tz,
    )
    # one stacked frame for every cutoff the backtest and the final fit use (they often coincide)
    all_cutoffs = sorted({*plan.train, *plan.evaluation, *plan.final})
    frame = tier_frame(events, all_cutoffs, rules, tz=tz)
    model = fit_tier_model(
        None, plan.train, rules, params, frame=frame[frame["cutoff"].isin(plan.train)], tz=tz
    )
    ev = frame[frame["cutoff"].isin(plan.evaluation)].reset_index(drop=True)
    y = tier_codes(ev["tier"])
    scored = score_fans(model, ev)
    proba = scored[[f"p_{t}" for t in TIERS]].to_numpy()
    preds = {"model": (scored["tier"].cat.codes.to_numpy(), scored["p_dormant"].to_numpy())}
    if baselines:
        from livecast.config import available_cores

        con = connect(threads=available_cores())
        try:
            cur = pd.concat(
                [current_tiers(events, c, rules, con=con, tz=tz) for c in plan.evaluation],
                ignore_index=True,
            )
        finally:
            con.close()
        if not cur["fan_id"].equals(ev["fan_id"]):
            raise RuntimeError("current tiers and evaluation rows are not aligned")
        pcodes = tier_codes(cur["tier"])
        preds["persistence"] = (pcodes, pcodes.astype("float64"))
        rfm = [rfm_rules(ev[ev["cutoff"] == c]) for c in plan.evaluation]
        preds["rfm_rules"] = (
            np.concatenate([r[0] for r in rfm]),
            np.concatenate([r[1] for r in rfm]),
        )
    metrics, rows, confusion = {}, [], {}
    cut = ev["cutoff"].to_numpy()
    for method, (pred, score) in preds.items():
        p = proba if method == "model" else None
        metrics[method] = tier_metrics(y, pred, score, p)
        confusion[method] = confusion_matrix(y, pred, labels=range(len(TIERS))).tolist()
        for c in plan.evaluation:
            mask = cut == np.datetime64(c)
            m = tier_metrics(y[mask], pred[mask], score[mask], None if p is None else p[mask])
            rows.append({"cutoff": c, "method": method, **{k: m[k] for k in m if k != "recall"}})
    predictions = pd.DataFrame(
        {"cutoff": ev["cutoff"], "fan_id": ev["fan_id"], "tier": ev["tier"]}
        | {f"{m}__tier": pd.Categorical.from_codes(v[0], list(TIERS)) for m, v in preds.items()}
        | {"model__p_dormant": scored["p_dormant"]}
    )
    signature = eval_signature(fingerprint or events_fingerprint(events), plan, rules)
    return TierBacktest(
        metrics,
        pd.DataFrame(rows),
        confusion,
        plan,
        rules,
        params,
        model,
        signature,
        predictions,
        frame,
    )


# ----------------------------------------------------------------------------------------------
# Report


def metrics_frame(metrics: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per method: macro_f1, log_loss, dormant_auc, recall_<tier>, n."""
    rows = []
    for method in METHODS:
        m = metrics.get(method)
        if m is None:
            continue
        rows.append(
            {
                "method": method,
                "macro_f1": m["macro_f1"],
                "log_loss": m["log_loss"],
                "dormant_auc": m["dormant_auc"],
                **{f"recall_{t}": m["recall"][t] for t in TIERS},
                "n": m["n"],
            }
        )
    return pd.DataFrame(rows)


def bars(metrics: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The model beats both baselines on macro-F1 and on dormancy AUC."""
    out = []
    for key in ("macro_f1", "dormant_auc"):
        for base in ("persistence", "rfm_rules"):
            if base not in metrics:
                continue
            mv, bv = metrics["model"][key], metrics[base][key]
            holds = mv is not None and bv is not None and mv > bv
            bar = f"model {key} > {base}"
            out.append({"bar": bar, "model": mv, "baseline": bv, "holds": holds})
    return out


def _confusion_md(matrix: list[list[int]]) -> str:
    from training.report import markdown_table

    df = pd.DataFrame(matrix, columns=[f"pred {t}" for t in TIERS])
    df.insert(0, "actual", list(TIERS))
    return markdown_table(df)


def _plot(metrics: dict[str, dict[str, Any]], path: Path) -> None:
    from matplotlib.figure import Figure

    methods = [m for m in METHODS if m in metrics]
    fig = Figure(figsize=(9, 3.5))
    axes = fig.subplots(1, 2)
    for ax, key in zip(axes, ("macro_f1", "dormant_auc"), strict=True):
        vals = [metrics[m][key] or 0.0 for m in methods]
        ax.bar(methods, vals, color=["tab:blue", "tab:gray", "tab:orange"][: len(methods)])
        ax.set_title(key.replace("_", " "))
        ax.set_ylim(0, 1)
        for i, v in enumerate(vals):
            ax.text(i, v + 0.02, f"{v:.3f}", ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")


def write_tier_report(bt: TierBacktest, out_dir: str | Path, title: str | None = None) -> dict:
    """Write ``metrics.json``, ``report.md``, ``scores.png`` and ``predictions.parquet``."""
    from features.io import atomic_path, write_parquet
    from training.report import markdown_table

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": out_dir / "metrics.json",
        "report": out_dir / "report.md",
        "plot": out_dir / "scores.png",
        "predictions": out_dir / "predictions.parquet",
    }
    with atomic_path(paths["metrics"]) as tmp:
        tmp.write_text(json.dumps(bt.metrics, indent=2))
    with atomic_path(paths["plot"]) as tmp:
        _plot(bt.metrics, tmp)
    write_parquet(bt.predictions, paths["predictions"])
    w = bt.rules.window_days
    per_cut = bt.per_cutoff.copy()
    per_cut["cutoff"] = per_cut["cutoff"].dt.strftime("%Y-%m-%d")
    bar_df = pd.DataFrame(bars(bt.metrics))
    lines = [
        f"# {title or 'livecast fan-tier backtest'}",
        "",
        f"Tiers of the next {w} days; rules: `{json.dumps(bt.rules.model_dump())}`.",
        f"Trained on cutoffs {', '.join(f'{c:%Y-%m-%d}' for c in bt.plan.train)}"
        f" (label windows end by {bt.plan.evaluation[0]:%Y-%m-%d});"
        f" evaluated on {', '.join(f'{c:%Y-%m-%d}' for c in bt.plan.evaluation)}.",
        f"Class weights of the decision rule (core, active, potential, dormant):"
        f" {', '.join(f'{x:.2f}' for x in bt.model.class_weights)};"
        f" {bt.model.metadata['num_trees']} trees.",
        "",
        "## Metrics (pooled over the evaluation cutoffs; higher is better except log loss)",
        "",
        markdown_table(metrics_frame(bt.metrics)),
        "",
        "## Quality bars",
        "",
        markdown_table(bar_df) if not bar_df.empty else "(no baselines)",
        "",
        "## Per cutoff",
        "",
        markdown_table(per_cut),
        "",
        "![macro-F1 and dormancy AUC](scores.png)",
        "",
    ]
    for method in ("model", "persistence"):
        if method in bt.confusion:
            lines += [f"## Confusion matrix: {method}", "", _confusion_md(bt.confusion[method]), ""]
    with atomic_path(paths["report"]) as tmp:
        tmp.write_text("\n".join(lines))
    return paths


# ----------------------------------------------------------------------------------------------
# Train, register, export


@dataclass(frozen=True)
class TierTrainResult:
    train_id: str
    model: TierModel
    backtest: TierBacktest
    bundle_dir: Path
    version: str | None


def flat_tier_metrics(metrics: dict[str, dict[str, Any]]) -> dict[str, float]:
    """MLflow metric names: ``<method>_<metric>`` and ``<method>_recall_<tier>``."""
    out: dict[str, float] = {}
    for method, vals in metrics.items():
        for k, v in vals.items():
            if k == "recall":
                out |= {f"{method}_recall_{t}": float(r) for t, r in v.items()}
            elif v is not None and not (isinstance(v, float) and math.isnan(v)):
                out[f"{method}_{k}"] = float(v)
    return out


def run_params(bt: TierBacktest, step_days: int) -> dict[str, Any]:
    """Everything needed to rerun the configuration (logged as MLflow params)."""
    return {
        **bt.params.model_dump(),
        **{f"rule_{k}": v for k, v in bt.rules.model_dump().items()},
        "eval_cutoffs": len(bt.plan.evaluation),
        "train_cutoffs": len(bt.plan.train),
        "step_days": step_days,
    }


def params_from_run(params: dict[str, str]) -> tuple[TierParams, TierRules]:
    """Inverse of :func:`run_params` for the model settings and rules (MLflow params are text)."""
    known = {k: v for k, v in params.items() if k in TierParams.model_fields}
    rules = {k[5:]: v for k, v in params.items() if k.startswith("rule_")}
    return TierParams(**known), TierRules(**rules)


def train_tiers(
    events: pd.DataFrame,
    *,
    models_dir: Path,
    report_dir: Path,
    mlflow_uri: str | None,
    rules: TierRules | None = None,
    params: TierParams | None = None,
    eval_cutoffs: int = 2,
    train_cutoffs: int = 6,
    step_days: int = 30,
    tz: str = DEFAULT_TZ,
) -> TierTrainResult:
    """Backtest, fit the final model on the latest cutoffs, export a bundle, register it.

    With ``mlflow_uri=None`` nothing is logged (the bundle is still exported).
    """
    rules = rules or TierRules()
    params = params or TierParams()
    bt = run_tier_backtest(
        events,
        rules=rules,
        params=params,
        eval_cutoffs=eval_cutoffs,
        train_cutoffs=train_cutoffs,
        step_days=step_days,
        tz=tz,
    )
    logged = run_params(bt, step_days)
    payload = bt.signature + json.dumps(logged, sort_keys=True, default=str)
    train_id = hashlib.sha256(payload.encode()).hexdigest()[:10]
    write_tier_report(bt, report_dir, title=f"livecast fan-tier backtest ({train_id})")
    final = bt.frame[bt.frame["cutoff"].isin(bt.plan.final)]
    model = fit_tier_model(None, bt.plan.final, rules, params, frame=final, tz=tz)
    model.metadata.update(
        {"train_id": train_id, "eval_signature": bt.signature, "backtest": bt.metrics}
    )
    bundle_dir = save_tier_bundle(model, Path(models_dir) / f"tiers-{train_id}")
    version = None
    if mlflow_uri:
        from features.fans import fan_features
        from training.registry import log_model_run

        example = fan_features(events, bt.plan.final[-1], tz=tz).head(5)[model.features]
        gain = model.booster.feature_importance(importance_type="gain")
        importance = pd.DataFrame({"feature": model.features, "gain": gain}).sort_values(
            "gain", ascending=False, ignore_index=True
        )
        result = log_model_run(
            uri=mlflow_uri,
            target=TARGET,
            booster=model.booster,
            params=logged,
            metrics=flat_tier_metrics(bt.metrics),
            tags={
                "train_id": train_id,
                "fold_signature": bt.signature,
                "bundle": bundle_dir.name,
                "class_weights": json.dumps(list(model.class_weights)),
            },
            input_example=example,
            artifacts=[Path(report_dir)],
            importance=importance,
        )
        version = result.version
    return TierTrainResult(train_id, model, bt, bundle_dir, version)


def reevaluator(
    events: pd.DataFrame, tz: str = DEFAULT_TZ
) -> Callable[[dict[str, str]], dict[str, float]]:
    """For the gate: backtest a run's logged configuration on ``events`` -> {target: macro-F1}."""

    def reevaluate(logged: dict[str, str]) -> dict[str, float]:
        params, rules = params_from_run(logged)
        bt = run_tier_backtest(
            events,
            rules=rules,
            params=params,
            eval_cutoffs=int(logged.get("eval_cutoffs", 2)),
            train_cutoffs=int(logged.get("train_cutoffs", 6)),
            step_days=int(logged.get("step_days", 30)),
            tz=tz,
            baselines=False,
        )
        return {TARGET: bt.metrics["model"]["macro_f1"]}

    return reevaluate


def read_fan_events(path: str | Path, tz: str = DEFAULT_TZ) -> pd.DataFrame:
    """Validated fan events from a Parquet / CSV file, a dataset folder (``fan_events.parquet``)
    or a folder of Parquet / CSV files."""
    from features.contract import validate
    from features.io import TABLE_FILES, read_frame

    path = Path(path)
    if path.is_dir():
        named = path / TABLE_FILES["fan_events"]
        files = (
            [named]
            if named.exists()
            else sorted(p for p in path.iterdir() if p.suffix.lower() in {".parquet", ".csv"})
        )
        if not files:
            raise FileNotFoundError(f"{path}: no fan_events.parquet and no .parquet / .csv files")
        raw = pd.concat([read_frame(f) for f in files], ignore_index=True)
    else:
        raw = read_frame(path)
    return validate(raw, "fan_events", source=str(path), tz=tz)
