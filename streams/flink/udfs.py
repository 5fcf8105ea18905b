"""Python scalar UDFs of the Flink job: thin wrappers over the core's pure functions (the only Python that
runs inside Flink; windows and aggregates stay in Flink SQL)."""

from __future__ import annotations

from typing import Any

from fuelcard.window_spec import SCALAR_FEATURES, SCALAR_FUNCTIONS

from .sql import udf_name


def register_udfs(t_env: Any, tz_offset_hours: float) -> list[str]:
    """Register one ``BIGINT epoch seconds -> INT`` UDF per spec scalar function; returns their names."""
    from pyflink.table import DataTypes
    from pyflink.table.udf import udf

    names = []
    for function in sorted({s.function for s in SCALAR_FEATURES}):
        fn = SCALAR_FUNCTIONS[function]

        def call(ts_seconds: int | None, _fn: Any = fn) -> int | None:
            return None if ts_seconds is None else _fn(float(ts_seconds), tz_offset_hours)

        name = udf_name(function)
        t_env.create_temporary_function(name, udf(call, result_type=DataTypes.INT(),
                                                  input_types=[DataTypes.BIGINT()]))
        names.append(name)
    return names
