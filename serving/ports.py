"""The small interfaces the serving layer depends on.

Routes never talk to a database driver or a model class directly: they go through these Protocols, and
:mod:`serving.adapters` implements them on the real warehouse (``warehouse.connect``) and the real model
registry (``models.registry.Registry``). Tests can pass other implementations to
:func:`serving.app.create_app`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

Row = dict[str, Any]


class NotReady(Exception):
    """A dependency (warehouse table, trained model) is not available yet: the endpoint answers 503."""

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(detail)
        self.what = what
        self.detail = detail


class NotFound(Exception):
    """The requested entity does not exist: the endpoint answers 404."""


class Conflict(Exception):
    """The request conflicts with the current state (e.g. a review case claimed by someone else): 409."""


@runtime_checkable
class SqlPort(Protocol):
    """What the serving layer needs from a warehouse connection."""

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[Row]:
        """Run a SELECT with server-side parameters and return rows as dicts."""

    def insert(self, table: str, rows: Sequence[Row]) -> None:
        """Insert rows (dicts with the table's columns)."""

    def execute(self, sql: str) -> None:
        """Run a DDL statement."""


class AuditStore(Protocol):
    """Where reads of personal data are recorded (who, what, when, why)."""

    def record(self, event: Row) -> None:
        """Record one audit event (may buffer; :meth:`flush` makes it durable)."""

    def flush(self) -> None:
        """Write buffered events."""

    def recent(self, *, limit: int, key_id: str | None = None) -> list[Row]:
        """Newest audit events first."""


class KeyStore(Protocol):
    """API key records; only salted hashes of the keys are stored."""

    def get(self, key_hash: str) -> Row | None:
        """The record of a key hash, or None."""

    def put(self, record: Row) -> None:
        """Add or replace a record (keyed by ``key_hash``)."""

    def all(self) -> list[Row]:
        """Every record (hashes, never keys)."""


class ReviewStore(Protocol):
    """The manual-review queue: cases come from review-level decisions; resolutions become labels."""

    def list_cases(self, *, status: str | None, limit: int, offset: int) -> tuple[list[Row], int]:
        """A page of cases and the total count."""

    def get_case(self, tx_id: str) -> Row:
        """One case (raises :class:`NotFound`)."""

    def claim(self, tx_id: str, *, reviewer: str) -> Row:
        """Claim a case for a reviewer (raises :class:`Conflict` if someone else holds it)."""

    def resolve(self, tx_id: str, *, reviewer: str, label: str, note: str) -> Row:
        """Resolve a claimed case; the resolution is stored as a training label."""


class AnalyticsSource(Protocol):
    """Warehouse reads behind the points endpoints and the dashboard."""

    def points_balance(self, member_id: str) -> Row:
        """Balance of a member (raises :class:`NotFound`)."""

    def points_history(self, member_id: str, *, limit: int, offset: int) -> list[Row]:
        """Points movements of a member, newest first."""

    def member_contact(self, member_ids: Sequence[str]) -> dict[str, Row]:
        """Encrypted personal fields per member (``phone_enc``, ``id_number_enc``)."""

    def dashboard(self, name: str, params: dict[str, Any]) -> list[Row]:
        """One named dashboard dataset."""

    def ping(self) -> bool:
        """True when the warehouse answers."""


class ModelPort(Protocol):
    """A trained model loaded from the registry (reloaded when a new version is promoted)."""

    kind: str
    version: str
