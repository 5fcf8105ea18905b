"""Station operations: daily sales (card + walk-in), hourly traffic, tank readings with injected leaks."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

from fuelcard.simulator.activity import DAY_US, HOUR_US, TxArrays, base_us, station_hour_profile
from fuelcard.simulator.geo import FUELS, REGIONS, Network
from fuelcard.simulator.market import WALKIN_NOISE_SD, Market, day_log_effect

AVG_WALKIN_FILL_L = np.array([35.0, 35.0, 35.0, 80.0])
TANK_NOISE_SHARE = 0.0015  # sd of a dip reading, share of tank capacity
LEAK_TANK_SHARE = 0.03


def card_volume(tx: TxArrays, n_st: int, days: int, start: date) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(litres, count) per [station, fuel, local day] of dispensed card fuel, and local day per tx."""
    day = (tx.ts_us - base_us(start)) // DAY_US
    m = (tx.product < 4) & ((tx.status == 0) | (tx.status == 3)) & (day >= 0) & (day < days)
    flat = (tx.station[m] * 4 + tx.product[m]) * days + day[m]
    size = n_st * 4 * days
    litres = np.bincount(flat, weights=tx.litres[m], minlength=size).reshape(n_st, 4, days)
    count = np.bincount(flat, minlength=size).reshape(n_st, 4, days)
    return litres, count, day


WALKIN_MIN_MULTIPLE = 8.0  # walk-in base >= this multiple of the mean daily card litres (forecastable totals)
CARD_MAX_CV_SHARE = 0.035  # ... and card-volume noise (sd) at most 3.5% of the series' total


def rebalance_walkin(net: Network, tx: TxArrays, days: int, start: date) -> None:
    """Raise the walk-in base where card fills (notably fleet trucks) would dominate a series, and resize tanks.

    Card volume is lumpy (a few 300 L truck fills); keeping it a minority share keeps daily totals forecastable.
    Mutates ``net.base_litres`` and ``net.tanks['capacity_l']`` in place.
    """
    card_l, card_n, _ = card_volume(tx, len(net.stations), days, start)
    card_mean = card_l.mean(axis=2)
    fill = card_l.sum(axis=2) / np.maximum(card_n.sum(axis=2), 1)
    card_sd = np.sqrt(card_mean * fill)  # Poisson count of fills of about `fill` litres
    floor = np.maximum(WALKIN_MIN_MULTIPLE * card_mean, card_sd / CARD_MAX_CV_SHARE - card_mean)
    old_total = net.base_litres + card_mean
    net.base_litres[:] = np.where(net.has_product, np.maximum(net.base_litres, floor), 0.0)
    new_total = net.base_litres + card_mean
    s_idx, p_idx = np.nonzero(net.has_product)
    ratio = new_total[s_idx, p_idx] / np.maximum(old_total[s_idx, p_idx], 1.0)
    cap = net.tanks["capacity_l"].to_numpy() * np.maximum(ratio, 1.0)
    net.tanks["capacity_l"] = np.clip(np.round(cap / 5000) * 5000, 10_000, 200_000).astype(float)


