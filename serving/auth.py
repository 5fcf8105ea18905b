"""API keys with scopes per user group; keys are stored only as salted hashes.

A key is a random string shown once, when it is created. The store keeps
``HMAC-SHA256(settings.api_key_salt, key)`` and the key's group and scopes. Every endpoint declares the one
scope it needs (:func:`require`); a request without a valid key gets 401, a key without the scope gets 403.

>>> h = hash_key("k1", salt="s")
>>> len(h), h == hash_key("k1", salt="s"), h == hash_key("k1", salt="t")
(64, True, False)
>>> "pii:read" in GROUP_SCOPES["marketing"]
False
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader

from serving.ports import KeyStore, Row


class Scope(StrEnum):
    """What a key may do. Endpoints require exactly one of these."""

    RISK_DECIDE = "risk:decide"
    POINTS_READ = "points:read"
    CHURN_READ = "churn:read"
    SEGMENTS_EXPORT = "segments:export"
    PRICING_READ = "pricing:read"
    DEMAND_READ = "demand:read"
    ALERTS_READ = "alerts:read"
    SITES_READ = "sites:read"
    REVIEW_READ = "review:read"
    REVIEW_WRITE = "review:write"
    MODELS_READ = "models:read"
    MODELS_WRITE = "models:write"
    DASHBOARD_READ = "dashboard:read"
    METRICS_READ = "metrics:read"
    PII_READ = "pii:read"
    AUDIT_READ = "audit:read"
    KEYS_ADMIN = "keys:admin"


S = Scope
GROUP_SCOPES: dict[str, frozenset[str]] = {
    # The POS / payment gateway: decisions and the balance shown on the receipt, nothing else.
    "transaction_path": frozenset({S.RISK_DECIDE, S.POINTS_READ}),
    # Retention campaigns: churn scores and segment exports (personal data masked).
    "marketing": frozenset({S.CHURN_READ, S.SEGMENTS_EXPORT, S.POINTS_READ, S.DASHBOARD_READ}),
    # Analysts and operations: every model output and the dashboards; no personal data unmasked.
    "analyst": frozenset({S.CHURN_READ, S.PRICING_READ, S.DEMAND_READ, S.ALERTS_READ, S.SITES_READ,
                          S.MODELS_READ, S.DASHBOARD_READ, S.METRICS_READ, S.POINTS_READ}),
    # Fraud reviewers: the queue, and the cardholder's contact details to verify a transaction.
    "reviewer": frozenset({S.REVIEW_READ, S.REVIEW_WRITE, S.PII_READ, S.POINTS_READ}),
    "admin": frozenset(str(s) for s in Scope),
}
GROUPS = tuple(GROUP_SCOPES)


def hash_key(key: str, *, salt: str) -> str:
    """Salted hash of an API key (HMAC-SHA256, hex)."""
    return hmac.new(salt.encode(), key.encode(), hashlib.sha256).hexdigest()


def new_key() -> str:
    """A fresh random API key (shown once)."""
    return "fck_" + secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key id (hash prefix, safe to log), its group and scopes."""

    key_id: str
    group: str
    scopes: frozenset[str]
    name: str = ""

    def has(self, scope: str) -> bool:
        return scope in self.scopes


