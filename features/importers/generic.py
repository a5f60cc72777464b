"""Import any CSV / Parquet / Excel export as one contract table, driven by a YAML mapping.

A mapping file renames the export's columns to contract columns and fills the gaps::

    columns:          # contract column: source column (rename)
      room_id: 直播间ID
      start_time: 开播时间
    constants:        # contract column: value (same on every row)
      platform: douyin
    values:           # contract column: {source value: contract value} (recode)
      session_type: {日常: daily, 大促: festival_promo}
    time_format: "%Y/%m/%d %H:%M"   # optional strftime format of the time column
    dayfirst: true                  # optional, or: day / month order of 01/02/2024 dates
    timezone: Asia/Shanghai         # optional zone of the file's naive times
    sep: ";"                        # optional CSV field separator

Without a mapping the file's columns must already carry contract names. The mapping itself is
checked strictly (unknown keys, unknown contract columns, source columns absent from the file
are errors naming them). The result is validated with :func:`features.contract.validate`, which
lists every failing row and column.

The time column is read with one format for the whole column, never guessed cell by cell
(:func:`parse_times`): ``time_format``, or one date layout and one day / month order, taken
from ``dayfirst`` or from the values (``13/02/2024`` is day first). A column where no value
tells day from month is an error naming it; cells breaking the column's layout, order or time
zone, and years outside :data:`~features.contract.TIME_RANGE`, are failing rows. Text files
are decoded with the given encoding or a detected one (:func:`decode_text`).

Rows are handled in this order, and every row left out is counted in the summary:

1. rows that are entirely blank (every cell, mapped or not) are skipped
   (``blank_rows_skipped``); a file left with no row is an error ("no rows");
2. rows repeated verbatim (every raw cell, mapped or not, equal to an earlier row) are kept
   once (``verbatim_repeats_dropped``); exports often repeat a page or a whole block;
3. rows that share a key with an earlier row (sessions: ``session_id``; session_products:
   ``session_id`` + ``sku_id``; fan_events has no key) follow ``on_duplicate``: ``"error"``
   (the default) raises :class:`~features.contract.ContractError` listing every later row,
   its key and the row of the first occurrence; ``"keep-first"`` keeps the first row per key
   and drops the later ones (``duplicate_keys_dropped``, and their file row numbers in
   ``duplicate_rows_dropped``). Rows with a missing key are left to the contract check.

No other row is ever dropped. Rows whose values contradict each other (more orders than
viewers, a live price above the list price, outcomes of a session after now...; see
:func:`features.contract.consistency_warnings`) are kept and listed in the result's
``warnings``; ``strict`` makes them a :class:`~features.contract.ContractError`.

Row numbers in error tables count like a spreadsheet: the header is row 1, the first record is
row 2 (for Parquet files: record position + 2).

The helpers :func:`read_export`, :func:`drop_blank_rows`, :func:`require_rows`,
:func:`parse_times`, :func:`failure_table` and :func:`raise_failures` are shared by the other
importers.
"""

from __future__ import annotations

import codecs
import io
import re
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from features.contract import (
    SCHEMAS,
    TIME_COLUMNS,
    TIME_RANGE,
    ContractError,
    check_consistency,
    columns,
    validate,
)
from features.importers import ImportResult
from features.io import read_frame

HEADER_ROWS = 2
"""Offset from a record's 0-based position to its spreadsheet row number (header = row 1)."""

ID_COLUMNS: tuple[str, ...] = ("session_id", "room_id", "host_id", "sku_id", "fan_id")
"""Contract columns read as text, so ids such as ``00017`` keep their leading zeros."""

TEXT_SUFFIXES = {".csv", ".txt", ".tsv"}

DETECTED_ENCODINGS: tuple[str, ...] = ("utf-8", "gb18030")
"""Encodings tried, in order, for a text file without a byte-order mark and without an
explicit encoding."""

KEYS: dict[str, tuple[str, ...]] = {
    "sessions": ("session_id",),
    "session_products": ("session_id", "sku_id"),
}
"""Columns that identify a row of each table (tables without an entry have no key)."""

OnDuplicate = Literal["error", "keep-first"]
"""What to do with rows whose key repeats an earlier row's key."""

MAX_LISTED_ROWS = 20
"""At most this many dropped row numbers are spelled out in the summary."""

Scalar = str | bool | int | float


# --------------------------------------------------------------------------- shared helpers


