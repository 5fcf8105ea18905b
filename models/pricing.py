"""Pricing: a volume-response regression and constrained gross-profit price recommendations.

Pure: functions take DataFrames with the columns of docs/DATA.md; the only I/O is :meth:`PricingModel.save`
/ :func:`load` and :func:`plot_diagnostics` (paths the caller passes).

Model
-----
``log(litres)`` per station × product × day, OLS (statsmodels; standard errors clustered by station, since
a station's days are not independent — the Durbin–Watson statistic in the diagnostics shows it) on these
drivers:

* own price (log), the gap to the competitors' mean price nearby (log own − log competitors), both also
  interacted with the competition density (competitors within 3 km, capped; dense competition → more
  elastic);
* crude price (log), the market price level (log mean price of the product that day over the network, so
  the own-price effect is relative to the market), weekday, public holiday, season (day of year as
  sine/cosine), weather (temperature,
  temperature², log rain), hour-of-day traffic (the station's share of litres sold in the local rush
  hours 7–9 and 17–19, a commuter-traffic profile from ``station_hourly``), station type, region, product,
  competition density, and station scale (log nozzles);
* Mundlak terms — the station × product means of log price and gap — so the price coefficients are
  identified from each station's own price changes over time (the within estimator), not from the fact
  that big stations price differently, while the station-level drivers keep readable coefficients.

Recommendations
---------------
Per station × product at the cut-off: the price that maximises ``(price − cost) × predicted volume`` over a
grid, within the floor (cost × (1 + ``min_margin``)), the ceiling and the class's maximum total move, reached
along a path that changes at most ``max_daily_change`` per day. The class sets the caution: near-monopoly
highway stations (``monopoly``) get small steps and a narrow band, dense competition (``dense``) wide ones.

>>> cfg = PricingConfig()
>>> cfg.limits("monopoly")[0] < cfg.limits("dense")[0]
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.common import load_artifact, save_artifact

FUELS = ("92", "95", "98", "diesel")
RUSH_HOURS_LOCAL = (7, 8, 9, 17, 18, 19)
LOCAL_OFFSET_H = 8
DENSITY_CAP = 8.0

#: Driver name -> formula terms (the coefficient table groups by driver).
DRIVERS: dict[str, tuple[str, ...]] = {
    "own_price": ("price_dev",),
    "competitor_gap": ("gap_dev",),
    "price_x_competition": ("price_dev:comp_density", "gap_dev:comp_density"),
    "crude_price": ("log_crude",),
    "market_price_level": ("log_market_price",),
    "weekday": ("weekday",),
    "holiday": ("is_holiday",),
    "hour_of_day_traffic": ("rush_share",),
    "season": ("season_sin", "season_cos"),
    "weather": ("temp_c", "I(temp_c ** 2)", "log_rain"),
    "station_type": ("station_type",),
    "region": ("region",),
    "product": ("product",),
    "competition_density": ("comp_density",),
    "station_scale": ("log_nozzles",),
    "mundlak_means": ("mean_log_price", "mean_gap"),
}


@dataclass(frozen=True)
class PricingConfig:
    """Constraints of the recommendation step (fractions of the current price unless said otherwise)."""

    #: class -> (max change per day, max total move from the current price)
    monopoly_limits: tuple[float, float] = (0.01, 0.04)
    normal_limits: tuple[float, float] = (0.02, 0.08)
    dense_limits: tuple[float, float] = (0.03, 0.12)
    dense_competitors: int = 4
    monopoly_competitors: int = 1
    min_margin: float = 0.03
    #: wholesale cost as a share of the retail price when the data carry no cost (typical for China retail)
    assumed_cost_share: float = 0.87
    #: ceiling as a multiple of the competitors' mean price (where known) -- never far above the market
    max_over_competitors: float = 1.15
    grid_points: int = 61
    horizon_days: int = 28
    window_days: int = 365

    def limits(self, cls: str) -> tuple[float, float]:
        """(max daily change, max total move) for a competition class."""
        return {"monopoly": self.monopoly_limits, "dense": self.dense_limits}.get(cls, self.normal_limits)


@dataclass
class PricingModel:
    """A fitted volume-response regression plus what the recommender needs."""

    config: PricingConfig
    formula: str
    params: pd.Series
    cov: pd.DataFrame
    levels: dict[str, list[str]]
    station_info: pd.DataFrame
    reference: pd.DataFrame
    coef_table: pd.DataFrame
    diagnostics: dict[str, float]
    summary_text: str
    group_means: pd.DataFrame | None = None
    cutoff: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    # -------------------------------------------------------------- prediction
    def predict_log_volume(self, frame: pd.DataFrame) -> np.ndarray:
        """Predicted log litres for rows shaped like :func:`build_frame` output.

        Optional drivers that are missing (weather, traffic, competitors, crude) are filled with the
        training reference values, so a frame with only station/product/date/price still scores.
        """
        import patsy

        f = add_group_means(_fill_optional(self._with_station_info(frame), self.reference), self.group_means)
        f = _categorical(f, self.levels)
        rhs = self.formula.split("~", 1)[1]
        x = patsy.dmatrix(rhs, f, return_type="dataframe", NA_action="raise")
        return np.asarray(x.to_numpy(float) @ self.params.reindex(x.columns).fillna(0.0).to_numpy(float))

    def _with_station_info(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Fill station attributes (type, region, competitors, rush share) a frame lacks from training."""
        if "station_id" not in frame or self.station_info is None:
            return frame
        info = self.station_info.set_index("station_id")
        f = frame.copy()
        for col in ("station_type", "region", "competitors_3km", "rush_share"):
            if col in info:
                known = f["station_id"].map(info[col])
                f[col] = known if col not in f else f[col].where(f[col].notna(), known)
        return f

    def predict_volume(self, frame: pd.DataFrame) -> np.ndarray:
        """Predicted litres (smearing-corrected back-transform of the log model)."""
        smear = float(self.diagnostics.get("smearing", 1.0))
        return np.exp(self.predict_log_volume(frame)) * smear

    def elasticity(self, comp_density: Any) -> np.ndarray:
        """Own-price elasticity at a competition density (:func:`competition_density`): d log V / d log p."""
        p = self.params
        cd = np.asarray(comp_density, dtype=float)
        # The gap to competitors only exists where a competitor is within 3 km (density > 0).
        has = (cd > 0).astype(float)
        return (p.get("price_dev", 0.0) + p.get("price_dev:comp_density", 0.0) * cd
                + has * (p.get("gap_dev", 0.0) + p.get("gap_dev:comp_density", 0.0) * cd))

    def save(self, path: str | Path) -> Path:
        """Write the model (a file, or ``model.pkl`` inside a directory)."""
        return save_artifact(self, path)


