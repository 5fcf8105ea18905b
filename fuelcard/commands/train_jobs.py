"""Training jobs: warehouse (or a Parquet directory) → point-in-time frames → pure models → registry.

This is entry-point code (it may import the warehouse); the models themselves live in ``models/`` and never
do I/O. Every job:

1. reads only rows dated before the cut-off ``as_of`` (and not older than ``window_days``) from a
   :class:`DataSource` — :class:`WarehouseSource` (ClickHouse, the default) or :class:`ParquetSource`
   (a ``fuelcard simulate`` directory, for tests and notebooks);
2. fits the pure model, computes its metrics and writes its reports (text/PNG/CSV) into the version;
3. registers the artifact with metrics, parameters, the data window and the feature list in the
   :class:`~models.registry.Registry`, plus one row in the warehouse table ``model_versions``.

Jobs are idempotent: the version name is derived from the kind, the cut-off and a fingerprint of the
input tables (row counts / last timestamps up to the cut-off), the options and the seed, computed before
training; when that version already exists the job reports it and does nothing.

Every kind also has a :class:`ModelSpec` (load, predict, output range, optional inputs) so that one
contract suite (tests/test_model_contract.py) checks every model in the registry the same way.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from models.registry import Registry

KINDS: tuple[str, ...] = ("churn", "pricing", "demand", "sites", "fraud")

#: docs/DATA.md name -> (warehouse table, time column used for the point-in-time filter, or None)
TABLES: dict[str, tuple[str, str | None]] = {
    "stations": ("dim_station", None),
    "members": ("dim_member", None),
    "vehicles": ("dim_vehicle", None),
    "cards": ("dim_card", None),
    "fleets": ("dim_fleet", None),
    "tanks": ("dim_tank", None),
    "competitors": ("dim_competitor", None),
    "transactions": ("fact_transactions", "ts"),
    "recharges": ("fact_recharges", "ts"),
    "redemptions": ("fact_points_ledger", "ts"),  # rows with kind = 'redeem' (points stored negative)
    "complaints": ("fact_complaints", "ts"),
    "station_sales": ("fact_station_sales", "date"),
    "station_hourly": ("fact_station_hourly", "ts_hour"),
    "tank_readings": ("fact_tank_readings", "date"),
    "prices": ("fact_prices", "date"),
    "competitor_prices": ("fact_competitor_prices", "date"),
    "crude": ("fact_crude_prices", "date"),
    "weather": ("fact_weather", "date"),
    "calendar": ("dim_date", "date"),
}

MODEL_VERSIONS_DDL = """
CREATE TABLE IF NOT EXISTS model_versions (
    kind String,
    version String,
    created_at DateTime('UTC'),
    as_of Date,
    window_start Date,
    window_end Date,
    promoted UInt8,
    metrics String,
    params String,
    features String,
    artifact_path String,
    seconds Float64
) ENGINE = ReplacingMergeTree(created_at) ORDER BY (kind, version)
"""


class JobError(RuntimeError):
    """A training job cannot run (no data in the window, missing table…): one line for the CLI."""


# ----------------------------------------------------------------------------------------- data sources
class DataSource(Protocol):
    """Where the jobs read history from; every read is bounded by the cut-off (point in time)."""

    def read(self, name: str, *, since: date | None = None, before: date | None = None,
             columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Rows of table ``name`` (a docs/DATA.md name) with time column in ``[since, before)``."""
        ...

    def last_date(self) -> date | None:
        """The last day with station sales (default cut-off = the day after)."""
        ...

    def signature(self, name: str, *, before: date) -> str:
        """A cheap summary of table ``name`` up to ``before`` that changes when its data change."""
        ...


