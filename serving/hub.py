"""Models loaded from the registry, reloaded when a new version is promoted (no restart).

:class:`ModelHub` keeps one loaded object per kind, keyed by the version it was loaded from. On each request it
re-reads ``CURRENT`` at most every :attr:`ModelHub.check_every_s` seconds (a tiny file read), and loads the new
version in the background of that request when it changed; a promotion through the API refreshes at once.
A kind with no promoted version, or no loader, answers 503 "model not trained".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.registry import ModelMeta, Registry
from serving.ports import NotReady

Loader = Callable[[Path, ModelMeta], Any]


@dataclass(frozen=True)
class Loaded:
    """A model object and the registry version it came from."""

    kind: str
    version: str
    meta: ModelMeta
    obj: Any


class ModelHub:
    """Per-kind cache of the promoted model, hot-swapped on promotion."""

    check_every_s = 0.5

    def __init__(self, registry: Registry, loaders: dict[str, Loader]) -> None:
        self.registry = registry
        self.loaders = dict(loaders)
        self._loaded: dict[str, Loaded] = {}
        self._checked: dict[str, float] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, kind: str) -> Loaded:
        """The promoted model of ``kind`` (raises :class:`NotReady` → 503)."""
        now = time.monotonic()
        current = self._loaded.get(kind)
        if current is not None and now - self._checked.get(kind, 0.0) < self.check_every_s:
            return current
        with self._lock:
            self._checked[kind] = now
            version = self.registry.current_version(kind)
            current = self._loaded.get(kind)
            if version is None:
                self._loaded.pop(kind, None)
                raise NotReady(kind, f"model not trained: no promoted {kind} model in the registry")
            if current is not None and current.version == version:
                return current
            loader = self.loaders.get(kind)
            if loader is None:
                raise NotReady(kind, f"model not trained: no loader for {kind} models in this server")
            try:
                meta = self.registry.meta(kind, version)
                obj = loader(self.registry.path(kind, version), meta)
            except Exception as exc:  # noqa: BLE001 - any loader failure: keep serving the previous version or 503
                self._errors[kind] = f"{type(exc).__name__}: {exc}"[:300]
                if current is not None:  # keep serving the previous version rather than failing
                    return current
                raise NotReady(kind, f"model not trained: {kind} version {version} could not be loaded") from None
            loaded = Loaded(kind=kind, version=version, meta=meta, obj=obj)
            self._loaded[kind] = loaded
            self._errors.pop(kind, None)
            return loaded

    def refresh(self, kind: str) -> None:
        """Forget the check time so the next :meth:`get` re-reads CURRENT."""
        self._checked.pop(kind, None)

    def status(self) -> dict[str, dict[str, Any]]:
        """Per known kind: promoted version, loaded version, last load error."""
        kinds = sorted(set(self.loaders) | set(self.registry.kinds()))
        out = {}
        for kind in kinds:
            loaded = self._loaded.get(kind)
            out[kind] = {"promoted": self.registry.current_version(kind),
                         "loaded": loaded.version if loaded else None,
                         "servable": kind in self.loaders,
                         "error": self._errors.get(kind)}
        return out