def load(path: str | Path) -> PricingModel:
    """Load a :class:`PricingModel` written by :meth:`PricingModel.save`."""
    return load_artifact(path, PricingModel)


# ---------------------------------------------------------------------------- frames
def _day(s: pd.Series) -> pd.Series:
    d = pd.to_datetime(s, errors="coerce")
    if getattr(d.dt, "tz", None) is not None:
        d = d.dt.tz_convert("UTC").dt.tz_localize(None)
    return d.dt.normalize()


def competition_density(competitors_3km: Any) -> np.ndarray:
    """Competition density used in the price interactions: competitors within 3 km, capped at
    ``DENSITY_CAP`` (beyond that one more rival changes little).

    >>> competition_density([0, 3, 20]).tolist()
    [0.0, 3.0, 8.0]
    """
    n = pd.to_numeric(pd.Series(np.atleast_1d(competitors_3km)), errors="coerce").fillna(0).to_numpy(float)
    return np.clip(n, 0.0, DENSITY_CAP)


def competition_class(station_type: pd.Series, competitors_3km: pd.Series, config: PricingConfig) -> pd.Series:
    """``monopoly`` (highway or rural with ≤ ``monopoly_competitors`` rivals), ``dense`` or ``normal``."""
    comp = pd.to_numeric(competitors_3km, errors="coerce").fillna(0)
    st = station_type.astype(str).str.lower()
    cls = np.where(comp >= config.dense_competitors, "dense", "normal")
    cls = np.where((comp <= config.monopoly_competitors) & st.isin(["highway", "rural"]).to_numpy(), "monopoly", cls)
    return pd.Series(cls, index=station_type.index)


def rush_share(station_hourly: pd.DataFrame | None) -> pd.Series:
    """Share of each station's litres sold in local rush hours (index station_id)."""
    if station_hourly is None or station_hourly.empty:
        return pd.Series(dtype=float)
    ts = pd.to_datetime(station_hourly["ts_hour"], errors="coerce", utc=True)
    hour = (ts.dt.hour + LOCAL_OFFSET_H) % 24
    litres = pd.to_numeric(station_hourly["litres"], errors="coerce").fillna(0.0)
    rush = litres.where(hour.isin(RUSH_HOURS_LOCAL), 0.0)
    g = pd.DataFrame({"station_id": station_hourly["station_id"], "l": litres, "r": rush}).groupby("station_id")
    s = g["r"].sum() / g["l"].sum().replace(0, np.nan)
    return s.fillna(s.mean())


def build_frame(
    *,
    sales: pd.DataFrame,
    prices: pd.DataFrame,
    stations: pd.DataFrame,
    competitor_prices: pd.DataFrame | None = None,
    crude: pd.DataFrame | None = None,
    weather: pd.DataFrame | None = None,
    calendar: pd.DataFrame | None = None,
    station_hourly: pd.DataFrame | None = None,
    competitors: pd.DataFrame | None = None,
    start: Any | None = None,
    cutoff: Any | None = None,
) -> pd.DataFrame:
    """One row per station × fuel product × day in ``[start, cutoff)`` with every driver of the regression.

    Point in time: rows on or after ``cutoff`` are dropped before anything is computed, and station-level
    profiles (rush-hour share) use only hours before it. Only ``sales`` (date, station_id, product, litres),
    ``prices`` (date, station_id, product, price_fen) and ``stations`` (station_id) are required.
    """
    lo = pd.Timestamp(start) if start is not None else None
    hi = pd.Timestamp(cutoff) if cutoff is not None else None

    def window(df: pd.DataFrame, col: str = "date") -> pd.DataFrame:
        d = df.assign(**{col: _day(df[col])})
        if lo is not None:
            d = d[d[col] >= lo]
        if hi is not None:
            d = d[d[col] < hi]
        return d

    s = window(sales)
    s = s[s["product"].astype(str).isin(FUELS)].assign(product=lambda d: d["product"].astype(str))
    s = s[["date", "station_id", "product", "litres"]]
    p = window(prices).assign(product=lambda d: d["product"].astype(str))
    pcols = ["date", "station_id", "product", "price_fen"] + (["cost_fen"] if "cost_fen" in p else [])
    f = s.merge(p[pcols], on=["date", "station_id", "product"], how="inner")
    if competitor_prices is not None and len(competitor_prices):
        cp = competitor_mean_prices(window(competitor_prices), stations=stations, competitors=competitors)
        f = f.merge(cp, on=["date", "station_id", "product"], how="left")
    else:
        f["comp_price_fen"] = np.nan
    if crude is not None and len(crude):
        c = window(crude)[["date", "usd_per_bbl"]]
        f = f.merge(c, on="date", how="left")
    else:
        f["usd_per_bbl"] = np.nan
    st_cols = [c for c in ("station_id", "region", "station_type", "competitors_3km", "nozzles_92", "nozzles_95",
                           "nozzles_98", "nozzles_diesel") if c in stations]
    f = f.merge(stations[st_cols], on="station_id", how="left")
    if weather is not None and len(weather) and "region" in f:
        w = window(weather)[["date", "region", "temp_c", "rain_mm"]]
        f = f.merge(w, on=["date", "region"], how="left")
    if calendar is not None and len(calendar):
        cal = window(calendar)
        f = f.merge(cal[["date"] + [c for c in ("is_holiday",) if c in cal]], on="date", how="left")
    market = p.groupby(["date", "product"])["price_fen"].mean().rename("market_price_fen").reset_index()
    f = f.merge(market, on=["date", "product"], how="left")
    rs = rush_share(_window_hourly(station_hourly, lo, hi))
    f["rush_share"] = f["station_id"].map(rs) if len(rs) else np.nan
    f = _derive(f)
    return f.sort_values(["station_id", "product", "date"], kind="mergesort").reset_index(drop=True)


