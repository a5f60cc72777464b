"""Hostile input, fast cases (CI): request bodies streamed past the size limit, file names with
glob characters, the permissions of atomically written files, registry tags naming folders,
interrupted batch runs and settings that reach SQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pandas as pd
import pytest
from starlette.responses import JSONResponse
from typer.testing import CliRunner

from features.contract import validate

TZ = "Asia/Shanghai"
CUTOFF = "2024-06-01"
ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------- request body size


def _echo_app(calls: list[dict[str, Any]]) -> Any:
    """An ASGI app that reads the whole body and answers its length (``calls`` logs each call)."""

    async def app(scope: dict, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        calls.append({"bytes": len(body), "headers": headers})
        await JSONResponse({"bytes": len(body)})(scope, receive, send)

    return app


def _post(app: Any, content: Any, path: str = "/v1/forecast") -> httpx.Response:
    """POST ``content`` (bytes, or an async iterator: sent chunked) to ``app`` in process."""

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(
                path, content=content, headers={"content-type": "application/json"}
            )

    return asyncio.run(run())


class _Chunks:
    """``n`` chunks of ``size`` bytes, streamed; ``sent`` counts the chunks pulled."""

    def __init__(self, n: int, size: int = 500) -> None:
        self.n, self.size, self.sent = n, size, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.n):
            self.sent += 1
            yield b"x" * self.size


@pytest.fixture
def guarded(monkeypatch) -> tuple[Any, list[dict[str, Any]]]:
    """The service's middleware around an echo app, with a 1,000-byte body limit."""
    import serving.service as service

    monkeypatch.setattr(service, "MAX_BODY_BYTES", 1000)
    calls: list[dict[str, Any]] = []
    return service.GuardMiddleware(_echo_app(calls)), calls


@pytest.mark.parametrize("route", ["/v1/forecast", "/v1/segment", "/v1/anything"])
def test_chunked_body_over_the_limit_is_413_before_the_app(guarded, route):
    app, calls = guarded
    chunks = _Chunks(10_000)  # 5 MB announced by no header: only the stream tells
    r = _post(app, chunks, route)
    assert r.status_code == 413
    body = r.json()
    assert body["error"] == "request body larger than 1000 bytes"
    assert body["detail"] == [{"loc": ["body"], "msg": body["error"], "type": "body_too_large"}]
    assert calls == []  # the app never saw the oversized body
    assert chunks.sent <= 3  # answered as soon as the total passed 1,000 bytes: 3 x 500


def test_chunked_body_within_the_limit_reaches_the_app_whole(guarded):
    app, calls = guarded
    r = _post(app, _Chunks(2))  # exactly the limit
    assert r.status_code == 200 and r.json() == {"bytes": 1000}
    assert calls[0]["bytes"] == 1000
    assert "content-length" not in calls[0]["headers"]  # it really was streamed
    assert calls[0]["headers"]["transfer-encoding"] == "chunked"


def test_content_length_requests_still_work(guarded):
    app, calls = guarded
    r = _post(app, b"x" * 900)
    assert r.status_code == 200 and r.json() == {"bytes": 900}
    r = _post(app, b"x" * 1001)
    assert r.status_code == 413 and r.json()["detail"][0]["loc"] == ["header", "content-length"]
    assert [c["bytes"] for c in calls] == [900]


def test_other_routes_are_not_buffered(guarded):
    app, _ = guarded
    r = _post(app, _Chunks(4), "/static/x")  # not a /v1/ route: the app reads what it wants
    assert r.status_code == 200 and r.json() == {"bytes": 2000}


# --------------------------------------------------------------------------- literal file names


def _events(fan: str, n: int) -> pd.DataFrame:
    """``n`` contract fan events of one fan (watches on consecutive evenings in May 2024)."""
    rows = [
        {
            "fan_id": fan,
            "room_id": "r1",
            "session_id": None,
            "event_time": f"2024-05-{i + 1:02d} 20:00",
            "event_type": "watch",
            "watch_seconds": 60.0,
            "amount": None,
        }
        for i in range(n)
    ]
    return validate(pd.DataFrame(rows), "fan_events", tz=TZ)


# (the name asked for, a different file its glob reading would match)
NAMES = [
    ("ev[1].parquet", "ev1.parquet"),
    ("a*b.parquet", "aXXb.parquet"),
    ("q?.parquet", "qZ.parquet"),
    ("d[1]/e.parquet", "d1/e.parquet"),  # a glob character in a folder name
]


