"""Bulk load of the simulator's output (docs/DATA.md) into the star schema.

``load_dir(wh, path)`` reads every known Parquet (or CSV) file in the directory, maps it to its table,
protects sensitive fields (SM4 for member PII, tokens only for cards) and inserts in chunks with a progress
bar. Loading the same directory twice stores nothing new in the rollups (idempotent inserts) and the base
tables collapse duplicates (ReplacingMergeTree + FINAL).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from warehouse.engine import Warehouse
from warehouse.pii import assert_no_raw_pii, protect_members, tokenize_card_columns

CHUNK_ROWS = 500_000

# version of a purchase's state in fact_transactions (the highest wins)
STATUS_VERSION = {"authorised": 1, "pending": 1, "captured": 2, "cancelled": 2, "timeout": 2, "declined": 2,
                  "refunded": 3}


def transactions_to_fact(df: pd.DataFrame) -> pd.DataFrame:
    """Simulator transactions -> ``fact_transactions`` rows.

    A refunded purchase becomes two rows (captured v2, refunded v3) so the sales rollups count its sale
    and its refund, exactly as if the stream had delivered both events.
    """
    out = df.copy()
    status = out["status"].astype(str).str.lower()
    out["status"] = status
    out["version"] = status.map(STATUS_VERSION).fillna(2).astype("uint8")
    refunded = status == "refunded"
    if refunded.any():
        sale = out[refunded].copy()
        sale["status"] = "captured"
        sale["version"] = np.uint8(2)
        out = pd.concat([sale, out], ignore_index=True)
    if "is_fraud" in out.columns:
        out["is_fraud"] = pd.to_numeric(out["is_fraud"], errors="coerce").fillna(0).astype("uint8")
    return out


def _members(df: pd.DataFrame, ctx: LoadContext) -> pd.DataFrame:
    return protect_members(df, sm4_key_hex=ctx.sm4_key_hex)


def _cards(df: pd.DataFrame, ctx: LoadContext) -> pd.DataFrame:
    return tokenize_card_columns(df, token_key=ctx.token_key)


def _transactions(df: pd.DataFrame, ctx: LoadContext) -> pd.DataFrame:
    return transactions_to_fact(tokenize_card_columns(df, token_key=ctx.token_key))


def _fleets(df: pd.DataFrame, ctx: LoadContext) -> pd.DataFrame:
    out = df.copy()
    if "allowed_products" in out.columns:
        out["allowed_products"] = out["allowed_products"].map(_join_list)
    return out


def _join_list(v: Any) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, (list, tuple, np.ndarray, set, frozenset)):
        return ",".join(str(x) for x in v)
    return str(v)


def _redemptions(df: pd.DataFrame, ctx: LoadContext) -> pd.DataFrame:
    return pd.DataFrame({
        "entry_id": "redeem:" + df["redemption_id"].astype(str),
        "ts": df["ts"],
        "member_id": df["member_id"],
        "kind": "redeem",
        "points": -pd.to_numeric(df["points"], errors="coerce").fillna(0).abs().astype("int64"),
        "note": df["item"] if "item" in df.columns else "",
    })


def _recharges(df: pd.DataFrame, ctx: LoadContext) -> pd.DataFrame:
    return tokenize_card_columns(df, token_key=ctx.token_key)


def _identity(df: pd.DataFrame, ctx: LoadContext) -> pd.DataFrame:
    return df


@dataclass(frozen=True)
class LoadContext:
    sm4_key_hex: str
    token_key: bytes


@dataclass(frozen=True)
class Source:
    """One simulator file and where it goes."""

    file: str
    table: str
    transform: Callable[[pd.DataFrame, LoadContext], pd.DataFrame] = _identity


# Dimensions first, then facts (order matters only for reading the progress bar).
SOURCES: tuple[Source, ...] = (
    Source("calendar", "dim_date"),
    Source("stations", "dim_station"),
    Source("tanks", "dim_tank"),
    Source("competitors", "dim_competitor"),
    Source("fleets", "dim_fleet", _fleets),
    Source("members", "dim_member", _members),
    Source("vehicles", "dim_vehicle"),
    Source("cards", "dim_card", _cards),
    Source("transactions", "fact_transactions", _transactions),
    Source("recharges", "fact_recharges", _recharges),
    Source("redemptions", "fact_points_ledger", _redemptions),
    Source("tank_readings", "fact_tank_readings"),
    Source("prices", "fact_prices"),
    Source("competitor_prices", "fact_competitor_prices"),
    Source("crude", "fact_crude_prices"),
    Source("station_sales", "fact_station_sales"),
    Source("station_hourly", "fact_station_hourly"),
    Source("weather", "fact_weather"),
    Source("complaints", "fact_complaints"),
)


class LoadInputError(ValueError):
    """A simulator file is unreadable or lacks required columns (raised before anything is inserted)."""


# Columns a file must have for its transform / table to make sense (checked before any insert).
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "transactions": ("tx_id", "ts", "card_id", "station_id", "status"),
    "redemptions": ("redemption_id", "ts", "member_id", "points"),
    "recharges": ("ts", "card_id"),
    "members": ("member_id",),
    "cards": ("card_id",),
    "stations": ("station_id",),
}


def _columns(path: Path) -> list[str]:
    """Column names of a file; reading the Parquet footer / CSV header detects truncated or garbage files."""
    if path.suffix == ".csv":
        return [str(c) for c in pd.read_csv(path, nrows=0).columns]
    pf = pq.ParquetFile(path)
    for i in range(pf.metadata.num_row_groups):  # every row group must decode, not only the footer
        pf.read_row_group(i, columns=[])
    return list(pf.schema_arrow.names)


def validate_files(found: list[tuple[Source, Path]]) -> None:
    """Read every file's schema and check its required columns; raise :class:`LoadInputError` on the first
    problem, so that nothing is inserted from a directory with a broken file."""
    for source, p in found:
        try:
            cols = set(_columns(p))
        except Exception as exc:  # noqa: BLE001 - pyarrow/pandas raise many kinds
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise LoadInputError(f"{p.name}: unreadable ({msg})") from None
        missing = [c for c in REQUIRED_COLUMNS.get(source.file, ()) if c not in cols]
        if missing:
            raise LoadInputError(f"{p.name}: missing required column(s): {', '.join(missing)}")


def _find(directory: Path, stem: str) -> Path | None:
    for ext in (".parquet", ".pq", ".csv"):
        p = directory / f"{stem}{ext}"
        if p.exists():
            return p
    return None


def _rows(path: Path) -> int:
    if path.suffix == ".csv":
        with path.open("rb") as fh:
            return max(sum(1 for _ in fh) - 1, 0)
    return pq.ParquetFile(path).metadata.num_rows


def _chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    if path.suffix == ".csv":
        yield from pd.read_csv(path, chunksize=chunk_rows, low_memory=False)
        return
    pf = pq.ParquetFile(path)
    for batch in pf.iter_batches(batch_size=chunk_rows):
        yield batch.to_pandas()


def load_dir(
    wh: Warehouse,
    path: str | Path,
    *,
    progress: bool = True,
    sm4_key_hex: str | None = None,
    token_key: bytes | None = None,
    settings: Any = None,
    chunk_rows: int = CHUNK_ROWS,
    migrate: bool = True,
) -> dict[str, int]:
    """Load a simulator output directory; returns ``{table: rows inserted}``.

    Keys come from ``settings`` (``sm4_key``, ``token_key``) or the explicit arguments; without either the
    development defaults of :mod:`fuelcard.settings` are used. Unknown files are ignored; a directory with
    none of the known files is an error. Every file is read and validated (readable, required columns) before
    anything is inserted; a broken file raises :class:`LoadInputError` and leaves the warehouse untouched.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"not a directory: {directory}")
    if settings is None:
        from fuelcard.settings import Settings

        settings = Settings()
    sm4 = sm4_key_hex or settings.sm4_key.get_secret_value()
    tok = token_key or settings.token_key.get_secret_value().encode()
    ctx = LoadContext(sm4_key_hex=sm4, token_key=tok)
    found = [(s, p) for s in SOURCES if (p := _find(directory, s.file)) is not None]
    if not found:
        raise FileNotFoundError(f"no simulator files in {directory} (expected e.g. transactions.parquet)")
    validate_files(found)
    if migrate:
        wh.migrate()
    total = sum(_rows(p) for _, p in found)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="row", unit_scale=True, desc="loading", dynamic_ncols=True)
    counts: dict[str, int] = {}
    try:
        for source, p in found:
            if bar is not None:
                bar.set_description(source.table)
            for chunk in _chunks(p, chunk_rows):
                frame = source.transform(chunk, ctx)
                assert_no_raw_pii(frame)
                counts[source.table] = counts.get(source.table, 0) + wh.insert_df(source.table, frame)
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return counts