def competitors_within(stations: pd.DataFrame, competitors: pd.DataFrame | None,
                       radius_km: float = 3.0) -> pd.DataFrame | None:
    """Pairs ``station_id, competitor_id`` with the competitor within ``radius_km`` of the station.

    Needs coordinates on both sides; returns None when they are missing (callers then fall back to the
    competitor's nearest station from ``competitor_prices.station_id``).
    """
    if competitors is None or competitors.empty or not {"lat", "lon", "competitor_id"} <= set(competitors):
        return None
    if not {"lat", "lon", "station_id"} <= set(stations):
        return None
    from scipy.spatial import cKDTree

    lat0 = float(pd.to_numeric(stations["lat"], errors="coerce").mean())

    def xy(df: pd.DataFrame) -> np.ndarray:
        lat = pd.to_numeric(df["lat"], errors="coerce").to_numpy(float)
        lon = pd.to_numeric(df["lon"], errors="coerce").to_numpy(float)
        return np.column_stack([lon * 111.32 * np.cos(np.radians(lat0)), lat * 110.57])

    st = stations.dropna(subset=["lat", "lon"]).reset_index(drop=True)
    cp = competitors.dropna(subset=["lat", "lon"]).reset_index(drop=True)
    if st.empty or cp.empty:
        return None
    hits = cKDTree(xy(cp)).query_ball_point(xy(st), r=radius_km)
    rows = [(st.at[i, "station_id"], cp.at[j, "competitor_id"]) for i, js in enumerate(hits) for j in js]
    return pd.DataFrame(rows, columns=["station_id", "competitor_id"])


def competitor_mean_prices(competitor_prices: pd.DataFrame, *, stations: pd.DataFrame | None = None,
                           competitors: pd.DataFrame | None = None) -> pd.DataFrame:
    """``date, station_id, product, comp_price_fen``: mean competitor price within 3 km of each station.

    Falls back to the competitors whose nearest station is ours (``competitor_prices.station_id``).
    """
    cp = competitor_prices.assign(product=competitor_prices["product"].astype(str),
                                  date=_day(competitor_prices["date"]))
    pairs = competitors_within(stations, competitors) if stations is not None else None
    if pairs is not None and "competitor_id" in cp:
        cp = cp.drop(columns=["station_id"], errors="ignore").merge(pairs, on="competitor_id", how="inner")
    out = cp.groupby(["date", "station_id", "product"], as_index=False)["price_fen"].mean()
    return out.rename(columns={"price_fen": "comp_price_fen"})


def _window_hourly(h: pd.DataFrame | None, lo: pd.Timestamp | None, hi: pd.Timestamp | None) -> pd.DataFrame | None:
    if h is None or h.empty:
        return h
    ts = pd.to_datetime(h["ts_hour"], errors="coerce", utc=True).dt.tz_localize(None)
    keep = pd.Series(True, index=h.index)
    if lo is not None:
        keep &= ts >= lo
    if hi is not None:
        keep &= ts < hi
    return h[keep.to_numpy()]


def _num(f: pd.DataFrame, col: str) -> pd.Series:
    """Numeric view of an optional column (all NaN when absent)."""
    if col not in f:
        return pd.Series(np.nan, index=f.index, dtype=float)
    return pd.to_numeric(f[col], errors="coerce").astype(float)


def _derive(f: pd.DataFrame) -> pd.DataFrame:
    """Derived driver columns. Missing optional inputs stay NaN here; :func:`_fill_optional` fills them."""
    f = f.copy()
    f["litres"] = _num(f, "litres")
    f["price_fen"] = _num(f, "price_fen")
    f["log_price"] = np.log(f["price_fen"].clip(lower=1))
    comp = _num(f, "comp_price_fen")
    f["has_competitor_price"] = comp.notna().astype(float)
    f["gap"] = (f["log_price"] - np.log(comp.clip(lower=1))).fillna(0.0)
    comp_n = _num(f, "competitors_3km")
    f["comp_density"] = np.where(comp_n.notna(), competition_density(comp_n.fillna(0)), np.nan)
    f["log_crude"] = np.log(_num(f, "usd_per_bbl").clip(lower=1))
    f["log_market_price"] = np.log(_num(f, "market_price_fen").clip(lower=1))
    d = pd.to_datetime(f["date"])
    f["weekday"] = d.dt.weekday.astype(int)
    doy = d.dt.dayofyear.to_numpy(float)
    f["season_sin"] = np.sin(2 * np.pi * doy / 365.25)
    f["season_cos"] = np.cos(2 * np.pi * doy / 365.25)
    f["is_holiday"] = _num(f, "is_holiday").fillna(0.0)
    f["temp_c"] = _num(f, "temp_c")
    f["log_rain"] = np.log1p(_num(f, "rain_mm").clip(lower=0))
    noz_cols = [c for c in ("nozzles_92", "nozzles_95", "nozzles_98", "nozzles_diesel") if c in f]
    f["log_nozzles"] = (np.log1p(sum(_num(f, c).fillna(0) for c in noz_cols)) if noz_cols
                        else pd.Series(np.nan, index=f.index))
    for c in ("region", "station_type", "product"):
        f[c] = f[c].astype(str) if c in f else "unknown"
    f["rush_share"] = _num(f, "rush_share")
    return f


