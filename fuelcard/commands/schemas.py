"""`fuelcard schemas`: export the JSON Schema of every event and entity."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from fuelcard.events import json_schemas

app = typer.Typer()


@app.command("schemas")
def schemas(out: Path = typer.Option(Path("schemas"), help="Directory for the *.schema.json files")) -> None:
    """Write one JSON Schema file per event/entity model (the repo keeps them in schemas/)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, schema in json_schemas().items():
        (out / f"{name}.schema.json").write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
    typer.echo(f"wrote {len(json_schemas())} schemas to {out}")