def decode_text(path: str | Path, encoding: str | None = None) -> tuple[str, str]:
    """The text of a file and the encoding it was decoded with.

    With ``encoding`` the file must decode with it. Without, a byte-order mark decides
    (``utf-8-sig``, ``utf-16``), else :data:`DETECTED_ENCODINGS` are tried in order (UTF-8,
    then GB18030, a superset of GBK / GB2312 that Chinese Excel writes). A file that does not
    decode is a ``ValueError`` naming each encoding tried and the first bad byte (offset and
    line). A leading byte-order mark is dropped.
    """
    path = Path(path)
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ValueError(
                f"unknown encoding {encoding!r} (use e.g. utf-8, utf-8-sig, gb18030)"
            ) from None
    data = path.read_bytes()
    if encoding is not None:
        candidates: tuple[str, ...] = (encoding,)
    elif data.startswith(codecs.BOM_UTF8):
        candidates = ("utf-8-sig",)
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        candidates = ("utf-16",)
    else:
        candidates = DETECTED_ENCODINGS
    tried = []
    for name in candidates:
        try:
            return data.decode(name).removeprefix("\ufeff"), name
        except UnicodeDecodeError as err:
            line = data.count(b"\n", 0, err.start) + 1
            tried.append(
                f"as {name}: byte 0x{data[err.start]:02x} at offset {err.start} (line {line}) "
                f"is {err.reason}"
            )
    hint = "another --encoding" if encoding is not None else "the file's encoding with --encoding"
    raise ValueError(f"{path}: cannot decode the file {'; '.join(tried)}; give {hint}")


def read_export(
    path: str | Path,
    *,
    sep: str | None = None,
    text_columns: Iterable[str] = (),
    all_text: bool = False,
    encoding: str | None = None,
) -> pd.DataFrame:
    """Read a CSV / TXT / TSV / Parquet / Excel export into a raw frame, no validation.

    Blank lines are kept (so they can be counted and row numbers match the file); the index
    holds spreadsheet row numbers (header = 1). ``text_columns`` are read as strings (ids keep
    leading zeros); ``all_text`` reads every column of a text file as strings. ``sep`` is a
    field separator for text files (``\\s+`` for whitespace-aligned files). ``encoding`` is the
    text file's encoding, detected when ``None`` (see :func:`decode_text`); the one used is in
    ``raw.attrs["encoding"]``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    text_columns = list(text_columns)
    if suffix in TEXT_SUFFIXES:
        if sep is None:
            sep = "\t" if suffix == ".tsv" else ","
        text, used = decode_text(path, encoding)
        if not text.strip():
            raise ValueError(f"{path}: no rows: the file is empty (not even a header)")
        dtype: Any = str if all_text else dict.fromkeys(text_columns, str)
        # The C engine handles single characters and the whitespace regex; others need python.
        engine = "c" if len(sep) == 1 or sep == r"\s+" else "python"
        raw = pd.read_csv(
            io.StringIO(text), sep=sep, dtype=dtype, skip_blank_lines=False, engine=engine
        )
        raw.attrs["encoding"] = used
    else:
        if encoding is not None:
            raise ValueError(
                f"{path}: an encoding applies to text files ({', '.join(sorted(TEXT_SUFFIXES))}), "
                f"not {suffix}"
            )
        raw = read_frame(path)
        for col in text_columns if not all_text else list(raw.columns):
            if col in raw.columns:
                raw[col] = _as_text(raw[col])
    raw.columns = [str(c).strip() for c in raw.columns]
    raw.index = pd.RangeIndex(HEADER_ROWS, HEADER_ROWS + len(raw))
    return raw


def _as_text(series: pd.Series) -> pd.Series:
    """Values as strings (whole floats without ``.0``), missing stays missing."""

    def one(v: object) -> object:
        if v is None or (isinstance(v, float) and v != v):
            return pd.NA
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v)

    return series.map(one).astype("str")


def blank_mask(frame: pd.DataFrame) -> pd.Series:
    """True for rows whose every cell is missing or whitespace-only."""
    if frame.shape[1] == 0:
        return pd.Series(True, index=frame.index)
    blank = pd.DataFrame(
        {
            c: frame[c].isna()
            | frame[c].astype("str").str.strip().eq("").fillna(False).astype(bool)
            for c in frame.columns
        }
    )
    return blank.all(axis=1)


def drop_blank_rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """``frame`` without its entirely blank rows, and how many there were."""
    blank = blank_mask(frame)
    return frame.loc[~blank], int(blank.sum())


def require_rows(frame: pd.DataFrame, rows_read: int, source: str) -> None:
    """A ``ValueError`` when no row is left once blank rows are skipped (a header-only file)."""
    if len(frame) == 0:
        detail = (
            "the file has a header but no data rows"
            if rows_read == 0
            else f"all {rows_read} rows are blank"
        )
        raise ValueError(f"{source}: no rows: {detail}")


def drop_verbatim_repeats(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """``frame`` with rows equal cell for cell to an earlier row removed, and how many."""
    if frame.empty:
        return frame, 0
    try:
        repeat = frame.duplicated(keep="first")
    except TypeError:  # unhashable cells (e.g. lists from Parquet): compare their text
        repeat = frame.astype("str").duplicated(keep="first")
    return frame.loc[~repeat], int(repeat.sum())


def list_rows(rows: Iterable[object], limit: int = MAX_LISTED_ROWS) -> str:
    """Row numbers as a short string: ``"4, 9"``; long lists end with ``"... (+N more)"``."""
    rows = [str(r) for r in rows]
    if len(rows) <= limit:
        return ", ".join(rows)
    return ", ".join(rows[:limit]) + f", ... (+{len(rows) - limit} more)"


def failure_table(records: Iterable[tuple[object, str, str, object]]) -> pd.DataFrame:
    """A ContractError-style failure table from ``(row, column, check, value)`` records."""
    rows = list(records)
    return pd.DataFrame(rows, columns=["row", "column", "check", "value"], dtype=object)


def raise_failures(table: str, failures: pd.DataFrame, source: str) -> None:
    """Raise :class:`ContractError` when ``failures`` has rows."""
    if len(failures):
        raise ContractError(table, failures.reset_index(drop=True), source)


def cell_failures(
    original: pd.Series, parsed: pd.Series, column: str, check: str
) -> list[tuple[object, str, str, object]]:
    """Records for cells that hold something (not blank) yet did not parse."""
    present = original.notna() & original.astype("str").str.strip().ne("").fillna(False)
    bad = present & parsed.isna()
    return [(row, column, check, original.loc[row]) for row in original.index[bad]]


def missing_columns_error(
    path: str | Path, missing: Iterable[str], available: Iterable[str], *, what: str = "column"
) -> ValueError:
    """A readable error naming the absent columns and listing the file's columns."""
    missing = list(missing)
    names = ", ".join(repr(m) for m in missing)
    have = ", ".join(repr(str(c)) for c in available)
    plural = "s" if len(missing) > 1 else ""
    return ValueError(f"{path}: {what}{plural} {names} not in the file; the file has: {have}")


