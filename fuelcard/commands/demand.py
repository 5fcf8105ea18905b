"""`fuelcard demand ...`: demand forecasting backtest on any daily/weekly series file."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from fuelcard.commands.common import CliError, read_table, write_table_atomic

app = typer.Typer(no_args_is_help=True)


_HELP = (
    "Forecast HORIZON periods after each series' last date with an 80% prediction interval."
    "\n\n"
    'The frequency (daily, days-of-week subsets, weekly, monthly, quarterly, hourly) is inferred from the '
    'dates; duplicate dates are summed, gaps filled. Per series, seasonal naive, seasonal means, '
    'exponential smoothing, STL decomposition (statsmodels) + damped-trend smoothing and a regression '
    'decomposition (trend, weekday, yearly Fourier terms, holidays) are compared on held-out windows at '
    'the end of the history; the best is refitted. Holidays (daily data within 2004-2026) are used only '
    'if they improve the fit. Forecasts are non-negative when the history is.'
)


@app.command("backtest", help=_HELP)
def backtest(
    series: Path = typer.Option(..., "--series", help="Long table (CSV or Parquet): one row per date [and id]."),
    date_col: str = typer.Option(..., "--date-col", help="Date column (any parseable date format)."),
    value_col: str = typer.Option(..., "--value-col", help="Numeric value to forecast (e.g. sales)."),
    id_col: str | None = typer.Option(None, "--id-col", help="Series identifier column (omit for one series)."),
    horizon: int = typer.Option(..., "--horizon", help="Periods to forecast after each series' last date."),
    out: Path = typer.Option(..., "--out", help="Output: [id,]date,forecast,lower,upper."),
    jobs: int = typer.Option(0, "--jobs", help="Worker processes (0 = up to 2, by CPU count)."),
    holidays: str = typer.Option("auto", "--holidays", help="Chinese public-holiday regressors: auto|on|off."),
) -> None:
    """Backtest command; its user-facing help is ``_HELP`` (paragraphs kept intact by Typer)."""
    if horizon <= 0:
        raise CliError(f"--horizon must be a positive integer, got {horizon}")
    if holidays not in {"auto", "on", "off"}:
        raise CliError(f"--holidays must be auto, on or off, got {holidays!r}")
    required = [date_col, value_col] + ([id_col] if id_col else [])
    df = read_table(series, required=required, name="--series")

    import pandas as pd

    from models.common import coerce_numeric
    from models.demand import forecast_frame

    values = coerce_numeric(df[value_col], min_share=0.0)
    if values is None or values.notna().sum() == 0:
        raise CliError(f"--series: column {value_col!r} has no numeric values")
    n_jobs = jobs if jobs > 0 else max(1, min(2, os.cpu_count() or 1))
    use_hol = None if holidays == "auto" else holidays == "on"
    try:
        fc, info = forecast_frame(df, date_col=date_col, value_col=value_col, id_col=id_col, horizon=horizon,
                                  n_jobs=n_jobs, use_holidays=use_hol)
    except ValueError as exc:
        raise CliError(f"--series: {exc}") from None
    fc = fc.copy()
    has_time = info["frequency"] == "H"
    fc["date"] = pd.to_datetime(fc["date"]).dt.strftime("%Y-%m-%d %H:%M:%S" if has_time else "%Y-%m-%d")
    for c in ("forecast", "lower", "upper"):
        fc[c] = fc[c].astype(float).round(4)
    write_table_atomic(fc, out)
    typer.echo(f"demand backtest: {info['series']} series, frequency={info['frequency']}, "
               f"holidays={'on' if info['holidays'] else 'off'}, models={info['models']}; "
               f"wrote {len(fc)} rows to {out}", err=True)
