"""Importers: real exports (CSV / Parquet / Excel) into the data contract."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from features.io import Dataset

WARNING_COLUMNS = ["row", "column", "check", "value"]
"""Columns of a warnings table (the same as a contract failure table)."""


def no_warnings() -> pd.DataFrame:
    """An empty warnings table."""
    return pd.DataFrame(columns=WARNING_COLUMNS, dtype=object)


@dataclass(frozen=True)
class ImportResult:
    """A validated contract table, a summary of what the import did (rows read, skipped...)
    and its contract warnings (rows kept whose values contradict each other, see
    :func:`features.contract.consistency_warnings`)."""

    table: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)
    warnings: pd.DataFrame = field(default_factory=no_warnings)


@dataclass(frozen=True)
class DatasetImport:
    """A validated dataset, a summary and the contract warnings of each table (by table name).

    Unpacks as ``dataset, summary`` (what the importers returned before warnings existed).
    """

    dataset: Dataset
    summary: dict[str, Any] = field(default_factory=dict)
    warnings: dict[str, pd.DataFrame] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.dataset, self.summary))
