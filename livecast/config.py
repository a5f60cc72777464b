"""Paths and settings, defined once.

Settings are read once into a frozen pydantic model. Every value can be overridden with an
environment variable prefixed ``LIVECAST_`` (for example ``LIVECAST_MLFLOW_URI``), so tests and
deployments never edit code to move a path. Values are checked when read: a bad one is a
``ValueError`` naming its variable (the CLI prints it and exits with code 2).
"""

from __future__ import annotations

import os
import zoneinfo
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseModel):
    """Project-wide settings. Frozen: read once, never mutated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = Field(PROJECT_ROOT / "data", description="Working data folder.")
    models_dir: Path = Field(PROJECT_ROOT / "models", description="Exported model bundles.")
    reports_dir: Path = Field(PROJECT_ROOT / "reports", description="Backtest and batch reports.")
    mlflow_uri: str = Field(
        f"sqlite:///{PROJECT_ROOT / 'mlruns.db'}", description="MLflow tracking and registry URI."
    )
    timezone: str = Field("Asia/Shanghai", description="Timezone for naive times and time slots.")
    seed: int = Field(0, description="Default random seed.")

    @field_validator("timezone")
    @classmethod
    def _iana_zone(cls, value: str) -> str:
        """An IANA zone name such as ``Asia/Shanghai`` (``localtime`` is a system link, which
        DuckDB does not know)."""
        if value == "localtime" or value not in zoneinfo.available_timezones():
            raise ValueError(f"{value!r} is not an IANA timezone (e.g. Asia/Shanghai)")
        return value


def _from_env() -> dict[str, str]:
    out: dict[str, str] = {}
    for name in Settings.model_fields:
        value = os.environ.get(f"LIVECAST_{name.upper()}")
        if value:
            out[name] = value
    return out


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process (environment overrides applied once).

    Raises ``ValueError`` naming the variable of each bad value.
    """
    try:
        return Settings(**_from_env())
    except ValidationError as exc:
        bad = "; ".join(
            f"LIVECAST_{str(e['loc'][0]).upper()}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ValueError(f"bad setting {bad}") from None
