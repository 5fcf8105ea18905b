"""What routes need from each loaded model: small, serving-shaped Protocols.

:mod:`serving.adapters` builds objects with these methods from the registry artifacts of the real model
modules (``models.churn``, ``models.demand``, ``models.pricing``, ``models.sites``). Rows are plain dicts.
"""

from __future__ import annotations

from typing import Protocol

import pandas as pd

from serving.ports import Row


class ChurnView(Protocol):
    def score(self, member_id: str) -> Row | None:
        """Churn probability, segment and retention action of one member, or None if unknown."""

    def segments(self) -> list[Row]:
        """One row per segment: name, members, mean probability, action."""

    def members(self, *, segment: str | None, offset: int, limit: int) -> tuple[list[Row], int]:
        """A page of members (highest risk first) and the total."""

    def frame(self, *, segment: str | None) -> pd.DataFrame:
        """Every member of a segment (or all) for export."""


class PricingView(Protocol):
    def recommendations(self, *, station_id: str | None, region: str | None, product: str | None,
                        offset: int, limit: int) -> tuple[list[Row], int]:
        """Price recommendations (station × product) and the total."""


class DemandView(Protocol):
    def forecast(self, *, station_id: str, product: str | None, days: int) -> list[Row]:
        """Daily forecasts with 80% interval for the next ``days`` days."""

    def replenishment(self, *, station_id: str | None, offset: int, limit: int) -> tuple[list[Row], int]:
        """Replenishment plan rows per tank."""

    def alerts(self, *, station_id: str | None, offset: int, limit: int) -> tuple[list[Row], int]:
        """Stock / leak alerts (sales vs tank readings disagree, or stock below safety level)."""


class SitesView(Protocol):
    def recommendations(self, *, k: int) -> list[Row]:
        """Top-k candidate sites with scores and reasons."""

    def station(self, station_id: str) -> Row | None:
        """Nozzle-count and product-mix suggestion for an existing station."""
