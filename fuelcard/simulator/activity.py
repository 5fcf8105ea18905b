"""Genuine card activity: fills (vectorised Poisson counts per card x day), shop and car wash, recharges,
redemptions. No per-event Python loop: every event attribute is drawn for all events at once."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date, timedelta

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from fuelcard.simulator.geo import REGIONS, Network, to_xy
from fuelcard.simulator.ids import seq_ids
from fuelcard.simulator.market import PRE_HOLIDAY_EFFECT, WEEKDAY_EFFECT, Market
from fuelcard.simulator.people import FADE_DROP, FADE_FLOOR, TIER_POINTS_MULTIPLIER, Population

DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
STATUSES: tuple[str, ...] = ("captured", "cancelled", "timeout", "refunded")
STATUS_P = (0.965, 0.015, 0.010, 0.010)
# local-hour weights (0..23)
HOUR_PROFILE = {
    "car": (0.35, 0.15, 0.08, 0.06, 0.1, 0.4, 1.3, 2.8, 3.4, 2.6, 2.0, 2.0, 2.2, 1.9, 1.9, 2.1, 2.7, 3.5, 3.3, 2.4,
            1.8, 1.3, 0.9, 0.6),
    "night_owl": (1.6, 1.4, 1.2, 1.0, 0.9, 1.0, 1.3, 1.8, 2.0, 1.8, 1.6, 1.6, 1.7, 1.6, 1.6, 1.7, 1.9, 2.0, 2.0, 1.9,
                  1.8, 1.8, 1.7, 1.7),
    "truck": (0.8, 0.6, 0.5, 0.5, 0.8, 1.5, 2.5, 3.0, 3.0, 2.6, 2.2, 2.0, 1.8, 1.8, 1.9, 2.0, 2.0, 1.9, 1.6, 1.3, 1.1,
              1.0, 0.9, 0.9),
}
TRAVEL_SHARE, TRAVEL_SHARE_HOLIDAY = 0.05, 0.25
SHOP_P, WASH_P = 0.20, 0.07
PHONE_CHANGE_SHARE = 0.04  # genuine holders who switch to a new phone (new device id) during the period
PRICE_THIN_CAP = 0.25  # accept a candidate fill with prob min(1, exp(price_response - cap))
TREND_CLIP = (-2.5, 0.5)  # bounds of a member's cumulative log drift in fill rate (long simulations)


def hour_profile(kind: str) -> np.ndarray:
    """Normalised local-hour profile."""
    p = np.asarray(HOUR_PROFILE[kind], float)
    return p / p.sum()


def station_hour_profile(station_type: str) -> np.ndarray:
    """Walk-in hourly profile by station type (highways carry more night and truck traffic)."""
    car, truck = hour_profile("car"), hour_profile("truck")
    if station_type == "highway":
        p = 0.55 * car + 0.35 * truck + 0.10 / 24
    elif station_type == "rural":
        p = 0.7 * car + 0.3 * truck
    else:
        p = 0.95 * car + 0.05 / 24
    return p / p.sum()


@dataclass
class TxArrays:
    """Columnar transactions under construction (integer codes; strings are attached at the end)."""

    card: np.ndarray
    station: np.ndarray
    product: np.ndarray  # 0..5 -> 92, 95, 98, diesel, shop, wash
    ts_us: np.ndarray  # authorisation time, UTC microseconds since epoch
    capture_delay_us: np.ndarray  # -1 when not captured
    litres: np.ndarray
    unit_price: np.ndarray
    amount: np.ndarray
    status: np.ndarray
    scenario: np.ndarray  # 0 genuine, 1.. index into SCENARIOS + 1
    device: np.ndarray  # -1 none, < n_cards: the card's device, else extra device
    terminal: np.ndarray  # global terminal index

    def __len__(self) -> int:
        return len(self.card)

    @staticmethod
    def concat(parts: list[TxArrays]) -> TxArrays:
        """Concatenate column-wise."""
        return TxArrays(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(TxArrays)})

    def take(self, idx: np.ndarray) -> TxArrays:
        """Rows by index."""
        return TxArrays(**{f.name: getattr(self, f.name)[idx] for f in fields(TxArrays)})


def base_us(start: date) -> int:
    """UTC microseconds of local midnight at the start date."""
    return int((pd.Timestamp(start, tz="UTC") - pd.Timedelta(hours=8)).value // 1000)


@dataclass(frozen=True)
class Habits:
    """Per-card station habits."""

    pref: np.ndarray  # (cards, 3) station indices
    cumw: np.ndarray  # (cards, 2) cumulative weights of the first two preferred stations
    app_user: np.ndarray
    fleet_radius: np.ndarray  # possibly widened geofence radius per fleet
    phone_change_day: np.ndarray  # per card: day from which the holder pays from a new phone (inf = never)
    new_device: np.ndarray  # per card: device index used after the change
    n_devices: int  # devices allocated so far (card devices + genuine new phones)


def build_habits(rng: np.random.Generator, net: Network, pop: Population, days: int) -> Habits:
    """Preferred stations near home, work and the commute midpoint; fleets near their depot."""
    st = net.stations
    xy = to_xy(st["lat"].to_numpy(), st["lon"].to_numpy())
    tree = cKDTree(xy)
    C = len(pop.card_member)
    k_home = min(3, len(st))
    _, near_home = tree.query(to_xy(pop.card_home[:, 0], pop.card_home[:, 1]), k=k_home)
    near_home = near_home.reshape(C, -1)
    _, near_work = tree.query(to_xy(pop.card_work[:, 0], pop.card_work[:, 1]), k=2)
    mid = (pop.card_home + pop.card_work) / 2
    _, near_mid = tree.query(to_xy(mid[:, 0], mid[:, 1]))
    pick = rng.integers(0, near_home.shape[1], C)
    pref = np.column_stack([near_home[np.arange(C), pick], near_work[np.arange(C), rng.integers(0, 2, C)],
                            near_mid])
    w = rng.dirichlet([5.0, 3.0, 2.0], C)
    # fleets: three of the five stations nearest the depot; geofence radius widened to contain them
    F = len(pop.fleet_radius)
    dist5, near5 = tree.query(to_xy(pop.fleet_home[:, 0], pop.fleet_home[:, 1]), k=min(5, len(st)))
    dist5, near5 = dist5.reshape(F, -1), near5.reshape(F, -1)
    radius = np.maximum(pop.fleet_radius, np.ceil(dist5.max(axis=1) * 1.25))
    is_fleet = pop.card_fleet >= 0
    f = pop.card_fleet[is_fleet]
    choice = np.argsort(rng.random((len(f), near5.shape[1])), axis=1)[:, :3]
    pref[is_fleet] = near5[f[:, None], choice]
    w[is_fleet] = rng.dirichlet([4.0, 3.0, 3.0], len(f))
    cumw = np.cumsum(w, axis=1)[:, :2]
    app_user = rng.random(C) < 0.7
    changes = rng.random(C) < PHONE_CHANGE_SHARE
    change_day = np.where(changes, rng.uniform(0, 1, C) * max(1, days), np.inf)
    new_device = np.where(changes, C + np.cumsum(changes) - 1, -1)
    return Habits(pref=pref, cumw=cumw, app_user=app_user, fleet_radius=radius, phone_change_day=change_day,
                  new_device=new_device, n_devices=C + int(changes.sum()))


def _stocked(net: Network, station: np.ndarray, fuel: np.ndarray) -> np.ndarray:
    """Fuel actually sold at the station: 98 falls back to 95 where no 98 nozzle exists."""
    ok = net.has_product[station, fuel]
    return np.where(ok, fuel, np.where(fuel == 2, 1, np.where(net.has_product[station, 0], 0, 1)))


def genuine_fills(rng: np.random.Generator, net: Network, mk: Market, pop: Population, hab: Habits,
                  start: date) -> TxArrays:
    """All genuine fuel fills: Poisson counts per card x day, then every attribute drawn in bulk."""
    days = len(mk.dates)
    C = len(pop.card_member)
    n_st = len(net.stations)
    stype = net.stations["station_type"].to_numpy()
    day_log = np.array(WEEKDAY_EFFECT)[mk.weekday] + mk.season + PRE_HOLIDAY_EFFECT * mk.pre_holiday
    region_idx = pd.Series(pop.member_region[pop.card_member]).map({r: i for i, r in enumerate(REGIONS)}).to_numpy()
    thin = np.minimum(1.0, np.exp(mk.price_response - PRICE_THIN_CAP))
    K = 1.0 / float(thin[net.has_product].mean())

    lam = np.empty((C, days), dtype=np.float32)
    d_ar = np.arange(days, dtype=np.float32)
    churn = pop.churn_day[pop.card_member]
    has_onset = pop.onset_day is not None and pop.leave_day is not None
    onset = pop.onset_day[pop.card_member] if has_onset else np.full(C, np.inf)
    leave = pop.leave_day[pop.card_member] if has_onset else np.full(C, np.inf)
    fading = np.isfinite(onset)
    onset_f = np.where(fading, onset, 0.0)
    leave_f = np.where(fading, leave, 1.0)
    span = np.maximum(leave_f - onset_f, 1.0)
    trend = pop.trend[pop.card_member]
    for k in range(days):  # one vectorised pass per day
        # disengaged (past the onset): drop to 1 - FADE_DROP, then fade linearly to FADE_FLOOR at leaving
        left = np.clip((leave_f - k) / span, 0.0, 1.0)
        fade = np.where(fading & (k + 0.5 >= onset_f), np.maximum(FADE_FLOOR, (1.0 - FADE_DROP) * left), 1.0)
        alive = np.clip(churn - k, 0.0, 1.0) * fade
        drift = np.clip(trend * d_ar[k] / 30.0, TREND_CLIP[0], TREND_CLIP[1])
        lam[:, k] = pop.card_rate * K * np.exp(day_log[k] + mk.weather_log[region_idx, k] + drift) * alive
    counts = rng.poisson(lam)
    del lam
    ci, di = np.nonzero(counts)
    reps = counts[ci, di]
    card = np.repeat(ci, reps).astype(np.int64)
    day = np.repeat(di, reps).astype(np.int64)
    n = len(card)

    # station: travel (any station, highways favoured) or one of three habitual stations
    travel_p = np.where(mk.holiday[day], TRAVEL_SHARE_HOLIDAY, TRAVEL_SHARE) * (pop.card_fleet[card] < 0)
    travel = rng.random(n) < travel_p
    sw = np.where(stype == "highway", 3.0, np.where(stype == "rural", 1.5, 1.0))
    travel_station = rng.choice(n_st, n, p=sw / sw.sum())
    u = rng.random(n)
    slot = (u > hab.cumw[card, 0]).astype(np.int64) + (u > hab.cumw[card, 1])
    station = np.where(travel, travel_station, hab.pref[card, slot])

    # product: vehicle fuel, occasional grade switch for gasoline
    fuel = pop.card_fuel[card].copy()
    r = rng.random(n)
    fuel = np.where((fuel == 0) & (r < 0.05), 1, fuel)
    fuel = np.where((fuel == 1) & (r < 0.08), 0, np.where((fuel == 1) & (r > 0.97), 2, fuel))
    fuel = np.where((fuel == 2) & (r < 0.10), 1, fuel)
    fuel = _stocked(net, station, fuel)

    # price response: thin candidates by the true volume multiplier
    keep = rng.random(n) < thin[station, fuel, day]
    card, day, station, fuel = card[keep], day[keep], station[keep], fuel[keep]
    n = len(card)

    # time of day (local), by habit
    is_truck = pop.card_cap[card] >= 150
    owl = pop.card_night_owl[card]
    hours = np.empty(n, dtype=np.int64)
    for kind, mask in (("car", ~owl & ~is_truck), ("night_owl", owl), ("truck", ~owl & is_truck)):
        cnt = int(mask.sum())
        hours[mask] = rng.choice(24, cnt, p=hour_profile(kind))
    ts_us = base_us(start) + day * DAY_US + hours * HOUR_US + rng.integers(0, HOUR_US, n)

    # litres and money
    cap = pop.card_cap[card]
    frac = np.where(is_truck, rng.beta(6.0, 2.5, n), rng.beta(4.0, 2.5, n)).clip(0.08, 0.97)
    litres = cap * frac
    price = mk.own_price[station, fuel, day].astype(np.int64)
    round_amount = (~is_truck) & (rng.random(n) < 0.3)
    yuan = rng.choice(np.array([100, 150, 200, 300]), n)
    litres = np.where(round_amount, np.minimum(yuan * 100.0 / price, cap * 0.97), litres)
    litres = np.round(litres, 2)
    amount = np.round(litres * price).astype(np.int64)
    status = rng.choice(4, n, p=STATUS_P)
    not_captured = (status == 1) | (status == 2)
    reserved = np.where(is_truck, 300_000, rng.choice(np.array([30_000, 50_000]), n))
    amount = np.where(not_captured, reserved, amount)
    litres = np.where(not_captured, 0.0, litres)
    delay = np.where(is_truck, rng.integers(300, 900, n), rng.integers(90, 420, n)) * 1_000_000
    delay = np.where(not_captured, -1, delay)

    device = np.where(hab.app_user[card] & (rng.random(n) < 0.9), card, -1)
    device = np.where((device >= 0) & (day >= hab.phone_change_day[card]), hab.new_device[card], device)
    term = net.terminal_offset[station] + (rng.random(n) * (net.terminals[station] - 1)).astype(np.int64)
    return TxArrays(card=card, station=station, product=fuel.astype(np.int64), ts_us=ts_us.astype(np.int64),
                    capture_delay_us=delay.astype(np.int64), litres=litres, unit_price=price, amount=amount,
                    status=status.astype(np.int64), scenario=np.zeros(n, np.int64), device=device.astype(np.int64),
                    terminal=term.astype(np.int64))


def shop_and_wash(rng: np.random.Generator, net: Network, fills: TxArrays, start: date) -> TxArrays:
    """Shop and car-wash purchases attached to captured fills at stations that have them."""
    st = net.stations
    has_shop = st["has_shop"].to_numpy()[fills.station]
    has_wash = st["has_wash"].to_numpy()[fills.station]
    captured = fills.status == 0
    n = len(fills)
    parts = []
    for prod, mask, amount in (
        (4, captured & has_shop & (rng.random(n) < SHOP_P), None),
        (5, captured & has_wash & (rng.random(n) < WASH_P), np.array([2500, 3000, 4000, 6000])),
    ):
        idx = np.flatnonzero(mask)
        m = len(idx)
        amt = (np.exp(rng.normal(np.log(3000), 0.7, m)).clip(300, 50_000).round().astype(np.int64)
               if amount is None else rng.choice(amount, m))
        status = np.where(rng.random(m) < 0.01, 3, 0)
        ts = fills.ts_us[idx] + fills.capture_delay_us[idx] + rng.integers(60, 600, m) * 1_000_000
        day_end = base_us(start) + ((fills.ts_us[idx] - base_us(start)) // DAY_US + 1) * DAY_US - 1_000_000
        ts = np.minimum(ts, day_end)  # same local day as the fill
        pos = net.terminal_offset[fills.station[idx]] + net.terminals[fills.station[idx]] - 1
        parts.append(TxArrays(card=fills.card[idx], station=fills.station[idx], product=np.full(m, prod),
                              ts_us=ts, capture_delay_us=np.full(m, 5_000_000), litres=np.zeros(m),
                              unit_price=np.zeros(m, np.int64), amount=amt, status=status,
                              scenario=np.zeros(m, np.int64), device=fills.device[idx], terminal=pos))
    return TxArrays.concat(parts)


def recharges(rng: np.random.Generator, pop: Population, tx: TxArrays, start: date, days: int) -> pd.DataFrame:
    """Top-ups: personal/family cards recharge round amounts to cover their spend; fleets batch-recharge monthly."""
    C = len(pop.card_member)
    paid = (tx.status == 0) | (tx.status == 3)
    spend = np.bincount(tx.card[paid], weights=tx.amount[paid], minlength=C)
    personal = pop.card_fleet < 0
    unit = np.where(spend > 300_000, 200_000, np.where(spend > 100_000, 100_000, 50_000))
    n_rech = np.where(personal, np.ceil(spend / unit), 0).astype(np.int64)
    idx = np.repeat(np.arange(C), n_rech)
    horizon = np.minimum(pop.churn_day[pop.card_member[idx]], days)
    ts = base_us(start) + (rng.random(len(idx)) * horizon * DAY_US).astype(np.int64)
    amt = unit[idx]
    batch = np.full(len(idx), None, dtype=object)
    # fleet batch recharges on day 0 and the 1st of each month while the fleet is active
    starts = [k for k in range(days) if k == 0 or (start + timedelta(k)).day == 1]
    fleet_cards = np.flatnonzero(~personal)
    f_idx, f_ts, f_amt, f_batch = [], [], [], []
    card_ids = pop.cards["card_id"].to_numpy()
    fleet_ids = pop.fleets["fleet_id"].to_numpy()
    for k in starts:  # a handful of months
        alive = pop.churn_day[pop.card_member[fleet_cards]] > k
        fc = fleet_cards[alive]
        f_idx.append(fc)
        f_ts.append(np.full(len(fc), base_us(start) + k * DAY_US + 9 * HOUR_US))
        monthly = pop.card_rate[fc] * 30 * pop.card_cap[fc] * 0.7 * 700
        f_amt.append((np.ceil(monthly / 100_000) * 100_000).astype(np.int64))
        ym = (start + timedelta(k)).strftime("%Y%m")
        f_batch.append(np.array([f"B{fleet_ids[pop.card_fleet[c]]}-{ym}" for c in fc], dtype=object))
    all_idx = np.concatenate([idx, *f_idx]) if f_idx else idx
    all_ts = np.concatenate([ts, *f_ts]) if f_ts else ts
    all_amt = np.concatenate([amt, *f_amt]) if f_amt else amt
    all_batch = np.concatenate([batch, *f_batch]) if f_batch else batch
    order = np.lexsort((all_idx, all_ts))
    return pd.DataFrame({
        "recharge_id": seq_ids("R", len(order), 8),
        "ts": pd.to_datetime(all_ts[order], unit="us", utc=True).astype("datetime64[us, UTC]"),
        "card_id": card_ids[all_idx[order]], "amount_fen": all_amt[order].astype(np.int64),
        "batch_id": all_batch[order],
    })


def redemptions(rng: np.random.Generator, pop: Population, tx: TxArrays, start: date, days: int) -> pd.DataFrame:
    """Points redemptions: members spend part of what they earned (tier multiplier) plus opening points."""
    M = len(pop.members)
    paid = tx.status == 0
    tier_mult = pop.members["tier"].map(TIER_POINTS_MULTIPLIER).to_numpy(float)
    member = pop.card_member[tx.card[paid]]
    earned = np.bincount(member, weights=tx.amount[paid] / 100.0, minlength=M) * tier_mult
    earned = earned + pop.members["opening_points"].to_numpy()
    n_red = rng.poisson(np.minimum(3.0, earned / 6000.0))
    idx = np.repeat(np.arange(M), n_red)
    share = earned[idx] / (n_red[idx] + 1)
    pts = np.maximum(100, np.floor(np.minimum(share, rng.choice(np.array([500, 1000, 2000, 5000]), len(idx)))
                                   / 100) * 100).astype(np.int64)
    horizon = np.minimum(pop.churn_day[idx], days)
    ts = base_us(start) + (rng.random(len(idx)) * horizon * DAY_US).astype(np.int64)
    items = np.array(["car_wash_voucher", "shop_coupon_20", "fuel_discount_50", "gift"], dtype=object)
    order = np.lexsort((idx, ts))
    return pd.DataFrame({
        "redemption_id": seq_ids("P", len(order), 8),
        "ts": pd.to_datetime(ts[order], unit="us", utc=True).astype("datetime64[us, UTC]"),
        "member_id": pop.members["member_id"].to_numpy()[idx[order]], "points": pts[order],
        "item": items[rng.integers(0, len(items), len(order))],
    })
