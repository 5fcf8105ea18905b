"""`fuelcard churn ...`: survival-model churn backtest on any customer table."""

from __future__ import annotations

from pathlib import Path

import typer

from fuelcard.commands.common import CliError, read_table, write_table_atomic

app = typer.Typer(no_args_is_help=True)


_HELP = (
    'Fit Cox PH and parametric AFT models (lifelines) on TRAIN, keep the better one on a held-out split '
    '(time-dependent AUC at H, then Brier), and write P(event within H) for every row of SCORE, in order.'
    "\n\n"
    'All other columns are covariates: numeric strings with blanks are parsed, Yes/No become 0/1, string '
    'categoricals become dummies of their frequent levels, ID-like and constant columns and columns that '
    'merely accumulate with the duration (e.g. TotalCharges) are dropped, gaps are imputed from TRAIN '
    'statistics.'
    "\n\n"
    'Probability semantics: if a SCORE row has no duration (column absent or blank) the probability is '
    'unconditional from time 0, 1 - S(H). If it carries a duration t (its current tenure), it is the '
    'conditional probability of the event in (t, t+H] given survival to t: 1 - S(t+H)/S(t).'
)


@app.command("backtest", help=_HELP)
def backtest(
    train: Path = typer.Option(..., "--train", help="Training table (CSV or Parquet) with durations and events."),
    score: Path = typer.Option(..., "--score", help="Rows to score (duration/event columns optional)."),
    id_col: str = typer.Option(..., "--id-col", help="Row identifier column (must be in the score file)."),
    duration_col: str = typer.Option(..., "--duration-col", help="Observed time (tenure) column."),
    event_col: str = typer.Option(..., "--event-col", help="Event column: 0/1, boolean, Yes/No, True/False."),
    horizon: float = typer.Option(..., "--horizon", help="H, in the duration column's units."),
    out: Path = typer.Option(..., "--out", help="Output CSV/Parquet: id,churn_probability."),
    seed: int = typer.Option(0, "--seed", help="Seed for the held-out split."),
) -> None:
    """Backtest command; its user-facing help is ``_HELP`` (paragraphs kept intact by Typer)."""
    if horizon <= 0:
        raise CliError(f"--horizon must be positive, got {horizon}")
    tr = read_table(train, required=[duration_col, event_col], name="--train")
    sc = read_table(score, required=[id_col], name="--score")

    import numpy as np
    import pandas as pd

    from models.churn import fit_churn_model

    try:
        model = fit_churn_model(tr, duration_col=duration_col, event_col=event_col, horizon=horizon,
                                exclude=(id_col,), seed=seed)
    except ValueError as exc:
        raise CliError(f"--train: {exc}") from None
    prob = model.predict_proba(sc, horizon)
    prob = np.clip(np.nan_to_num(prob, nan=float(model.metrics.get("base_rate", 0.5))), 0.0, 1.0)
    result = pd.DataFrame({"id": sc[id_col].to_numpy(), "churn_probability": np.round(prob, 6)})
    write_table_atomic(result, out)
    hold = model.metrics.get("holdout", {}).get(model.kind, {})
    summary = ", ".join(f"{k}={v:.3f}" for k, v in hold.items() if k != "penalizer" and np.isfinite(v))
    typer.echo(f"churn backtest: model={model.kind} covariates={model.metrics.get('n_covariates')} "
               f"train_rows={model.metrics.get('n_rows')} events={model.metrics.get('n_events')}"
               + (f" holdout: {summary}" if summary else "") + f"; wrote {len(result)} rows to {out}", err=True)
