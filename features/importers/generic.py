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
    timezone: Asia/Shanghai         # optional zone of the file's naive times
    sep: ";"                        # optional CSV field separator

Without a mapping the file's columns must already carry contract names. The mapping itself is
checked strictly (unknown keys, unknown contract columns, source columns absent from the file
are errors naming them). The result is validated with :func:`features.contract.validate`, which
lists every failing row and column.

Rows are handled in this order, and every row left out is counted in the summary:

1. rows that are entirely blank are skipped (``blank_rows_skipped``);
2. rows repeated verbatim (every raw cell, mapped or not, equal to an earlier row) are kept
   once (``verbatim_repeats_dropped``); exports often repeat a page or a whole block;
3. rows that share a key with an earlier row (sessions: ``session_id``; session_products:
   ``session_id`` + ``sku_id``; fan_events has no key) follow ``on_duplicate``: ``"error"``
   (the default) raises :class:`~features.contract.ContractError` listing every later row,
   its key and the row of the first occurrence; ``"keep-first"`` keeps the first row per key
   and drops the later ones (``duplicate_keys_dropped``, and their file row numbers in
   ``duplicate_rows_dropped``). Rows with a missing key are left to the contract check.

No other row is ever dropped.

Row numbers in error tables count like a spreadsheet: the header is row 1, the first record is
row 2 (for Parquet files: record position + 2).

The helpers :func:`read_export`, :func:`drop_blank_rows`, :func:`failure_table` and
:func:`raise_failures` are shared by the other importers.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from features.contract import SCHEMAS, TIME_COLUMNS, ContractError, columns, validate
from features.importers import ImportResult
from features.io import read_frame

HEADER_ROWS = 2
"""Offset from a record's 0-based position to its spreadsheet row number (header = row 1)."""

ID_COLUMNS: tuple[str, ...] = ("session_id", "room_id", "host_id", "sku_id", "fan_id")
"""Contract columns read as text, so ids such as ``00017`` keep their leading zeros."""

TEXT_SUFFIXES = {".csv", ".txt", ".tsv"}

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


def read_export(
    path: str | Path,
    *,
    sep: str | None = None,
    text_columns: Iterable[str] = (),
    all_text: bool = False,
) -> pd.DataFrame:
    """Read a CSV / TXT / TSV / Parquet / Excel export into a raw frame, no validation.

    Blank lines are kept (so they can be counted and row numbers match the file); the index
    holds spreadsheet row numbers (header = 1). ``text_columns`` are read as strings (ids keep
    leading zeros); ``all_text`` reads every column of a text file as strings. ``sep`` is a
    field separator for text files (``\\s+`` for whitespace-aligned files).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    text_columns = list(text_columns)
    if suffix in TEXT_SUFFIXES:
        if sep is None:
            sep = "\t" if suffix == ".tsv" else ","
        dtype: Any = str if all_text else dict.fromkeys(text_columns, str)
        # The C engine handles single characters and the whitespace regex; others need python.
        engine = "c" if len(sep) == 1 or sep == r"\s+" else "python"
        raw = pd.read_csv(path, sep=sep, dtype=dtype, skip_blank_lines=False, engine=engine)
    else:
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
        if self.time_format is not None and table not in TIME_COLUMNS:
            raise ValueError(f"time_format given but {table} has no time column")
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
    frame: pd.DataFrame, table: str, time_format: str | None, source_tz: str, source: str
) -> pd.DataFrame:
    """Parse the table's time column (``time_format`` or ISO / mixed), naive read as
    ``source_tz``; unparseable cells raise :class:`ContractError` listing the rows."""
    col = TIME_COLUMNS.get(table)
    if col is None or col not in frame.columns:
        return frame
    original = frame[col]
    if isinstance(original.dtype, pd.DatetimeTZDtype):
        return frame
    if pd.api.types.is_datetime64_any_dtype(original.dtype):
        parsed = original
    else:
        text = original.astype("str").str.strip()
        if time_format is not None:
            parsed = pd.to_datetime(text, format=time_format, errors="coerce")
        else:
            parsed = pd.to_datetime(text, format="mixed", errors="coerce")
    check = f"parseable time ({time_format})" if time_format else "parseable time"
    records = cell_failures(original, parsed, col, check)
    records += [(r, col, "time is required", None) for r in original.index[original.isna()]]
    raise_failures(table, failure_table(records), source)
    out = frame.copy()
    out[col] = parsed.dt.tz_localize(source_tz, ambiguous="NaT", nonexistent="NaT")
    shifted = out[col].isna()
    records = [(r, col, f"time exists in {source_tz}", original.loc[r]) for r in out.index[shifted]]
    raise_failures(table, failure_table(records), source)
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
) -> ImportResult:
    """Map, parse and validate a raw export frame (index = file row numbers) into ``table``.

    Blank rows are skipped, verbatim repeats kept once and duplicate keys handled as
    ``on_duplicate`` says (``"error"`` or ``"keep-first"``); see the module docstring.
    """
    _check_on_duplicate(on_duplicate)
    rows_read = len(raw)
    raw, blank = drop_blank_rows(raw)
    raw, repeats = drop_verbatim_repeats(raw)
    frame, counts = apply_mapping(raw, table, mapping, source=source)
    frame, dropped = resolve_duplicate_keys(frame, table, on_duplicate, source=source)
    source_tz = mapping.timezone if mapping is not None and mapping.timezone else tz
    frame = _parse_times(
        frame, table, mapping.time_format if mapping is not None else None, source_tz, source
    )
    valid = validate(frame, table, source=source, tz=tz).reset_index(drop=True)
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
    }
    return ImportResult(valid, summary)


def import_table(
    path: str | Path,
    *,
    table: str,
    mapping: Path | None,
    tz: str,
    on_duplicate: OnDuplicate = "error",
) -> ImportResult:
    """Import one contract ``table`` from a CSV / Parquet / Excel export.

    ``mapping`` is a YAML mapping file (see the module docstring); without it the file's
    columns must already be contract column names. ``tz`` is the output zone and the zone of
    naive times unless the mapping names ``timezone``. ``on_duplicate`` says what to do with
    rows repeating an earlier row's key: ``"error"`` or ``"keep-first"`` (verbatim repeats are
    always kept once). Raises ``ValueError`` for a bad mapping or absent source columns and
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
    raw = read_export(path, sep=spec.sep if spec else None, text_columns=text_cols)
    return import_frame(
        raw, table=table, mapping=spec, tz=tz, source=str(path), on_duplicate=on_duplicate
    )
