# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Fan tiers: train, evaluate and score a batch
#
# Tier every fan as **core**, **active**, **potential** or **dormant** for the next window
# (`TierRules`, 30 days by default), from the fan's events before a cutoff. The tier model is a
# LightGBM multiclass fitted on several past cutoffs; it is judged against two baselines a
# live-ops team already has (the fan's current tier, and RFM quintile rules) on later cutoffs it
# never saw. Then a batch of fans is scored with the same code as `livecast segment`: tier
# sizes, GMV share per tier and the transitions from the previous run.
#
# Everything here calls the project's functions: `features.fans` (the one SQL definition of the
# fan features and tier rules), `training.tiers` / `training.tiers_backtest` (model, backtest,
# registry) and `serving.batch` (the batch run).
#
# **Parameters** (next cell): `DATA_PATH = None` simulates `FANS` fans of `ROOMS` rooms over
# `DAYS` days; set it to a fan-events file or folder (e.g. written by `livecast import
# transactions`, such as `"../data/mine"`) to tier real fans. `MLFLOW_URI = None` keeps the runs
# in a SQLite store inside `OUTPUT_DIR`; the gate moves aliases only with `APPLY_PROMOTION`.

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from features.fans import TIERS, TierRules, current_tiers, fan_features
from features.io import write_parquet
from features.simulate import simulate
from livecast.config import get_settings
from livecast.notebook import gate_verdict, show
from serving.batch import read_scores, segment, segment_frame
from training.promote import promote
from training.tiers import TierParams
from training.tiers_backtest import (
    TIER_GATE,
    metrics_frame,
    plan_cutoffs,
    read_fan_events,
    train_tiers,
)

# %% tags=["parameters"]
DATA_PATH = None  # fan events: a file or folder (contract columns); None: simulate
ROOMS = 40  # simulated rooms (when DATA_PATH is None)
DAYS = 730  # simulated days (when DATA_PATH is None)
FANS = 100_000  # simulated fans (when DATA_PATH is None)
SEED = 0
WINDOW_DAYS = 30  # tier window: the rules read this many days
EVAL_CUTOFFS = 2  # later cutoffs the model is judged on
TRAIN_CUTOFFS = 6  # earlier cutoffs it is fitted on (at most)
STEP_DAYS = 30  # days between training cutoffs
NUM_THREADS = 1
MLFLOW_URI = None  # None: a notebook-local SQLite store in OUTPUT_DIR
OUTPUT_DIR = None  # None: <reports dir>/notebooks/02_fan_tiers
APPLY_PROMOTION = False  # True: move @champion / @challenger of livecast-tiers

# %%
settings = get_settings()
out_dir = Path(OUTPUT_DIR or settings.reports_dir / "notebooks" / "02_fan_tiers")
out_dir.mkdir(parents=True, exist_ok=True)
local_store = MLFLOW_URI is None
mlflow_uri = f"sqlite:///{(out_dir / 'mlruns.db').resolve()}" if local_store else MLFLOW_URI
models_dir = out_dir / "models" if local_store else settings.models_dir
tz = settings.timezone
print(f"outputs: {out_dir}\nMLflow: {mlflow_uri}\nbundles: {models_dir}")

# %% [markdown]
# ## 1. Fan events

# %%
if DATA_PATH is None:
    events = simulate(seed=SEED, rooms=ROOMS, days=DAYS, fans=FANS).fan_events
else:
    events = read_fan_events(DATA_PATH, tz=tz)
print(
    f"{len(events):,} events of {events['fan_id'].nunique():,} fans, "
    f"{events['event_time'].min():%Y-%m-%d} .. {events['event_time'].max():%Y-%m-%d}"
)
display(events["event_type"].value_counts().to_frame("events").T)

# %% [markdown]
# ## 2. Cutoffs and fan features
#
# Each cutoff is a local midnight. The model learns from the training cutoffs (labels: the
# tier in the window after each), is judged on the evaluation cutoffs (their label windows come
# after every training label), and the final model is refitted on the latest cutoffs.

# %%
rules = TierRules(window_days=WINDOW_DAYS)
plan = plan_cutoffs(
    events,
    rules,
    eval_cutoffs=EVAL_CUTOFFS,
    train_cutoffs=TRAIN_CUTOFFS,
    step_days=STEP_DAYS,
    tz=tz,
)
cutoffs = {"train": plan.train, "evaluation": plan.evaluation, "final": plan.final}
display(pd.Series({k: ", ".join(f"{c:%Y-%m-%d}" for c in v) for k, v in cutoffs.items()}))
latest = plan.final[-1]
feats = fan_features(events, latest, tz=tz)
display(feats.drop(columns="fan_id").describe().T[["mean", "50%", "max"]])

# %% [markdown]
# ## 3. Train and evaluate the tier model
#
# `train_tiers` backtests (fit on the training cutoffs, score the evaluation cutoffs, compare
# with persistence and RFM rules), writes the report, refits on the final cutoffs, exports a
# bundle and registers it in MLflow. Macro-F1 weighs the four tiers equally; the dormant AUC
# measures `p_dormant` as a churn-risk score.

