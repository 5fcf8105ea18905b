"""Point-in-time risk features: per-card, per-station, per-terminal and per-device state, updated per event.

One event at a time (the speed layer, the API, batch replay)::

    engine = FeatureEngine(FeatureConfig(label_delay_days=7))
    vector = engine.process(tx, profile)          # list[float] aligned with FEATURE_NAMES

or, with the state kept by the caller (a Faust table per key)::

    card_state, card_part = update_card(card_state, tx, profile, config)
    station_state, station_part = update_station(station_state, tx, card_part, config)
    ...
    vector = assemble(card_part, station_part, terminal_part, device_part)

Every feature of an event uses only events processed *before* it (then the state is updated with it), and a
fraud label influences another event only if the labelled event is at least ``label_delay_days`` older.
:func:`features_many` is the vectorised sibling used for training; ``tests/test_features_parity.py`` proves
it equals replaying :class:`FeatureEngine` row by row. Features whose source column is absent are NaN and
are dropped from a model's feature list (:func:`available_features`); they are never faked.

The hot path takes a :class:`Tx` (a NamedTuple: no validation, no pandas); build it from a validated
:class:`~fuelcard.events.Authorisation` at the edge with :func:`tx_from_event`.

>>> engine = FeatureEngine(FeatureConfig(label_delay_days=7, tz_offset_hours=0))
>>> v1 = engine.process(Tx("t1", 0.0, "c1", "s1", 10000))
>>> v2 = engine.process(Tx("t2", 600.0, "c1", "s1", 20000))
>>> named = dict(zip(FEATURE_NAMES, v2))
>>> named["card_n_1h"], named["card_mean_30d"], named["secs_since_last"], named["new_station_30d"]
(1.0, 100.0, 600.0, 0.0)
"""

from __future__ import annotations

import math
import operator
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

NAN = float("nan")
HOUR = 3600.0
DAY = 86400.0
W30 = 30 * DAY
STATION_KEEP = 24 * HOUR  # activity windows kept per station/terminal
DEVICE_KEEP = W30

# ---------------------------------------------------------------- inputs


class Tx(NamedTuple):
    """One authorisation, as the hot path sees it. ``ts`` is epoch seconds (UTC); money in integer fen.

    ``is_fraud`` is the label when it is already attached (replay of labelled history); the stream leaves it
    ``None`` and feeds late labels through :func:`record_label` / :func:`record_station_label`.
    """

    tx_id: str
    ts: float
    card_id: str
    station_id: str
    amount_fen: int
    terminal_id: str | None = None
    device_id: str | None = None
    product: str | None = None
    litres: float | None = None
    lat: float | None = None
    lon: float | None = None
    region: str | None = None
    is_fraud: int | None = None


@dataclass(frozen=True, slots=True)
class CardProfile:
    """Static master data of a card (from cards/vehicles/fleets), passed as context; every field optional."""

    card_type: str | None = None
    tank_capacity_l: float | None = None
    per_tx_limit_fen: int | None = None
    daily_limit_fen: int | None = None
    monthly_limit_fen: int | None = None
    allowed_products: frozenset[str] | None = None
    allowed_regions: frozenset[str] | None = None
    geofence_lat: float | None = None
    geofence_lon: float | None = None
    geofence_radius_km: float | None = None


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """Feature parameters. ``tz_offset_hours`` turns UTC into local time for hour/weekday features."""

    label_delay_days: float = 7.0
    tz_offset_hours: float = 8.0

    @property
    def delay_s(self) -> float:
        return self.label_delay_days * DAY


DEFAULT_CONFIG = FeatureConfig()


def tx_from_event(event: Any) -> Tx:
    """Build a :class:`Tx` from a validated :class:`~fuelcard.events.Authorisation` (or any object with
    the same attributes)."""
    product = getattr(event, "product", None)
    return Tx(
        str(event.tx_id), event.ts.timestamp(), str(event.card_id), str(event.station_id), int(event.amount_fen),
        getattr(event, "terminal_id", None), getattr(event, "device_id", None),
        None if product is None else str(getattr(product, "value", product)),
        getattr(event, "litres", None), getattr(event, "lat", None), getattr(event, "lon", None),
        getattr(event, "region", None), None,
    )


