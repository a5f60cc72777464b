"""Damaged model bundles: a clear BundleError naming the file, never a crashed or hung process.

LightGBM aborts the whole process (SIGABRT) on a truncated model file, so every case that
would hand such a file to LightGBM without the checks runs in a subprocess: the test process
survives either way and the exit code tells the story (2 with a message, not 134).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from service_support import free_port
from typer.testing import CliRunner

from features.plan import example_plan
from livecast import cli_serve
from livecast.cli import app
from training.bundle import (
    BUNDLE_FILE,
    CHAMPION_FILE,
    BundleError,
    check_booster_text,
    load_bundle,
    sha256_file,
)
from training.predict import score_plans
from training.tiers import BOOSTER_FILE, load_tier_bundle

ROOT = Path(__file__).resolve().parent.parent
LIVECAST = Path(sys.executable).parent / "livecast"
BOOSTER = "viewers.lgb.txt"
runner = CliRunner()


# --------------------------------------------------------------------------- corruptions


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def _change_leaf_value(file: Path) -> None:
    """One digit of the first leaf value changed: still a valid model, LightGBM loads it and
    silently predicts something else."""
    data = bytearray(file.read_bytes())
    i = data.index(b"leaf_value=") + len(b"leaf_value=")
    while not chr(data[i]).isdigit():
        i += 1
    data[i] = ord(str((int(chr(data[i])) + 1) % 10))
    file.write_bytes(bytes(data))


def _garbage_json(folder: Path) -> None:
    (folder / BUNDLE_FILE).write_text('{"features": ["a", "b"], "models": {"viewers": {"fi')


def _drop_checksums(folder: Path) -> None:
    """The bundle as written before checksums existed."""
    meta = json.loads((folder / BUNDLE_FILE).read_text())
    meta.pop("files", None)
    (folder / BUNDLE_FILE).write_text(json.dumps(meta, indent=2))


def _score(path: Path) -> list[dict[str, Any]]:
    bundle = load_bundle(path)
    room = str(bundle.history_sessions["room_id"].iloc[0])
    plans = [example_plan().model_copy(update={"room_id": room}), example_plan()]
    return [{k: v for k, v in item.items() if k != "model"} for item in score_plans(bundle, plans)]


@pytest.fixture(scope="module")
def reference(service_models) -> list[dict[str, Any]]:
    """The forecasts of the intact test bundle."""
    return _score(service_models.bundle)


# --------------------------------------------------------------------------- checksums


def test_bundles_list_the_sha256_of_their_boosters_and_history(service_models):
    meta = json.loads((service_models.bundle / BUNDLE_FILE).read_text())
    expected = {f"{t}.lgb.txt" for t in ("viewers", "orders", "gmv")}
    expected |= {"history_sessions.parquet", "history_products.parquet"}
    assert set(meta["files"]) == expected
    for name, digest in meta["files"].items():
        assert digest == sha256_file(service_models.bundle / name)
    tier_meta = json.loads((service_models.tiers / BUNDLE_FILE).read_text())
    assert tier_meta["files"] == {BOOSTER_FILE: sha256_file(service_models.tiers / BOOSTER_FILE)}


def test_an_intact_copy_and_an_old_bundle_without_checksums_score_identically(
    service_models, reference, tmp_path
):
    copy = _copy(service_models.bundle, tmp_path / "copy")
    assert _score(copy) == reference
    old = _copy(service_models.bundle, tmp_path / "old")
    _drop_checksums(old)
    assert _score(old) == reference
    tiers = _copy(service_models.tiers, tmp_path / "tiers-old")
    _drop_checksums(tiers)
    assert load_tier_bundle(tiers).booster.model_to_string() == (
        load_tier_bundle(service_models.tiers).booster.model_to_string()
    )


# --------------------------------------------------------------------------- in-process cases
# (none of these would abort LightGBM: without the checks they load wrong or fail elsewhere)


def _damage(folder: Path, how: str, name: str) -> None:
    """Damage file ``name`` of a bundle copy: "leaf" (change a leaf value), "cut" (keep the
    first half), "delete", or "garbage" (unparseable JSON)."""
    file = folder / name
    if how == "leaf":
        _change_leaf_value(file)
    elif how == "cut":
        _truncate(file)
    elif how == "delete":
        file.unlink()
    else:
        assert how == "garbage" and name == BUNDLE_FILE
        _garbage_json(folder)


@pytest.mark.parametrize(
    ("how", "bad_file", "problem"),
    [
        ("leaf", BOOSTER, "fails its sha256 checksum"),
        ("garbage", BUNDLE_FILE, "does not parse as JSON"),
        ("delete", "history_products.parquet", "is missing"),
        ("delete", "gmv.lgb.txt", "is missing"),
        ("cut", "history_sessions.parquet", "fails its sha256 checksum"),
    ],
)
def test_a_damaged_forecaster_bundle_is_a_bundle_error_naming_the_file(
    service_models, tmp_path, how, bad_file, problem
):
    bad = _copy(service_models.bundle, tmp_path / "forecaster-bad")
    _damage(bad, how, bad_file)
    with pytest.raises(BundleError, match=problem) as info:
        load_bundle(bad)
    assert info.value.file == bad_file and info.value.path == bad
    assert str(bad) in str(info.value) and bad_file in str(info.value)


def test_a_garbage_champion_pointer_is_a_bundle_error(service_models, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / CHAMPION_FILE).write_text("{not json")
    with pytest.raises(BundleError, match=f"{CHAMPION_FILE} does not parse"):
        load_bundle(models)


@pytest.mark.parametrize(
    ("how", "bad_file"),
    [("leaf", BOOSTER_FILE), ("garbage", BUNDLE_FILE), ("delete", BOOSTER_FILE)],
)
def test_a_damaged_tier_bundle_is_a_bundle_error_naming_the_file(
    service_models, tmp_path, how, bad_file
):
    bad = _copy(service_models.tiers, tmp_path / "tiers-bad")
    _damage(bad, how, bad_file)
    with pytest.raises(BundleError) as info:
        load_tier_bundle(bad)
    assert info.value.file == bad_file and str(bad) in str(info.value)


def test_the_check_for_old_boosters_finds_cuts_lost_bytes_and_nul_bytes(service_models, tmp_path):
    """Without checksums the booster text itself is checked before LightGBM sees it (pure
    Python: nothing here reaches LightGBM)."""
    good = (service_models.bundle / BOOSTER).read_bytes()
    tree = good.index(b"\nleaf_value=")
    cases = {
        "cut": good[: len(good) // 2],
        "cut-in-tail": good[:-3],
        "lost-byte": good[:tree] + good[tree + 1 :],
        "nul-byte": good[:tree] + b"\0" + good[tree + 1 :],
    }
    assert check_booster_text(service_models.bundle / BOOSTER) is None
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert check_booster_text(tmp_path / name) is not None, name


# --------------------------------------------------------------------------- subprocesses


def _run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a command in its own process group; on timeout kill the group (a hung server)."""
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        encoding="utf-8",
        errors="replace",  # LightGBM's abort message can quote the model file's raw bytes
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{cmd[1]} still running after {timeout} s:\n{err[-2000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.parametrize("checksums", [True, False], ids=["checksums", "old-bundle"])
def test_livecast_forecast_on_a_truncated_booster_exits_2_with_one_line(
    service_models, tmp_path, checksums
):
    bad = _copy(service_models.bundle, tmp_path / "forecaster-cut")
    if not checksums:
        _drop_checksums(bad)
    _truncate(bad / BOOSTER)
    r = _run([str(LIVECAST), "forecast", "--bundle", str(bad)])
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])  # not 134 (SIGABRT)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and BOOSTER in lines[0] and str(bad) in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_livecast_serve_on_a_truncated_booster_exits_2_before_starting_the_server(
    service_models, tmp_path
):
    bad = _copy(service_models.bundle, tmp_path / "forecaster-cut")
    _truncate(bad / BOOSTER)
    port = free_port()
    r = _run([str(LIVECAST), "serve", "--bundle", str(bad), "--port", str(port)], timeout=90)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])  # the server never started
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: {bad}: corrupted model bundle: {BOOSTER} fails its sha256")


