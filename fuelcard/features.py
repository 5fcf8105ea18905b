"""Point-in-time risk features: per-card, per-station, per-terminal and per-device state, updated per event.

One event at a time (the speed layer, the API, batch replay)::

    engine = FeatureEngine(FeatureConfig(label_delay_days=7))
    vector = engine.process(tx, profile)          # list[float] aligned with FEATURE_NAMES

or, with the state kept by the caller (a Faust table per key)::

    card_state, card_part = update_card(card_state, tx, profile, config)
    station_state, station_part = update_station(station_state, tx, card_part, config)
    terminal_state, terminal_part = update_terminal(terminal_state, tx, card_part, config)
    device_state, device_part = update_device(device_state, tx, config)
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

import hashlib
import logging
import math
import operator
import sys
from array import array
from binascii import a2b_base64, b2a_base64
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
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
    "new_station_30d", "card_fraud_known", "hour_local", "weekday_local", "amount_round", "card_night_share_30d",
    # optional columns
    "new_device_30d", "product_is_fuel", "new_product_30d", "litres", "litres_vs_mean_30d",
    "dist_prev_km", "speed_kmh", "dist_centroid_km",
    # card profile (master data)
    "tank_ratio", "per_tx_limit_ratio", "daily_limit_ratio", "monthly_limit_ratio",
    "product_not_allowed", "region_not_allowed", "geofence_excess_km", "is_fleet", "is_family_sub",
)
STATION_FEATURES: tuple[str, ...] = (
    "st_n_1h", "st_n_24h", "st_newcard_1h", "st_newcard_24h", "st_round_24h",
    "st_fraud_1d", "st_fraud_7d", "st_fraud_30d", "st_labelled_30d", "st_rate_1d", "st_rate_7d", "st_rate_30d",
    "st_last_label", "st_days_since_fraud",
)
TERMINAL_FEATURES: tuple[str, ...] = ("term_n_10m", "term_n_1h", "term_other_cards_1h", "term_n_24h",
                                      "term_newcard_24h", "term_round_24h")
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
    "term_other_cards_1h": frozenset({"terminal_id"}), "term_n_24h": frozenset({"terminal_id"}),
    "term_newcard_24h": frozenset({"terminal_id"}), "term_round_24h": frozenset({"terminal_id"}),
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
                            "st_rate_1d", "st_rate_7d", "st_rate_30d", "st_last_label", "st_days_since_fraud"})
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


_BIG_ENDIAN = sys.byteorder == "big"


def _pack(code: str, values: list) -> str:
    """A list of floats ("d") or ints ("q") as base64 of its little-endian binary array."""
    a = array(code, values)
    if _BIG_ENDIAN:
        a.byteswap()
    return b2a_base64(a.tobytes(), newline=False).decode("ascii")


def _unpack(code: str, text: str) -> list:
    """Inverse of :func:`_pack`."""
    a = array(code)
    a.frombytes(a2b_base64(text))
    if _BIG_ENDIAN:
        a.byteswap()
    return a.tolist()


@dataclass(slots=True)
class CardState:
    """What one card remembers: its events of the last 30 days (parallel lists), when it last used each
    station / device / product, and label counters.

    Mutated in place by :func:`update_card` and returned (reassign it in a Faust table to changelog it).
    Serialise with :meth:`to_dict` / :meth:`from_dict` or :meth:`to_bytes` / :meth:`from_bytes` (orjson;
    per-event lists packed as binary arrays: well under 1 KB for a card with 15 events in 30 days). The night
    flag of an event is derived from its time, and the "first time here" features read the last-use maps, so
    neither is stored per event.
    """

    ts: list[float] = field(default_factory=list)
    amt: list[int] = field(default_factory=list)
    litres: list[float] = field(default_factory=list)  # NaN where unknown
    lat: list[float] = field(default_factory=list)  # NaN where unknown (lat and lon together)
    lon: list[float] = field(default_factory=list)
    stations: dict[str, float] = field(default_factory=dict)  # last use (entries older than 30 d are stale)
    devices: dict[str, float] = field(default_factory=dict)
    products: dict[str, float] = field(default_factory=dict)
    n_total: int = 0
    first_ts: float = NAN
    pending_fraud: list[float] = field(default_factory=list)  # ts of labelled frauds not yet usable
    known_fraud: int = 0
    #: running 30-day aggregates (:func:`_card_agg`); a cache, never serialised, rebuilt when None
    agg: list | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict: the per-event lists packed as base64 of little-endian binary arrays (``f``:
        ts, litres, lat, lon one after the other; ``amt``), two strings instead of one JSON number per value
        (formatting and parsing numbers is what costs); NaN first_ts as None."""
        return {
            "v": 3, "f": _pack("d", self.ts + self.litres + self.lat + self.lon), "amt": _pack("q", self.amt),
            "st": self.stations, "dev": self.devices, "prod": self.products, "n": self.n_total,
            "first": None if self.first_ts != self.first_ts else self.first_ts,
            "pf": self.pending_fraud, "kf": self.known_fraud,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CardState:
        """Inverse of :meth:`to_dict` (also reads the older layouts 1 and 2)."""
        v = d.get("v", 1)
        if v == 1:
            return cls._from_v1(d)
        first = d["first"]
        if v == 2:  # plain lists, None where unknown
            lists = [list(d["ts"]), list(d["amt"])] + [[NAN if x is None else x for x in d[k]]
                                                       for k in ("litres", "lat", "lon")]
        else:
            f = _unpack("d", d["f"])
            n = len(f) >> 2
            lists = [f[:n], _unpack("q", d["amt"]), f[n:2 * n], f[2 * n:3 * n], f[3 * n:]]
        return cls(*lists, dict(d["st"]), dict(d["dev"]), dict(d["prod"]), d["n"], NAN if first is None else first,
                   list(d["pf"]), d["kf"])

    @classmethod
    def _from_v1(cls, d: Mapping[str, Any]) -> CardState:
        ts = [float(x) for x in d["ts"]]
        geo = d["geo_known"]
        first = d.get("first_ts")
        return cls(
            ts, [int(a) for a in d["amt"]],
            [float(v) if k else NAN for v, k in zip(d["litres"], d["litres_known"], strict=True)],
            [float(v) if k else NAN for v, k in zip(d["lat"], geo, strict=True)],
            [float(v) if k else NAN for v, k in zip(d["lon"], geo, strict=True)],
            dict(zip(d["station"], ts, strict=True)),
            {k: t for k, t in zip(d["device"], ts, strict=True) if k is not None},
            {k: t for k, t in zip(d["product"], ts, strict=True) if k is not None},
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


#: Float sums over a window (litres, lat, lon) are kept as integers in units of 2**-30 so that adding and
#: removing events is exact: a state rebuilt from its serialised lists has the very same aggregates.
_FIX = float(1 << 30)


def _is_night(ts: float, config: FeatureConfig) -> bool:
    """00:00-04:59 local time (the same arithmetic as the ``hour_local`` feature)."""
    return (ts + config.tz_offset_hours * HOUR) % DAY // HOUR < 5


def _card_agg(state: CardState, config: FeatureConfig) -> list:
    """Aggregates of a card's 30-day lists: [sum amt, sum amt², nights, litres known, geo known, sum litres,
    sum lat, sum lon], all integers (the three float sums in units of 2**-30, see :data:`_FIX`)."""
    amt = state.amt
    agg = [sum(amt), sum(map(operator.mul, amt, amt)), sum(1 for t in state.ts if _is_night(t, config)), 0, 0, 0,
           0, 0]
    for v in state.litres:
        if v == v:
            agg[3] += 1
            agg[5] += round(v * _FIX)
    for la, lo in zip(state.lat, state.lon, strict=True):
        if la == la:
            agg[4] += 1
            agg[6] += round(la * _FIX)
            agg[7] += round(lo * _FIX)
    return agg


def _evict(state: CardState, agg: list, k: int, cut: float, config: FeatureConfig) -> None:
    """Forget the card's ``k`` oldest events (time <= ``cut``) and take them out of the aggregates."""
    ts, amt, litres, lat, lon = state.ts, state.amt, state.litres, state.lat, state.lon
    off = config.tz_offset_hours * HOUR
    for i in range(k):
        a = amt[i]
        agg[0] -= a
        agg[1] -= a * a
        if (ts[i] + off) % DAY // HOUR < 5:
            agg[2] -= 1
        v = litres[i]
        if v == v:
            agg[3] -= 1
            agg[5] -= round(v * _FIX)
        v = lat[i]
        if v == v:
            agg[4] -= 1
            agg[6] -= round(v * _FIX)
            agg[7] -= round(lon[i] * _FIX)  # type: ignore[operator]
    del ts[:k], amt[:k], litres[:k], lat[:k], lon[:k]
    # last-use maps: drop stale entries once a map has a few (stale entries never count, see update_card)
    if len(state.stations) > 4:
        state.stations = {s: x for s, x in state.stations.items() if x > cut}
    if len(state.devices) > 4:
        state.devices = {s: x for s, x in state.devices.items() if x > cut}
    if len(state.products) > 4:
        state.products = {s: x for s, x in state.products.items() if x > cut}


_RAD = math.pi / 180.0  # what math.radians multiplies by (same bits)
_sin, _cos, _asin, _sqrt = math.sin, math.cos, math.asin, math.sqrt
_W7 = 7 * DAY


def update_card(
    state: CardState | None, tx: Tx, profile: CardProfile | None = None, config: FeatureConfig = DEFAULT_CONFIG
) -> tuple[CardState, list[float]]:
    """Card features of ``tx`` from the card's earlier events (aligned with :data:`CARD_FEATURES`), then
    remember ``tx``. Returns ``(state, features)``; ``state`` is updated in place (a new one if ``None``).

    Window sums over 30 days are running aggregates kept beside the lists (:func:`_card_agg`, not serialised,
    rebuilt on load), so an event costs a few bisects and no re-scan of the card's history."""
    if state is None:
        state = CardState()
    t = tx.ts
    amount = tx.amount_fen
    ts = state.ts
    amt = state.amt
    agg = state.agg
    if agg is None:
        agg = state.agg = _card_agg(state, config)
    # forget what is 30 days old or more
    cut30 = t - W30
    if ts and ts[0] <= cut30:
        _evict(state, agg, bisect_right(ts, cut30), cut30, config)
    n30 = len(ts)
    lo7 = bisect_right(ts, t - _W7)
    lo24 = bisect_right(ts, t - DAY, lo7)
    lo1h = bisect_right(ts, t - HOUR, lo24)
    s30 = agg[0]
    s7 = sum(amt[lo7:]) if lo7 else s30
    s24 = sum(amt[lo24:]) if lo24 < n30 else 0
    s1h = sum(amt[lo1h:]) if lo1h < n30 else 0
    n7 = n30 - lo7
    a_y = amount / 100.0
    station = tx.station_id
    last = state.stations.get(station)
    new_station = 0.0 if last is not None and last > cut30 else 1.0
    if n30:
        mean30 = s30 / n30 / 100.0
        var = agg[1] / n30 / 1e4 - mean30 * mean30
        std30 = _sqrt(var) if var > 0.0 else 0.0
        vs30 = a_y / mean30 if mean30 > 0.0 else NAN
        z30 = (a_y - mean30) / std30 if std30 > 0.0 else 0.0
        since = t - ts[-1]
        night_share = agg[2] / n30
    else:
        mean30 = std30 = vs30 = z30 = since = night_share = NAN
    if n7:
        mean7 = s7 / n7 / 100.0
        vs7 = a_y / mean7 if mean7 > 0.0 else NAN
    else:
        mean7 = vs7 = NAN
    # labels: a fraud counts once it is label_delay old
    pf = state.pending_fraud
    if pf:
        k = bisect_right(pf, t - config.delay_s)
        if k:
            state.known_fraud += k
            del pf[:k]
    n_total = state.n_total
    if n_total == 0:
        state.first_ts = t
    local = t + config.tz_offset_hours * HOUR
    hour_f = local % DAY // HOUR  # an integral float: what float(int(...)) would give, without two calls
    amount_round = 2.0 if amount % 10000 == 0 else (1.0 if amount % 1000 == 0 else 0.0)
    # optional columns
    device = tx.device_id
    product = tx.product
    litres = tx.litres
    lat = tx.lat
    lon = tx.lon
    if device is None:
        new_device = NAN
    else:
        last = state.devices.get(device)
        new_device = 0.0 if last is not None and last > cut30 else 1.0
    if product is None:
        is_fuel = new_product = NAN
    else:
        is_fuel = 1.0 if product in FUELS else 0.0
        last = state.products.get(product)
        new_product = 0.0 if last is not None and last > cut30 else 1.0
    if litres is None:
        lit_f = lit_vs = NAN
    else:
        lit_f = litres
        nk = agg[3]
        ls = agg[5] / _FIX
        lit_vs = litres / (ls / nk) if nk and ls > 0.0 else NAN
    geo = lat is not None and lon is not None
    dist_prev = speed = dist_c = NAN
    if geo and n30:
        p2 = lat * _RAD  # type: ignore[operator]
        cp2 = _cos(p2)
        plat = state.lat[-1]
        if plat == plat:  # haversine_km(previous, this), inlined
            p1 = plat * _RAD
            h = (_sin((p2 - p1) * 0.5) ** 2
                 + _cos(p1) * cp2 * _sin((lon - state.lon[-1]) * _RAD * 0.5) ** 2)  # type: ignore[operator]
            dist_prev = 12742.0 * _asin(_sqrt(h if h < 1.0 else 1.0))
            speed = dist_prev / (since if since > 60.0 else 60.0) * HOUR
        ng = agg[4]
        if ng:  # haversine_km(centroid, this), inlined
            p1 = agg[6] / _FIX / ng * _RAD
            h = (_sin((p2 - p1) * 0.5) ** 2
                 + _cos(p1) * cp2 * _sin((lon - agg[7] / _FIX / ng) * _RAD * 0.5) ** 2)  # type: ignore[operator]
            dist_c = 12742.0 * _asin(_sqrt(h if h < 1.0 else 1.0))
    # profile (master data)
    if profile is None:
        tank_ratio = per_tx = daily = monthly = prod_na = region_na = geofence = is_fleet = is_fsub = NAN
    else:
        cap = profile.tank_capacity_l
        tank_ratio = litres / cap if cap and litres is not None else NAN
        lim = profile.per_tx_limit_fen
        per_tx = amount / lim if lim else NAN
        lim = profile.daily_limit_fen
        daily = (s24 + amount) / lim if lim else NAN
        lim = profile.monthly_limit_fen
        monthly = (s30 + amount) / lim if lim else NAN
        allowed = profile.allowed_products
        prod_na = NAN if allowed is None or product is None else (0.0 if product in allowed else 1.0)
        allowed = profile.allowed_regions
        region = tx.region
        region_na = NAN if allowed is None or region is None else (0.0 if region in allowed else 1.0)
        if (geo and profile.geofence_lat is not None and profile.geofence_lon is not None
                and profile.geofence_radius_km is not None):
            geofence = haversine_km(profile.geofence_lat, profile.geofence_lon, lat, lon) - profile.geofence_radius_km  # type: ignore[arg-type]
        else:
            geofence = NAN
        card_type = profile.card_type
        if card_type is None:
            is_fleet = is_fsub = NAN
        else:
            is_fleet = 1.0 if card_type == "fleet" else 0.0
            is_fsub = 1.0 if card_type == "family_sub" else 0.0
    feats = [
        # int + 0.0 is float(int) exactly (counts are far below 2**53), without a call
        a_y, n30 - lo1h + 0.0, n30 - lo24 + 0.0, n7 + 0.0, n30 + 0.0,
        s1h / 100.0, s24 / 100.0, s7 / 100.0, s30 / 100.0,
        mean7, mean30, std30, vs7, vs30, z30,
        (s24 + amount) / 100.0, (s30 + amount) / 100.0, since, n_total + 0.0, (t - state.first_ts) / DAY,
        new_station, state.known_fraud + 0.0, hour_f, (local // DAY + 3.0) % 7.0, amount_round,
        night_share, new_device, is_fuel, new_product, lit_f, lit_vs, dist_prev, speed, dist_c,
        tank_ratio, per_tx, daily, monthly, prod_na, region_na, geofence, is_fleet, is_fsub,
    ]
    # remember this event (lists, last uses and running aggregates)
    ts.append(t)
    amt.append(amount)
    agg[0] += amount
    agg[1] += amount * amount
    state.stations[station] = t
    if device is not None:
        state.devices[device] = t
    if product is not None:
        state.products[product] = t
    if litres is None:
        state.litres.append(NAN)
    else:
        litres = float(litres)
        state.litres.append(litres)
        agg[3] += 1
        agg[5] += round(litres * _FIX)
    if geo:
        lat = float(lat)  # type: ignore[arg-type]
        lon = float(lon)  # type: ignore[arg-type]
        state.lat.append(lat)
        state.lon.append(lon)
        agg[4] += 1
        agg[6] += round(lat * _FIX)
        agg[7] += round(lon * _FIX)
    else:
        state.lat.append(NAN)
        state.lon.append(NAN)
    if hour_f < 5.0:
        agg[2] += 1
    state.n_total = n_total + 1
    if tx.is_fraud:
        record_label(state, t, 1)
    return state, feats


# ---------------------------------------------------------------- station state


@dataclass(slots=True)
class StationState:
    """What one station, terminal or device remembers: recent activity and delayed fraud labels.

    Activity: times of recent transactions (24 h for stations and terminals, 30 days for devices) with
    cumulative counts of "card new here" and "round amount" events, and the cards (terminals, devices).
    Labels: times of labelled transactions with cumulative fraud counts; a label is *usable* at time ``t``
    only if its transaction is at least ``label_delay`` older than ``t`` (the explicit label-delay rule).
    Lists are trimmed lazily; results never depend on the trimming.
    """

    ts: list[float] = field(default_factory=list)
    newcard_cum: list[int] = field(default_factory=list)  # cumulative, inclusive
    round_cum: list[int] = field(default_factory=list)  # cumulative, inclusive
    card: list[str] = field(default_factory=list)  # terminals and devices only
    lab_ts: list[float] = field(default_factory=list)
    lab_cum: list[int] = field(default_factory=list)  # cumulative frauds, inclusive

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict."""
        return {"v": 1, "ts": self.ts, "newcard_cum": self.newcard_cum, "round_cum": self.round_cum,
                "card": self.card, "lab_ts": self.lab_ts, "lab_cum": self.lab_cum}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StationState:
        """Inverse of :meth:`to_dict`."""
        return cls(list(d["ts"]), list(d["newcard_cum"]), list(d["round_cum"]), list(d["card"]),
                   list(d["lab_ts"]), list(d["lab_cum"]))

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


_I_NEW_STATION = CARD_FEATURES.index("new_station_30d")
_I_ROUND = CARD_FEATURES.index("amount_round")


def update_station(
    state: StationState | None, tx: Tx, card_features: list[float], config: FeatureConfig = DEFAULT_CONFIG
) -> tuple[StationState, list[float]]:
    """Station features of ``tx`` (aligned with :data:`STATION_FEATURES`) from the station's earlier events
    and its labels that are at least ``label_delay`` old, then remember ``tx``.

    ``card_features`` are the card features of the same event (whether the card is new here, round amount).
    """
    if state is None:
        state = StationState()
    t = tx.ts
    ts = state.ts
    cum = state.newcard_cum
    rcum = state.round_cum
    lo24 = bisect_right(ts, t - STATION_KEEP)
    if lo24 > 256:  # trim; cumulative counts stay valid because only differences are used
        del ts[:lo24], cum[:lo24], rcum[:lo24]
        lo24 = 0
    n = len(ts)
    lo1h = bisect_right(ts, t - HOUR, lo24)
    if n:
        c_all = cum[-1]
        r_all = rcum[-1]
        c1 = c_all - (cum[lo1h - 1] if lo1h else 0)
        c24 = c_all - (cum[lo24 - 1] if lo24 else 0)
        r24 = r_all - (rcum[lo24 - 1] if lo24 else 0)
    else:
        c_all = r_all = c1 = c24 = r24 = 0
    # delayed labels: usable iff tx_ts <= t - delay
    lt = state.lab_ts
    if lt:
        lc = state.lab_cum
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
        l30 = hi - b30
        l7 = hi - b7
        l1 = hi - b1
        fr1 = f_hi - _cum_at(lc, b1)
        if l30:
            last_label = float(lc[hi - 1] - _cum_at(lc, hi - 1))
            since_fraud = (t - lt[bisect_left(lc, f_hi, b30, hi)]) / DAY if fr30 else NAN
        else:
            last_label = since_fraud = NAN
        feats = [
            float(n - lo1h), float(n - lo24), float(c1), float(c24), float(r24),
            float(fr1), float(fr7), float(fr30), float(l30),
            fr1 / l1 if l1 else NAN, fr7 / l7 if l7 else NAN, fr30 / l30 if l30 else NAN, last_label, since_fraud,
        ]
    else:  # no label yet: every label count is 0, rates and label recency are missing
        feats = [float(n - lo1h), float(n - lo24), float(c1), float(c24), float(r24),
                 0.0, 0.0, 0.0, 0.0, NAN, NAN, NAN, NAN, NAN]
    ts.append(t)
    cum.append(c_all + (1 if card_features[_I_NEW_STATION] == 1.0 else 0))
    rcum.append(r_all + (1 if card_features[_I_ROUND] == 2.0 else 0))
    if tx.is_fraud is not None:
        record_station_label(state, t, tx.is_fraud)
    return state, feats


_NO_TERMINAL = [NAN] * len(TERMINAL_FEATURES)
_NO_DEVICE = [NAN] * len(DEVICE_FEATURES)
_ZERO_TERMINAL = (0.0,) * len(TERMINAL_FEATURES)
_NO_STATION_ACTIVITY = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, NAN, NAN, NAN, NAN, NAN)


def update_terminal(
    state: StationState | None, tx: Tx, card_features: list[float], config: FeatureConfig = DEFAULT_CONFIG
) -> tuple[StationState, list[float]]:
    """Terminal burst features (aligned with :data:`TERMINAL_FEATURES`): NaN when ``tx`` has no terminal."""
    if tx.terminal_id is None:
        return (state or StationState()), list(_NO_TERMINAL)
    if state is None:
        state = StationState()
    t = tx.ts
    ts = state.ts
    cum = state.newcard_cum
    rcum = state.round_cum
    lo24 = bisect_right(ts, t - STATION_KEEP)
    if lo24 > 256:
        del ts[:lo24], cum[:lo24], rcum[:lo24], state.card[:lo24]
        lo24 = 0
    n = len(ts)
    card = tx.card_id
    cards = state.card
    if n:
        lo1h = bisect_right(ts, t - HOUR, lo24)
        lo10 = bisect_right(ts, t - 600.0, lo1h)
        c_all = cum[-1]
        r_all = rcum[-1]
        feats = [float(n - lo10), float(n - lo1h), float(n - lo1h - cards[lo1h:].count(card)), float(n - lo24),
                 float(c_all - (cum[lo24 - 1] if lo24 else 0)), float(r_all - (rcum[lo24 - 1] if lo24 else 0))]
    else:
        c_all = r_all = 0
        feats = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    ts.append(t)
    cards.append(card)
    cum.append(c_all + (1 if card_features[_I_NEW_STATION] == 1.0 else 0))
    rcum.append(r_all + (1 if card_features[_I_ROUND] == 2.0 else 0))
    return state, feats


def update_device(
    state: StationState | None, tx: Tx, config: FeatureConfig = DEFAULT_CONFIG
) -> tuple[StationState, list[float]]:
    """Shared-device features (aligned with :data:`DEVICE_FEATURES`): NaN when ``tx`` has no device."""
    if tx.device_id is None:
        return (state or StationState()), list(_NO_DEVICE)
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
        """Features of ``tx`` (point-in-time), then update every state with it.

        The station (while it has no label), terminal and device steps are :func:`update_station`,
        :func:`update_terminal` and :func:`update_device` inlined (same arithmetic, no call, no tuple, no
        intermediate list): ``tests/test_features_parity.py`` checks this path against those functions."""
        cfg = self.config
        key = tx.card_id
        cards = self.cards
        old = cards.get(key)
        cs, cf = update_card(old, tx, profile, cfg)
        if old is None:  # states are updated in place: store only new ones
            cards[key] = cs
        t = tx.ts  # below, ``count + 0.0`` is ``float(count)`` exactly, without a call
        new_here = 1 if cf[_I_NEW_STATION] == 1.0 else 0
        rnd = 1 if cf[_I_ROUND] == 2.0 else 0
        key = tx.station_id
        st = self.stations.get(key)
        if st is None or st.lab_ts or tx.is_fraud is not None:
            ss, sf = update_station(st, tx, cf, cfg)
            if st is None:
                self.stations[key] = ss
            cf += sf
        else:  # update_station without labels
            ts = st.ts
            cum = st.newcard_cum
            rcum = st.round_cum
            lo24 = bisect_right(ts, t - STATION_KEEP)
            if lo24 > 256:
                del ts[:lo24], cum[:lo24], rcum[:lo24]
                lo24 = 0
            n = len(ts)
            lo1h = bisect_right(ts, t - HOUR, lo24)
            if n:
                c_all = cum[-1]
                r_all = rcum[-1]
                cf += (n - lo1h + 0.0, n - lo24 + 0.0, c_all - (cum[lo1h - 1] if lo1h else 0) + 0.0,
                       c_all - (cum[lo24 - 1] if lo24 else 0) + 0.0, r_all - (rcum[lo24 - 1] if lo24 else 0) + 0.0,
                       0.0, 0.0, 0.0, 0.0, NAN, NAN, NAN, NAN, NAN)
            else:
                c_all = r_all = 0
                cf += _NO_STATION_ACTIVITY
            ts.append(t)
            cum.append(c_all + new_here)
            rcum.append(r_all + rnd)
        key = tx.terminal_id
        if key is None:
            cf += _NO_TERMINAL
        else:
            st = self.terminals.get(key)
            if st is None:
                st = self.terminals[key] = StationState()
            ts = st.ts
            cum = st.newcard_cum
            rcum = st.round_cum
            cards_ = st.card
            lo24 = bisect_right(ts, t - STATION_KEEP)
            if lo24 > 256:
                del ts[:lo24], cum[:lo24], rcum[:lo24], cards_[:lo24]
                lo24 = 0
            n = len(ts)
            card = tx.card_id
            if n:
                lo1h = bisect_right(ts, t - HOUR, lo24)
                lo10 = bisect_right(ts, t - 600.0, lo1h)
                c_all = cum[-1]
                r_all = rcum[-1]
                cf += (n - lo10 + 0.0, n - lo1h + 0.0, n - lo1h - cards_[lo1h:].count(card) + 0.0,
                       n - lo24 + 0.0, c_all - (cum[lo24 - 1] if lo24 else 0) + 0.0,
                       r_all - (rcum[lo24 - 1] if lo24 else 0) + 0.0)
            else:
                c_all = r_all = 0
                cf += _ZERO_TERMINAL
            ts.append(t)
            cards_.append(card)
            cum.append(c_all + new_here)
            rcum.append(r_all + rnd)
        key = tx.device_id
        if key is None:
            cf += _NO_DEVICE
        else:
            st = self.devices.get(key)
            if st is None:
                st = self.devices[key] = StationState()
            ts = st.ts
            recent = st.card
            lo = bisect_right(ts, t - DEVICE_KEEP)
            if lo:
                del ts[:lo], recent[:lo]
            card = tx.card_id
            n = len(recent)
            cf += (n + 0.0, n - recent.count(card) + 0.0)
            ts.append(t)
            recent.append(card)
        return cf

    def record_label(self, tx: Tx, is_fraud: int) -> None:
        """A late label for an already processed transaction (stream use)."""
        if tx.card_id in self.cards:
            record_label(self.cards[tx.card_id], tx.ts, is_fraud)
        record_station_label(self.stations.setdefault(tx.station_id, StationState()), tx.ts, is_fraud)


def features_dict(vector: list[float]) -> dict[str, float]:
    """Name every value of a feature vector."""
    return dict(zip(FEATURE_NAMES, vector, strict=True))


# ---------------------------------------------------------------- vectorised sibling (training)

PROFILE_COLUMNS = ("card_type", "tank_capacity_l", "per_tx_limit_fen", "daily_limit_fen", "monthly_limit_fen",
                   "allowed_products", "allowed_regions", "geofence_lat", "geofence_lon", "geofence_radius_km")
OPTIONAL_COLUMNS = ("terminal_id", "device_id", "product", "litres", "lat", "lon", "region", "is_fraud")


def _present(df: Any, col: str) -> bool:
    return col in df.columns and bool(df[col].notna().any())


def _codes(values: Any) -> Any:
    """Integer codes of a column, -1 where missing."""
    import pandas as pd

    codes, _ = pd.factorize(values, use_na_sentinel=True)
    return codes


def _pair(a: Any, b: Any) -> Any:
    """Codes of (a, b) pairs, -1 where either is missing."""
    import numpy as np

    ok = (a >= 0) & (b >= 0)
    combined = a.astype(np.int64) * np.int64(int(b.max()) + 1) + b
    out = np.full(len(a), -1, dtype=np.int64)
    if ok.any():
        _, inv = np.unique(combined[ok], return_inverse=True)
        out[ok] = inv
    return out


def _col_codes(sub: Any, col: str) -> Any:
    import numpy as np

    v = sub[col]
    present = v.notna().to_numpy()
    codes = np.full(len(v), -1, dtype=np.int64)
    if present.any():
        codes[present] = _codes(v[present].astype(str).to_numpy())
    return codes


class _Groups:
    """Rows (in processing order) grouped by a key: positions, ranks and windows, exactly like the replay."""

    def __init__(self, codes: Any, t: Any) -> None:
        import numpy as np

        self.t = t
        self.valid = codes >= 0
        self.rows = np.flatnonzero(self.valid)  # processing positions with a key
        c = codes[self.rows]
        self.order = self.rows[np.argsort(c, kind="stable")]  # grouped by key, then processing order
        self.gcode = codes[self.order].astype(np.int64)
        self.gt = t[self.order]
        m = len(self.order)
        self.k = np.full(len(codes), -1, dtype=np.int64)
        self.k[self.order] = np.arange(m)
        first = np.ones(m, dtype=bool)
        first[1:] = self.gcode[1:] != self.gcode[:-1]
        starts = np.flatnonzero(first)
        sizes = np.diff(np.append(starts, m))
        self.gstart = np.repeat(starts, sizes)  # per grouped index
        self.rank = np.arange(m) - self.gstart  # earlier events of the same key

    def count_le(self, q: Any, weights: Any | None = None, elem_mask: Any | None = None) -> Any:
        """Per grouped index j: number (or weighted sum) of earlier-processed elements of j's group whose time
        is <= q[j] (q must be < the element's own time for 'earlier' to hold). ``weights`` and ``elem_mask``
        are per grouped index.

        Exact on floats: ``t_e <= q`` is turned into an integer comparison of processing positions
        (``position(e) < searchsorted(t, q, 'right')``), then one searchsorted on (group, position) keys.
        """
        import numpy as np

        big = np.int64(len(self.t) + 1)
        r = np.searchsorted(self.t, q, side="right").astype(np.int64)
        ekeys = self.gcode * big + self.order
        w = None if weights is None else np.asarray(weights, dtype=float)
        if elem_mask is not None:
            ekeys = ekeys[elem_mask]
            w = None if w is None else w[elem_mask]
        pos = np.searchsorted(ekeys, self.gcode * big + r, side="left")
        first = np.searchsorted(ekeys, self.gcode * big, side="left")
        if w is None:
            return (pos - first).astype(float)
        cw = np.zeros(len(w) + 1)
        np.cumsum(w, out=cw[1:])
        return cw[pos] - cw[first]

    def last_le(self, q: Any, elem_mask: Any) -> Any:
        """Per grouped index j: grouped index of the latest element of j's group with time <= q[j] (-1 if none)."""
        import numpy as np

        big = np.int64(len(self.t) + 1)
        r = np.searchsorted(self.t, q, side="right").astype(np.int64)
        e_idx = np.flatnonzero(elem_mask)
        ekeys = (self.gcode * big + self.order)[e_idx]
        pos = np.searchsorted(ekeys, self.gcode * big + r, side="left")
        first = np.searchsorted(ekeys, self.gcode * big, side="left")
        return np.where(pos > first, e_idx[np.maximum(pos - 1, 0)] if len(e_idx) else -1, -1)

    def lo(self, window: float) -> Any:
        """Per grouped index: first grouped index inside (t - window, t]."""
        return self.gstart + self.count_le(self.gt - window).astype("int64")

    def prefix(self, values: Any) -> Any:
        """Exclusive prefix sums of ``values`` (processing order) in grouped order: P[j] = sum before j."""
        import numpy as np

        v = np.asarray(values)[self.order]
        out = np.zeros(len(v) + 1, dtype=v.dtype if v.dtype.kind in "iu" else float)
        np.cumsum(v, out=out[1:])
        return out

    def scatter(self, out: Any, col: int, values: Any) -> None:
        """Write per-grouped-index ``values`` into ``out[:, col]`` (processing order)."""
        out[self.order, col] = values


def _haversine_np(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> Any:
    import numpy as np

    p1 = np.radians(lat1)
    p2 = np.radians(lat2)
    a = np.sin((p2 - p1) * 0.5) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) * 0.5) ** 2
    return 12742.0 * np.arcsin(np.sqrt(np.minimum(1.0, a)))


def processing_order(df: Any) -> Any:
    """The order events are processed in: by ``ts``, ties in file order."""
    import numpy as np

    return np.argsort(df["ts"].to_numpy(dtype=float), kind="stable")


def features_many(df: Any, config: FeatureConfig = DEFAULT_CONFIG) -> Any:
    """Vectorised features of every row of ``df`` (rows in ``df``'s order, columns :data:`FEATURE_NAMES`).

    ``df`` has ``ts`` (epoch seconds), ``card_id``, ``station_id``, ``amount_fen`` and any of
    :data:`OPTIONAL_COLUMNS` / :data:`PROFILE_COLUMNS` (``allowed_*`` as ``|``- or ``,``-separated strings). Equal to
    replaying :class:`FeatureEngine` in :func:`processing_order` (``tests/test_features_parity.py``).
    """
    import numpy as np

    n = len(df)
    F = np.full((n, len(FEATURE_NAMES)), np.nan)
    if n == 0:
        return F
    po = processing_order(df)
    sub = df.iloc[po].reset_index(drop=True)
    t = sub["ts"].to_numpy(dtype=float)
    amount = sub["amount_fen"].to_numpy(dtype=np.int64)
    col = FEATURE_INDEX
    delay = config.delay_s
    label = sub["is_fraud"].to_numpy(dtype=float) if "is_fraud" in sub.columns else np.full(n, np.nan)

    # ---------------- card
    card_c = _col_codes(sub, "card_id")
    station_c = _col_codes(sub, "station_id")
    g = _Groups(card_c, t)
    j = np.arange(len(g.order))
    gt = g.gt
    a_g = amount[g.order]
    A = g.prefix(amount)
    A2 = g.prefix(amount * amount)
    lo = {w: g.lo(w) for w in (HOUR, DAY, 7 * DAY, W30)}
    n30 = j - lo[W30]
    n7 = j - lo[7 * DAY]
    s30 = A[j] - A[lo[W30]]
    s7 = A[j] - A[lo[7 * DAY]]
    s24 = A[j] - A[lo[DAY]]
    s1h = A[j] - A[lo[HOUR]]
    a_y = a_g / 100.0
    with np.errstate(divide="ignore", invalid="ignore"):
        has30 = n30 > 0
        mean30 = np.where(has30, s30 / np.maximum(n30, 1) / 100.0, np.nan)
        var = (A2[j] - A2[lo[W30]]) / np.maximum(n30, 1) / 1e4 - mean30 * mean30
        std30 = np.where(has30, np.where(var > 0.0, np.sqrt(np.where(var > 0, var, 0.0)), 0.0), np.nan)
        vs30 = np.where(has30 & (mean30 > 0.0), a_y / mean30, np.nan)
        z30 = np.where(has30, np.where(std30 > 0.0, (a_y - mean30) / std30, 0.0), np.nan)
        mean7 = np.where(n7 > 0, s7 / np.maximum(n7, 1) / 100.0, np.nan)
        vs7 = np.where((n7 > 0) & (mean7 > 0.0), a_y / mean7, np.nan)
    prev_t = np.where(j > g.gstart, gt[np.maximum(j - 1, 0)], np.nan)
    since = np.where(has30, gt - prev_t, np.nan)
    first_t = gt[g.gstart]
    pair = _Groups(_pair(card_c, station_c), t)
    pj = np.arange(len(pair.order))
    p_prev = np.full(n, np.nan)
    p_prev[pair.order] = np.where(pj > pair.gstart, pair.gt[np.maximum(pj - 1, 0)], np.nan)
    new_station = np.where(p_prev > t - W30, 0.0, 1.0)  # NaN (no earlier visit) compares False
    fraud_known = g.count_le(gt - delay, weights=(label == 1.0)[g.order].astype(float),
                             elem_mask=(label == 1.0)[g.order])
    local = t + config.tz_offset_hours * HOUR
    hour_i = (local % DAY // HOUR).astype(np.int64)
    weekday = ((local // DAY + 3) % 7).astype(np.int64).astype(float)
    night = (hour_i < 5).astype(np.int64)
    NI = g.prefix(night)
    with np.errstate(divide="ignore", invalid="ignore"):
        night_share = np.where(has30, (NI[j] - NI[lo[W30]]) / np.maximum(n30, 1), np.nan)
    amount_round = np.where(amount % 10000 == 0, 2.0, np.where(amount % 1000 == 0, 1.0, 0.0))
    for name, vals in (
        ("amount", a_y), ("card_n_1h", j - lo[HOUR]), ("card_n_24h", j - lo[DAY]), ("card_n_7d", n7),
        ("card_n_30d", n30), ("card_amt_1h", s1h / 100.0), ("card_amt_24h", s24 / 100.0),
        ("card_amt_7d", s7 / 100.0), ("card_amt_30d", s30 / 100.0), ("card_mean_7d", mean7),
        ("card_mean_30d", mean30), ("card_std_30d", std30), ("amount_vs_mean_7d", vs7),
        ("amount_vs_mean_30d", vs30), ("amount_z_30d", z30), ("card_spend_24h_incl", (s24 + a_g) / 100.0),
        ("card_spend_30d_incl", (s30 + a_g) / 100.0), ("secs_since_last", since), ("card_n_total", g.rank),
        ("card_age_days", (gt - first_t) / DAY), ("card_fraud_known", fraud_known),
        ("card_night_share_30d", night_share),
    ):
        g.scatter(F, col[name], vals)
    F[:, col["new_station_30d"]] = new_station
    F[:, col["hour_local"]] = hour_i.astype(float)
    F[:, col["weekday_local"]] = weekday
    F[:, col["amount_round"]] = amount_round

    def new_in_card(key_col: str) -> Any:
        present = sub[key_col].notna().to_numpy()
        pg = _Groups(_pair(card_c, _col_codes(sub, key_col)), t)
        pj_ = np.arange(len(pg.order))
        prev = np.full(n, np.nan)
        prev[pg.order] = np.where(pj_ > pg.gstart, pg.gt[np.maximum(pj_ - 1, 0)], np.nan)
        return np.where(present, np.where(prev > t - W30, 0.0, 1.0), np.nan)

    if _present(sub, "device_id"):
        F[:, col["new_device_30d"]] = new_in_card("device_id")
    product = sub["product"].astype(object).where(sub["product"].notna(), None).to_numpy() \
        if _present(sub, "product") else None
    if product is not None:
        prod_s = np.array([None if p is None else str(p) for p in product], dtype=object)
        sub = sub.assign(product=prod_s)
        F[:, col["product_is_fuel"]] = np.array([np.nan if p is None else (1.0 if p in FUELS else 0.0)
                                                 for p in prod_s])
        F[:, col["new_product_30d"]] = new_in_card("product")
    litres = sub["litres"].to_numpy(dtype=float) if _present(sub, "litres") else None
    if litres is not None:
        known = ~np.isnan(litres)
        LS = g.prefix(np.where(known, litres, 0.0))
        LK = g.prefix(known.astype(np.int64))
        ls = LS[j] - LS[lo[W30]]
        nk = LK[j] - LK[lo[W30]]
        with np.errstate(divide="ignore", invalid="ignore"):
            vs = np.where((nk > 0) & (ls > 0.0), litres[g.order] / (ls / np.maximum(nk, 1)), np.nan)
        F[:, col["litres"]] = litres
        g.scatter(F, col["litres_vs_mean_30d"], np.where(known[g.order], vs, np.nan))
    geo = None
    if _present(sub, "lat") and _present(sub, "lon"):
        lat = sub["lat"].to_numpy(dtype=float)
        lon = sub["lon"].to_numpy(dtype=float)
        geo = ~np.isnan(lat) & ~np.isnan(lon)
        glat, glon, ggeo = lat[g.order], lon[g.order], geo[g.order]
        pm1 = np.maximum(j - 1, 0)
        prev_geo = (j > g.gstart) & ggeo[pm1]
        ok = ggeo & has30 & prev_geo
        d_prev = np.where(ok, _haversine_np(glat[pm1], glon[pm1], glat, glon), np.nan)
        speed = d_prev / np.maximum(since, 60.0) * HOUR
        LA = g.prefix(np.where(geo, lat, 0.0))
        LO = g.prefix(np.where(geo, lon, 0.0))
        GK = g.prefix(geo.astype(np.int64))
        ng = GK[j] - GK[lo[W30]]
        with np.errstate(divide="ignore", invalid="ignore"):
            clat = (LA[j] - LA[lo[W30]]) / np.maximum(ng, 1)
            clon = (LO[j] - LO[lo[W30]]) / np.maximum(ng, 1)
        d_c = np.where(ggeo & has30 & (ng > 0), _haversine_np(clat, clon, glat, glon), np.nan)
        g.scatter(F, col["dist_prev_km"], d_prev)
        g.scatter(F, col["speed_kmh"], speed)
        g.scatter(F, col["dist_centroid_km"], d_c)
    # ---------------- profile (master data)
    if any(_present(sub, c) for c in PROFILE_COLUMNS):
        def num(c: str) -> Any:
            return sub[c].to_numpy(dtype=float) if _present(sub, c) else np.full(n, np.nan)

        with np.errstate(divide="ignore", invalid="ignore"):
            cap = num("tank_capacity_l")
            if litres is not None:
                F[:, col["tank_ratio"]] = np.where(cap > 0, litres / cap, np.nan)
            lim = num("per_tx_limit_fen")
            F[:, col["per_tx_limit_ratio"]] = np.where(lim > 0, amount / lim, np.nan)
            spend24 = np.empty(n)
            spend24[g.order] = s24 + a_g
            spend30 = np.empty(n)
            spend30[g.order] = s30 + a_g
            lim = num("daily_limit_fen")
            F[:, col["daily_limit_ratio"]] = np.where(lim > 0, spend24 / lim, np.nan)
            lim = num("monthly_limit_fen")
            F[:, col["monthly_limit_ratio"]] = np.where(lim > 0, spend30 / lim, np.nan)
        if product is not None and _present(sub, "allowed_products"):
            F[:, col["product_not_allowed"]] = [
                np.nan if (al is None or (isinstance(al, float) and al != al) or p is None)
                else (0.0 if p in _split(al) else 1.0)
                for p, al in zip(sub["product"], sub["allowed_products"], strict=True)]
        if _present(sub, "region") and _present(sub, "allowed_regions"):
            F[:, col["region_not_allowed"]] = [
                np.nan if (al is None or (isinstance(al, float) and al != al) or r is None
                           or (isinstance(r, float) and r != r))
                else (0.0 if str(r) in _split(al) else 1.0)
                for r, al in zip(sub["region"], sub["allowed_regions"], strict=True)]
        if geo is not None:
            flat, flon, rad = num("geofence_lat"), num("geofence_lon"), num("geofence_radius_km")
            okf = geo & ~np.isnan(flat) & ~np.isnan(flon) & ~np.isnan(rad)
            F[:, col["geofence_excess_km"]] = np.where(okf, _haversine_np(flat, flon, lat, lon) - rad, np.nan)
        if _present(sub, "card_type"):
            ct = sub["card_type"]
            has = ct.notna().to_numpy()
            F[:, col["is_fleet"]] = np.where(has, (ct == "fleet").to_numpy(dtype=float), np.nan)
            F[:, col["is_family_sub"]] = np.where(has, (ct == "family_sub").to_numpy(dtype=float), np.nan)
    # ---------------- station
    sg = _Groups(station_c, t)
    sj = np.arange(len(sg.order))
    s_lo1 = sg.lo(HOUR)
    s_lo24 = sg.lo(STATION_KEEP)
    NC = sg.prefix(new_station.astype(np.int64))
    RC = sg.prefix((amount_round == 2.0).astype(np.int64))
    labelled = ~np.isnan(label)
    lab_g = labelled[sg.order]
    yl = np.where(label == 1.0, 1.0, 0.0)
    sgt = sg.gt
    cut = sgt - delay
    cnt = {w: sg.count_le(cut - w, elem_mask=lab_g) for w in (0.0, DAY, 7 * DAY, W30)}
    frd = {w: sg.count_le(cut - w, weights=yl[sg.order], elem_mask=lab_g) for w in (0.0, DAY, 7 * DAY, W30)}
    l30 = cnt[0.0] - cnt[W30]
    l7 = cnt[0.0] - cnt[7 * DAY]
    fr7 = frd[0.0] - frd[7 * DAY]
    fr30 = frd[0.0] - frd[W30]
    l1 = cnt[0.0] - cnt[DAY]
    fr1 = frd[0.0] - frd[DAY]
    with np.errstate(divide="ignore", invalid="ignore"):
        rate1 = np.where(l1 > 0, fr1 / np.maximum(l1, 1), np.nan)
        rate7 = np.where(l7 > 0, fr7 / np.maximum(l7, 1), np.nan)
        rate30 = np.where(l30 > 0, fr30 / np.maximum(l30, 1), np.nan)
    last_lab = sg.last_le(cut, elem_mask=lab_g)
    last_label = np.where((l30 > 0) & (last_lab >= 0), yl[sg.order][np.maximum(last_lab, 0)], np.nan)
    last_fr = sg.last_le(cut, elem_mask=lab_g & (yl[sg.order] == 1.0))
    since_fraud = np.where((fr30 > 0) & (last_fr >= 0), (sgt - sgt[np.maximum(last_fr, 0)]) / DAY, np.nan)
    for name, vals in (
        ("st_n_1h", sj - s_lo1), ("st_n_24h", sj - s_lo24), ("st_newcard_1h", NC[sj] - NC[s_lo1]),
        ("st_newcard_24h", NC[sj] - NC[s_lo24]), ("st_round_24h", RC[sj] - RC[s_lo24]),
        ("st_fraud_1d", fr1), ("st_fraud_7d", fr7), ("st_fraud_30d", fr30),
        ("st_labelled_30d", l30), ("st_rate_1d", rate1), ("st_rate_7d", rate7), ("st_rate_30d", rate30),
        ("st_last_label", last_label), ("st_days_since_fraud", since_fraud),
    ):
        sg.scatter(F, col[name], vals)
    # ---------------- terminal
    if _present(sub, "terminal_id"):
        term_c = _col_codes(sub, "terminal_id")
        tg = _Groups(term_c, t)
        tj = np.arange(len(tg.order))
        t_lo10, t_lo1, t_lo24 = tg.lo(600.0), tg.lo(HOUR), tg.lo(STATION_KEEP)
        TNC = tg.prefix(new_station.astype(np.int64))
        TRC = tg.prefix((amount_round == 2.0).astype(np.int64))
        pg = _Groups(_pair(term_c, card_c), t)
        same = np.full(n, np.nan)
        same[pg.order] = np.arange(len(pg.order)) - pg.lo(HOUR)
        n1 = tj - t_lo1
        for name, vals in (
            ("term_n_10m", tj - t_lo10), ("term_n_1h", n1), ("term_other_cards_1h", n1 - same[tg.order]),
            ("term_n_24h", tj - t_lo24), ("term_newcard_24h", TNC[tj] - TNC[t_lo24]),
            ("term_round_24h", TRC[tj] - TRC[t_lo24]),
        ):
            tg.scatter(F, col[name], vals)
    # ---------------- device
    if _present(sub, "device_id"):
        dev_c = _col_codes(sub, "device_id")
        dg = _Groups(dev_c, t)
        dj = np.arange(len(dg.order))
        dn = dj - dg.lo(DEVICE_KEEP)
        pg = _Groups(_pair(dev_c, card_c), t)
        same = np.full(n, np.nan)
        same[pg.order] = np.arange(len(pg.order)) - pg.lo(DEVICE_KEEP)
        dg.scatter(F, col["dev_n_30d"], dn)
        dg.scatter(F, col["dev_other_cards_30d"], dn - same[dg.order])
    out = np.empty_like(F)
    out[po] = F
    return out


def _split(value: Any) -> frozenset[str]:
    if isinstance(value, frozenset | set | list | tuple):
        return frozenset(str(v) for v in value)
    return frozenset(s.strip() for s in str(value).replace(",", "|").split("|") if s.strip())


def profile_from_row(row: Mapping[str, Any]) -> CardProfile | None:
    """A :class:`CardProfile` from the profile columns of one row (None when it has none)."""
    vals = {}
    for c in PROFILE_COLUMNS:
        v = row.get(c)
        if v is None or (isinstance(v, float) and v != v):
            continue
        vals[c] = v
    if not vals:
        return None
    for c in ("allowed_products", "allowed_regions"):
        if c in vals:
            vals[c] = _split(vals[c])
    for c in ("tank_capacity_l", "geofence_lat", "geofence_lon", "geofence_radius_km"):
        if c in vals:
            vals[c] = float(vals[c])
    for c in ("per_tx_limit_fen", "daily_limit_fen", "monthly_limit_fen"):
        if c in vals:
            vals[c] = int(vals[c])
    if "card_type" in vals:
        vals["card_type"] = str(vals["card_type"])
    return CardProfile(**vals)


def replay(df: Any, config: FeatureConfig = DEFAULT_CONFIG) -> Any:
    """Features of every row by replaying :class:`FeatureEngine` event by event (the reference for
    :func:`features_many`; rows in ``df``'s order)."""
    import numpy as np

    n = len(df)
    out = np.full((n, len(FEATURE_NAMES)), np.nan)
    engine = FeatureEngine(config)
    records = df.to_dict("records")
    for i in processing_order(df):
        r = records[i]
        out[i] = engine.process(tx_from_mapping(r), profile_from_row(r))
    return out


# ---------------------------------------------------------------- compiled hot path

#: Module functions replaced by their compiled twins (the per-event path of the API, the stream and replay).
_COMPILED_FUNCTIONS = ("update_card", "update_station", "update_terminal", "update_device", "record_label",
                       "record_station_label", "haversine_km")
#: Names the compiled twin must share with this module (its own copies would be different classes).
_SHARED_NAMES = ("Tx", "CardProfile", "FeatureConfig", "CardState", "StationState", "DEFAULT_CONFIG")


def _use_compiled() -> tuple[str, str]:
    """Swap the per-event functions for ``fuelcard._features_c`` when it is built from this very source.

    ``setup.py`` compiles a copy of this file (Cython, plain Python semantics: no annotation typing, only
    the type inferences Cython deems safe) as ``fuelcard._features_c`` with the source's SHA-256 appended; a
    build from another version of this file is refused (stale build: the pure functions stay, with a
    warning) so it can never serve old logic. The classes stay this module's own; only functions and methods
    are replaced.
    ``tests/test_features_compiled.py`` checks the compiled path bit for bit against this source run as
    plain Python. Returns ``(implementation, why not compiled)``.
    """
    try:
        from fuelcard import _features_c as fast  # type: ignore[attr-defined]
    except ImportError as e:
        return "pure", f"not built ({e}); run `make setup` (pip install -e .) to build it"
    try:
        sha = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    except OSError as e:
        return "pure", f"cannot read {__file__} to check the build ({e})"
    if getattr(fast, "__source_sha256__", None) != sha:
        return "pure", "built from another version of features.py (stale build; run `make setup`)"
    g = globals()
    for name in _SHARED_NAMES:
        setattr(fast, name, g[name])
    for name in _COMPILED_FUNCTIONS:
        fn = g[name] = getattr(fast, name)
        fn.__module__ = __name__  # pickled by reference as fuelcard.features.<name>: this swap on unpickling
    FeatureEngine.process = fast.FeatureEngine.__dict__["process"]  # type: ignore[method-assign]
    FeatureEngine.record_label = fast.FeatureEngine.__dict__["record_label"]  # type: ignore[method-assign]
    for name in ("to_dict", "from_dict", "_from_v1", "to_bytes", "from_bytes"):
        setattr(CardState, name, fast.CardState.__dict__[name])
    for name in ("to_dict", "from_dict", "to_bytes", "from_bytes"):
        setattr(StationState, name, fast.StationState.__dict__[name])
    return "compiled", ""


#: ``compiled`` (``fuelcard._features_c``) or ``pure`` (this file as Python): what computes the features.
FEATURES_IMPL = "pure"
FEATURES_IMPL_PROBLEM = ""
if __name__ == "fuelcard.features":  # not in the compiled twin itself, nor in a reference copy of this file
    FEATURES_IMPL, FEATURES_IMPL_PROBLEM = _use_compiled()
    if FEATURES_IMPL_PROBLEM:
        logging.getLogger(__name__).warning("compiled feature code unavailable: %s; using the pure-Python one",
                                            FEATURES_IMPL_PROBLEM)
