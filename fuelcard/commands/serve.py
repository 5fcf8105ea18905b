"""``fuelcard serve``: the scoring and analytics API with its dashboard (uvicorn on settings.api_host/api_port)."""

from __future__ import annotations

import typer

from fuelcard.commands.common import CliError
from fuelcard.settings import Settings

app = typer.Typer(add_completion=False)


@app.command("serve")
def serve(
    host: str = typer.Option(None, "--host", help="Bind address (default: FUELCARD_API_HOST, 127.0.0.1)."),
    port: int = typer.Option(None, "--port", help="Port (default: FUELCARD_API_PORT, 8000)."),
    workers: int = typer.Option(1, "--workers", min=1, max=16, help="Worker processes (ClickHouse server only: "
                                "the embedded warehouse allows one process, or its owner's service)."),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level."),
    print_keys: bool = typer.Option(True, "--print-keys/--no-print-keys",
                                    help="Print the demo API keys (development only)."),
) -> None:
    """Serve the API and the dashboard; prints the dashboard URL and an example request."""
    import uvicorn

    settings = Settings()
    host = host or settings.api_host
    port = port or settings.api_port
    if not 0 < port < 65536:
        raise CliError(f"--port: {port} is not a valid port")
    from serving.app import create_app

    api = create_app(settings)
    keys = api.state.services.demo_keys
    base = f"http://{host}:{port}"
    typer.echo(f"API        {base}/docs")
    if keys and print_keys:
        typer.echo(f"dashboard  {base}/dashboard/#key={keys['analyst']}")
        for group, key in keys.items():
            typer.echo(f"demo key   {group:16s} {key}")
        typer.echo("example    curl -s -X POST " + base + "/v1/risk/decide -H 'X-API-Key: " + keys["transaction_path"]
                   + "' -H 'Content-Type: application/json' -d '{\"tx_id\": \"T1\", \"ts\": \"2026-01-05T08:00:00Z\","
                   " \"card_id\": \"C1\", \"station_id\": \"S0001\", \"product\": \"95\", \"amount_fen\": 30000}'")
    else:
        typer.echo(f"dashboard  {base}/dashboard/")
    if workers > 1:
        if settings.warehouse_url.startswith("chdb"):
            raise CliError("--workers > 1 needs a ClickHouse server (FUELCARD_WAREHOUSE_URL=clickhouse://...)")
        uvicorn.run("serving.app:create_app", factory=True, host=host, port=port, workers=workers,
                    log_level=log_level, access_log=False)
        return
    uvicorn.run(api, host=host, port=port, log_level=log_level, access_log=False)
