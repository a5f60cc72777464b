"""Importers: real exports (CSV / Parquet / Excel) into the data contract."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class ImportResult:
    """A validated contract table and a summary of what the import did (rows read, skipped...)."""

    table: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)