def tx_from_mapping(d: Mapping[str, Any]) -> Tx:
    """Build a :class:`Tx` from a plain dict (``ts`` epoch seconds or a datetime; ``amount_fen`` or ``amount``
    in yuan)."""
    ts = d["ts"]
    if hasattr(ts, "timestamp"):
        ts = ts.timestamp()
    amt = d.get("amount_fen")
    if amt is None:
        amt = round(float(d["amount"]) * 100)
    label = d.get("is_fraud")
    return Tx(
        str(d["tx_id"]), float(ts), str(d["card_id"]), str(d["station_id"]), int(amt),
        _opt_str(d.get("terminal_id")), _opt_str(d.get("device_id")), _opt_str(d.get("product")),
        _opt_float(d.get("litres")), _opt_float(d.get("lat")), _opt_float(d.get("lon")), _opt_str(d.get("region")),
        None if label is None or label != label else int(label),
    )


def _opt_str(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and v != v):
        return None
    return str(v)


def _opt_float(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return None if f != f else f


# ---------------------------------------------------------------- feature names

CARD_FEATURES: tuple[str, ...] = (
    "amount", "card_n_1h", "card_n_24h", "card_n_7d", "card_n_30d",
    "card_amt_1h", "card_amt_24h", "card_amt_7d", "card_amt_30d",
    "card_mean_7d", "card_mean_30d", "card_std_30d", "amount_vs_mean_7d", "amount_vs_mean_30d", "amount_z_30d",
    "card_spend_24h_incl", "card_spend_30d_incl", "secs_since_last", "card_n_total", "card_age_days",
    "new_station_30d", "card_fraud_known", "hour_local", "weekday_local",
    # optional columns
    "new_device_30d", "product_is_fuel", "new_product_30d", "litres", "litres_vs_mean_30d",
    "dist_prev_km", "speed_kmh", "dist_centroid_km",
    # card profile (master data)
    "tank_ratio", "per_tx_limit_ratio", "daily_limit_ratio", "monthly_limit_ratio",
    "product_not_allowed", "region_not_allowed", "geofence_excess_km", "is_fleet", "is_family_sub",
)
STATION_FEATURES: tuple[str, ...] = (
    "st_n_1h", "st_n_24h", "st_newcard_1h", "st_newcard_24h",
    "st_fraud_1d", "st_fraud_7d", "st_fraud_30d", "st_labelled_30d", "st_rate_7d", "st_rate_30d",
)
TERMINAL_FEATURES: tuple[str, ...] = ("term_n_10m", "term_n_1h", "term_other_cards_1h")
DEVICE_FEATURES: tuple[str, ...] = ("dev_n_30d", "dev_other_cards_30d")
FEATURE_NAMES: tuple[str, ...] = CARD_FEATURES + STATION_FEATURES + TERMINAL_FEATURES + DEVICE_FEATURES
FEATURE_INDEX: dict[str, int] = {n: i for i, n in enumerate(FEATURE_NAMES)}
N_CARD, N_STATION, N_TERMINAL, N_DEVICE = (len(CARD_FEATURES), len(STATION_FEATURES), len(TERMINAL_FEATURES),
                                           len(DEVICE_FEATURES))

#: Which optional input each feature needs; a feature whose requirement is absent is dropped, never faked.
FEATURE_REQUIRES: dict[str, frozenset[str]] = {
    "new_device_30d": frozenset({"device_id"}),
    "dev_n_30d": frozenset({"device_id"}), "dev_other_cards_30d": frozenset({"device_id"}),
    "product_is_fuel": frozenset({"product"}), "new_product_30d": frozenset({"product"}),
    "litres": frozenset({"litres"}), "litres_vs_mean_30d": frozenset({"litres"}),
    "dist_prev_km": frozenset({"lat", "lon"}), "speed_kmh": frozenset({"lat", "lon"}),
    "dist_centroid_km": frozenset({"lat", "lon"}),
    "term_n_10m": frozenset({"terminal_id"}), "term_n_1h": frozenset({"terminal_id"}),
    "term_other_cards_1h": frozenset({"terminal_id"}),
    "tank_ratio": frozenset({"litres", "tank_capacity_l"}),
    "per_tx_limit_ratio": frozenset({"per_tx_limit_fen"}),
    "daily_limit_ratio": frozenset({"daily_limit_fen"}),
    "monthly_limit_ratio": frozenset({"monthly_limit_fen"}),
    "product_not_allowed": frozenset({"product", "allowed_products"}),
    "region_not_allowed": frozenset({"region", "allowed_regions"}),
    "geofence_excess_km": frozenset({"lat", "lon", "geofence_lat", "geofence_lon", "geofence_radius_km"}),
    "is_fleet": frozenset({"card_type"}), "is_family_sub": frozenset({"card_type"}),
}
#: Features that need labels (only meaningful when the data carries some).
LABEL_FEATURES = frozenset({"card_fraud_known", "st_fraud_1d", "st_fraud_7d", "st_fraud_30d", "st_labelled_30d",
                            "st_rate_7d", "st_rate_30d"})
#: Features for rules/explanations that the model does not need (exact duplicates of others).
RULE_ONLY = frozenset({"card_spend_24h_incl", "card_spend_30d_incl"})
FUELS = frozenset({"92", "95", "98", "diesel"})


def available_features(columns: Iterable[str]) -> list[str]:
    """The features computable from these input columns (profile fields count as columns)."""
    cols = set(columns)
    return [n for n in FEATURE_NAMES if FEATURE_REQUIRES.get(n, frozenset()) <= cols]


# ---------------------------------------------------------------- geometry


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km."""
    p1 = math.radians(lat1)
    p2 = math.radians(lat2)
    a = math.sin((p2 - p1) * 0.5) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) * 0.5) ** 2
    return 12742.0 * math.asin(math.sqrt(min(1.0, a)))


# ---------------------------------------------------------------- card state


@dataclass(slots=True)
class CardState:
    """What one card remembers: its events of the last 30 days (parallel lists) and label counters.

    Mutated in place by :func:`update_card` and returned (reassign it in a Faust table to changelog it).
    Serialise with :meth:`to_bytes` / :meth:`from_bytes` (orjson; a few hundred bytes for a typical card).
    """

    ts: list[float] = field(default_factory=list)
    amt: list[int] = field(default_factory=list)
    station: list[str] = field(default_factory=list)
    device: list[str | None] = field(default_factory=list)
    product: list[str | None] = field(default_factory=list)
    litres: list[float] = field(default_factory=list)  # 0.0 where unknown
    litres_known: list[int] = field(default_factory=list)
    lat: list[float] = field(default_factory=list)  # 0.0 where unknown
    lon: list[float] = field(default_factory=list)
    geo_known: list[int] = field(default_factory=list)
    n_total: int = 0
    first_ts: float = NAN
    pending_fraud: list[float] = field(default_factory=list)  # ts of labelled frauds not yet usable
    known_fraud: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (NaN first_ts becomes None)."""
        return {
            "v": 1, "ts": self.ts, "amt": self.amt, "station": self.station, "device": self.device,
            "product": self.product, "litres": self.litres, "litres_known": self.litres_known, "lat": self.lat,
            "lon": self.lon, "geo_known": self.geo_known, "n_total": self.n_total,
            "first_ts": None if self.first_ts != self.first_ts else self.first_ts,
            "pending_fraud": self.pending_fraud, "known_fraud": self.known_fraud,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CardState:
        """Inverse of :meth:`to_dict`."""
        first = d.get("first_ts")
        return cls(
            list(d["ts"]), list(d["amt"]), list(d["station"]), list(d["device"]), list(d["product"]),
            list(d["litres"]), list(d["litres_known"]), list(d["lat"]), list(d["lon"]), list(d["geo_known"]),
            int(d["n_total"]), NAN if first is None else float(first), list(d["pending_fraud"]),
            int(d["known_fraud"]),
        )

    def to_bytes(self) -> bytes:
        """Compact serialisation for a state store."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_bytes(cls, raw: bytes) -> CardState:
        """Inverse of :meth:`to_bytes`."""
        return cls.from_dict(orjson.loads(raw))


def record_label(state: CardState, tx_ts: float, is_fraud: int) -> CardState:
    """A (late) label for one of this card's transactions: frauds count once they are ``label_delay`` old."""
    if is_fraud:
        pf = state.pending_fraud
        if not pf or tx_ts >= pf[-1]:
            pf.append(tx_ts)
        else:
            pf.insert(bisect_right(pf, tx_ts), tx_ts)
    return state


_fsum = math.fsum


def update_card(
    state: CardState | None, tx: Tx, profile: CardProfile | None = None, config: FeatureConfig = DEFAULT_CONFIG
) -> tuple[CardState, list[float]]:
    """Card features of ``tx`` from the card's earlier events (aligned with :data:`CARD_FEATURES`), then
    remember ``tx``. Returns ``(state, features)``; ``state`` is updated in place (a new one if ``None``)."""
    if state is None:
        state = CardState()
    t = tx.ts
    amount = tx.amount_fen
    ts = state.ts
    # forget what is 30 days old or more
    lo30 = bisect_right(ts, t - W30)
    if lo30:
        del ts[:lo30], state.amt[:lo30], state.station[:lo30], state.device[:lo30], state.product[:lo30]
        del state.litres[:lo30], state.litres_known[:lo30], state.lat[:lo30], state.lon[:lo30]
        del state.geo_known[:lo30]
    n30 = len(ts)
    amt = state.amt
    lo1h = bisect_right(ts, t - HOUR)
    lo24 = bisect_right(ts, t - DAY)
    lo7 = bisect_right(ts, t - 7 * DAY)
    s30 = sum(amt)
    s7 = sum(amt[lo7:]) if lo7 else s30
    s24 = sum(amt[lo24:])
    s1h = sum(amt[lo1h:])
    n7 = n30 - lo7
    a_y = amount / 100.0
    if n30:
        mean30 = s30 / n30 / 100.0
        var = sum(map(operator.mul, amt, amt)) / n30 / 1e4 - mean30 * mean30
        std30 = math.sqrt(var) if var > 0.0 else 0.0
        vs30 = a_y / mean30 if mean30 > 0.0 else NAN
        z30 = (a_y - mean30) / std30 if std30 > 0.0 else 0.0
        since = t - ts[-1]
        new_station = 0.0 if tx.station_id in state.station else 1.0
    else:
        mean30 = std30 = vs30 = z30 = since = NAN
        new_station = 1.0
    if n7:
        mean7 = s7 / n7 / 100.0
        vs7 = a_y / mean7 if mean7 > 0.0 else NAN
    else:
        mean7 = vs7 = NAN
    # labels: a fraud counts once it is label_delay old
    pf = state.pending_fraud
    if pf:
        cut = t - config.delay_s
        k = bisect_right(pf, cut)
        if k:
            state.known_fraud += k
            del pf[:k]
    if state.n_total == 0:
        state.first_ts = t
    local = t + config.tz_offset_hours * HOUR
    hour = float(int(local % DAY // HOUR))
    weekday = float(int((local // DAY + 3) % 7))
    # optional columns
    device = tx.device_id
    product = tx.product
    litres = tx.litres
    lat = tx.lat
    lon = tx.lon
    new_device = NAN if device is None else (0.0 if device in state.device else 1.0)
    if product is None:
        is_fuel = new_product = NAN
    else:
        is_fuel = 1.0 if product in FUELS else 0.0
        new_product = 0.0 if product in state.product else 1.0
    if litres is None:
        lit_f = lit_vs = NAN
    else:
        lit_f = litres
        nk = sum(state.litres_known)
        ls = _fsum(state.litres)
        lit_vs = litres / (ls / nk) if nk and ls > 0.0 else NAN
    geo = lat is not None and lon is not None
    dist_prev = speed = dist_c = NAN
    if geo and n30:
        if state.geo_known[-1]:
            dist_prev = haversine_km(state.lat[-1], state.lon[-1], lat, lon)  # type: ignore[arg-type]
            speed = dist_prev / max(since, 60.0) * HOUR
        ng = sum(state.geo_known)
        if ng:
            dist_c = haversine_km(_fsum(state.lat) / ng, _fsum(state.lon) / ng, lat, lon)  # type: ignore[arg-type]
    # profile (master data)
    tank_ratio = per_tx = daily = monthly = prod_na = region_na = geofence = is_fleet = is_fsub = NAN
    if profile is not None:
        if profile.tank_capacity_l and litres is not None:
            tank_ratio = litres / profile.tank_capacity_l
        if profile.per_tx_limit_fen:
            per_tx = amount / profile.per_tx_limit_fen
        if profile.daily_limit_fen:
            daily = (s24 + amount) / profile.daily_limit_fen
        if profile.monthly_limit_fen:
            monthly = (s30 + amount) / profile.monthly_limit_fen
        if profile.allowed_products is not None and product is not None:
            prod_na = 0.0 if product in profile.allowed_products else 1.0
        if profile.allowed_regions is not None and tx.region is not None:
            region_na = 0.0 if tx.region in profile.allowed_regions else 1.0
        if (geo and profile.geofence_lat is not None and profile.geofence_lon is not None
                and profile.geofence_radius_km is not None):
            geofence = haversine_km(profile.geofence_lat, profile.geofence_lon, lat, lon) - profile.geofence_radius_km  # type: ignore[arg-type]
        if profile.card_type is not None:
            is_fleet = 1.0 if profile.card_type == "fleet" else 0.0
            is_fsub = 1.0 if profile.card_type == "family_sub" else 0.0
    feats = [
        a_y, float(n30 - lo1h), float(n30 - lo24), float(n7), float(n30),
        s1h / 100.0, s24 / 100.0, s7 / 100.0, s30 / 100.0,
        mean7, mean30, std30, vs7, vs30, z30,
        (s24 + amount) / 100.0, (s30 + amount) / 100.0, since, float(state.n_total), (t - state.first_ts) / DAY,
        new_station, float(state.known_fraud), hour, weekday,
        new_device, is_fuel, new_product, lit_f, lit_vs, dist_prev, speed, dist_c,
        tank_ratio, per_tx, daily, monthly, prod_na, region_na, geofence, is_fleet, is_fsub,
    ]
    # remember this event
    ts.append(t)
    amt.append(amount)
    state.station.append(tx.station_id)
    state.device.append(device)
    state.product.append(product)
    if litres is None:
        state.litres.append(0.0)
        state.litres_known.append(0)
    else:
        state.litres.append(float(litres))
        state.litres_known.append(1)
    if geo:
        state.lat.append(float(lat))  # type: ignore[arg-type]
        state.lon.append(float(lon))  # type: ignore[arg-type]
        state.geo_known.append(1)
    else:
        state.lat.append(0.0)
        state.lon.append(0.0)
        state.geo_known.append(0)
    state.n_total += 1
    if tx.is_fraud:
        record_label(state, t, 1)
    return state, feats


# ---------------------------------------------------------------- station state


@dataclass(slots=True)
class StationState:
    """What one station (or terminal) remembers: recent activity and its delayed fraud labels.

    Activity: times of the last 24 h of transactions with a cumulative count of "new card here" events.
    Labels: times of labelled transactions with cumulative fraud counts; a label is *usable* at time ``t``
    only if its transaction is at least ``label_delay`` older than ``t`` (the explicit label-delay rule).
    Lists are trimmed lazily; results never depend on the trimming.
    """

    ts: list[float] = field(default_factory=list)
    newcard_cum: list[int] = field(default_factory=list)  # cumulative, inclusive
    card: list[str] = field(default_factory=list)  # used by terminals only
    lab_ts: list[float] = field(default_factory=list)
    lab_cum: list[int] = field(default_factory=list)  # cumulative frauds, inclusive

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict."""
        return {"v": 1, "ts": self.ts, "newcard_cum": self.newcard_cum, "card": self.card,
                "lab_ts": self.lab_ts, "lab_cum": self.lab_cum}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StationState:
        """Inverse of :meth:`to_dict`."""
        return cls(list(d["ts"]), list(d["newcard_cum"]), list(d["card"]), list(d["lab_ts"]), list(d["lab_cum"]))

    def to_bytes(self) -> bytes:
        """Compact serialisation for a state store."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_bytes(cls, raw: bytes) -> StationState:
        """Inverse of :meth:`to_bytes`."""
        return cls.from_dict(orjson.loads(raw))


def record_station_label(state: StationState, tx_ts: float, is_fraud: int) -> StationState:
    """A label for one of this station's transactions (kept sorted by transaction time)."""
    y = 1 if is_fraud else 0
    lt, lc = state.lab_ts, state.lab_cum
    if not lt or tx_ts >= lt[-1]:
        lt.append(tx_ts)
        lc.append((lc[-1] if lc else 0) + y)
    else:  # late label for an older transaction: insert and shift the cumulative counts after it
        i = bisect_right(lt, tx_ts)
        lt.insert(i, tx_ts)
        lc.insert(i, (lc[i - 1] if i else 0) + y)
        if y:
            for j in range(i + 1, len(lc)):
                lc[j] += 1
    return state


def _cum_at(cum: list[int], i: int) -> int:
    return cum[i - 1] if i else 0


def update_station(
    state: StationState | None, tx: Tx, card_features: list[float], config: FeatureConfig = DEFAULT_CONFIG
) -> tuple[StationState, list[float]]:
    """Station features of ``tx`` (aligned with :data:`STATION_FEATURES`) from the station's earlier events
    and its labels that are at least ``label_delay`` old, then remember ``tx``."""
    if state is None:
        state = StationState()
    t = tx.ts
    ts = state.ts
    cum = state.newcard_cum
    lo24 = bisect_right(ts, t - STATION_KEEP)
    if lo24 > 256:  # trim; cumulative counts stay valid because only differences are used
        del ts[:lo24], cum[:lo24]
        lo24 = 0
    n = len(ts)
    lo1h = bisect_right(ts, t - HOUR, lo24)
    c_all = cum[-1] if n else 0
    new1h = c_all - _cum_at(cum, lo1h)
    new24 = c_all - _cum_at(cum, lo24)
    # delayed labels: usable iff tx_ts <= t - delay
    lt, lc = state.lab_ts, state.lab_cum
    cut = t - config.delay_s
    hi = bisect_right(lt, cut)
    b30 = bisect_right(lt, cut - W30, 0, hi)
    if b30 > 4096:
        del lt[:b30], lc[:b30]
        hi -= b30
        b30 = 0
    b7 = bisect_right(lt, cut - 7 * DAY, b30, hi)
    b1 = bisect_right(lt, cut - DAY, b7, hi)
    f_hi = _cum_at(lc, hi)
    fr30 = f_hi - _cum_at(lc, b30)
    fr7 = f_hi - _cum_at(lc, b7)
    fr1 = f_hi - _cum_at(lc, b1)
    l30 = hi - b30
    l7 = hi - b7
    feats = [
        float(n - lo1h), float(n - lo24), float(new1h), float(new24),
        float(fr1), float(fr7), float(fr30), float(l30),
        fr7 / l7 if l7 else NAN, fr30 / l30 if l30 else NAN,
    ]
    ts.append(t)
    cum.append(c_all + (1 if card_features[20] == 1.0 else 0))
    if tx.is_fraud is not None:
        record_station_label(state, t, tx.is_fraud)
    return state, feats


def update_terminal(
    state: StationState | None, tx: Tx, config: FeatureConfig = DEFAULT_CONFIG
) -> tuple[StationState, list[float]]:
    """Terminal burst features (aligned with :data:`TERMINAL_FEATURES`): NaN when ``tx`` has no terminal."""
    if tx.terminal_id is None:
        return (state or StationState()), [NAN, NAN, NAN]
    if state is None:
        state = StationState()
    t = tx.ts
    ts = state.ts
    lo = bisect_right(ts, t - HOUR)
    if lo > 64:
        del ts[:lo], state.card[:lo]
        lo = 0
    n = len(ts)
    lo10 = bisect_right(ts, t - 600.0, lo)
    recent = state.card[lo:]
    feats = [float(n - lo10), float(n - lo), float(len(recent) - recent.count(tx.card_id))]
    ts.append(t)
    state.card.append(tx.card_id)
    return state, feats


def update_device(
    state: StationState | None, tx: Tx, config: FeatureConfig = DEFAULT_CONFIG
) -> tuple[StationState, list[float]]:
    """Shared-device features (aligned with :data:`DEVICE_FEATURES`): NaN when ``tx`` has no device."""
    if tx.device_id is None:
        return (state or StationState()), [NAN, NAN]
    if state is None:
        state = StationState()
    t = tx.ts
    ts = state.ts
    lo = bisect_right(ts, t - DEVICE_KEEP)
    if lo:
        del ts[:lo], state.card[:lo]
    recent = state.card
    feats = [float(len(recent)), float(len(recent) - recent.count(tx.card_id))]
    ts.append(t)
    recent.append(tx.card_id)
    return state, feats


def assemble(card: list[float], station: list[float], terminal: list[float], device: list[float]) -> list[float]:
    """The full feature vector (aligned with :data:`FEATURE_NAMES`)."""
    return card + station + terminal + device


class FeatureEngine:
    """In-process keyed state for every entity: one call per event returns the full feature vector.

    Used by batch replay, the API and benchmarks; the stream keeps the same states in Faust tables and
    calls :func:`update_card` / :func:`update_station` / :func:`update_terminal` / :func:`update_device`.
    """

    __slots__ = ("config", "cards", "stations", "terminals", "devices")

    def __init__(self, config: FeatureConfig = DEFAULT_CONFIG) -> None:
        self.config = config
        self.cards: dict[str, CardState] = {}
        self.stations: dict[str, StationState] = {}
        self.terminals: dict[str, StationState] = {}
        self.devices: dict[str, StationState] = {}

    def process(self, tx: Tx, profile: CardProfile | None = None) -> list[float]:
        """Features of ``tx`` (point-in-time), then update every state with it."""
        cfg = self.config
        cs, cf = update_card(self.cards.get(tx.card_id), tx, profile, cfg)
        self.cards[tx.card_id] = cs
        ss, sf = update_station(self.stations.get(tx.station_id), tx, cf, cfg)
        self.stations[tx.station_id] = ss
        if tx.terminal_id is not None:
            ts_, tf = update_terminal(self.terminals.get(tx.terminal_id), tx, cfg)
            self.terminals[tx.terminal_id] = ts_
        else:
            tf = [NAN, NAN, NAN]
        if tx.device_id is not None:
            ds, df_ = update_device(self.devices.get(tx.device_id), tx, cfg)
            self.devices[tx.device_id] = ds
        else:
            df_ = [NAN, NAN]
        return cf + sf + tf + df_

    def record_label(self, tx: Tx, is_fraud: int) -> None:
        """A late label for an already processed transaction (stream use)."""
        if tx.card_id in self.cards:
            record_label(self.cards[tx.card_id], tx.ts, is_fraud)
        record_station_label(self.stations.setdefault(tx.station_id, StationState()), tx.ts, is_fraud)


def features_dict(vector: list[float]) -> dict[str, float]:
    """Name every value of a feature vector."""
    return dict(zip(FEATURE_NAMES, vector, strict=True))
