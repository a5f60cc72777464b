"""Backtest, baselines, metrics, report, training and the promotion gate of the fan-tier model.

Cutoffs. Every cutoff is a local midnight. The latest evaluation cutoff is the last one whose
label window ``[C, C + window_days)`` is fully observed (it ends at the midnight before the last
event); ``eval_cutoffs`` evaluation cutoffs go back from it ``window_days`` apart (their label
windows do not overlap). The backtest walks forward: the model scored at an evaluation cutoff is
trained on up to ``train_cutoffs`` earlier cutoffs, ``step_days`` apart, whose label windows end
on or before that cutoff (no label it learns from reaches past the cutoff it is scored at) and
which leave at least ``min_history_days`` of history before them: what a retrain at every cutoff
would have had in production. Its decision rule is chosen on its own training cutoffs.

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
* ``btyd``: the Pareto/NBD fitted by maximum likelihood on the orders before each
  evaluation cutoff (:func:`btyd_rules`); dormancy score minus the expected number of orders
  in the window.

Metrics, pooled over the evaluation cutoffs and per cutoff (``by_cutoff`` in ``metrics.json``):
macro-F1 over the four tiers, multiclass log loss and the expected calibration error per tier
(model only: the baselines give no probabilities), the AUC of the dormancy score for "dormant in
the next window", the recall of each tier and the number of rows.

Bars, at every evaluation cutoff (:func:`cutoff_bars`): the model's macro-F1 at least
persistence's + 0.02, and its dormancy AUC at least the Pareto/NBD's + 0.005.
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
from features.fans import TIERS, TierRules, assign_tiers, connect, current_tiers
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

METHODS: tuple[str, ...] = ("model", "persistence", "rfm_rules", "btyd")
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
    """Training cutoffs of the first evaluation cutoff (label windows end by it)."""
    evaluation: list[pd.Timestamp]
    final: list[pd.Timestamp]
    """Cutoffs the final model is fitted on: the latest ones with a complete label window."""
    walk: dict[pd.Timestamp, list[pd.Timestamp]] = field(default_factory=dict)
    """Per evaluation cutoff, the training cutoffs of the model scored there: the latest ones
    whose label windows end by that cutoff (walk-forward: what a monthly retrain would have)."""

    def train_for(self, cutoff: pd.Timestamp) -> list[pd.Timestamp]:
        return self.walk.get(pd.Timestamp(cutoff), self.train)

    @property
    def all_cutoffs(self) -> list[pd.Timestamp]:
        """Every cutoff the backtest and the final fit read features at, sorted."""
        walked = [c for cs in self.walk.values() for c in cs]
        return sorted({*self.train, *walked, *self.evaluation, *self.final})


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

    def before(top: pd.Timestamp) -> list[pd.Timestamp]:
        cuts = [top - pd.Timedelta(days=step_days * i) for i in range(train_cutoffs)]
        return [c for c in cuts if c >= earliest][::-1]

    walk = {e: before(e - pd.Timedelta(days=w)) for e in evaluation}
    train = walk[evaluation[0]]
    final = before(latest)
    if not train or evaluation[0] < earliest:
        need = min_hist + w * (eval_cutoffs + 1)
        raise ValueError(
            f"fan events span {first:%Y-%m-%d} to {last:%Y-%m-%d}: too short for"
            f" {eval_cutoffs} evaluation cutoff(s) of {w}-day windows plus a training cutoff"
            f" (need about {need} days; use fewer --cutoffs or a shorter --window-days)"
        )
    return CutoffPlan(train, evaluation, final, walk)


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


def btyd_rules(feats: pd.DataFrame, rules: TierRules) -> tuple[np.ndarray, np.ndarray]:
    """The buy-till-you-die baseline: (tier codes, dormancy score) for fan-feature rows that
    carry :data:`~features.btyd.BTYD_COLUMNS` fitted at their own cutoff.

    The Pareto/NBD fitted on the purchases before the cutoff gives each buyer's expected
    number of orders in the window, ``E``. Dormancy score: ``-E`` (fans who never ordered
    expect 0). Tiers: the rules applied to the expected window of a buyer, ``round(E)`` orders
    spending that many times the fan's mean order value, with no watching or interaction.
    """
    expected = feats["fan__pnbd_expected_orders"].to_numpy(dtype="float64", na_value=0.0)
    expected = np.nan_to_num(expected, nan=0.0)
    orders = np.round(expected)
    value = feats["fan__mean_order_value"].to_numpy(dtype="float64", na_value=0.0)
    window = pd.DataFrame(
        {
            "orders": orders,
            "spend": orders * np.nan_to_num(value, nan=0.0),
            "watch_sessions": 0.0,
            "active_days": 0.0,
            "interactions": 0.0,
        }
    )
    codes = assign_tiers(window, rules).cat.codes.to_numpy().astype("int8")
    return codes, -expected


# ----------------------------------------------------------------------------------------------
# Metrics


ECE_BINS = 10


def reliability(proba: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> dict[str, list]:
    """Per tier, one-vs-rest over ``bins`` equal-width bins of the tier's probability: the mean
    probability, the observed share and the number of rows of every non-empty bin."""
    out: dict[str, list] = {}
    for k, tier in enumerate(TIERS):
        p = proba[:, k]
        idx = np.minimum((p * bins).astype(int), bins - 1)
        n = np.bincount(idx, minlength=bins)
        mean_p = np.bincount(idx, weights=p, minlength=bins)
        hits = np.bincount(idx, weights=(y == k).astype(float), minlength=bins)
        keep = n > 0
        out[tier] = [
            {"mean_p": float(mp / c), "observed": float(h / c), "n": int(c)}
            for mp, h, c in zip(mean_p[keep], hits[keep], n[keep], strict=True)
        ]
    return out


def expected_calibration_error(proba: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Per tier: the row-weighted mean gap between mean probability and observed share over the
    bins of :func:`reliability` (0 = calibrated)."""
    total = max(len(y), 1)
    return {
        tier: float(sum(b["n"] * abs(b["mean_p"] - b["observed"]) for b in bins) / total)
        for tier, bins in reliability(proba, y).items()
    }


