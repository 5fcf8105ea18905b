"""The region: cities, highways, our stations, competitors and tanks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

FUELS: tuple[str, ...] = ("92", "95", "98", "diesel")
PRODUCTS: tuple[str, ...] = ("92", "95", "98", "diesel", "shop", "wash")
STATION_TYPES: tuple[str, ...] = ("urban", "highway", "rural")
KM_PER_DEG_LAT = 111.2

# name, region (province), lat, lon, radius_km, weight (population share), plate prefix
CITIES: tuple[tuple[str, str, float, float, float, float], ...] = (
    ("Shanghai", "Shanghai", 31.23, 121.47, 16.0, 0.30),
    ("Suzhou", "Jiangsu", 31.30, 120.62, 9.0, 0.13),
    ("Wuxi", "Jiangsu", 31.49, 120.31, 7.0, 0.08),
    ("Changzhou", "Jiangsu", 31.81, 119.97, 6.0, 0.06),
    ("Nanjing", "Jiangsu", 32.06, 118.80, 10.0, 0.12),
    ("Hangzhou", "Zhejiang", 30.27, 120.15, 11.0, 0.15),
    ("Jiaxing", "Zhejiang", 30.75, 120.76, 6.0, 0.06),
    ("Ningbo", "Zhejiang", 29.87, 121.54, 8.0, 0.10),
)
REGIONS: tuple[str, ...] = ("Shanghai", "Jiangsu", "Zhejiang")
PLATE_PREFIX = {"Shanghai": "沪", "Jiangsu": "苏", "Zhejiang": "浙"}
# Expressways as city-index pairs (G2, G42, G60, G92, G15...).
HIGHWAYS: tuple[tuple[int, int], ...] = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 6), (6, 5), (5, 7), (0, 7), (1, 6), (5, 4))
BBOX = (29.6, 32.4, 118.5, 122.0)  # lat_min, lat_max, lon_min, lon_max
BRANDS: tuple[str, ...] = ("Sinopec", "PetroChina", "Shell", "CNOOC", "Private")


def haversine_km(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    """Great-circle distance in km (vectorised)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp = p2 - p1
    dl = np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def to_xy(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Local equirectangular projection in km (good enough at this scale for neighbour search)."""
    return np.column_stack([np.asarray(lat) * KM_PER_DEG_LAT,
                            np.asarray(lon) * KM_PER_DEG_LAT * np.cos(np.radians(31.0))])


def city_arrays() -> dict[str, np.ndarray]:
    """The cities as arrays."""
    return {
        "name": np.array([c[0] for c in CITIES]), "region": np.array([c[1] for c in CITIES]),
        "lat": np.array([c[2] for c in CITIES]), "lon": np.array([c[3] for c in CITIES]),
        "radius": np.array([c[4] for c in CITIES]), "weight": np.array([c[5] for c in CITIES]),
    }


def scatter(rng: np.random.Generator, lat: np.ndarray, lon: np.ndarray, sd_km: np.ndarray) -> tuple:
    """Points normally scattered around centres with an sd in km."""
    n = len(lat)
    dlat = rng.normal(0, 1, n) * sd_km / KM_PER_DEG_LAT
    dlon = rng.normal(0, 1, n) * sd_km / (KM_PER_DEG_LAT * np.cos(np.radians(31.0)))
    return lat + dlat, lon + dlon


def nearest_city(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Index of the nearest city centre."""
    c = city_arrays()
    _, idx = cKDTree(to_xy(c["lat"], c["lon"])).query(to_xy(lat, lon))
    return idx


@dataclass(frozen=True)
class Network:
    """Our stations, competitors and tanks (frames as written) plus arrays used by later stages."""

    stations: pd.DataFrame
    competitors: pd.DataFrame
    tanks: pd.DataFrame
    comp_members: list[np.ndarray]  # competitor row indices within 3 km of each station
    gap_coef: np.ndarray  # per-station true competitor-gap coefficient
    base_litres: np.ndarray  # (stations, 4 fuels) walk-in base litres/day (0 where no nozzle)
    has_product: np.ndarray  # (stations, 4) bool
    terminals: np.ndarray  # terminals per station (nozzle terminals, then one shop POS)
    terminal_offset: np.ndarray  # start index of each station in the global terminal list
    terminal_ids: np.ndarray  # object array of all terminal ids


def build_network(rng: np.random.Generator, n_stations: int, start: date, *, gap_base: float,
                  gap_per_competitor: float, gap_max: float) -> Network:
    """Place stations (urban/highway/rural), competitors, tanks; derive the true price-response per station."""
    c = city_arrays()
    n_urban = int(round(n_stations * 0.55))
    n_highway = int(round(n_stations * 0.2))
    n_rural = n_stations - n_urban - n_highway
    # urban: around city centres
    ci = rng.choice(len(c["name"]), n_urban, p=c["weight"] / c["weight"].sum())
    u_lat, u_lon = scatter(rng, c["lat"][ci], c["lon"][ci], c["radius"][ci] * 0.9)
    # highway: on expressway segments between cities
    hw = rng.integers(0, len(HIGHWAYS), n_highway)
    a = np.array([HIGHWAYS[k][0] for k in hw]) if n_highway else np.zeros(0, int)
    b = np.array([HIGHWAYS[k][1] for k in hw]) if n_highway else np.zeros(0, int)
    t = rng.uniform(0.15, 0.85, n_highway)
    h_lat = c["lat"][a] * (1 - t) + c["lat"][b] * t
    h_lon = c["lon"][a] * (1 - t) + c["lon"][b] * t
    h_lat, h_lon = scatter(rng, h_lat, h_lon, np.full(n_highway, 1.0))
    # rural: towns scattered in the region
    r_lat = rng.uniform(BBOX[0] + 0.2, BBOX[1] - 0.2, n_rural)
    r_lon = rng.uniform(BBOX[2] + 0.2, BBOX[3] - 0.3, n_rural)
    lat = np.concatenate([u_lat, h_lat, r_lat])
    lon = np.concatenate([u_lon, h_lon, r_lon])
    stype = np.array(["urban"] * n_urban + ["highway"] * n_highway + ["rural"] * n_rural, dtype=object)
    # shuffle so ids do not reveal type
    perm = rng.permutation(n_stations)
    lat, lon, stype = lat[perm], lon[perm], stype[perm]
    city_idx = nearest_city(lat, lon)
    is_u, is_h, is_r = stype == "urban", stype == "highway", stype == "rural"

    noz92 = np.where(is_h, rng.integers(4, 9, n_stations), np.where(is_u, rng.integers(3, 7, n_stations),
                                                                     rng.integers(2, 4, n_stations)))
    noz95 = np.where(is_h, rng.integers(3, 7, n_stations), np.where(is_u, rng.integers(2, 6, n_stations),
                                                                     rng.integers(1, 3, n_stations)))
    has98 = np.where(is_u, rng.random(n_stations) < 0.7, np.where(is_h, rng.random(n_stations) < 0.5,
                                                                   rng.random(n_stations) < 0.2))
    noz98 = np.where(has98, rng.integers(1, 3, n_stations), 0)
    nozd = np.where(is_h, rng.integers(4, 8, n_stations), np.where(is_u, rng.integers(1, 3, n_stations),
                                                                    rng.integers(1, 4, n_stations)))
    has_shop = np.where(is_r, rng.random(n_stations) < 0.5, rng.random(n_stations) < 0.9)
    has_wash = np.where(is_h, rng.random(n_stations) < 0.2, rng.random(n_stations) < 0.45)
    land = np.where(is_u, rng.uniform(1.4, 3.0, n_stations),
                    np.where(is_h, rng.uniform(0.8, 1.3, n_stations), rng.uniform(0.3, 0.8, n_stations)))
    land = land * np.where(c["name"][city_idx] == "Shanghai", 1.3, 1.0)
    opened = [start - timedelta(days=int(x)) for x in rng.integers(200, 9000, n_stations)]
    station_id = np.array([f"S{i + 1:04d}" for i in range(n_stations)], dtype=object)
    names = np.array([f"{c['name'][ci_]} {t_.capitalize()} {i + 1:04d}"
                      for i, (ci_, t_) in enumerate(zip(city_idx, stype, strict=True))], dtype=object)

    # competitors: dense in cities, few on highways
    lam = np.where(is_u, 4.5, np.where(is_h, 0.35, 1.0))
    ncomp = rng.poisson(lam)
    parent = np.repeat(np.arange(n_stations), ncomp)
    dist = np.where(stype[parent] == "urban", rng.uniform(0.2, 3.5, len(parent)), rng.uniform(0.3, 6.0, len(parent)))
    ang = rng.uniform(0, 2 * np.pi, len(parent))
    c_lat = lat[parent] + dist * np.sin(ang) / KM_PER_DEG_LAT
    c_lon = lon[parent] + dist * np.cos(ang) / (KM_PER_DEG_LAT * np.cos(np.radians(lat[parent])))
    tree = cKDTree(to_xy(lat, lon))
    _, near = tree.query(to_xy(c_lat, c_lon)) if len(parent) else (None, np.zeros(0, int))
    near = np.asarray(near, dtype=int)
    c_dist = haversine_km(c_lat, c_lon, lat[near], lon[near])
    brand = np.array(BRANDS, dtype=object)[rng.choice(len(BRANDS), len(parent), p=[0.25, 0.3, 0.15, 0.1, 0.2])]
    competitors = pd.DataFrame({
        "competitor_id": [f"C{i + 1:05d}" for i in range(len(parent))], "brand": brand,
        "lat": c_lat.round(6), "lon": c_lon.round(6), "station_id": station_id[near],
        "distance_km": c_dist.round(3),
    })
    # competitors within 3 km of each station (any, not only those assigned to it)
    if len(parent):
        ctree = cKDTree(to_xy(c_lat, c_lon))
        comp_members = [np.array(sorted(x), dtype=int) for x in ctree.query_ball_point(to_xy(lat, lon), r=3.0)]
    else:
        comp_members = [np.zeros(0, int) for _ in range(n_stations)]
    comp3 = np.array([len(x) for x in comp_members])
    gap_coef = -np.minimum(gap_base + gap_per_competitor * comp3, gap_max)
    gap_coef = np.where(comp3 == 0, 0.0, gap_coef)

    stations = pd.DataFrame({
        "station_id": station_id, "name": names, "region": c["region"][city_idx].astype(object),
        "city": c["name"][city_idx].astype(object), "station_type": stype,
        "lat": lat.round(6), "lon": lon.round(6),
        "nozzles_92": noz92.astype("int64"), "nozzles_95": noz95.astype("int64"),
        "nozzles_98": noz98.astype("int64"), "nozzles_diesel": nozd.astype("int64"),
        "has_shop": has_shop.astype(bool), "has_wash": has_wash.astype(bool),
        "competitors_3km": comp3.astype("int64"), "land_cost_index": land.round(3), "opened": opened,
    })

    # walk-in base volume (litres/day, all non-card sales) and product mix
    total = np.where(is_h, 16000.0, np.where(is_u, 11000.0, 5500.0)) * rng.lognormal(0, 0.3, n_stations)
    mix = np.column_stack([
        np.where(is_h, 0.35, 0.50), np.where(is_h, 0.2, 0.30), np.where(is_h, 0.03, 0.05),
        np.where(is_h, 0.42, np.where(is_r, 0.25, 0.15)),
    ]) * rng.lognormal(0, 0.15, (n_stations, 4))
    has_product = np.column_stack([noz92 > 0, noz95 > 0, noz98 > 0, nozd > 0])
    mix = mix * has_product
    mix = mix / mix.sum(axis=1, keepdims=True)
    base_litres = total[:, None] * mix

    # tanks: one per stocked product, sized to ~4–8 days of sales
    s_idx, p_idx = np.nonzero(has_product)
    days_cover = rng.uniform(4.5, 8.0, len(s_idx))
    cap = np.clip(np.round(base_litres[s_idx, p_idx] * 1.25 * days_cover / 5000) * 5000, 10000, 120000)
    lead = np.where(stype[s_idx] == "highway", rng.integers(1, 3, len(s_idx)), rng.integers(1, 4, len(s_idx)))
    tanks = pd.DataFrame({
        "tank_id": [f"{station_id[s]}-{FUELS[p]}" for s, p in zip(s_idx, p_idx, strict=True)],
        "station_id": station_id[s_idx], "product": np.array(FUELS, dtype=object)[p_idx],
        "capacity_l": cap.astype(float), "lead_time_days": lead.astype("int64"),
    })
    terminals = noz92 + noz95 + noz98 + nozd + 1  # one terminal per nozzle plus the shop POS (last)
    offset = np.concatenate([[0], np.cumsum(terminals)[:-1]])
    term_ids = np.array([f"{station_id[s]}-T{k + 1:02d}" if k < terminals[s] - 1 else f"{station_id[s]}-POS"
                         for s in range(n_stations) for k in range(terminals[s])], dtype=object)
    return Network(stations=stations, competitors=competitors, tanks=tanks, comp_members=comp_members,
                   gap_coef=gap_coef, base_litres=base_litres, has_product=has_product, terminals=terminals,
                   terminal_offset=offset, terminal_ids=term_ids)