def _fill_optional(frame: pd.DataFrame, reference: pd.DataFrame | None) -> pd.DataFrame:
    f = _derive(frame) if "log_price" not in frame else frame.copy()
    ref = reference.iloc[0] if reference is not None and len(reference) else pd.Series(dtype=object)
    for col in ("log_crude", "temp_c", "log_rain", "rush_share", "comp_density", "log_nozzles", "gap",
                "season_sin", "season_cos", "is_holiday", "log_market_price"):
        if col not in f:
            f[col] = np.nan
        fill = ref.get(col, 0.0)
        if col == "log_market_price":
            f[col] = f[col].fillna(f["log_price"])
        else:
            f[col] = f[col].fillna(fill if pd.notna(fill) else 0.0)
    for col in ("region", "station_type", "product"):
        f[col] = f[col].astype(str)
    return f


def group_means(f: pd.DataFrame) -> pd.DataFrame:
    """Station × product means of log price and gap over the training window (the Mundlak terms)."""
    return f.groupby(["station_id", "product"], as_index=False).agg(
        mean_log_price=("log_price", "mean"), mean_gap=("gap", "mean"))


def add_group_means(f: pd.DataFrame, means: pd.DataFrame | None = None) -> pd.DataFrame:
    """Attach the group means and the within deviations ``price_dev``/``gap_dev`` used by the regression.

    Rows of a station × product unseen in training get their own values as means (deviation 0), so
    price *changes* still move the prediction through the within coefficients.
    """
    if means is None:
        means = group_means(f)
    out = f.drop(columns=[c for c in ("mean_log_price", "mean_gap") if c in f])
    out = out.merge(means, on=["station_id", "product"], how="left") if "station_id" in out else out.assign(
        mean_log_price=np.nan, mean_gap=np.nan)
    out["mean_log_price"] = out["mean_log_price"].fillna(out["log_price"])
    out["mean_gap"] = out["mean_gap"].fillna(out["gap"])
    out["price_dev"] = out["log_price"] - out["mean_log_price"]
    out["gap_dev"] = out["gap"] - out["mean_gap"]
    return out


# ---------------------------------------------------------------------------- fit
_BASE_COLUMNS = ("price_dev", "gap_dev", "comp_density", "log_crude", "log_market_price", "weekday", "is_holiday",
                 "rush_share", "season_sin", "season_cos", "temp_c", "log_rain", "station_type", "region", "product",
                 "log_nozzles", "mean_log_price", "mean_gap")


_CATEGORICAL = ("weekday", "station_type", "region", "product")


def _categorical(f: pd.DataFrame, levels: dict[str, list[str]]) -> pd.DataFrame:
    """Categorical columns with the training levels (unseen values fall back to the reference level)."""
    f = f.copy()
    for c, lv in levels.items():
        v = f[c].astype(str) if c in f else pd.Series(lv[0], index=f.index)
        v = v.where(v.isin(lv), lv[0])
        f[c] = pd.Categorical(v, categories=lv)
    return f


def _formula(f: pd.DataFrame) -> tuple[str, list[str]]:
    terms: list[str] = []
    used: list[str] = []
    varies = {c: f[c].nunique(dropna=True) > 1 for c in f.columns}
    for driver, ts in DRIVERS.items():
        keep = []
        for t in ts:
            cols = [c for c in _BASE_COLUMNS if c in t]
            if all(varies.get(c, False) for c in cols):
                keep.append(t)
        if keep:
            terms.extend(keep)
            used.append(driver)
    return "log_litres ~ " + " + ".join(terms), used