def check_timezone(name: str) -> str:
    """``name`` if it is a valid IANA zone, else a ``ValueError``."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        msg = f"unknown timezone {name!r} (use an IANA name such as Asia/Shanghai)"
        raise ValueError(msg) from None
    return name


# --------------------------------------------------------------------------- times

_Y_M_D = re.compile(
    r"^(?P<y>\d{4})(?P<sep>[-/. ])(?P<m>\d{1,2})(?P=sep)(?P<d>\d{1,2})(?P<rest>(?:[\sT].*)?)$"
)
_Y_M_D_CN = re.compile(r"^(?P<y>\d{4})年(?P<m>\d{1,2})月(?P<d>\d{1,2})日?\s*(?P<rest>.*)$")
_A_B_Y = re.compile(
    r"^(?P<a>\d{1,2})(?P<sep>[-/. ])(?P<b>\d{1,2})(?P=sep)(?P<y>\d{4}|\d{2})(?P<rest>(?:[\sT].*)?)$"
)
_YEAR_FIRST_START = re.compile(r"\d{4}(?:([-/. ])\d{1,2}\1\d{1,2}(?:[\sT]|$)|年\d{1,2}月)")
_YEAR_LAST_START = re.compile(r"\d{1,2}([-/. ])\d{1,2}\1(?:\d{4}|\d{2})(?:[\sT]|$)")
_OFFSET = re.compile(
    r"\d:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?P<off>Z|[+-]\d{2}(?::?\d{2})?)$", re.IGNORECASE
)
_HAS_OFFSET = re.compile(
    r"\d:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$", re.IGNORECASE
)
_ORDER_HINT = "give --dayfirst or --monthfirst, or --time-format"

Record = tuple[object, str, str, object]
"""One failing cell: (row, column, check, value)."""


def _offset_minutes(text: str) -> float:
    """Minutes east of UTC of an offset such as ``Z``, ``+08:00``, ``-0330`` or ``+08``."""
    if text.upper() == "Z":
        return 0.0
    digits = text[1:].replace(":", "")
    minutes = int(digits[:2]) * 60 + int(digits[2:4] or 0)
    return -float(minutes) if text.startswith("-") else float(minutes)


def _show_offset(minutes: float) -> str:
    hours, rest = divmod(int(abs(minutes)), 60)
    return f"{'-' if minutes < 0 else '+'}{hours:02d}:{rest:02d}"


def _example(text: pd.Series, mask: pd.Series) -> str:
    """``'<value>' (row N)`` for the first cell of ``text`` in ``mask``."""
    row = text.index[mask.reindex(text.index, fill_value=False).to_numpy(dtype=bool)][0]
    return f"{text.loc[row]!r} (row {row})"


def _rarer(
    text: pd.Series, column: str, a: pd.Series, b: pd.Series, check: Callable[[bool, str], str]
) -> tuple[pd.Series, list[Record]]:
    """Of two kinds of cell a column must not mix (masks ``a`` and ``b``), the rarer one and a
    failure record per cell of it; ``check(rarer_is_a, example of the usual kind)`` words it."""
    rarer_is_a = bool(a.sum() < b.sum())
    odd, usual = (a, b) if rarer_is_a else (b, a)
    message = check(rarer_is_a, _example(text, usual))
    return odd, [(r, column, message, text.loc[r]) for r in text.index[odd]]


def _year_first_iso(text: pd.Series) -> pd.Series:
    """Year-first dates (``2024/2/13 20:00``, ``2024年2月13日``) as ``2024-02-13 20:00``."""
    ymd = text.str.extract(_Y_M_D)
    ymd = ymd.where(ymd["y"].notna(), text.str.extract(_Y_M_D_CN))
    rest = ymd["rest"].fillna("").str.strip().str.removeprefix("T")
    iso = ymd["y"] + "-" + ymd["m"].str.zfill(2) + "-" + ymd["d"].str.zfill(2)
    return text.where(ymd["y"].isna(), iso + rest.where(rest.eq(""), " " + rest))


def _iso_dates(
    text: pd.Series, *, column: str, label: str, dayfirst: bool | None, source: str
) -> tuple[pd.Series, str, list[Record]]:
    """Numeric dates of a column rewritten year first (``2024-02-13 20:00``), with one layout
    and one day / month order for the whole column (see :func:`parse_times`).

    Returns the rewritten text, the order used and failure records for cells that break the
    column's layout or order. Raises ``ValueError`` when the column's year-last dates never
    tell day from month and ``dayfirst`` is ``None``.
    """
    year_first = text.str.match(_YEAR_FIRST_START)
    year_last = text.str.match(_YEAR_LAST_START)
    records: list[Record] = []
    if year_first.any() and year_last.any():  # one layout per column: report the rarer one
        _, found = _rarer(
            text,
            column,
            year_first,
            year_last,
            lambda first, eg: (
                f"date with the year {'first' if first else 'last'} while the column's other "
                f"dates have it {'last' if first else 'first'}, e.g. {eg}"
            ),
        )
        records += found
    out = text.copy()
    other_first = year_first & ~text.str.match(r"\d{4}-")  # ISO 8601 reads 2024-2-13 as is
    if other_first.any():
        out.loc[other_first] = _year_first_iso(text[other_first])
    order = "year first"
    if year_last.any():
        aby = text[year_last].str.extract(_A_B_Y)
        a, b = pd.to_numeric(aby["a"]), pd.to_numeric(aby["b"])
        day_seen, month_seen = a > 12, b > 12
        if dayfirst is None and day_seen.any() and month_seen.any():
            for seen, other, kind, other_kind, place in (
                (day_seen, month_seen, "day", "month", "first"),
                (month_seen, day_seen, "month", "day", "second"),
            ):
                check = (
                    f"{kind} first (its {place} number is above 12) but {_example(text, other)} "
                    f"is {other_kind} first; {_ORDER_HINT}"
                )
                records += [(r, column, check, text.loc[r]) for r in aby.index[seen]]
        elif dayfirst is None and not (day_seen.any() or month_seen.any()):
            unclear = a.ne(b)  # 05/05/2024 reads the same either way
            if unclear.any():
                examples = ", ".join(repr(v) for v in text[unclear.index[unclear]].unique()[:3])
                raise ValueError(
                    f"{source}: column {label}: dates such as {examples} read as day/month or "
                    "as month/day, and no value in the column tells which (none has a number "
                    f"above 12); {_ORDER_HINT}"
                )
        first = dayfirst if dayfirst is not None else bool(day_seen.any())
        order = "day first" if first else "month first"
        day, month = (a, b) if first else (b, a)
        year = aby["y"]
        century = pd.Series(
            np.where(pd.to_numeric(year) >= 69, "19", "20"), index=year.index
        )  # strptime's %y: 69-99 are 19xx, 00-68 are 20xx
        year = year.where(year.str.len() == 4, century + year)
        rest = aby["rest"].fillna("").str.strip().str.removeprefix("T")
        iso = (
            year
            + "-"
            + month.astype(int).astype("str").str.zfill(2)
            + "-"
            + day.astype(int).astype("str").str.zfill(2)
        )
        out.loc[year_last] = iso + rest.where(rest.eq(""), " " + rest)
    return out, order, records


def _to_datetime(cells: pd.Series, fmt: str, *, utc: bool) -> pd.Series:
    """``pd.to_datetime`` that never raises: cells it cannot take come back NaT (naive, or
    UTC with ``utc``)."""
    empty = pd.Series(
        pd.NaT, index=cells.index, dtype="datetime64[us, UTC]" if utc else "datetime64[us]"
    )
    try:
        parsed = pd.to_datetime(cells, format=fmt, errors="coerce", utc=utc)
    except (ValueError, TypeError, OverflowError):  # e.g. an offset on a "naive" cell
        return empty
    if not utc and isinstance(parsed.dtype, pd.DatetimeTZDtype):
        return empty
    return parsed


def parse_times(
    original: pd.Series,
    *,
    column: str,
    tz: str,
    time_format: str | None = None,
    dayfirst: bool | None = None,
    source: str = "export",
    label: str | None = None,
) -> tuple[pd.Series, list[Record]]:
    """Parse a time column with one format for the whole column, never cell by cell.

    * With ``time_format`` (strftime) every cell is read with it.
    * Otherwise numeric dates have one layout per column: the year first (``2024-02-13``,
      ``2024/2/13``, ``2024年2月13日``) or last (``13/02/2024``, ``02/13/2024``, also with
      ``-``, ``.`` or spaces; a two-digit year is 19xx from 69 on, else 20xx). The day / month
      order of year-last dates is ``dayfirst`` or, when ``None``, what the values show (a
      number above 12 is a day); a column whose values never show it is a ``ValueError``
      naming the column (``label``) and example values; a column showing both orders fails on
      the cells showing each. Cells in no numeric layout (``Jun 1 2024``) are read by pandas.
    * Naive times are read in ``tz``, times with a UTC offset converted to it. A column mixing
      times with and without an offset fails on the rarer kind; an offset that is neither the
      column's most common one nor ``tz``'s at that time (daylight saving) fails.
    * Times must fall in :data:`~features.contract.TIME_RANGE` and exist in ``tz``.

    Returns the times (``datetime64[ns, tz]``; NaT for blank and failing cells) and failure
    records ``(row, column, check, value)`` of the cells that hold something yet fail, one per
    cell.
    """
    label = label or repr(column)
    if time_format is not None and dayfirst is not None:
        raise ValueError(
            "give a time format or --dayfirst / --monthfirst, not both (the format fixes the "
            "day / month order)"
        )
    out = pd.Series(pd.NaT, index=original.index, dtype=f"datetime64[ns, {tz}]")
    lo, hi = TIME_RANGE
    in_range = f"time between {lo.year} and {hi.year - 1}"
    records: list[Record] = []

    if pd.api.types.is_datetime64_any_dtype(original.dtype):  # Excel / Parquet time cells
        aware_cells = isinstance(original.dtype, pd.DatetimeTZDtype)
        utc = original.dt.tz_convert("UTC") if aware_cells else original.dt.tz_localize("UTC")
        outside = original.notna() & ((utc < lo) | (utc >= hi))
        inside = original.where(~outside)
        local = (
            inside.dt.tz_convert(tz)
            if aware_cells
            else inside.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
        )
        records += [(r, column, in_range, original.loc[r]) for r in original.index[outside]]
        gone = local.isna() & inside.notna()
        records += [
            (r, column, f"time exists in {tz}", original.loc[r]) for r in original.index[gone]
        ]
        out.loc[local.notna()] = local[local.notna()]
        return out, records

    text = original.astype("str").str.strip()
    text = text[original.notna() & text.ne("").fillna(False).astype(bool)]
    if time_format is not None:
        norm, order, fmt = text, time_format, time_format
    else:
        norm, order, layout = _iso_dates(
            text, column=column, label=label, dayfirst=dayfirst, source=source
        )
        records += layout
        fmt = "ISO8601"
    aware = norm.str.contains(_HAS_OFFSET)
    naive_at = _to_datetime(norm[~aware], fmt, utc=False).reindex(norm.index)
    utc_at = _to_datetime(norm[aware], fmt, utc=True).reindex(norm.index)
    offset = norm[aware].str.extract(_OFFSET)["off"]
    minutes = offset.map(_offset_minutes).reindex(norm.index)
    retry = naive_at.isna() & ~aware
    if time_format is None and retry.any():  # no numeric layout: "Jun 1 2024", "8:00 PM"
        # Never day first here: the numeric dates are year first by now, and day first would
        # let pandas swap an impossible 2024-13-02 into 2024-02-13.
        again = _to_datetime(norm[retry], "mixed", utc=False)
        naive_at.loc[retry] = again
        for row in again.index[again.isna()]:  # one by one: named zones ("... UTC")
            try:
                t = pd.Timestamp(pd.to_datetime(norm.loc[row]))
            except (ValueError, TypeError, OverflowError):
                continue
            if t.tzinfo is None:
                naive_at.loc[row] = t
            else:
                aware.loc[row] = True
                utc_at.loc[row] = t.tz_convert("UTC")
                minutes.loc[row] = t.utcoffset().total_seconds() / 60.0
    with_offset = aware & utc_at.notna()
    without = ~aware & naive_at.notna()
    check = "parseable time" if order == "year first" else f"parseable time ({order})"
    records += [(r, column, check, text.loc[r]) for r in text.index[~(with_offset | without)]]

    if with_offset.any() and without.any():  # one kind per column: report the rarer one
        odd, found = _rarer(
            text,
            column,
            with_offset,
            without,
            lambda has, eg: (
                f"time {'with' if has else 'without'} a UTC offset while the column's other "
                f"times have {'none' if has else 'one'}, e.g. {eg}"
            ),
        )
        records += found
        with_offset, without = with_offset & ~odd, without & ~odd
    shown = minutes[with_offset]
    if shown.nunique() > 1:  # several offsets: each the usual one or tz's at that time
        counts = shown.value_counts(sort=False)
        usual_offset = counts.index[int(np.argmax(counts.to_numpy()))]
        at = utc_at[with_offset]
        zone = (
            at.dt.tz_convert(tz).dt.tz_localize(None) - at.dt.tz_localize(None)
        ).dt.total_seconds() / 60.0
        odd = (shown.ne(usual_offset) & shown.ne(zone)).reindex(norm.index, fill_value=False)
        usual = with_offset & ~odd
        for r in text.index[odd]:
            check = (
                f"UTC offset {_show_offset(minutes.loc[r])} is neither the column's usual "
                f"{_show_offset(usual_offset)} (e.g. {_example(text, usual)}) nor {tz}'s at that "
                "time; one time zone per column"
            )
            records.append((r, column, check, text.loc[r]))
        with_offset &= ~odd

    naive_ok = without & naive_at.ge(lo.tz_localize(None)) & naive_at.lt(hi.tz_localize(None))
    aware_ok = with_offset & utc_at.ge(lo) & utc_at.lt(hi)
    outside = (without & ~naive_ok) | (with_offset & ~aware_ok)
    records += [(r, column, in_range, text.loc[r]) for r in text.index[outside]]
    local = naive_at[naive_ok].dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
    records += [(r, column, f"time exists in {tz}", text.loc[r]) for r in local.index[local.isna()]]
    out.loc[local.index] = local
    out.loc[utc_at.index[aware_ok]] = utc_at[aware_ok].dt.tz_convert(tz)
    first: dict[object, Record] = {}
    for record in records:  # one record per cell: the first reason found
        first.setdefault(record[0], record)
    failing = list(first)
    out.loc[failing] = pd.NaT
    return out, list(first.values())


# --------------------------------------------------------------------------- mapping


class ColumnMapping(BaseModel):
    """A YAML mapping file, checked against the contract of one table (pass it as context)."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    columns: dict[str, str] = Field(
        default_factory=dict, description="contract column -> source column (rename)."
    )
    constants: dict[str, Scalar] = Field(
        default_factory=dict, description="contract column -> value set on every row."
    )
    values: dict[str, dict[str, Scalar]] = Field(
        default_factory=dict, description="contract column -> {source value: contract value}."
    )
    time_format: str | None = Field(None, description="strftime format of the time column.")
    dayfirst: bool | None = Field(
        None, description="Day before month in year-last dates (13/02/2024); None: from values."
    )
    timezone: str | None = Field(None, description="IANA zone of the file's naive times.")
    sep: str | None = Field(None, min_length=1, description="Field separator of a text file.")

    @model_validator(mode="after")
    def _against_contract(self, info: ValidationInfo) -> ColumnMapping:
        table = (info.context or {}).get("table")
        if table is None:
            return self
        known = columns(table)
        for section, names in (("columns", self.columns), ("constants", self.constants)):
            unknown = [c for c in names if c not in known]
            if unknown:
                raise ValueError(
                    f"unknown contract column(s) {', '.join(map(repr, unknown))} in {section}; "
                    f"{table} columns are: {', '.join(known)}"
                )
        both = sorted(set(self.columns) & set(self.constants))
        if both:
            raise ValueError(f"{', '.join(map(repr, both))} given in both columns and constants")
        stray = [c for c in self.values if c not in self.columns]
        if stray:
            raise ValueError(
                f"values given for {', '.join(map(repr, stray))}, which is not mapped in columns"
            )
        for key in ("time_format", "dayfirst"):
            if getattr(self, key) is not None and table not in TIME_COLUMNS:
                raise ValueError(f"{key} given but {table} has no time column")
        if self.time_format is not None and self.dayfirst is not None:
            raise ValueError("give time_format or dayfirst, not both")
        if self.timezone is not None:
            check_timezone(self.timezone)
        return self