def _naive_utc(s: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(s):
        t = s
    else:
        t = pd.to_datetime(s, errors="coerce", utc=True)
    if getattr(t.dt, "tz", None) is not None:
        t = t.dt.tz_convert("UTC").dt.tz_localize(None)
    return t


@dataclass
class ParquetSource:
    """A ``fuelcard simulate`` output directory (Parquet files named as in docs/DATA.md)."""

    root: Path
    _cache: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    def _load(self, name: str) -> pd.DataFrame:
        if name not in self._cache:
            path = Path(self.root) / f"{name}.parquet"
            if not path.exists():
                self._cache[name] = pd.DataFrame()
            else:
                self._cache[name] = pd.read_parquet(path)
        return self._cache[name]

    def read(self, name: str, *, since: date | None = None, before: date | None = None,
             columns: Sequence[str] | None = None) -> pd.DataFrame:
        df = self._load(name)
        tcol = TABLES.get(name, (name, None))[1]
        if df.empty:
            return df
        if tcol and tcol in df and (since is not None or before is not None):
            t = _naive_utc(df[tcol])
            keep = pd.Series(True, index=df.index)
            if since is not None:
                keep &= t >= pd.Timestamp(since)
            if before is not None:
                keep &= t < pd.Timestamp(before)
            df = df[keep.to_numpy()]
        if columns is not None:
            df = df[[c for c in columns if c in df.columns]]
        return df.reset_index(drop=True)

    def last_date(self) -> date | None:
        s = self._load("station_sales")
        if s.empty:
            return None
        return pd.Timestamp(_naive_utc(s["date"]).max()).date()

    def signature(self, name: str, *, before: date) -> str:
        path = Path(self.root) / f"{name}.parquet"
        if not path.exists():
            return "-"
        st = path.stat()
        return f"{st.st_size}:{st.st_mtime_ns}"


class WarehouseSource:
    """Reads the star schema through the warehouse API (``FINAL`` for exact, deduplicated rows)."""

    def __init__(self, wh: Any) -> None:
        self.wh = wh

    def read(self, name: str, *, since: date | None = None, before: date | None = None,
             columns: Sequence[str] | None = None) -> pd.DataFrame:
        table, tcol = TABLES[name]
        if not self.wh.table_exists(table):
            return pd.DataFrame()
        have = [c.name for c in self.wh.columns(table)]
        cols = [c for c in (columns or have) if c in have]
        if not cols:
            return pd.DataFrame()
        where, params = [], {}
        if tcol and since is not None:
            where.append(f"{tcol} >= {{since:Date}}")
            params["since"] = since
        if tcol and before is not None:
            where.append(f"{tcol} < {{before:Date}}")
            params["before"] = before
        if name == "redemptions":
            where.append("kind = 'redeem'")
        sql = f"SELECT {', '.join(cols)} FROM {table} FINAL" + (f" WHERE {' AND '.join(where)}" if where else "")
        df = self.wh.query_df(sql, params or None)
        if name == "redemptions" and "points" in df:
            df["points"] = df["points"].abs()
        if name == "transactions" and "amount_fen" in df and "amount" not in df:
            df["amount"] = df["amount_fen"] / 100.0
        return df

    def signature(self, name: str, *, before: date) -> str:
        table, tcol = TABLES[name]
        if not self.wh.table_exists(table):
            return "-"
        if tcol is None:
            df = self.wh.query_df(f"SELECT count() AS n FROM {table} FINAL")
            return str(int(df.iat[0, 0]))
        df = self.wh.query_df(f"SELECT count() AS n, toString(max({tcol})) AS m FROM {table} FINAL "
                              f"WHERE {tcol} < {{before:Date}}", {"before": before})
        return f"{int(df.iat[0, 0])}:{df.iat[0, 1]}"

    def last_date(self) -> date | None:
        if not self.wh.table_exists("fact_station_sales"):
            return None
        v = self.wh.query_value("SELECT max(date) FROM fact_station_sales")
        if v is None or pd.isna(v):
            return None
        d = pd.Timestamp(v).date()
        return None if d.year < 1980 else d


def connect_warehouse(url: Any) -> Any:
    """Open the warehouse through the warehouse package's public ``connect`` (a URL or a Settings object;
    with Settings the development default means the embedded warehouse under ``data_dir``)."""
    import warehouse

    connect = getattr(warehouse, "connect", None)
    if connect is None:
        from warehouse import engine

        connect = getattr(engine, "connect", None)
    if connect is None:
        raise JobError("the warehouse package has no connect(url) yet")
    return connect(url)


# ----------------------------------------------------------------------------------------- context/results
@dataclass
class TrainContext:
    """Everything a job needs: where to read, the cut-off, where to write, the seed."""

    source: DataSource
    registry: Registry
    as_of: date
    window_days: int = 365
    seed: int = 0
    reports_dir: Path | None = None
    truth_path: Path | None = None
    warehouse: Any | None = None
    progress: Callable[[str], None] = field(default=lambda msg: None)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def since(self) -> date:
        return self.as_of - timedelta(days=self.window_days)

    def read(self, name: str, columns: Sequence[str] | None = None, *, since: date | None = None) -> pd.DataFrame:
        """Point-in-time read: rows in ``[since, as_of)``."""
        return self.source.read(name, since=since if since is not None else self.since, before=self.as_of,
                                columns=columns)


@dataclass
class TrainResult:
    """What a job hands to the registry."""

    kind: str
    model: Any
    save: Callable[[Path], Any]
    metrics: dict[str, Any]
    params: dict[str, Any]
    features: list[str]
    data_window: dict[str, Any]
    sample: pd.DataFrame | None = None
    fingerprint_inputs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    """How the contract suite and the jobs handle one model kind."""

    kind: str
    train: Callable[[TrainContext], TrainResult]
    load: Callable[[Path], Any]
    predict: Callable[[Any, pd.DataFrame], np.ndarray]
    output_range: tuple[float, float]
    optional_columns: tuple[str, ...] = ()
    available: Callable[[], bool] = field(default=lambda: True)


# ----------------------------------------------------------------------------------------- pricing
def _truth(ctx: TrainContext) -> dict[str, Any] | None:
    if ctx.truth_path is None or not Path(ctx.truth_path).exists():
        return None
    return json.loads(Path(ctx.truth_path).read_text())


def train_pricing(ctx: TrainContext) -> TrainResult:
    """Fit the volume-response regression, recommend prices, evaluate against the true response if known."""
    from models import pricing

    cfg = pricing.PricingConfig(window_days=ctx.window_days, **ctx.options.get("pricing", {}))
    ctx.progress("pricing: reading sales, prices, drivers")
    tables = {n: ctx.read(n) for n in ("station_sales", "prices", "competitor_prices", "crude", "weather",
                                       "calendar", "station_hourly")}
    stations = ctx.source.read("stations")
    competitors = ctx.source.read("competitors")
    if tables["station_sales"].empty or tables["prices"].empty:
        raise JobError(f"pricing: no station sales/prices before {ctx.as_of}")
    ctx.progress("pricing: building the point-in-time frame")
    frame = pricing.build_frame(sales=tables["station_sales"], prices=tables["prices"], stations=stations,
                                competitor_prices=tables["competitor_prices"], competitors=competitors,
                                crude=tables["crude"], weather=tables["weather"], calendar=tables["calendar"],
                                station_hourly=tables["station_hourly"], start=ctx.since, cutoff=ctx.as_of)
    if frame.empty:
        raise JobError("pricing: no station-product-days with both sales and prices in the window")
    ctx.progress(f"pricing: fitting OLS on {len(frame):,} station-product-days")
    model = pricing.fit(frame, config=cfg, cutoff=ctx.as_of, seed=ctx.seed)
    state = pricing.reference_rows(frame)
    rec = pricing.recommend(model, state)
    regions = pricing.region_summary(rec)
    metrics: dict[str, Any] = dict(model.metrics)
    metrics["predicted_profit_uplift"] = float(pricing.predicted_uplift(rec))
    truth = _truth(ctx)
    evaluation: pd.DataFrame | None = None
    horizon = int(ctx.options.get("pricing_horizon_days", cfg.horizon_days))
    if truth is not None:
        response = pricing.TrueResponse.from_truth(truth, stations=stations, competitors=competitors)
        future = {n: ctx.source.read(n, since=ctx.as_of, before=ctx.as_of + timedelta(days=horizon))
                  for n in ("station_sales", "prices", "competitor_prices")}
        if not future["prices"].empty:
            ctx.progress("pricing: evaluating against the simulator's true price response")
            ev = pricing.evaluate_policy(rec, future_prices=future["prices"], future_sales=future["station_sales"],
                                         future_competitor_prices=future["competitor_prices"],
                                         competitors=competitors, stations=stations, response=response)
            evaluation = ev.detail
            metrics.update(ev.metrics)
            metrics["evaluation"] = f"the {horizon} days after the cut-off"
        else:
            # Nothing after the cut-off (production-style run): backtest the same procedure instead -- refit on
            # the data before (cut-off - horizon) and replay the last `horizon` days under the true response.
            bt_cut = ctx.as_of - timedelta(days=horizon)
            if frame["date"].min() < pd.Timestamp(bt_cut) - pd.Timedelta(days=14):
                ctx.progress(f"pricing: backtesting the last {horizon} days against the true price response")
                bt_frame = pricing.build_frame(
                    sales=tables["station_sales"], prices=tables["prices"], stations=stations,
                    competitor_prices=tables["competitor_prices"], competitors=competitors, crude=tables["crude"],
                    weather=tables["weather"], calendar=tables["calendar"], station_hourly=tables["station_hourly"],
                    start=ctx.since, cutoff=bt_cut)
                bt_model = pricing.fit(bt_frame, config=cfg, cutoff=bt_cut, seed=ctx.seed)
                bt_rec = pricing.recommend(bt_model, pricing.reference_rows(bt_frame))

                def after(df: pd.DataFrame) -> pd.DataFrame:
                    d = _naive_utc(df["date"])
                    return df[(d >= pd.Timestamp(bt_cut)).to_numpy()]

                ev = pricing.evaluate_policy(
                    bt_rec, future_prices=after(tables["prices"]), future_sales=after(tables["station_sales"]),
                    future_competitor_prices=after(tables["competitor_prices"]), competitors=competitors,
                    stations=stations, response=response)
                evaluation = ev.detail
                metrics.update(ev.metrics)
                metrics["evaluation"] = f"backtest: fit before {bt_cut}, replay the last {horizon} days"
    sample = frame.groupby(["station_id", "product"]).tail(1).head(50).reset_index(drop=True)

    def save(d: Path) -> None:
        model.save(d)
        (d / "coefficients.txt").write_text(pricing.coefficient_text(model))
        model.coef_table.to_csv(d / "coefficients.csv", index=False)
        rec.to_csv(d / "recommendations.csv", index=False)
        regions.to_csv(d / "region_summary.csv", index=False)
        if ctx.options.get("plots", True):
            pricing.plot_diagnostics(model, frame, d / "diagnostics.png")
        if evaluation is not None:
            evaluation.to_csv(d / "evaluation_true_response.csv", index=False)
        sample.to_parquet(d / "contract_sample.parquet", index=False)

    return TrainResult(
        kind="pricing", model=model, save=save, metrics=metrics, params=pricing.params_of(model),
        features=list(pricing.DRIVERS), sample=sample,
        data_window={"start": str(ctx.since), "end": str(ctx.as_of), "rows": len(frame)},
        fingerprint_inputs={"rows": len(frame), "litres": float(frame["litres"].sum()),
                            "truth": bool(truth), "horizon": horizon})


def _predict_pricing(model: Any, frame: pd.DataFrame) -> np.ndarray:
    return model.predict_volume(frame)


# ----------------------------------------------------------------------------------------- sites
def train_sites(ctx: TrainContext) -> TrainResult:
    """Fit site selection on the network and members as of the cut-off; heat map and top-k report."""
    from models import sites

    cfg = sites.SiteConfig(**ctx.options.get("sites", {}))
    ctx.progress("sites: reading stations, members, competitors")
    stations = ctx.source.read("stations")
    members = ctx.source.read("members", columns=["member_id", "joined", "home_lat", "home_lon", "work_lat",
                                                  "work_lon", "fills_per_week", "churned", "churn_date"])
    competitors = ctx.source.read("competitors")
    if stations.empty or members.empty:
        raise JobError("sites: no stations or members in the source")
    tx_since = max(ctx.since, ctx.as_of - timedelta(days=int(ctx.options.get("sites_tx_days", 90))))
    ctx.progress("sites: reading recent transactions")
    tx = ctx.read("transactions", columns=["tx_id", "ts", "card_id", "station_id", "product", "litres", "status"],
                  since=tx_since)
    cards = ctx.source.read("cards", columns=["card_id", "vehicle_id"])
    vehicles = ctx.source.read("vehicles", columns=["vehicle_id", "fuel_type"])
    sales = ctx.read("station_sales", since=tx_since)
    hourly = ctx.read("station_hourly", since=tx_since)
    ctx.progress(f"sites: scoring candidates for {len(members):,} members")
    model = sites.fit(stations=stations, members=members, competitors=competitors, transactions=tx,
                      vehicles=vehicles, cards=cards, station_sales=sales, station_hourly=hourly,
                      cutoff=ctx.as_of, config=cfg)
    sample = pd.concat([model.top[["lat", "lon"]], model.baseline[["lat", "lon"]],
                        model.candidates[["lat", "lon"]].head(20)], ignore_index=True)

    def save(d: Path) -> None:
        model.save(d)
        model.top.to_csv(d / "top_sites.csv", index=False)
        model.baseline.to_csv(d / "baseline_density_only.csv", index=False)
        model.station_suggestions.to_csv(d / "station_suggestions.csv", index=False)
        if ctx.options.get("plots", True):
            sites.plot_heatmap(model, d / "heatmap.png")
        sample.to_parquet(d / "contract_sample.parquet", index=False)

    return TrainResult(
        kind="sites", model=model, save=save, metrics=dict(model.metrics), params=sites.params_of(model),
        features=["home density", "work density", "route density", "refuelling gaps", "land cost",
                  "access (corridor/highway)", "distance to own stations", "competitor coverage",
                  "busy-hour fills", "vehicle fuel types"],
        data_window={"start": str(tx_since), "end": str(ctx.as_of), "members": len(members)}, sample=sample,
        fingerprint_inputs={"members": len(members), "stations": len(stations), "tx": len(tx)})


def _predict_sites(model: Any, frame: pd.DataFrame) -> np.ndarray:
    lat = frame["lat"] if "lat" in frame else pd.Series(np.nan, index=frame.index)
    lon = frame["lon"] if "lon" in frame else pd.Series(np.nan, index=frame.index)
    return model.score_many(lat, lon)["score"].to_numpy(float)


# ----------------------------------------------------------------------------------------- churn
def _has(module: str, attr: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            mod = __import__(module, fromlist=[attr])
        except ImportError:
            return False
        return hasattr(mod, attr)
    return check


def train_churn(ctx: TrainContext) -> TrainResult:
    """Member churn (the churn engineer's ``train_member_churn``) on transactions before the cut-off."""
    from models import churn

    ctx.progress("churn: reading members, transactions, complaints, redemptions")
    since = ctx.as_of - timedelta(days=max(ctx.window_days, 400))
    # Only attributes known at the cut-off: no `churned` flag or lifetime complaint count (both look ahead).
    # Attributes known at the cut-off (points balance and expiry, home location for the nearby price gap).
    wanted = ["member_id", "tier", "joined", "price_sensitivity", "churn_date", "opening_points",
              "points_expire_date", "home_lat", "home_lon"]
    members = ctx.source.read("members")
    members = members[[c for c in wanted if c in members.columns]]
    tx = ctx.read("transactions", columns=["tx_id", "ts", "member_id", "station_id", "litres", "amount_fen",
                                           "amount", "status"], since=since)
    if "amount" not in tx and "amount_fen" in tx:
        tx["amount"] = tx["amount_fen"] / 100.0
    complaints = ctx.read("complaints", since=since)
    redemptions = ctx.read("redemptions", since=since)
    if members.empty or tx.empty:
        raise JobError("churn: no members or transactions before the cut-off")
    optional: dict[str, pd.DataFrame | None] = {}
    for name in ("stations", "prices", "competitor_prices"):
        try:
            frame = ctx.source.read(name) if name == "stations" else ctx.read(name, since=since)
        except Exception:  # noqa: BLE001 - optional inputs: the model works without them
            frame = None
        optional[name] = frame if frame is not None and len(frame) else None
    # Point in time: members who joined on/after the cut-off do not exist yet, and churn dates on/after it
    # are not known yet.
    m = members.copy()
    if "joined" in m:
        joined = _naive_utc(m["joined"])
        m = m[(joined.isna() | (joined < pd.Timestamp(ctx.as_of))).to_numpy()].copy()
    if "churn_date" in m:
        cd = _naive_utc(m["churn_date"])
        m.loc[(cd >= pd.Timestamp(ctx.as_of)).to_numpy(), "churn_date"] = pd.NaT
    ctx.progress(f"churn: fitting survival models on {len(m):,} members")
    model, metrics, scored = churn.train_member_churn(
        tx, m, complaints=complaints if len(complaints) else None,
        redemptions=redemptions if len(redemptions) else None, end=pd.Timestamp(ctx.as_of), seed=ctx.seed,
        **optional)
    feature_cols = [c for c in scored.columns if c not in ("churn_probability", "value_tier", "risk_band",
                                                           "segment", "action_level", "action")]
    sample = scored[feature_cols].head(200).reset_index(drop=True)

    def save(d: Path) -> None:
        model.save(d)
        scored.drop(columns=[c for c in ("price_sensitivity",) if False]).to_csv(d / "segments.csv", index=False)
        sample.to_parquet(d / "contract_sample.parquet", index=False)
        seg = scored.groupby(["segment", "action"], as_index=False).agg(
            members=("member_id", "size"), mean_p=("churn_probability", "mean"))
        seg.to_csv(d / "segment_summary.csv", index=False)

    flat = {k: v for k, v in metrics.items() if isinstance(v, int | float | str)}
    return TrainResult(kind="churn", model=model, save=save, metrics=flat,
                       params={"kind": getattr(model, "kind", "?"), "horizon_days": metrics.get("horizon_days", 90),
                               "requested_horizon_days": 90, "seed": ctx.seed},
                       features=feature_cols, sample=sample,
                       data_window={"start": str(since), "end": str(ctx.as_of), "members": len(m)},
                       fingerprint_inputs={"tx": len(tx), "members": len(m)})


def _load_churn(path: Path) -> Any:
    from models import churn

    return churn.ChurnModel.load(path)


def _predict_churn(model: Any, frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(model.predict_proba(frame, conditional=False), dtype=float)


# ----------------------------------------------------------------------------------------- demand / fraud
def train_demand(ctx: TrainContext) -> TrainResult:
    """30-day demand forecasts per station × product (the demand engineer's ``DemandModel``), with the
    holdout accuracy of the same procedure, a replenishment plan per tank and leak/loss alerts."""
    from models import demand

    horizon = int(ctx.options.get("demand_horizon_days", 30))
    ctx.progress("demand: reading station sales, tanks, tank readings")
    sales = ctx.read("station_sales", columns=["date", "station_id", "product", "litres"])
    if sales.empty:
        raise JobError(f"demand: no station sales before {ctx.as_of}")
    series = sales.assign(id=sales["station_id"].astype(str) + "|" + sales["product"].astype(str),
                          date=_naive_utc(sales["date"]).dt.normalize())[["id", "date", "litres"]]
    limit = ctx.options.get("demand_max_series")
    if limit:
        keep = sorted(series["id"].unique())[: int(limit)]
        series = series[series["id"].isin(keep)]
    ctx.progress(f"demand: forecasting {series['id'].nunique():,} series × {horizon} days (with backtest)")
    model = demand.DemandModel.fit(series, date_col="date", value_col="litres", id_col="id", horizon=horizon,
                                   n_jobs=int(ctx.options.get("n_jobs", 1)), backtest=True)
    fc = model.forecasts.copy()
    ids = fc["id"].astype(str).str.split("|", n=1, expand=True)
    fc["station_id"], fc["product"] = ids[0], ids[1]
    tanks = ctx.source.read("tanks")
    readings = ctx.read("tank_readings", since=ctx.as_of - timedelta(days=60))
    plan = alerts = None
    if len(tanks) and len(readings):
        last = readings.sort_values("date").groupby("tank_id").tail(1)
        levels = pd.DataFrame({"tank_id": last["tank_id"], "level_l": last["closing_l"]})
        try:
            plan = demand.replenishment_plan(fc, tanks, levels)
        except Exception as exc:  # noqa: BLE001 - a planning defect must not lose the forecasts
            ctx.progress(f"demand: replenishment plan failed: {type(exc).__name__}: {exc}")
        try:
            alerts = demand.leak_alerts(readings)
        except Exception as exc:  # noqa: BLE001
            ctx.progress(f"demand: leak alerts failed: {type(exc).__name__}: {exc}")
    metrics = {k: v for k, v in model.metrics.items() if isinstance(v, int | float | str)}
    metrics["series"] = int(fc["id"].nunique())
    if plan is not None:
        metrics["tanks_to_order_now"] = int((plan["order_now"] == True).sum()) if "order_now" in plan else 0  # noqa: E712
    if alerts is not None:
        metrics["leak_alerts"] = int(len(alerts))
    sample = pd.DataFrame({"id": sorted(fc["id"].astype(str).unique())[:20]})

    def save(d: Path) -> None:
        model.save(d)
        fc.to_csv(d / "forecasts.csv", index=False)
        if plan is not None:
            plan.to_csv(d / "replenishment_plan.csv", index=False)
        if alerts is not None:
            alerts.to_csv(d / "leak_alerts.csv", index=False)
        sample.to_parquet(d / "contract_sample.parquet", index=False)

    return TrainResult(kind="demand", model=model, save=save, metrics=metrics,
                       params={"horizon_days": horizon, **{k: v for k, v in model.params.items()
                                                            if isinstance(v, int | float | str | bool)}},
                       features=["trend", "weekday", "holidays", "season", "level"], sample=sample,
                       data_window={"start": str(ctx.since), "end": str(ctx.as_of), "rows": len(series)},
                       fingerprint_inputs={"rows": len(series), "litres": float(series["litres"].sum()),
                                           "horizon": horizon})


def _load_demand(path: Path) -> Any:
    from models import demand

    return demand.DemandModel.load(path)


def _predict_demand(model: Any, frame: pd.DataFrame) -> np.ndarray:
    """Stored forecasts of the series named in ``frame.id`` (all series when the column is missing)."""
    fc = model.predict()
    if "id" in frame and frame["id"].notna().any():
        fc = fc[fc["id"].astype(str).isin(frame["id"].dropna().astype(str))]
    return fc["forecast"].to_numpy(float)


def train_fraud(ctx: TrainContext) -> TrainResult:
    """Fraud model through the fraud engineer's backtest protocol: causal features over the window, train on
    labels at least ``label_delay_days`` older than the last ``fraud_test_days`` before the cut-off, score
    those days out of time (the metrics), register the model."""
    import tempfile

    from models.fraud import metrics as fmetrics
    from models.fraud import train as ftrain

    test_days = int(ctx.options.get("fraud_test_days", 14))
    delay = float(ctx.options.get("label_delay_days", 7))
    since = max(ctx.since, ctx.as_of - timedelta(days=int(ctx.options.get("fraud_window_days", 90))))
    ctx.progress("fraud: reading transactions and card master data")
    tx = ctx.read("transactions", since=since)
    if tx.empty:
        raise JobError(f"fraud: no transactions before {ctx.as_of}")
    if "amount" not in tx and "amount_fen" in tx:
        tx["amount"] = tx["amount_fen"] / 100.0
    if "status" in tx and "version" in tx:
        tx = tx.sort_values("version").drop_duplicates("tx_id", keep="first")  # the authorisation row
    prepared = ftrain.prepare_transactions(tx)
    with tempfile.TemporaryDirectory(prefix="fuelcard-master-") as tmp:
        for name in ("cards", "vehicles", "fleets"):
            df = ctx.source.read(name)
            if len(df):
                if "allowed_products" in df:
                    df = df.assign(allowed_products=df["allowed_products"].map(
                        lambda v: ",".join(map(str, v)) if isinstance(v, list | tuple | np.ndarray) else v))
                df.to_parquet(Path(tmp) / f"{name}.parquet", index=False)
        prepared = ftrain.attach_master_data(prepared, tmp)
    test_start = ctx.as_of - timedelta(days=test_days)
    ctx.progress(f"fraud: features + training on {len(prepared):,} transactions")
    res = ftrain.backtest(prepared, train_start=since, train_end=test_start - timedelta(days=1),
                          test_start=test_start, test_end=ctx.as_of - timedelta(days=1),
                          label_delay_days=delay, seed=ctx.seed or 7, prepared=True,
                          # One LightGBM thread: with 2 threads on a busy 2-core machine OpenMP spinning made
                          # the same fit 6x slower (215 s vs 34 s measured).
                          params=ftrain.TrainParams(seed=ctx.seed or 7,
                                                    num_threads=int(ctx.options.get("n_threads", 1))))
    model = res.model
    summary = fmetrics.summarize(res.test, res.scores["score"].to_numpy(),
                                 review_threshold=model.review_threshold, decline_threshold=model.decline_threshold)
    metrics = _flatten(summary)
    sample = res.test.tail(300).drop(columns=["is_fraud"], errors="ignore").reset_index(drop=True)

    def save(d: Path) -> None:
        model.save(d)
        res.scores.to_csv(d / "test_scores.csv", index=False)
        sample.to_parquet(d / "contract_sample.parquet", index=False)

    return TrainResult(kind="fraud", model=model, save=save, metrics=metrics,
                       params={"label_delay_days": delay, "test_days": test_days,
                               "review_threshold": model.review_threshold,
                               "decline_threshold": model.decline_threshold},
                       features=list(model.features), sample=sample,
                       data_window={"start": str(since), "end": str(ctx.as_of), "test_start": str(test_start),
                                    "rows": len(prepared)},
                       fingerprint_inputs={"rows": len(prepared), "frauds": float(np.nansum(prepared["is_fraud"]))})


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}_"))
        elif isinstance(v, int | float | str | bool | np.integer | np.floating):
            out[f"{prefix}{k}"] = v
    return out


def _load_fraud(path: Path) -> Any:
    from models.fraud import FraudModel

    return FraudModel.load(path)


def _predict_fraud(model: Any, frame: pd.DataFrame) -> np.ndarray:
    """Causal features of the rows (as one history), then the calibrated score of each."""
    from fuelcard.features import FeatureConfig, features_many

    f = frame.copy()
    if "is_fraud" not in f:
        f["is_fraud"] = np.nan
    return np.asarray(model.score_many(features_many(f, FeatureConfig())), dtype=float)


def _generic_load(module: str) -> Callable[[Path], Any]:
    def load(path: Path) -> Any:
        mod = __import__(module, fromlist=["load"])
        if hasattr(mod, "load"):
            return mod.load(path)
        from models.common import load_artifact

        return load_artifact(path)
    return load


def _generic_predict(model: Any, frame: pd.DataFrame) -> np.ndarray:
    for name in ("predict_proba_many", "score_many", "predict_proba", "predict"):
        fn = getattr(model, name, None)
        if fn is not None:
            out = fn(frame)
            if isinstance(out, pd.DataFrame):
                num = out.select_dtypes("number")
                out = num.iloc[:, -1] if len(num.columns) else out.iloc[:, -1]
            return np.asarray(out, dtype=float)
    raise TypeError(f"{type(model).__name__} has no predict method")


def _load_pricing(path: Path) -> Any:
    from models import pricing

    return pricing.load(path)


def _load_sites(path: Path) -> Any:
    from models import sites

    return sites.load(path)


SPECS: dict[str, ModelSpec] = {
    "churn": ModelSpec("churn", train_churn, _load_churn, _predict_churn, (0.0, 1.0),
                       optional_columns=("price_sensitivity", "complaints_total", "complaints_90",
                                         "points_expiring", "tier"),
                       available=_has("models.churn", "train_member_churn")),
    "pricing": ModelSpec("pricing", train_pricing, _load_pricing, _predict_pricing, (0.0, float("inf")),
                         optional_columns=("temp_c", "log_rain", "rush_share", "log_crude", "comp_price_fen",
                                           "gap", "is_holiday")),
    "demand": ModelSpec("demand", train_demand, _load_demand, _predict_demand, (0.0, float("inf")),
                        optional_columns=("id",), available=_has("models.demand", "DemandModel")),
    "sites": ModelSpec("sites", train_sites, _load_sites, _predict_sites, (0.0, 1.0),
                       optional_columns=("lat",)),
    "fraud": ModelSpec("fraud", train_fraud, _load_fraud, _predict_fraud, (0.0, 1.0),
                       optional_columns=("terminal_id", "device_id", "litres", "lat", "lon", "product", "region"),
                       available=_has("models.fraud.train", "backtest")),
}


# ----------------------------------------------------------------------------------------- running
#: The tables each job reads (its version fingerprint covers them).
JOB_TABLES: dict[str, tuple[str, ...]] = {
    "pricing": ("station_sales", "prices", "competitor_prices", "crude", "weather", "calendar", "station_hourly",
                "stations", "competitors"),
    "sites": ("stations", "members", "competitors", "transactions", "cards", "vehicles", "station_sales",
              "station_hourly"),
    "churn": ("members", "transactions", "complaints", "redemptions"),
    "demand": ("station_sales", "tanks", "tank_readings"),
    "fraud": ("transactions", "cards", "vehicles", "fleets"),
}


def fingerprint(ctx: TrainContext, kind: str) -> str:
    """Stable hash of what determines a version, computed *before* training so a re-run is a cheap no-op:
    kind, cut-off, window, seed, options, the code-independent data signature of every input table and the
    ground-truth file (pricing evaluation)."""
    tables = {n: ctx.source.signature(n, before=ctx.as_of) for n in JOB_TABLES.get(kind, ())}
    truth = ""
    if kind == "pricing" and ctx.truth_path is not None and Path(ctx.truth_path).exists():
        truth = hashlib.sha256(Path(ctx.truth_path).read_bytes()).hexdigest()[:16]
    payload = {"kind": kind, "as_of": str(ctx.as_of), "window": ctx.window_days, "seed": ctx.seed,
               "options": ctx.options, "tables": tables, "truth": truth}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class JobOutcome:
    """What :func:`run_job` did: the version, whether it was new, the time taken, the metrics."""

    kind: str
    version: str
    created: bool
    seconds: float
    metrics: dict[str, Any]
    result: TrainResult | None = None


def run_job(ctx: TrainContext, kind: str, *, promote: bool = True, force: bool = False) -> JobOutcome:
    """Train one kind, register it (idempotently) and record it in the warehouse ``model_versions`` table."""
    if kind not in SPECS:
        raise JobError(f"unknown model kind {kind!r}; choose from {', '.join(KINDS)}")
    started = time.perf_counter()
    fp = fingerprint(ctx, kind)
    version = f"{kind}-{ctx.as_of:%Y%m%d}-{fp}"
    existing = {m.version for m in ctx.registry.versions(kind)}
    if version in existing and not force:
        return JobOutcome(kind, version, False, time.perf_counter() - started,
                          ctx.registry.meta(kind, version).metrics, None)
    result = SPECS[kind].train(ctx)
    if version in existing:
        version = f"{version}-{datetime.now(UTC):%H%M%S}"
    seconds = time.perf_counter() - started
    params = {**result.params, "fingerprint": fp, "seed": ctx.seed, "train_seconds": round(seconds, 3),
              "inputs": result.fingerprint_inputs}
    ctx.registry.register(kind, result.save, metrics=result.metrics, params=params,
                          data_window={**result.data_window, "as_of": str(ctx.as_of)},
                          features=result.features, promote=promote, version=version,
                          notes=f"fuelcard train {kind}")
    if ctx.warehouse is not None:
        record_version(ctx.warehouse, ctx.registry, kind, version, seconds=seconds)
    if ctx.reports_dir is not None:
        publish_reports(ctx.registry.path(kind, version), Path(ctx.reports_dir) / kind)
    return JobOutcome(kind, version, True, seconds, result.metrics, result)


REPORT_SUFFIXES = (".png", ".csv", ".txt")


def publish_reports(version_dir: Path, out: Path) -> list[Path]:
    """Copy a version's human-readable reports (PNG/CSV/TXT) to ``out`` (atomic per file)."""
    import os
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for f in sorted(version_dir.iterdir()):
        if f.suffix in REPORT_SUFFIXES and f.is_file():
            tmp = out / f".{f.name}.tmp"
            shutil.copyfile(f, tmp)
            os.replace(tmp, out / f.name)
            written.append(out / f.name)
    (out / "VERSION").write_text(version_dir.name + "\n")
    return written


def record_version(wh: Any, registry: Registry, kind: str, version: str, *, seconds: float = 0.0) -> None:
    """One row per trained version in ``model_versions`` (created when the migrations lack it)."""
    if not wh.table_exists("model_versions"):
        wh.execute(MODEL_VERSIONS_DDL)
    meta = registry.meta(kind, version)
    window = meta.data_window
    row = pd.DataFrame([{
        "kind": kind, "version": version, "created_at": pd.Timestamp(meta.created_at).tz_convert("UTC"),
        "as_of": pd.Timestamp(window.get("as_of", window.get("end"))).date(),
        "window_start": pd.Timestamp(window.get("start", window.get("end"))).date(),
        "window_end": pd.Timestamp(window.get("end")).date(),
        "promoted": int(registry.current_version(kind) == version),
        "metrics": json.dumps(meta.metrics, sort_keys=True), "params": json.dumps(meta.params, sort_keys=True),
        "features": json.dumps(meta.features), "artifact_path": str(registry.path(kind, version)),
        "seconds": float(seconds),
    }])
    wh.insert_df("model_versions", row)


@contextmanager
def progress_bar(total: int, *, enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """A rich progress display; yields ``say(message)``."""
    if not enabled:
        yield lambda msg: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as prog:
        task = prog.add_task("training", total=total)

        def say(msg: str) -> None:
            prog.update(task, description=msg)
            if msg.endswith("done"):
                prog.advance(task)

        yield say


def default_as_of(source: DataSource) -> date:
    """The day after the last day of station sales (train on everything known)."""
    last = source.last_date()
    if last is None:
        raise JobError("no station sales in the source: load data first (fuelcard warehouse load)")
    return last + timedelta(days=1)
