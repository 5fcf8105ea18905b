"""`fuelcard models ...`: list, show, compare, promote and roll back registered model versions."""

from __future__ import annotations

import json

import typer

from fuelcard.commands.common import CliError
from fuelcard.settings import Settings
from models.registry import Registry, RegistryError

app = typer.Typer(no_args_is_help=True)


def _registry() -> Registry:
    return Registry(Settings().registry_dir)


@app.command("list")
def list_(kind: str = typer.Argument(None, help="Model kind (fraud, churn, pricing, demand, sites)")) -> None:
    """List registered versions with their headline metrics; * marks the promoted one."""
    reg = _registry()
    kinds = [kind] if kind else reg.kinds()
    if not kinds:
        typer.echo("registry is empty: run `fuelcard train all`")
        return
    for k in kinds:
        current = reg.current_version(k)
        versions = reg.versions(k)
        if not versions:
            raise CliError(f"no versions of {k!r} in the registry")
        for m in versions:
            mark = "*" if m.version == current else " "
            headline = ", ".join(f"{n}={v:.4g}" if isinstance(v, int | float) else f"{n}={v}"
                                 for n, v in list(m.metrics.items())[:4])
            typer.echo(f"{mark} {k:8s} {m.version:32s} {m.created_at[:19]}  {headline}")


@app.command("show")
def show(kind: str, version: str = typer.Argument(None, help="Default: the promoted version")) -> None:
    """Print a version's metadata as JSON."""
    reg = _registry()
    try:
        v = version or reg.current_version(kind)
        if v is None:
            raise CliError(f"no promoted {kind} model")
        typer.echo(json.dumps(reg.meta(kind, v).to_dict(), indent=2))
    except RegistryError as exc:
        raise CliError(str(exc)) from None


@app.command("compare")
def compare(kind: str, a: str, b: str) -> None:
    """Metrics of two versions side by side."""
    try:
        rows = _registry().compare(kind, a, b)
    except RegistryError as exc:
        raise CliError(str(exc)) from None
    typer.echo(f"{'metric':28s} {a[-20:]:>20s} {b[-20:]:>20s}")
    for name, (va, vb) in rows.items():
        typer.echo(f"{name:28s} {str(va)[:20]:>20s} {str(vb)[:20]:>20s}")


@app.command("promote")
def promote(kind: str, version: str) -> None:
    """Make a version the one the API and the stream load (picked up without a restart)."""
    try:
        _registry().promote(kind, version)
    except RegistryError as exc:
        raise CliError(str(exc)) from None
    typer.echo(f"promoted {kind} {version}")


@app.command("rollback")
def rollback(kind: str) -> None:
    """Return to the previously promoted version."""
    try:
        target = _registry().rollback(kind)
    except RegistryError as exc:
        raise CliError(str(exc)) from None
    typer.echo(f"rolled back {kind} to {target}")