def load_mapping(path: str | Path, table: str) -> ColumnMapping:
    """Read and check a YAML mapping file for ``table``; errors name the offending entries."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such mapping file: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a mapping file must be a YAML mapping (got {type(data)})")
    try:
        return ColumnMapping.model_validate(data, context={"table": table})
    except ValidationError as err:
        lines = []
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
            msg = str(e["msg"]).removeprefix("Value error, ")
            lines.append(f"  {loc}: {msg}")
        raise ValueError(f"{path}: invalid mapping for {table}:\n" + "\n".join(lines)) from None


# --------------------------------------------------------------------------- import


def _recode(series: pd.Series, table: Mapping[str, Scalar]) -> tuple[pd.Series, int]:
    """Replace values found in ``table`` (compared as stripped text); others stay as they are."""
    key = series.astype("str").str.strip()
    hit = key.isin(list(table)) & series.notna()
    if not hit.any():
        return series, 0
    out = series.astype(object).copy()
    out.loc[hit] = key.loc[hit].map(table)
    return out, int(hit.sum())


def apply_mapping(
    raw: pd.DataFrame, table: str, mapping: ColumnMapping | None, *, source: str = ""
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rename / add / recode the raw export's columns into ``table``'s contract columns.

    Pure: no validation beyond the mapping (the caller validates the contract). Returns the
    frame (same index as ``raw``) and counts for the summary.
    """
    if table not in SCHEMAS:
        raise ValueError(f"unknown table {table!r}; use one of {', '.join(SCHEMAS)}")
    known = columns(table)
    if mapping is None:
        picked = {c: c for c in raw.columns if c in known}
        if not picked:
            raise ValueError(
                f"{source or 'export'}: no column is named like a {table} contract column "
                f"({', '.join(known)}); give a mapping file. The file has: "
                + ", ".join(repr(str(c)) for c in raw.columns)
            )
        mapping = ColumnMapping()
    else:
        missing = [src for src in mapping.columns.values() if src not in raw.columns]
        if missing:
            raise missing_columns_error(
                source or "export", missing, raw.columns, what="mapped source column"
            )
        picked = dict(mapping.columns)
    out = pd.DataFrame(index=raw.index)
    for target, src in picked.items():
        out[target] = raw[src]
    recoded = 0
    for target, table_values in mapping.values.items():
        out[target], n = _recode(out[target], table_values)
        recoded += n
    for target, value in mapping.constants.items():
        out[target] = value
    used = set(picked.values())
    counts = {
        "columns_mapped": len(picked),
        "constants": len(mapping.constants),
        "values_recoded": recoded,
        "source_columns_ignored": sum(1 for c in raw.columns if c not in used),
    }
    return out, counts


