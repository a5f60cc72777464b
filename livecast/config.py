"""Paths and settings, defined once.

Settings are read once into a frozen pydantic model. Every value can be overridden with an
environment variable prefixed ``LIVECAST_`` (for example ``LIVECAST_MLFLOW_URI``), so tests and
deployments never edit code to move a path. Values are checked when read: a bad one is a
``ValueError`` naming its variable (the CLI prints it and exits with code 2).

Threads. Training (LightGBM) uses :func:`available_cores` threads: the cores this process may
use (CPU affinity, bounded by a cgroup CPU quota), or ``LIVECAST_THREADS`` when set. The thread
count is an execution setting: it changes neither the train id nor the fitted trees.
"""

from __future__ import annotations

import math
import os
import zoneinfo
from functools import lru_cache
from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

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
    threads: int | None = Field(
        None,
        ge=1,
        description="Training threads (LightGBM); default: the cores this process may use.",
    )
    history_dir: Path = Field(
        PROJECT_ROOT / "models" / "history",
        description="History store: finished sessions ingested after training (livecast ingest,"
        " POST /v1/sessions); default <models_dir>/history.",
    )
    ingest_token: SecretStr | None = Field(
        None,
        description="Bearer token POST /v1/sessions requires; unset: the endpoint is off (403)."
        " Never printed (a SecretStr).",
    )
    history_poll_seconds: float = Field(
        5.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="How often the service checks the history store for a new version, seconds.",
    )
    forecast_log: Path = Field(
        PROJECT_ROOT / "models" / "forecasts.db",
        description="The watch's store of served forecasts and actuals (SQLite, livecast"
        " monitor); default <models_dir>/forecasts.db.",
    )

    @field_validator("ingest_token")
    @classmethod
    def _long_token(cls, value: SecretStr | None) -> SecretStr | None:
        """At least 16 characters, no surrounding whitespace (the message never shows it)."""
        if value is None:
            return None
        token = value.get_secret_value()
        if len(token) < 16 or token != token.strip():
            raise ValueError("the token must be at least 16 characters, without spaces around")
        return value

    @model_validator(mode="before")
    @classmethod
    def _history_beside_models(cls, data: object) -> object:
        """``history_dir`` defaults to ``<models_dir>/history`` (whatever ``models_dir`` is)."""
        if isinstance(data, dict) and not data.get("history_dir") and data.get("models_dir"):
            data = {**data, "history_dir": Path(str(data["models_dir"])) / "history"}
        if isinstance(data, dict) and not data.get("forecast_log") and data.get("models_dir"):
            data = {**data, "forecast_log": Path(str(data["models_dir"])) / "forecasts.db"}
        return data

    @field_validator("timezone")
    @classmethod
    def _iana_zone(cls, value: str) -> str:
        """An IANA zone name such as ``Asia/Shanghai`` (``localtime`` is a system link, which
        DuckDB does not know)."""
        if value == "localtime" or value not in zoneinfo.available_timezones():
            raise ValueError(f"{value!r} is not an IANA timezone (e.g. Asia/Shanghai)")
        return value

    @field_validator("threads", mode="before")
    @classmethod
    def _positive_int(cls, value: object) -> object:
        """A whole number of threads, at least 1 (``LIVECAST_THREADS=2``)."""
        if value is None or isinstance(value, int):
            return value  # ints are range-checked by the field (ge=1)
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a whole number of threads (e.g. 2)") from None
        if number < 1:
            raise ValueError(f"{value!r}: the number of threads must be at least 1")
        return number


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


CGROUP_ROOT = Path("/sys/fs/cgroup")


def _ancestors(mount: Path, path: str) -> list[Path]:
    """``mount/path`` and each of its parents up to ``mount``."""
    parts = [p for p in path.split("/") if p]
    return [mount.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpu_limit(
    root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")
) -> int | None:
    """The CPU quota of this process's cgroup in whole cores (rounded up), or None when there is
    none (or no cgroup file can be read).

    cgroup v2: ``cpu.max`` (``"<quota> <period>"`` or ``"max <period>"``) of the process's
    cgroup and its ancestors; cgroup v1: ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``
    (``-1``: no quota). The tightest quota found wins.
    """
    limits: list[int] = []

    def add(quota: str, period: str) -> None:
        try:
            q, p = int(quota), int(period)
        except ValueError:  # "max": no quota
            return
        if q > 0 and p > 0:
            limits.append(max(1, math.ceil(q / p)))

    lines = (_read(proc_cgroup) or "0::/").splitlines()
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # cgroup v2 (unified)
            for d in _ancestors(root, path):
                fields = (_read(d / "cpu.max") or "").split()
                if len(fields) == 2:
                    add(*fields)
        elif "cpu" in controllers.split(","):  # cgroup v1
            for mount in dict.fromkeys([root / controllers, root / "cpu"]):
                for d in _ancestors(mount, path):
                    quota, period = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
                    if quota and period:
                        add(quota, period)
    return min(limits) if limits else None


def detected_cores() -> int:
    """The cores this process may use: its CPU affinity (``os.cpu_count()`` where the platform
    has none), bounded by a cgroup CPU quota; at least 1. Ignores ``LIVECAST_THREADS``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, limit)
    return max(1, cores)


def available_cores() -> int:
    """Threads for training: ``LIVECAST_THREADS`` when set, else :func:`detected_cores`.

    Raises ``ValueError`` naming the variable when a setting is bad (see :func:`get_settings`).
    """
    return get_settings().threads or detected_cores()