@pytest.mark.parametrize(("how", "bad_file"), [("garbage", BUNDLE_FILE), ("cut", BOOSTER)])
def test_serve_checks_the_bundle_before_handing_it_to_the_server(
    service_models, tmp_path, monkeypatch, how, bad_file
):
    calls: list[Any] = []
    monkeypatch.setattr(cli_serve.os, "execve", lambda *args: calls.append(args))
    bad = _copy(service_models.bundle, tmp_path / "forecaster-bad")
    _damage(bad, how, bad_file)
    r = runner.invoke(
        app, ["serve", "--bundle", str(bad), "--tier-bundle", str(service_models.tiers)]
    )
    assert r.exit_code == 2 and not calls, r.output
    assert bad_file in r.output and "Traceback" not in r.output
    # an intact forecaster with a damaged tier bundle starts, with a warning
    bad_tiers = _copy(service_models.tiers, tmp_path / "tiers-bad")
    _truncate(bad_tiers / BOOSTER_FILE)
    args = ["serve", "--bundle", str(service_models.bundle), "--tier-bundle", str(bad_tiers)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0 and len(calls) == 1, r.output
    assert "warning: /v1/segment will answer 503" in r.output and BOOSTER_FILE in r.output


SERVICE_SCRIPT = textwrap.dedent(
    """
    import json
    from starlette.testclient import TestClient
    from features.plan import example_plan
    from serving.service import Livecast

    plan = json.loads(example_plan().model_dump_json(exclude_none=True))
    event = {"fan_id": "f1", "room_id": "r1", "event_time": "2026-01-01T20:00:00+08:00",
             "event_type": "watch", "watch_seconds": 60}
    with TestClient(Livecast.to_asgi()) as client:
        out = {
            "readyz": client.get("/readyz").status_code,
            "forecast": client.post("/v1/forecast", json={"plans": [plan]}).status_code,
        }
        seg = client.post("/v1/segment", json={"events": [event]})
        out["segment"] = seg.status_code
        out["segment_body"] = seg.json()
    print("RESULT " + json.dumps(out))
    """
)


def test_a_truncated_tier_bundle_disables_only_segment(service_models, tmp_path, monkeypatch):
    """The service on an intact forecaster and a truncated tier booster (in a subprocess:
    without the checks LightGBM aborts it): ready, forecasts answer 200, /v1/segment 503 with
    the reason in the service's error shape."""
    bad = _copy(service_models.tiers, tmp_path / "tiers-cut")
    _truncate(bad / BOOSTER_FILE)
    script = tmp_path / "service_check.py"
    script.write_text(SERVICE_SCRIPT)
    monkeypatch.setenv("LIVECAST_SERVE_BUNDLE", str(service_models.bundle))  # as livecast serve
    monkeypatch.setenv("LIVECAST_SERVE_TIER_BUNDLE", str(bad))
    r = _run([sys.executable, str(script)], timeout=180)
    assert r.returncode == 0, (r.returncode, r.stderr[-3000:])
    line = next(x for x in r.stdout.splitlines() if x.startswith("RESULT "))
    out = json.loads(line.removeprefix("RESULT "))
    assert (out["readyz"], out["forecast"], out["segment"]) == (200, 200, 503), out
    body = out["segment_body"]
    assert set(body) == {"error", "detail"} and body["detail"][0]["loc"] == ["model"]
    assert "tiers-cut" in body["error"] and BOOSTER_FILE in body["error"]
    assert "checksum" in body["error"] and str(tmp_path) not in body["error"]
