"""Topic layout of the speed layer, created up front with the Kafka admin API.

Every payment topic is keyed by card token so that one card's events land on one partition and are processed
in order by one worker; the points topics are keyed by points account (the family pool or the member).
Partition counts are chosen for the horizontal scale we want (up to 8 workers per consumer group on the hot
topics), retention for what each topic is for (replay window vs. audit).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name suffix, partitions, retention and cleanup policy."""

    suffix: str
    partitions: int
    retention_ms: int
    compacted: bool = False
    doc: str = ""

    def name(self, prefix: str) -> str:
        """Full topic name under a prefix (one prefix per environment / test run)."""
        return f"{prefix}.{self.suffix}"

    def config(self) -> dict[str, str]:
        """Topic-level configs passed to CreateTopics."""
        cfg = {"retention.ms": str(self.retention_ms)}
        if self.compacted:
            cfg["cleanup.policy"] = "compact"
        return cfg


HOT_PARTITIONS = 8

AUTHORISATIONS = TopicSpec("authorisations", HOT_PARTITIONS, 7 * DAY_MS,
                           doc="Authorisation events keyed by card; the risk agent's input")
PAYMENTS = TopicSpec("payments", HOT_PARTITIONS, 7 * DAY_MS,
                     doc="Capture / Cancel / Refund keyed by card")
RECHARGES = TopicSpec("recharges", 4, 7 * DAY_MS, doc="Card recharges keyed by card")
REDEMPTIONS = TopicSpec("redemptions", 4, 7 * DAY_MS, doc="Points redemptions keyed by member")
DECISIONS = TopicSpec("decisions", HOT_PARTITIONS, 30 * DAY_MS, doc="Every risk decision keyed by card (audit)")
REVIEW = TopicSpec("review", 2, 30 * DAY_MS, doc="Review-level decisions: the manual-review queue")
POINTS_REQUESTS = TopicSpec("points-requests", HOT_PARTITIONS, 7 * DAY_MS,
                            doc="Accrual/reversal/redemption requests keyed by points account")
POINTS_LEDGER = TopicSpec("points-ledger", HOT_PARTITIONS, 30 * DAY_MS,
                          doc="Applied points movements keyed by points account")
DEAD_LETTERS = TopicSpec("dead-letters", 2, 30 * DAY_MS, doc="Malformed events with reason and raw payload")

ALL_TOPICS: tuple[TopicSpec, ...] = (
    AUTHORISATIONS, PAYMENTS, RECHARGES, REDEMPTIONS, DECISIONS, REVIEW, POINTS_REQUESTS, POINTS_LEDGER,
    DEAD_LETTERS,
)

# Faust tables: their changelog topics must have the partition count of the topic the table is keyed on.
TABLES: dict[str, int] = {"card_state": AUTHORISATIONS.partitions, "points_accounts": POINTS_REQUESTS.partitions}


def changelog_topic(app_id: str, table: str) -> str:
    """Faust's changelog topic name for a table."""
    return f"{app_id}-{table}-changelog"


def all_topic_specs(prefix: str, app_id: str) -> list[tuple[str, int, dict[str, str]]]:
    """(name, partitions, config) of every topic the app needs, changelogs and Faust internals included."""
    out = [(t.name(prefix), t.partitions, t.config()) for t in ALL_TOPICS]
    for table, parts in TABLES.items():
        out.append((changelog_topic(app_id, table), parts, {"cleanup.policy": "compact"}))
    out.append((f"{app_id}-__assignor-__leader", 1, {}))
    return out


def compression_from_env() -> str | None:
    """Compression of the record batches our producers write: ``FUELCARD_STREAM_COMPRESSION`` (``gzip``, the codec
    aiokafka has without extra packages; default ``none``). The embedded noida-db re-serialises every byte it
    retains about once a second (its autosave thread): gzip batches cost it ~4x less there, but aiokafka's
    pure-Python gzip framing costs the producers and consumers about as much again (docs/STREAMING.md)."""
    value = os.environ.get("FUELCARD_STREAM_COMPRESSION", "none").strip().lower()
    return None if value in ("", "none") else value


def with_retention(specs: list[tuple[str, int, dict[str, str]]], retention_ms: int,
                   segment_ms: int | None = None) -> list[tuple[str, int, dict[str, str]]]:
    """The same topics with a short retention, compacted ones too (``compact,delete``): for benchmarks on the
    embedded noida-db, whose CPU per produced byte grows with the bytes it retains (docs/STREAMING.md). Never for
    production: a changelog whose old records are deleted cannot restore a table."""
    seg = str(segment_ms if segment_ms is not None else max(1000, retention_ms // 6))
    out = []
    for name, parts, cfg in specs:
        c = {**cfg, "retention.ms": str(retention_ms), "segment.ms": seg}
        if c.get("cleanup.policy") == "compact":
            c["cleanup.policy"] = "compact,delete"
        out.append((name, parts, c))
    return out


async def ensure_topics(bootstrap: str, specs: list[tuple[str, int, dict[str, str]]],
                        *, replication: int = 1) -> list[str]:
    """Create the topics that do not exist yet (idempotent). Returns the names created.

    Topics are pre-created because a Kafka-protocol broker that auto-creates topics (noida-db) gives them one
    partition, which would serialise every card onto one worker.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        todo = [NewTopic(name=n, num_partitions=p, replication_factor=replication, topic_configs=c)
                for n, p, c in specs if n not in existing]
        if todo:
            try:
                await admin.create_topics(todo)
            except Exception:
                # A broker may reject unknown topic configs: retry without them rather than fall back to
                # auto-creation with one partition.
                existing = set(await admin.list_topics())
                bare = [NewTopic(name=t.name, num_partitions=t.num_partitions, replication_factor=replication)
                        for t in todo if t.name not in existing]
                if bare:
                    await admin.create_topics(bare)
        return [t.name for t in todo]
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


async def partition_counts(bootstrap: str, names: list[str]) -> dict[str, int]:
    """Partition count of each named topic, as the broker reports it (0 when missing)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        described = await admin.describe_topics(names)
        out = dict.fromkeys(names, 0)
        for t in described:
            name = t["topic"] if isinstance(t, dict) else t.topic
            parts = t["partitions"] if isinstance(t, dict) else t.partitions
            if name in out:
                out[name] = len(parts)
        return out
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
