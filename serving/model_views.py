"""Serving views built from registry artifacts of the real models (loaded once per promoted version).

A batch job writes a model version into the registry (``models.registry``). When the API first needs a kind,
or when a new version is promoted, the loader here builds an in-memory, indexed view of what that version
says (per-member churn scores and segments, price recommendations, forecasts, replenishment plans, alerts,
candidate sites). Requests are then dictionary/array lookups: no model fitting or warehouse scan on the
request path, which is how the model endpoints stay within a few milliseconds.

Each loader prefers the output tables the training job saved next to the model (Parquet/CSV in the version
directory, found by their columns); when a version carries only the fitted model, the loader computes the
outputs with the model module's own functions on the warehouse's current data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.registry import ModelMeta
from serving.ports import Row

log = logging.getLogger("serving.models")


# ---------------------------------------------------------------- helpers


def find_table(directory: Path, required: Iterable[str], *, prefer: Iterable[str] = ()) -> pd.DataFrame | None:
    """The first Parquet/CSV file under ``directory`` (two levels) whose columns include ``required``.

    Files whose name contains one of ``prefer`` are tried first.
    """
    need = set(required)
    files = sorted([*directory.glob("*.parquet"), *directory.glob("*/*.parquet"), *directory.glob("*.csv"),
                    *directory.glob("*/*.csv")])
    pref = tuple(prefer)
    files.sort(key=lambda p: (not any(k in p.name for k in pref), str(p)))
    for f in files:
        try:
            if f.suffix == ".parquet":
                import pyarrow.parquet as pq

                cols = set(pq.read_schema(f).names)
                if need <= cols:
                    return pd.read_parquet(f)
            else:
                head = pd.read_csv(f, nrows=0)
                if need <= set(head.columns):
                    return pd.read_csv(f)
        except Exception:  # noqa: BLE001,S112 - an unreadable file is simply not the one we look for
            continue
    return None


def _records(df: pd.DataFrame) -> list[Row]:
    return df.replace({np.nan: None}).to_dict("records")


def _page(df: pd.DataFrame, offset: int, limit: int) -> tuple[list[Row], int]:
    return _records(df.iloc[offset:offset + limit]), len(df)


def _filter(df: pd.DataFrame, **eq: Any) -> pd.DataFrame:
    for col, value in eq.items():
        if value is not None and col in df.columns:
            df = df[df[col].astype(str) == str(value)]
    return df


# ---------------------------------------------------------------- churn


class ChurnTableView:
    """Per-member churn scores and segments, indexed by member id."""

    DRIVERS = ("recency_days", "freq_trend", "spend_trend", "points_expiring", "complaints_90", "tenure_days")

    def __init__(self, scored: pd.DataFrame, *, horizon_days: int = 90) -> None:
        df = scored.copy()
        df["member_id"] = df["member_id"].astype(str)
        df["churn_probability"] = pd.to_numeric(df["churn_probability"], errors="coerce").fillna(0.0).clip(0, 1)
        if "segment" not in df.columns:
            from models.churn import segment_members

            value = "spend_90" if "spend_90" in df.columns else "churn_probability"
            df = segment_members(df, value_col=value)
        df = df.sort_values(["churn_probability", "member_id"], ascending=[False, True]).reset_index(drop=True)
        self.df = df
        self.horizon_days = horizon_days
        self._index = {m: i for i, m in enumerate(df["member_id"])}
        self._by_segment = {str(s): g for s, g in df.groupby("segment", sort=False)}
        cols = ["member_id", "churn_probability", "segment", "action"] + [
            c for c in ("action_level", "value_tier", "risk_band", "tier", "spend_90", "recency_days") if c in df]
        self.export_cols = cols
        agg = df.groupby("segment").agg(members=("member_id", "size"),
                                        mean_probability=("churn_probability", "mean"))
        if "action" in df:
            agg["action"] = df.groupby("segment")["action"].first()
        if "action_level" in df:
            agg["action_level"] = df.groupby("segment")["action_level"].first()
        if "spend_90" in df:
            agg["spend_90_total"] = df.groupby("segment")["spend_90"].sum()
        self._segments = _records(agg.reset_index().sort_values(
            ["action_level" if "action_level" in agg else "mean_probability", "segment"], ascending=[False, True]))
        # Requests slice precomputed rows: no pandas on the request path.
        self._rows = _records(df[cols])
        self._seg_rows: dict[str, list[Row]] = {}
        for row in self._rows:
            self._seg_rows.setdefault(str(row["segment"]), []).append(row)
        drivers = [c for c in self.DRIVERS if c in df.columns]
        self._scores = {}
        for rec in _records(df[["member_id", "churn_probability", "segment", "action", *drivers]]):
            self._scores[rec["member_id"]] = {
                "member_id": rec["member_id"], "churn_probability": float(rec["churn_probability"]),
                "horizon_days": horizon_days, "segment": rec["segment"], "action": rec["action"],
                "drivers": {c: (None if rec[c] is None else float(rec[c])) for c in drivers}}

    def score(self, member_id: str) -> Row | None:
        row = self._scores.get(member_id)
        return dict(row) if row is not None else None

    def segments(self) -> list[Row]:
        return self._segments

    def members(self, *, segment: str | None, offset: int, limit: int) -> tuple[list[Row], int]:
        rows = self._seg_rows.get(segment, []) if segment else self._rows
        return [dict(r) for r in rows[offset:offset + limit]], len(rows)

    def frame(self, *, segment: str | None) -> pd.DataFrame:
        df = self._by_segment.get(segment, self.df.iloc[0:0]) if segment else self.df
        return df[self.export_cols].reset_index(drop=True)


def load_churn(sql: Any) -> Callable[[Path, ModelMeta], ChurnTableView]:
    def load(path: Path, meta: ModelMeta) -> ChurnTableView:
        horizon = int(meta.params.get("horizon_days", meta.params.get("horizon", 90)) or 90)
        scored = find_table(path, ["member_id", "churn_probability"], prefer=("scor", "segment"))
        if scored is None:
            scored = _score_churn_from_warehouse(path, sql)
        return ChurnTableView(scored, horizon_days=horizon)

    return load


def _score_churn_from_warehouse(path: Path, sql: Any) -> pd.DataFrame:
    """Score every active member with the version's fitted model on the warehouse's current data."""
    from models.churn import ChurnModel, build_churn_features, segment_members
    from models.common import load_artifact

    if sql is None:
        raise ValueError("churn version has no scored table and no warehouse is available to score")
    obj = load_artifact(path)
    model = obj if isinstance(obj, ChurnModel) else getattr(obj, "model", obj)
    tx = sql.query_df("SELECT member_id, ts, station_id, amount_fen, litres, status FROM fact_transactions FINAL "
                      "WHERE member_id != ''")
    members = sql.query_df("SELECT member_id, joined, tier, price_sensitivity, churn_date FROM dim_member FINAL")
    complaints = sql.query_df("SELECT member_id, ts FROM fact_complaints FINAL")
    redemptions = sql.query_df("SELECT member_id, ts, -points AS points FROM fact_points_ledger FINAL "
                               "WHERE kind = 'redeem'")
    if tx.empty or members.empty:
        raise ValueError("warehouse has no transactions/members to score")
    tx["amount"] = tx["amount_fen"] / 100.0
    end = pd.to_datetime(tx["ts"], utc=True).max().tz_localize(None).normalize() + pd.Timedelta(days=1)
    feats = build_churn_features(tx, members, as_of=end, complaints=complaints, redemptions=redemptions)
    cd = pd.to_datetime(members["churn_date"], errors="coerce")
    gone = set(members.loc[cd.notna() & (cd <= end), "member_id"].astype(str))
    feats = feats[~feats["member_id"].isin(gone)].copy()
    feats["churn_probability"] = model.predict_proba(feats, conditional=False)
    return segment_members(feats)


# ---------------------------------------------------------------- pricing


class PricingTableView:
    """Price recommendations per station × product."""

    def __init__(self, rec: pd.DataFrame) -> None:
        df = rec.copy()
        for c in ("station_id", "product", "region"):
            if c in df:
                df[c] = df[c].astype(str)
        sort = [c for c in ("station_id", "product") if c in df]
        self.df = df.sort_values(sort).reset_index(drop=True) if sort else df
        self._rows = _records(self.df)

    def recommendations(self, *, station_id: str | None, region: str | None, product: str | None, offset: int,
                        limit: int) -> tuple[list[Row], int]:
        rows = [r for r in self._rows
                if (station_id is None or str(r.get("station_id")) == station_id)
                and (region is None or str(r.get("region")) == region)
                and (product is None or str(r.get("product")) == product)]
        return rows[offset:offset + limit], len(rows)


def load_pricing(sql: Any) -> Callable[[Path, ModelMeta], PricingTableView]:
    def load(path: Path, meta: ModelMeta) -> PricingTableView:
        rec = find_table(path, ["station_id", "product"], prefer=("recommend",))
        if rec is None or not any("price" in c for c in rec.columns):
            rec = _recommend_prices_from_warehouse(path, sql)
        return PricingTableView(rec)

    return load


def _recommend_prices_from_warehouse(path: Path, sql: Any) -> pd.DataFrame:
    raise ValueError("pricing version carries no recommendation table")


# ---------------------------------------------------------------- demand (forecast, replenishment, alerts)


class DemandTableView:
    """Forecasts per station × product × day, the replenishment plan per tank and stock/leak alerts."""

    def __init__(self, forecast: pd.DataFrame, replenishment: pd.DataFrame | None,
                 alerts: pd.DataFrame | None, backtest: pd.DataFrame | None = None) -> None:
        f = forecast.copy()
        f["station_id"] = f["station_id"].astype(str)
        if "product" in f:
            f["product"] = f["product"].astype(str)
        f["date"] = pd.to_datetime(f["date"]).dt.date.astype(str)
        self.forecast_df = f.sort_values([c for c in ("station_id", "product", "date") if c in f])
        self._by_station = {str(s): g for s, g in self.forecast_df.groupby("station_id", sort=False)}  # noqa: C416
        self.repl = replenishment.reset_index(drop=True) if replenishment is not None else pd.DataFrame()
        self.alerts_df = alerts.reset_index(drop=True) if alerts is not None else pd.DataFrame()
        self.backtest_df = backtest
        self.has_alerts = not self.alerts_df.empty
        cols = [c for c in ("product", "date", "forecast", "lower", "upper") if c in self.forecast_df]
        self._fc_rows = {s: _records(g[cols]) for s, g in self._by_station.items()}
        self._repl_rows = _records(self.repl) if not self.repl.empty else []
        self._alert_rows = _records(self.alerts_df) if not self.alerts_df.empty else []

    def default_station(self) -> str | None:
        return next(iter(self._by_station), None)

    def backtest(self, *, station_id: str, product: str | None) -> list[Row]:
        """Past forecasts (holdout) for comparison with actuals, when the version saved them."""
        b = self.backtest_df
        if b is None or b.empty:
            return []
        b = _filter(b, station_id=station_id, product=product)
        return _records(b[[c for c in ("date", "forecast", "lower", "upper") if c in b]])

    def forecast(self, *, station_id: str, product: str | None, days: int) -> list[Row]:
        out: list[Row] = []
        taken: dict[Any, int] = {}
        for r in self._fc_rows.get(station_id, []):
            p = r.get("product")
            if product is not None and str(p) != product:
                continue
            if taken.get(p, 0) < days:
                taken[p] = taken.get(p, 0) + 1
                out.append(r)
        return out

    def replenishment(self, *, station_id: str | None, offset: int, limit: int) -> tuple[list[Row], int]:
        rows = [r for r in self._repl_rows if station_id is None or str(r.get("station_id")) == station_id]
        return rows[offset:offset + limit], len(rows)

    def alerts(self, *, station_id: str | None, offset: int, limit: int) -> tuple[list[Row], int]:
        rows = [r for r in self._alert_rows if station_id is None or str(r.get("station_id")) == station_id]
        return rows[offset:offset + limit], len(rows)


def load_demand(sql: Any) -> Callable[[Path, ModelMeta], DemandTableView]:
    def load(path: Path, meta: ModelMeta) -> DemandTableView:
        fc = find_table(path, ["station_id", "date", "forecast", "lower", "upper"], prefer=("forecast",))
        if fc is None:
            raise ValueError("demand version carries no forecast table")
        repl = find_table(path, ["tank_id"], prefer=("replen", "plan"))
        alerts = find_table(path, ["station_id", "tank_id"], prefer=("alert",))
        return DemandTableView(fc, repl, alerts)

    return load


# ---------------------------------------------------------------- sites


class SitesTableView:
    """Candidate sites (ranked) and per-station nozzle/product-mix suggestions."""

    def __init__(self, candidates: pd.DataFrame, stations: pd.DataFrame | None) -> None:
        score = next((c for c in ("score", "captured", "unserved") if c in candidates), None)
        self.cands = candidates.sort_values(score, ascending=False).reset_index(drop=True) if score else candidates
        self.stations = {}
        if stations is not None and "station_id" in stations:
            self.stations = {str(r["station_id"]): r for r in _records(stations)}

        self._cand_rows = _records(self.cands.head(100))

    def recommendations(self, *, k: int) -> list[Row]:
        return self._cand_rows[:k]

    def station(self, station_id: str) -> Row | None:
        return self.stations.get(station_id)


def load_sites(sql: Any) -> Callable[[Path, ModelMeta], SitesTableView]:
    def load(path: Path, meta: ModelMeta) -> SitesTableView:
        cands = find_table(path, ["lat", "lon"], prefer=("recommend", "candidate", "top"))
        if cands is None:
            raise ValueError("sites version carries no candidate table")
        stations = find_table(path, ["station_id"], prefer=("station", "mix", "suggest"))
        return SitesTableView(cands, stations)

    return load


def loaders(sql: Any) -> dict[str, Callable[[Path, ModelMeta], Any]]:
    """Loader per model kind served by the API."""
    return {"churn": load_churn(sql), "pricing": load_pricing(sql), "demand": load_demand(sql),
            "sites": load_sites(sql)}