def _write(path: Path, frame: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


@pytest.fixture(params=NAMES, ids=[asked for asked, _ in NAMES])
def names(request, tmp_path) -> Iterator[tuple[Path, Path]]:
    """(asked, decoy): the decoy file (fan ``decoy``, 2 events) exists, the asked one not yet."""
    asked, decoy = request.param
    _write(tmp_path / decoy, _events("decoy", 2))
    yield tmp_path / asked, tmp_path / decoy


def _batch_fans(path: Path) -> tuple[int, set[str]]:
    """Events and fans the batch run's Parquet reader sees at ``path``."""
    from features.fans import connect
    from serving.batch import _open_parquet, discover_inputs

    con = connect()
    try:
        con.execute(f"SET TimeZone = '{TZ}'")
        opened = _open_parquet(con, discover_inputs(path), TZ)
        fans = con.execute(f"SELECT DISTINCT fan_id FROM {opened.source.relation}").fetchall()
    finally:
        con.close()
    return opened.events, {f for (f,) in fans}


def test_batch_reads_the_named_file_only(names):
    asked, decoy = names
    _write(asked, _events("asked", 3))
    assert _batch_fans(asked) == (3, {"asked"})
    if asked.parent != decoy.parent:  # the asked file's own folder, listed
        assert _batch_fans(asked.parent) == (3, {"asked"})


def test_batch_missing_name_is_not_found(names):
    asked, _ = names
    with pytest.raises(FileNotFoundError, match="no such file"):
        _batch_fans(asked)


def test_fan_features_read_the_named_file_only(names):
    from features.fans import fan_features

    asked, decoy = names
    _write(asked, _events("asked", 3))
    paths = [asked, str(asked)] + ([asked.parent] if asked.parent != decoy.parent else [])
    for path in paths:
        feats = fan_features(path, CUTOFF, tz=TZ)
        assert feats["fan_id"].tolist() == ["asked"]
        assert feats["fan__events_all"].tolist() == [3.0]


def test_fan_features_missing_name_is_not_found(names):
    from features.fans import fan_features

    asked, _ = names
    with pytest.raises(FileNotFoundError, match="no such file"):
        fan_features(asked, CUTOFF, tz=TZ)


def test_dask_engine_reads_the_named_file_only(names):
    from serving.dask_engine import read_parquet_events

    asked, _ = names
    _write(asked, _events("asked", 3))
    frame = read_parquet_events([asked], ["fan_id", "event_type"]).compute(scheduler="sync")
    assert frame["fan_id"].tolist() == ["asked"] * 3


def test_read_fan_events_reads_the_named_file_only(names):
    from training.tiers_backtest import read_fan_events

    asked, _ = names
    with pytest.raises(FileNotFoundError):
        read_fan_events(asked, tz=TZ)
    _write(asked, _events("asked", 3))
    assert read_fan_events(asked, tz=TZ)["fan_id"].tolist() == ["asked"] * 3


def test_previous_output_is_read_literally(tmp_path):
    import duckdb

    from serving.batch import transition_matrix

    scores = lambda tier: pd.DataFrame({"fan_id": ["f1"], "tier": [tier]})  # noqa: E731
    current = _write(tmp_path / "now.parquet", scores("core"))
    _write(tmp_path / "prev1.parquet", scores("dormant"))
    previous = _write(tmp_path / "prev[1].parquet", scores("active"))
    with duckdb.connect() as con:
        matrix = transition_matrix(con, previous, current)
    assert matrix["active"]["core"] == 1 and matrix["dormant"]["core"] == 0


# --------------------------------------------------------------------------- file permissions


@pytest.fixture
def umask() -> Iterator[Any]:
    """Set the process umask for one test (restored after)."""
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mask, mode):
    from features.io import atomic_path, write_parquet

    umask(mask)
    target = tmp_path / "models" / "champion.json"
    with atomic_path(target) as tmp:
        tmp.write_text("{}")
    assert stat.S_IMODE(target.stat().st_mode) == mode
    table = write_parquet(pd.DataFrame({"x": [1]}), tmp_path / "t.parquet")
    assert stat.S_IMODE(table.stat().st_mode) == mode
    # replacing an existing file gives the same mode
    with atomic_path(target) as tmp:
        tmp.write_text("{}")
    assert stat.S_IMODE(target.stat().st_mode) == mode
    assert sorted(p.name for p in target.parent.iterdir()) == ["champion.json"]


