"""Site selection: where members live, work and drive; refuelling gaps; candidate sites; station suggestions.

Pure: every function takes DataFrames with the columns of docs/DATA.md and returns frames/arrays; the only
I/O is :meth:`SiteModel.save` / :func:`load` (the path the caller passes) and :func:`plot_heatmap` (a PNG
path the caller passes).

Method
------
* **Demand points.** Every active member contributes their weekly fills (``fills_per_week``, or 1) split
  over their home, their workplace and ``route_points`` points along the home→work segment (the commute).
* **Served / unserved.** A demand point is *served* when one of our stations lies within ``serve_radius_km``;
  otherwise it is a *refuelling gap*.
* **Candidates.** Centres of a ``cell_km`` grid over the network, kept only when they satisfy the access
  constraint (a commuter corridor passes through: route density at or above ``access_quantile`` of the
  non-empty cells, or a highway station within ``highway_access_km``), the minimum distance to our stations,
  and the land-cost cap (land cost interpolated from the stations' ``land_cost_index``).
* **Scoring.** Greedy maximum coverage: each step takes the candidate whose *still uncovered* gap demand
  within ``serve_radius_km``, discounted by land cost and by competitors already covering it, is largest;
  that demand is then marked covered, so the top-k are complementary instead of ten cells in one suburb.
* **Baseline.** The density-only baseline takes the k densest cells (homes + workplaces + routes) with no
  gap, constraint or coverage logic. Both are measured by the same yardstick: gap demand within
  ``serve_radius_km`` of any of the k sites (:func:`captured_unserved`).

>>> import pandas as pd
>>> st = pd.DataFrame({"station_id": ["S1"], "lat": [30.0], "lon": [120.0], "station_type": ["urban"],
...                    "land_cost_index": [1.0]})
>>> mem = pd.DataFrame({"member_id": ["m1", "m2"], "home_lat": [30.0, 30.2], "home_lon": [120.0, 120.2],
...                     "work_lat": [30.01, 30.21], "work_lon": [120.0, 120.21], "fills_per_week": [1.0, 2.0]})
>>> m = fit(stations=st, members=mem, config=SiteConfig(top_k=1, access_quantile=0.0))
>>> round(m.metrics["unserved_share"], 2)
0.67
>>> bool(m.top.iloc[0]["captured_weekly_fills"] > 0)
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from models.common import load_artifact, save_artifact

KM_PER_DEG_LAT = 110.57
KM_PER_DEG_LON_EQ = 111.32
FUEL_PRODUCTS = ("92", "95", "98", "diesel")
AGG_KM = 0.5


@dataclass(frozen=True)
class SiteConfig:
    """Tunable constraints and weights of the site-selection model."""

    cell_km: float = 1.0
    serve_radius_km: float = 3.0
    min_distance_km: float = 3.0
    route_points: int = 6
    home_share: float = 0.35
    work_share: float = 0.35
    access_quantile: float = 0.5
    highway_access_km: float = 2.0
    max_land_cost_quantile: float = 0.9
    land_cost_weight: float = 0.3
    competitor_weight: float = 0.15
    top_k: int = 10
    service_minutes: float = 4.0
    target_utilisation: float = 0.65


@dataclass(frozen=True)
class Projection:
    """Equirectangular projection to local kilometres around a reference point (fine at city scale)."""

    lat0: float
    lon0: float

    def to_xy(self, lat: Any, lon: Any) -> np.ndarray:
        lat = np.asarray(lat, dtype=float)
        lon = np.asarray(lon, dtype=float)
        x = (lon - self.lon0) * KM_PER_DEG_LON_EQ * np.cos(np.radians(self.lat0))
        y = (lat - self.lat0) * KM_PER_DEG_LAT
        return np.column_stack([x, y])

    def to_latlon(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xy = np.asarray(xy, dtype=float).reshape(-1, 2)
        lat = self.lat0 + xy[:, 1] / KM_PER_DEG_LAT
        lon = self.lon0 + xy[:, 0] / (KM_PER_DEG_LON_EQ * np.cos(np.radians(self.lat0)))
        return lat, lon


@dataclass
class SiteModel:
    """A fitted site-selection model: grid densities, gap points, candidates, top-k and station advice."""

    config: SiteConfig
    projection: Projection
    origin: tuple[float, float]
    shape: tuple[int, int]
    density: dict[str, np.ndarray]
    gap_xy: np.ndarray
    gap_w: np.ndarray
    station_xy: np.ndarray
    land_xy: np.ndarray
    land_cost: np.ndarray
    candidates: pd.DataFrame
    top: pd.DataFrame
    baseline: pd.DataFrame
    station_suggestions: pd.DataFrame
    metrics: dict[str, float] = field(default_factory=dict)

    # --------------------------------------------------------------- scoring
    def score_many(self, lat: Any, lon: Any) -> pd.DataFrame:
        """Score arbitrary locations: gap demand they would capture and a 0–1 desirability score.

        Missing coordinates give a score of 0 (nothing can be said about them).
        """
        lat = pd.to_numeric(pd.Series(np.atleast_1d(lat)), errors="coerce").to_numpy(float)
        lon = pd.to_numeric(pd.Series(np.atleast_1d(lon)), errors="coerce").to_numpy(float)
        ok = np.isfinite(lat) & np.isfinite(lon)
        captured = np.zeros(len(lat))
        land = np.full(len(lat), np.nan)
        if ok.any():
            xy = self.projection.to_xy(lat[ok], lon[ok])
            captured[ok] = _weight_within(xy, self.gap_xy, self.gap_w, self.config.serve_radius_km)
            land[ok] = _idw(self.land_xy, self.land_cost, xy)
        best = max(float(self.metrics.get("top1_captured_weekly_fills", 0.0)), 1e-9)
        score = np.clip(captured / best, 0.0, 1.0)
        return pd.DataFrame({"lat": lat, "lon": lon, "captured_weekly_fills": captured,
                             "land_cost_index": land, "score": score})

    # --------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """Write the model (a file, or ``model.pkl`` inside a directory)."""
        return save_artifact(self, path)


def load(path: str | Path) -> SiteModel:
    """Load a :class:`SiteModel` written by :meth:`SiteModel.save`."""
    return load_artifact(path, SiteModel)


# ------------------------------------------------------------------- demand points
def demand_points(members: pd.DataFrame, config: SiteConfig) -> pd.DataFrame:
    """Home, work and commute-route points of every member with their weekly-fill weights.

    Members without a workplace contribute their home only; members without a home are dropped.
    """
    m = members.copy()
    for c in ("home_lat", "home_lon", "work_lat", "work_lon"):
        m[c] = pd.to_numeric(m[c], errors="coerce") if c in m else np.nan
    m = m[m["home_lat"].notna() & m["home_lon"].notna()]
    w = pd.to_numeric(m.get("fills_per_week", pd.Series(1.0, index=m.index)), errors="coerce")
    w = w.fillna(w.median() if w.notna().any() else 1.0).clip(lower=0.0).to_numpy(float)
    has_work = (m["work_lat"].notna() & m["work_lon"].notna()).to_numpy()
    hl, hn = m["home_lat"].to_numpy(float), m["home_lon"].to_numpy(float)
    wl = np.where(has_work, m["work_lat"].to_numpy(float), hl)
    wn = np.where(has_work, m["work_lon"].to_numpy(float), hn)
    home_w = np.where(has_work, config.home_share, 1.0) * w
    work_w = np.where(has_work, config.work_share, 0.0) * w
    route_total = np.where(has_work, 1.0 - config.home_share - config.work_share, 0.0) * w
    parts = [pd.DataFrame({"lat": hl, "lon": hn, "w": home_w, "kind": "home"}),
             pd.DataFrame({"lat": wl, "lon": wn, "w": work_w, "kind": "work"})]
    n = max(int(config.route_points), 0)
    for i in range(n):
        t = (i + 1) / (n + 1)
        parts.append(pd.DataFrame({"lat": hl + t * (wl - hl), "lon": hn + t * (wn - hn),
                                   "w": route_total / max(n, 1), "kind": "route"}))
    out = pd.concat(parts, ignore_index=True)
    return out[out["w"] > 0].reset_index(drop=True)


def active_members(members: pd.DataFrame, cutoff: Any | None) -> pd.DataFrame:
    """Members who had joined and not churned before ``cutoff`` (point in time); all when cutoff is None."""
    if cutoff is None:
        return members
    cut = pd.Timestamp(cutoff)
    m = members
    keep = pd.Series(True, index=m.index)
    if "joined" in m:
        joined = _naive_ts(m["joined"])
        keep &= joined.isna() | (joined < cut)
    if "churn_date" in m:
        churned = _naive_ts(m["churn_date"])
        keep &= churned.isna() | (churned >= cut)
    return m[keep]


# ------------------------------------------------------------------- geometry helpers
def _naive_ts(s: pd.Series) -> pd.Series:
    ts = pd.to_datetime(s, errors="coerce", utc=True)
    return ts.dt.tz_localize(None)


def _aggregate(xy: np.ndarray, w: np.ndarray, res_km: float) -> tuple[np.ndarray, np.ndarray]:
    """Sum weights of points falling in the same ``res_km`` cell; returns cell centres and weights."""
    if len(xy) == 0:
        return np.zeros((0, 2)), np.zeros(0)
    key = np.floor(xy / res_km).astype(np.int64)
    uniq, inv = np.unique(key, axis=0, return_inverse=True)
    wsum = np.bincount(inv.ravel(), weights=w, minlength=len(uniq))
    return (uniq + 0.5) * res_km, wsum


def _coverage(centres: np.ndarray, pts: np.ndarray, radius: float) -> Any:
    """Sparse 0/1 matrix (centres × points): point within ``radius`` of the centre."""
    from scipy.sparse import csr_matrix

    if len(pts) == 0 or len(centres) == 0:
        return csr_matrix((len(centres), len(pts)))
    lists = cKDTree(pts).query_ball_point(centres, r=radius, return_sorted=False)
    lens = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    indptr = np.concatenate([[0], np.cumsum(lens)])
    indices = np.concatenate([np.asarray(x, dtype=np.int64) for x in lists]) if indptr[-1] else np.zeros(0, int)
    return csr_matrix((np.ones(len(indices)), indices, indptr), shape=(len(centres), len(pts)))


def _weight_within(centres: np.ndarray, pts: np.ndarray, w: np.ndarray, radius: float) -> np.ndarray:
    if len(pts) == 0 or len(centres) == 0:
        return np.zeros(len(centres))
    return np.asarray(_coverage(centres, pts, radius) @ w, dtype=float)


def _nearest_km(pts: np.ndarray, targets: np.ndarray) -> np.ndarray:
    if len(targets) == 0:
        return np.full(len(pts), np.inf)
    d, _ = cKDTree(targets).query(pts, k=1)
    return np.asarray(d, dtype=float)


def _idw(xy_known: np.ndarray, values: np.ndarray, xy: np.ndarray, k: int = 6) -> np.ndarray:
    """Inverse-distance-weighted interpolation (land cost between stations)."""
    if len(xy_known) == 0:
        return np.ones(len(xy))
    k = min(k, len(xy_known))
    d, idx = cKDTree(xy_known).query(xy, k=k)
    d = np.asarray(d, dtype=float).reshape(len(xy), k)
    idx = np.asarray(idx).reshape(len(xy), k)
    wts = 1.0 / np.maximum(d, 0.25) ** 2
    return (wts * values[idx]).sum(axis=1) / wts.sum(axis=1)


# ------------------------------------------------------------------- fit
def fit(
    *,
    stations: pd.DataFrame,
    members: pd.DataFrame,
    competitors: pd.DataFrame | None = None,
    transactions: pd.DataFrame | None = None,
    vehicles: pd.DataFrame | None = None,
    cards: pd.DataFrame | None = None,
    station_sales: pd.DataFrame | None = None,
    station_hourly: pd.DataFrame | None = None,
    cutoff: Any | None = None,
    config: SiteConfig | None = None,
) -> SiteModel:
    """Fit the site-selection model on the network as it was before ``cutoff``.

    Required: ``stations`` (station_id, lat, lon) and ``members`` (home_lat, home_lon; work_lat/work_lon and
    fills_per_week optional). Optional inputs refine the result: ``competitors`` (lat, lon) discount sites
    that competitors already cover; ``transactions`` (+ ``cards``/``vehicles``), ``station_sales`` and
    ``station_hourly`` drive the nozzle and product-mix suggestions for existing stations.
    """
    cfg = config or SiteConfig()
    st = stations.copy()
    if cutoff is not None and "opened" in st:
        opened = _naive_ts(st["opened"])
        st = st[opened.isna() | (opened < pd.Timestamp(cutoff))]
    st = st[pd.to_numeric(st["lat"], errors="coerce").notna() & pd.to_numeric(st["lon"], errors="coerce").notna()]
    pts = demand_points(active_members(members, cutoff), cfg)
    if pts.empty:
        raise ValueError("site selection needs members with home coordinates")
    proj = Projection(lat0=float(pts["lat"].mean()), lon0=float(pts["lon"].mean()))
    pxy = proj.to_xy(pts["lat"], pts["lon"])
    pw = pts["w"].to_numpy(float)
    sxy = proj.to_xy(st["lat"], st["lon"]) if len(st) else np.zeros((0, 2))
    cxy = np.zeros((0, 2))
    if competitors is not None and len(competitors):
        c = competitors.dropna(subset=["lat", "lon"])
        cxy = proj.to_xy(c["lat"], c["lon"])

    # Grid over all demand and stations, one cell margin.
    allxy = np.vstack([pxy, sxy]) if len(sxy) else pxy
    lo = allxy.min(axis=0) - cfg.cell_km
    hi = allxy.max(axis=0) + cfg.cell_km
    nx = max(int(np.ceil((hi[0] - lo[0]) / cfg.cell_km)), 1)
    ny = max(int(np.ceil((hi[1] - lo[1]) / cfg.cell_km)), 1)
    # Keep the grid bounded on very spread networks (the heat map and the candidate scan stay cheap).
    scale = max(1.0, np.sqrt(nx * ny / 250_000))
    cell = cfg.cell_km * scale
    nx, ny = max(int(np.ceil((hi[0] - lo[0]) / cell)), 1), max(int(np.ceil((hi[1] - lo[1]) / cell)), 1)
    edges_x = lo[0] + cell * np.arange(nx + 1)
    edges_y = lo[1] + cell * np.arange(ny + 1)
    density: dict[str, np.ndarray] = {}
    for kind in ("home", "work", "route"):
        sel = (pts["kind"] == kind).to_numpy()
        h, _, _ = np.histogram2d(pxy[sel, 0], pxy[sel, 1], bins=[edges_x, edges_y], weights=pw[sel])
        density[kind] = h.T  # rows = y
    density["total"] = density["home"] + density["work"] + density["route"]

    # Refuelling gaps: demand farther than the service radius from any of our stations. Coverage works on
    # demand aggregated to AGG_KM cells (exact enough at a 3 km radius, and bounded in size).
    agg_xy, agg_w = _aggregate(pxy, pw, AGG_KM)
    d_own = _nearest_km(agg_xy, sxy)
    gap = d_own > cfg.serve_radius_km
    gap_xy, gap_w = agg_xy[gap], agg_w[gap]
    density["gap"] = np.histogram2d(gap_xy[:, 0], gap_xy[:, 1], bins=[edges_x, edges_y], weights=gap_w)[0].T

    # Land cost surface from the stations' index.
    if "land_cost_index" in st and len(st):
        lc = pd.to_numeric(st["land_cost_index"], errors="coerce")
        land_xy, land_v = sxy[lc.notna().to_numpy()], lc.dropna().to_numpy(float)
    else:
        land_xy, land_v = np.zeros((0, 2)), np.zeros(0)

    # Candidate cells: any cell with demand within reach.
    cx = (edges_x[:-1] + edges_x[1:]) / 2
    cy = (edges_y[:-1] + edges_y[1:]) / 2
    gx, gy = np.meshgrid(cx, cy)
    cell_xy = np.column_stack([gx.ravel(), gy.ravel()])
    route_flat = density["route"].ravel()
    total_flat = density["total"].ravel()
    d_any, _ = cKDTree(agg_xy).query(cell_xy, k=1, distance_upper_bound=cfg.serve_radius_km)
    near_any = np.isfinite(d_any)
    cand_xy = cell_xy[near_any]
    route_c = route_flat[near_any]
    total_c = total_flat[near_any]
    gap_c = _weight_within(cand_xy, gap_xy, gap_w, cfg.serve_radius_km)
    dist_own = _nearest_km(cand_xy, sxy)
    dist_comp = _nearest_km(cand_xy, cxy)
    comp_n = (np.array([len(ix) for ix in cKDTree(cxy).query_ball_point(cand_xy, r=cfg.serve_radius_km)])
              if len(cxy) else np.zeros(len(cand_xy), dtype=int))
    land_c = _idw(land_xy, land_v, cand_xy) if len(land_v) else np.ones(len(cand_xy))
    nonzero_route = route_flat[route_flat > 0]
    access_thr = float(np.quantile(nonzero_route, cfg.access_quantile)) if len(nonzero_route) else 0.0
    hw_xy = np.zeros((0, 2))
    if "station_type" in st and len(st):
        hw = (st["station_type"].astype(str) == "highway").to_numpy()
        hw_xy = sxy[hw]
    near_highway = _nearest_km(cand_xy, hw_xy) <= cfg.highway_access_km if len(hw_xy) else np.zeros(len(cand_xy), bool)
    on_corridor = route_c >= access_thr
    access_ok = on_corridor | near_highway
    land_cap = float(np.quantile(land_v, cfg.max_land_cost_quantile)) if len(land_v) else np.inf
    land_ok = land_c <= land_cap
    dist_ok = dist_own >= cfg.min_distance_km
    feasible = access_ok & land_ok & dist_ok
    lat_c, lon_c = proj.to_latlon(cand_xy)
    land_norm = land_c / max(float(np.nanmax(land_v)) if len(land_v) else 1.0, 1e-9)
    candidates = pd.DataFrame({
        "lat": lat_c, "lon": lon_c, "x_km": cand_xy[:, 0], "y_km": cand_xy[:, 1],
        "demand_weekly_fills": total_c, "route_weekly_fills": route_c, "gap_weekly_fills": gap_c,
        "dist_own_km": dist_own, "dist_competitor_km": dist_comp, "competitors_nearby": comp_n,
        "land_cost_index": land_c, "on_corridor": on_corridor, "near_highway": near_highway,
        "access_ok": access_ok, "land_ok": land_ok, "distance_ok": dist_ok, "feasible": feasible,
    })
    penalty = (1.0 - cfg.land_cost_weight * np.clip(land_norm, 0, 1)) / (1.0 + cfg.competitor_weight * comp_n)
    top = _greedy_cover(candidates, penalty, gap_xy, gap_w, cfg)
    baseline = candidates.sort_values("demand_weekly_fills", ascending=False, kind="mergesort").head(cfg.top_k)
    baseline = baseline.assign(rank=np.arange(1, len(baseline) + 1))

    total_w = float(agg_w.sum())
    top_cap = captured_unserved(top[["x_km", "y_km"]].to_numpy(), gap_xy, gap_w, cfg.serve_radius_km)
    base_cap = captured_unserved(baseline[["x_km", "y_km"]].to_numpy(), gap_xy, gap_w, cfg.serve_radius_km)
    suggestions = station_suggestions(stations=st, transactions=transactions, vehicles=vehicles, cards=cards,
                                      competitors=competitors, station_sales=station_sales,
                                      station_hourly=station_hourly, config=cfg)
    metrics = {
        "members": float(len(members)),
        "demand_weekly_fills": total_w,
        "unserved_weekly_fills": float(gap_w.sum()),
        "unserved_share": float(gap_w.sum() / total_w) if total_w else 0.0,
        "candidates": float(len(candidates)),
        "feasible_candidates": float(feasible.sum()),
        "topk_captured_unserved": top_cap,
        "baseline_captured_unserved": base_cap,
        "topk_vs_baseline_ratio": float(top_cap / base_cap) if base_cap > 0 else float("inf") if top_cap else 1.0,
        "top1_captured_weekly_fills": float(top["captured_weekly_fills"].iloc[0]) if len(top) else 0.0,
        "stations_needing_nozzles": float((suggestions.get("nozzle_change", pd.Series(dtype=float)) > 0).sum()),
    }
    return SiteModel(config=cfg, projection=proj, origin=(float(lo[0]), float(lo[1])), shape=(ny, nx),
                     density=density, gap_xy=gap_xy, gap_w=gap_w, station_xy=sxy, land_xy=land_xy,
                     land_cost=land_v, candidates=candidates, top=top, baseline=baseline,
                     station_suggestions=suggestions, metrics=metrics)


def captured_unserved(sites_xy: np.ndarray, gap_xy: np.ndarray, gap_w: np.ndarray, radius_km: float) -> float:
    """Gap demand (weekly fills) within ``radius_km`` of at least one of ``sites_xy`` (each counted once)."""
    if len(sites_xy) == 0 or len(gap_xy) == 0:
        return 0.0
    covered = np.zeros(len(gap_xy), dtype=bool)
    for idx in cKDTree(gap_xy).query_ball_point(np.asarray(sites_xy, float), r=radius_km):
        covered[idx] = True
    return float(gap_w[covered].sum())


def _greedy_cover(cands: pd.DataFrame, penalty: np.ndarray, gap_xy: np.ndarray, gap_w: np.ndarray,
                  cfg: SiteConfig) -> pd.DataFrame:
    feas = np.flatnonzero(cands["feasible"].to_numpy())
    cols = list(cands.columns) + ["captured_weekly_fills", "score", "rank", "reasons"]
    if len(feas) == 0 or len(gap_xy) == 0:
        return pd.DataFrame(columns=cols)
    cxy = cands[["x_km", "y_km"]].to_numpy()[feas]
    cover = _coverage(cxy, gap_xy, cfg.serve_radius_km)
    remaining = gap_w.copy()
    chosen_xy: list[np.ndarray] = []
    rows = []
    pen = penalty[feas]
    blocked = np.zeros(len(feas), dtype=bool)
    for rank in range(1, cfg.top_k + 1):
        gains = np.asarray(cover @ remaining, dtype=float)
        score = np.where(blocked, -1.0, gains * pen)
        j = int(np.argmax(score))
        if score[j] <= 0:
            break
        captured = float(gains[j])
        remaining[cover.indices[cover.indptr[j]:cover.indptr[j + 1]]] = 0.0
        chosen_xy.append(cxy[j])
        # New sites also respect the minimum distance between each other.
        blocked |= np.hypot(cxy[:, 0] - cxy[j, 0], cxy[:, 1] - cxy[j, 1]) < cfg.min_distance_km
        row = cands.iloc[feas[j]].to_dict()
        row.update(captured_weekly_fills=captured, score=float(score[j]), rank=rank)
        row["reasons"] = _reasons(row, cfg)
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def _reasons(row: dict[str, Any], cfg: SiteConfig) -> str:
    parts = [f"captures {row['captured_weekly_fills']:.0f} unserved fills/week within {cfg.serve_radius_km:g} km"]
    if row.get("on_corridor"):
        parts.append(f"on a commuter corridor ({row['route_weekly_fills']:.1f} commute fills/week through the cell)")
    if row.get("near_highway"):
        parts.append("highway access")
    parts.append(f"nearest own station {row['dist_own_km']:.1f} km")
    if np.isfinite(row.get("dist_competitor_km", np.inf)):
        parts.append(f"{int(row['competitors_nearby'])} competitor(s) within {cfg.serve_radius_km:g} km, "
                     f"nearest {row['dist_competitor_km']:.1f} km")
    parts.append(f"land cost index {row['land_cost_index']:.2f}")
    return "; ".join(parts)


# ------------------------------------------------------------------- existing stations
def station_suggestions(
    *,
    stations: pd.DataFrame,
    transactions: pd.DataFrame | None,
    vehicles: pd.DataFrame | None = None,
    cards: pd.DataFrame | None = None,
    competitors: pd.DataFrame | None = None,
    station_sales: pd.DataFrame | None = None,
    station_hourly: pd.DataFrame | None = None,
    config: SiteConfig | None = None,
) -> pd.DataFrame:
    """Nozzle counts and product mix per existing station from the traffic it serves.

    Nozzles: busy-hour litres (95th percentile of the station's hourly litres, all sales; card fills only
    when ``station_hourly`` is absent) × the product's share of litres ÷ the average fill size of that
    product gives busy-hour fills per product; × ``service_minutes`` ÷ (60 × ``target_utilisation``) gives
    the nozzles needed (at least 1 where the product sells; half a nozzle of slack where no competitor
    within 3 km absorbs queues). Product mix: the fuel needs of the vehicles whose cards fill there (fuel
    type weighted by tank size) against the litres share per product — a product whose need share exceeds
    its sales share by 10 points is flagged as under-served.
    """
    cfg = config or SiteConfig()
    base = stations[["station_id"]].copy()
    for p in FUEL_PRODUCTS:
        col = f"nozzles_{p}"
        base[col] = pd.to_numeric(stations[col], errors="coerce").fillna(0).astype(int) if col in stations else 0
    base["competitors_3km"] = (pd.to_numeric(stations["competitors_3km"], errors="coerce").fillna(0).to_numpy()
                               if "competitors_3km" in stations else 0)
    if competitors is not None and "station_id" in competitors and "distance_km" in competitors:
        near = competitors[pd.to_numeric(competitors["distance_km"], errors="coerce") <= 3.0]
        counts = near.groupby("station_id").size()
        if "competitors_3km" not in stations:
            base["competitors_3km"] = base["station_id"].map(counts).fillna(0).astype(int)
    tx = transactions if transactions is not None else pd.DataFrame()
    if len(tx) and "product" in tx:
        if "status" in tx:
            tx = tx[tx["status"].astype(str).isin(["captured", "refunded"]) | tx["status"].isna()]
        tx = tx[tx["product"].astype(str).isin(FUEL_PRODUCTS)].assign(product=lambda d: d["product"].astype(str))
    else:
        tx = pd.DataFrame(columns=["station_id", "product", "ts", "litres", "card_id"])
    litres_tx = pd.to_numeric(tx.get("litres", pd.Series(np.nan, index=tx.index)), errors="coerce")
    avg_fill = litres_tx.groupby(tx["product"]).mean().reindex(list(FUEL_PRODUCTS)).fillna(35.0)

    # Busy-hour litres per station.
    if station_hourly is not None and len(station_hourly):
        busy_l = pd.to_numeric(station_hourly["litres"], errors="coerce").groupby(
            station_hourly["station_id"]).quantile(0.95)
    elif len(tx):
        hour = pd.to_datetime(tx["ts"], errors="coerce", utc=True).dt.floor("h")
        busy_l = litres_tx.groupby([tx["station_id"], hour]).sum().groupby(level=0).quantile(0.95)
    else:
        busy_l = pd.Series(dtype=float)
    # Product shares of litres.
    if station_sales is not None and len(station_sales):
        ss = station_sales[station_sales["product"].astype(str).isin(FUEL_PRODUCTS)]
        mix = pd.to_numeric(ss["litres"], errors="coerce").groupby([ss["station_id"], ss["product"].astype(str)]).sum()
    else:
        mix = litres_tx.groupby([tx["station_id"], tx["product"]]).sum()
    mix = mix.unstack().reindex(columns=list(FUEL_PRODUCTS)).fillna(0.0) if len(mix) else pd.DataFrame(
        columns=list(FUEL_PRODUCTS), dtype=float)
    mix_share = mix.div(mix.sum(axis=1).replace(0, np.nan), axis=0).fillna(0.0)

    veh_share = None
    if len(tx) and vehicles is not None and "fuel_type" in vehicles and cards is not None and "vehicle_id" in cards:
        vcols = ["vehicle_id", "fuel_type"] + (["tank_capacity_l"] if "tank_capacity_l" in vehicles else [])
        cv = cards[["card_id", "vehicle_id"]].dropna().merge(vehicles[vcols], on="vehicle_id")
        txv = tx[["station_id", "card_id"]].drop_duplicates().merge(cv, on="card_id")
        if len(txv):
            ft = txv["fuel_type"].astype(str).str.lower().replace({"gasoline": "92", "petrol": "92", "0#": "diesel"})
            # Litres need of the vehicles served: weighted by tank size (a truck needs more than a car).
            wt = pd.to_numeric(txv.get("tank_capacity_l", pd.Series(1.0, index=txv.index)), errors="coerce")
            vs = txv.assign(ft=ft, wt=wt.fillna(wt.median() if wt.notna().any() else 1.0)).groupby(
                ["station_id", "ft"])["wt"].sum().unstack("ft")
            veh_share = vs.reindex(columns=list(FUEL_PRODUCTS)).fillna(0.0)
            veh_share = veh_share.div(veh_share.sum(axis=1).replace(0, np.nan), axis=0).fillna(0.0)

    rows = []
    for s in base.itertuples(index=False):
        sid = s.station_id
        advice: list[str] = []
        rec: dict[str, Any] = {"station_id": sid}
        comp = int(s.competitors_3km)
        busy = float(busy_l.get(sid, 0.0)) if len(busy_l) else 0.0
        total_now = total_new = 0
        for p in FUEL_PRODUCTS:
            now = int(getattr(s, f"nozzles_{p}"))
            share = float(mix_share.loc[sid, p]) if sid in mix_share.index else 0.0
            fills = busy * share / float(avg_fill[p]) if busy > 0 else 0.0
            need = fills * cfg.service_minutes / (60.0 * cfg.target_utilisation)
            if comp == 0 and need > 0.5:
                need += 0.5  # nobody nearby absorbs the queue: keep slack
            sug = max(int(np.ceil(need)), 1) if share > 0 else 0
            rec[f"busy_hour_fills_{p}"] = round(fills, 2)
            rec[f"sales_share_{p}"] = round(share, 4)
            rec[f"nozzles_{p}"] = now
            rec[f"suggested_nozzles_{p}"] = sug
            total_now += now
            total_new += sug
            if sug > now:
                advice.append(f"add {sug - now} {p} nozzle(s) (busy hour ≈{fills:.0f} fills)")
            elif sug < now - 1:
                advice.append(f"{now - sug} {p} nozzle(s) spare at the busy hour")
            if veh_share is not None and sid in veh_share.index:
                vsh = float(veh_share.loc[sid, p])
                rec[f"vehicle_share_{p}"] = round(vsh, 4)
                if vsh - share > 0.10:
                    advice.append(f"{p}: {vsh:.0%} of member vehicles' fuel need vs {share:.0%} of litres — promote it")
                if now == 0 and vsh >= 0.15:
                    advice.append(f"no {p} nozzle but {vsh:.0%} of member vehicles need it — add the product")
        if comp >= 3:
            advice.append(f"dense competition ({comp} within 3 km): keep the full product range")
        elif comp == 0:
            advice.append("no competitor within 3 km: the station carries its area's demand alone")
        rec.update(competitors_3km=comp, busy_hour_litres=round(busy, 1), current_nozzles=total_now,
                   suggested_nozzles=total_new, nozzle_change=total_new - total_now,
                   advice="; ".join(advice) or "no change")
        rows.append(rec)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------- reporting
def plot_heatmap(model: SiteModel, path: str | Path, *, stations: pd.DataFrame | None = None) -> Path:
    """Write a PNG heat map: member demand (homes + work + routes), gaps, our stations and the top-k sites."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.ndimage import gaussian_filter

    ny, nx = model.shape
    cell = (model.candidates["x_km"].diff().abs().replace(0, np.nan).min()
            if len(model.candidates) > 1 else model.config.cell_km)
    cell = float(cell) if np.isfinite(cell) else model.config.cell_km
    extent = (model.origin[0], model.origin[0] + nx * cell, model.origin[1], model.origin[1] + ny * cell)
    fig, axes = plt.subplots(1, 2, figsize=(14, 6.5))
    gap_title = f"Refuelling gaps (> {model.config.serve_radius_km:g} km from our stations)"
    for ax, key, title in ((axes[0], "total", "Member demand (homes, workplaces, commutes)"),
                           (axes[1], "gap", gap_title)):
        # Smoothed for reading (a 1-cell Gaussian); the model itself works on the raw points.
        img = gaussian_filter(model.density[key], sigma=1.0)
        im = ax.imshow(np.log1p(img), origin="lower", extent=extent, cmap="magma", aspect="equal")
        fig.colorbar(im, ax=ax, fraction=0.046, label="log(1 + weekly fills per cell)")
        if len(model.station_xy):
            ax.scatter(model.station_xy[:, 0], model.station_xy[:, 1], s=12, c="cyan", marker="s",
                       label="our stations", edgecolors="none")
        if len(model.baseline):
            ax.scatter(model.baseline["x_km"], model.baseline["y_km"], s=60, facecolors="none",
                       edgecolors="white", label="density-only baseline")
        if len(model.top):
            ax.scatter(model.top["x_km"], model.top["y_km"], s=90, c="lime", marker="*", label="recommended")
            for _, r in model.top.iterrows():
                ax.annotate(str(int(r["rank"])), (r["x_km"], r["y_km"]), color="lime", fontsize=8,
                            xytext=(3, 3), textcoords="offset points")
        ax.set_title(title)
        ax.set_xlabel("km east")
        ax.set_ylabel("km north")
    axes[1].legend(loc="upper right", fontsize=8)
    m = model.metrics
    fig.suptitle(f"Top-{model.config.top_k} sites capture {m['topk_captured_unserved']:.0f} unserved fills/week "
                 f"vs {m['baseline_captured_unserved']:.0f} for the density-only baseline")
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def params_of(model: SiteModel) -> dict[str, Any]:
    """The configuration as plain JSON-able parameters (for the registry)."""
    return asdict(model.config)
