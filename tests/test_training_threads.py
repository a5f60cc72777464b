"""Training threads and the training lock (issue 17, item 11).

Training defaults to the cores this process may use (affinity, cgroup quota, LIVECAST_THREADS),
the thread count changes neither the train id nor the trees, waiting OpenMP threads sleep
instead of spinning, and one training at a time holds the lock of the models folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from livecast import config
from livecast.config import available_cores, cgroup_cpu_limit, detected_cores, get_settings
from training.lock import LOCK_FILE, TrainingBusy, TrainingLock, read_holder, training_lock
from training.models import ForecastParams, fit_forecaster
from training.tiers import TierParams
from training.train import train_id_for

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter of this environment (from the project root)."""
    full = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=full | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def settings(monkeypatch):
    """Fresh settings after the test changes LIVECAST_* variables."""
    monkeypatch.delenv("LIVECAST_THREADS", raising=False)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


# ----------------------------------------------------------------------------------------------
# The cores this process may use


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
def test_detected_cores_follow_the_cpu_affinity():
    code = (
        "import os\n"
        "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "from livecast.config import detected_cores\n"
        "print(detected_cores())"
    )
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_detected_cores_are_the_affinity_bounded_by_the_cgroup_quota(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(config, "cgroup_cpu_limit", lambda: None)
    assert detected_cores() == 4
    monkeypatch.setattr(config, "cgroup_cpu_limit", lambda: 2)
    assert detected_cores() == 2
    monkeypatch.setattr(config, "cgroup_cpu_limit", lambda: 16)
    assert detected_cores() == 4


def test_batch_runs_and_tier_training_use_the_cores_this_process_may_use(monkeypatch, settings):
    """The batch run's DuckDB and LightGBM threads follow the cgroup quota (a container's
    ``--cpus``), and the tier model's fan-feature SQL the training threads."""
    from features import fans
    from serving.batch import batch_threads
    from training import tiers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(config, "cgroup_cpu_limit", lambda: 3)
    assert batch_threads() == 3
    seen = []
    real = fans.connect
    monkeypatch.setattr(tiers, "connect", lambda **kw: seen.append(kw) or real(**kw))
    settings.setenv("LIVECAST_THREADS", "1")
    get_settings.cache_clear()
    events = pd.DataFrame(
        {
            "fan_id": ["a", "b"],
            "room_id": ["r", "r"],
            "event_time": pd.to_datetime(["2026-01-01 20:00", "2026-01-02 20:00"], utc=True),
            "event_type": ["watch", "order"],
            "amount": [None, 50.0],
        }
    )
    tiers.tier_frame(events, [pd.Timestamp("2026-01-03", tz="UTC")])
    assert seen == [{"threads": 1}]


def test_cgroup_quota_v2_and_v1(tmp_path):
    proc = tmp_path / "cgroup"
    root = tmp_path / "fs"
    # v2: the process's cgroup and its ancestors; the tightest quota, rounded up to whole cores
    (root / "a" / "b").mkdir(parents=True)
    proc.write_text("0::/a/b\n")
    assert cgroup_cpu_limit(root, proc) is None
    (root / "a" / "b" / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(root, proc) is None
    (root / "a" / "cpu.max").write_text("250000 100000\n")
    assert cgroup_cpu_limit(root, proc) == 3
    (root / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(root, proc) == 2
    # v1: cpu.cfs_quota_us / cpu.cfs_period_us (-1: no quota)
    proc.write_text("3:cpu,cpuacct:/x\n2:memory:/x\n")
    v1 = root / "cpu,cpuacct" / "x"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(root, proc) is None
    (v1 / "cpu.cfs_quota_us").write_text("50000\n")
    assert cgroup_cpu_limit(root, proc) == 1
    # nothing readable: no limit
    assert cgroup_cpu_limit(tmp_path / "none", tmp_path / "none.txt") is None


def test_livecast_threads_overrides_the_detected_cores(settings):
    settings.setattr(config, "detected_cores", lambda: 3)
    assert available_cores() == 3
    settings.setenv("LIVECAST_THREADS", "5")
    get_settings.cache_clear()
    assert available_cores() == 5


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("many", "'many' is not a whole number of threads"),
        ("1.5", "'1.5' is not a whole number of threads"),
        ("0", "'0': the number of threads must be at least 1"),
        ("-2", "'-2': the number of threads must be at least 1"),
    ],
)
def test_a_bad_livecast_threads_is_an_error_naming_the_variable(settings, value, message):
    settings.setenv("LIVECAST_THREADS", value)
    get_settings.cache_clear()
    with pytest.raises(ValueError, match="LIVECAST_THREADS") as err:
        available_cores()
    assert message in str(err.value)


# ----------------------------------------------------------------------------------------------
# Training threads: defaults, train id, same trees


def test_training_threads_default_to_the_available_cores(settings):
    settings.setattr(config, "detected_cores", lambda: 3)
    assert ForecastParams().num_threads == 0 and TierParams().num_threads == 0  # 0: auto
    assert ForecastParams().lgb_params()["num_threads"] == 3
    assert TierParams().lgb_params()["num_threads"] == 3
    settings.setenv("LIVECAST_THREADS", "1")
    get_settings.cache_clear()
    assert ForecastParams().lgb_params()["num_threads"] == 1
    assert TierParams().lgb_params()["num_threads"] == 1
    # an explicit count is kept; the model stays strict
    assert ForecastParams(num_threads=2).lgb_params()["num_threads"] == 2
    with pytest.raises(ValueError):
        ForecastParams(num_threads=-1)


def test_train_id_does_not_depend_on_the_thread_count():
    ids = {train_id_for("signature", ForecastParams(num_threads=n)) for n in (0, 1, 2, 16)}
    assert len(ids) == 1
    assert train_id_for("signature", ForecastParams(seed=1)) not in ids  # a model setting does


def test_tuned_parameter_files_do_not_pin_the_thread_count(tmp_path):
    from training.tune import load_params, save_params

    path = save_params(ForecastParams(num_threads=2, learning_rate=0.05), tmp_path / "p.json")
    assert "num_threads" not in path.read_text()
    assert load_params(path).learning_rate == 0.05
    path.write_text('{"num_threads": 2, "learning_rate": 0.05}')  # written before the fix
    assert load_params(path).num_threads == 0
    assert load_params(path, num_threads=1).num_threads == 1


def _trees(booster) -> str:
    """The model text without its ``parameters:`` footer (which records the thread count)."""
    return booster.model_to_string().split("\nparameters:")[0]


def test_one_and_two_threads_fit_the_same_forecaster(small_frame):
    params = ForecastParams(max_rounds=40, early_stopping_rounds=10, select=False)
    one, two = (
        fit_forecaster(small_frame, params.model_copy(update={"num_threads": n}), targets=("gmv",))
        for n in (1, 2)
    )
    assert _trees(one.models["gmv"].booster) == _trees(two.models["gmv"].booster)
    rows = small_frame.tail(50)
    pd.testing.assert_frame_equal(one.predict(rows, num_threads=1), two.predict(rows, 1))


def test_one_and_two_threads_fit_the_same_tier_model(small_dataset):
    from training.tiers import fit_tier_model, tier_frame

    cutoffs = list(pd.date_range("2024-04-01", periods=3, freq="30D"))
    frame = tier_frame(small_dataset.fan_events, cutoffs)
    fits = [
        fit_tier_model(None, cutoffs, params=TierParams(max_rounds=20, num_threads=n), frame=frame)
        for n in (1, 2)
    ]
    assert _trees(fits[0].booster) == _trees(fits[1].booster)
    assert fits[0].class_weights == fits[1].class_weights
    X = frame.head(200)
    np.testing.assert_array_equal(fits[0].predict_proba(X, 1), fits[1].predict_proba(X, 1))


def test_openmp_threads_sleep_when_waiting():
    """Spinning OpenMP threads stalled LightGBM ~10x on busy cores: libgomp must read PASSIVE
    (spin count 0; unset, it spins 300,000 times), which it does once, when LightGBM loads it.
    A fresh interpreter: importing LightGBM costs seconds, so one import here; the other
    modules are checked for the order of their statements."""
    out = _python("import training.models", OMP_DISPLAY_ENV="VERBOSE")
    assert out.returncode == 0, out.stderr
    spins = [line.strip() for line in out.stderr.splitlines() if "GOMP_SPINCOUNT =" in line]
    assert spins and set(spins) == {"GOMP_SPINCOUNT = '0'"}, out.stderr


@pytest.mark.parametrize("module", ["training/models.py", "training/tiers.py"])
def test_the_wait_policy_is_set_before_lightgbm_is_imported(module):
    import ast

    body = ast.parse((ROOT / module).read_text()).body

    def position(match) -> int:
        return next(i for i, node in enumerate(body) if match(ast.unparse(node)))

    policy = position(lambda s: s == "os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')")
    assert policy < position(lambda s: s.startswith("import lightgbm"))
    assert all(  # nothing before it imports a project module (which could load LightGBM)
        not ast.unparse(node).startswith(("from features", "from training", "from livecast"))
        for node in body[:policy]
    )


def test_the_command_line_sets_the_wait_policy_before_any_lightgbm_import():
    code = (
        "import os, sys\n"
        "import livecast.cli\n"
        "print(os.environ.get('OMP_WAIT_POLICY'), 'lightgbm' in sys.modules)"
    )
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["PASSIVE", "False"]
    kept = _python(code, OMP_WAIT_POLICY="ACTIVE")  # a user's own choice is kept
    assert kept.stdout.split() == ["ACTIVE", "False"]


# ----------------------------------------------------------------------------------------------
# The training lock

HOLDER = """
import sys
from training.lock import TrainingLock
lock = TrainingLock(sys.argv[1], command=sys.argv[2]).acquire()
print("ready", flush=True)
sys.stdin.readline()
lock.release()
print("released", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding the training lock of ``tmp_path / "models"`` until told."""
    path = tmp_path / "models" / LOCK_FILE
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), "livecast train --data elsewhere"],
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    yield proc, path
    proc.kill()
    proc.wait(timeout=30)


