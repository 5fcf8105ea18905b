"""`fuelcard flink …`: the PyFlink window-feature job (streams/flink): print its SQL, stream, backfill.

Needs the optional extra (``pip install -e '.[flink]'``, done by ``make setup``) and, for Kafka, the connector
jars fetched by ``infra/scripts/fetch-flink-jars.sh``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from fuelcard.commands.common import CliError, read_table, write_table_atomic

app = typer.Typer(no_args_is_help=True, help="PyFlink window-feature job: SQL, stream, backfill.")


def _require_pyflink() -> None:
    try:
        import pyflink  # noqa: F401
    except ModuleNotFoundError:
        raise CliError("apache-flink is not installed: pip install -e '.[flink]' (make setup does it)") from None


@app.command("sql")
def sql() -> None:
    """Print the Flink SQL generated from the window-feature spec (fuelcard/window_spec.py)."""
    from streams.flink.sql import KafkaEndpoint, kafka_source_ddl, pipeline_statements

    views, inserts = pipeline_statements()
    typer.echo(kafka_source_ddl(KafkaEndpoint("<bootstrap>", "<prefix>.authorisations")) + ";\n")
    for stmt in views + inserts:
        typer.echo(stmt + ";\n")


@app.command("run")
def run(
    prefix: Annotated[str, typer.Option(help="topic prefix: reads <prefix>.authorisations")] = "fuelcard",
    bootstrap: Annotated[str | None, typer.Option(help="host:port (default FUELCARD_KAFKA_BOOTSTRAP)")] = None,
    bounded: Annotated[bool, typer.Option(help="stop at the end offsets seen at start")] = False,
    parallelism: Annotated[int, typer.Option(min=1, max=64)] = 1,
) -> None:
    """Stream window features from the authorisations topic to <prefix>.card-window-features/-aggregates."""
    _require_pyflink()
    from fuelcard.settings import load_settings
    from streams.broker import bootstrap_servers
    from streams.flink.jars import JarsMissing
    from streams.flink.job import AGGREGATES_TOPIC_SUFFIX, FEATURES_TOPIC_SUFFIX, JobConfig, run_kafka_job

    bs = bootstrap or bootstrap_servers(load_settings().kafka_bootstrap)
    try:
        run_kafka_job(bootstrap=bs, source_topic=f"{prefix}.authorisations",
                      features_topic=f"{prefix}.{FEATURES_TOPIC_SUFFIX}",
                      aggregates_topic=f"{prefix}.{AGGREGATES_TOPIC_SUFFIX}", bounded=bounded,
                      config=JobConfig(parallelism=parallelism))
    except JarsMissing as exc:
        raise CliError(str(exc)) from None


@app.command("backfill")
def backfill(
    transactions: Annotated[Path, typer.Option(help="CSV/Parquet with tx_id, ts, card_id, station_id, amount_fen")],
    out: Annotated[Path, typer.Option(help="output CSV/Parquet: one row per transaction with its window features")],
    parallelism: Annotated[int, typer.Option(min=1, max=64)] = 2,
) -> None:
    """Recompute the window features of a transaction history on the local Flink mini-cluster."""
    _require_pyflink()
    import pandas as pd

    from fuelcard.window_spec import FEATURE_NAMES
    from streams.flink.job import JobConfig, run_file_backfill

    df = read_table(transactions, required=("tx_id", "ts", "card_id", "station_id", "amount_fen"),
                    name="transactions")
    ts = pd.to_datetime(df["ts"], utc=True, errors="coerce")
    if ts.isna().any():
        raise CliError(f"transactions: {int(ts.isna().sum())} unparsable ts values")
    export = pd.DataFrame({"tx_id": df["tx_id"].astype(str), "card_id": df["card_id"].astype(str),
                           "station_id": df["station_id"].astype(str),
                           "amount_fen": pd.to_numeric(df["amount_fen"], errors="raise").astype("int64"),
                           "ts_ms": ts.astype("int64") // 1_000_000})
    work = Path(tempfile.mkdtemp(prefix="flink-backfill-"))
    try:
        export.to_csv(work / "history.csv", header=False, index=False)
        run_file_backfill(source=work / "history.csv", out_dir=work / "out",
                          config=JobConfig(parallelism=parallelism, with_aggregates=False))
        parts = [p for p in (work / "out" / "features").rglob("*") if p.is_file() and not p.name.startswith(".")]
        cols = ["tx_id", "card_id", "ts", *FEATURE_NAMES]
        result = pd.concat([pd.read_csv(p, header=None, names=cols) for p in parts], ignore_index=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_table_atomic(result.sort_values("tx_id"), out)
    typer.echo(f"{len(result)} transactions -> {out}")
