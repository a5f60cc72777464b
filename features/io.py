"""Reading and writing contract tables. All I/O of the feature package lives here.

Writes are atomic: a file is written under a temporary name in the target folder and renamed
into place, so an interrupted run never leaves a partial file. The file gets the mode a plain
``open`` would give it (``0o666`` less the umask), not the temporary file's private ``0o600``.

Temporary files and scratch folders carry their owner in their name (``<pid>-<host tag>``), so a
later run removes the leftovers of a killed one (``kill -9``) and never a live writer's: only
entries of this host and PID namespace whose process is gone are removed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import socket
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features.contract import DEFAULT_TZ, validate

TABLE_FILES = {
    "sessions": "sessions.parquet",
    "session_products": "session_products.parquet",
    "fan_events": "fan_events.parquet",
}
TRUTH_FILE = "truth.parquet"


def read_frame(path: str | Path, *, sep: str | None = None, sheet: str | int = 0) -> pd.DataFrame:
    """Read a CSV, Parquet or Excel file (by extension) into a raw frame, no validation."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix in {".parquet", ".pq"}:
        return pd.read_parquet(path)
    if suffix in {".xlsx", ".xlsm", ".xls"}:
        return pd.read_excel(path, sheet_name=sheet)
    if suffix in {".csv", ".txt", ".tsv"}:
        if sep is None:
            sep = "\t" if suffix == ".tsv" else ","
        return pd.read_csv(path, sep=sep, engine="python" if len(sep) > 1 else "c")
    raise ValueError(f"{path}: unsupported file type {suffix!r} (use .csv, .parquet or .xlsx)")


def read_table(path: str | Path, table: str, *, tz: str = DEFAULT_TZ) -> pd.DataFrame:
    """Read one contract table from CSV / Parquet / Excel and validate it."""
    raw = read_frame(path)
    return validate(raw, table, source=str(path), tz=tz)


def current_umask() -> int:
    """The process umask, read without changing it (Linux ``/proc``); elsewhere set and
    restored at once (a thread creating a file in between would miss the umask)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


@functools.cache
def _host_tag() -> str:
    """8 hex digits naming this host and PID namespace (a PID means nothing elsewhere)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{zlib.crc32(f'{socket.gethostname()}|{namespace}'.encode()):08x}"


def owner_tag(pid: int | None = None) -> str:
    """``<pid>-<host tag>`` (default: this process), embedded in temporary names."""
    return f"{os.getpid() if pid is None else pid}-{_host_tag()}"


def _alive(pid: int) -> bool:
    if pid <= 0:
        return True  # never a leftover's owner: keep
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by another user
        return True
    return True


def remove_stale(folder: str | Path, prefix: str, suffix: str = "") -> list[Path]:
    """Remove the entries ``<prefix><pid>-<host tag>.<random><suffix>`` of ``folder`` whose
    process is gone (leftovers of a killed run, made by this host); return them.

    A live process's entries, other hosts' and names of any other shape are kept.
    """
    pattern = re.compile(
        re.escape(prefix) + r"(\d+)-" + _host_tag() + r"\.[a-z0-9_]+" + re.escape(suffix)
    )
    try:
        with os.scandir(folder) as scan:
            entries = list(scan)
    except OSError:
        return []
    removed = []
    for entry in entries:
        found = pattern.fullmatch(entry.name)
        if found is None or _alive(int(found[1])):
            continue
        with contextlib.suppress(OSError):  # gone already, or not ours to remove
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def scratch_dir(prefix: str) -> Path:
    """A new private folder ``<prefix><pid>-<host tag>.<random>`` in the system temporary
    folder, after removing those of dead processes; the caller removes it when done."""
    base = tempfile.gettempdir()
    remove_stale(base, prefix)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}.", dir=base))


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success,
    with mode ``0o666`` less the umask (``mkstemp`` makes it ``0o600``). Temporary files of
    ``target`` left by dead processes are removed first."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}."
    remove_stale(target.parent, prefix, ".tmp")
    fd, tmp = tempfile.mkstemp(prefix=f"{prefix}{owner_tag()}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_parquet(df: pd.DataFrame, target: str | Path) -> Path:
    """Write ``df`` to Parquet atomically."""
    target = Path(target)
    with atomic_path(target) as tmp:
        df.to_parquet(tmp, index=False)
    return target


@dataclass(frozen=True)
class Dataset:
    """The three contract tables (and, for simulated data, the ground truth)."""

    sessions: pd.DataFrame
    session_products: pd.DataFrame
    fan_events: pd.DataFrame | None = None
    truth: pd.DataFrame | None = None


def write_dataset(ds: Dataset, out_dir: str | Path) -> Path:
    """Write a dataset folder (one Parquet file per table)."""
    out_dir = Path(out_dir)
    write_parquet(ds.sessions, out_dir / TABLE_FILES["sessions"])
    write_parquet(ds.session_products, out_dir / TABLE_FILES["session_products"])
    if ds.fan_events is not None:
        write_parquet(ds.fan_events, out_dir / TABLE_FILES["fan_events"])
    if ds.truth is not None:
        write_parquet(ds.truth, out_dir / TRUTH_FILE)
    return out_dir


def load_dataset(data_dir: str | Path, *, fan_events: bool = True, tz: str = DEFAULT_TZ) -> Dataset:
    """Load and validate a dataset folder written by ``simulate`` or an importer.

    ``session_products`` is optional (an empty table when absent: some exports have no SKU
    detail); ``fan_events`` and ``truth`` are loaded when present.
    """
    data_dir = Path(data_dir)
    sessions_path = data_dir / TABLE_FILES["sessions"]
    if not sessions_path.exists():
        raise FileNotFoundError(f"{data_dir}: no {TABLE_FILES['sessions']} (run livecast simulate)")
    sessions = read_table(sessions_path, "sessions", tz=tz)
    products_path = data_dir / TABLE_FILES["session_products"]
    if products_path.exists():
        products = read_table(products_path, "session_products", tz=tz)
    else:
        products = validate(empty_products(), "session_products")
    events = None
    events_path = data_dir / TABLE_FILES["fan_events"]
    if fan_events and events_path.exists():
        events = read_table(events_path, "fan_events", tz=tz)
    truth_path = data_dir / TRUTH_FILE
    truth = pd.read_parquet(truth_path) if truth_path.exists() else None
    return Dataset(sessions, products, events, truth)


def empty_products() -> pd.DataFrame:
    """A session_products table with no rows."""
    return pd.DataFrame(
        {
            "session_id": pd.Series(dtype="str"),
            "sku_id": pd.Series(dtype="str"),
            "category": pd.Series(dtype="str"),
            "list_price": pd.Series(dtype="float64"),
            "live_price": pd.Series(dtype="float64"),
            "is_new_launch": pd.Series(dtype="bool"),
        }
    )
