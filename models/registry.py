"""A file-based, versioned model registry: register, list, compare, promote, roll back.

Layout under a root directory (the caller passes it; nothing here reads settings)::

    <root>/<kind>/<version>/meta.json      metrics, params, data window, features, created_at
    <root>/<kind>/<version>/...            the artifact files the model saved
    <root>/<kind>/CURRENT                  the promoted version (atomic replace)
    <root>/<kind>/history.jsonl            every promotion/rollback, newest last

Readers (API, stream workers) call :meth:`Registry.current_version` cheaply and reload when it changes,
so a promotion is picked up without a restart.

>>> import tempfile
>>> reg = Registry(tempfile.mkdtemp())
>>> v = reg.register("demo", lambda d: (d / "w.txt").write_text("1"), metrics={"auc": 0.9})
>>> reg.current_version("demo") == v
True
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,80}$")


class RegistryError(Exception):
    """Unknown kind/version or an invalid request."""


@dataclass(frozen=True)
class ModelMeta:
    kind: str
    version: str
    created_at: str
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    data_window: dict[str, Any] = field(default_factory=dict)
    features: list[str] = field(default_factory=list)
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


class Registry:
    """Versioned model artifacts in a directory tree."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ write
    def register(
        self,
        kind: str,
        save: Callable[[Path], Any],
        *,
        metrics: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        data_window: dict[str, Any] | None = None,
        features: list[str] | None = None,
        notes: str = "",
        promote: bool = True,
        version: str | None = None,
        now: datetime | None = None,
    ) -> str:
        """Save a new version via ``save(directory)``; promote it unless told otherwise."""
        self._check_name(kind)
        ts = now or datetime.now(UTC)
        kind_dir = self.root / kind
        kind_dir.mkdir(parents=True, exist_ok=True)
        if version is None:
            base = f"{kind}-{ts:%Y%m%d-%H%M%S}"
            version, n = base, 1
            while (kind_dir / version).exists():
                n += 1
                version = f"{base}-{n}"
        self._check_name(version)
        if (kind_dir / version).exists():
            raise RegistryError(f"{kind} version {version} already exists")
        staging = Path(tempfile.mkdtemp(dir=kind_dir, prefix=".staging-"))
        try:
            save(staging)
            meta = ModelMeta(
                kind=kind, version=version, created_at=ts.isoformat(),
                metrics=_jsonable(metrics or {}), params=_jsonable(params or {}),
                data_window=_jsonable(data_window or {}), features=list(features or []), notes=notes,
            )
            (staging / "meta.json").write_text(json.dumps(meta.to_dict(), indent=2, sort_keys=True))
            os.replace(staging, kind_dir / version)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if promote:
            self.promote(kind, version, reason="registered")
        return version

    def promote(self, kind: str, version: str, *, reason: str = "promoted") -> None:
        """Make ``version`` the one readers load."""
        self.meta(kind, version)  # must exist
        previous = self.current_version(kind)
        _atomic_write(self.root / kind / "CURRENT", version + "\n")
        with (self.root / kind / "history.jsonl").open("a") as fh:
            fh.write(json.dumps({"at": datetime.now(UTC).isoformat(), "version": version,
                                 "previous": previous, "action": reason}) + "\n")

    def rollback(self, kind: str) -> str:
        """Return to the version that was current before the present one."""
        current = self.current_version(kind)
        history = self.history(kind)
        for entry in reversed(history):
            if entry.get("version") == current and entry.get("previous"):
                target = str(entry["previous"])
                self.promote(kind, target, reason="rollback")
                return target
        raise RegistryError(f"{kind}: nothing to roll back to")

    # ------------------------------------------------------------ read
    def kinds(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def versions(self, kind: str) -> list[ModelMeta]:
        kind_dir = self.root / kind
        if not kind_dir.is_dir():
            return []
        metas = [self.meta(kind, p.name) for p in kind_dir.iterdir()
                 if p.is_dir() and not p.name.startswith(".") and (p / "meta.json").exists()]
        return sorted(metas, key=lambda m: (m.created_at, m.version))

    def meta(self, kind: str, version: str) -> ModelMeta:
        self._check_name(kind)
        self._check_name(version)
        path = self.root / kind / version / "meta.json"
        if not path.exists():
            raise RegistryError(f"unknown model {kind} version {version}")
        return ModelMeta(**json.loads(path.read_text()))

    def current_version(self, kind: str) -> str | None:
        path = self.root / kind / "CURRENT"
        return path.read_text().strip() or None if path.exists() else None

    def path(self, kind: str, version: str | None = None) -> Path:
        """Directory of a version (default: the current one)."""
        v = version or self.current_version(kind)
        if v is None:
            raise RegistryError(f"no promoted {kind} model yet; train one first (fuelcard train {kind})")
        self.meta(kind, v)
        return self.root / kind / v

    def history(self, kind: str) -> list[dict[str, Any]]:
        path = self.root / kind / "history.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def compare(self, kind: str, a: str, b: str) -> dict[str, tuple[Any, Any]]:
        """Metrics side by side: {metric: (value in a, value in b)}."""
        ma, mb = self.meta(kind, a).metrics, self.meta(kind, b).metrics
        return {k: (ma.get(k), mb.get(k)) for k in sorted(set(ma) | set(mb))}

    @staticmethod
    def _check_name(name: str) -> None:
        if not _VERSION_RE.match(name):
            raise RegistryError(f"invalid name {name!r}")


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
