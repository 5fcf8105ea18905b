"""The owner process of an embedded (chdb) warehouse, and the client other processes use to reach it.

chdb locks its data directory: only one process may open it. In embedded mode one process owns the
warehouse (``fuelcard warehouse serve``, or any process that calls :func:`serve_in_thread`): it opens the
chdb session, publishes ``<dir>/owner.json`` (PID + URL) and answers on 127.0.0.1 over HTTP. Every other
process calling ``warehouse.connect("chdb:///dir")`` finds that file and transparently gets a
:class:`ServiceWarehouse` with the same interface. Frames travel as Parquet (types preserved); SQL
parameters travel as JSON and are bound by the owner exactly as locally (never formatted into SQL).

With a ClickHouse server (``clickhouse://…``) none of this is needed: every process connects directly.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pandas as pd

from warehouse.engine import (
    DEFAULT_DATABASE,
    ChdbWarehouse,
    DedupKey,
    UnsupportedOnEngine,
    Warehouse,
    WarehouseError,
    clear_owner,
    write_owner,
)
from warehouse.params import ParamError

log = logging.getLogger(__name__)


def _to_parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def _from_parquet(data: bytes) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(data))


def _json_default(v: Any) -> Any:
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


class _Handler(BaseHTTPRequestHandler):
    wh: Warehouse  # set on the subclass made by make_server

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet; never logs bodies (may hold PII)
        log.debug("warehouse service: " + fmt, *args)

    def _reply(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._reply(status, json.dumps(obj, default=_json_default).encode())

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        if urlparse(self.path).path == "/health":
            self._json(200, {"engine": self.wh.engine, "database": self.wh.database, "version": self.wh.version()})
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        u = urlparse(self.path)
        try:
            if u.path == "/insert":
                table = parse_qs(u.query).get("table", [""])[0]
                dedup = parse_qs(u.query).get("dedup", ["1"])[0] != "0"
                n = self.wh.insert_df(table, _from_parquet(self._body()), dedup=dedup)
                return self._json(200, {"inserted": n})
            req = json.loads(self._body() or b"{}")
            if u.path == "/query":
                return self._reply(200, _to_parquet(self.wh.query_df(req["sql"], req.get("params"))),
                                   "application/vnd.apache.parquet")
            if u.path == "/named":
                df = self.wh.named_query(req["name"], **(req.get("params") or {}))
                return self._reply(200, _to_parquet(df), "application/vnd.apache.parquet")
            if u.path == "/execute":
                self.wh.execute(req["sql"], req.get("params"))
                return self._json(200, {})
            if u.path == "/migrate":
                return self._json(200, {"applied": self.wh.migrate()})
            return self._json(404, {"error": "not found"})
        except UnsupportedOnEngine as exc:
            self._json(422, {"error": str(exc), "kind": "unsupported"})
        except ParamError as exc:
            self._json(400, {"error": str(exc), "kind": "param"})
        except (WarehouseError, KeyError, ValueError) as exc:
            self._json(400, {"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                             "kind": "warehouse"})


def make_server(wh: Warehouse, *, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server (not started) serving ``wh``; ``port=0`` picks a free port."""
    handler = type("WarehouseHandler", (_Handler,), {"wh": wh})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


class OwnedWarehouse:
    """A running owner: the local chdb warehouse, its HTTP service and the published owner file."""

    def __init__(self, wh: ChdbWarehouse, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self.wh = wh
        self.server = server
        self.thread = thread
        host, port = server.server_address[:2]
        self.url = f"warehouse+http://{host}:{port}"

    def close(self) -> None:
        """Stop serving, remove the owner file and close the chdb session."""
        self.server.shutdown()
        self.server.server_close()
        clear_owner(self.wh.path)
        self.wh.close()

    def __enter__(self) -> OwnedWarehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_in_thread(path: str | Path, *, port: int | None = None, migrate: bool = True,
                    database: str = DEFAULT_DATABASE) -> OwnedWarehouse:
    """Open the embedded warehouse at ``path`` in this process and serve it to others (background thread).

    ``port=None`` picks a free port in 19150-19199 (the warehouse's range on a shared machine); 0 lets the
    OS choose.
    """
    if port is None:
        from warehouse.server_process import pick_port

        port = pick_port()
    p = Path(path)
    wh = ChdbWarehouse(f"chdb://{p}", p, database)
    if migrate:
        wh.migrate()
    server = make_server(wh, port=port)
    thread = threading.Thread(target=server.serve_forever, name="warehouse-service", daemon=True)
    thread.start()
    owned = OwnedWarehouse(wh, server, thread)
    write_owner(p, owned.url)
    return owned


class ServiceWarehouse(Warehouse):
    """Client of an owner process: the :class:`Warehouse` interface over HTTP on 127.0.0.1."""

    engine = "chdb-service"
    modern = True

    def __init__(self, url: str, *, timeout_s: float = 300.0) -> None:
        u = urlparse(url.replace("warehouse+http://", "http://"))
        self.base = f"http://{u.hostname}:{u.port}"
        self.timeout_s = timeout_s
        info = json.loads(self._call("GET", "/health"))
        super().__init__(url, info["database"])

    def _call(self, method: str, path: str, body: bytes | None = None, ctype: str = "application/json") -> bytes:
        req = urllib.request.Request(self.base + path, data=body, method=method,  # noqa: S310 - http to 127.0.0.1
                                     headers={"Content-Type": ctype})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310
                return resp.read()
        except urllib.error.HTTPError as exc:
            try:
                err = json.loads(exc.read())
            except ValueError:
                err = {"error": str(exc), "kind": "warehouse"}
            kind = err.get("kind")
            if kind == "unsupported":
                raise UnsupportedOnEngine(err["error"]) from None
            if kind == "param":
                raise ParamError(err["error"]) from None
            raise WarehouseError(err.get("error", str(exc))) from None
        except urllib.error.URLError as exc:
            raise WarehouseError(f"warehouse owner at {self.base} unreachable: {exc.reason}") from None

    def _post_json(self, path: str, obj: Mapping[str, Any]) -> bytes:
        return self._call("POST", path, json.dumps(obj, default=_json_default).encode())

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._post_json("/execute", {"sql": sql, "params": dict(params or {})})

    def query_df(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        return _from_parquet(self._post_json("/query", {"sql": sql, "params": dict(params or {})}))

    def named_query(self, name: str, **params: Any) -> pd.DataFrame:
        return _from_parquet(self._post_json("/named", {"name": name, "params": params}))

    def migrate(self, directory: Path | None = None) -> list[str]:
        if directory is not None:
            raise WarehouseError("a service client migrates with the owner's migration files only")
        return list(json.loads(self._post_json("/migrate", {}))["applied"])

    def insert_df(self, table: str, df: pd.DataFrame, *, dedup: bool = True) -> int:
        if df is None or len(df) == 0:
            return 0
        body = _to_parquet(df.reset_index(drop=True))
        out = self._call("POST", f"/insert?table={table}&dedup={int(dedup)}", body, "application/vnd.apache.parquet")
        return int(json.loads(out)["inserted"])

    def _insert_frame(self, table: str, df: pd.DataFrame) -> None:  # pragma: no cover - insert_df overrides
        self.insert_df(table, df, dedup=False)

    def _existing_versions(self, table: str, key: DedupKey, keys: pd.Series,  # pragma: no cover
                           days: tuple[Any, Any] | None = None) -> pd.DataFrame:
        raise NotImplementedError("deduplication happens in the owner process")
