"""Query parameters: the one audited place where user values meet SQL.

Every query in the project is written once with ClickHouse's native placeholder syntax
``{name:Type}`` (e.g. ``WHERE date >= {date_from:Date} AND station_id = {station_id:String}``).
No value is ever formatted into SQL text:

* **chdb** binds them server-side (``Session.query(sql, params=...)``): the SQL text stays constant and the
  engine parses each value as the declared type;
* **clickhouse-driver** (server 18.16 predates server-side parameters) gets ``%(name)s`` placeholders and
  the *driver's* escaper renders the coerced Python value (str/int/float/date/datetime) as a literal.

Values are first coerced to the declared type by :func:`coerce`, so a string where an ``Int64`` is declared is
rejected before it reaches either engine.

>>> sql, values = bind("SELECT {a:Int64} + 1, {s:String}", {"a": "41", "s": "x'; DROP"}, style="pyformat")
>>> sql
'SELECT %(a)s + 1, %(s)s'
>>> values
{'a': 41, 's': "x'; DROP"}
>>> bind("SELECT {d:Date}", {"d": "2026-01-05"}, style="native")[1]
{'d': '2026-01-05'}
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any, Literal

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*):([A-Za-z0-9_(), ']+)\}")
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ParamError(ValueError):
    """A parameter is missing, unexpected or not of the declared type."""


def check_identifier(name: str) -> str:
    """Table/column names are never user input, but are still checked before use in SQL text."""
    if not IDENTIFIER.match(name):
        raise ParamError(f"not a valid identifier: {name!r}")
    return name


def placeholders(sql: str) -> dict[str, str]:
    """``{name: type}`` of every placeholder in ``sql``."""
    found: dict[str, str] = {}
    for name, typ in PLACEHOLDER.findall(sql):
        if name in found and found[name] != typ:
            raise ParamError(f"parameter {name!r} declared with two types: {found[name]} and {typ}")
        found[name] = typ
    return found


def _base_type(typ: str) -> str:
    t = typ.strip()
    m = re.match(r"^(Nullable|LowCardinality)\((.*)\)$", t)
    return _base_type(m.group(2)) if m else t


def coerce(value: Any, typ: str, *, name: str = "?") -> Any:
    """Convert ``value`` to the Python type matching the ClickHouse type ``typ`` or raise ParamError."""
    base = _base_type(typ)
    try:
        if base == "String":
            if not isinstance(value, str):
                raise TypeError("expected a string")
            return value
        if re.match(r"^U?Int(8|16|32|64)$", base):
            if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
                raise TypeError("expected an integer")
            out = int(value)
            if base.startswith("U") and out < 0:
                raise ValueError("expected a non-negative integer")
            return out
        if re.match(r"^Float(32|64)$", base):
            out_f = float(value)
            if not math.isfinite(out_f):
                raise ValueError("expected a finite number")
            return out_f
        if base == "Date":
            if isinstance(value, datetime):
                return value.date()
            if isinstance(value, date):
                return value
            return date.fromisoformat(str(value).strip())
        if base.startswith("DateTime"):
            if isinstance(value, datetime):
                dt = value
            elif isinstance(value, date):
                dt = datetime(value.year, value.month, value.day, tzinfo=UTC)
            else:
                dt = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            return dt.astimezone(UTC)
    except (TypeError, ValueError) as exc:
        raise ParamError(f"parameter {name!r}: {value!r} is not a valid {typ} ({exc})") from None
    raise ParamError(f"parameter {name!r}: type {typ} is not supported as a query parameter")


def _native_text(value: Any) -> str:
    """Text form for chdb's server-side binding (the engine parses it as the declared type)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def bind(
    sql: str, params: Mapping[str, Any] | None, *, style: Literal["native", "pyformat"]
) -> tuple[str, dict[str, Any]]:
    """Check and coerce ``params`` against the placeholders of ``sql``; return (sql, values) for one engine.

    ``native``: SQL unchanged, values as text for chdb's server-side binding.
    ``pyformat``: placeholders become ``%(name)s`` (literal ``%`` doubled), values as Python objects for
    clickhouse-driver's escaper. Unknown or missing parameters are errors.
    """
    params = dict(params or {})
    declared = placeholders(sql)
    missing = sorted(set(declared) - set(params))
    extra = sorted(set(params) - set(declared))
    if missing:
        raise ParamError(f"missing parameter(s): {', '.join(missing)}")
    if extra:
        raise ParamError(f"unexpected parameter(s): {', '.join(extra)}")
    values = {n: coerce(params[n], t, name=n) for n, t in declared.items()}
    if style == "native":
        # DateTime params are passed in UTC text; the placeholder type carries no timezone, so pin it.
        return sql, {n: _native_text(v) for n, v in values.items()}
    if not declared:
        return sql, {}
    out = sql.replace("%", "%%")
    out = PLACEHOLDER.sub(lambda m: f"%({m.group(1)})s", out)
    return out, values