def tier_metrics(y: np.ndarray, pred: np.ndarray, dormant_score: np.ndarray, proba=None) -> dict:
    """macro_f1, log_loss and ece per tier (None without probabilities), dormant_auc, recall per
    tier, n."""
    labels = list(range(len(TIERS)))
    is_dormant = y == TIERS.index("dormant")
    auc = None
    if 0 < is_dormant.sum() < len(y):
        auc = float(roc_auc_score(is_dormant, dormant_score))
    ll = None
    if proba is not None and len(y):
        ll = float(log_loss(y, np.clip(proba, 1e-15, 1), labels=labels))
    recall = recall_score(y, pred, labels=labels, average=None, zero_division=0)
    ece = None
    if proba is not None and len(y):
        ece = expected_calibration_error(np.asarray(proba), y)
    return {
        "macro_f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "log_loss": ll,
        "ece": ece,
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
    models: dict[pd.Timestamp, TierModel] = field(default_factory=dict, repr=False)
    """The model scored at each evaluation cutoff (``model`` is the latest one's)."""


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
    frame = tier_frame(events, plan.all_cutoffs, rules, tz=tz)
    ev = frame[frame["cutoff"].isin(plan.evaluation)].reset_index(drop=True)
    y = tier_codes(ev["tier"])
    # walk forward: each evaluation cutoff is scored by a model fitted on the cutoffs whose
    # labels were complete by then (a retrain at every cutoff, as in production)
    models: dict[pd.Timestamp, TierModel] = {}
    parts = []
    for c in plan.evaluation:
        cuts = plan.train_for(c)
        models[c] = fit_tier_model(
            None, cuts, rules, params, frame=frame[frame["cutoff"].isin(cuts)], tz=tz
        )
        parts.append(score_fans(models[c], ev[ev["cutoff"] == c]))
    model = models[plan.evaluation[-1]]
    scored = pd.concat(parts, ignore_index=True)
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
        preds["btyd"] = btyd_rules(ev, rules)
    metrics, rows, confusion = {}, [], {}
    cut = ev["cutoff"].to_numpy()
    for method, (pred, score) in preds.items():
        p = proba if method == "model" else None
        metrics[method] = tier_metrics(y, pred, score, p)
        confusion[method] = confusion_matrix(y, pred, labels=range(len(TIERS))).tolist()
        for c in plan.evaluation:
            mask = cut == np.datetime64(c)
            m = tier_metrics(y[mask], pred[mask], score[mask], None if p is None else p[mask])
            flat = {k: m[k] for k in m if k not in ("recall", "ece")}
            flat |= {f"ece_{t}": (m["ece"] or {}).get(t) for t in TIERS}
            rows.append({"cutoff": c, "method": method, **flat})
    predictions = pd.DataFrame(
        {"cutoff": ev["cutoff"], "fan_id": ev["fan_id"], "tier": ev["tier"]}
        | {f"{m}__tier": pd.Categorical.from_codes(v[0], list(TIERS)) for m, v in preds.items()}
        | {f"model__p_{t}": scored[f"p_{t}"] for t in TIERS}
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
        models,
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
                **{f"ece_{t}": (m.get("ece") or {}).get(t) for t in TIERS},
                "n": m["n"],
            }
        )
    return pd.DataFrame(rows)