# --------------------------------------------------------------------------- registry tags


def _register(uri: str, tag: str, files: dict[str, str], folder: Path) -> str:
    """A version of ``livecast-gmv`` whose run is tagged ``bundle=tag`` (train id ``t-new``)
    and logs ``files`` (name -> text) as its ``bundle`` artifact; returns the version."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from training.registry import BUNDLE_ARTIFACT, configure, ensure_experiment, model_name

    configure(uri)
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    tags = {"bundle": tag, "train_id": "t-new"}
    with mlflow.start_run(
        experiment_id=ensure_experiment(model_name("gmv"), uri), tags=tags
    ) as run:
        mlflow.log_artifacts(str(folder), artifact_path=BUNDLE_ARTIFACT)
    client = mlflow.MlflowClient()
    with contextlib.suppress(MlflowException):  # registered by an earlier call
        client.create_registered_model(model_name("gmv"))
    source = f"{run.info.artifact_uri}/{BUNDLE_ARTIFACT}"
    return str(client.create_model_version(model_name("gmv"), source, run.info.run_id).version)


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def victim(tmp_path) -> tuple[Path, Path]:
    """(models folder, a folder beside it): each holds one file that must survive."""
    models, victim = tmp_path / "models", tmp_path / "victim"
    for folder in (models, victim):
        folder.mkdir()
        (folder / "keep.txt").write_text("keep")
    return models, victim


@pytest.mark.parametrize("tag", ["../../victim", "ABSOLUTE", "..", "mlflow/.."])
def test_a_bundle_tag_naming_another_folder_is_refused(mlflow_uri, victim, tmp_path, tag):
    from training.bundle import version_bundle

    models, outside = victim
    tag = str(outside) if tag == "ABSOLUTE" else tag
    files = {"bundle.json": '{"train_id": "t-new"}'}
    version = _register(mlflow_uri, tag, files, tmp_path / "artifact")
    with pytest.raises(ValueError, match=f"bundle tag {tag!r} is not a plain folder name"):
        version_bundle(version, uri=mlflow_uri, models_dir=models)
    assert _tree(outside) == _tree(models) == {"keep.txt": "keep"}  # nothing downloaded
    leftovers = {p.name for p in tmp_path.iterdir()} - {"artifact", "mlruns.db", "mlruns-artifacts"}
    assert leftovers == {"models", "victim"} and [p.name for p in models.iterdir()] == ["keep.txt"]


def test_serve_refuses_a_bundle_tag_outside_the_models_folder(
    mlflow_uri, victim, tmp_path, monkeypatch
):
    from livecast import cli_serve
    from livecast.cli import app
    from livecast.config import get_settings

    models, outside = victim
    monkeypatch.setattr(cli_serve.os, "execve", lambda *args: None)  # never start a server
    files = {"bundle.json": '{"train_id": "t-new"}'}
    version = _register(mlflow_uri, "../../victim", files, tmp_path / "artifact")
    monkeypatch.setenv("LIVECAST_MODELS_DIR", str(models))
    monkeypatch.setenv("LIVECAST_MLFLOW_URI", mlflow_uri)
    get_settings.cache_clear()
    try:
        r = CliRunner().invoke(app, ["serve", "--model-version", version])
    finally:
        get_settings.cache_clear()
    assert r.exit_code == 2 and "bundle tag '../../victim' is not a plain folder name" in r.output
    assert "Traceback" not in r.output
    assert _tree(outside) == {"keep.txt": "keep"}


def test_an_artifact_without_bundle_json_replaces_nothing(mlflow_uri, tmp_path):
    from training.bundle import VERSION_CACHE, version_bundle

    models = tmp_path / "models"
    cached = models / VERSION_CACHE / "forecaster-new"
    cached.mkdir(parents=True)
    (cached / "bundle.json").write_text('{"train_id": "old"}')
    version = _register(mlflow_uri, "forecaster-new", {"notes.txt": "x"}, tmp_path / "a1")
    with pytest.raises(ValueError, match="forecaster-new"):
        version_bundle(version, uri=mlflow_uri, models_dir=models)
    assert [p.name for p in cached.parent.iterdir()] == ["forecaster-new"]  # no temporary folder
    assert _tree(cached) == {"bundle.json": '{"train_id": "old"}'}
    # a whole artifact does replace the stale copy
    files = {"bundle.json": '{"train_id": "t-new"}', "notes.txt": "y"}
    version = _register(mlflow_uri, "forecaster-new", files, tmp_path / "a2")
    assert version_bundle(version, uri=mlflow_uri, models_dir=models) == cached
    assert _tree(cached) == files


# --------------------------------------------------------------------------- interrupted runs

_HELD_RUN = """
import sys, time
from pathlib import Path
from types import SimpleNamespace