def _parse_times(
    frame: pd.DataFrame,
    table: str,
    *,
    time_format: str | None,
    dayfirst: bool | None,
    source_tz: str,
    source: str,
    label: str | None,
) -> pd.DataFrame:
    """Parse the table's time column (:func:`parse_times`), naive times read as ``source_tz``;
    blank or failing cells raise :class:`ContractError` listing the rows."""
    col = TIME_COLUMNS.get(table)
    if col is None or col not in frame.columns:
        return frame
    original = frame[col]
    if isinstance(original.dtype, pd.DatetimeTZDtype):
        return frame
    parsed, records = parse_times(
        original,
        column=col,
        tz=source_tz,
        time_format=time_format,
        dayfirst=dayfirst,
        source=source,
        label=label,
    )
    blank = original.isna() | original.astype("str").str.strip().eq("").fillna(False).astype(bool)
    records += [(r, col, "time is required", None) for r in original.index[blank]]
    failures = failure_table(records)
    if len(failures):
        failures = failures.sort_values("row", kind="stable")
    raise_failures(table, failures, source)
    out = frame.copy()
    out[col] = parsed
    return out


def _check_on_duplicate(on_duplicate: str) -> None:
    choices = get_args(OnDuplicate)
    if on_duplicate not in choices:
        raise ValueError(
            f"on_duplicate must be one of {', '.join(map(repr, choices))}, got {on_duplicate!r}"
        )


