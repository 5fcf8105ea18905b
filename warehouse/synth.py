"""Fast synthetic frames in the shape of docs/DATA.md, for tests and the warehouse benchmark.

Not the simulator (``fuelcard simulate`` models the business); this only produces well-typed rows quickly
(10 M transactions in a few seconds with numpy) so the warehouse can be exercised at scale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

PRODUCTS = np.array(["92", "95", "98", "diesel", "shop", "wash"])
STATUSES = np.array(["captured", "cancelled", "timeout", "refunded"])
SCENARIOS = np.array(["cloned_card", "stolen_drain", "over_capacity", "card_testing", "night_anomaly"])
REGIONS = np.array(["north", "south", "east", "west"])


def _ids(prefix: str, idx: np.ndarray, width: int) -> np.ndarray:
    return np.char.add(prefix, np.char.zfill(idx.astype(str), width)).astype(object)


def transactions(n: int, *, seed: int = 0, start: str | pd.Timestamp = "2026-01-01", days: float = 90,
                 stations: int = 200, cards: int = 50_000, id_offset: int = 0) -> pd.DataFrame:
    """``n`` purchases with every DATA.md ``transactions.parquet`` column (vectorised), in time order."""
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp(start).tz_localize("UTC").value // 1_000 if pd.Timestamp(start).tzinfo is None \
        else pd.Timestamp(start).value // 1_000
    ts_us = np.sort(t0 + rng.integers(0, int(days * 86_400_000_000), n, dtype=np.int64))
    station_idx = rng.integers(0, stations, n)
    card_idx = rng.integers(0, cards, n)
    product = PRODUCTS[rng.choice(6, n, p=[0.35, 0.3, 0.05, 0.2, 0.07, 0.03])]
    is_fuel = np.isin(product, PRODUCTS[:4])
    litres = np.where(is_fuel, np.round(rng.gamma(4.0, 10.0, n), 2), 0.0)
    unit_price = np.where(is_fuel, rng.integers(700, 900, n), 0)
    amount_fen = np.where(is_fuel, np.round(litres * unit_price), rng.integers(500, 8_000, n)).astype(np.int64)
    status = STATUSES[rng.choice(4, n, p=[0.95, 0.03, 0.01, 0.01])]
    is_fraud = (rng.random(n) < 0.005).astype(np.int8)
    scenario = np.where(is_fraud == 1, SCENARIOS[rng.integers(0, len(SCENARIOS), n)], "").astype(object)
    ts = pd.to_datetime(ts_us, unit="us", utc=True)
    capture = pd.Series(ts + pd.to_timedelta(rng.integers(60, 600, n), unit="s"))
    capture[np.isin(status, ["cancelled", "timeout"])] = pd.NaT
    return pd.DataFrame({
        "tx_id": _ids("T", np.arange(id_offset, id_offset + n), 10),
        "ts": ts,
        "capture_ts": capture.to_numpy(),
        "card_id": _ids("C", card_idx, 7),
        "member_id": _ids("M", card_idx // 2, 7),
        "station_id": _ids("S", station_idx, 4),
        "terminal_id": _ids("P", station_idx * 10 + rng.integers(0, 8, n), 5),
        "device_id": _ids("D", card_idx, 7),
        "region": REGIONS[station_idx % 4].astype(object),
        "product": product.astype(object),
        "litres": litres,
        "unit_price_fen": unit_price.astype(np.int64),
        "amount_fen": amount_fen,
        "amount": amount_fen / 100.0,
        "lat": 30.0 + station_idx / 1000.0,
        "lon": 120.0 + station_idx / 1000.0,
        "status": status.astype(object),
        "is_fraud": is_fraud,
        "scenario": scenario,
    })


def write_sample_dir(out: Path, *, n_tx: int = 2_000, seed: int = 1, days: int = 10, stations: int = 5,
                     members: int = 40) -> Path:
    """A small directory with every DATA.md file (for tests until/unless the simulator is used)."""
    out = Path(out)
    (out / "ground_truth").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-01-01")
    dates = pd.date_range(start, periods=days, freq="D")
    st = [f"S{i:04d}" for i in range(stations)]
    prods = ["92", "95", "98", "diesel"]
    pd.DataFrame({
        "station_id": st, "name": [f"Station {i}" for i in range(stations)],
        "region": [REGIONS[i % 4] for i in range(stations)], "city": "Hangzhou",
        "station_type": [["urban", "highway", "rural"][i % 3] for i in range(stations)],
        "lat": 30.0 + np.arange(stations) / 1000, "lon": 120.0 + np.arange(stations) / 1000,
        "nozzles_92": 4, "nozzles_95": 4, "nozzles_98": 1, "nozzles_diesel": 2, "has_shop": True,
        "has_wash": False, "competitors_3km": 2, "land_cost_index": 1.1, "opened": pd.Timestamp("2015-01-01").date(),
    }).to_parquet(out / "stations.parquet")
    tanks = pd.DataFrame([{"tank_id": f"{s}-{p}", "station_id": s, "product": p, "capacity_l": 30000.0,
                           "lead_time_days": 2} for s in st for p in prods])
    tanks.to_parquet(out / "tanks.parquet")
    pd.DataFrame({"competitor_id": ["K1", "K2"], "brand": ["X", "Y"], "lat": [30.01, 30.02],
                  "lon": [120.01, 120.02], "station_id": [st[0], st[-1]], "distance_km": [1.2, 2.5]}
                 ).to_parquet(out / "competitors.parquet")
    mids = [f"M{i:07d}" for i in range(members)]
    pd.DataFrame({
        "member_id": mids, "tier": [["standard", "silver", "gold", "diamond"][i % 4] for i in range(members)],
        "joined": pd.Timestamp("2024-06-01").date(), "home_lat": 30.0, "home_lon": 120.0, "work_lat": 30.1,
        "work_lon": 120.1, "family_id": [f"F{i // 3}" if i % 5 == 0 else None for i in range(members)],
        "is_family_main": [i % 5 == 0 for i in range(members)], "fills_per_week": 1.5,
        "price_sensitivity": 0.3, "complaints": 0, "churned": [i % 7 == 0 for i in range(members)],
        "churn_date": [pd.Timestamp("2026-01-05").date() if i % 7 == 0 else None for i in range(members)],
        "id_number": [f"1101011990030{i:05d}" for i in range(members)],
        "phone": [f"138{i:08d}" for i in range(members)],
    }).to_parquet(out / "members.parquet")
    pd.DataFrame({"vehicle_id": ["V1", "V2"], "member_id": [None, None], "fleet_id": ["FL1", "FL1"],
                  "plate": ["浙A12345", "浙A54321"], "tank_capacity_l": [60.0, 400.0],
                  "fuel_type": ["95", "diesel"]}).to_parquet(out / "vehicles.parquet")
    pd.DataFrame({"fleet_id": ["FL1"], "name": ["Acme Logistics"], "region": ["north"], "home_lat": [30.0],
                  "home_lon": [120.0], "geofence_radius_km": [50.0], "allowed_products": [["95", "diesel"]],
                  "per_tx_limit_fen": [200_000], "daily_limit_fen": [500_000], "monthly_limit_fen": [5_000_000]}
                 ).to_parquet(out / "fleets.parquet")
    cards = members * 2
    tx = transactions(n_tx, seed=seed, start=str(start.date()), days=days, stations=stations, cards=cards)
    cids = sorted(set(tx["card_id"]))
    pd.DataFrame({
        "card_id": cids, "card_type": "personal",
        "member_id": [f"M{int(c[1:]) // 2:07d}" for c in cids], "main_card_id": None,
        "fleet_id": ["FL1" if int(c[1:]) % 40 == 0 else None for c in cids],
        "vehicle_id": ["V1" if int(c[1:]) % 40 == 0 else None for c in cids],
        "per_tx_limit_fen": 200_000, "monthly_limit_fen": None, "issued": pd.Timestamp("2024-06-01").date(),
        "device_id": [f"D{c[1:]}" for c in cids],
    }).to_parquet(out / "cards.parquet")
    tx.to_parquet(out / "transactions.parquet")
    pd.DataFrame({"recharge_id": ["R1", "R2"], "ts": pd.to_datetime(["2026-01-02", "2026-01-03"], utc=True),
                  "card_id": cids[:2], "amount_fen": [100_000, 50_000], "batch_id": ["B1", None]}
                 ).to_parquet(out / "recharges.parquet")
    pd.DataFrame({"redemption_id": ["X1"], "ts": pd.to_datetime(["2026-01-04 10:00"], utc=True),
                  "member_id": [mids[0]], "points": [500], "item": ["car wash voucher"]}
                 ).to_parquet(out / "redemptions.parquet")
    rows = []
    for t in tanks.itertuples():
        for d in dates:
            leak = 400.0 if (t.tank_id == tanks.tank_id.iloc[0] and d >= dates[days // 2]) else 0.0
            rows.append({"date": d.date(), "tank_id": t.tank_id, "station_id": t.station_id, "product": t.product,
                         "opening_l": 20000.0, "sales_l": 3000.0, "delivery_l": 3000.0,
                         "closing_l": 20000.0 - leak, "expected_closing_l": 20000.0})
    pd.DataFrame(rows).to_parquet(out / "tank_readings.parquet")
    pd.DataFrame([{"date": d.date(), "station_id": s, "product": p, "price_fen": 800 + int(rng.integers(0, 30))}
                  for d in dates for s in st for p in prods]).to_parquet(out / "prices.parquet")
    pd.DataFrame([{"date": d.date(), "competitor_id": k, "station_id": s, "product": p,
                   "price_fen": 790 + int(rng.integers(0, 30))}
                  for d in dates for k, s in (("K1", st[0]), ("K2", st[-1])) for p in prods]
                 ).to_parquet(out / "competitor_prices.parquet")
    pd.DataFrame({"date": dates.date, "usd_per_bbl": 80.0}).to_parquet(out / "crude.parquet")
    pd.DataFrame([{"date": d.date(), "station_id": s, "product": p, "litres": 5000.0, "transactions": 100,
                   "card_litres": 3000.0} for d in dates for s in st for p in prods]
                 ).to_parquet(out / "station_sales.parquet")
    hours = pd.date_range(pd.Timestamp(start, tz="UTC"), periods=days * 24, freq="h")
    pd.DataFrame([{"ts_hour": h, "station_id": s, "litres": 200.0} for h in hours for s in st]
                 ).to_parquet(out / "station_hourly.parquet")
    pd.DataFrame([{"date": d.date(), "region": r, "temp_c": 10.0, "rain_mm": 0.0} for d in dates for r in REGIONS]
                 ).to_parquet(out / "weather.parquet")
    pd.DataFrame({"date": dates.date, "weekday": dates.weekday, "is_holiday": dates.weekday >= 5,
                  "is_workday": dates.weekday < 5, "holiday_name": ""}).to_parquet(out / "calendar.parquet")
    pd.DataFrame({"complaint_id": ["Q1"], "ts": pd.to_datetime(["2026-01-03"], utc=True), "member_id": [mids[1]],
                  "category": ["service"]}).to_parquet(out / "complaints.parquet")
    tx[tx.is_fraud == 1][["tx_id", "scenario", "card_id", "station_id"]].to_parquet(
        out / "ground_truth" / "fraud.parquet")
    return out