class FileKeyStore:
    """Key records (hashes only) in one JSON file, replaced atomically on change."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._records: dict[str, Row] = {}
        self._mtime: float | None = None
        self._load()

    def _load(self) -> None:
        if self.path.exists():
            mtime = self.path.stat().st_mtime
            if mtime != self._mtime:
                data = json.loads(self.path.read_text() or "[]")
                self._records = {r["key_hash"]: r for r in data}
                self._mtime = mtime

    def get(self, key_hash: str) -> Row | None:
        with self._lock:
            rec = self._records.get(key_hash)
            if rec is None:  # another process may have added keys
                self._load()
                rec = self._records.get(key_hash)
            return rec

    def put(self, record: Row) -> None:
        with self._lock:
            self._load()
            self._records[record["key_hash"]] = dict(record)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            with os.fdopen(fd, "w") as fh:
                json.dump(sorted(self._records.values(), key=lambda r: r["key_hash"]), fh, indent=1)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
            self._mtime = self.path.stat().st_mtime

    def all(self) -> list[Row]:
        with self._lock:
            self._load()
            return list(self._records.values())


class MemoryKeyStore:
    """Key records in memory (tests, or a process that is handed its keys)."""

    def __init__(self) -> None:
        self._records: dict[str, Row] = {}

    def get(self, key_hash: str) -> Row | None:
        return self._records.get(key_hash)

    def put(self, record: Row) -> None:
        self._records[record["key_hash"]] = dict(record)

    def all(self) -> list[Row]:
        return list(self._records.values())


class KeyRing:
    """Creates, checks and revokes keys against a :class:`KeyStore`."""

    def __init__(self, store: KeyStore, *, salt: str, admin_key: str | None = None) -> None:
        self.store = store
        self._salt = salt
        self._admin_hash = hash_key(admin_key, salt=salt) if admin_key else None
        self._cache: dict[str, Principal | None] = {}

    def create(self, group: str, *, name: str = "", key: str | None = None,
               scopes: Sequence[str] | None = None) -> tuple[str, Principal]:
        """Create a key for a group (optionally narrowed to some of the group's scopes); returns (key, principal)."""
        if group not in GROUP_SCOPES:
            raise ValueError(f"unknown group {group!r}; one of {', '.join(GROUPS)}")
        allowed = GROUP_SCOPES[group]
        chosen = frozenset(scopes) if scopes is not None else allowed
        if not chosen <= allowed:
            raise ValueError(f"scopes {sorted(chosen - allowed)} are not allowed for group {group}")
        key = key or new_key()
        key_hash = hash_key(key, salt=self._salt)
        self.store.put({"key_hash": key_hash, "key_id": key_hash[:12], "group": group, "name": name,
                        "scopes": sorted(chosen), "created_at": datetime.now(UTC).isoformat(), "revoked": False})
        self._cache.pop(key_hash, None)
        return key, Principal(key_id=key_hash[:12], group=group, scopes=chosen, name=name)

    def revoke(self, key_id: str) -> bool:
        """Revoke every key whose id is ``key_id``; True if one was found."""
        found = False
        for rec in self.store.all():
            if rec["key_id"] == key_id and not rec.get("revoked"):
                self.store.put({**rec, "revoked": True})
                self._cache.pop(rec["key_hash"], None)
                found = True
        return found

    def check(self, key: str) -> Principal | None:
        """The principal of a presented key, or None if unknown or revoked."""
        if not key or len(key) > 200:
            return None
        key_hash = hash_key(key, salt=self._salt)
        if key_hash in self._cache:
            return self._cache[key_hash]
        principal: Principal | None = None
        if self._admin_hash is not None and hmac.compare_digest(key_hash, self._admin_hash):
            principal = Principal(key_id=key_hash[:12], group="admin", scopes=GROUP_SCOPES["admin"], name="bootstrap")
        else:
            rec = self.store.get(key_hash)
            if rec is not None and not rec.get("revoked"):
                principal = Principal(key_id=rec["key_id"], group=rec["group"], scopes=frozenset(rec["scopes"]),
                                      name=rec.get("name", ""))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key_hash] = principal
        return principal

    def listing(self) -> list[Row]:
        """Key records without their hashes."""
        return [{k: v for k, v in r.items() if k != "key_hash"} for r in self.store.all()]


def demo_keys(ring: KeyRing, *, seed: str) -> dict[str, str]:
    """One deterministic key per group for demos (derived from a secret seed); returns {group: key}.

    Refuse to call this in production: :func:`serving.app.create_app` only does when ``env != production``.
    """
    keys = {}
    for group in GROUPS:
        key = "demo_" + group + "_" + hmac.new(seed.encode(), group.encode(), hashlib.sha256).hexdigest()[:20]
        if ring.check(key) is None:
            ring.create(group, name=f"demo {group}", key=key)
        keys[group] = key
    return keys


_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                               description="API key; `Authorization: Bearer <key>` works too")


async def _principal(request: Request, api_key: Annotated[str | None, Depends(_api_key_header)]) -> Principal:
    # async (no I/O but a cached key lookup): FastAPI would run a plain ``def`` dependency in its thread pool.
    key = api_key
    if not key:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            key = auth[7:].strip()
    ring: KeyRing = request.app.state.keyring
    principal = ring.check(key or "")
    if principal is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or invalid API key",
                            headers={"WWW-Authenticate": "Bearer"})
    request.state.principal = principal
    return principal


def require(scope: Scope) -> Callable[..., Any]:
    """A dependency that admits only keys holding ``scope``."""

    async def dependency(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
        if not principal.has(scope):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this key lacks the scope {scope}")
        return principal

    dependency.__name__ = f"require_{scope.replace(':', '_')}"
    return dependency
