"""`fuelcard warehouse …`: migrate the schema, load simulator output, run named queries, show status,
and own the embedded warehouse for other processes (`serve`)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import typer

from fuelcard.commands.common import CliError, write_table_atomic

app = typer.Typer(no_args_is_help=True, help="ClickHouse warehouse: migrate schema, load data, query.")

UrlOpt = typer.Option(None, "--url", help="Warehouse URL (default: FUELCARD_WAREHOUSE_URL / settings)")


def _settings() -> Any:
    from fuelcard.settings import load_settings

    return load_settings()


def _connect(url: str | None) -> Any:
    from warehouse import WarehouseError, connect

    try:
        return connect(url or _settings())
    except WarehouseError as exc:
        raise CliError(str(exc).splitlines()[0]) from None


def _parse_params(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise CliError(f"--param {item!r}: expected NAME=VALUE")
        k, v = item.split("=", 1)
        out[k.strip()] = v
    return out


@app.command("migrate")
def migrate(url: str | None = UrlOpt) -> None:
    """Apply pending schema migrations (idempotent: a second run applies nothing)."""
    from warehouse import WarehouseError

    with _connect(url) as wh:
        try:
            ran = wh.migrate()
        except WarehouseError as exc:
            raise CliError(str(exc).splitlines()[0]) from None
        total = len(wh.applied_migrations())
    typer.echo(f"applied {len(ran)} migration(s){': ' + ', '.join(ran) if ran else ''}; {total} in total")


@app.command("load")
def load(
    directory: Path = typer.Argument(..., help="Directory written by `fuelcard simulate --out DIR`"),
    url: str | None = UrlOpt,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar"),
) -> None:
    """Bulk-load the simulator's Parquet files (migrates first; PII SM4-encrypted; idempotent)."""
    from warehouse import WarehouseError
    from warehouse.loader import LoadInputError, load_dir

    if not directory.is_dir():
        raise CliError(f"load: not a directory: {directory}")
    settings = _settings()
    started = time.perf_counter()
    with _connect(url) as wh:
        try:
            counts = load_dir(wh, directory, progress=progress, settings=settings)
        except (FileNotFoundError, LoadInputError) as exc:
            raise CliError(f"load: {exc}") from None
        except WarehouseError as exc:
            raise CliError(f"load: {str(exc).splitlines()[0]}") from None
    total = sum(counts.values())
    secs = time.perf_counter() - started
    typer.echo(f"loaded {total:,} rows into {len(counts)} tables in {secs:.1f}s "
               f"(transactions: {counts.get('fact_transactions', 0):,})")


@app.command("query")
def query(
    name: str = typer.Argument(..., help="Named query (see `fuelcard warehouse queries`)"),
    param: list[str] = typer.Option([], "--param", "-p", help="NAME=VALUE, repeatable"),  # noqa: B006
    out: Path | None = typer.Option(None, "--out", help="Write the result to CSV/Parquet instead of printing"),
    limit: int = typer.Option(50, help="Rows to print"),
    url: str | None = UrlOpt,
) -> None:
    """Run a named dashboard/report query and print (or write) the result."""
    from warehouse import ParamError, UnsupportedOnEngine, WarehouseError

    params = _parse_params(param)
    with _connect(url) as wh:
        try:
            df = wh.named_query(name, **params)
        except (ParamError, UnsupportedOnEngine, WarehouseError) as exc:
            raise CliError(f"query {name}: {str(exc).splitlines()[0]}") from None
    if out is not None:
        write_table_atomic(df, out)
        typer.echo(f"wrote {len(df)} rows to {out}")
        return
    if df.empty:
        typer.echo("(no rows)")
        return
    typer.echo(df.head(limit).to_string(index=False))
    if len(df) > limit:
        typer.echo(f"... {len(df) - limit} more rows (use --out)")


@app.command("queries")
def queries() -> None:
    """List the named queries with their parameters."""
    from warehouse.params import placeholders
    from warehouse.queries import QUERIES

    for q in QUERIES.values():
        params = ", ".join(f"{k}:{t}" for k, t in placeholders(q.sql).items())
        flag = f" [modern only: {q.modern_only}]" if q.modern_only else ""
        typer.echo(f"{q.name}({params}){flag}\n    {q.description}")


@app.command("status")
def status(url: str | None = UrlOpt) -> None:
    """Engine, version, applied migrations and row counts per table."""
    with _connect(url) as wh:
        typer.echo(f"engine: {wh.engine}  url: {wh.url}  database: {wh.database}  version: {wh.version()}")
        applied = wh.applied_migrations()
        typer.echo(f"migrations applied: {len(applied)}"
                   + (f" (latest {int(applied['version'].max()):04d})" if len(applied) else " - run `migrate`"))
        for table, n in wh.table_counts().items():
            typer.echo(f"  {table:32s} {n:>12,}")


@app.command("serve")
def serve(
    path: Path | None = typer.Option(None, help="Embedded warehouse directory (default from the URL/settings)"),
    port: int | None = typer.Option(None, help="Port on 127.0.0.1 (default: a free one in 19150-19199)"),
) -> None:
    """Own the embedded (chdb) warehouse and serve it to other processes until Ctrl-C."""
    from warehouse.engine import WarehouseLocked, parse_url
    from warehouse.service import serve_in_thread

    settings = _settings()
    if path is None:
        url = str(settings.warehouse_url)
        from warehouse.engine import DEFAULT_SETTINGS_URL

        if url == DEFAULT_SETTINGS_URL:
            path = Path(settings.data_dir) / "warehouse"
        else:
            parts = parse_url(url)
            if parts["engine"] != "chdb":
                raise CliError("serve: only an embedded (chdb://) warehouse needs an owner process")
            path = parts["path"]
    try:
        owned = serve_in_thread(path, port=port)
    except WarehouseLocked as exc:
        raise CliError(f"serve: {exc}") from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    typer.echo(f"warehouse {path} served at {owned.url} (pid file {path / 'owner.json'}); Ctrl-C to stop")
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        owned.close()