def fit(frame: pd.DataFrame, *, config: PricingConfig | None = None, cutoff: Any | None = None,
        seed: int | None = 0) -> PricingModel:
    """Fit the volume-response regression on a :func:`build_frame` frame (OLS, station-clustered errors).

    The fit is deterministic (``seed`` is accepted for the common model interface and unused).
    """
    import patsy
    from statsmodels.regression.linear_model import OLS
    from statsmodels.stats.stattools import durbin_watson, jarque_bera

    cfg = config or PricingConfig()
    f = frame[(pd.to_numeric(frame["litres"], errors="coerce") > 0) & frame["price_fen"].notna()].copy()
    if len(f) < 30:
        raise ValueError(f"pricing needs at least 30 station-product-days with sales, got {len(f)}")
    f["log_litres"] = np.log(f["litres"].astype(float))
    reference = pd.DataFrame([{c: float(f[c].median()) for c in (
        "log_crude", "temp_c", "log_rain", "rush_share", "comp_density", "log_nozzles", "gap")
        if c in f and f[c].notna().any()}])
    f = _fill_optional(f, reference)
    means = group_means(f)
    f = add_group_means(f, means)
    formula, used = _formula(f)
    levels = {c: sorted(f[c].astype(str).unique().tolist()) for c in _CATEGORICAL}
    f = _categorical(f, levels)
    y, x = patsy.dmatrices(formula, f, return_type="dataframe")
    groups = pd.factorize(f.loc[y.index, "station_id"].astype(str))[0]
    if len(np.unique(groups)) >= 5:
        res = OLS(y, x).fit(cov_type="cluster", cov_kwds={"groups": groups})
    else:  # too few stations for clustering: heteroscedasticity-robust only
        res = OLS(y, x).fit(cov_type="HC1")
    resid = res.resid.to_numpy()
    jb, jb_p, skew, kurt = jarque_bera(resid)
    exog = res.model.exog
    names = res.model.exog_names
    vif = _vif(exog, names)
    smear = float(np.mean(np.exp(resid)))
    # Breusch–Pagan on a subsample keeps it cheap on a year of data.
    from statsmodels.stats.diagnostic import het_breuschpagan

    idx = np.random.default_rng(0).choice(len(resid), size=min(len(resid), 20_000), replace=False)
    bp_stat, bp_p, _, _ = het_breuschpagan(resid[idx], exog[idx])
    diag = {
        "n_obs": float(res.nobs), "r2": float(res.rsquared), "adj_r2": float(res.rsquared_adj),
        "rmse_log": float(np.sqrt(np.mean(resid ** 2))), "condition_number": float(res.condition_number),
        "durbin_watson": float(durbin_watson(resid)), "jarque_bera": float(jb), "jarque_bera_p": float(jb_p),
        "resid_skew": float(skew), "resid_kurtosis": float(kurt), "breusch_pagan_p": float(bp_p),
        "max_vif_price_terms": float(max([v for n, v in vif.items() if "price" in n or "gap" in n] or [0.0])),
        "smearing": smear, "drivers": float(len(used)),
    }
    ci = res.conf_int()
    coef = pd.DataFrame({
        "term": res.params.index, "coef": res.params.to_numpy(), "std_err": res.bse.to_numpy(),
        "t": res.tvalues.to_numpy(), "p_value": res.pvalues.to_numpy(), "ci_low": ci[0].to_numpy(),
        "ci_high": ci[1].to_numpy(), "vif": [vif.get(n, np.nan) for n in res.params.index],
    })
    coef["driver"] = [_driver_of(t) for t in coef["term"]]
    st_cols = [c for c in ("station_id", "region", "station_type", "competitors_3km", "comp_density",
                           "rush_share", "log_nozzles") if c in f]
    station_info = f.sort_values("date").groupby("station_id", as_index=False)[st_cols[1:]].last()
    model = PricingModel(config=cfg, formula=formula, params=res.params, cov=res.cov_params(),
                         levels=levels, station_info=station_info, reference=reference, group_means=means,
                         coef_table=coef, diagnostics=diag, summary_text=_summary_text(res),
                         cutoff=str(pd.Timestamp(cutoff).date()) if cutoff is not None else None)
    cd = station_info["comp_density"].to_numpy(float) if "comp_density" in station_info else np.zeros(1)
    el = model.elasticity(cd)
    model.metrics = {"r2": diag["r2"], "adj_r2": diag["adj_r2"], "rmse_log": diag["rmse_log"],
                     "condition_number": diag["condition_number"], "drivers": diag["drivers"],
                     "elasticity_median": float(np.median(el)), "elasticity_min": float(np.min(el)),
                     "elasticity_max": float(np.max(el)), "n_obs": diag["n_obs"]}
    return model