def resolve_duplicate_keys(
    frame: pd.DataFrame, table: str, on_duplicate: OnDuplicate, *, source: str = ""
) -> tuple[pd.DataFrame, list[object]]:
    """Handle rows whose key repeats an earlier row's key (see the module docstring).

    Returns the frame without the later rows (``"keep-first"``) and their index labels (file
    row numbers); with ``"error"`` raises :class:`ContractError` listing every later row.
    Tables without a key, frames lacking a key column and rows with a missing key are left
    as they are (the contract check reports the latter two).
    """
    _check_on_duplicate(on_duplicate)
    key = KEYS.get(table)
    if not key or any(c not in frame.columns for c in key) or frame.empty:
        return frame, []
    keys = frame[list(key)]
    complete = keys.notna().all(axis=1)
    # Compared as text, as the contract coerces ids to text (1 and "1" are the same id).
    text = keys.loc[complete].astype("str")
    later = text.duplicated(keep="first").reindex(keys.index, fill_value=False)
    if not later.any():
        return frame, []
    if on_duplicate == "keep-first":
        return frame.loc[~later], list(frame.index[later])
    first_row: dict[tuple[str, ...], object] = {}
    for row, values in zip(text.index, text.itertuples(index=False), strict=True):
        first_row.setdefault(tuple(values), row)
    name = key[0] if len(key) == 1 else f"({', '.join(key)})"
    records = []
    for row in keys.index[later]:
        first = first_row[tuple(text.loc[row])]
        check = (
            f"duplicate {name} (first at row {first}); "
            "use --on-duplicate keep-first to keep the first"
        )
        values = tuple(keys.loc[row])
        records.append((row, ", ".join(key), check, values[0] if len(key) == 1 else values))
    raise_failures(table, failure_table(records), source)
    return frame, []  # unreachable: records is not empty


