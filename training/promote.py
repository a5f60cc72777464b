"""``promote``: move the ``@champion`` alias to a candidate only when it beats the champion.

The gate compares the two on the same backtest folds (same data fingerprint and cut dates): the
candidate is promoted when its mean model WAPE over the gate targets is lower than the
champion's. When the champion was evaluated on other folds, both configurations are backtested
again on the current data. A candidate that does not win gets the ``@challenger`` alias.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.bundle import set_champion
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
class Candidate:
    train_id: str
    versions: dict[str, str]
    wape: dict[str, float]
    fold_signature: str
    bundle: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def score(self) -> float:
        return sum(self.wape[t] for t in GATE_TARGETS) / len(GATE_TARGETS)


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str
    candidate: Candidate
    champion: Candidate | None


def _describe(versions: dict[str, Any], uri: str) -> Candidate:
    wape: dict[str, float] = {}
    sig = bundle = train_id = ""
    params: dict[str, str] = {}
    for target, mv in versions.items():
        params, metrics, tags = run_data(mv.run_id, uri)
        wape[target] = float(metrics["model_wape"])
        sig, bundle, train_id = tags["fold_signature"], tags["bundle"], tags["train_id"]
    return Candidate(
        train_id, {t: str(mv.version) for t, mv in versions.items()}, wape, sig, bundle, params
    )


def candidate_versions(uri: str, train_id: str | None = None) -> dict[str, Any]:
    """The model versions of one training run (default: the latest registered one)."""
    import mlflow

    configure(uri)
    client = mlflow.MlflowClient()
    out = {}
    for target in (*GATE_TARGETS, "orders"):
        found = client.search_model_versions(f"name = '{model_name(target)}'")
        if train_id:
            found = [v for v in found if v.tags.get("train_id") == train_id]
        if not found:
            if target == "orders":
                continue
            raise ValueError(
                f"no registered version of {model_name(target)}"
                + (f" for train id {train_id}" if train_id else "")
                + ": run livecast train first"
            )
        out[target] = max(found, key=lambda v: int(v.version))
    return out


def decide(candidate: Candidate, champion: Candidate | None) -> tuple[bool, str]:
    """The gate itself (pure): promote only a strictly better candidate on the same folds."""
    if champion is None:
        return True, "no champion yet: the first candidate becomes champion"
    if champion.train_id == candidate.train_id:
        return False, "the candidate already is the champion"
    if candidate.fold_signature != champion.fold_signature:
        raise ValueError("candidate and champion were backtested on different folds")
    detail = ", ".join(
        f"{t} WAPE {candidate.wape[t]:.4f} vs {champion.wape[t]:.4f}" for t in GATE_TARGETS
    )
    if candidate.score < champion.score:
        return True, f"candidate beats the champion ({detail})"
    return False, f"candidate does not beat the champion ({detail}); it stays a challenger"


def promote(
    *,
    uri: str,
    models_dir: Path,
    train_id: str | None = None,
    reevaluate: Any = None,
) -> Decision:
    """Compare the candidate with the current champion and move the aliases.

    ``reevaluate(params: dict) -> dict[target, wape]`` is called for both when their folds
    differ (the CLI passes a function that backtests on the current data).
    """
    cand_versions = candidate_versions(uri, train_id)
    candidate = _describe(cand_versions, uri)
    champ_versions = {
        t: mv for t in cand_versions if (mv := alias_version(t, CHAMPION, uri)) is not None
    }
    champion = _describe(champ_versions, uri) if len(champ_versions) == len(cand_versions) else None
    if (
        champion is not None
        and champion.fold_signature != candidate.fold_signature
        and champion.train_id != candidate.train_id
    ):
        if reevaluate is None:
            raise ValueError(
                "the champion was evaluated on other folds; pass --data to backtest both again"
            )
        candidate = Candidate(**{**candidate.__dict__, "wape": reevaluate(candidate.params)})
        champion = Candidate(
            **{
                **champion.__dict__,
                "wape": reevaluate(champion.params),
                "fold_signature": candidate.fold_signature,
            }
        )
    promoted, reason = decide(candidate, champion)
    if promoted:
        for target, ver in candidate.versions.items():
            move_alias(target, CHAMPION, ver, uri)
        set_champion(
            models_dir,
            Path(models_dir) / candidate.bundle,
            {"train_id": candidate.train_id, "versions": candidate.versions},
        )
    elif champion is None or champion.train_id != candidate.train_id:
        for target, ver in candidate.versions.items():
            move_alias(target, CHALLENGER, ver, uri)
    return Decision(promoted, reason, candidate, champion)
