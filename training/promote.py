"""``promote``: move the ``@champion`` alias to a candidate only when it beats the champion.

The gate compares the two on the same backtest folds (same data fingerprint and cut dates): the
candidate is promoted when its mean model score over the gate targets is better than the
champion's (for the forecaster: lower WAPE over viewers and GMV). When the champion was
evaluated on other folds, both configurations are backtested again on the current data. A
candidate that does not win gets the ``@challenger`` alias. A :class:`Gate` describes one
model family (the forecaster by default; the fan-tier model passes its own).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.bundle import CHAMPION_FILE, set_champion
from training.registry import (
    CHALLENGER,
    CHAMPION,
    alias_version,
    configure,
    model_name,
    move_alias,
    run_data,
)

GATE_TARGETS: tuple[str, ...] = ("viewers", "gmv")


@dataclass(frozen=True)
class Gate:
    """One model family's gate: its registered targets, the run metric it compares, the
    direction, and its champion pointer file in ``models/``."""

    targets: tuple[str, ...]
    gate_targets: tuple[str, ...]
    metric: str = "model_wape"
    label: str = "WAPE"
    higher_is_better: bool = False
    optional: tuple[str, ...] = ()
    pointer: str = CHAMPION_FILE
    train_command: str = "livecast train"


FORECASTER_GATE = Gate(
    targets=(*GATE_TARGETS, "orders"), gate_targets=GATE_TARGETS, optional=("orders",)
)


@dataclass(frozen=True)
class Candidate:
    train_id: str
    versions: dict[str, str]
    scores: dict[str, float]
    """The gate metric of each target (WAPE for the forecaster)."""
    fold_signature: str
    bundle: str
    params: dict[str, str] = field(default_factory=dict)
    gate: Gate = FORECASTER_GATE
    baseline: dict[str, float] = field(default_factory=dict)
    """Per target, the best baseline's backtest WAPE (forecaster runs that log it)."""

    @property
    def score(self) -> float:
        targets = self.gate.gate_targets
        return sum(self.scores[t] for t in targets) / len(targets)


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str
    candidate: Candidate
    champion: Candidate | None


def _describe(versions: dict[str, Any], uri: str, gate: Gate = FORECASTER_GATE) -> Candidate:
    scores: dict[str, float] = {}
    sig = bundle = train_id = ""
    params: dict[str, str] = {}
    baseline: dict[str, float] = {}
    for target, mv in versions.items():
        params, metrics, tags = run_data(mv.run_id, uri)
        # what the bundle serves (the model, or a baseline standing in for it)
        served = "served_wape" if gate.metric == "model_wape" else gate.metric
        scores[target] = float(metrics.get(served, metrics[gate.metric]))
        if "best_baseline_wape" in metrics:
            baseline[target] = float(metrics["best_baseline_wape"])
        sig, bundle, train_id = tags["fold_signature"], tags["bundle"], tags["train_id"]
    return Candidate(
        train_id,
        {t: str(mv.version) for t, mv in versions.items()},
        scores,
        sig,
        bundle,
        params,
        gate,
        baseline,
    )


def candidate_versions(
    uri: str, train_id: str | None = None, gate: Gate = FORECASTER_GATE
) -> dict[str, Any]:
    """The model versions of one training run (default: the latest registered one)."""
    import mlflow

    configure(uri)
    client = mlflow.MlflowClient()
    out = {}
    for target in gate.targets:
        found = client.search_model_versions(f"name = '{model_name(target)}'")
        if train_id:
            found = [v for v in found if v.tags.get("train_id") == train_id]
        if not found:
            if target in gate.optional:
                continue
            raise ValueError(
                f"no registered version of {model_name(target)}"
                + (f" for train id {train_id}" if train_id else "")
                + f": run {gate.train_command} first"
            )
        out[target] = max(found, key=lambda v: int(v.version))
    return out


