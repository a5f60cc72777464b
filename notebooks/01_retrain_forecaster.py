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
# # Retrain the session forecaster
#
# Load sessions (the seeded simulator by default, or a dataset folder of real data), build the
# session features, tune the LightGBM settings briefly with Optuna, train and backtest the
# forecaster against the spreadsheet baselines, look at where it errs, register the result in
# MLflow as a challenger and ask the promotion gate whether it would replace the champion.
#
# Every step calls the project's own functions (`training.tune.tune`, `training.train.train`,
# `training.promote.promote`...), so this notebook retrains exactly what `livecast train` does.
#
# **Parameters** (next cell): `DATA_PATH = None` simulates `ROOMS` rooms over `DAYS` days; set it
# to a folder written by `livecast import ...` (e.g. `"../data/mine"`) to use real data.
# `MLFLOW_URI = None` keeps runs in a SQLite store inside `OUTPUT_DIR`, so experiments never
# touch the project registry; set it to the project's URI (`get_settings().mlflow_uri`) to
# register there. The gate only moves aliases when `APPLY_PROMOTION = True`.

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from features.io import load_dataset
from features.sessions import HOUR_BANDS, feature_families
from features.simulate import simulate, summarize
from livecast.config import get_settings
from livecast.notebook import gate_verdict, show
from training.backtest import bars
from training.data import training_frame
from training.diagnostics import coverage_by, error_by, importance_by_family
from training.models import ForecastParams
from training.promote import promote
from training.registry import CHAMPION, alias_version
from training.report import metrics_table
from training.train import train
from training.tune import save_params, tune

# %% tags=["parameters"]
DATA_PATH = None  # dataset folder (contract Parquet files); None: simulate
ROOMS = 40  # simulated rooms (when DATA_PATH is None)
DAYS = 730  # simulated days (when DATA_PATH is None)
SEED = 0
N_TRIALS = 10  # Optuna trials
FOLDS = 3  # backtest folds (rolling origin)
HORIZON_DAYS = 30  # days predicted per fold
MAX_ROUNDS = 1500  # LightGBM rounds cap (early stopping picks the number)
NUM_THREADS = 2
MLFLOW_URI = None  # None: a notebook-local SQLite store in OUTPUT_DIR
OUTPUT_DIR = None  # None: <reports dir>/notebooks/01_retrain_forecaster
APPLY_PROMOTION = False  # True: move @champion / @challenger as `livecast promote` does

# %%
settings = get_settings()
out_dir = Path(OUTPUT_DIR or settings.reports_dir / "notebooks" / "01_retrain_forecaster")
out_dir.mkdir(parents=True, exist_ok=True)
local_store = MLFLOW_URI is None
mlflow_uri = f"sqlite:///{(out_dir / 'mlruns.db').resolve()}" if local_store else MLFLOW_URI
# a notebook-local store gets notebook-local bundles, so the project's champion never moves
models_dir = out_dir / "models" if local_store else settings.models_dir
print(f"outputs: {out_dir}\nMLflow: {mlflow_uri}\nbundles: {models_dir}")

# %% [markdown]
# ## 1. Data

# %%
if DATA_PATH is None:
    ds = simulate(seed=SEED, rooms=ROOMS, days=DAYS, fans=0)
else:
    ds = load_dataset(DATA_PATH, fan_events=False, tz=settings.timezone)
pd.Series(summarize(ds), name="value").to_frame()

# %% [markdown]
# ## 2. Session features
#
# One row per session, columns named `<family>__<name>`; the room family only reads the room's
# earlier sessions (no leakage). The outcomes are joined as labels.

# %%
frame = training_frame(ds.sessions, ds.session_products)
families = feature_families(frame.columns)
display(pd.DataFrame({"features": {f: len(cols) for f, cols in families.items()}}).T)

# %% [markdown]
# ## 3. Tune briefly with Optuna
#
# A seeded TPE study; each trial backtests fold by fold on the same time-ordered folds and is
# pruned early when its running WAPE is worse than the median trial. Trials are logged as
# nested MLflow runs.

# %%
base = ForecastParams(seed=SEED, max_rounds=MAX_ROUNDS, num_threads=NUM_THREADS)
tuned = tune(
    frame,
    n_trials=N_TRIALS,
    seed=SEED,
    folds=FOLDS,
    horizon_days=HORIZON_DAYS,
    base=base,
    mlflow_uri=mlflow_uri,
)
save_params(tuned.best_params, out_dir / "best_params.json")
print(
    f"best mean WAPE (viewers, GMV) {tuned.best_value:.4f} after {tuned.n_trials} trials "
    f"({tuned.n_pruned} pruned)"
)
trials = tuned.study.trials_dataframe()
display(trials)

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
done = trials[trials["state"] == "COMPLETE"]
ax.plot(done["number"], done["value"], "o", label="trial")
ax.plot(done["number"], done["value"].cummin(), "-", label="best so far")
ax.set_xlabel("trial")
ax.set_ylabel("mean WAPE (viewers, GMV)")
ax.legend()
show(fig)

# %% [markdown]
# ## 4. The champion to beat
#
# In a fresh notebook-local store there is no champion yet: train the current default settings
# (what `livecast train` uses without `--params`) and make them the champion, so the tuned model
# below is judged against them. A store that already has a champion is left as it is.

