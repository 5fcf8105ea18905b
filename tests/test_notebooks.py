"""Every analyst notebook executes top to bottom (nbclient) on a small simulated network; a failing cell fails.

The notebooks (``notebooks/*.ipynb``, written by ``notebooks/build_notebooks.py``) import the project's code
and define no logic of their own; this test also checks they are in sync with their builder.
"""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TIMINGS: dict[str, float] = {}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fuelcard.simulator.config import SimConfig
    from fuelcard.simulator.core import simulate
    from fuelcard.simulator.io import write

    out = tmp_path_factory.mktemp("notebook-sim") / "sim"
    # 200 days: the churn job needs two 90-day landmarks; small enough to keep every notebook fast
    return Path(write(simulate(SimConfig(seed=7, days=200, stations=6, members=300)), out))


def test_notebooks_are_built_from_their_source() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "notebooks" / "build_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert {p.name for p in NOTEBOOKS} == set(mod.NOTEBOOKS)
    for p in NOTEBOOKS:
        nb = nbformat.read(p, as_version=4)
        assert [c.source for c in nb.cells] == [c.source for c in mod.NOTEBOOKS[p.name]], \
            f"{p.name} is stale: run python notebooks/build_notebooks.py"
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        assert "def " not in code.replace("def read(", ""), f"{p.name} defines its own logic"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path: Path, sim_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUELCARD_NOTEBOOK_DATA", str(sim_dir))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    nb = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}},
                   ).execute()  # raises CellExecutionError on the first failing cell
    TIMINGS[path.name] = time.perf_counter() - started
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any(o.get("output_type") in {"execute_result", "display_data"} for o in outputs)