def decide(
    candidate: Candidate, champion: Candidate | None, *, refresh: bool = False
) -> tuple[bool, str]:
    """The gate itself (pure): promote only a strictly better candidate on the same folds.

    ``refresh``: the candidate was fitted on newer data than the champion (a retrain); then a
    tie is enough, since a configuration that scores the same on the same folds, refitted on
    fresher sessions, is the better model to serve. Without it, retraining the champion's own
    configuration on new data could never replace a model frozen at an older date."""
    losing = [
        f"{t} WAPE {candidate.scores[t]:.4f} vs baseline {candidate.baseline[t]:.4f}"
        for t in candidate.versions
        if t in candidate.baseline and candidate.scores[t] > candidate.baseline[t]
    ]
    if losing:
        return False, "candidate loses to a spreadsheet baseline (" + ", ".join(losing) + ")"
    if champion is None:
        return True, "no champion yet: the first candidate becomes champion"
    if champion.train_id == candidate.train_id:
        return False, "the candidate already is the champion"
    if candidate.fold_signature != champion.fold_signature:
        raise ValueError("candidate and champion were backtested on different folds")
    gate = candidate.gate
    detail = ", ".join(
        f"{t} {gate.label} {candidate.scores[t]:.4f} vs {champion.scores[t]:.4f}"
        for t in gate.gate_targets
    )
    better = (
        candidate.score > champion.score
        if gate.higher_is_better
        else candidate.score < champion.score
    )
    if better:
        return True, f"candidate beats the champion ({detail})"
    if refresh and candidate.score == champion.score:
        return True, f"candidate ties the champion on newer data ({detail}): refreshed"
    return False, f"candidate does not beat the champion ({detail}); it stays a challenger"


def promote(
    *,
    uri: str,
    models_dir: Path,
    train_id: str | None = None,
    reevaluate: Any = None,
    dry_run: bool = False,
    gate: Gate = FORECASTER_GATE,
    refresh: bool = False,
) -> Decision:
    """Compare the candidate with the current champion and move the aliases.

    ``reevaluate(params: dict) -> dict[target, score]`` is called for both when their folds
    differ (the CLI passes a function that backtests on the current data). With ``dry_run``
    the decision is returned and nothing moves (no alias, no ``champion.json``). ``refresh``:
    the candidate was fitted on newer data than the champion (see :func:`decide`).
    """
    cand_versions = candidate_versions(uri, train_id, gate)
    candidate = _describe(cand_versions, uri, gate)
    champ_versions = {
        t: mv for t in cand_versions if (mv := alias_version(t, CHAMPION, uri)) is not None
    }
    champion = (
        _describe(champ_versions, uri, gate) if len(champ_versions) == len(cand_versions) else None
    )
    if (
        champion is not None
        and champion.fold_signature != candidate.fold_signature
        and champion.train_id != candidate.train_id
    ):
        if reevaluate is None:
            raise ValueError(
                "the champion was evaluated on other folds; pass --data to backtest both again"
            )
        candidate = Candidate(**{**candidate.__dict__, "scores": reevaluate(candidate.params)})
        champion = Candidate(
            **{
                **champion.__dict__,
                "scores": reevaluate(champion.params),
                "fold_signature": candidate.fold_signature,
            }
        )
    promoted, reason = decide(candidate, champion, refresh=refresh)
    if dry_run:
        return Decision(promoted, reason, candidate, champion)
    if promoted:
        for target, ver in candidate.versions.items():
            move_alias(target, CHAMPION, ver, uri)
        set_champion(
            models_dir,
            Path(models_dir) / candidate.bundle,
            {"train_id": candidate.train_id, "versions": candidate.versions},
            gate.pointer,
        )
    elif champion is None or champion.train_id != candidate.train_id:
        for target, ver in candidate.versions.items():
            move_alias(target, CHALLENGER, ver, uri)
    return Decision(promoted, reason, candidate, champion)
