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
# # Explore past sessions: the questions a live-ops team asks
#
# 1. Which time slots work best for each room?
# 2. How much does each festival window lift a room?
# 3. Do promo mechanics (lotteries, red envelopes, flash sales, coupons, discounts) convert?
# 4. Which product mix sells?
#
# Rooms differ by orders of magnitude, so each session is compared with its own room: a
# *relative* value of 1.3 means 30 % above that room's median session. The tables come from
# `features.explore`, which reads the same slot, festival, promo and mix definitions as the
# forecaster. They describe the history; they are not causal effects (festival sessions also
# run more promos; the forecaster's drivers separate the effects).
#
# **Parameters** (next cell): `DATA_PATH = None` simulates `ROOMS` rooms over `DAYS` days; set it
# to a folder written by `livecast import ...` (e.g. `"../data/mine"`) to explore real data.

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from features import explore
from features.io import load_dataset
from features.simulate import simulate
from livecast.config import get_settings
from livecast.notebook import show

# %% tags=["parameters"]
DATA_PATH = None  # dataset folder (contract Parquet files); None: simulate
ROOMS = 40  # simulated rooms (when DATA_PATH is None)
DAYS = 730  # simulated days (when DATA_PATH is None)
SEED = 0
METRIC = "gmv"  # outcome compared across slots, festivals and mixes: viewers, orders, gmv
MIN_SESSIONS = 5  # a slot needs this many sessions of a room to count as its best
OUTPUT_DIR = None  # None: <reports dir>/notebooks/03_explore_sessions

# %%
settings = get_settings()
out_dir = Path(OUTPUT_DIR or settings.reports_dir / "notebooks" / "03_explore_sessions")
out_dir.mkdir(parents=True, exist_ok=True)
if DATA_PATH is None:
    ds = simulate(seed=SEED, rooms=ROOMS, days=DAYS, fans=0)
else:
    ds = load_dataset(DATA_PATH, fan_events=False, tz=settings.timezone)
sessions, products = ds.sessions, ds.session_products
done = explore.session_outcomes(sessions)
print(
    f"{len(sessions)} sessions ({len(done)} finished) in {sessions['room_id'].nunique()} rooms, "
    f"{sessions['start_time'].min():%Y-%m-%d} .. {sessions['start_time'].max():%Y-%m-%d}"
)

# %% [markdown]
# ## 1. Best time slots per room
#
# Median relative outcome of each room in each hour band (local time): the heat map shows where
# a room sells above its typical session; the table names each room's best band.

# %%
slots = explore.slot_table(sessions, METRIC, slot="hour_band", tz=settings.timezone)
grid = slots.pivot(index="room_id", columns="hour_band", values="relative")
fig, ax = plt.subplots(figsize=(7, 0.3 * len(grid) + 1.5))
im = ax.imshow(grid.to_numpy(), cmap="RdYlGn", vmin=0, vmax=2, aspect="auto")
ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns])
ax.set_yticks(range(grid.shape[0]), grid.index)
fig.colorbar(im, label=f"{METRIC} / room median")
ax.set_title(f"{METRIC} by hour band, relative to each room's median session")
show(fig)
best = explore.best_slots(
    sessions, METRIC, slot="hour_band", min_sessions=MIN_SESSIONS, tz=settings.timezone
)
best.to_csv(out_dir / "best_slots.csv", index=False)
display(best)

# %%
by_weekday = explore.slot_table(sessions, METRIC, slot="weekday", tz=settings.timezone)
ax = by_weekday.groupby("weekday", observed=True)["relative"].median().plot.bar(figsize=(6, 3))
ax.axhline(1.0, color="k", lw=1)
ax.set(ylabel=f"median relative {METRIC}", title="day of week (median over rooms)")
fig = ax.figure
show(fig)

# %% [markdown]
# ## 2. Festival uplift
#
# A room's median session inside each festival's selling window over its median ordinary
# session (outside every window), then the median over rooms. `spring` is the logistics lull
# around the Spring Festival, when couriers stop.

# %%
uplift = pd.concat(
    {m: explore.festival_uplift(sessions, m, tz=settings.timezone) for m in ("viewers", METRIC)},
    names=["metric"],
).reset_index(level=0)
wide = uplift.pivot(index="festival", columns="metric", values="uplift")
ax = wide.plot.bar(figsize=(7, 3.5))
ax.axhline(1.0, color="k", lw=1)
ax.set(ylabel="window / ordinary (x)", title="festival uplift (median over rooms)")
fig = ax.figure
show(fig)
display(uplift)

# %% [markdown]
# ## 3. Promo mechanics against conversion
#
# Conversion (orders / viewers) at each level of each mechanic: the pooled rate and the median
# of each session's conversion over its room's median.

# %%
promo = explore.promo_conversion(sessions, products)
mechanics = list(explore.PROMO_LEVELS)
fig, axes = plt.subplots(2, 3, figsize=(13, 6), sharey=True)
for ax, mechanic in zip(axes.ravel(), mechanics, strict=True):
    t = promo[promo["mechanic"] == mechanic]
    ax.bar(t["level"], t["relative"])
    ax.axhline(1.0, color="k", lw=1)
    ax.set_title(mechanic)
for ax in axes[:, 0]:
    ax.set_ylabel("relative conversion")
fig.tight_layout()
show(fig)
promo.pivot_table(index=["mechanic", "level"], values=["n", "mean", "relative"], sort=False)

# %% [markdown]
# ## 4. Product mix against GMV
#
# GMV at each level of the assortment size, mean discount, mean live price, share of new
# launches and the number of categories (relative to the room's median GMV).

# %%
mix = explore.mix_gmv(sessions, products, METRIC)
parts = list(dict.fromkeys(mix["mix"]))
fig, axes = plt.subplots(1, len(parts), figsize=(3.4 * len(parts), 3.6), sharey=True)
for ax, part in zip(axes, parts, strict=True):
    t = mix[mix["mix"] == part]
    ax.bar(t["level"], t["relative"])
    ax.axhline(1.0, color="k", lw=1)
    ax.set_title(part)
    ax.tick_params(axis="x", rotation=60)
axes[0].set_ylabel(f"relative {METRIC}")
fig.tight_layout()
show(fig)
mix.pivot_table(index=["mix", "level"], values=["n", "rooms", "relative"], sort=False)
