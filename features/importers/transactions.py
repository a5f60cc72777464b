"""Import a purchase log (one row per purchase) as a ``fan_events`` table.

Each row becomes one event of the fan named in ``fan_col`` at the time in ``time_col``:

* a positive amount is an ``order`` event with that amount;
* a negative amount is a return: a ``refund`` event with the positive amount;
* a zero amount is kept as an ``order`` with amount 0 (a free or fully discounted purchase is
  still a purchase: it counts for recency and frequency) and counted in the summary.

Fan ids are read as text (``00017`` keeps its zeros). Times without a zone are read in ``tz``;
a date-only time is midnight local time. The time column is read with one format
(``time_format``, or one date layout and day / month order for the whole column, see
:func:`~features.importers.generic.parse_times`; ``dayfirst`` settles ``01/02/2024``). No row
is dropped: rows blank in every column (not only the three read) are skipped and counted; a
missing fan id, an unparseable time or amount is an error listing the rows
(:class:`~features.contract.ContractError`), and so is a file with no rows. Events after the
import time are contract warnings (errors with ``strict``). Row numbers count the header as
row 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.contract import check_consistency, validate
from features.importers import ImportResult
from features.importers.generic import (
    cell_failures,
    check_timezone,
    drop_blank_rows,
    failure_table,
    missing_columns_error,
    parse_times,
    raise_failures,
    read_export,
    require_rows,
)


def parse_transactions(
    raw: pd.DataFrame,
    *,
    fan_col: str,
    time_col: str,
    amount_col: str,
    time_format: str | None,
    room_id: str,
    tz: str,
    source: str = "export",
    dayfirst: bool | None = None,
    strict: bool = False,
) -> ImportResult:
    """Turn a raw purchase frame (index = file row numbers) into ``fan_events``. Pure.

    Amounts are in the file's currency; ``event_time`` is timezone-aware in ``tz``.
    """
    check_timezone(tz)
    if not room_id or not room_id.strip():
        raise ValueError("room_id must not be empty")
    needed = [fan_col, time_col, amount_col]
    missing = [c for c in dict.fromkeys(needed) if c not in raw.columns]
    if missing:
        raise missing_columns_error(source, missing, raw.columns)
    encoding = raw.attrs.get("encoding", "-")
    rows_read = len(raw)
    # Blank means blank in every column: a row with other content but no fan, time or
    # amount is a failing row, not a blank one.
    raw, blank = drop_blank_rows(raw)
    require_rows(raw, rows_read, source)
    raw = raw[list(dict.fromkeys(needed))]

    fan = raw[fan_col].astype("str").str.strip()
    fan = fan.where(fan.ne("").fillna(False).astype(bool))
    event_time, time_records = parse_times(
        raw[time_col],
        column=time_col,
        tz=tz,
        time_format=time_format,
        dayfirst=dayfirst,
        source=source,
    )
    amount_text = raw[amount_col].astype("str").str.strip().str.replace(",", "", regex=False)
    amount = pd.to_numeric(amount_text, errors="coerce").astype(float)
    amount = amount.where(np.isfinite(amount))

    records = [(r, fan_col, "fan id is required", None) for r in raw.index[fan.isna()]]
    records += time_records
    records += cell_failures(raw[amount_col], amount, amount_col, "number")
    for col, values in ((time_col, event_time), (amount_col, amount)):
        empty = values.isna() & (raw[col].isna() | raw[col].astype("str").str.strip().eq(""))
        records += [(r, col, "value is required", None) for r in raw.index[empty]]
    failures = failure_table(records)
    if len(failures):
        failures = failures.sort_values("row", kind="stable")
    raise_failures("fan_events", failures, source)
    refund = amount < 0
    events = pd.DataFrame(
        {
            "fan_id": fan,
            "room_id": room_id.strip(),
            "event_time": event_time,
            "event_type": np.where(refund, "refund", "order"),
            "session_id": pd.Series(pd.NA, index=raw.index, dtype="str"),
            "watch_seconds": np.nan,
            "amount": amount.abs(),
        },
        index=raw.index,
    )
    valid = validate(events, "fan_events", source=source, tz=tz)
    warnings = check_consistency(valid, "fan_events", source=source, strict=strict)
    valid = valid.reset_index(drop=True)
    orders = valid["event_type"].eq("order")
    summary: dict[str, Any] = {
        "rows_read": rows_read,
        "blank_rows_skipped": blank,
        "events": len(valid),
        "orders": int(orders.sum()),
        "refunds": int((~orders).sum()),
        "zero_amount_orders": int((orders & valid["amount"].eq(0)).sum()),
        "fans": int(valid["fan_id"].nunique()),
        "first_event": str(valid["event_time"].min()) if len(valid) else "-",
        "last_event": str(valid["event_time"].max()) if len(valid) else "-",
        "order_amount": float(valid.loc[orders, "amount"].sum()),
        "refund_amount": float(valid.loc[~orders, "amount"].sum()),
        "net_amount": float(valid.loc[orders, "amount"].sum() - valid.loc[~orders, "amount"].sum()),
        "contract_warnings": len(warnings),
        "encoding": encoding,
    }
    return ImportResult(valid, summary, warnings)


def import_transactions(
    path: str | Path,
    *,
    fan_col: str,
    time_col: str,
    amount_col: str,
    sep: str | None,
    time_format: str | None,
    room_id: str,
    tz: str,
    dayfirst: bool | None = None,
    encoding: str | None = None,
    strict: bool = False,
) -> ImportResult:
    """Read a purchase log (CSV / TXT / TSV / Parquet / Excel) as ``fan_events``.

    ``sep`` is the text field separator (``\\s+`` for whitespace-aligned files such as
    CDNOW); ``time_format`` a strftime format (``%Y%m%d``) or ``None`` for one layout read
    from the column (``dayfirst`` settles ``01/02/2024``); ``room_id`` the room the purchases
    are filed under; ``tz`` the zone of naive times and of the output; ``encoding`` a text
    file's encoding (detected when ``None``); ``strict`` turns contract warnings into errors.
    Raises ``ValueError`` naming absent columns (and listing the file's columns), an
    undecodable or empty file or an ambiguous date column,
    :class:`~features.contract.ContractError` listing unparseable rows.
    """
    raw = read_export(path, sep=sep, text_columns=[fan_col], encoding=encoding)
    return parse_transactions(
        raw,
        fan_col=fan_col,
        time_col=time_col,
        amount_col=amount_col,
        time_format=time_format,
        room_id=room_id,
        tz=tz,
        source=str(path),
        dayfirst=dayfirst,
        strict=strict,
    )