import serving.batch as batch


def hold(*args, **kwargs):  # mid-run: the temporary output and the spill folder exist
    Path(sys.argv[3]).touch()
    time.sleep(60)


batch._score = lambda model, feats, num_threads: batch.empty_scores()
batch.summarise = hold
model = SimpleNamespace(rules=SimpleNamespace(window_days=30), metadata={})
batch.segment(sys.argv[1], sys.argv[2], model=model, cutoff="2024-06-01", partitions=2,
              progress=False)
"""
"""A batch run (stand-in model) that stops before its summary until signalled."""


@pytest.fixture
def run_tmp(tmp_path, monkeypatch) -> Path:
    """A fresh TMPDIR, for this process and its children."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() caches its answer
    return folder


def _segment(events: Path, out: Path, monkeypatch) -> Any:
    """A batch run in this process with a stand-in model (every bucket scores no fan)."""
    import serving.batch as batch

    monkeypatch.setattr(batch, "_score", lambda model, feats, num_threads: batch.empty_scores())
    model = SimpleNamespace(rules=SimpleNamespace(window_days=30), metadata={})
    return batch.segment(
        events, out, model=model, cutoff=CUTOFF, partitions=2, tz=TZ, progress=False
    )


def _litter(out: Path, tmp: Path) -> list[str]:
    """Temporary files beside the output and the run's folders in the temporary folder."""
    beside = [p.name for p in out.parent.iterdir() if p.name.startswith(".")]
    return sorted(beside + [p.name for p in tmp.iterdir() if p.name.startswith("livecast-")])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["TERM", "KILL"])
