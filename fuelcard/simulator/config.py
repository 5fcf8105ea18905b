"""Simulation parameters (frozen) and the file/column contract of docs/DATA.md."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any


@dataclass(frozen=True)
class SimConfig:
    """Parameters of one simulated network. Same config (seed included) -> identical output."""

    seed: int = 7
    days: int = 60
    stations: int = 200
    members: int = 20_000
    start: date = date(2026, 1, 1)
    #: Target share of all transactions per fraud scenario (ground truth realises these approximately).
    fraud_rates: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FRAUD_RATES))

    def __post_init__(self) -> None:
        if self.days < 1 or self.days > 3660:
            raise ValueError(f"days must be between 1 and 3660, got {self.days}")
        if self.stations < 5 or self.stations > 20_000:
            raise ValueError(f"stations must be between 5 and 20000, got {self.stations}")
        if self.members < 50 or self.members > 5_000_000:
            raise ValueError(f"members must be between 50 and 5000000, got {self.members}")
        if not isinstance(self.start, date):
            raise ValueError("start must be a date")
        unknown = set(self.fraud_rates) - set(SCENARIOS)
        if unknown:
            raise ValueError(f"unknown fraud scenario(s): {sorted(unknown)}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view (for truth.json)."""
        d = asdict(self)
        d["start"] = self.start.isoformat()
        return d


SCENARIOS: tuple[str, ...] = (
    "cloned_card", "stolen_drain", "over_capacity", "card_testing",
    "fleet_geofence", "fleet_product", "compromised_station", "night_anomaly",
)

DEFAULT_FRAUD_RATES: dict[str, float] = {
    "cloned_card": 0.0007,
    "stolen_drain": 0.0010,
    "over_capacity": 0.0005,
    "card_testing": 0.0010,
    "fleet_geofence": 0.0004,
    "fleet_product": 0.0003,
    "compromised_station": 0.0010,
    "night_anomaly": 0.0005,
}

#: Every file written by ``fuelcard simulate`` and its columns (docs/DATA.md), in order.
FILES: dict[str, tuple[str, ...]] = {
    "stations.parquet": ("station_id", "name", "region", "city", "station_type", "lat", "lon", "nozzles_92",
                         "nozzles_95", "nozzles_98", "nozzles_diesel", "has_shop", "has_wash", "competitors_3km",
                         "land_cost_index", "opened"),
    "tanks.parquet": ("tank_id", "station_id", "product", "capacity_l", "lead_time_days"),
    "competitors.parquet": ("competitor_id", "brand", "lat", "lon", "station_id", "distance_km"),
    "members.parquet": ("member_id", "tier", "joined", "home_lat", "home_lon", "work_lat", "work_lon", "family_id",
                        "is_family_main", "fills_per_week", "price_sensitivity", "complaints", "churned",
                        "churn_date", "id_number", "phone", "region", "opening_points", "points_expire_date"),
    "vehicles.parquet": ("vehicle_id", "member_id", "fleet_id", "plate", "tank_capacity_l", "fuel_type"),
    "fleets.parquet": ("fleet_id", "name", "region", "home_lat", "home_lon", "geofence_radius_km",
                       "allowed_products", "per_tx_limit_fen", "daily_limit_fen", "monthly_limit_fen",
                       "member_id"),
    "cards.parquet": ("card_id", "card_type", "member_id", "main_card_id", "fleet_id", "vehicle_id",
                      "per_tx_limit_fen", "monthly_limit_fen", "issued", "device_id"),
    "transactions.parquet": ("tx_id", "ts", "capture_ts", "card_id", "member_id", "station_id", "terminal_id",
                             "device_id", "region", "product", "litres", "unit_price_fen", "amount_fen", "amount",
                             "lat", "lon", "status", "is_fraud", "scenario"),
    "recharges.parquet": ("recharge_id", "ts", "card_id", "amount_fen", "batch_id"),
    "redemptions.parquet": ("redemption_id", "ts", "member_id", "points", "item"),
    "station_sales.parquet": ("date", "station_id", "product", "litres", "transactions", "card_litres"),
    "station_hourly.parquet": ("ts_hour", "station_id", "litres"),
    "tank_readings.parquet": ("date", "tank_id", "station_id", "product", "opening_l", "sales_l", "delivery_l",
                              "closing_l", "expected_closing_l"),
    "prices.parquet": ("date", "station_id", "product", "price_fen", "cost_fen"),
    "competitor_prices.parquet": ("date", "competitor_id", "station_id", "product", "price_fen"),
    "crude.parquet": ("date", "usd_per_bbl"),
    "weather.parquet": ("date", "region", "temp_c", "rain_mm"),
    "calendar.parquet": ("date", "weekday", "is_holiday", "is_workday", "holiday_name"),
    "complaints.parquet": ("complaint_id", "ts", "member_id", "category"),
    "ground_truth/fraud.parquet": ("tx_id", "scenario", "card_id", "station_id"),
    "ground_truth/leaks.parquet": ("tank_id", "station_id", "start_date", "end_date", "litres_per_day"),
}
TRUTH_FILE = "ground_truth/truth.json"