def bars(metrics: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The model beats both baselines on macro-F1 and on dormancy AUC."""
    out = []
    for key in ("macro_f1", "dormant_auc"):
        for base in ("persistence", "rfm_rules", "btyd"):
            if base not in metrics:
                continue
            mv, bv = metrics["model"][key], metrics[base][key]
            holds = mv is not None and bv is not None and mv > bv
            bar = f"model {key} > {base}"
            out.append({"bar": bar, "model": mv, "baseline": bv, "holds": holds})
    return out


def by_cutoff(bt: TierBacktest) -> dict[str, dict[str, dict[str, Any]]]:
    """``{cutoff: {method: {macro_f1, log_loss, dormant_auc, n, ece_<tier>}}}`` (the per-cutoff
    rows; log loss and ECE are None for the baselines)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for row in bt.per_cutoff.to_dict("records"):
        vals = {k: v for k, v in row.items() if k not in ("cutoff", "method")}
        vals = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in vals.items()}
        out.setdefault(f"{pd.Timestamp(row['cutoff']):%Y-%m-%d}", {})[row["method"]] = vals
    return out


def _walk_frame(bt: TierBacktest) -> pd.DataFrame:
    rows = []
    for c in bt.plan.evaluation:
        m = bt.models.get(c, bt.model)
        rows.append(
            {
                "evaluated at": f"{c:%Y-%m-%d}",
                "trained on cutoffs": ", ".join(f"{t:%Y-%m-%d}" for t in bt.plan.train_for(c)),
                "class weights (core, active, potential, dormant)": ", ".join(
                    f"{x:.2f}" for x in m.class_weights
                ),
                "trees": m.metadata.get("num_trees"),
            }
        )
    return pd.DataFrame(rows)


F1_MARGIN = 0.02
"""Macro-F1 lead over persistence the model must hold at every evaluation cutoff."""
AUC_MARGIN = 0.005
"""Dormancy-AUC lead over the Pareto/NBD the model must hold at every evaluation cutoff."""


