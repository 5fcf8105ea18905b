"""Writing a simulation to a directory atomically (temp dir next to the target, renamed at the end)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fuelcard.simulator.config import FILES, TRUTH_FILE

MARKER = "transactions.parquet"


class OutputError(Exception):
    """The output directory cannot be written (exists with foreign content, not writable...)."""


def _table(df: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(df, preserve_index=False)


def write(frames: dict[str, Any], out: str | Path) -> Path:
    """Write every file of a simulation into ``out``; all or nothing.

    Files go to a temporary directory beside ``out`` which is renamed into place at the end. An existing
    ``out`` is replaced only if it is empty or holds a previous simulation; otherwise :class:`OutputError`.
    """
    target = Path(out)
    if target.exists() and not target.is_dir():
        raise OutputError(f"{target} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not (target / MARKER).exists():
        raise OutputError(f"{target} exists, is not empty and does not hold a simulation")
    parent = target.parent if str(target.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
        tmp.chmod(0o755)
    except OSError as exc:
        raise OutputError(f"cannot write to {parent}: {exc.strerror or exc}") from None
    try:
        (tmp / "ground_truth").mkdir()
        for name in FILES:
            pq.write_table(_table(frames[name]), tmp / name, compression="snappy")
        (tmp / TRUTH_FILE).write_text(json.dumps(frames[TRUTH_FILE], indent=1, sort_keys=False, default=str))
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=parent))
            os.replace(target, old / "x")
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def read(directory: str | Path) -> dict[str, Any]:
    """Read a written simulation back (``{file name: DataFrame}`` and the truth dict)."""
    d = Path(directory)
    out: dict[str, Any] = {name: pd.read_parquet(d / name) for name in FILES}
    out[TRUTH_FILE] = json.loads((d / TRUTH_FILE).read_text())
    return out
