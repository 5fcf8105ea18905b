"""``fuelcard simulate``: write the synthetic fuel-card network (docs/DATA.md) as Parquet files."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import typer

from fuelcard.commands.common import CliError, parse_day

app = typer.Typer(add_completion=False)


@app.command("simulate")
def simulate_cmd(
    out: Path = typer.Option(..., "--out", help="Output directory (created; replaced if it holds a simulation)."),
    seed: int = typer.Option(7, "--seed", help="Random seed: same seed, same data."),
    days: int = typer.Option(60, "--days", help="Number of days to simulate (1-3660)."),
    stations: int = typer.Option(200, "--stations", help="Number of own stations (5-20000)."),
    members: int = typer.Option(20_000, "--members", help="Number of members, fleet owners included (50-5000000)."),
    start: str = typer.Option("2026-01-01", "--start", help="First local day, YYYY-MM-DD."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Simulate stations, members, cards, fleets, transactions with fraud labels, tank readings, prices and
    ground truth; write every file of docs/DATA.md into OUT (all or nothing)."""
    from fuelcard.simulator import OutputError, SimConfig, simulate, write

    first = parse_day(start, name="--start")
    if days < 1 or days > 3660:
        raise CliError(f"--days must be between 1 and 3660, got {days}")
    if stations < 5 or stations > 20_000:
        raise CliError(f"--stations must be between 5 and 20000, got {stations}")
    if members < 50 or members > 5_000_000:
        raise CliError(f"--members must be between 50 and 5000000, got {members}")
    target = out.expanduser()
    if target.exists() and not target.is_dir():
        raise CliError(f"--out: {target} exists and is not a directory")
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CliError(f"--out: cannot write to {parent}")
    started = time.perf_counter()
    try:
        frames = simulate(SimConfig(seed=seed, days=days, stations=stations, members=members, start=first),
                          progress=not quiet)
        write(frames, target)
    except (OutputError, ValueError) as exc:
        raise CliError(f"--out: {exc}" if isinstance(exc, OutputError) else str(exc)) from None
    except OSError as exc:
        raise CliError(f"--out: cannot write {target}: {exc.strerror or exc}") from None
    tx = frames["transactions.parquet"]
    truth = frames["ground_truth/truth.json"]
    typer.echo(
        f"wrote {target}: {len(tx):,} transactions ({truth['fraud']['total_rate']:.2%} fraud), "
        f"{len(frames['members.parquet']):,} members ({truth['churn']['n_churned']:,} churned), "
        f"{len(frames['stations.parquet'])} stations, {days} days from {first} "
        f"in {time.perf_counter() - started:.1f}s",
        err=False,
    )
    sys.stdout.flush()
