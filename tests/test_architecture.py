"""The pure core imports none of the adapters (streams, warehouse, serving)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ADAPTERS = {"streams", "warehouse", "serving", "benchmarks"}
# Entry points may wire adapters together; everything else in the core may not.
ENTRY_POINTS = {"fuelcard/cli.py", "fuelcard/settings.py"}
ENTRY_DIRS = ("fuelcard/commands/",)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_and_models_do_not_import_adapters():
    offenders = []
    for pkg in ("fuelcard", "models"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in ENTRY_POINTS or rel.startswith(ENTRY_DIRS):
                continue
            bad = _imports(path) & ADAPTERS
            if bad:
                offenders.append(f"{rel} imports {sorted(bad)}")
    assert not offenders, offenders


def test_core_does_not_read_the_environment():
    offenders = []
    for pkg in ("fuelcard", "models"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in ENTRY_POINTS or rel.startswith(ENTRY_DIRS):
                continue
            text = path.read_text()
            if "os.environ" in text or "getenv(" in text:
                offenders.append(rel)
    assert not offenders, offenders
