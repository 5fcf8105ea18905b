"""Members, families, fleets, vehicles, cards and the true churn process."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from fuelcard.simulator.geo import (
    BBOX,
    KM_PER_DEG_LAT,
    PLATE_PREFIX,
    REGIONS,
    city_arrays,
    nearest_city,
    scatter,
    to_xy,
)
from fuelcard.simulator.ids import seq_ids

TIERS: tuple[str, ...] = ("standard", "silver", "gold", "diamond")
TIER_POINTS_MULTIPLIER = {"standard": 1.0, "silver": 1.2, "gold": 1.5, "diamond": 2.0}
#: Churn is a two-stage process. A member first *disengages* (latent onset, hazard below); from the onset on
#: the fill rate drops to (1 - FADE_DROP) of normal and then fades linearly to FADE_FLOOR at the churn date,
#: which comes LAG_SHAPE/LAG_SCALE (gamma, days, clipped to LAG_CLIP) after the onset. So leaving shows in the
#: member's fills (frequency/monetary trend, recency) weeks before the churn date.
FADE_DROP, FADE_FLOOR = 0.65, 0.15
LAG_SHAPE, LAG_SCALE, LAG_CLIP = 4.0, 18.0, (14.0, 180.0)
#: Disengagement onset hazard per day: BASE_HAZARD_PER_DAY * exp(eta(t)), eta(t) = sum(coef * covariate(t)) +
#: frailty, frailty ~ N(0, FRAILTY_SD) unobserved. Time-varying terms: points_expiring_90d, complaints_90d.
#: The hazard runs from BURN_IN_DAYS before the start, so some members are already fading at the start (members
#: whose churn would fall before the start are redrawn: the member base is the survivors).
BASE_HAZARD_PER_DAY = 0.00045
FRAILTY_SD = 0.35
BURN_IN_DAYS = 240
CHURN_COEFS = {
    "tier_silver": -0.5, "tier_gold": -1.0, "tier_diamond": -1.6,
    "complaints_90d": 0.9,  # per complaint filed in the last 90 days
    "trend_30d": -4.0,  # per unit of log change in fill rate per 30 days (declining -> higher hazard)
    "log_fills_per_week": -0.8,
    "points_expiring_90d": 1.2,  # opening_points >= 1000 whose points_expire_date is within the next 90 days
    "price_sensitivity": 1.0,
    "price_sensitivity_x_gap_pct": 0.3,  # price_sensitivity * (home-station price gap to competitors, %)
}
#: Complaints: Poisson process, COMPLAINT_RATE_PER_DAY * exp(latent dissatisfaction z), z also drives the trend.
COMPLAINT_RATE_PER_DAY = 0.002
CARD_KEY = b"fuelcard-simulator-token-key"
_AREA = {"Shanghai": (310101, 310120), "Jiangsu": (320102, 320583), "Zhejiang": (330102, 330483)}
_ID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2])
_ID_CHECK = np.array(list("10X98765432"))


@dataclass(frozen=True)
class Population:
    """Entity frames plus the per-card arrays the activity stage needs."""

    members: pd.DataFrame
    vehicles: pd.DataFrame
    fleets: pd.DataFrame
    cards: pd.DataFrame
    churn_day: np.ndarray  # per member: churn time in days from start (inf = none)
    trend: np.ndarray  # per member: log change of fill rate per 30 days
    # per card
    card_member: np.ndarray
    card_rate: np.ndarray  # fills per day at start
    card_cap: np.ndarray  # tank capacity litres
    card_fuel: np.ndarray  # fuel index 0..3
    card_fleet: np.ndarray  # fleet index or -1
    card_night_owl: np.ndarray
    card_home: np.ndarray  # (cards, 2) lat, lon
    card_work: np.ndarray
    card_limit: np.ndarray  # per-tx limit fen (0 = none)
    fleet_home: np.ndarray  # (fleets, 2)
    fleet_radius: np.ndarray
    fleet_allowed: list[tuple[int, ...]]  # allowed fuel indices per fleet
    member_region: np.ndarray
    onset_day: np.ndarray | None = None  # per member: disengagement onset, days from start (inf = none)
    leave_day: np.ndarray | None = None  # per member: onset + lag, also beyond the simulated days (inf = none)
    frailty: np.ndarray | None = None  # per member: unobserved log-hazard term
    complaint_member: np.ndarray | None = None  # complaints: member index
    complaint_day: np.ndarray | None = None  # complaints: time in days from start (fractional)


def id_numbers(rng: np.random.Generator, regions: np.ndarray, start: date) -> np.ndarray:
    """Synthetic 18-character resident ID numbers with a valid ISO 7064 check character."""
    n = len(regions)
    lo = np.array([_AREA[r][0] for r in regions])
    hi = np.array([_AREA[r][1] for r in regions])
    area = lo + (rng.random(n) * (hi - lo)).astype(int)
    birth = np.datetime64(start) - rng.integers(18 * 365, 70 * 365, n).astype("timedelta64[D]")
    month = birth.astype("datetime64[M]")
    ymd = ((month.astype("datetime64[Y]").astype(np.int64) + 1970) * 10000
           + (month.astype(np.int64) % 12 + 1) * 100 + (birth - month.astype("datetime64[D]")).astype(np.int64) + 1)
    seq = rng.integers(0, 1000, n)
    body = [f"{a:06d}{b:08d}{s:03d}" for a, b, s in zip(area, ymd, seq, strict=True)]
    digits = np.frombuffer("".join(body).encode(), dtype=np.uint8).reshape(n, 17) - ord("0")
    check = _ID_CHECK[(digits * _ID_WEIGHTS).sum(axis=1) % 11]
    return np.array([b + c for b, c in zip(body, check, strict=True)], dtype=object)


def card_tokens(pans: list[str]) -> np.ndarray:
    """Tokens of synthetic card numbers, equal to :func:`fuelcard.privacy.tokenize_pan` with the simulator key.

    The first 24 base32 characters encode exactly the first 15 digest bytes, so all digests are encoded in one
    call (``tokenize_pan`` per card spends most of its time in ``b32encode``).

    >>> from fuelcard.privacy import tokenize_pan
    >>> card_tokens(["6214830000000001"])[0] == tokenize_pan("6214830000000001", key=CARD_KEY)
    True
    """
    raw = b"".join(hmac.new(CARD_KEY, p.encode(), hashlib.sha256).digest()[:15] for p in pans)
    enc = base64.b32encode(raw).decode()
    return np.array([enc[i:i + 24] for i in range(0, len(enc), 24)], dtype=object)


def phones(rng: np.random.Generator, n: int) -> np.ndarray:
    """Synthetic 11-digit mobile numbers."""
    second = rng.choice(np.array([3, 5, 7, 8, 9]), n)
    rest = rng.integers(0, 10**9, n)
    return np.array([f"1{a}{b:09d}" for a, b in zip(second, rest, strict=True)], dtype=object)


def _hex_ids(rng: np.random.Generator, n: int, prefix: str) -> np.ndarray:
    vals = rng.integers(0, 2**40, n)
    return np.array([f"{prefix}{v:010x}" for v in vals], dtype=object)


def build_population(rng: np.random.Generator, n_members: int, start: date, days: int, *,
                     home_gap_pct_fn) -> Population:
    """Members (with families and fleet owners), vehicles, fleets, cards; draw true churn times.

    ``home_gap_pct_fn(lat, lon) -> ndarray`` gives the price gap (%) of the station nearest each home.
    """
    c = city_arrays()
    M = n_members
    F = max(2, M // 500)
    is_fleet_owner = np.zeros(M, bool)
    is_fleet_owner[rng.choice(M, F, replace=False)] = True
    fleet_owner_idx = np.flatnonzero(is_fleet_owner)

    # homes and workplaces
    kind = rng.choice(3, M, p=[0.7, 0.2, 0.1])
    ci = rng.choice(len(c["name"]), M, p=c["weight"] / c["weight"].sum())
    h_lat, h_lon = scatter(rng, c["lat"][ci], c["lon"][ci], c["radius"][ci] * 1.1)
    ang = rng.uniform(0, 2 * np.pi, M)
    ring = c["radius"][ci] * rng.uniform(1.5, 3.0, M)
    s_lat = c["lat"][ci] + ring * np.sin(ang) / KM_PER_DEG_LAT
    s_lon = c["lon"][ci] + ring * np.cos(ang) / (KM_PER_DEG_LAT * 0.857)
    r_lat = rng.uniform(BBOX[0] + 0.2, BBOX[1] - 0.2, M)
    r_lon = rng.uniform(BBOX[2] + 0.2, BBOX[3] - 0.3, M)
    home_lat = np.select([kind == 0, kind == 1], [h_lat, s_lat], r_lat)
    home_lon = np.select([kind == 0, kind == 1], [h_lon, s_lon], r_lon)
    wci = np.where(rng.random(M) < 0.82, ci, rng.choice(len(c["name"]), M, p=c["weight"] / c["weight"].sum()))
    work_lat, work_lon = scatter(rng, c["lat"][wci], c["lon"][wci], c["radius"][wci] * 0.6)
    work_lat = np.where(is_fleet_owner, home_lat, work_lat)
    work_lon = np.where(is_fleet_owner, home_lon, work_lon)

    # families among non-fleet members: groups of 2-4 sharing a home
    family_id = np.full(M, None, dtype=object)
    is_main = np.zeros(M, bool)
    main_of = np.full(M, -1)
    pool = rng.permutation(np.flatnonzero(~is_fleet_owner))[: int(0.25 * (M - F))]
    sizes = rng.integers(2, 5, len(pool) // 2 + 1)
    ends = np.cumsum(sizes)
    ends = ends[ends <= len(pool)]
    starts = np.concatenate([[0], ends[:-1]])
    for k, (a, b) in enumerate(zip(starts, ends, strict=True)):  # loop over families (entities, not events)
        grp = pool[a:b]
        family_id[grp] = f"F{k + 1:06d}"
        is_main[grp[0]] = True
        main_of[grp] = grp[0]
        home_lat[grp] = home_lat[grp[0]]
        home_lon[grp] = home_lon[grp[0]]

    region = c["region"][nearest_city(home_lat, home_lon)].astype(object)

    # habits
    fpw = np.exp(rng.normal(np.log(1.1), 0.5, M)).clip(0.2, 7.0)
    heavy = rng.random(M) < 0.04  # ride-hailing / taxi drivers
    fpw = np.where(heavy, rng.uniform(4.0, 7.0, M), fpw)
    night_owl_member = heavy | (rng.random(M) < 0.03)
    price_sens = rng.beta(2, 3, M)
    z = rng.normal(0, 1, M)  # latent disengagement
    trend = -0.05 - 0.3 * z + rng.normal(0, 0.1, M)
    score = np.log(fpw) + rng.normal(0, 0.5, M) + np.where(is_fleet_owner, 2.0, 0.0)
    q = np.quantile(score, [0.55, 0.80, 0.94])
    tier_idx = np.searchsorted(q, score)
    tier = np.array(TIERS, dtype=object)[tier_idx]
    opening_points = np.round(np.exp(rng.normal(6.5, 1.2, M)) * np.array([1, 1.2, 1.5, 2.0])[tier_idx]).astype(int)
    expire_off = rng.integers(5, 400, M)
    points_expire = np.array([start + timedelta(int(x)) for x in expire_off], dtype=object)
    joined_off = rng.integers(30, 3000, M)
    joined = np.array([start - timedelta(int(x)) for x in joined_off], dtype=object)

    # fleets
    fleet_home = np.column_stack([home_lat[fleet_owner_idx], home_lon[fleet_owner_idx]])
    truck_fleet = rng.random(F) < 0.7
    truck_fleet[0] = True
    truck_fleet[1] = False
    radius = rng.uniform(30, 80, F).round(1)
    allowed = [(3,) if t else (0, 1) for t in truck_fleet]
    per_tx = np.where(truck_fleet, 350_000, 70_000)
    fleet_ids = np.array([f"FL{k + 1:04d}" for k in range(F)], dtype=object)
    member_ids = np.array([f"M{k + 1:07d}" for k in range(M)], dtype=object)
    fleets = pd.DataFrame({
        "fleet_id": fleet_ids, "name": [f"{'Logistics' if t else 'Services'} Co. {k + 1:04d}"
                                        for k, t in enumerate(truck_fleet)],
        "region": region[fleet_owner_idx], "home_lat": fleet_home[:, 0].round(6), "home_lon": fleet_home[:, 1].round(6),
        "geofence_radius_km": radius,
        "allowed_products": [",".join(("92", "95", "98", "diesel")[p] for p in a) for a in allowed],
        "per_tx_limit_fen": per_tx.astype("int64"), "daily_limit_fen": (per_tx * 4).astype("int64"),
        "monthly_limit_fen": (per_tx * 40).astype("int64"), "member_id": member_ids[fleet_owner_idx],
    })

    # vehicles: one car per non-fleet member, 4-30 per fleet
    own = np.flatnonzero(~is_fleet_owner)
    n_fleet_veh = rng.integers(4, 31, F)
    veh_member = np.concatenate([own, np.repeat(fleet_owner_idx, n_fleet_veh)])
    veh_fleet = np.concatenate([np.full(len(own), -1), np.repeat(np.arange(F), n_fleet_veh)])
    V = len(veh_member)
    is_truck = (veh_fleet >= 0) & truck_fleet[np.maximum(veh_fleet, 0)]
    car_fuel = rng.choice(4, V, p=[0.55, 0.33, 0.05, 0.07])
    fuel = np.where(veh_fleet >= 0, np.where(is_truck, 3, 0), car_fuel)
    cap = np.where(is_truck, rng.integers(150, 401, V), rng.integers(40, 71, V)).astype(float)
    letters = np.array(list("ABCDEFGHJK"))
    plate = [f"{PLATE_PREFIX[region[m]]}{letters[a]}{b:05d}" for m, a, b in
             zip(veh_member, rng.integers(0, 10, V), rng.integers(0, 100000, V), strict=True)]
    vehicle_ids = np.array([f"V{k + 1:07d}" for k in range(V)], dtype=object)
    vehicles = pd.DataFrame({
        "vehicle_id": vehicle_ids, "member_id": member_ids[veh_member],
        "fleet_id": np.where(veh_fleet >= 0, fleet_ids[np.maximum(veh_fleet, 0)], None),
        "plate": plate, "tank_capacity_l": cap,
        "fuel_type": np.array(("92", "95", "98", "diesel"), dtype=object)[fuel],
    })

    # cards: one per vehicle (the car's driver / the fleet vehicle)
    C = V
    pans = rng.integers(0, 10**10, C)
    card_ids = card_tokens([f"621483{p:010d}" for p in pans])
    card_member = veh_member
    member_card = np.full(M, -1)
    member_card[own] = np.arange(len(own))
    card_type = np.where(veh_fleet >= 0, "fleet",
                         np.where(family_id[card_member] == None, "personal",  # noqa: E711
                                  np.where(is_main[card_member], "family_main", "family_sub"))).astype(object)
    main_card = np.where(card_type == "family_sub", card_ids[member_card[np.maximum(main_of[card_member], 0)]], None)
    sub_limit = rng.choice(np.array([80_000, 100_000, 150_000]), C)
    per_tx_card = np.where(card_type == "family_sub", sub_limit,
                           np.where(veh_fleet >= 0, per_tx[np.maximum(veh_fleet, 0)], 0))
    monthly_card = np.where(card_type == "family_sub", sub_limit * 12,
                            np.where(veh_fleet >= 0, per_tx[np.maximum(veh_fleet, 0)] * 12, 0))
    issued_off = np.minimum(joined_off[card_member], rng.integers(10, 2000, C))
    issued = np.array([start - timedelta(int(x)) for x in issued_off], dtype=object)
    device = _hex_ids(rng, C, "D")
    cards = pd.DataFrame({
        "card_id": card_ids, "card_type": card_type, "member_id": member_ids[card_member],
        "main_card_id": main_card, "fleet_id": vehicles["fleet_id"].to_numpy(), "vehicle_id": vehicle_ids,
        "per_tx_limit_fen": pd.array(np.where(per_tx_card > 0, per_tx_card, 0), dtype="Int64"),
        "monthly_limit_fen": pd.array(monthly_card, dtype="Int64"), "issued": issued, "device_id": device,
    })
    for col in ("per_tx_limit_fen", "monthly_limit_fen"):
        cards.loc[cards[col] == 0, col] = pd.NA

    card_rate = np.where(veh_fleet >= 0, np.where(is_truck, rng.uniform(2.5, 6.0, C), rng.uniform(1.5, 3.0, C)),
                         fpw[card_member]) / 7.0
    fpw_out = fpw.copy()
    fpw_out[fleet_owner_idx] = np.bincount(veh_fleet[veh_fleet >= 0], weights=card_rate[veh_fleet >= 0] * 7,
                                           minlength=F)
    night_owl = np.where(veh_fleet >= 0, rng.random(C) < 0.1, night_owl_member[card_member])

    # true churn (see the module constants): complaints, then disengagement onset, then churn
    gap_pct = home_gap_pct_fn(home_lat, home_lon)
    churn = draw_churn(rng, M, days, tier_idx=tier_idx, trend=trend, fills_per_week=fpw_out,
                       price_sens=price_sens, gap_pct=gap_pct, z=z, opening_points=opening_points,
                       expire_off=expire_off)
    churn_day, churned = churn["churn_day"], churn["churned"]
    n_complaints = np.bincount(churn["complaint_member"], minlength=M)
    churn_date = np.array([start + timedelta(int(t)) if ch else None for t, ch in zip(churn_day, churned, strict=True)],
                          dtype=object)

    members = pd.DataFrame({
        "member_id": member_ids, "tier": tier, "joined": joined,
        "home_lat": home_lat.round(6), "home_lon": home_lon.round(6),
        "work_lat": work_lat.round(6), "work_lon": work_lon.round(6),
        "family_id": family_id, "is_family_main": is_main, "fills_per_week": fpw_out.round(3),
        "price_sensitivity": price_sens.round(4), "complaints": n_complaints.astype("int64"),
        "churned": churned, "churn_date": churn_date, "id_number": id_numbers(rng, region, start),
        "phone": phones(rng, M), "region": region, "opening_points": opening_points.astype("int64"),
        "points_expire_date": points_expire,
    })
    home = np.column_stack([home_lat, home_lon])
    work = np.column_stack([work_lat, work_lon])
    card_fleet = veh_fleet
    card_home = np.where(card_fleet[:, None] >= 0, fleet_home[np.maximum(card_fleet, 0)], home[card_member])
    return Population(
        members=members, vehicles=vehicles, fleets=fleets, cards=cards, churn_day=churn_day, trend=trend,
        card_member=card_member, card_rate=card_rate, card_cap=cap, card_fuel=fuel, card_fleet=card_fleet,
        card_night_owl=night_owl, card_home=card_home, card_work=work[card_member], card_limit=per_tx_card,
        fleet_home=fleet_home, fleet_radius=radius, fleet_allowed=allowed, member_region=region,
        onset_day=churn["onset_day"], leave_day=churn["leave_day"], frailty=churn["frailty"],
        complaint_member=churn["complaint_member"], complaint_day=churn["complaint_day"],
    )


def _first_crossing(cumhaz: np.ndarray, e: np.ndarray, t0: float) -> np.ndarray:
    """Per row, the (linearly interpolated) day at which ``cumhaz`` (rows x days, day k covers [k, k+1) from
    ``t0``) first reaches ``e``; inf if never."""
    n, k = cumhaz.shape
    reached = cumhaz[:, -1] >= e
    idx = np.argmax(cumhaz >= e[:, None], axis=1)
    rows = np.arange(n)
    prev = np.where(idx > 0, cumhaz[rows, np.maximum(idx - 1, 0)], 0.0)
    step = cumhaz[rows, idx] - prev
    frac = np.where(step > 0, (e - prev) / np.where(step > 0, step, 1.0), 0.0)
    return np.where(reached, t0 + idx + np.clip(frac, 0.0, 1.0), np.inf)


def draw_churn(rng: np.random.Generator, M: int, days: int, *, tier_idx: np.ndarray, trend: np.ndarray,
               fills_per_week: np.ndarray, price_sens: np.ndarray, gap_pct: np.ndarray, z: np.ndarray,
               opening_points: np.ndarray, expire_off: np.ndarray) -> dict[str, np.ndarray]:
    """The true churn process, vectorised over members x days (see the module constants).

    Returns per member ``onset_day``, ``leave_day`` (onset + lag), ``churn_day`` (inf = none within ``days``),
    ``churned``, ``frailty`` and the complaint events (``complaint_member``, ``complaint_day``; only those
    before the member's churn).
    """
    B = BURN_IN_DAYS
    n_cols = B + days
    # complaints: Poisson process from the start (dissatisfied members complain more)
    rate = COMPLAINT_RATE_PER_DAY * np.exp(z)
    n_c = rng.poisson(rate * days)
    c_mem = np.repeat(np.arange(M), n_c)
    c_day = rng.random(len(c_mem)) * days
    frailty = rng.normal(0.0, FRAILTY_SD, M)
    eta0 = (CHURN_COEFS["tier_silver"] * (tier_idx == 1) + CHURN_COEFS["tier_gold"] * (tier_idx == 2)
            + CHURN_COEFS["tier_diamond"] * (tier_idx == 3) + CHURN_COEFS["trend_30d"] * trend
            + CHURN_COEFS["log_fills_per_week"] * np.log(fills_per_week)
            + CHURN_COEFS["price_sensitivity"] * price_sens
            + CHURN_COEFS["price_sensitivity_x_gap_pct"] * price_sens * gap_pct + frailty)
    # time-varying covariates on the day grid t = -B .. days-1
    t = np.arange(-B, days, dtype=np.float32)
    expiring = ((opening_points >= 1000)[:, None] & (t[None, :] >= (expire_off - 90)[:, None])
                & (t[None, :] < expire_off[:, None]))
    cnt = np.zeros((M, n_cols + 1), dtype=np.float32)
    np.add.at(cnt, (c_mem, B + 1 + np.floor(c_day).astype(np.int64)), 1.0)
    cum = np.cumsum(cnt, axis=1)
    # complaints filed on days [t-90, t-1] (point in time: not the day itself)
    recent = cum[:, :n_cols] - np.concatenate([np.zeros((M, 90), np.float32), cum[:, : n_cols - 90]], axis=1)
    del cnt, cum
    log_h = (np.log(BASE_HAZARD_PER_DAY) + eta0.astype(np.float32)[:, None]
             + np.float32(CHURN_COEFS["points_expiring_90d"]) * expiring
             + np.float32(CHURN_COEFS["complaints_90d"]) * recent)
    del expiring, recent
    cumhaz = np.cumsum(np.exp(log_h, dtype=np.float32), axis=1, dtype=np.float64)
    del log_h
    lag = np.clip(rng.gamma(LAG_SHAPE, LAG_SCALE, M), *LAG_CLIP)
    onset = _first_crossing(cumhaz, rng.exponential(1.0, M), -float(B))
    # a member who would have left before the start is not in the member base: redraw (conditioning on being
    # a member at the start keeps the pipeline of already-fading members in steady state); the few left after
    # three tries start from day 0
    for _ in range(3):
        gone = np.flatnonzero(onset + lag <= 0.5)
        lag[gone] = np.clip(rng.gamma(LAG_SHAPE, LAG_SCALE, len(gone)), *LAG_CLIP)
        onset[gone] = _first_crossing(cumhaz[gone], rng.exponential(1.0, len(gone)), -float(B))
    gone = np.flatnonzero(onset + lag <= 0.5)
    onset[gone] = _first_crossing(cumhaz[gone, B:] - cumhaz[gone, B - 1:B], rng.exponential(1.0, len(gone)), 0.0)
    churn_t = onset + lag
    churned = churn_t < days
    churn_day = np.where(churned, churn_t, np.inf)
    onset = np.where(onset < days, onset, np.inf)
    keep = c_day < churn_day[c_mem]
    return {"onset_day": onset, "leave_day": np.where(np.isfinite(onset), churn_t, np.inf),
            "churn_day": churn_day, "churned": churned, "frailty": frailty,
            "complaint_member": c_mem[keep], "complaint_day": c_day[keep]}


def complaint_events(rng: np.random.Generator, pop: Population, start: date) -> pd.DataFrame:
    """One row per complaint at the times drawn with the churn process (all before the member's churn)."""
    idx = pop.complaint_member
    t_days = pop.complaint_day
    ts = pd.Timestamp(start, tz="UTC") - pd.Timedelta(hours=8) + pd.to_timedelta(t_days * 86400, unit="s")
    order = np.lexsort((idx, ts.to_numpy()))
    cats = np.array(["price", "service", "queue", "app", "fuel_quality", "billing"], dtype=object)
    return pd.DataFrame({
        "complaint_id": seq_ids("K", len(idx), 7),
        "ts": ts[order].astype("datetime64[us, UTC]"),
        "member_id": pop.members["member_id"].to_numpy()[idx][order],
        "category": cats[rng.choice(len(cats), len(idx), p=[0.3, 0.25, 0.15, 0.12, 0.08, 0.1])],
    })


def home_station_gap_fn(station_xy: np.ndarray, gap_pct_by_station: np.ndarray):
    """Build ``f(lat, lon) -> gap %`` using the nearest station."""
    tree = cKDTree(station_xy)

    def f(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        _, idx = tree.query(to_xy(lat, lon))
        return gap_pct_by_station[idx]

    return f


__all__ = ["REGIONS", "Population", "build_population", "complaint_events", "draw_churn",
           "home_station_gap_fn"]