# %%
result = train_tiers(
    events,
    models_dir=models_dir,
    report_dir=out_dir / "report",
    mlflow_uri=mlflow_uri,
    rules=rules,
    params=TierParams(seed=SEED, num_threads=NUM_THREADS),
    eval_cutoffs=EVAL_CUTOFFS,
    train_cutoffs=TRAIN_CUTOFFS,
    step_days=STEP_DAYS,
    tz=tz,
)
bt = result.backtest
print(f"train id {result.train_id}, bundle {result.bundle_dir.name}, version {result.version}")
metrics_frame(bt.metrics)

# %%
fig, axes = plt.subplots(1, len(bt.confusion), figsize=(4.2 * len(bt.confusion), 3.8))
for ax, (method, matrix) in zip(np.atleast_1d(axes), bt.confusion.items(), strict=True):
    m = np.asarray(matrix, dtype=float)
    share = m / np.clip(m.sum(axis=1, keepdims=True), 1, None)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(TIERS)):
        for j in range(len(TIERS)):
            ax.text(j, i, f"{share[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(TIERS)), TIERS, rotation=45)
    ax.set_yticks(range(len(TIERS)), TIERS)
    ax.set(title=method, xlabel="predicted", ylabel="actual")
fig.suptitle("evaluation cutoffs: share of each actual tier")
fig.tight_layout()
show(fig)

# %% [markdown]
# ## 4. Score a batch, as `livecast segment` does
#
# The events are written as Parquet and segmented twice with the trained model: one window
# before the latest cutoff (the previous run), then at the latest cutoff with the previous
# output, which gives the transition matrix. The summary holds fans and GMV share per
# predicted tier (order amounts in the window before the cutoff).

# %%
events_path = write_parquet(events, out_dir / "fan_events.parquet")
previous_cutoff = latest - pd.Timedelta(days=WINDOW_DAYS)
before = segment(
    events_path,
    out_dir / "tiers_previous.parquet",
    model=result.model,
    cutoff=previous_cutoff,
    tz=tz,
    num_threads=NUM_THREADS,
    progress=False,
)
now = segment(
    events_path,
    out_dir / "tiers.parquet",
    model=result.model,
    cutoff=latest,
    previous=before.out_path,
    tz=tz,
    num_threads=NUM_THREADS,
    progress=False,
)
print(f"scored {now.fans:,} fans from {now.events:,} events in {now.seconds:.1f} s")
summary = pd.DataFrame(now.summary["tiers"]).T
display(summary)

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
summary["fans"].plot.bar(ax=axes[0], title="fans per predicted tier", rot=0)
summary[["fan_share", "gmv_share"]].plot.bar(ax=axes[1], title="fan and GMV share", rot=0)
axes[1].set_ylim(0, 1)
fig.tight_layout()
show(fig)

# %%
transitions = pd.DataFrame(now.summary["transition"]["matrix"]).T
fig, ax = plt.subplots(figsize=(5.5, 4.5))
ax.imshow(np.log1p(transitions.to_numpy(dtype=float)), cmap="Purples")
for i in range(transitions.shape[0]):
    for j in range(transitions.shape[1]):
        ax.text(j, i, f"{transitions.iat[i, j]:,}", ha="center", va="center", fontsize=8)
ax.set_xticks(range(transitions.shape[1]), transitions.columns, rotation=45)
ax.set_yticks(range(transitions.shape[0]), transitions.index)
ax.set(xlabel=f"tier at {latest:%Y-%m-%d}", ylabel=f"tier at {previous_cutoff:%Y-%m-%d}")
ax.set_title("tier transitions (fans)")
show(fig)

# %% [markdown]
# The fans most at risk of going dormant among today's core and active fans: a campaign list.
# The in-memory `segment_frame` (what the service's `/v1/segment` runs) gives the same scores
# as the batch output for any subset of fans.

# %%
scores = read_scores(now.out_path)
today = current_tiers(events, latest, rules, tz=tz).rename(columns={"tier": "current_tier"})
at_risk = scores.merge(today, on="fan_id")
at_risk = at_risk[at_risk["current_tier"].isin(["core", "active"])]
display(at_risk.nlargest(10, "p_dormant"))
sample = at_risk["fan_id"].head(5)
online = segment_frame(result.model, events[events["fan_id"].isin(sample)], latest, tz=tz)
batch = scores.set_index("fan_id").loc[online["fan_id"], "p_dormant"].to_numpy()
print(f"service and batch agree: {np.allclose(online['p_dormant'].to_numpy(), batch)}")

# %% [markdown]
# ## 5. Would the promotion gate promote it?
#
# The tier gate compares macro-F1 on the same evaluation cutoffs (higher wins).

# %%
try:
    decision = promote(
        uri=mlflow_uri,
        models_dir=models_dir,
        train_id=result.train_id,
        gate=TIER_GATE,
        dry_run=not APPLY_PROMOTION,
    )
except ValueError as err:  # e.g. a champion evaluated on other data
    decision = None
    print(f"the gate cannot compare them here: {err}")
if decision is not None:
    verdict = gate_verdict(decision, APPLY_PROMOTION)
    display(Markdown(f"**Tier model {result.train_id} {verdict}**: {decision.reason}"))
