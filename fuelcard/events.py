"""Typed, immutable, versioned events and entities shared by every layer.

One model is the Kafka payload, the warehouse row source and the API body.
Money is integer fen (1 yuan = 100 fen); timestamps are timezone-aware; card
numbers are tokenised at the edge (:func:`fuelcard.privacy.tokenize_pan`), so
events carry ``card_id`` tokens only.

>>> from datetime import datetime, timezone
>>> a = Authorisation(tx_id="t1", ts=datetime(2026, 1, 5, 8, tzinfo=timezone.utc),
...                   card_id="c1", station_id="S0001", product="95", amount_fen=30000)
>>> Authorisation.model_validate_json(a.model_dump_json()) == a
True
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter

SCHEMA_VERSION = 1


def _aware(ts: datetime) -> datetime:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError("timestamp must be timezone-aware")
    return ts


AwareDatetime = Annotated[datetime, AfterValidator(_aware)]
Fen = Annotated[int, Field(ge=0, le=10_000_000_000, description="Money in integer fen (1/100 yuan)")]
Id = Annotated[str, Field(min_length=1, max_length=64)]


class Product(StrEnum):
    """Products sold at a station: fuels by grade plus non-fuel."""

    GASOLINE_92 = "92"
    GASOLINE_95 = "95"
    GASOLINE_98 = "98"
    DIESEL_0 = "diesel"
    SHOP = "shop"
    CAR_WASH = "wash"

    @property
    def is_fuel(self) -> bool:
        return self in FUELS


FUELS = frozenset({Product.GASOLINE_92, Product.GASOLINE_95, Product.GASOLINE_98, Product.DIESEL_0})


class StationType(StrEnum):
    URBAN = "urban"
    HIGHWAY = "highway"
    RURAL = "rural"


class CardType(StrEnum):
    PERSONAL = "personal"
    FAMILY_MAIN = "family_main"
    FAMILY_SUB = "family_sub"
    FLEET = "fleet"


class Tier(StrEnum):
    STANDARD = "standard"
    SILVER = "silver"
    GOLD = "gold"
    DIAMOND = "diamond"


class Outcome(StrEnum):
    APPROVE = "approve"
    REVIEW = "review"
    DECLINE = "decline"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


class _Event(_Frozen):
    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: Id | None = Field(default=None, description="Unique id of this event (defaults to tx_id + kind)")


# ---------------------------------------------------------------- entities


class GeoPoint(_Frozen):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class Station(_Frozen):
    station_id: Id
    name: str
    region: str
    city: str
    station_type: StationType
    location: GeoPoint
    nozzles: dict[Product, int] = Field(description="Nozzle count per fuel product")
    tank_capacity_l: dict[Product, float] = Field(description="Total tank capacity per fuel product, litres")
    competitors_within_3km: int = Field(ge=0)


class Member(_Frozen):
    member_id: Id
    tier: Tier
    home: GeoPoint
    work: GeoPoint | None = None
    family_id: Id | None = None
    joined: date
    id_number_enc: str | None = Field(default=None, description="SM4-encrypted ID number (never raw)")
    phone_enc: str | None = Field(default=None, description="SM4-encrypted phone (never raw)")


class Vehicle(_Frozen):
    vehicle_id: Id
    plate_masked: str
    tank_capacity_l: float = Field(gt=0, le=2000)
    fuel_type: Product


class FleetPolicy(_Frozen):
    per_tx_limit_fen: Fen | None = None
    daily_limit_fen: Fen | None = None
    monthly_limit_fen: Fen | None = None
    allowed_products: frozenset[Product] | None = None
    allowed_regions: frozenset[str] | None = None
    geofence_center: GeoPoint | None = None
    geofence_radius_km: float | None = Field(default=None, gt=0)


class FleetAccount(_Frozen):
    fleet_id: Id
    name: str
    region: str
    vehicles: tuple[Id, ...] = ()


class Card(_Frozen):
    card_id: Id = Field(description="Token of the card number (keyed HMAC), never the number itself")
    card_type: CardType
    member_id: Id | None = None
    main_card_id: Id | None = Field(default=None, description="For family sub-cards: the main card")
    fleet_id: Id | None = None
    vehicle_id: Id | None = None
    per_tx_limit_fen: Fen | None = None
    monthly_limit_fen: Fen | None = None
    holiday_limit_fen: Fen | None = Field(default=None, description="Temporary raised limit (family main)")
    policy: FleetPolicy | None = None
    issued: date


# ---------------------------------------------------------------- payment events


class Authorisation(_Event):
    """Pre-authorisation when the nozzle is lifted: funds are reserved."""

    kind: Literal["authorisation"] = "authorisation"
    tx_id: Id
    ts: AwareDatetime
    card_id: Id
    station_id: Id
    product: Product
    amount_fen: Fen = Field(description="Amount reserved")
    litres: float | None = Field(default=None, ge=0, le=2000, description="Requested litres if preset")
    terminal_id: Id | None = None
    device_id: Id | None = None
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    region: str | None = None


class Capture(_Event):
    """Nozzle hung up: the real litres and amount are captured."""

    kind: Literal["capture"] = "capture"
    tx_id: Id
    ts: AwareDatetime
    card_id: Id
    station_id: Id
    product: Product
    amount_fen: Fen
    litres: float | None = Field(default=None, ge=0, le=2000)
    member_id: Id | None = None


class Cancel(_Event):
    """Pre-authorisation released: cancelled at the pump or timed out."""

    kind: Literal["cancel"] = "cancel"
    tx_id: Id
    ts: AwareDatetime
    card_id: Id
    reason: Literal["cancelled", "timeout", "declined"] = "cancelled"


class Refund(_Event):
    kind: Literal["refund"] = "refund"
    tx_id: Id
    refund_id: Id
    ts: AwareDatetime
    card_id: Id
    amount_fen: Fen


class Recharge(_Event):
    kind: Literal["recharge"] = "recharge"
    recharge_id: Id
    ts: AwareDatetime
    card_id: Id
    amount_fen: Fen
    batch_id: Id | None = Field(default=None, description="Fleet batch recharge id")


class PointsRedemption(_Event):
    kind: Literal["redemption"] = "redemption"
    redemption_id: Id
    ts: AwareDatetime
    member_id: Id
    points: int = Field(gt=0, le=10_000_000)
    item: str


PaymentEvent = Annotated[
    Authorisation | Capture | Cancel | Refund | Recharge | PointsRedemption,
    Field(discriminator="kind"),
]
payment_event_adapter: TypeAdapter[Any] = TypeAdapter(PaymentEvent)


# ---------------------------------------------------------------- market and operations


class PriceChange(_Event):
    kind: Literal["price_change"] = "price_change"
    ts: AwareDatetime
    station_id: Id
    product: Product
    price_fen_per_l: Fen


class CompetitorPrice(_Event):
    kind: Literal["competitor_price"] = "competitor_price"
    ts: AwareDatetime
    competitor_id: Id
    station_id: Id = Field(description="Our station nearest to the competitor")
    product: Product
    price_fen_per_l: Fen


class CrudePrice(_Event):
    kind: Literal["crude_price"] = "crude_price"
    day: date
    usd_per_bbl: float = Field(gt=0, le=1000)


class TankReading(_Event):
    kind: Literal["tank_reading"] = "tank_reading"
    ts: AwareDatetime
    station_id: Id
    tank_id: Id
    product: Product
    level_l: float = Field(ge=0)


# ---------------------------------------------------------------- decisions


class Contribution(_Frozen):
    feature: str
    value: float | None
    contribution: float


class Decision(_Event):
    """The risk decision for one authorisation, with everything needed to explain it."""

    kind: Literal["decision"] = "decision"
    tx_id: Id
    card_id: Id
    ts: AwareDatetime
    outcome: Outcome
    score: float = Field(ge=0, le=1)
    reasons: tuple[str, ...] = ()
    top_features: tuple[Contribution, ...] = ()
    model_version: str
    ruleset_version: str
    degraded: bool = False
    latency_ms: float | None = None


ALL_MODELS: dict[str, type[BaseModel]] = {
    m.__name__: m
    for m in (
        Station, Member, Vehicle, FleetPolicy, FleetAccount, Card,
        Authorisation, Capture, Cancel, Refund, Recharge, PointsRedemption,
        PriceChange, CompetitorPrice, CrudePrice, TankReading, Decision,
    )
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every event and entity, keyed by model name."""
    return {name: model.model_json_schema() for name, model in sorted(ALL_MODELS.items())}
