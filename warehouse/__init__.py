"""The ClickHouse warehouse (batch layer): one interface over embedded chdb and a ClickHouse server.

>>> # wh = connect("chdb:///tmp/wh"); wh.migrate(); wh.named_query("sales_daily", date_from="2026-01-01")

See docs/WAREHOUSE.md for the schema, the engines and the embedded-mode design.
"""

from warehouse.engine import (
    DEDUP_TABLES,
    UnsupportedOnEngine,
    Warehouse,
    WarehouseError,
    WarehouseLocked,
    connect,
    parse_url,
)
from warehouse.params import ParamError

__all__ = [
    "DEDUP_TABLES",
    "ParamError",
    "UnsupportedOnEngine",
    "Warehouse",
    "WarehouseError",
    "WarehouseLocked",
    "connect",
    "parse_url",
]