def station_sales(rng: np.random.Generator, net: Network, mk: Market, tx: TxArrays, start: date
                  ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """station_sales frame plus total litres [station, fuel, day] and walk-in litres."""
    days = len(mk.dates)
    st = net.stations
    n_st = len(st)
    card_l, card_n, _ = card_volume(tx, n_st, days, start)
    region_idx = st["region"].map({r: i for i, r in enumerate(REGIONS)}).to_numpy()
    log_eff = (day_log_effect(mk, st["station_type"].to_numpy())[:, None, :]
               + mk.weather_log[region_idx][:, None, :] + mk.price_response
               + rng.normal(0, WALKIN_NOISE_SD, (n_st, 4, days)))
    walkin = net.base_litres[:, :, None] * np.exp(log_eff) * net.has_product[:, :, None]
    walkin = np.round(walkin, 1)
    total = card_l + walkin
    walk_n = np.round(walkin / AVG_WALKIN_FILL_L[None, :, None]).astype(np.int64)
    has = np.repeat(net.has_product.reshape(-1), days)
    dates = np.array(mk.dates, dtype=object)
    df = pd.DataFrame({
        "date": np.tile(dates, n_st * 4),
        "station_id": np.repeat(st["station_id"].to_numpy(), 4 * days),
        "product": np.tile(np.repeat(np.array(FUELS, dtype=object), days), n_st),
        "litres": np.round(total.reshape(-1), 2),
        "transactions": (card_n + walk_n).reshape(-1).astype(np.int64),
        "card_litres": np.round(card_l.reshape(-1), 2),
    })[has].reset_index(drop=True)
    return df, total, walkin


def station_hourly(rng: np.random.Generator, net: Network, mk: Market, tx: TxArrays, walkin: np.ndarray,
                   start: date) -> pd.DataFrame:
    """Litres per station x local hour (all fuels): walk-in spread on a noisy profile plus card fills by hour."""
    days = len(mk.dates)
    st = net.stations
    n_st = len(st)
    prof = np.stack([station_hour_profile(t) for t in st["station_type"]])  # [s, 24]
    noisy = prof[:, None, :] * rng.lognormal(0, 0.12, (n_st, days, 24))
    noisy /= noisy.sum(axis=2, keepdims=True)
    hourly = walkin.sum(axis=1)[:, :, None] * noisy  # [s, d, h]
    b = base_us(start)
    m = (tx.product < 4) & ((tx.status == 0) | (tx.status == 3))
    hidx = (tx.ts_us[m] - b) // HOUR_US
    ok = (hidx >= 0) & (hidx < days * 24)
    flat = tx.station[m][ok] * days * 24 + hidx[ok]
    hourly += np.bincount(flat, weights=tx.litres[m][ok], minlength=n_st * days * 24).reshape(n_st, days, 24)
    ts = pd.to_datetime(b + np.arange(days * 24, dtype=np.int64) * HOUR_US, unit="us", utc=True)
    return pd.DataFrame({
        "ts_hour": np.tile(ts.to_numpy(), n_st),
        "station_id": np.repeat(st["station_id"].to_numpy(), days * 24),
        "litres": np.round(hourly.reshape(-1), 2),
    }).astype({"ts_hour": "datetime64[us, UTC]"})


def tank_readings(rng: np.random.Generator, net: Network, mk: Market, total: np.ndarray, start: date
                  ) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """Daily tank book: opening, pump sales, deliveries (reorder policy), measured closing; leaks injected."""
    days = len(mk.dates)
    tanks = net.tanks
    s_idx, p_idx = np.nonzero(net.has_product)
    sales = total[s_idx, p_idx, :]  # [tank, day]
    T = len(tanks)
    cap = tanks["capacity_l"].to_numpy(float)
    lead = tanks["lead_time_days"].to_numpy()
    avg = sales.mean(axis=1)

    n_leaks = max(1, int(round(LEAK_TANK_SHARE * T)))
    leak_t = rng.choice(T, min(n_leaks, T), replace=False)
    leak_start = rng.integers(min(3, days - 1), max(min(3, days - 1) + 1, days - 3), len(leak_t))
    leak_len = rng.integers(5, 21, len(leak_t))
    leak_end = np.minimum(leak_start + leak_len - 1, days - 1)
    leak_rate = np.round(np.maximum(60.0, avg[leak_t] * rng.uniform(0.01, 0.03, len(leak_t))), 1)
    leak = np.zeros((T, days))
    for t, a, e, r in zip(leak_t, leak_start, leak_end, leak_rate, strict=True):
        leak[t, a:e + 1] = r

    noise_sd = TANK_NOISE_SHARE * cap
    level = cap * rng.uniform(0.55, 0.85, T)
    measured_prev = level + rng.normal(0, noise_sd)
    pending = np.zeros((T, days + 8))
    cols = {k: np.zeros((T, days)) for k in ("opening", "delivery", "closing", "expected")}
    reorder = (lead + 2.5) * avg
    for k in range(days):  # vectorised over tanks, one step per day
        delivery = pending[:, k]
        level = np.maximum(level + delivery - sales[:, k] - leak[:, k], 0.0)
        measured = np.maximum(level + rng.normal(0, noise_sd), 0.0)
        cols["opening"][:, k] = measured_prev
        cols["delivery"][:, k] = delivery
        cols["expected"][:, k] = measured_prev + delivery - sales[:, k]
        cols["closing"][:, k] = measured
        position = measured + pending[:, k + 1:].sum(axis=1)
        order = position < reorder
        qty = np.round(np.maximum(0.0, cap * 0.92 - (position - lead * avg)) / 100) * 100
        pending[np.flatnonzero(order), k + lead[order]] += qty[order]
        measured_prev = measured
    dates = np.array(mk.dates, dtype=object)
    readings = pd.DataFrame({
        "date": np.tile(dates, T),
        "tank_id": np.repeat(tanks["tank_id"].to_numpy(), days),
        "station_id": np.repeat(tanks["station_id"].to_numpy(), days),
        "product": np.repeat(tanks["product"].to_numpy(), days),
        "opening_l": np.round(cols["opening"].reshape(-1), 1),
        "sales_l": np.round(sales.reshape(-1), 1),
        "delivery_l": np.round(cols["delivery"].reshape(-1), 1),
        "closing_l": np.round(cols["closing"].reshape(-1), 1),
        "expected_closing_l": np.round(cols["expected"].reshape(-1), 1),
    })
    leaks = pd.DataFrame({
        "tank_id": tanks["tank_id"].to_numpy()[leak_t], "station_id": tanks["station_id"].to_numpy()[leak_t],
        "start_date": [start + timedelta(int(x)) for x in leak_start],
        "end_date": [start + timedelta(int(x)) for x in leak_end],
        "litres_per_day": leak_rate,
    }).sort_values(["start_date", "tank_id"]).reset_index(drop=True)
    truth = [{"tank_id": r.tank_id, "reading_noise_sd_l": float(round(noise_sd[i], 1))}
             for i, r in enumerate(tanks.itertuples()) if i in set(leak_t.tolist())]
    return readings, leaks, truth
