"""Notebook tier: every notebook runs top to bottom on tiny data, and stays paired with its script.

Each notebook is executed with nbclient in a kernel started from this interpreter (a kernel
spec written to a temporary Jupyter path, so nothing installed on the machine is used), in a
temporary working folder with a temporary MLflow store, models and reports folder. The
``parameters`` cell is followed by an injected cell with small values, as papermill does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
KERNEL = "livecast-tests"
CELL_TIMEOUT = 180  # seconds per cell; the whole notebook takes far less on tiny data

SMALL: dict[str, dict[str, object]] = {
    "01_retrain_forecaster": {
        "ROOMS": 6,
        "DAYS": 200,
        "N_TRIALS": 2,
        "FOLDS": 1,
        "HORIZON_DAYS": 20,
        "MAX_ROUNDS": 150,
        "NUM_THREADS": 1,
    },
    "02_fan_tiers": {"ROOMS": 4, "DAYS": 150, "FANS": 400, "NUM_THREADS": 1},
    "03_explore_sessions": {"ROOMS": 6, "DAYS": 240},
}

# What each notebook leaves in its OUTPUT_DIR (the notebook-local MLflow store and bundles too)
OUTPUTS: dict[str, tuple[str, ...]] = {
    "01_retrain_forecaster": (
        "mlruns.db",
        "best_params.json",
        "report/metrics.json",
        "report-default/metrics.json",
        "models/champion.json",
    ),
    "02_fan_tiers": ("mlruns.db", "tiers.parquet", "tiers.summary.json", "tiers_previous.parquet"),
    "03_explore_sessions": ("best_slots.csv",),
}


def _scripts() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def _sources(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_every_notebook_has_a_small_configuration():
    assert {p.stem for p in _scripts()} == set(SMALL) == set(OUTPUTS)


@pytest.mark.parametrize("script", _scripts(), ids=_ids(_scripts()))
def test_ipynb_is_paired_with_its_script_and_has_no_outputs(script: Path):
    ipynb = script.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} missing: run jupytext --sync {script.name}"
    from_py = jupytext.read(script, fmt="py:percent")
    committed = nbformat.read(ipynb, as_version=4)
    assert _sources(committed) == _sources(from_py), (
        f"{ipynb.name} differs from {script.name}: run jupytext --sync {script.name}"
    )
    for cell in committed.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{ipynb.name} has committed outputs"
            )
    tagged = [c for c in committed.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{ipynb.name}: exactly one cell must be tagged 'parameters'"
    names = {line.split("=")[0].strip() for line in tagged[0].source.splitlines() if "=" in line}
    assert set(SMALL[script.stem]) <= names, "the test overrides a parameter the notebook lacks"
    assert {"SEED", "OUTPUT_DIR"} <= names


@pytest.fixture(scope="module")
def kernel_path(tmp_path_factory) -> Path:
    """A Jupyter data folder holding a kernel spec that runs this very interpreter."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "livecast tests", "language": "python"})
    )
    return root


def _inject(nb, values: dict[str, object]) -> None:
    """Insert a cell after the ``parameters`` cell that overrides ``values``."""
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    source = "\n".join(f"{k} = {v!r}" for k, v in values.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(index + 1, cell)


@pytest.mark.parametrize("script", _scripts(), ids=_ids(_scripts()))
def test_notebook_runs_top_to_bottom(script: Path, kernel_path, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_path))
    # off-screen backend; livecast.notebook.show still renders every figure to a PNG output
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("LIVECAST_MLFLOW_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    monkeypatch.setenv("LIVECAST_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("LIVECAST_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("LIVECAST_DATA_DIR", str(tmp_path / "data"))
    nb = nbformat.read(script.with_suffix(".ipynb"), as_version=4)
    out_dir = tmp_path / "out"
    _inject(nb, {**SMALL[script.stem], "SEED": 0, "OUTPUT_DIR": str(out_dir)})
    client = NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=CELL_TIMEOUT,
        allow_errors=False,
        resources={"metadata": {"path": str(work)}},
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors == []
    # plots were drawn, and nothing was written outside the temporary folders
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the notebook drew no plot"
    for name in OUTPUTS[script.stem]:
        assert (out_dir / name).exists(), f"{script.stem} did not write {name}"
    # a notebook-local store: the project's settings-level store and models were never touched
    assert not (tmp_path / "mlruns.db").exists() and not (tmp_path / "models").exists()
