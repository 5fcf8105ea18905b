"""Orchestration: build every table of docs/DATA.md from a :class:`SimConfig`, plus the ground truth."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from fuelcard.simulator import activity, fraud, geo, market, ops, people
from fuelcard.simulator.activity import STATUSES, TxArrays
from fuelcard.simulator.config import FILES, SCENARIOS, SimConfig
from fuelcard.simulator.ids import seq_ids

PRODUCT_NAMES = np.array(geo.PRODUCTS, dtype=object)
_STAGES = ("network", "market", "members", "fills", "fraud", "operations", "loyalty", "tables")


def _rng(seed: int, stage: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stage]))


def _utc(us: np.ndarray) -> pd.Series:
    """UTC microsecond integers (-1 = missing) -> timestamp[us, UTC]."""
    arr = np.asarray(us, dtype=np.int64).view("datetime64[us]").copy()
    arr[np.asarray(us) < 0] = np.datetime64("NaT")
    return pd.Series(pd.DatetimeIndex(arr).tz_localize("UTC"))


def simulate(config: SimConfig | None = None, *, progress: bool = False) -> dict[str, Any]:
    """Simulate the network. Returns ``{file name: DataFrame}`` for every file in :data:`FILES` plus
    ``"ground_truth/truth.json": dict``. Deterministic: the same config gives identical frames.

    >>> out = simulate(SimConfig(days=3, stations=10, members=200, seed=1))
    >>> sorted(out)[:3]
    ['calendar.parquet', 'cards.parquet', 'competitor_prices.parquet']
    """
    cfg = config or SimConfig()
    bar = tqdm(total=len(_STAGES), desc="simulate", unit="stage", file=sys.stderr, disable=not progress,
               leave=False)

    def step(done: str) -> None:
        bar.update(1)
        k = _STAGES.index(done) + 1
        if k < len(_STAGES):
            bar.set_postfix_str(_STAGES[k])

    net = geo.build_network(_rng(cfg.seed, 1), cfg.stations, cfg.start,
                            gap_base=market.GAP_BASE, gap_per_competitor=market.GAP_PER_COMPETITOR,
                            gap_max=market.GAP_MAX)
    step("network")
    mk = market.build_market(_rng(cfg.seed, 2), net, cfg.start, cfg.days)
    step("market")
    with np.errstate(invalid="ignore"):
        gap_pct = np.nan_to_num(100 * np.log(mk.own_price[:, 0, :] / mk.comp_mean[:, 0, :]).mean(axis=1))
    gap_fn = people.home_station_gap_fn(geo.to_xy(net.stations["lat"], net.stations["lon"]), gap_pct)
    pop = people.build_population(_rng(cfg.seed, 3), cfg.members, cfg.start, cfg.days, home_gap_pct_fn=gap_fn)
    hab = activity.build_habits(_rng(cfg.seed, 4), net, pop, cfg.days)
    pop.fleets["geofence_radius_km"] = hab.fleet_radius
    step("members")
    fills = activity.genuine_fills(_rng(cfg.seed, 5), net, mk, pop, hab, cfg.start)
    shop = activity.shop_and_wash(_rng(cfg.seed, 6), net, fills, cfg.start)
    step("fills")
    fills, new_fraud, finfo = fraud.inject(_rng(cfg.seed, 7), net, mk, pop, hab, fills, cfg.start, cfg.days,
                                           cfg.fraud_rates, len(fills) + len(shop))
    tx = TxArrays.concat([fills, shop, new_fraud])
    step("fraud")
    ops.rebalance_walkin(net, tx, cfg.days, cfg.start)
    sales, total, walkin = ops.station_sales(_rng(cfg.seed, 8), net, mk, tx, cfg.start)
    hourly = ops.station_hourly(_rng(cfg.seed, 9), net, mk, tx, walkin, cfg.start)
    readings, leaks, _ = ops.tank_readings(_rng(cfg.seed, 10), net, mk, total, cfg.start)
    step("operations")
    rech = activity.recharges(_rng(cfg.seed, 11), pop, tx, cfg.start, cfg.days)
    red = activity.redemptions(_rng(cfg.seed, 12), pop, tx, cfg.start, cfg.days)
    compl = people.complaint_events(_rng(cfg.seed, 13), pop, cfg.start)
    step("loyalty")
    tx_df = transactions_frame(tx, net, pop, finfo["n_devices"], _rng(cfg.seed, 14))
    out: dict[str, Any] = {
        "stations.parquet": net.stations, "tanks.parquet": net.tanks, "competitors.parquet": net.competitors,
        "members.parquet": pop.members, "vehicles.parquet": pop.vehicles, "fleets.parquet": pop.fleets,
        "cards.parquet": pop.cards, "transactions.parquet": tx_df, "recharges.parquet": rech,
        "redemptions.parquet": red, "station_sales.parquet": sales, "station_hourly.parquet": hourly,
        "tank_readings.parquet": readings, **market.market_frames(mk, net), "complaints.parquet": compl,
        "ground_truth/fraud.parquet": tx_df.loc[tx_df["is_fraud"] == 1, ["tx_id", "scenario", "card_id",
                                                                         "station_id"]].reset_index(drop=True),
        "ground_truth/leaks.parquet": leaks,
    }
    for name, cols in FILES.items():
        out[name] = out[name][list(cols)]
    out["ground_truth/truth.json"] = truth(cfg, net, mk, pop, tx_df, sales, finfo)
    step("tables")
    bar.close()
    return out


def transactions_frame(tx: TxArrays, net: geo.Network, pop: people.Population, n_devices: int,
                       rng: np.random.Generator) -> pd.DataFrame:
    """Sort by authorisation time, assign tx ids and attach string columns."""
    order = np.lexsort((tx.card, tx.ts_us))
    t = tx.take(order)
    n = len(t)
    C = len(pop.card_member)
    extra = np.array([f"DN{v:010x}" for v in rng.integers(0, 2**40, max(0, n_devices - C))], dtype=object)
    devices = np.concatenate([pop.cards["device_id"].to_numpy(), extra, np.array([None], dtype=object)])
    st = net.stations
    cap_us = np.where(t.capture_delay_us < 0, -1, t.ts_us + t.capture_delay_us)
    scen_names = np.array(["", *SCENARIOS], dtype=object)
    return pd.DataFrame({
        "tx_id": seq_ids("T", n, 10),
        "ts": _utc(t.ts_us), "capture_ts": _utc(cap_us),
        "card_id": pop.cards["card_id"].to_numpy()[t.card],
        "member_id": pop.members["member_id"].to_numpy()[pop.card_member[t.card]],
        "station_id": st["station_id"].to_numpy()[t.station],
        "terminal_id": net.terminal_ids[t.terminal],
        "device_id": devices[np.where(t.device < 0, len(devices) - 1, t.device)],
        "region": st["region"].to_numpy()[t.station],
        "product": PRODUCT_NAMES[t.product],
        "litres": t.litres.astype(float),
        "unit_price_fen": t.unit_price.astype(np.int64),
        "amount_fen": t.amount.astype(np.int64),
        "amount": t.amount / 100.0,
        "lat": st["lat"].to_numpy()[t.station], "lon": st["lon"].to_numpy()[t.station],
        "status": np.array(STATUSES, dtype=object)[t.status],
        "is_fraud": (t.scenario > 0).astype(np.int64),
        "scenario": scen_names[t.scenario],
    })


def truth(cfg: SimConfig, net: geo.Network, mk: market.Market, pop: people.Population, tx: pd.DataFrame,
          sales: pd.DataFrame, finfo: dict) -> dict[str, Any]:
    """The ground truth that downstream models are scored against."""
    n_tx = len(tx)
    counts = tx.loc[tx["is_fraud"] == 1, "scenario"].value_counts()
    st = net.stations
    card_share = float(sales["card_litres"].sum() / max(sales["litres"].sum(), 1e-9))
    return {
        "seed": cfg.seed,
        "config": cfg.as_dict(),
        "files": {k: list(v) for k, v in FILES.items()},
        "time": {"timezone": "UTC+08:00", "note": "ts columns are UTC; dates and hours are local (UTC+8)"},
        "demand": {
            "formula": "walkin_litres[s,p,d] = base_litres[s,p] * exp(weekday_effect[dow] + holiday_effect[type]"
                       "*is_holiday + pre_holiday_effect*is_pre_holiday + season_amplitude*sin(2*pi*(doy-105)/365.25)"
                       " + temp_coef*(temp_c-15) + rain_coef*min(rain_mm, rain_cap_mm) + price_response[s,p,d]"
                       " + N(0, walkin_noise_sd)); station_sales.litres = walkin + card_litres",
            "weekday_effect_mon_to_sun": list(market.WEEKDAY_EFFECT),
            "holiday_effect_by_station_type": market.HOLIDAY_EFFECT,
            "pre_holiday_effect": market.PRE_HOLIDAY_EFFECT,
            "season_amplitude": market.SEASON_AMPLITUDE, "season_phase_day_of_year": 105,
            "temp_coef_per_c_above_15": market.TEMP_COEF, "rain_coef_per_mm": market.RAIN_COEF,
            "rain_cap_mm": market.RAIN_CAP_MM, "walkin_noise_sd": market.WALKIN_NOISE_SD,
            "card_share_of_litres": round(card_share, 4),
            "card_fills": "Poisson per card x day: fills_per_week/7 * exp(weekday + season + pre_holiday + weather "
                          "+ clip(member trend*day/30, -2.5, 0.5)), thinned by min(1, exp(price_response - 0.25)); "
                          "on holidays the "
                          "share of travel fills at random (highway-weighted) stations rises from 5% to 25%",
            "hour_profiles_local": {k: list(activity.hour_profile(k).round(5)) for k in activity.HOUR_PROFILE},
            "base_litres": {f"{sid}|{fuel}": round(float(net.base_litres[i, j]), 1)
                            for i, sid in enumerate(st["station_id"]) for j, fuel in enumerate(geo.FUELS)
                            if net.has_product[i, j]},
        },
        "price_response": {
            "formula": "price_response[s,p,d] = own_elasticity*ln(price/guide_price[p,d]) + gap_coef[s]*"
                       "ln(price/mean competitor price within 3 km); gap term 0 where no competitor within 3 km",
            "own_elasticity": market.OWN_ELASTICITY,
            "card_thin_cap": activity.PRICE_THIN_CAP,
            "card_fills": "card fills are thinned by min(1, exp(price_response - card_thin_cap)); walk-in volume is "
                          "multiplied by exp(price_response)",
            "gap_coef_rule": f"-min({market.GAP_BASE} + {market.GAP_PER_COMPETITOR}*competitors_3km, "
                             f"{market.GAP_MAX}); 0 if competitors_3km == 0",
            "gap_coef": {sid: float(c) for sid, c in zip(st["station_id"], net.gap_coef, strict=True)},
            "total_own_price_elasticity": {sid: float(market.OWN_ELASTICITY + c)
                                           for sid, c in zip(st["station_id"], net.gap_coef, strict=True)},
            "price_experiment_sd": market.PRICE_EXPERIMENT_SD, "competitor_daily_sd": market.COMP_DAILY_SD,
            "guide_price": {"base_fen": market.GUIDE_BASE_FEN, "crude_exponent": market.GUIDE_CRUDE_EXPONENT,
                            "adjust_every_days": market.GUIDE_ADJUST_EVERY_DAYS,
                            "min_step": market.GUIDE_MIN_STEP, "crude_reference_usd": market.CRUDE_START},
            "guide_price_fen": {f: [float(x) for x in mk.guide[j].round(2)] for j, f in enumerate(geo.FUELS)},
            "wholesale_cost_share_of_guide": market.WHOLESALE_SHARE,
        },
        "churn": {
            "formula": "two stages. (1) disengagement onset with hazard per day = base_hazard * exp(sum(coef*x(t)) + "
                       "frailty), frailty ~ N(0, frailty_sd) unobserved; x: tier dummies (vs standard), trend_30d "
                       "(member's log change of fill rate per 30 days, visible in transactions), ln(fills_per_week), "
                       "price_sensitivity, price_sensitivity * home-station price gap to competitors in % (92#, "
                       "mean over the period), points_expiring_90d (opening_points >= 1000 and points_expire_date "
                       "within the next 90 days, time-varying), complaints_90d (complaints filed in the 90 days "
                       "before, time-varying; complaints.parquet). The hazard runs from burn_in_days before the "
                       "start (members whose churn would fall before the start are redrawn, up to 3 times, then "
                       "from the start). "
                       "(2) churn_date = onset + lag, lag ~ Gamma(lag_shape, lag_scale) days clipped to lag_clip. "
                       "From the onset the member's fill rate drops to (1 - fade_drop) and then fades linearly to "
                       "fade_floor at churn; after churn_date a member's cards stop transacting.",
            "base_hazard_per_day": people.BASE_HAZARD_PER_DAY,
            "coefficients": people.CHURN_COEFS,
            "frailty_sd": people.FRAILTY_SD, "burn_in_days": people.BURN_IN_DAYS,
            "lag_shape": people.LAG_SHAPE, "lag_scale": people.LAG_SCALE, "lag_clip": list(people.LAG_CLIP),
            "fade_drop": people.FADE_DROP, "fade_floor": people.FADE_FLOOR,
            "complaint_rate_per_day": people.COMPLAINT_RATE_PER_DAY,
            "complaint_rate_note": "complaint_rate_per_day * exp(z), z the latent dissatisfaction that also "
                                   "drives trend_30d = -0.05 - 0.3 z + N(0, 0.1)",
            "n_members": len(pop.members), "n_churned": int(pop.members["churned"].sum()),
            "trend_30d": {m: round(float(t), 4) for m, t in zip(pop.members["member_id"], pop.trend, strict=True)},
            "frailty": ({m: round(float(t), 4) for m, t in zip(pop.members["member_id"], pop.frailty, strict=True)}
                        if pop.frailty is not None else {}),
            "onset_day": ({m: round(float(t), 2) for m, t in zip(pop.members["member_id"], pop.onset_day,
                                                                 strict=True) if np.isfinite(t)}
                          if pop.onset_day is not None else {}),
            "onset_day_note": "days from the start date (negative: disengaged before the start); members "
                              "without an onset inside the simulated period are absent",
        },
        "fraud": {
            "target_rates": cfg.fraud_rates,
            "incidents": finfo["incidents"],
            "transactions": {s: int(counts.get(s, 0)) for s in SCENARIOS},
            "rates": {s: round(int(counts.get(s, 0)) / max(n_tx, 1), 6) for s in SCENARIOS},
            "total_rate": round(int(counts.sum()) / max(n_tx, 1), 6),
            "n_transactions": n_tx,
            "descriptions": {
                "cloned_card": "a second card fills far away within minutes of a genuine fill (speed >= 250 km/h)",
                "stolen_drain": "3-6 near-full fills within 6 h, half at random stations, often a new device",
                "over_capacity": "a fill of 1.15-1.7x the vehicle tank capacity",
                "card_testing": "4-10 tiny shop or fuel amounts within 30 min at one station on a new device",
                "fleet_geofence": "fleet vehicle fills outside its fleet's geofence radius",
                "fleet_product": "fleet card buys a fuel its fleet policy does not allow",
                "compromised_station": "one terminal of one urban station skims many nearby cards over 3-8 days "
                                       "with round amounts (collusive ring)",
                "night_anomaly": "1-4 am local fills on a card of a day-time driver",
            },
        },
        "leaks": {"tank_noise_sd_share_of_capacity": ops.TANK_NOISE_SHARE,
                  "note": "closing_l - expected_closing_l = -leak + reading noise difference"},
        "transactions": {"status_p": dict(zip(STATUSES, activity.STATUS_P, strict=True)),
                         "not_captured": "cancelled/timeout rows have litres 0, amount_fen = reserved amount, "
                                         "capture_ts null",
                         "travel_share": activity.TRAVEL_SHARE, "travel_share_holiday": activity.TRAVEL_SHARE_HOLIDAY},
    }
