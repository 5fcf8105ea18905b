"""The ``fuelcard`` command line: one entry point for every user-facing job.

Sub-command groups live in :mod:`fuelcard.commands`; heavy libraries are
imported inside the commands so ``fuelcard --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys

import typer

from fuelcard.commands.common import CliError

app = typer.Typer(
    name="fuelcard",
    help="Streaming risk and analytics for a fuel-card network: simulate data, run the stream, "
    "train and backtest models, load the warehouse and serve the API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# (module, group name or None for top-level commands, help)
_GROUPS: list[tuple[str, str | None, str]] = [
    ("fuelcard.commands.schemas", None, ""),
    ("fuelcard.commands.simulate", None, ""),
    ("fuelcard.commands.fraud", "fraud", "Fraud model: backtest on any transaction file, report."),
    ("fuelcard.commands.churn", "churn", "Churn survival model: backtest on any customer table."),
    ("fuelcard.commands.demand", "demand", "Demand forecasting: backtest on any daily/weekly series."),
    ("fuelcard.commands.warehouse", "warehouse", "ClickHouse warehouse: migrate schema, load data, query."),
    ("fuelcard.commands.train", "train", "Train models from the warehouse into the registry."),
    ("fuelcard.commands.models", "models", "Model registry: list, compare, promote, roll back."),
    ("fuelcard.commands.stream", "stream", "Speed layer: broker, Faust workers, producers."),
    ("fuelcard.commands.flink", "flink", "PyFlink window features: print SQL, stream, backfill."),
    ("fuelcard.commands.serve", None, ""),
    ("fuelcard.commands.demo", None, ""),
]


def _register() -> None:
    for module_name, group, help_text in _GROUPS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # that part of the system is not built yet
            raise
        sub = module.app
        if group is None:
            for command in sub.registered_commands:
                app.registered_commands.append(command)
        else:
            app.add_typer(sub, name=group, help=help_text)




@app.callback()
def _root() -> None:
    """Streaming risk and analytics for a fuel-card network."""


_register()


def main() -> None:
    """Console-script entry point: user errors become one line on stderr and exit status 2."""
    try:
        app(standalone_mode=False)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        # Usage errors from Typer's bundled click (bad option, missing argument): one line, exit 2.
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            message = exc.format_message()
            if message:
                print(f"error: {message}", file=sys.stderr)
            sys.exit(exc.exit_code or 2)
        raise


if __name__ == "__main__":
    main()
