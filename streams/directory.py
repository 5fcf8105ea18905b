"""Reference data the points agents need: card → member, member → tier and family (points account)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from fuelcard.points import account_id_for


@dataclass(frozen=True)
class Holder:
    """Who a card belongs to, for loyalty purposes."""

    member_id: str | None
    tier: str
    family_id: str | None

    @property
    def account_id(self) -> str:
        return account_id_for(self.member_id, self.family_id)


@dataclass(frozen=True)
class CardDirectory:
    """Card and member lookups; unknown cards earn as standard on a card-level account."""

    cards: Mapping[str, str | None] = field(default_factory=lambda: MappingProxyType({}))
    members: Mapping[str, tuple[str, str | None]] = field(default_factory=lambda: MappingProxyType({}))

    def holder_of_card(self, card_id: str, member_id: str | None = None) -> Holder:
        """The holder of a card (``member_id`` from the event wins when given)."""
        mid = member_id or self.cards.get(card_id)
        tier, family = self.members.get(mid, ("standard", None)) if mid else ("standard", None)
        if mid is None:
            return Holder(None, "standard", None)
        return Holder(mid, tier, family)

    def account_of_card(self, card_id: str, member_id: str | None = None) -> str:
        """Points account of a card."""
        h = self.holder_of_card(card_id, member_id)
        return h.account_id if h.member_id else account_id_for(None, card_id=card_id)

    def holder_of_member(self, member_id: str) -> Holder:
        """Holder record of a member."""
        tier, family = self.members.get(member_id, ("standard", None))
        return Holder(member_id, tier, family)

    @classmethod
    def from_frames(cls, cards, members) -> CardDirectory:  # type: ignore[no-untyped-def]
        """Build from the simulator's ``cards`` and ``members`` DataFrames."""
        import pandas as pd

        card_map = {str(c): (None if pd.isna(m) else str(m)) for c, m in zip(cards["card_id"], cards["member_id"],
                                                                            strict=True)}
        fam = members["family_id"] if "family_id" in members else [None] * len(members)
        member_map = {str(m): (str(t), None if (f is None or pd.isna(f) or f == "") else str(f))
                      for m, t, f in zip(members["member_id"], members["tier"], fam, strict=True)}
        return cls(MappingProxyType(card_map), MappingProxyType(member_map))

    @classmethod
    def from_dir(cls, data_dir: str | Path | None) -> CardDirectory:
        """Load ``cards.parquet`` and ``members.parquet`` from a simulator output directory (empty if absent)."""
        if not data_dir:
            return cls()
        d = Path(data_dir)
        if not (d / "cards.parquet").exists() or not (d / "members.parquet").exists():
            return cls()
        import pandas as pd

        return cls.from_frames(pd.read_parquet(d / "cards.parquet", columns=["card_id", "member_id"]),
                               pd.read_parquet(d / "members.parquet"))