def _summary_text(res: Any) -> str:
    """statsmodels' summary; its overall Wald test warns when clusters < parameters (harmless here)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return str(res.summary())


def _driver_of(term: str) -> str:
    if term == "Intercept":
        return "intercept"
    for driver, ts in DRIVERS.items():
        for t in ts:
            if term == t or term.startswith(t + "[") or (t.startswith("C(") and term.startswith(t)):
                return driver
    return "other"


def _vif(exog: np.ndarray, names: list[str]) -> dict[str, float]:
    """Variance inflation factors of the continuous regressors (cheap closed form via the correlation inverse)."""
    cont = [i for i, n in enumerate(names) if n != "Intercept" and "[" not in n]
    if len(cont) < 2:
        return {}
    x = exog[:, cont]
    sd = x.std(axis=0)
    ok = sd > 0
    x = x[:, ok]
    corr = np.corrcoef(x, rowvar=False)
    try:
        inv = np.linalg.pinv(corr)
    except np.linalg.LinAlgError:
        return {}
    kept = [names[i] for i, k in zip(cont, ok, strict=True) if k]
    return {n: float(v) for n, v in zip(kept, np.diag(inv), strict=True)}


# ---------------------------------------------------------------------------- recommend
def reference_rows(frame: pd.DataFrame, *, last_days: int = 7) -> pd.DataFrame:
    """The state at the cut-off per station × product: last price/cost/competitor price, recent drivers."""
    f = frame.sort_values("date")
    last = f.groupby(["station_id", "product"], as_index=False).tail(1)
    recent = f[f["date"] > f["date"].max() - pd.Timedelta(days=last_days)]
    vol = recent.groupby(["station_id", "product"])["litres"].mean().rename("recent_litres")
    out = last.merge(vol, on=["station_id", "product"], how="left")
    return out.reset_index(drop=True)


def recommend(model: PricingModel, state: pd.DataFrame) -> pd.DataFrame:
    """Recommended target price and first-day price per station × product.

    ``state`` rows: station_id, product, price_fen (current), cost_fen (wholesale; estimated as the
    training-window median margin below price when missing), comp_price_fen (optional), station_type,
    competitors_3km, region (optional). Returns the inputs plus ``cls, floor_fen, ceiling_fen, target_fen,
    first_day_fen, change_pct, expected_volume_ratio, expected_profit_uplift`` and a one-line ``reason``.
    """
    cfg = model.config
    s = state.copy().reset_index(drop=True)
    s["product"] = s["product"].astype(str)
    if "station_type" not in s or "competitors_3km" not in s:
        info = model.station_info.set_index("station_id")
        for col in ("station_type", "competitors_3km", "region"):
            if col not in s and col in info:
                s[col] = s["station_id"].map(info[col])
    s["station_type"] = s.get("station_type", pd.Series("urban", index=s.index)).fillna("urban")
    s["competitors_3km"] = pd.to_numeric(s.get("competitors_3km", 0), errors="coerce")
    s["competitors_3km"] = s["competitors_3km"].fillna(0)
    p0 = pd.to_numeric(s["price_fen"], errors="coerce").to_numpy(float)
    cost = pd.to_numeric(s.get("cost_fen", np.nan), errors="coerce").to_numpy(float)
    cost = np.where(np.isfinite(cost), cost, p0 * cfg.assumed_cost_share)
    comp = pd.to_numeric(s.get("comp_price_fen", np.nan), errors="coerce").to_numpy(float)
    cls = competition_class(s["station_type"], s["competitors_3km"], cfg).to_numpy()
    step = np.array([cfg.limits(c)[0] for c in cls])
    band = np.array([cfg.limits(c)[1] for c in cls])
    floor = np.maximum(cost * (1 + cfg.min_margin), p0 * (1 - band))
    ceiling = p0 * (1 + band)
    ceiling = np.where(np.isfinite(comp), np.minimum(ceiling, comp * cfg.max_over_competitors), ceiling)
    ceiling = np.maximum(ceiling, np.minimum(p0, p0 * (1 + band)))  # never forced below today's price
    floor = np.minimum(floor, ceiling)

    # Evaluate the predicted volume ratio V(p)/V(p0) on a grid: only price-dependent terms matter.
    g = np.linspace(0.0, 1.0, cfg.grid_points)
    cand = floor[:, None] + (ceiling - floor)[:, None] * g[None, :]
    cand = np.round(cand)
    base = s.assign(comp_price_fen=np.where(np.isfinite(comp), comp, np.nan))
    n, k = cand.shape
    rows = base.loc[base.index.repeat(k)].reset_index(drop=True)
    rows["price_fen"] = cand.ravel()
    rows = _derive(rows.drop(columns=["log_price"], errors="ignore"))
    lv = model.predict_log_volume(rows).reshape(n, k)
    lv0 = model.predict_log_volume(_derive(base.drop(columns=["log_price"], errors="ignore")))
    ratio = np.exp(lv - lv0[:, None])
    profit = (cand - cost[:, None]) * ratio
    profit0 = p0 - cost
    best = np.argmax(profit, axis=1)
    target = cand[np.arange(n), best]
    # Keep today's price when the model sees no material gain (< 0.5 %): fewer, better-justified moves.
    gain = profit[np.arange(n), best] / np.where(profit0 > 0, profit0, np.nan) - 1
    keep = ~(gain > 0.005)
    target = np.where(keep & (p0 >= floor) & (p0 <= ceiling), p0, target)
    first = p0 + np.clip(target - p0, -step * p0, step * p0)
    el = model.elasticity(competition_density(s["competitors_3km"]))
    out = s.assign(cls=cls, cost_fen=cost, floor_fen=np.round(floor), ceiling_fen=np.round(ceiling),
                   target_fen=np.round(target), first_day_fen=np.round(first),
                   max_daily_change=step, change_pct=100 * (target / p0 - 1),
                   elasticity=el, expected_volume_ratio=ratio[np.arange(n), best],
                   expected_profit_uplift=np.nan_to_num(gain))
    out["discount_fen"] = np.maximum(p0 - out["target_fen"], 0)
    out["reason"] = [_reason(r) for r in out.itertuples()]
    return out


def _reason(r: Any) -> str:
    what = ("hold" if r.target_fen == r.price_fen else
            f"{'raise' if r.target_fen > r.price_fen else 'cut'} {abs(r.change_pct):.1f}%")
    return (f"{what}: {r.cls} competition ({int(r.competitors_3km)} within 3 km), elasticity {r.elasticity:.2f}, "
            f"margin {100 * (r.target_fen - r.cost_fen) / r.target_fen:.1f}%, "
            f"steps ≤ {100 * r.max_daily_change:.0f}%/day, "
            f"predicted gross profit {100 * r.expected_profit_uplift:+.1f}%")


def price_path(rec: pd.DataFrame, days: int) -> np.ndarray:
    """Daily prices (rows = station × product, columns = day 1..days) moving to the target within the daily cap."""
    p0 = rec["price_fen"].to_numpy(float)
    tgt = rec["target_fen"].to_numpy(float)
    step = rec["max_daily_change"].to_numpy(float) * p0
    d = np.arange(1, days + 1)[None, :]
    return np.round(p0[:, None] + np.clip((tgt - p0)[:, None], -step[:, None] * d, step[:, None] * d))


def region_summary(rec: pd.DataFrame) -> pd.DataFrame:
    """Recommendations aggregated per region × product: mean change, raises/cuts, predicted uplift."""
    r = rec.assign(raise_=(rec["target_fen"] > rec["price_fen"]).astype(int),
                   cut=(rec["target_fen"] < rec["price_fen"]).astype(int))
    if "region" not in r:
        r["region"] = "all"
    return r.groupby(["region", "product"], as_index=False).agg(
        stations=("station_id", "nunique"), mean_price_fen=("price_fen", "mean"),
        mean_target_fen=("target_fen", "mean"), mean_change_pct=("change_pct", "mean"),
        raises=("raise_", "sum"), cuts=("cut", "sum"),
        mean_predicted_uplift=("expected_profit_uplift", "mean"))


def coefficient_text(model: PricingModel) -> str:
    """The coefficient table and diagnostics as plain text (for the report and the registry)."""
    lines = ["Volume-response regression (OLS on log litres, station-clustered SE)", f"formula: {model.formula}", ""]
    lines.append(model.coef_table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    lines.append("")
    lines.append("diagnostics:")
    lines += [f"  {k}: {v:.4g}" for k, v in model.diagnostics.items()]
    return "\n".join(lines)


def plot_diagnostics(model: PricingModel, frame: pd.DataFrame, path: str | Path) -> Path:
    """PNG: coefficients with 95% CIs (price drivers), residuals vs fitted, residual histogram, elasticities."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = frame[pd.to_numeric(frame["litres"], errors="coerce") > 0]
    f = f.sample(min(len(f), 5_000), random_state=0) if len(f) > 5_000 else f
    y = np.log(f["litres"].astype(float).to_numpy())
    yhat = model.predict_log_volume(f)
    res = y - yhat
    fig, ax = plt.subplots(2, 2, figsize=(13, 9))
    terms = model.coef_table["term"]
    ct = model.coef_table[~terms.str.contains("[", regex=False) & (terms != "Intercept")]
    ax[0, 0].errorbar(ct["coef"], np.arange(len(ct)), xerr=[ct["coef"] - ct["ci_low"], ct["ci_high"] - ct["coef"]],
                      fmt="o")
    ax[0, 0].set_yticks(np.arange(len(ct)), ct["term"], fontsize=7)
    ax[0, 0].axvline(0, color="grey", lw=0.8)
    ax[0, 0].set_title("Continuous drivers: coefficient ± 95% CI")
    ax[0, 1].scatter(yhat, res, s=2, alpha=0.3)
    ax[0, 1].axhline(0, color="red", lw=0.8)
    ax[0, 1].set_title(f"Residuals vs fitted (R² {model.diagnostics['r2']:.3f})")
    ax[1, 0].hist(res, bins=60)
    ax[1, 0].set_title(f"Residuals (JB p={model.diagnostics['jarque_bera_p']:.2g}, "
                       f"DW {model.diagnostics['durbin_watson']:.2f})")
    cd = np.linspace(0, DENSITY_CAP, 50)
    ax[1, 1].plot(cd, model.elasticity(cd))
    ax[1, 1].set_xlabel("competitors within 3 km")
    ax[1, 1].set_ylabel("own-price elasticity")
    ax[1, 1].set_title("Elasticity vs competition density")
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=80)
    plt.close(fig)
    return p


