"""One training at a time: an advisory lock shared by every training of a models folder.

Training uses every core this process may use (``livecast.config.available_cores``). Two
trainings side by side oversubscribe the machine: on 2 cores, two ``livecast train`` runs took
1,474 s each against 136 s alone. ``livecast train``, ``tune``, ``segments train`` and
``pipeline`` therefore hold this lock while they run; a second one fails at once with a message
naming the holder (the CLI exits with code 2), or waits for it with ``--wait``.

The lock is ``fcntl.flock`` (exclusive, non-blocking) on ``<models dir>/.training.lock``: the
models folder is where every training of a deployment exports its bundles (a setting,
``LIVECAST_MODELS_DIR``), beside the MLflow store they register into. The kernel drops the
lock when its holder's process ends, however it ends, so a lock file left by a dead process
never blocks. The file records the holder (pid, command, start time) for the message; it is
emptied on release.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

LOCK_FILE = ".training.lock"

Holder = dict[str, Any]


def lock_path(models_dir: str | Path) -> Path:
    """The training lock of the models folder ``models_dir``."""
    return Path(models_dir) / LOCK_FILE


def current_command() -> str:
    """This process's command line, as a shell would show it (``livecast train --data d``)."""
    argv = sys.argv or ["python"]
    return shlex.join([Path(argv[0]).name, *argv[1:]])


def describe(holder: Holder | None) -> str:
    """The holder of a lock in words: ``pid 123 (livecast train), since 2025-01-01 10:00:00``."""
    if not holder or "pid" not in holder:
        return "a process that has not recorded itself yet"
    text = f"pid {holder['pid']} ({holder.get('command') or 'unknown command'})"
    if holder.get("host") and holder["host"] != socket.gethostname():
        text += f" on {holder['host']}"
    if holder.get("since"):
        text += f", since {holder['since']}"
    return text


class TrainingBusy(RuntimeError):
    """Another process holds the training lock."""

    def __init__(self, path: Path, holder: Holder | None) -> None:
        self.path = path
        self.holder = holder
        super().__init__(
            f"another training is running: {describe(holder)}. It holds the training lock "
            f"{path}; two trainings at once oversubscribe the cores and each runs many times "
            "slower. Wait for it to finish, or rerun with --wait to queue behind it."
        )


def _read_holder(fd: int) -> Holder | None:
    try:
        data = json.loads(os.pread(fd, 64 * 1024, 0).decode() or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_holder(path: str | Path) -> Holder | None:
    """The holder recorded in a lock file (None: none recorded, or no file)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return _read_holder(fd)
    finally:
        os.close(fd)


class TrainingLock:
    """The exclusive training lock at ``path`` (see the module docstring)."""

    def __init__(self, path: str | Path, command: str | None = None) -> None:
        self.path = Path(path)
        self.command = command
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(
        self, *, wait: bool = False, on_wait: Callable[[Holder | None], None] | None = None
    ) -> TrainingLock:
        """Take the lock; when another process holds it, raise :class:`TrainingBusy` (or, with
        ``wait``, call ``on_wait`` with the holder and block until it is free)."""
        if self._fd is not None:
            raise RuntimeError(f"training lock {self.path} is already held by this object")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                holder = _read_holder(fd)
                if not wait:
                    raise TrainingBusy(self.path, holder) from None
                if on_wait is not None:
                    on_wait(holder)
                fcntl.flock(fd, fcntl.LOCK_EX)
            record = {
                "pid": os.getpid(),
                "command": self.command or current_command(),
                "since": datetime.now().isoformat(sep=" ", timespec="seconds"),
                "host": socket.gethostname(),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
        except BaseException:
            os.close(fd)  # closing drops the lock if it was taken
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        """Empty the holder record and drop the lock (a no-op when not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # drops the flock

    def __enter__(self) -> TrainingLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def training_lock(
    models_dir: str | Path,
    *,
    wait: bool = False,
    on_wait: Callable[[Holder | None], None] | None = None,
    command: str | None = None,
) -> Iterator[Path]:
    """Hold the training lock of ``models_dir`` for the ``with`` block (released on any exit,
    exceptions included); yields the lock file's path. Raises :class:`TrainingBusy` when
    another process holds it and ``wait`` is false."""
    lock = TrainingLock(lock_path(models_dir), command=command)
    lock.acquire(wait=wait, on_wait=on_wait)
    try:
        yield lock.path
    finally:
        lock.release()
