"""Hostile input, fast cases (CI): request bodies streamed past the size limit, file names with
glob characters, and the permissions of atomically written files."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from starlette.responses import JSONResponse

from features.contract import validate

TZ = "Asia/Shanghai"
CUTOFF = "2024-06-01"

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