def test_an_interrupted_batch_run_leaves_no_litter(tmp_path, run_tmp, monkeypatch, sig):
    events = _write(tmp_path / "events.parquet", _events("f1", 5))
    out, ready = tmp_path / "out" / "tiers.parquet", tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-c", _HELD_RUN, str(events), str(out), str(ready)]
    proc = subprocess.Popen(args, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the run never got going"
            time.sleep(0.05)
        assert len(_litter(out, run_tmp)) == 3  # output, summary, spill folder
        proc.send_signal(sig)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if sig == signal.SIGTERM:  # the run cleans up after itself
        assert code == 128 + signal.SIGTERM and _litter(out, run_tmp) == []
    else:  # nothing can: the next run removes what the dead one left
        assert code == -signal.SIGKILL and len(_litter(out, run_tmp)) == 3
        _segment(events, out, monkeypatch)
        assert _litter(out, run_tmp) == []
    assert out.exists() == (sig == signal.SIGKILL)


def test_only_leftovers_of_dead_processes_are_removed(tmp_path, run_tmp):
    from features.io import owner_tag, scratch_dir, write_parquet

    finished = subprocess.Popen([sys.executable, "-c", ""])
    finished.wait()
    dead, live = owner_tag(finished.pid), owner_tag()  # live: this process
    names = {
        f".t.parquet.{dead}.k3j9x_2a.tmp": False,
        f".t.parquet.{live}.k3j9x_2a.tmp": True,  # a concurrent writer's
        f".t.parquet.{finished.pid}-0000000g.k3j9x_2a.tmp": True,  # another host's
        f".other.parquet.{dead}.k3j9x_2a.tmp": True,  # another target's
        ".t.parquet.k3j9x_2a.tmp": True,  # owner unknown
    }
    for name in names:
        (tmp_path / name).touch()
    (run_tmp / f"livecast-duckdb-{dead}.x1").mkdir()
    (run_tmp / f"livecast-duckdb-{dead}.x1" / "spill.tmp").touch()
    (run_tmp / f"livecast-duckdb-{live}.x2").mkdir()
    write_parquet(pd.DataFrame({"x": [1]}), tmp_path / "t.parquet")
    kept = {p.name for p in tmp_path.iterdir() if p.name.startswith(".")}
    assert kept == {name for name, keep in names.items() if keep}
    spill = scratch_dir("livecast-duckdb-")
    assert spill.parent == run_tmp and spill.name.startswith(f"livecast-duckdb-{live}.")
    assert sorted(p.name for p in run_tmp.iterdir()) == sorted(
        [f"livecast-duckdb-{live}.x2", spill.name]
    )


# --------------------------------------------------------------------------- settings in SQL

PAYLOAD = "a'; COPY (SELECT 42 AS x) TO '{pwned}' (FORMAT csv); --"


@pytest.mark.parametrize("name", ["it's", PAYLOAD], ids=["apostrophe", "payload"])
def test_tmpdir_is_a_folder_name_not_sql(tmp_path, run_tmp, monkeypatch, name):
    pwned = tmp_path / "pwned.csv"
    weird = run_tmp / name.format(pwned=pwned)
    weird.mkdir(parents=True)
    monkeypatch.setenv("TMPDIR", str(weird))
    monkeypatch.setattr(tempfile, "tempdir", None)
    assert tempfile.gettempdir() == str(weird)  # the run's spill folder goes there
    events = _write(tmp_path / "events.parquet", _events("f1", 5))
    out = tmp_path / "out" / "tiers.parquet"
    assert _segment(events, out, monkeypatch).events == 5
    assert out.exists() and not pwned.exists()
    assert list(weird.iterdir()) == []  # and is removed at the end


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus", "UTC'; SELECT 1; --", "../etc/passwd", "localtime"]
)
@pytest.mark.parametrize("command", ["segment", "serve"])
def test_an_invalid_timezone_setting_is_a_clear_error(tmp_path, monkeypatch, zone, command):
    from livecast import cli_serve
    from livecast.cli import app
    from livecast.config import get_settings

    monkeypatch.setattr(cli_serve.os, "execve", lambda *args: None)  # never start a server
    events = _write(tmp_path / "events.parquet", _events("f1", 5))
    args = {"segment": ["--events", str(events), "--out", str(tmp_path / "o.parquet")]}
    monkeypatch.setenv("LIVECAST_TIMEZONE", zone)
    monkeypatch.setenv("LIVECAST_MODELS_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        r = CliRunner().invoke(app, [command, *args.get(command, [])])
    finally:
        get_settings.cache_clear()
    output = " ".join(r.output.split())  # the console wraps long lines
    assert r.exit_code == 2, r.output
    assert f"LIVECAST_TIMEZONE: {zone!r} is not an IANA timezone" in output
    assert "Traceback" not in r.output


# --------------------------------------------------------------------------- orphans and ports

_ORPHAN_PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]])
print(child.pid, flush=True)
time.sleep(120)
"""
_ORPHAN_CHILD = """
import sys, time
from serving.service import die_with_parent
die_with_parent()
open(sys.argv[1], "w").write("ready")
time.sleep(120)
"""


def _running(pid: int) -> bool:
    """The process exists and is not a zombie waiting for whoever adopted it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_worker_dies_with_its_server(tmp_path):
    ready = tmp_path / "ready"
    parent = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_PARENT, _ORPHAN_CHILD, str(ready)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready.exists(), "the child never started"
        parent.kill()  # kill -9 of the server: the worker must not keep running (and its port)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _running(child):
            time.sleep(0.1)
        if not _running(child):
            return
        os.kill(child, signal.SIGKILL)
        pytest.fail("the worker outlived its server")
    finally:
        parent.kill()


def test_serve_refuses_a_taken_port_at_once(monkeypatch, tmp_path):
    import socket

    from livecast import cli_serve
    from livecast.cli import app

    calls: list[Any] = []
    monkeypatch.setattr(cli_serve.os, "execve", lambda *args: calls.append(args))
    monkeypatch.setattr(cli_serve, "resolve_bundle", lambda *args: tmp_path)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        r = CliRunner().invoke(app, ["serve", "--port", str(port)])
        assert r.exit_code == 2
        assert f"127.0.0.1:{port}" in r.output and "in use" in r.output
        assert not calls  # no server started
    assert cli_serve.port_problem("127.0.0.1", port) is None  # free again