def cutoff_bars(bt: TierBacktest) -> list[dict[str, Any]]:
    """Per evaluation cutoff: model macro-F1 >= persistence + F1_MARGIN and model dormancy AUC
    >= btyd + AUC_MARGIN (rows only for the baselines that were run)."""
    out = []
    table = bt.per_cutoff.set_index(["cutoff", "method"])
    for c in bt.plan.evaluation:
        for base, key, margin in (
            ("persistence", "macro_f1", F1_MARGIN),
            ("btyd", "dormant_auc", AUC_MARGIN),
        ):
            if (c, base) not in table.index:
                continue
            mv, bv = table.loc[(c, "model"), key], table.loc[(c, base), key]
            holds = bool(pd.notna(mv) and pd.notna(bv) and mv >= bv + margin)
            out.append(
                {
                    "cutoff": f"{c:%Y-%m-%d}",
                    "bar": f"model {key} >= {base} + {margin}",
                    "model": mv,
                    "baseline": bv,
                    "holds": holds,
                }
            )
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
        colors = ["tab:blue", "tab:gray", "tab:orange", "tab:green"][: len(methods)]
        ax.bar(methods, vals, color=colors)
        ax.set_title(key.replace("_", " "))
        ax.set_ylim(0, 1)
        for i, v in enumerate(vals):
            ax.text(i, v + 0.02, f"{v:.3f}", ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")


def _plot_reliability(bt: TierBacktest, path: Path) -> None:
    from matplotlib.figure import Figure

    pred = bt.predictions
    proba = pred[[f"model__p_{t}" for t in TIERS]].to_numpy(dtype="float64")
    curves = reliability(proba, tier_codes(pred["tier"]))
    ece = expected_calibration_error(proba, tier_codes(pred["tier"]))
    fig = Figure(figsize=(12, 3.4))
    for ax, tier in zip(fig.subplots(1, len(TIERS)), TIERS, strict=True):
        bins = curves[tier]
        ax.plot([0, 1], [0, 1], color="tab:gray", lw=1, ls="--")
        ax.plot([b["mean_p"] for b in bins], [b["observed"] for b in bins], "o-")
        ax.set_title(f"{tier} (ECE {ece[tier]:.3f})")
        ax.set_xlabel("predicted probability")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    fig.axes[0].set_ylabel("observed share")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")


def write_tier_report(bt: TierBacktest, out_dir: str | Path, title: str | None = None) -> dict:
    """Write ``metrics.json``, ``report.md``, ``scores.png``, ``reliability.png`` and
    ``predictions.parquet``."""
    from features.io import atomic_path, write_parquet
    from training.report import markdown_table

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": out_dir / "metrics.json",
        "report": out_dir / "report.md",
        "plot": out_dir / "scores.png",
        "reliability": out_dir / "reliability.png",
        "predictions": out_dir / "predictions.parquet",
    }
    with atomic_path(paths["metrics"]) as tmp:
        tmp.write_text(json.dumps({**bt.metrics, "by_cutoff": by_cutoff(bt)}, indent=2))
    with atomic_path(paths["plot"]) as tmp:
        _plot(bt.metrics, tmp)
    with atomic_path(paths["reliability"]) as tmp:
        _plot_reliability(bt, tmp)
    write_parquet(bt.predictions, paths["predictions"])
    w = bt.rules.window_days
    per_cut = bt.per_cutoff.copy()
    per_cut["cutoff"] = per_cut["cutoff"].dt.strftime("%Y-%m-%d")
    bar_df = pd.DataFrame(bars(bt.metrics))
    lines = [
        f"# {title or 'livecast fan-tier backtest'}",
        "",
        f"Tiers of the next {w} days; rules: `{json.dumps(bt.rules.model_dump())}`.",
        "Walk-forward: each evaluation cutoff is scored by a model trained on the cutoffs whose"
        " label windows end by it; its decision rule is chosen on those training cutoffs only.",
        "",
        markdown_table(_walk_frame(bt)),
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
        "## Bars at every evaluation cutoff",
        "",
        markdown_table(pd.DataFrame(cutoff_bars(bt))) if cutoff_bars(bt) else "(no baselines)",
        "",
        "![macro-F1 and dormancy AUC](scores.png)",
        "",
        "## Calibration of the model's probabilities (pooled over the evaluation cutoffs)",
        "",
        "Per tier, one-vs-rest in ten equal-width probability bins; ECE is the row-weighted mean"
        " gap between predicted probability and observed share (0 = calibrated).",
        "",
        "![reliability](reliability.png)",
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
            if k in ("recall", "ece"):
                out |= {f"{method}_{k}_{t}": float(r) for t, r in (v or {}).items()}
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

        # the booster's inputs: fan features plus the columns derived from them (BTYD)
        head = fan_features(events, bt.plan.final[-1], tz=tz).head(5)
        example = pd.DataFrame(model.matrix(head), columns=model.features)
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
