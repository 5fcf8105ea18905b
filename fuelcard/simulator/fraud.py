"""Labelled fraud scenarios injected into the genuine activity (vectorised per scenario).

Each scenario adds new rows or mutates a few genuine rows and labels them (``scenario`` code > 0).
Genuine behaviour overlaps every signal on purpose (genuine travel, night-owl drivers, new phones, round
amounts), so detection needs history and combination, not one threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from fuelcard.simulator.activity import DAY_US, HOUR_US, Habits, TxArrays, base_us
from fuelcard.simulator.config import SCENARIOS
from fuelcard.simulator.geo import Network, haversine_km, to_xy
from fuelcard.simulator.market import Market
from fuelcard.simulator.people import Population

MIN_PER_MIN = 60_000_000
# mean transactions per incident, used to turn target transaction rates into incident counts
TX_PER_INCIDENT = {"cloned_card": 1.5, "stolen_drain": 4.5, "over_capacity": 1.0, "card_testing": 7.0,
                   "fleet_geofence": 1.5, "fleet_product": 1.0, "compromised_station": 1.3, "night_anomaly": 1.5}
MIN_INCIDENTS = 3


def code(name: str) -> int:
    """Scenario code stored in TxArrays.scenario (0 = genuine)."""
    return SCENARIOS.index(name) + 1


@dataclass
class _Ctx:
    rng: np.random.Generator
    net: Network
    mk: Market
    pop: Population
    hab: Habits
    base: int
    days: int
    n_devices: int  # next free device index

    def new_devices(self, n: int) -> np.ndarray:
        out = np.arange(self.n_devices, self.n_devices + n)
        self.n_devices += n
        return out

    def rows(self, card: np.ndarray, station: np.ndarray, product: np.ndarray, ts_us: np.ndarray,
             litres: np.ndarray | None, scenario: str, device: np.ndarray, *, amount: np.ndarray | None = None,
             status: np.ndarray | None = None, terminal: np.ndarray | None = None) -> TxArrays:
        n = len(card)
        ts_us = np.clip(ts_us, self.base, self.base + self.days * DAY_US - 1).astype(np.int64)
        day = np.clip((ts_us - self.base) // DAY_US, 0, self.days - 1)
        fuel = product < 4
        price = np.where(fuel, self.mk.own_price[station, np.minimum(product, 3), day], 0).astype(np.int64)
        lit = np.zeros(n) if litres is None else np.where(fuel, np.round(litres, 2), 0.0)
        amt = np.round(lit * price).astype(np.int64) if amount is None else amount.astype(np.int64)
        status = np.zeros(n, np.int64) if status is None else status
        lit = np.where(status == 1, 0.0, lit)
        delay = np.where(status == 1, -1, np.where(fuel, self.rng.integers(90, 420, n), 5) * 1_000_000)
        if terminal is None:
            terminal = (self.net.terminal_offset[station]
                        + (self.rng.random(n) * (self.net.terminals[station] - 1)).astype(np.int64))
            terminal = np.where(fuel, terminal, self.net.terminal_offset[station] + self.net.terminals[station] - 1)
        return TxArrays(card=card.astype(np.int64), station=station.astype(np.int64), product=product.astype(np.int64),
                        ts_us=ts_us, capture_delay_us=delay.astype(np.int64), litres=lit, unit_price=price,
                        amount=amt, status=status.astype(np.int64), scenario=np.full(n, code(scenario), np.int64),
                        device=device.astype(np.int64), terminal=terminal.astype(np.int64))

    def stocked(self, station: np.ndarray, fuel: np.ndarray) -> np.ndarray:
        ok = self.net.has_product[station, fuel]
        return np.where(ok, fuel, np.where(fuel == 2, 1, np.where(self.net.has_product[station, 0], 0, 1)))


def inject(rng: np.random.Generator, net: Network, mk: Market, pop: Population, hab: Habits, genuine: TxArrays,
           start, days: int, rates: dict[str, float], n_total_estimate: int) -> tuple[TxArrays, TxArrays, dict]:
    """Return (genuine rows with some mutated into fraud, new fraud rows, realised incidents per scenario)."""
    ctx = _Ctx(rng=rng, net=net, mk=mk, pop=pop, hab=hab, base=base_us(start), days=days,
               n_devices=hab.n_devices)
    g = genuine.take(np.arange(len(genuine)))  # copy
    st = net.stations
    slat, slon = st["lat"].to_numpy(), st["lon"].to_numpy()
    n_st = len(st)
    tree = cKDTree(to_xy(slat, slon))
    eligible = np.flatnonzero((g.status == 0) & (g.product < 4) & (g.scenario == 0))
    is_fleet_tx = pop.card_fleet[g.card] >= 0
    personal_anchor = eligible[~is_fleet_tx[eligible]]
    fleet_anchor = eligible[is_fleet_tx[eligible]]
    # a floor so every scenario shows up in small simulations, but never more than a sliver of a tiny one
    floor = MIN_INCIDENTS if n_total_estimate >= 20_000 else (1 if n_total_estimate >= 2_000 else 0)
    incidents = {
        s: max(floor, int(round(rates.get(s, 0.0) * n_total_estimate / TX_PER_INCIDENT[s])))
        if rates.get(s, 0.0) > 0 else 0
        for s in SCENARIOS
    }
    parts: list[TxArrays] = []
    used = np.zeros(len(g), bool)

    def anchors(pool: np.ndarray, k: int) -> np.ndarray:
        pool = pool[~used[pool]]
        if len(pool) == 0 or k == 0:
            return np.zeros(0, np.int64)
        pick = rng.choice(pool, min(k, len(pool)), replace=False)
        used[pick] = True
        return pick

    # cloned_card: the clone fills far away within minutes of the genuine fill (impossible travel)
    a = anchors(personal_anchor, incidents["cloned_card"])
    if len(a):
        cand = rng.integers(0, n_st, (len(a), 12))
        d = haversine_km(slat[g.station[a]][:, None], slon[g.station[a]][:, None], slat[cand], slon[cand])
        far = cand[np.arange(len(a)), d.argmax(axis=1)]
        dist = d.max(axis=1)
        dt = np.maximum(3.0, rng.uniform(0.2, 0.8, len(a)) * dist / 250.0 * 60.0)  # minutes, speed >= 250 km/h
        sign = np.where(rng.random(len(a)) < 0.5, -1, 1)
        ts1 = g.ts_us[a] + sign * (dt * MIN_PER_MIN).astype(np.int64)
        two = rng.random(len(a)) < 0.5
        _, near3 = tree.query(to_xy(slat[far], slon[far]), k=min(3, n_st))
        near3 = near3.reshape(len(a), -1)
        st2 = near3[np.arange(len(a)), rng.integers(0, near3.shape[1], len(a))]
        card = np.concatenate([g.card[a], g.card[a][two]])
        station = np.concatenate([far, st2[two]])
        ts = np.concatenate([ts1, ts1[two] + rng.integers(60, 180, int(two.sum())) * MIN_PER_MIN])
        fuel = ctx.stocked(station, pop.card_fuel[card])
        litres = pop.card_cap[card] * rng.uniform(0.6, 0.95, len(card))
        parts.append(ctx.rows(card, station, fuel, ts, litres, "cloned_card", np.full(len(card), -1)))

    # stolen_drain: several high fills within hours, often at stations the owner never uses
    a = anchors(personal_anchor, incidents["stolen_drain"])
    if len(a):
        k = rng.integers(3, 7, len(a))
        inc = np.repeat(np.arange(len(a)), k)
        t0 = g.ts_us[a] + rng.integers(1, 48, len(a)) * HOUR_US
        ts = t0[inc] + rng.integers(0, 6 * 60, len(inc)) * MIN_PER_MIN
        card = g.card[a][inc]
        home = pop.card_home[card]
        _, near10 = tree.query(to_xy(home[:, 0], home[:, 1]), k=min(10, n_st))
        near10 = near10.reshape(len(inc), -1)
        station = np.where(rng.random(len(inc)) < 0.5, rng.integers(0, n_st, len(inc)),
                           near10[np.arange(len(inc)), rng.integers(0, near10.shape[1], len(inc))])
        fuel = np.where(rng.random(len(inc)) < 0.4, rng.choice(np.array([1, 2]), len(inc)), pop.card_fuel[card])
        fuel = ctx.stocked(station, fuel)
        litres = pop.card_cap[card] * rng.uniform(0.8, 0.99, len(inc))
        dev = np.where(rng.random(len(a)) < 0.6, ctx.new_devices(len(a)), -1)[inc]
        parts.append(ctx.rows(card, station, fuel, ts, litres, "stolen_drain", dev))

    # over_capacity: a genuine-looking fill with more litres than the vehicle tank holds (mutated in place)
    a = anchors(eligible, incidents["over_capacity"])
    if len(a):
        cap = pop.card_cap[g.card[a]]
        g.litres[a] = np.round(cap * rng.uniform(1.15, 1.7, len(a)), 2)
        g.amount[a] = np.round(g.litres[a] * g.unit_price[a]).astype(np.int64)
        g.scenario[a] = code("over_capacity")

    # card_testing: bursts of tiny amounts within minutes on a new device
    a = anchors(personal_anchor, incidents["card_testing"])
    if len(a):
        k = rng.integers(4, 11, len(a))
        inc = np.repeat(np.arange(len(a)), k)
        t0 = g.ts_us[a] + rng.integers(-48, 48, len(a)) * HOUR_US
        ts = t0[inc] + rng.integers(0, 30 * 60, len(inc)) * 1_000_000
        card = g.card[a][inc]
        station = rng.integers(0, n_st, len(a))[inc]
        shop = rng.random(len(a)) < 0.5
        product = np.where(shop[inc], 4, ctx.stocked(station, pop.card_fuel[card]))
        litres = rng.uniform(0.1, 1.2, len(inc))
        amount = np.where(shop[inc], rng.integers(100, 1001, len(inc)), 0)
        row = ctx.rows(card, station, product, ts, litres, "card_testing", ctx.new_devices(len(a))[inc],
                       status=np.where(rng.random(len(inc)) < 0.3, 1, 0))
        row.amount = np.where(shop[inc], amount, row.amount).astype(np.int64)
        parts.append(row)

    # fleet_geofence: a fleet vehicle fills outside its geofence
    a = anchors(fleet_anchor, incidents["fleet_geofence"])
    if len(a):
        f = pop.card_fleet[g.card[a]]
        cand = rng.integers(0, n_st, (len(a), 20))
        d = haversine_km(pop.fleet_home[f, 0][:, None], pop.fleet_home[f, 1][:, None], slat[cand], slon[cand])
        outside = d > hab.fleet_radius[f][:, None] * 1.1
        pick = np.where(outside.any(axis=1), outside.argmax(axis=1), d.argmax(axis=1))
        station = cand[np.arange(len(a)), pick]
        two = rng.random(len(a)) < 0.5
        card = np.concatenate([g.card[a], g.card[a][two]])
        station = np.concatenate([station, station[two]])
        t = g.ts_us[a] + rng.integers(2, 72, len(a)) * HOUR_US
        ts = np.concatenate([t, t[two] + rng.integers(20, 240, int(two.sum())) * MIN_PER_MIN])
        fuel = ctx.stocked(station, pop.card_fuel[card])
        litres = pop.card_cap[card] * rng.uniform(0.6, 0.95, len(card))
        parts.append(ctx.rows(card, station, fuel, ts, litres, "fleet_geofence",
                              np.where(rng.random(len(card)) < 0.7, card, -1)))

    # fleet_product: a fleet card buys a product its policy forbids (a private car filled on the company card)
    a = anchors(fleet_anchor, incidents["fleet_product"])
    if len(a):
        f = pop.card_fleet[g.card[a]]
        truck = np.array([pop.fleet_allowed[x] == (3,) for x in f])
        fuel = np.where(truck, rng.choice(np.array([0, 1]), len(a)), np.where(rng.random(len(a)) < 0.6, 3, 2))
        fuel = np.where((fuel == 2) & ~net.has_product[g.station[a], 2], 3, fuel)
        day = np.clip((g.ts_us[a] - ctx.base) // DAY_US, 0, days - 1)
        g.product[a] = fuel
        g.unit_price[a] = mk.own_price[g.station[a], fuel, day].astype(np.int64)
        g.litres[a] = np.round(rng.uniform(30, 60, len(a)), 2)
        g.amount[a] = np.round(g.litres[a] * g.unit_price[a]).astype(np.int64)
        g.scenario[a] = code("fleet_product")

    # compromised_station: a collusive ring skims many different cards at one terminal over days
    n_ring_tx = incidents["compromised_station"]
    if n_ring_tx:
        n_rings = max(1, int(round(n_ring_tx * TX_PER_INCIDENT["compromised_station"] / 60)))
        traffic = np.bincount(g.station, minlength=n_st)
        urban = np.flatnonzero(st["station_type"].to_numpy() == "urban")
        top = urban[np.argsort(-traffic[urban])][: max(3, len(urban) // 3)]
        ring_st = rng.choice(top, min(n_rings, len(top)), replace=False)
        cards_per_ring = max(8, int(n_ring_tx / len(ring_st)))
        non_fleet = np.flatnonzero(pop.card_fleet < 0)
        ctree = cKDTree(to_xy(pop.card_home[non_fleet, 0], pop.card_home[non_fleet, 1]))
        for s in ring_st:  # a few rings, each vectorised
            window = int(min(days, rng.integers(3, 9)))
            d0 = int(rng.integers(0, max(1, days - window + 1)))
            near = non_fleet[ctree.query_ball_point(to_xy(slat[s:s + 1], slon[s:s + 1])[0], r=25.0)]
            near = near[pop.churn_day[pop.card_member[near]] > d0 + window]
            if len(near) < 3:
                near = non_fleet
            victims = rng.choice(near, min(cards_per_ring, len(near)), replace=False)
            k = np.where(rng.random(len(victims)) < 0.3, 2, 1)
            card = np.repeat(victims, k)
            m = len(card)
            day = d0 + rng.integers(0, window, m)
            ts = ctx.base + day * DAY_US + rng.integers(8, 22, m) * HOUR_US + rng.integers(0, HOUR_US, m)
            station = np.full(m, s)
            fuel = ctx.stocked(station, pop.card_fuel[card])
            price = mk.own_price[station, fuel, day]
            yuan = rng.integers(3, 9, m) * 100.0
            amount = np.floor(np.minimum(yuan * 100, pop.card_cap[card] * 0.95 * price) / 10000) * 10000
            amount = np.maximum(amount, 10000)
            term = np.full(m, net.terminal_offset[s] + int(rng.integers(0, net.terminals[s] - 1)))
            parts.append(ctx.rows(card, station, fuel, ts, amount / price, "compromised_station", np.full(m, -1),
                                  amount=amount, terminal=term))

    # night_anomaly: 1-4 am local fills on a card that fills by day
    pool = personal_anchor[~pop.card_night_owl[g.card[personal_anchor]]]
    a = anchors(pool, incidents["night_anomaly"])
    if len(a):
        two = rng.random(len(a)) < 0.5
        inc = np.concatenate([np.arange(len(a)), np.flatnonzero(two)])
        day = np.clip((g.ts_us[a] - ctx.base) // DAY_US + rng.integers(1, 6, len(a)), 0, days - 1)
        t = ctx.base + day * DAY_US + rng.integers(1, 4, len(a)) * HOUR_US + rng.integers(0, HOUR_US, len(a))
        ts = t[inc] + np.where(np.arange(len(inc)) >= len(a), rng.integers(10, 45, len(inc)), 0) * MIN_PER_MIN
        card = g.card[a][inc]
        home = pop.card_home[card]
        _, near5 = tree.query(to_xy(home[:, 0], home[:, 1]), k=min(5, n_st))
        near5 = near5.reshape(len(inc), -1)
        station = near5[np.arange(len(inc)), rng.integers(0, near5.shape[1], len(inc))]
        fuel = ctx.stocked(station, pop.card_fuel[card])
        litres = pop.card_cap[card] * rng.uniform(0.75, 0.97, len(inc))
        dev = np.where(rng.random(len(a)) < 0.5, ctx.new_devices(len(a)), -1)[inc]
        parts.append(ctx.rows(card, station, fuel, ts, litres, "night_anomaly", dev))

    new = TxArrays.concat(parts) if parts else g.take(np.zeros(0, np.int64))
    return g, new, {"incidents": incidents, "n_devices": ctx.n_devices}
