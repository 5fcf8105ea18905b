"""One warehouse interface over two ClickHouse engines, chosen by URL.

* ``chdb:///path`` — embedded ClickHouse (chdb) in this process; one process per data directory.
* ``clickhouse://[user[:password]@]host[:port]/db`` — a ClickHouse server via clickhouse-driver (native TCP).
* ``warehouse+http://127.0.0.1:PORT`` — the process that owns an embedded warehouse
  (``fuelcard warehouse serve``), reached over HTTP (see :mod:`warehouse.service`).

Every method takes the same SQL text (``{name:Type}`` placeholders, see :mod:`warehouse.params`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd

from warehouse.params import ParamError, bind, check_identifier

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
DEFAULT_DATABASE = "fuelcard"
DEFAULT_SETTINGS_URL = "chdb:///var/warehouse"


class WarehouseError(RuntimeError):
    """A warehouse operation failed (bad SQL, engine error, owner process unreachable)."""


class UnsupportedOnEngine(WarehouseError):
    """The query needs a modern ClickHouse feature the connected engine lacks (e.g. server 18.16)."""


class WarehouseLocked(WarehouseError):
    """Another process owns this embedded (chdb) data directory and publishes no service to reach it."""


@dataclass(frozen=True)
class DedupKey:
    """How a fact table deduplicates: rows with the same ``key`` collapse to the highest ``version``.

    Inserts into these tables are idempotent: a row whose key already exists with the same or a higher
    version is dropped before insert, so materialized-view rollups never see a redelivered event twice.
    """

    key: str
    version: str | None = None
    #: Event-time column whose day (the ``date`` sort-key prefix) is the same for every version of a key:
    #: the existence probe only reads those days, so a micro-batch of recent events reads recent parts.
    ts_col: str | None = "ts"


# Tables with materialized views attached: their inserts are filtered against what is already stored.
DEDUP_TABLES: dict[str, DedupKey] = {
    "fact_transactions": DedupKey("tx_id", "version"),
    "fact_risk_decisions": DedupKey("decision_id", "version"),
    "fact_points_ledger": DedupKey("entry_id"),
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    default_kind: str


def _split_statements(text: str) -> list[str]:
    """Split a migration file into statements (``;`` at end of line; ``--`` comments dropped)."""
    lines = [ln for ln in text.splitlines() if not ln.strip().startswith("--")]
    out, buf = [], []
    for ln in lines:
        buf.append(ln)
        if ln.rstrip().endswith(";"):
            stmt = "\n".join(buf).strip().rstrip(";").strip()
            if stmt:
                out.append(stmt)
            buf = []
    tail = "\n".join(buf).strip()
    if tail:
        out.append(tail)
    return out


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[tuple[int, str, Path]]:
    """``(version, name, path)`` of every ``NNNN_name.sql`` in order."""
    found = []
    for p in sorted(directory.glob("*.sql")):
        m = re.match(r"^(\d{4})_([a-z0-9_]+)\.sql$", p.name)
        if not m:
            raise WarehouseError(f"migration file name must be NNNN_name.sql: {p.name}")
        found.append((int(m.group(1)), m.group(2), p))
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise WarehouseError("two migration files share a version number")
    return found


class Warehouse(ABC):
    """The warehouse interface shared by every engine (see docs/WAREHOUSE.md)."""

    engine: str = "?"
    #: True when the engine speaks modern SQL (window functions, CTEs); False on server 18.16.
    modern: bool = True

    def __init__(self, url: str, database: str) -> None:
        self.url = url
        self.database = check_identifier(database)
        self._columns: dict[str, list[Column]] = {}

    # ------------------------------------------------------------ engine primitives
    @abstractmethod
    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement that returns nothing (DDL, INSERT … SELECT, OPTIMIZE)."""

    @abstractmethod
    def query_df(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Run a SELECT and return a DataFrame (same column names on every engine)."""

    @abstractmethod
    def _insert_frame(self, table: str, df: pd.DataFrame) -> None:
        """Insert an already conformed frame (columns = a subset of the table's, in table types)."""

    @abstractmethod
    def _existing_versions(self, table: str, key: DedupKey, keys: pd.Series,
                           days: tuple[Any, Any] | None = None) -> pd.DataFrame:
        """``key, max_version`` of the given keys already stored (for idempotent inserts)."""

    def close(self) -> None:  # noqa: B027 - optional hook, engines override it
        """Release the connection (the warehouse object is unusable afterwards)."""

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ shared behaviour
    def query_value(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        """First column of the first row (None when no rows)."""
        df = self.query_df(sql, params)
        return None if df.empty else df.iat[0, 0]

    def version(self) -> str:
        """The ClickHouse version of the engine."""
        return str(self.query_value("SELECT version()"))

    def table_exists(self, table: str) -> bool:
        return bool(
            self.query_value(
                "SELECT count() FROM system.tables WHERE database = {db:String} AND name = {t:String}",
                {"db": self.database, "t": table},
            )
        )

    def columns(self, table: str) -> list[Column]:
        """Columns of a table (cached)."""
        if table not in self._columns:
            df = self.query_df(
                "SELECT name, type, default_kind FROM system.columns "
                "WHERE database = {db:String} AND table = {t:String}",
                {"db": self.database, "t": check_identifier(table)},
            )
            if df.empty:
                raise WarehouseError(f"no such table: {table} (run `fuelcard warehouse migrate`)")
            self._columns[table] = [Column(r.name, r.type, r.default_kind) for r in df.itertuples()]
        return self._columns[table]

    def conform(self, table: str, df: pd.DataFrame) -> pd.DataFrame:
        """Cast ``df`` to the table's column types; drop unknown columns; fill missing ones with type defaults.

        Columns with a DEFAULT/MATERIALIZED expression are left to the engine when absent from ``df``.
        """
        out: dict[str, Any] = {}
        n = len(df)
        for col in self.columns(table):
            if col.default_kind in ("MATERIALIZED", "ALIAS"):
                continue
            if col.name not in df.columns:
                if col.default_kind == "DEFAULT":
                    continue
                out[col.name] = _default_series(col.type, n)
            else:
                out[col.name] = _cast_series(df[col.name], col.type)
        return pd.DataFrame(out, index=range(n), copy=False) if n else pd.DataFrame(out)

    def insert_df(self, table: str, df: pd.DataFrame, *, dedup: bool = True) -> int:
        """Insert a DataFrame (columns by name); returns rows actually inserted.

        For tables in :data:`DEDUP_TABLES` (``dedup=True``) duplicates inside the frame and rows already
        stored with the same key and an equal or higher version are dropped first, so redelivery and replays
        never double-count in the rollups. Base-table reads use ``FINAL`` on top of that.
        """
        check_identifier(table)
        if df is None or len(df) == 0:
            return 0
        frame = self.conform(table, df.reset_index(drop=True))
        key = DEDUP_TABLES.get(table)
        if dedup and key is not None:
            frame = self._drop_known(table, key, frame)
        if len(frame) == 0:
            return 0
        self._insert_frame(table, frame)
        return len(frame)

    def _drop_known(self, table: str, key: DedupKey, frame: pd.DataFrame) -> pd.DataFrame:
        subset = [key.key] + ([key.version] if key.version else [])
        frame = frame.drop_duplicates(subset=subset, keep="last")
        days = None
        if key.ts_col and key.ts_col in frame.columns:
            ts = pd.to_datetime(frame[key.ts_col], utc=True)
            days = (ts.min().date(), ts.max().date())
        existing = self._existing_versions(table, key, frame[key.key], days)
        if existing.empty:
            return frame.reset_index(drop=True)
        if key.version is None:
            keep = ~frame[key.key].isin(existing["key"])
        else:
            known = existing.set_index("key")["max_version"]
            have = frame[key.key].map(known)
            keep = have.isna() | (frame[key.version].astype("float64") > have.astype("float64"))
        return frame[keep.to_numpy()].reset_index(drop=True)

    # ------------------------------------------------------------ migrations
    def migrate(self, directory: Path | None = None) -> list[str]:
        """Apply pending versioned migrations; idempotent (a second call applies nothing).

        Applied versions and checksums are kept in ``schema_migrations``; a changed file that was already
        applied is an error (write a new migration instead).
        """
        directory = directory or MIGRATIONS_DIR
        self.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, checksum String, "
            "applied_at DateTime('UTC')) ENGINE = ReplacingMergeTree() ORDER BY version"
        )
        done = self.query_df("SELECT version, any(checksum) AS checksum FROM schema_migrations GROUP BY version")
        applied = {int(r.version): r.checksum for r in done.itertuples()}
        ran: list[str] = []
        for version, name, path in migration_files(directory):
            text = path.read_text()
            checksum = hashlib.sha256(text.encode()).hexdigest()
            if version in applied:
                if applied[version] != checksum:
                    raise WarehouseError(f"migration {path.name} changed after it was applied; add a new one")
                continue
            for stmt in _split_statements(text):
                try:
                    self.execute(stmt)
                except Exception as exc:
                    raise WarehouseError(f"migration {path.name} failed: {_first_line(exc)}") from exc
            self.insert_df(
                "schema_migrations",
                pd.DataFrame(
                    {"version": [version], "name": [name], "checksum": [checksum],
                     "applied_at": [pd.Timestamp(datetime.now(UTC))]}
                ),
            )
            ran.append(path.name)
        self._columns.clear()
        return ran

    def applied_migrations(self) -> pd.DataFrame:
        """``version, name, applied_at`` of applied migrations (empty before the first migrate)."""
        if not self.table_exists("schema_migrations"):
            return pd.DataFrame(columns=["version", "name", "applied_at"])
        return self.query_df(
            "SELECT version, any(name) AS name, min(applied_at) AS applied_at FROM schema_migrations "
            "GROUP BY version ORDER BY version"
        )

    # ------------------------------------------------------------ named queries
    def named_query(self, name: str, **params: Any) -> pd.DataFrame:
        """Run a query from :data:`warehouse.queries.QUERIES` with its defaults filled in."""
        from warehouse.queries import get_query

        q = get_query(name)
        if q.modern_only and not self.modern:
            raise UnsupportedOnEngine(
                f"query {name!r} needs {q.modern_only} (not available on ClickHouse {self.version()})"
            )
        return self.query_df(q.sql, q.params_with_defaults(params))

    def table_counts(self, tables: Iterable[str] | None = None) -> dict[str, int]:
        """Physical row count of each table (before FINAL dedup; from active parts, portable to 18.16)."""
        names = self.query_df(
            "SELECT name FROM system.tables WHERE database = {db:String} AND engine LIKE '%MergeTree%' ORDER BY name",
            {"db": self.database},
        )
        rows = self.query_df(
            "SELECT table, sum(rows) AS n FROM system.parts WHERE database = {db:String} AND active GROUP BY table",
            {"db": self.database},
        )
        per = {r.table: int(r.n) for r in rows.itertuples()}
        counts = {n: per.get(n, 0) for n in names["name"]}
        if tables is not None:
            counts = {t: counts.get(t, 0) for t in tables}
        return counts


def _first_line(exc: BaseException) -> str:
    """A one-line message (server errors put "Code: N." on a line of its own, so keep the next line too)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[0]
    if re.fullmatch(r"Code: \d+\.?", text) and len(lines) > 1:
        text += " " + lines[1].split(" Stack trace:")[0]
    return text[:300]


_INT_RE = re.compile(r"^U?Int(8|16|32|64)$")


def _strip_nullable(typ: str) -> tuple[str, bool]:
    m = re.match(r"^Nullable\((.*)\)$", typ)
    return (m.group(1), True) if m else (typ, False)


def _default_series(typ: str, n: int) -> pd.Series:
    base, nullable = _strip_nullable(typ)
    if nullable:
        return pd.Series([None] * n, dtype="object")
    return _cast_series(pd.Series([None] * n, dtype="object"), typ)


def _cast_series(s: pd.Series, typ: str) -> pd.Series:
    """Cast one column to the pandas dtype that both engines insert as ``typ``."""
    base, nullable = _strip_nullable(typ)
    if base == "String":
        if s.dtype == object:
            kind = pd.api.types.infer_dtype(s, skipna=False)  # one C pass
            if kind == "string":
                return s  # all str, nothing missing: the common case, no copy
            if pd.api.types.infer_dtype(s, skipna=True) in ("string", "empty"):
                return s.where(s.notna(), None if nullable else "")
        out = s.astype("object").where(s.notna(), None)
        out = out.map(lambda v: v if v is None else str(v))
        return out if nullable else out.fillna("")
    if _INT_RE.match(base):
        if isinstance(s.dtype, np.dtype) and s.dtype.kind in "iu" and not nullable:
            return s  # plain numpy integers: no copy (the engine casts the width)
        if s.dtype == bool:
            return s.astype("int64")
        num = pd.to_numeric(s, errors="coerce")
        if nullable:
            return num.astype("Int64")
        return num.fillna(0).round().astype("int64")
    if base.startswith("Float"):
        if s.dtype == np.float64 and not nullable:
            return s.fillna(0.0) if s.isna().any() else s
        return pd.to_numeric(s, errors="coerce").astype("float64").fillna(np.nan if nullable else 0.0)
    if base.startswith("DateTime"):
        if isinstance(s.dtype, pd.DatetimeTZDtype) and str(s.dtype.tz) == "UTC" and not (
            not nullable and s.isna().any()
        ):
            return s
        ts = pd.to_datetime(s, utc=True, errors="coerce")
        if not nullable:
            ts = ts.fillna(pd.Timestamp(0, tz="UTC"))
        return ts.astype("datetime64[ns, UTC]")
    if base == "Date":
        d = pd.to_datetime(s, errors="coerce")
        if getattr(d.dt, "tz", None) is not None:
            d = d.dt.tz_convert("UTC").dt.tz_localize(None)
        d = d.dt.normalize()
        if not nullable:
            d = d.fillna(pd.Timestamp("1970-01-01"))
        return d.astype("datetime64[ns]")
    return s


# ================================================================ chdb (embedded)


def _locked_by_other_process(path: Path) -> bool:
    """True when another process holds ClickHouse's lock on ``<path>/status`` (chdb's one-process rule)."""
    import fcntl

    status = path / "status"
    if not status.exists():
        return False
    with status.open("a") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return False


class _SharedSession:
    """The process's one chdb session (chdb runs one embedded server per process, for one data path)."""

    lock = threading.Lock()
    path: Path | None = None
    session: Any = None
    refs = 0
    current_db: str | None = None
    query_lock = threading.RLock()

    @classmethod
    def acquire(cls, path: Path) -> Any:
        from chdb import session as chdb_session

        with cls.lock:
            resolved = path.resolve()
            if cls.session is not None and cls.path != resolved:
                raise WarehouseError(
                    f"this process already has the embedded warehouse {cls.path} open; chdb runs one data "
                    f"directory per process (close it first, or use a ClickHouse server)"
                )
            if cls.session is None:
                try:
                    if _locked_by_other_process(resolved):
                        raise RuntimeError("Cannot lock file status: held by another process")
                    cls.session = chdb_session.Session(str(resolved))
                except Exception as exc:
                    if "lock" in str(exc).lower():
                        raise WarehouseLocked(
                            f"{resolved} is owned by another process (chdb allows one per directory); "
                            "start `fuelcard warehouse serve` there or connect to its service (docs/WAREHOUSE.md)"
                        ) from exc
                    raise WarehouseError(_first_line(exc)) from exc
                cls.path = resolved
                cls.session.query("SET session_timezone = 'UTC'")
                # Every version of a row shares its partition (the event day), so FINAL may merge partitions
                # independently and in parallel (ClickHouse >= 20.x; 18.16 merges them together, same result).
                cls.session.query("SET do_not_merge_across_partitions_select_final = 1")
                # Rollup MVs run in parallel, and inserts skip the per-block pre-merge: correctness never relies
                # on merges (reads use FINAL / re-aggregate), and this more than halves insert time.
                cls.session.query("SET parallel_view_processing = 1")
                cls.session.query("SET optimize_on_insert = 0")
            cls.refs += 1
            return cls.session

    @classmethod
    def release(cls) -> None:
        with cls.lock:
            cls.refs -= 1
            if cls.refs <= 0 and cls.session is not None:
                try:
                    cls.session.close()
                finally:
                    cls.session, cls.path, cls.refs, cls.current_db = None, None, 0, None


class ChdbWarehouse(Warehouse):
    """Embedded ClickHouse (chdb) in this process. Thread-safe: calls are serialised by a process-wide lock.

    chdb allows one data directory per process (and one process per directory): every ChdbWarehouse of
    a process shares one session; opening a second directory while one is open is an error.
    """

    engine = "chdb"
    modern = True

    def __init__(self, url: str, path: Path, database: str = DEFAULT_DATABASE) -> None:
        super().__init__(url, database)
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = _SharedSession.query_lock
        self._session = _SharedSession.acquire(self.path)
        self._session.query(f"CREATE DATABASE IF NOT EXISTS {self.database}")

    def _run(self, sql: str, params: Mapping[str, Any] | None, fmt: str) -> Any:
        text, values = bind(sql, params, style="native")
        with self._lock:
            try:
                self._use()
                return self._session.query(text, fmt, params=values or None)
            except ParamError:
                raise
            except Exception as exc:
                raise WarehouseError(_first_line(exc)) from exc

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._run(sql, params, "CSV")

    def query_df(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        res = self._run(sql, params, "DataFrame")
        return res if isinstance(res, pd.DataFrame) else pd.DataFrame()

    def _insert_frame(self, table: str, df: pd.DataFrame) -> None:
        cols = ", ".join(check_identifier(c) for c in df.columns)
        frame = df  # noqa: F841 - referenced by name from SQL through chdb's Python() table function
        with self._lock:
            try:
                self._use()
                self._session.query(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM Python(frame)")
            except Exception as exc:
                raise WarehouseError(f"insert into {table}: {_first_line(exc)}") from exc

    def _existing_versions(self, table: str, key: DedupKey, keys: pd.Series,
                           days: tuple[Any, Any] | None = None) -> pd.DataFrame:
        probe = pd.DataFrame({"k": keys.astype(str).unique()})  # noqa: F841 - used via Python(probe)
        ver = f"max({key.version})" if key.version else "1"
        where, values = "", {}
        if days is not None:
            where = "date >= {d0:Date} AND date <= {d1:Date} AND "
            values = {"d0": days[0], "d1": days[1]}
        sql = (
            f"SELECT {key.key} AS key, {ver} AS max_version FROM {table} "
            f"WHERE {where}{key.key} IN (SELECT k FROM Python(probe)) GROUP BY {key.key}"
        )
        text, params = bind(sql, values, style="native")
        with self._lock:
            try:
                self._use()
                res = self._session.query(text, "DataFrame", params=params or None)
            except Exception as exc:
                raise WarehouseError(_first_line(exc)) from exc
        return res if isinstance(res, pd.DataFrame) else pd.DataFrame(columns=["key", "max_version"])

    def _use(self) -> None:
        if self._session is None:
            raise WarehouseError("warehouse is closed")
        if _SharedSession.current_db != self.database:  # caller holds the query lock
            self._session.query(f"USE {self.database}")
            _SharedSession.current_db = self.database

    def close(self) -> None:
        with self._lock:
            if getattr(self, "_session", None) is not None:
                self._session = None
                _SharedSession.release()


# ================================================================ ClickHouse server (clickhouse-driver)


class ServerWarehouse(Warehouse):
    """A ClickHouse server through clickhouse-driver (native protocol). Works with 18.16 and newer.

    Rows are always sent as parameters (columnar blocks), never as inline ``VALUES (…)`` text, which
    hangs on 18.16. One driver connection is not thread-safe, so calls are serialised by a lock.
    """

    engine = "clickhouse"

    def __init__(self, url: str, *, host: str, port: int, user: str, password: str, database: str) -> None:
        super().__init__(url, database)
        from clickhouse_driver import Client

        self._lock = threading.RLock()
        kw = {"host": host, "port": port, "user": user, "password": password, "connect_timeout": 5,
              "send_receive_timeout": 300, "settings": {"use_client_time_zone": False}}
        try:
            Client(**kw).execute(f"CREATE DATABASE IF NOT EXISTS {self.database}")
        except Exception as exc:
            raise WarehouseError(f"cannot reach ClickHouse at {host}:{port}: {_first_line(exc)}") from exc
        self._client = Client(database=self.database, **kw)
        ver = self._client.execute("SELECT version()")[0][0]
        major = int(str(ver).split(".")[0])
        self.server_version = str(ver)
        self.modern = major >= 21

    def _run(self, sql: str, params: Mapping[str, Any] | None, **kw: Any) -> Any:
        text, values = bind(sql, params, style="pyformat")
        with self._lock:
            try:
                return self._client.execute(text, values or None, **kw)
            except Exception as exc:
                raise WarehouseError(_first_line(exc)) from exc

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._run(sql, params)

    def query_df(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        rows, meta = self._run(sql, params, with_column_types=True)
        names = [m[0] for m in meta]
        df = pd.DataFrame.from_records(rows, columns=names) if rows else pd.DataFrame(columns=names)
        for name, typ in meta:  # same dtypes as chdb's DataFrames
            base, _ = _strip_nullable(typ)
            if base.startswith("DateTime") and rows:
                df[name] = pd.to_datetime(df[name], utc=True)
            elif base == "Date" and rows:
                df[name] = pd.to_datetime(df[name])
        return df

    def _insert_frame(self, table: str, df: pd.DataFrame) -> None:
        cols = list(df.columns)
        data = [_to_python_column(df[c]) for c in cols]
        sql = f"INSERT INTO {table} ({', '.join(check_identifier(c) for c in cols)}) VALUES"
        with self._lock:
            try:
                self._client.execute(sql, data, columnar=True)
            except Exception as exc:
                raise WarehouseError(f"insert into {table}: {_first_line(exc)}") from exc

    def _existing_versions(self, table: str, key: DedupKey, keys: pd.Series,
                           days: tuple[Any, Any] | None = None) -> pd.DataFrame:
        uniq = keys.astype(str).unique().tolist()
        ver = f"max({key.version})" if key.version else "1"
        where = "date >= %(d0)s AND date <= %(d1)s AND " if days is not None else ""
        frames = []
        for i in range(0, len(uniq), 20_000):
            values: dict[str, Any] = {"keys": tuple(uniq[i : i + 20_000])}
            if days is not None:
                values.update(d0=days[0], d1=days[1])
            with self._lock:
                rows = self._client.execute(
                    f"SELECT {key.key} AS key, {ver} AS max_version FROM {table} "
                    f"WHERE {where}{key.key} IN %(keys)s GROUP BY {key.key}",
                    values,
                )
            frames.append(pd.DataFrame.from_records(rows, columns=["key", "max_version"]))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["key", "max_version"])

    def close(self) -> None:
        with self._lock:
            client = getattr(self, "_client", None)
            if client is not None:
                client.disconnect()


def _to_python_column(s: pd.Series) -> list[Any]:
    """A column as Python values the driver serialises (datetimes aware UTC, dates as date, NA as None)."""
    if pd.api.types.is_datetime64_any_dtype(s):
        if getattr(s.dt, "tz", None) is not None:
            vals = s.dt.tz_convert("UTC").astype(object)
            return [None if pd.isna(v) else v.to_pydatetime() for v in vals]
        # tz-naive datetimes here are Date columns (see _cast_series)
        return [None if pd.isna(v) else v.date() for v in s]
    if isinstance(s.dtype, pd.Int64Dtype):
        return [None if pd.isna(v) else int(v) for v in s]
    if s.dtype == object:
        return [None if v is None else v for v in s.tolist()]
    return s.tolist()


# ================================================================ connect


def parse_url(url: str) -> dict[str, Any]:
    """Split a warehouse URL into engine and connection parts (no connection is made)."""
    u = urlparse(url.strip())
    if u.scheme == "chdb":
        # chdb:///abs/path -> /abs/path; chdb://rel/path or chdb:rel/path -> relative to the working directory
        rest = url.strip()[len("chdb:") :]
        path = rest[2:] if rest.startswith("//") else rest
        path, _, query = path.partition("?")
        out: dict[str, Any] = {"engine": "chdb", "path": Path(unquote(path or "var/warehouse"))}
        db = dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("database")
        if db:
            out["database"] = db
        return out
    if u.scheme in ("clickhouse", "clickhouse+native"):
        return {
            "engine": "clickhouse",
            "host": u.hostname or "127.0.0.1",
            "port": u.port or 9000,
            "user": unquote(u.username or "default"),
            "password": unquote(u.password or ""),
            "database": (u.path or "/").strip("/") or DEFAULT_DATABASE,
        }
    if u.scheme in ("warehouse+http", "http"):
        return {"engine": "service", "base_url": f"http://{u.hostname}:{u.port or 80}"}
    raise WarehouseError(f"unsupported warehouse URL {url!r} (use chdb:///path or clickhouse://host:9000/db)")


def resolve_url(url_or_settings: Any = None) -> str:
    """The warehouse URL named by a string or a Settings object (the settings default means
    ``<data_dir>/warehouse``, relative to the working directory unless data_dir is absolute)."""
    if url_or_settings is None:
        return "chdb://var/warehouse"
    if isinstance(url_or_settings, str):
        return url_or_settings
    url = str(url_or_settings.warehouse_url)
    if url == DEFAULT_SETTINGS_URL:
        url = "chdb://" + str(Path(url_or_settings.data_dir) / "warehouse")
    return url


def connect(url_or_settings: Any = None, *, follow_owner: bool = True) -> Warehouse:
    """Open the warehouse named by a URL or a :class:`fuelcard.settings.Settings` (``warehouse_url``).

    For ``chdb:///path``: when another process already owns the directory and published its service
    address (``<path>/owner.json``, written by ``fuelcard warehouse serve``), returns a client of that
    service instead (``follow_owner``), so any number of processes can share one embedded warehouse.
    """
    url = resolve_url(url_or_settings)
    parts = parse_url(url)
    if parts["engine"] == "chdb":
        path: Path = parts["path"]
        if follow_owner:
            owner = read_owner(path)
            if owner is not None:
                from warehouse.service import ServiceWarehouse

                return ServiceWarehouse(owner["url"])
        return ChdbWarehouse(url, path, parts.get("database", DEFAULT_DATABASE))
    if parts["engine"] == "clickhouse":
        return ServerWarehouse(url, host=parts["host"], port=parts["port"], user=parts["user"],
                               password=parts["password"], database=parts["database"])
    from warehouse.service import ServiceWarehouse

    return ServiceWarehouse(parts["base_url"])


def owner_file(path: Path) -> Path:
    return Path(path) / "owner.json"


def read_owner(path: Path) -> dict[str, Any] | None:
    """The live owner of an embedded warehouse directory, or None (stale files are ignored)."""
    f = owner_file(path)
    if not f.exists():
        return None
    try:
        info = json.loads(f.read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    if int(info["pid"]) == os.getpid():
        return None
    return info


def write_owner(path: Path, url: str) -> None:
    """Publish this process as the owner of ``path`` (service URL and PID)."""
    f = owner_file(path)
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "url": url, "since": time.time()}))
    tmp.replace(f)


def clear_owner(path: Path) -> None:
    """Remove the owner file if this process wrote it."""
    f = owner_file(path)
    try:
        if json.loads(f.read_text()).get("pid") == os.getpid():
            f.unlink()
    except (OSError, ValueError):
        pass
