"""`fuelcard train churn|pricing|demand|sites|fraud|all`: train from the warehouse into the model registry.

Cron-friendly: exits 0 when every requested job succeeded (or was already up to date), non-zero otherwise
(2 for user errors such as an empty warehouse, 1 when a job failed); a re-run with the same cut-off and data
registers nothing new.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import typer

from fuelcard.commands.common import CliError, parse_day
from fuelcard.settings import Settings

app = typer.Typer(no_args_is_help=True)

_AS_OF = typer.Option(None, "--as-of", help="Cut-off day (YYYY-MM-DD): only data before it is used. "
                      "Default: the day after the last day of sales in the source.")
_WINDOW = typer.Option(365, "--window-days", min=7, help="History window before the cut-off")
_SEED = typer.Option(0, "--seed", help="Random seed (same data + seed -> same model)")
_FROM_DIR = typer.Option(None, "--from-dir", help="Read a `fuelcard simulate` directory instead of the warehouse")
_TRUTH = typer.Option(None, "--truth", help="ground_truth/truth.json to evaluate against (pricing); "
                      "default: DIR/ground_truth/truth.json with --from-dir")
_NO_PROMOTE = typer.Option(False, "--no-promote", help="Register without promoting")
_FORCE = typer.Option(False, "--force", help="Register a new version even if an identical one exists")
_QUIET = typer.Option(False, "--quiet", "-q", help="No progress display")
_JSON = typer.Option(False, "--json", help="Print one JSON line per job")
_REGISTRY = typer.Option(None, "--registry", help="Registry root (default: settings registry_dir)")
_REPORTS = typer.Option(None, "--reports", help="Copy each new version's reports (PNG/CSV/TXT) to REPORTS/<kind>/ "
                        "(default: settings reports_dir)")


def _run(kinds: list[str], *, as_of: str | None, window_days: int, seed: int, from_dir: Path | None,
         truth: Path | None, no_promote: bool, force: bool, quiet: bool, as_json: bool,
         registry: Path | None, holdout_days: int = 0, reports: Path | None = None) -> None:
    from fuelcard.commands import train_jobs as tj
    from models.registry import Registry

    settings = Settings()
    wh = None
    if from_dir is not None:
        if not Path(from_dir).is_dir():
            raise CliError(f"--from-dir: not a directory: {from_dir}")
        source: tj.DataSource = tj.ParquetSource(Path(from_dir))
        if truth is None and (Path(from_dir) / "ground_truth" / "truth.json").exists():
            truth = Path(from_dir) / "ground_truth" / "truth.json"
    else:
        try:
            wh = tj.connect_warehouse(settings)
        except tj.JobError as exc:
            raise CliError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - the warehouse's own error, one line
            raise CliError(f"cannot open the warehouse {settings.warehouse_url}: {str(exc).splitlines()[0]}") from None
        source = tj.WarehouseSource(wh)
    try:
        cutoff: date = parse_day(as_of, name="--as-of") if as_of else tj.default_as_of(source)
        if holdout_days and not as_of:
            from datetime import timedelta

            cutoff = cutoff - timedelta(days=holdout_days)
    except tj.JobError as exc:
        raise CliError(str(exc)) from None
    reg = Registry(registry or settings.registry_dir)
    failures: list[str] = []
    with tj.progress_bar(len(kinds), enabled=not quiet and not as_json) as say:
        ctx = tj.TrainContext(source=source, registry=reg, as_of=cutoff, window_days=window_days, seed=seed,
                              truth_path=truth, warehouse=wh, progress=say,
                              reports_dir=reports or settings.reports_dir)
        for kind in kinds:
            spec = tj.SPECS[kind]
            if not spec.available():
                failures.append(f"{kind}: model code not available yet")
                _emit(as_json, {"kind": kind, "status": "unavailable"}, f"{kind:8s} unavailable (model not built)")
                continue
            try:
                out = tj.run_job(ctx, kind, promote=not no_promote, force=force)
            except tj.JobError as exc:
                failures.append(f"{kind}: {exc}")
                _emit(as_json, {"kind": kind, "status": "failed", "error": str(exc)}, f"{kind:8s} FAILED: {exc}")
                continue
            except Exception as exc:  # noqa: BLE001 - one job failing must not stop the others (cron)
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                failures.append(f"{kind}: {type(exc).__name__}: {msg}")
                _emit(as_json, {"kind": kind, "status": "failed", "error": msg}, f"{kind:8s} FAILED: {msg}")
                continue
            finally:
                say(f"{kind} done")
            status = "registered" if out.created else "up-to-date"
            headline = {k: v for k, v in out.metrics.items() if isinstance(v, int | float)}
            short = ", ".join(f"{k}={v:.4g}" for k, v in list(headline.items())[:6])
            _emit(as_json, {"kind": kind, "status": status, "version": out.version,
                            "seconds": round(out.seconds, 2), "metrics": headline},
                  f"{kind:8s} {status:10s} {out.version}  ({out.seconds:.1f}s)  {short}")
    if wh is not None:
        close = getattr(wh, "close", None)
        if close:
            close()
    if failures:
        if len(kinds) == 1:
            raise CliError(failures[0])
        typer.echo(f"error: {len(failures)} job(s) failed: " + "; ".join(failures), err=True)
        raise typer.Exit(1)


def _emit(as_json: bool, record: dict, text: str) -> None:
    typer.echo(json.dumps(record, default=str) if as_json else text)


def _command(kind: str):  # noqa: ANN202 - Typer command factory
    def command(
        as_of: str = _AS_OF, window_days: int = _WINDOW, seed: int = _SEED, from_dir: Path = _FROM_DIR,
        truth: Path = _TRUTH, no_promote: bool = _NO_PROMOTE, force: bool = _FORCE, quiet: bool = _QUIET,
        as_json: bool = _JSON, registry: Path = _REGISTRY, reports: Path = _REPORTS,
        holdout_days: int = typer.Option(0, "--holdout-days", min=0,
                                         help="Default cut-off this many days before the end of the data "
                                              "(the held-out days evaluate pricing against the truth)"),
    ) -> None:
        from fuelcard.commands.train_jobs import KINDS

        kinds = list(KINDS) if kind == "all" else [kind]
        _run(kinds, as_of=as_of, window_days=window_days, seed=seed, from_dir=from_dir, truth=truth,
             no_promote=no_promote, force=force, quiet=quiet, as_json=as_json, registry=registry,
             holdout_days=holdout_days, reports=reports)

    command.__doc__ = ("Train every model kind (churn, pricing, demand, sites, fraud)." if kind == "all"
                       else f"Train the {kind} model from data before the cut-off and register it.")
    return command


for _kind in ("churn", "pricing", "demand", "sites", "fraud", "all"):
    app.command(_kind)(_command(_kind))