def params_of(model: PricingModel) -> dict[str, Any]:
    """Configuration and formula as JSON-able parameters (for the registry)."""
    return {**asdict(model.config), "formula": model.formula}


def predicted_uplift(rec: pd.DataFrame) -> float:
    """Model-predicted gross-profit uplift of the targets over today's prices, weighted by recent volume."""
    v = pd.to_numeric(rec.get("recent_litres", pd.Series(1.0, index=rec.index)), errors="coerce").fillna(0.0)
    now = ((rec["price_fen"] - rec["cost_fen"]) * v).sum()
    new = ((rec["target_fen"] - rec["cost_fen"]) * v * rec["expected_volume_ratio"]).sum()
    return float(new / now - 1.0) if now > 0 else 0.0


# ---------------------------------------------------------------------------- evaluation vs the true response
@dataclass(frozen=True)
class TrueResponse:
    """The simulator's true volume response to prices (from ground_truth/truth.json).

    Walk-in (non-card) volume is multiplied by ``exp(r)``, card fills are thinned by ``min(1, exp(r - cap))``,
    where ``r = own_elasticity · ln(p / guide) + gap_coef[station] · ln(p / competitors' mean within 3 km)``.
    The guide price per product and day comes from truth.json when present, else ``cost / wholesale_share``.
    """

    own_elasticity: float
    gap_coef: dict[str, float]
    card_cap: float | None = None
    wholesale_share: float = 0.87
    guide: dict[str, dict[str, float]] = field(default_factory=dict)  # product -> {iso date: fen}

    @classmethod
    def from_truth(cls, truth: dict[str, Any], *, stations: pd.DataFrame | None = None,
                   competitors: pd.DataFrame | None = None) -> TrueResponse:
        """Read the ``price_response`` section of truth.json (per-station ``gap_coef``, ``own_elasticity``,
        ``guide_price_fen`` per product and day, ``wholesale_cost_share_of_guide``, ``card_thin_cap``)."""
        import re

        pr = truth.get("price_response") or {}
        own = float(pr.get("own_elasticity", -0.4))
        coefs = pr.get("gap_coef") if isinstance(pr.get("gap_coef"), dict) else {}
        if not coefs and stations is not None:
            nums = [float(x) for x in re.findall(r"[-+]?\d*\.?\d+", str(pr.get("gap_coef_rule", "")))][:3]
            base, per, mx = (nums + [0.4, 0.45, 3.5][len(nums):])[:3]
            n = pd.to_numeric(stations["competitors_3km"], errors="coerce").fillna(0).to_numpy(float)
            g = np.where(n == 0, 0.0, -np.minimum(base + per * n, mx))
            coefs = dict(zip(stations["station_id"].astype(str), g.tolist(), strict=True))
        cap = pr.get("card_thin_cap")
        if cap is None:  # older truth files state it only in the card-fill description
            text = str((truth.get("demand") or {}).get("card_fills", ""))
            m = re.search(r"exp\(price_response\s*-\s*([0-9.]+)\)", text)
            cap = float(m.group(1)) if m else None
        guide: dict[str, dict[str, float]] = {}
        start = (truth.get("config") or {}).get("start")
        if start and isinstance(pr.get("guide_price_fen"), dict):
            d0 = pd.Timestamp(start)
            for prod, vals in pr["guide_price_fen"].items():
                guide[str(prod)] = {str((d0 + pd.Timedelta(days=i)).date()): float(v) for i, v in enumerate(vals)}
        return cls(own_elasticity=own, gap_coef={str(k): float(v) for k, v in coefs.items()},
                   card_cap=float(cap) if cap is not None else None,
                   wholesale_share=float(pr.get("wholesale_cost_share_of_guide", 0.87)), guide=guide)

    def guide_price(self, product: Any, day: Any, cost: Any) -> np.ndarray:
        """Guide price per row: from the truth table when known, else cost / wholesale share."""
        fallback = np.asarray(cost, dtype=float) / self.wholesale_share
        if not self.guide:
            return fallback
        keys = pd.Series(pd.to_datetime(np.atleast_1d(day))).dt.strftime("%Y-%m-%d").to_numpy()
        prods = pd.Series(np.atleast_1d(product)).astype(str).to_numpy()
        vals = np.array([self.guide.get(p, {}).get(k, np.nan) for p, k in zip(prods, keys, strict=True)])
        return np.where(np.isfinite(vals), vals, fallback)

    def log_effect(self, station_id: Any, price: Any, guide: Any, comp_mean: Any) -> np.ndarray:
        """True log multiplier ``r`` of volume for each row."""
        p = np.asarray(price, dtype=float)
        cm = np.asarray(comp_mean, dtype=float)
        g = pd.Series(np.atleast_1d(station_id)).astype(str).map(self.gap_coef).fillna(0.0).to_numpy(float)
        gap = np.where(np.isfinite(cm), np.log(p / np.where(np.isfinite(cm), cm, 1.0)), 0.0)
        return self.own_elasticity * np.log(p / np.asarray(guide, dtype=float)) + g * gap


