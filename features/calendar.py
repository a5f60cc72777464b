"""The live-commerce calendar: festival dates and their selling windows.

One definition, used by the simulator (to generate festival effects) and by the session
features (days to / from each festival). Lunar festivals come from a table of dates.
"""

from __future__ import annotations

from datetime import date
from functools import cache

import numpy as np
import pandas as pd

# Chinese New Year (Spring Festival) day.
SPRING_FESTIVAL: dict[int, date] = {
    2018: date(2018, 2, 16),
    2019: date(2019, 2, 5),
    2020: date(2020, 1, 25),
    2021: date(2021, 2, 12),
    2022: date(2022, 2, 1),
    2023: date(2023, 1, 22),
    2024: date(2024, 2, 10),
    2025: date(2025, 1, 29),
    2026: date(2026, 2, 17),
    2027: date(2027, 2, 6),
    2028: date(2028, 1, 26),
    2029: date(2029, 2, 13),
    2030: date(2030, 2, 3),
}
# Mid-Autumn Festival day.
MID_AUTUMN: dict[int, date] = {
    2018: date(2018, 9, 24),
    2019: date(2019, 9, 13),
    2020: date(2020, 10, 1),
    2021: date(2021, 9, 21),
    2022: date(2022, 9, 10),
    2023: date(2023, 9, 29),
    2024: date(2024, 9, 17),
    2025: date(2025, 10, 6),
    2026: date(2026, 9, 25),
    2027: date(2027, 9, 15),
    2028: date(2028, 10, 3),
    2029: date(2029, 9, 22),
    2030: date(2030, 9, 12),
}
FIRST_YEAR, LAST_YEAR = min(SPRING_FESTIVAL), max(SPRING_FESTIVAL)

FESTIVALS: tuple[str, ...] = ("f618", "d11", "d12", "w38", "mid_autumn", "spring", "f818")
"""Festival keys: 618, Double 11, 12.12, 38 Women's Day, Mid-Autumn, Spring Festival, and
Douyin's 818 (新潮好物节, August 8-18: the platform's own mid-year festival)."""

# Selling window before each festival day (days), e.g. the 618 ramp starts on June 1.
WINDOW_BEFORE: dict[str, int] = {
    "f618": 17,
    "d11": 22,
    "d12": 11,
    "w38": 7,
    "mid_autumn": 14,
    "spring": 10,  # the logistics lull: couriers stop ~10 days before and resume ~7 days after
    "f818": 10,
}
WINDOW_AFTER: dict[str, int] = {
    "f618": 0,
    "d11": 0,
    "d12": 0,
    "w38": 0,
    "mid_autumn": 0,
    "spring": 7,
    "f818": 0,
}


def festival_day(name: str, year: int) -> date:
    """The festival's day in ``year``."""
    if name == "f618":
        return date(year, 6, 18)
    if name == "d11":
        return date(year, 11, 11)
    if name == "d12":
        return date(year, 12, 12)
    if name == "w38":
        return date(year, 3, 8)
    if name == "f818":
        return date(year, 8, 18)
    table = {"mid_autumn": MID_AUTUMN, "spring": SPRING_FESTIVAL}[name]
    if year not in table:
        raise ValueError(f"no {name} date for {year} (calendar covers {FIRST_YEAR}-{LAST_YEAR})")
    return table[year]


@cache
def _all_days(name: str) -> np.ndarray:
    """All festival days of ``name`` as numpy datetime64[D], one per covered year (read-only)."""
    days = np.array(
        [festival_day(name, y) for y in range(FIRST_YEAR, LAST_YEAR + 1)], dtype="datetime64[D]"
    )
    days.flags.writeable = False
    return days


def day_distances(days: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Days until the next and since the previous ``name`` festival day, for local calendar
    days given as numpy ``datetime64[D]``. On the festival day both are 0."""
    all_days = _all_days(name)
    nxt = np.searchsorted(all_days, days, side="left")
    prv = np.searchsorted(all_days, days, side="right") - 1
    if (nxt >= len(all_days)).any() or (prv < 0).any():
        raise ValueError(f"dates outside the festival calendar ({FIRST_YEAR}-{LAST_YEAR})")
    to_next = (all_days[nxt] - days).astype(int)
    from_prev = (days - all_days[prv]).astype(int)
    return to_next, from_prev


def window_flags(to_next: np.ndarray, from_prev: np.ndarray, name: str) -> np.ndarray:
    """Whether days at these distances fall in the festival's selling window (or lull)."""
    return (to_next <= WINDOW_BEFORE[name]) | (from_prev <= WINDOW_AFTER[name])


def days_to_from(dates: pd.Series | pd.DatetimeIndex, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Days until the next and since the previous ``name`` festival day, for each local date.

    On the festival day both are 0. Dates must be local calendar dates (timezone already applied).
    """
    d = pd.DatetimeIndex(pd.to_datetime(dates)).tz_localize(None).values.astype("datetime64[D]")
    return day_distances(d, name)


def in_window(dates: pd.Series | pd.DatetimeIndex, name: str) -> np.ndarray:
    """Whether each local date falls in the festival's selling window (or lull, for spring)."""
    to_next, from_prev = days_to_from(dates, name)
    return window_flags(to_next, from_prev, name)
