"""Site selection: gaps, constraints, greedy coverage vs the density-only baseline, station suggestions."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from models import sites
from tests.test_train_fixtures import sim_dir


def _toy():
    """Two towns: one served by our station, one (dense, far away) not; plus a cheap and a dear area."""
    rng = np.random.default_rng(0)
    st = pd.DataFrame({"station_id": ["S1", "S2"], "lat": [30.0, 30.0], "lon": [120.0, 120.5],
                       "station_type": ["urban", "highway"], "land_cost_index": [1.0, 3.0],
                       "nozzles_92": [2, 2], "nozzles_95": [1, 1], "nozzles_98": [0, 0], "nozzles_diesel": [1, 1]})
    n = 400
    town = np.where(np.arange(n) < 150, 0, 1)  # 150 near S1, 250 in an unserved town at (30.3, 120.2)
    lat = np.where(town == 0, 30.0, 30.3) + rng.normal(0, 0.01, n)
    lon = np.where(town == 0, 120.0, 120.2) + rng.normal(0, 0.01, n)
    mem = pd.DataFrame({"member_id": [f"m{i}" for i in range(n)], "home_lat": lat, "home_lon": lon,
                        "work_lat": lat + 0.005, "work_lon": lon + 0.005, "fills_per_week": 1.0,
                        "joined": "2025-01-01"})
    return st, mem


def test_greedy_finds_the_unserved_town():
    st, mem = _toy()
    m = sites.fit(stations=st, members=mem, config=sites.SiteConfig(top_k=3, access_quantile=0.0,
                                                                     max_land_cost_quantile=1.0))
    assert m.metrics["unserved_share"] > 0.5
    top = m.top.iloc[0]
    assert abs(top["lat"] - 30.3) < 0.03 and abs(top["lon"] - 120.2) < 0.03
    assert top["captured_weekly_fills"] > 200
    assert "unserved fills/week" in top["reasons"] and "land cost" in top["reasons"]
    # top-k respect the minimum distance to our stations and to each other
    assert (m.top["dist_own_km"] >= m.config.min_distance_km).all()
    xy = m.top[["x_km", "y_km"]].to_numpy()
    d = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    assert (d[np.triu_indices(len(xy), 1)] >= m.config.min_distance_km).all()


def test_land_cost_cap_excludes_dear_cells():
    st, mem = _toy()
    m = sites.fit(stations=st, members=mem, config=sites.SiteConfig(top_k=3, access_quantile=0.0,
                                                                     max_land_cost_quantile=0.0))
    cap = float(np.quantile(st["land_cost_index"], 0.0))
    assert (m.top["land_cost_index"] <= cap + 1e-9).all()
    assert (~m.candidates.loc[m.candidates["land_cost_index"] > cap + 1e-9, "feasible"]).all()


def test_point_in_time_members_and_stations():
    st, mem = _toy()
    mem = mem.copy()
    mem.loc[150:, "joined"] = "2030-01-01"  # the unserved town joins later
    m = sites.fit(stations=st, members=mem, cutoff="2026-01-01",
                  config=sites.SiteConfig(top_k=2, access_quantile=0.0))
    assert m.metrics["demand_weekly_fills"] < 200
    assert m.metrics["unserved_share"] < 0.2


def test_scores_in_range_and_missing_coordinates():
    st, mem = _toy()
    m = sites.fit(stations=st, members=mem, config=sites.SiteConfig(top_k=2, access_quantile=0.0))
    out = m.score_many([30.3, np.nan, 30.0], [120.2, 120.0, None])
    assert out["score"].between(0, 1).all()
    assert out["score"].iloc[0] > 0.5 and out["score"].iloc[1] == 0 and out["score"].iloc[2] == 0


@lru_cache(maxsize=1)
def _sim_model():
    d = sim_dir()
    t = {n: pd.read_parquet(d / f"{n}.parquet") for n in ("stations", "members", "competitors", "transactions",
                                                           "vehicles", "cards", "station_sales", "station_hourly")}
    return sites.fit(stations=t["stations"], members=t["members"], competitors=t["competitors"],
                     transactions=t["transactions"], vehicles=t["vehicles"], cards=t["cards"],
                     station_sales=t["station_sales"], station_hourly=t["station_hourly"]), t


def test_topk_beats_density_only_baseline_on_the_simulation():
    m, _ = _sim_model()
    assert len(m.top) == m.config.top_k and len(m.baseline) == m.config.top_k
    assert m.metrics["topk_captured_unserved"] > m.metrics["baseline_captured_unserved"], m.metrics
    xy = m.top[["x_km", "y_km"]].to_numpy()
    assert m.metrics["topk_captured_unserved"] == sites.captured_unserved(xy, m.gap_xy, m.gap_w,
                                                                         m.config.serve_radius_km)


def test_station_suggestions_cover_every_station():
    m, t = _sim_model()
    s = m.station_suggestions
    assert set(s["station_id"]) == set(t["stations"]["station_id"])
    for p in sites.FUEL_PRODUCTS:
        sells = s[f"sales_share_{p}"] > 0
        assert (s.loc[sells, f"suggested_nozzles_{p}"] >= 1).all()
    assert s["advice"].str.len().gt(0).all()
    assert "vehicle_share_92" in s.columns


def test_heatmap_png(tmp_path):
    m, t = _sim_model()
    p = sites.plot_heatmap(m, tmp_path / "heat.png")
    assert p.stat().st_size > 20_000


def test_round_trip(tmp_path):
    st, mem = _toy()
    m = sites.fit(stations=st, members=mem, config=sites.SiteConfig(top_k=2, access_quantile=0.0))
    m.save(tmp_path)
    m2 = sites.load(tmp_path)
    pd.testing.assert_frame_equal(m.top, m2.top)