@dataclass(frozen=True)
class PolicyEvaluation:
    """True gross profit of the recommended policy vs the current one over the evaluation days."""

    metrics: dict[str, float]
    detail: pd.DataFrame


def evaluate_policy(rec: pd.DataFrame, *, future_prices: pd.DataFrame, future_sales: pd.DataFrame,
                    response: TrueResponse, future_competitor_prices: pd.DataFrame | None = None,
                    stations: pd.DataFrame | None = None, competitors: pd.DataFrame | None = None) -> PolicyEvaluation:
    """Replay the days after the cut-off under the recommendation and score both policies with the TRUE response.

    The recommendation is applied as a relative change to each day's list price (``target / price`` at the
    cut-off), phased in at most ``max_daily_change`` per day, so it stays valid when the regulated guide price
    moves. Volumes: the realised litres of the current policy, rescaled by the true response ratio (walk-in
    ``exp(Δr)``; card fills by the thinning ratio), so both policies face the same demand shocks. Gross
    profit = (price − wholesale cost) × litres.
    """
    fp = future_prices.assign(date=_day(future_prices["date"]), product=future_prices["product"].astype(str))
    fs = future_sales.assign(date=_day(future_sales["date"]), product=future_sales["product"].astype(str))
    fs = fs[fs["product"].isin(FUELS)]
    d = fs.merge(fp, on=["date", "station_id", "product"], how="inner")
    r = rec[["station_id", "product", "price_fen", "target_fen", "max_daily_change", "cost_fen", "cls"]].rename(
        columns={"price_fen": "p0", "target_fen": "target", "cost_fen": "cost0"})
    d = d.merge(r, on=["station_id", "product"], how="inner")
    if d.empty:
        return PolicyEvaluation({"true_profit_uplift": float("nan"), "eval_days": 0.0}, d)
    if "cost_fen" not in d or d["cost_fen"].isna().all():
        d["cost_fen"] = d["price_fen"] * (d["cost0"] / d["p0"])
    day0 = d["date"].min()
    k = (d["date"] - day0).dt.days.to_numpy() + 1
    want = d["target"].to_numpy(float) / d["p0"].to_numpy(float) - 1.0
    step = d["max_daily_change"].to_numpy(float)
    ramp = np.clip(want, -step * k, step * k)
    p_cur = d["price_fen"].to_numpy(float)
    p_new = np.round(p_cur * (1.0 + ramp))
    cost = d["cost_fen"].to_numpy(float)
    if future_competitor_prices is not None and len(future_competitor_prices):
        cm = competitor_mean_prices(future_competitor_prices, stations=stations, competitors=competitors)
        d = d.merge(cm, on=["date", "station_id", "product"], how="left")
        comp = d["comp_price_fen"].to_numpy(float)
    else:
        comp = np.full(len(d), np.nan)
    guide = response.guide_price(d["product"], d["date"], cost)
    r_cur = response.log_effect(d["station_id"], p_cur, guide, comp)
    r_new = response.log_effect(d["station_id"], p_new, guide, comp)
    litres = pd.to_numeric(d["litres"], errors="coerce").fillna(0.0).to_numpy(float)
    card = pd.to_numeric(d.get("card_litres", pd.Series(0.0, index=d.index)), errors="coerce").fillna(0.0)
    card = np.minimum(card.to_numpy(float), litres)
    walk = litres - card
    if response.card_cap is None:
        card_ratio = np.exp(r_new - r_cur)
    else:
        card_ratio = np.minimum(1.0, np.exp(r_new - response.card_cap)) / np.minimum(
            1.0, np.exp(r_cur - response.card_cap))
    v_new = walk * np.exp(r_new - r_cur) + card * card_ratio
    gp_cur = (p_cur - cost) * litres
    gp_new = (p_new - cost) * v_new
    d = d.assign(price_new_fen=p_new, litres_new=v_new, gp_cur_fen=gp_cur, gp_new_fen=gp_new)
    by_cls = d.groupby("cls")[["gp_cur_fen", "gp_new_fen"]].sum()
    metrics = {
        "true_profit_current_fen": float(gp_cur.sum()),
        "true_profit_recommended_fen": float(gp_new.sum()),
        "true_profit_uplift": float(gp_new.sum() / gp_cur.sum() - 1.0) if gp_cur.sum() > 0 else float("nan"),
        "true_volume_change": float(v_new.sum() / litres.sum() - 1.0) if litres.sum() > 0 else 0.0,
        "eval_days": float(d["date"].nunique()),
        "max_abs_daily_adjustment": float(np.max(step)),
    }
    for cls_name, row in by_cls.iterrows():
        if row["gp_cur_fen"] > 0:
            metrics[f"true_profit_uplift_{cls_name}"] = float(row["gp_new_fen"] / row["gp_cur_fen"] - 1.0)
    return PolicyEvaluation(metrics, d)
