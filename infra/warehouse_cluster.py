"""ClickHouse cluster DDL generated from the warehouse's own migrations (``warehouse/migrations/*.sql``).

The single-node schema is the source of truth; this module rewrites it for a sharded, replicated cluster:

* **facts, rollups, audit** -> ``<table>_local`` with the ``Replicated*`` variant of their engine (same engine
  arguments, ZooKeeper/Keeper path ``/clickhouse/tables/{shard}/{database}/<table>_local``, replica ``{replica}``)
  plus a ``Distributed`` table under the original name, so every query and insert of the application is
  unchanged. The sharding key keeps a card's history on one shard (``cityHash64(card_id)``), else hashes the
  table's ORDER BY key, so every version of a ReplacingMergeTree row lands on the same shard and still collapses.
* **dimensions** (``dim_*``) -> replicated to every node (one replica set across the whole cluster, path without
  ``{shard}``): small, and joins against them stay local on each shard.
* **materialized views** -> created on every shard, reading ``<fact>_local`` and writing ``<rollup>_local``;
  reads through the Distributed rollup re-aggregate across shards (the rollups are always read re-aggregated).
* seed ``INSERT``s run once, against the (replicated) dimension.

``executable_variant`` turns the cluster DDL into what a single chdb process can run (no ``ON CLUSTER``,
non-replicated engines, ``Merge`` standing in for ``Distributed``); ``tests/test_infra_clickhouse.py`` runs it.

``python infra/warehouse_cluster.py [--check]`` writes (or checks) ``infra/clickhouse-cluster/schema.sql``.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "infra" / "clickhouse-cluster" / "schema.sql"
CLUSTER = "{cluster}"
LOCAL_SUFFIX = "_local"
SHARD_PREFERENCE = ("card_id", "member_id", "station_id", "tank_id")

_CREATE_TABLE = re.compile(r"^CREATE TABLE IF NOT EXISTS (\w+) \((.*)\)\s*ENGINE\s*=\s*(\w+)\(([^)]*)\)(.*)$",
                           re.S)
_CREATE_MV = re.compile(r"^CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+) TO (\w+) AS\s(.*)$", re.S)


@dataclass(frozen=True)
class Table:
    """One table of the single-node schema."""

    name: str
    body: str
    engine: str
    engine_args: str
    tail: str

    @property
    def columns(self) -> list[str]:
        """Column names, in order."""
        names = []
        for line in self.body.splitlines():
            m = re.match(r"^\s*(\w+)\s+\S", line)
            if m:
                names.append(m.group(1))
        return names

    @property
    def order_by(self) -> str:
        m = re.search(r"ORDER BY\s+(\(.*?\)|\w+)", self.tail, re.S)
        return m.group(1) if m else "tuple()"

    @property
    def is_dimension(self) -> bool:
        return self.name.startswith("dim_")

    def sharding_key(self) -> str:
        """How rows spread over shards (every version of a row on the same shard)."""
        cols = self.columns
        for c in SHARD_PREFERENCE:
            if c in cols:
                return f"cityHash64({c})"
        key = self.order_by
        return f"cityHash64{key}" if key.startswith("(") else f"cityHash64({key})"


def migration_statements(directory: Path | None = None) -> list[str]:
    """Every statement of the warehouse migrations, in order (the warehouse's own splitter and file list)."""
    from warehouse.engine import MIGRATIONS_DIR, _split_statements, migration_files

    out: list[str] = []
    for _, _, path in migration_files(directory or MIGRATIONS_DIR):
        out.extend(_split_statements(path.read_text()))
    return out


def parse_table(stmt: str) -> Table | None:
    """A CREATE TABLE statement as a :class:`Table` (None for anything else)."""
    m = _CREATE_TABLE.match(stmt.strip())
    if not m:
        return None
    name, body, engine, args, tail = m.groups()
    return Table(name, body, engine, args.strip(), tail.strip())


def _replicated_engine(table: Table, zk_path: str) -> str:
    args = [f"'{zk_path}'", "'{replica}'"] + ([table.engine_args] if table.engine_args else [])
    return f"Replicated{table.engine}({', '.join(args)})"


def cluster_statements(statements: list[str] | None = None, *, cluster: str = CLUSTER) -> list[str]:
    """The cluster variant of every migration statement (see the module docstring)."""
    statements = migration_statements() if statements is None else statements
    tables = {t.name: t for t in (parse_table(s) for s in statements) if t is not None}
    sharded = {n for n, t in tables.items() if not t.is_dimension}
    on = f"ON CLUSTER '{cluster}'"
    out: list[str] = []
    for stmt in statements:
        table = parse_table(stmt)
        if table is not None:
            if table.is_dimension:
                path = f"/clickhouse/tables/all/{{database}}/{table.name}"
                out.append(f"CREATE TABLE IF NOT EXISTS {table.name} {on} ({table.body})\n"
                           f"ENGINE = {_replicated_engine(table, path)}\n{table.tail}")
            else:
                local = table.name + LOCAL_SUFFIX
                path = f"/clickhouse/tables/{{shard}}/{{database}}/{local}"
                out.append(f"CREATE TABLE IF NOT EXISTS {local} {on} ({table.body})\n"
                           f"ENGINE = {_replicated_engine(table, path)}\n{table.tail}")
                out.append(f"CREATE TABLE IF NOT EXISTS {table.name} {on} AS {local}\n"
                           f"ENGINE = Distributed('{cluster}', currentDatabase(), {local}, {table.sharding_key()})")
            continue
        mv = _CREATE_MV.match(stmt.strip())
        if mv is not None:
            name, target, select = mv.groups()
            for t in sorted(sharded, key=len, reverse=True):
                select = re.sub(rf"\b{t}\b", t + LOCAL_SUFFIX, select)
            target = target + LOCAL_SUFFIX if target in sharded else target
            out.append(f"CREATE MATERIALIZED VIEW IF NOT EXISTS {name} {on} TO {target} AS\n{select}")
            continue
        if stmt.lstrip().upper().startswith("INSERT"):
            # Seeds of replicated dimensions and backfills of sharded tables (through the Distributed table,
            # which routes rows by the sharding key): run once, on one node.
            out.append(stmt)
            continue
        raise ValueError(f"no cluster rewrite for statement: {stmt[:80]}...")
    return out


def render(statements: list[str] | None = None) -> str:
    """The cluster schema as one SQL file."""
    header = ("-- GENERATED by infra/warehouse_cluster.py from warehouse/migrations/*.sql: do not edit.\n"
              "-- Macros {cluster}, {shard}, {replica} come from each server's config (infra/k8s/clickhouse.yaml).\n"
              "-- Apply with: clickhouse-client --multiquery < schema.sql (idempotent: IF NOT EXISTS).\n\n")
    return header + "".join(s.rstrip() + ";\n\n" for s in cluster_statements(statements))


def executable_variant(statements: list[str]) -> list[str]:
    """What one chdb/clickhouse-local process can run: no ON CLUSTER, plain engines, Merge for Distributed."""
    out = []
    merged: set[str] = set()
    for s in statements:
        if s.lstrip().upper().startswith("INSERT"):
            # a Merge table cannot be written: send the backfill to the one local table it stands for
            m = re.match(r"\s*INSERT INTO (\w+)", s)
            if m and m.group(1) in merged:
                s = s.replace(f"INSERT INTO {m.group(1)}", f"INSERT INTO {m.group(1)}{LOCAL_SUFFIX}", 1)
            out.append(s)
            continue
        s = re.sub(r" ON CLUSTER '[^']*'", "", s)
        s = re.sub(r"ENGINE = Replicated(\w+)\('[^']*', '\{replica\}'(?:, )?", r"ENGINE = \1(", s)
        s = re.sub(r"AS (\w+)\nENGINE = Distributed\('[^']*', currentDatabase\(\), (\w+), [^\n]*\)$",
                   r"AS \1\nENGINE = Merge(currentDatabase(), '^\2$')", s)
        m = re.match(r"CREATE TABLE IF NOT EXISTS (\w+) AS \w+\nENGINE = Merge", s)
        if m:
            merged.add(m.group(1))
        out.append(s)
    return out


def main(argv: list[str]) -> int:
    """Write (or with ``--check`` verify) infra/clickhouse-cluster/schema.sql."""
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            sys.stderr.write(f"{OUT} is stale: run python infra/warehouse_cluster.py\n")
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    sys.stdout.write(f"wrote {OUT}\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
