"""API request/response shapes (OpenAPI documented, with examples)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MemberId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$",
                                examples=["M000123"])]
StationId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$", examples=["S0007"])]
Kind = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                            examples=["churn"])]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class Page(_Out):
    total: int = Field(examples=[1234])
    offset: int = Field(examples=[0])
    limit: int = Field(examples=[50])
    items: list[dict[str, Any]]


class PointsBalance(_Out):
    member_id: str = Field(examples=["M000123"])
    balance: int = Field(description="Points available now", examples=[1520])
    issued: int = Field(examples=[2000])
    redeemed: int = Field(examples=[400])
    expired: int = Field(examples=[80])
    reversed: int = Field(default=0, examples=[0])
    last_movement_at: str | None = Field(default=None, examples=["2026-03-01T08:12:00+00:00"])


class Contact(_Out):
    phone: str | None = Field(default=None, examples=["138****5678"])
    id_number: str | None = Field(default=None, examples=["110***********1234"])
    masked: bool = True


class ChurnScore(_Out):
    member_id: str = Field(examples=["M000123"])
    churn_probability: float = Field(ge=0, le=1, examples=[0.42])
    horizon_days: int = Field(examples=[90])
    segment: str | None = Field(default=None, examples=["gold/high"])
    action: str | None = Field(default=None, examples=["personal call from the station manager"])
    drivers: dict[str, Any] = Field(default_factory=dict)
    model_version: str = Field(examples=["churn-20260301-020000"])
    contact: Contact | None = None


class ResolveBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"label": "fraud", "note": "cardholder confirmed the card was stolen"}]})

    label: Literal["fraud", "legit"] = Field(description="The reviewer's finding; stored as a training label")
    note: str = Field(default="", max_length=500, description="Free text; do not paste personal data here")


class PromoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"version": "churn-20260301-020000"}]})

    version: str = Field(min_length=1, max_length=81, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    reason: str = Field(default="promoted via API", max_length=200)


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"group": "marketing",
                                                                                "name": "crm export job"}]})

    group: Literal["transaction_path", "marketing", "analyst", "reviewer", "admin"]
    name: str = Field(default="", max_length=100, pattern=r"^[A-Za-z0-9 _.:/-]*$")


class KeyCreated(_Out):
    key: str = Field(description="Shown once; only its salted hash is stored")
    key_id: str
    group: str
    scopes: list[str]


class ModelVersion(_Out):
    kind: str
    version: str
    created_at: str
    current: bool
    metrics: dict[str, Any]
    params: dict[str, Any] = Field(default_factory=dict)
    data_window: dict[str, Any] = Field(default_factory=dict)
    features: list[str] = Field(default_factory=list)
    notes: str = ""


class Health(_Out):
    status: Literal["ok"] = "ok"
    version: str = "0.1.0"


class Readiness(_Out):
    ready: bool
    components: dict[str, Any]