def import_frame(
    raw: pd.DataFrame,
    *,
    table: str,
    mapping: ColumnMapping | None = None,
    tz: str,
    source: str = "",
    on_duplicate: OnDuplicate = "error",
    time_format: str | None = None,
    dayfirst: bool | None = None,
    strict: bool = False,
) -> ImportResult:
    """Map, parse and validate a raw export frame (index = file row numbers) into ``table``.

    Blank rows are skipped, verbatim repeats kept once and duplicate keys handled as
    ``on_duplicate`` says (``"error"`` or ``"keep-first"``); see the module docstring.
    ``time_format`` or ``dayfirst`` (see :func:`parse_times`), when given, replaces the
    mapping's time settings. Rows whose values contradict each other are the result's
    ``warnings``, or with ``strict`` a :class:`ContractError` listing them.
    """
    _check_on_duplicate(on_duplicate)
    encoding = raw.attrs.get("encoding", "-")
    rows_read = len(raw)
    raw, blank = drop_blank_rows(raw)
    require_rows(raw, rows_read, source or "export")
    raw, repeats = drop_verbatim_repeats(raw)
    frame, counts = apply_mapping(raw, table, mapping, source=source)
    frame, dropped = resolve_duplicate_keys(frame, table, on_duplicate, source=source)
    settings = mapping or ColumnMapping()
    if time_format is not None or dayfirst is not None:
        if table not in TIME_COLUMNS:
            raise ValueError(f"a time format or day order given but {table} has no time column")
    else:
        time_format, dayfirst = settings.time_format, settings.dayfirst
    time_col = TIME_COLUMNS.get(table)
    src_col = settings.columns.get(time_col or "", time_col)
    label = f"{time_col!r}" + (f" ({src_col!r} in the file)" if src_col != time_col else "")
    frame = _parse_times(
        frame,
        table,
        time_format=time_format,
        dayfirst=dayfirst,
        source_tz=settings.timezone or tz,
        source=source or "export",
        label=label,
    )
    valid = validate(frame, table, source=source, tz=tz)
    warnings = check_consistency(valid, table, source=source, strict=strict)
    valid = valid.reset_index(drop=True)
    summary: dict[str, Any] = {
        "table": table,
        "rows_read": rows_read,
        "blank_rows_skipped": blank,
        "verbatim_repeats_dropped": repeats,
        "duplicate_keys_dropped": len(dropped),
        "duplicate_rows_dropped": list_rows(dropped),
        "rows_written": len(valid),
        **counts,
        "contract_columns": ", ".join(c for c in columns(table) if c in frame.columns),
        "contract_warnings": len(warnings),
        "encoding": encoding,
    }
    return ImportResult(valid, summary, warnings)