def test_the_lock_refuses_a_second_holder_and_is_free_after_release(tmp_path):
    path = tmp_path / "models" / LOCK_FILE
    first = TrainingLock(path, command="livecast train").acquire()
    with pytest.raises(TrainingBusy) as err:
        TrainingLock(path).acquire()  # a second open file: refused, even in the same process
    message = str(err.value)
    assert f"pid {os.getpid()} (livecast train)" in message and str(path) in message
    assert "another training is running" in message and "--wait" in message
    first.release()
    assert read_holder(path) is None  # emptied on release
    with TrainingLock(path) as again:
        assert again.held and read_holder(path)["pid"] == os.getpid()


def test_the_lock_names_another_process_and_a_dead_holder_does_not_block(holder):
    proc, path = holder
    with pytest.raises(TrainingBusy) as err:
        TrainingLock(path).acquire()
    assert err.value.holder["pid"] == proc.pid
    assert f"pid {proc.pid} (livecast train --data elsewhere)" in str(err.value)
    proc.kill()  # dies holding the lock: its record stays in the file, the flock goes with it
    proc.wait(timeout=30)
    assert read_holder(path)["pid"] == proc.pid
    with TrainingLock(path) as lock:
        assert lock.held


def test_the_lock_is_released_on_an_exception(tmp_path):
    with pytest.raises(RuntimeError, match="boom"), training_lock(tmp_path):
        raise RuntimeError("boom")
    with training_lock(tmp_path) as path:
        assert path == tmp_path / LOCK_FILE


