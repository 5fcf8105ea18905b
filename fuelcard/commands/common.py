"""Helpers shared by CLI commands: one-line errors, table I/O, atomic writes."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from datetime import date
from pathlib import Path

import pandas as pd


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def parse_day(value: str, *, name: str) -> date:
    try:
        return date.fromisoformat(value.strip())
    except (ValueError, AttributeError):
        raise CliError(f"{name}: {value!r} is not a date (expected YYYY-MM-DD)") from None


def read_table(path: str | Path, *, required: Iterable[str] = (), name: str = "input") -> pd.DataFrame:
    """Read a CSV or Parquet file (by extension) and check its required columns."""
    p = Path(path)
    if not p.exists():
        raise CliError(f"{name}: file not found: {p}")
    if p.stat().st_size == 0:
        raise CliError(f"{name}: file is empty: {p}")
    suffix = p.suffix.lower()
    try:
        if suffix in {".parquet", ".pq"}:
            df = pd.read_parquet(p)
        elif suffix in {".csv", ".txt", ".gz"}:
            df = pd.read_csv(p, low_memory=False)
        else:
            raise CliError(f"{name}: unsupported file type {suffix!r} (use .csv or .parquet)")
    except CliError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser failure becomes one readable line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CliError(f"{name}: cannot read {p.name}: {first}") from None
    df.columns = [str(c).strip() for c in df.columns]
    if df.empty:
        raise CliError(f"{name}: {p.name} has no rows")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise CliError(f"{name}: {p.name} is missing required column(s): {', '.join(missing)}")
    return df


def write_table_atomic(df: pd.DataFrame, path: str | Path) -> Path:
    """Write CSV or Parquet (by extension) through a temporary file, so no partial output is left."""
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    suffix = p.suffix.lower()
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    try:
        if suffix in {".parquet", ".pq"}:
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p