# %%
champion = alias_version("gmv", CHAMPION, mlflow_uri)
if champion is None and local_store:
    reference = train(
        ds,
        params=base,
        models_dir=models_dir,
        report_dir=out_dir / "report-default",
        mlflow_uri=mlflow_uri,
        folds=FOLDS,
        horizon_days=HORIZON_DAYS,
    )
    first = promote(uri=mlflow_uri, models_dir=models_dir, train_id=reference.train_id)
    print(f"champion: default settings, train id {reference.train_id} ({first.reason})")
elif champion is not None:
    print(f"champion: livecast-gmv v{champion.version}, train id {champion.tags.get('train_id')}")
else:
    print("no champion in this store yet")

# %% [markdown]
# ## 5. Train the challenger and backtest it against the baselines
#
# `train` backtests the tuned settings (rolling origin, the model trained only on sessions
# before each cut), fits them on all the data, exports a bundle and registers one MLflow model
# version per target.

# %%
result = train(
    ds,
    params=tuned.best_params,
    models_dir=models_dir,
    report_dir=out_dir / "report",
    mlflow_uri=mlflow_uri,
    folds=FOLDS,
    horizon_days=HORIZON_DAYS,
)
preds = result.backtest.predictions
# hour bands in the order of the day in tables and plots
preds["hour_band"] = pd.Categorical(preds["hour_band"], categories=HOUR_BANDS, ordered=True)
print(f"train id {result.train_id}: {len(preds)} predicted sessions, bundle {result.bundle_dir}")
metrics_table(result.backtest.metrics).pivot(index="method", columns="target", values="wape")

# %%
pd.DataFrame(bars(result.backtest.metrics, oracle=ds.truth is not None))

# %% [markdown]
# ## 6. Predicted against actual

# %%
targets = list(result.backtest.metrics)
fig, axes = plt.subplots(1, len(targets), figsize=(4.5 * len(targets), 4))
for ax, t in zip(np.atleast_1d(axes), targets, strict=True):
    y, p = preds[t], preds[f"{t}__model_p50"]
    ok = (y > 0) & (p > 0)
    ax.scatter(y[ok], p[ok], s=5, alpha=0.4)
    lims = [min(y[ok].min(), p[ok].min()), max(y[ok].max(), p[ok].max())]
    ax.plot(lims, lims, color="k", lw=1)
    ax.set(xscale="log", yscale="log", xlabel=f"actual {t}", ylabel=f"forecast {t} (P50)")
fig.tight_layout()
show(fig)

# %% [markdown]
# ## 7. Where does it err? By room and by time slot
#
# WAPE of the model (P50) next to the best spreadsheet baseline, per room and per hour band.

# %%
by_room = error_by(preds, "room_id")
by_slot = error_by(preds, "hour_band")
fig, axes = plt.subplots(2, 1, figsize=(13, 7.5))
for ax, (table, key) in zip(axes, [(by_room, "room_id"), (by_slot, "hour_band")], strict=True):
    g = table[table["target"] == "gmv"].set_index(key)
    g[["wape_model", "wape_trailing_mean", "wape_slot_mean"]].plot.bar(ax=ax, width=0.8)
    ax.set(ylabel="GMV WAPE", title=f"GMV error by {key}")
fig.tight_layout()
show(fig)
by_slot.pivot(index="hour_band", columns="target", values="wape_model")

# %% [markdown]
# ## 8. Interval coverage
#
# Share of sessions whose outcome fell inside the P10–P90 interval (nominal 0.80), per fold and
# per hour band; cold-start rows (a room without history) have wider intervals.

# %%
cov_fold = coverage_by(preds, "fold")
cov_slot = coverage_by(preds, "hour_band")
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
for ax, (table, key) in zip(axes, [(cov_fold, "fold"), (cov_slot, "hour_band")], strict=True):
    table.pivot(index=key, columns="target", values="coverage").plot.bar(ax=ax)
    ax.axhline(0.8, color="k", ls="--", lw=1)
    ax.set(ylim=(0, 1), ylabel="P10-P90 coverage", title=f"coverage by {key}")
fig.tight_layout()
show(fig)
coverage_by(preds, "cold_start")

# %% [markdown]
# ## 9. Importance by feature family
#
# LightGBM gain of the final models summed per family: how much of the fit comes from the plan
# (topic, slot, mix, promo, warm-up) and how much from the room's history.

# %%
imp = importance_by_family(result.forecaster)
shares = imp.pivot(index="target", columns="family", values="share")
ax = shares.plot.barh(stacked=True, figsize=(8, 3))
ax.set(xlabel="share of gain", xlim=(0, 1))
ax.legend(bbox_to_anchor=(1.0, 1.0))
fig = ax.figure
show(fig)
shares.round(3)

# %% [markdown]
# ## 10. Register the challenger and ask the promotion gate
#
# The models are registered (one version per target, tagged with the train id). The gate
# compares the challenger's mean WAPE over viewers and GMV with the champion's on the same
# backtest folds. With `APPLY_PROMOTION = False` it only says what it would do.

# %%
print("registered versions: " + ", ".join(f"{t} v{v}" for t, v in result.versions.items()))
try:
    decision = promote(
        uri=mlflow_uri,
        models_dir=models_dir,
        train_id=result.train_id,
        dry_run=not APPLY_PROMOTION,
    )
except ValueError as err:  # e.g. a champion evaluated on other data: `livecast promote --data`
    decision = None
    print(f"the gate cannot compare them here: {err}")
if decision is not None:
    verdict = gate_verdict(decision, APPLY_PROMOTION)
    display(Markdown(f"**Challenger {result.train_id} {verdict}**: {decision.reason}"))