def import_table(
    path: str | Path,
    *,
    table: str,
    mapping: Path | None,
    tz: str,
    on_duplicate: OnDuplicate = "error",
    time_format: str | None = None,
    dayfirst: bool | None = None,
    encoding: str | None = None,
    strict: bool = False,
) -> ImportResult:
    """Import one contract ``table`` from a CSV / Parquet / Excel export.

    ``mapping`` is a YAML mapping file (see the module docstring); without it the file's
    columns must already be contract column names. ``tz`` is the output zone and the zone of
    naive times unless the mapping names ``timezone``. ``on_duplicate`` says what to do with
    rows repeating an earlier row's key: ``"error"`` or ``"keep-first"`` (verbatim repeats are
    always kept once). ``time_format`` or ``dayfirst`` (see :func:`parse_times`) replaces the
    mapping's time settings; ``encoding`` is a text file's encoding (detected when ``None``);
    ``strict`` turns contract warnings into errors. Raises ``ValueError`` for a bad mapping,
    absent source columns, an undecodable or empty file, or an ambiguous date column, and
    :class:`~features.contract.ContractError` listing every failing row / column (or every
    duplicate key).
    """
    if table not in SCHEMAS:
        raise ValueError(f"unknown table {table!r}; use one of {', '.join(SCHEMAS)}")
    check_timezone(tz)
    _check_on_duplicate(on_duplicate)
    spec = load_mapping(mapping, table) if mapping is not None else None
    if spec is not None:
        text_cols = [src for dst, src in spec.columns.items() if dst in ID_COLUMNS]
    else:
        text_cols = list(ID_COLUMNS)
    raw = read_export(
        path, sep=spec.sep if spec else None, text_columns=text_cols, encoding=encoding
    )
    return import_frame(
        raw,
        table=table,
        mapping=spec,
        tz=tz,
        source=str(path),
        on_duplicate=on_duplicate,
        time_format=time_format,
        dayfirst=dayfirst,
        strict=strict,
    )