def test_wait_queues_behind_the_holder(holder):
    proc, path = holder
    seen = []

    def on_wait(who):
        seen.append(who)
        proc.stdin.write("\n")  # let the holder finish
        proc.stdin.flush()

    lock = TrainingLock(path).acquire(wait=True, on_wait=on_wait)
    try:
        assert seen[0]["pid"] == proc.pid
        assert proc.stdout.readline().strip() == "released"
        assert read_holder(path)["pid"] == os.getpid()
    finally:
        lock.release()


# ----------------------------------------------------------------------------------------------
# The command line

runner = CliRunner()


@pytest.fixture
def cli_env(tmp_path, settings):
    settings.setenv("LIVECAST_MODELS_DIR", str(tmp_path / "models"))
    settings.setenv("LIVECAST_REPORTS_DIR", str(tmp_path / "reports"))
    settings.setenv("LIVECAST_MLFLOW_URI", f"sqlite:///{tmp_path / 'unused.db'}")
    get_settings.cache_clear()
    return tmp_path


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--data", "{tmp}/data"],
        ["tune", "--data", "{tmp}/data", "--out", "{tmp}/p.json"],
        ["pipeline", "--data", "{tmp}/sim"],
        ["segments", "train", "--events", "{tmp}/events"],
    ],
    ids=["train", "tune", "pipeline", "segments-train"],
)
def test_training_commands_exit_2_while_another_training_runs(cli_env, settings, holder, args):
    import features.simulate
    from livecast.cli import app

    def no_simulation(**kwargs):
        raise AssertionError("the pipeline simulated data while another training held the lock")

    settings.setattr(features.simulate, "simulate", no_simulation)
    proc, path = holder
    tmp = cli_env
    r = runner.invoke(app, [a.format(tmp=tmp) for a in args])
    assert r.exit_code == 2, r.output
    assert "another training is running" in r.output
    assert f"pid {proc.pid} (livecast train --data elsewhere)" in r.output
    assert str(path) in r.output and "--wait" in r.output
    assert "Traceback" not in r.output


def test_a_bad_livecast_threads_makes_train_exit_2(cli_env, settings):
    from livecast.cli import app

    settings.setenv("LIVECAST_THREADS", "many")
    get_settings.cache_clear()
    r = runner.invoke(app, ["train", "--data", str(cli_env / "data")])
    assert r.exit_code == 2
    assert "LIVECAST_THREADS" in r.output and "whole number of threads" in r.output
