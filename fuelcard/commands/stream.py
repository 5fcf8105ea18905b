"""``fuelcard stream …``: the embedded broker, topics, Faust workers, the feeder and the risk API."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from fuelcard.commands.common import CliError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Speed layer: broker, Faust workers, producers.")


@app.command("broker")
def broker(
    data_dir: Annotated[Path, typer.Option(help="Broker data directory (persists topics, data, offsets)")] = Path(
        "var/broker"),
    port: Annotated[int, typer.Option(help="Kafka port on 127.0.0.1")] = 19092,
    prefix: Annotated[str, typer.Option(help="Topic name prefix")] = "fuelcard",
    app_id: Annotated[str, typer.Option(help="Faust app id (names the table changelog topics)")] = "fuelcard-stream",
) -> None:
    """Run the embedded noida-db broker in the foreground with every topic created; Ctrl-C stops it."""
    from streams.broker import BrokerError, EmbeddedBroker, _run_coro
    from streams.topics import all_topic_specs, ensure_topics

    b = EmbeddedBroker(data_dir, port)
    try:
        b.start()
    except BrokerError as exc:
        raise CliError(str(exc)) from None
    try:
        created = _run_coro(ensure_topics(b.bootstrap, all_topic_specs(prefix, app_id)))
        typer.echo(f"broker ready: kafka://{b.bootstrap} (pid {b.pid}); topics created: {len(created)}")
        while b.proc is not None and b.proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        b.stop()


@app.command("topics")
def topics(
    bootstrap: Annotated[str | None, typer.Option(help="host:port (default FUELCARD_KAFKA_BOOTSTRAP)")] = None,
    prefix: Annotated[str, typer.Option()] = "fuelcard",
    app_id: Annotated[str, typer.Option()] = "fuelcard-stream",
) -> None:
    """Create every topic (idempotent) on a running broker and print their partition counts."""
    from fuelcard.settings import load_settings
    from streams.broker import _run_coro, bootstrap_servers
    from streams.topics import all_topic_specs, ensure_topics, partition_counts

    bs = bootstrap or bootstrap_servers(load_settings().kafka_bootstrap)
    specs = all_topic_specs(prefix, app_id)
    try:
        _run_coro(ensure_topics(bs, specs))
        counts = _run_coro(partition_counts(bs, [s[0] for s in specs]))
    except Exception as exc:  # noqa: BLE001
        raise CliError(f"cannot reach the broker at {bs}: {exc}") from None
    for name, n in counts.items():
        typer.echo(f"{name}\t{n}")


@app.command("worker", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(ctx: typer.Context) -> None:
    """Run one Faust worker (options: see ``python -m streams.worker --help``)."""
    from streams.worker import run

    run(list(ctx.args))


@app.command("feed")
def feed(
    data: Annotated[Path, typer.Option(help="Simulator output directory (fuelcard simulate --out)")],
    bootstrap: Annotated[str | None, typer.Option(help="host:port (default FUELCARD_KAFKA_BOOTSTRAP)")] = None,
    prefix: Annotated[str, typer.Option()] = "fuelcard",
    rate: Annotated[float, typer.Option(help="Events per second (0 = as fast as possible)")] = 200.0,
    day: Annotated[str | None, typer.Option(help="Only this day (YYYY-MM-DD) of the transactions")] = None,
    loop: Annotated[bool, typer.Option(help="Repeat forever with fresh tx ids (steady feed for `make up`)")] = False,
) -> None:
    """Stream simulated authorisations, captures/cancels/refunds, recharges and redemptions into Kafka."""
    import asyncio

    import pandas as pd

    from fuelcard.commands.common import parse_day, read_table
    from fuelcard.settings import load_settings
    from streams.broker import bootstrap_servers
    from streams.feed import day_events, to_records
    from streams.loadgen import make_producer, produce_at_rate

    tx = read_table(data / "transactions.parquet", required=["tx_id", "ts", "card_id", "station_id", "product",
                                                              "amount_fen"], name="transactions")
    rech = read_table(data / "recharges.parquet", name="recharges") if (data / "recharges.parquet").exists() \
        else None
    red = read_table(data / "redemptions.parquet", name="redemptions") \
        if (data / "redemptions.parquet").exists() else None
    if day:
        d = parse_day(day, name="--day")
        tx = tx[pd.to_datetime(tx["ts"], utc=True).dt.date == d]
        if tx.empty:
            raise CliError(f"no transactions on {d}")
    bs = bootstrap or bootstrap_servers(load_settings().kafka_bootstrap)

    async def go() -> int:
        producer = await make_producer(bs)
        total, round_no = 0, 0
        try:
            while True:
                frame = tx if round_no == 0 else tx.assign(tx_id=tx["tx_id"].astype(str) + f"-r{round_no}")
                events = day_events(frame, recharges=rech if round_no == 0 else None,
                                    redemptions=red if round_no == 0 else None)
                total += await produce_at_rate(producer, to_records(events, prefix), rate=rate or None)
                round_no += 1
                if not loop:
                    return total
        finally:
            await producer.stop()

    try:
        n = asyncio.run(go())
    except KeyboardInterrupt:
        return
    except OSError as exc:
        raise CliError(f"cannot reach the broker at {bs}: {exc}") from None
    typer.echo(f"produced {n} events to {prefix}.* on {bs}")


@app.command("api")
def api(
    port: Annotated[int, typer.Option()] = 18010,
    bootstrap: Annotated[str | None, typer.Option()] = None,
    prefix: Annotated[str, typer.Option()] = "fuelcard",
    budget_ms: Annotated[float | None, typer.Option(help="Time budget before a degraded answer")] = None,
) -> None:
    """Serve only the synchronous risk endpoint (POST /v1/risk/decide) on 127.0.0.1."""
    from serving.risk import serve_main

    argv = ["--port", str(port), "--prefix", prefix]
    if bootstrap:
        argv += ["--bootstrap", bootstrap]
    if budget_ms:
        argv += ["--budget-ms", str(budget_ms)]
    serve_main(argv)


@app.command("demo-day")
def demo_day(
    data: Annotated[Path, typer.Option(help="Simulator output directory")],
    out: Annotated[Path, typer.Option(help="Working directory for broker data, logs and sink files")] = Path(
        "var/stream-demo"),
    day: Annotated[str | None, typer.Option(help="Day to stream (default: the first)")] = None,
    workers: Annotated[int, typer.Option(min=1, max=8)] = 1,
    port: Annotated[int, typer.Option()] = 19250,
) -> None:
    """Stream one simulated day through the real agents on the embedded broker and print the summary."""
    import json

    import pandas as pd

    from fuelcard.commands.common import parse_day, read_table
    from fuelcard.settings import load_settings
    from streams.demo import run_demo_day

    tx = read_table(data / "transactions.parquet", required=["tx_id", "ts", "card_id", "station_id", "product",
                                                              "amount_fen"], name="transactions")
    dates = pd.to_datetime(tx["ts"], utc=True).dt.date
    d = parse_day(day, name="--day") if day else dates.min()
    tx = tx[dates == d]
    if tx.empty:
        raise CliError(f"no transactions on {d}")

    def opt(name: str) -> pd.DataFrame | None:
        p = data / f"{name}.parquet"
        if not p.exists():
            return None
        df = pd.read_parquet(p)
        if "ts" in df.columns:
            df = df[pd.to_datetime(df["ts"], utc=True).dt.date == d]
        return df

    summary = run_demo_day(load_settings(), out, tx, cards=pd.read_parquet(data / "cards.parquet"),
                           members=pd.read_parquet(data / "members.parquet"), recharges=opt("recharges"),
                           redemptions=opt("redemptions"), workers=workers, port=port)
    typer.echo(json.dumps(summary, indent=2, default=str))
