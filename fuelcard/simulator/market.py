"""Calendar, weather, crude, regulated guide prices, own and competitor prices, and the true demand effects."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from fuelcard.sim_calendar import calendar_frame
from fuelcard.simulator.geo import FUELS, REGIONS, Network

# ---- true demand effects (log-multipliers), documented in truth.json
WEEKDAY_EFFECT = (0.0, -0.02, -0.02, 0.0, 0.08, 0.04, -0.06)  # Mon..Sun
HOLIDAY_EFFECT = {"urban": -0.15, "highway": 0.30, "rural": 0.05}
PRE_HOLIDAY_EFFECT = 0.10  # the day before a holiday block
SEASON_AMPLITUDE = 0.05  # * sin(2*pi*(day_of_year - 105)/365): summer peak
TEMP_COEF = 0.003  # per degree C above 15
RAIN_COEF = -0.004  # per mm of rain, capped at RAIN_CAP_MM
RAIN_CAP_MM = 30.0
OWN_ELASTICITY = -0.4  # on ln(own price / regulated guide price)
GAP_BASE, GAP_PER_COMPETITOR, GAP_MAX = 0.4, 0.4, 3.0  # gap coef = -min(base + per*competitors_3km, max)
WALKIN_NOISE_SD = 0.045  # multiplicative lognormal noise of daily walk-in volume
PRICE_EXPERIMENT_SD = 0.010  # daily own-price experimentation noise (relative)
COMP_DAILY_SD = 0.006
GUIDE_BASE_FEN = {"92": 720, "95": 770, "98": 860, "diesel": 690}
GUIDE_CRUDE_EXPONENT = 0.4
GUIDE_ADJUST_EVERY_DAYS = 14
GUIDE_MIN_STEP = 0.005
WHOLESALE_SHARE = 0.87
CRUDE_START, CRUDE_DAILY_SD, CRUDE_REVERSION = 72.0, 0.018, 0.02
REGION_TEMP_OFFSET = {"Shanghai": 0.5, "Jiangsu": -1.0, "Zhejiang": 1.0}


@dataclass(frozen=True)
class Market:
    """Day-level drivers and prices; arrays are indexed [day] / [region, day] / [station, fuel, day]."""

    dates: list[date]
    calendar: pd.DataFrame
    weekday: np.ndarray
    holiday: np.ndarray  # bool per day
    pre_holiday: np.ndarray
    season: np.ndarray  # log effect per day
    temp: np.ndarray  # [region, day]
    rain: np.ndarray  # [region, day]
    crude: np.ndarray
    guide: np.ndarray  # [fuel, day] fen/litre
    cost: np.ndarray  # [station, fuel, day] fen/litre (wholesale)
    own_price: np.ndarray  # [station, fuel, day] fen/litre
    comp_price: np.ndarray  # [competitor, fuel, day]
    comp_mean: np.ndarray  # [station, fuel, day] mean competitor price within 3 km (nan if none)
    price_response: np.ndarray  # [station, fuel, day] true log-multiplier of volume from prices
    weather_log: np.ndarray  # [region, day] log effect of weather (rain + temperature)


def build_market(rng: np.random.Generator, net: Network, start: date, days: int) -> Market:
    """Simulate the calendar, weather, crude oil and every price; derive the true price response."""
    dates = [start + timedelta(k) for k in range(days)]
    cal = calendar_frame(start, days)
    holiday = cal["is_holiday"].to_numpy(bool)
    # pre-holiday: day before a holiday that is not itself a holiday (look one day past the window)
    nxt = np.append(holiday[1:], calendar_frame(start + timedelta(days), 1)["is_holiday"].to_numpy(bool))
    pre_holiday = nxt & ~holiday
    doy = np.array([d.timetuple().tm_yday for d in dates])
    season = SEASON_AMPLITUDE * np.sin(2 * np.pi * (doy - 105) / 365.25)

    n_reg = len(REGIONS)
    normal = 16.5 - 12.0 * np.cos(2 * np.pi * (doy - 20) / 365.25)
    temp = np.zeros((n_reg, days))
    shock = np.zeros(n_reg)
    for k in range(days):  # AR(1) per region, a loop over days only
        shock = 0.7 * shock + rng.normal(0, 1.8, n_reg)
        temp[:, k] = normal[k] + shock
    temp += np.array([REGION_TEMP_OFFSET[r] for r in REGIONS])[:, None]
    p_rain = 0.22 + 0.12 * np.sin(2 * np.pi * (doy - 80) / 365.25)
    rain = np.where(rng.random((n_reg, days)) < p_rain, rng.gamma(0.8, 12.0, (n_reg, days)), 0.0).round(1)
    weather_log = RAIN_COEF * np.minimum(rain, RAIN_CAP_MM) + TEMP_COEF * (temp - 15.0)

    # crude: mean-reverting log random walk
    lc = np.empty(days)
    x = np.log(CRUDE_START)
    for k in range(days):
        x = x + CRUDE_REVERSION * (np.log(CRUDE_START) - x) + rng.normal(0, CRUDE_DAILY_SD)
        lc[k] = x
    crude = np.exp(lc)

    # regulated guide price: adjusted every 14 days to the trailing 10-day crude average, min step 0.5%
    factor = np.ones(days)
    cur = 1.0
    for k in range(days):
        if k > 0 and k % GUIDE_ADJUST_EVERY_DAYS == 0:
            target = (crude[max(0, k - 10):k].mean() / CRUDE_START) ** GUIDE_CRUDE_EXPONENT
            if abs(target / cur - 1) >= GUIDE_MIN_STEP:
                cur = target
        factor[k] = cur
    guide = np.array([GUIDE_BASE_FEN[f] for f in FUELS], float)[:, None] * factor[None, :]

    st = net.stations
    n_s = len(st)
    stype = st["station_type"].to_numpy()
    comp3 = st["competitors_3km"].to_numpy()
    markup = np.where(stype == "highway", 0.03, 0.0) - 0.003 * np.minimum(comp3, 8)
    markup = markup[:, None] + rng.normal(0, 0.01, (n_s, 4))
    noise = rng.normal(0, PRICE_EXPERIMENT_SD, (n_s, 4, days))
    own = np.round(guide[None, :, :] * (1 + markup[:, :, None]) * (1 + noise))
    region_idx = st["region"].map({r: i for i, r in enumerate(REGIONS)}).to_numpy()
    reg_cost = np.array([1.01, 1.0, 0.995])[region_idx]
    cost = np.round(guide[None, :, :] * WHOLESALE_SHARE * reg_cost[:, None, None] * np.ones((n_s, 1, 1)))

    comps = net.competitors
    n_c = len(comps)
    brand_off = comps["brand"].map({"Sinopec": 0.0, "PetroChina": 0.0, "Shell": 0.02, "CNOOC": -0.01,
                                    "Private": -0.03}).to_numpy(float) if n_c else np.zeros(0)
    c_markup = brand_off[:, None] + rng.normal(-0.005, 0.012, (n_c, 4))
    c_noise = rng.normal(0, COMP_DAILY_SD, (n_c, 4, days))
    comp_price = np.round(guide[None, :, :] * (1 + c_markup[:, :, None]) * (1 + c_noise))

    comp_mean = np.full((n_s, 4, days), np.nan)
    for s, members in enumerate(net.comp_members):
        if len(members):
            comp_mean[s] = comp_price[members].mean(axis=0)
    gap = np.where(np.isnan(comp_mean), 0.0, np.log(own / np.where(np.isnan(comp_mean), 1.0, comp_mean)))
    response = OWN_ELASTICITY * np.log(own / guide[None, :, :]) + net.gap_coef[:, None, None] * gap
    return Market(dates=dates, calendar=cal, weekday=cal["weekday"].to_numpy(), holiday=holiday,
                  pre_holiday=pre_holiday, season=season, temp=temp.round(1), rain=rain, crude=crude.round(2),
                  guide=guide, cost=cost, own_price=own, comp_price=comp_price, comp_mean=comp_mean,
                  price_response=response, weather_log=weather_log)


def day_log_effect(mk: Market, station_type: np.ndarray) -> np.ndarray:
    """True calendar+season log effect per [station, day] (weather and prices excluded)."""
    wd = np.array(WEEKDAY_EFFECT)[mk.weekday]
    hol = np.array([HOLIDAY_EFFECT[t] for t in station_type])
    return (wd + mk.season + PRE_HOLIDAY_EFFECT * mk.pre_holiday)[None, :] + hol[:, None] * mk.holiday[None, :]


def market_frames(mk: Market, net: Network) -> dict[str, pd.DataFrame]:
    """prices, competitor_prices, crude, weather, calendar frames."""
    days = len(mk.dates)
    st_ids = net.stations["station_id"].to_numpy()
    n_s = len(st_ids)
    dates = np.array(mk.dates, dtype=object)
    prices = pd.DataFrame({
        "date": np.tile(dates, n_s * 4),
        "station_id": np.repeat(st_ids, 4 * days),
        "product": np.tile(np.repeat(np.array(FUELS, dtype=object), days), n_s),
        "price_fen": mk.own_price.reshape(-1).astype("int64"),
        "cost_fen": mk.cost.reshape(-1).astype("int64"),
    })
    has = np.repeat(net.has_product.reshape(-1), days)
    prices = prices[has].reset_index(drop=True)
    comps = net.competitors
    n_c = len(comps)
    competitor_prices = pd.DataFrame({
        "date": np.tile(dates, n_c * 4),
        "competitor_id": np.repeat(comps["competitor_id"].to_numpy(), 4 * days),
        "station_id": np.repeat(comps["station_id"].to_numpy(), 4 * days),
        "product": np.tile(np.repeat(np.array(FUELS, dtype=object), days), n_c),
        "price_fen": mk.comp_price.reshape(-1).astype("int64"),
    })
    crude = pd.DataFrame({"date": dates, "usd_per_bbl": mk.crude})
    weather = pd.DataFrame({
        "date": np.tile(dates, len(REGIONS)),
        "region": np.repeat(np.array(REGIONS, dtype=object), days),
        "temp_c": mk.temp.reshape(-1), "rain_mm": mk.rain.reshape(-1),
    })
    return {"prices.parquet": prices, "competitor_prices.parquet": competitor_prices, "crude.parquet": crude,
            "weather.parquet": weather, "calendar.parquet": mk.calendar.copy()}
