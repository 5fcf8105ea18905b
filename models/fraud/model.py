"""The fraud model artifact: compiled trees + calibration + thresholds + metadata, in a versioned registry.

Layout (file based; :class:`models.registry.Registry`)::

    <artifacts>/fraud/<version>/model.json   trees as arrays, features, calibration, thresholds, metrics
    <artifacts>/fraud/<version>/meta.json    registry metadata (metrics, data window, feature list)
    <artifacts>/fraud/CURRENT                the promoted version

Load with :func:`load_current` (or :class:`ModelHandle` to pick up a promotion without a restart) and
score one full feature vector (:data:`fuelcard.features.FEATURE_NAMES` order) with :meth:`FraudModel.score`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fuelcard.features import FEATURE_INDEX, FEATURE_NAMES, FeatureConfig
from models.fraud.compiled import CompiledForest, TreeArrays
from models.registry import Registry, RegistryError

KIND = "fraud"
ARTIFACT = "model.json"


@dataclass
class FraudModel:
    """A calibrated tree ensemble over a subset of the features, with review/decline thresholds."""

    version: str
    features: list[str]
    trees: list[TreeArrays]
    calib_a: float = 1.0
    calib_b: float = 0.0
    review_threshold: float = 0.5
    decline_threshold: float = 0.9
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [f for f in self.features if f not in FEATURE_INDEX]
        if unknown:
            raise ValueError(f"unknown features in model: {unknown}")
        self._columns = [FEATURE_INDEX[f] for f in self.features]
        self._forest = CompiledForest(self.trees, self._columns, len(self.features))
        self._raw = self._forest.raw_fn
        self._top = self._forest.top_positive

    def use_evaluator(self, evaluator: str) -> FraudModel:
        """Score with ``"compiled"``, ``"pure"`` or ``"auto"`` (compiled when built) trees; returns ``self``."""
        self._forest = CompiledForest(self.trees, self._columns, len(self.features), evaluator)
        self._raw = self._forest.raw_fn
        self._top = self._forest.top_positive
        return self

    @property
    def evaluator(self) -> str:
        """Which tree evaluator scores: ``compiled`` (C extension) or ``pure`` (generated Python)."""
        return self._forest.evaluator

    # ---------------------------------------------------------------- hot path
    def score(self, x: Sequence[float]) -> float:
        """Calibrated fraud probability of one full feature vector."""
        z = self.calib_a * self._raw(x) + self.calib_b
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)

    def explain(self, x: Sequence[float], k: int = 3) -> list[tuple[str, float, float]]:
        """The ``k`` features that pushed the score up most: ``(name, value, contribution to the margin)``."""
        a, names, cols = self.calib_a, self.features, self._columns
        return [(names[i], x[cols[i]], c * a) for i, c in self._top(x, k)]

    def feature_config(self) -> FeatureConfig:
        """The feature parameters the model was trained with (label delay, local-time offset): build the
        :class:`~fuelcard.features.FeatureEngine` that feeds this model with it."""
        w = self.metadata.get("data_window", {})
        return FeatureConfig(label_delay_days=float(w.get("label_delay_days", 7.0)),
                             tz_offset_hours=float(w.get("tz_offset_hours", 8.0)))

    # ---------------------------------------------------------------- batch
    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated probabilities from raw margins."""
        return 1.0 / (1.0 + np.exp(-(self.calib_a * np.asarray(raw, dtype=float) + self.calib_b)))

    def score_many(self, X: np.ndarray) -> np.ndarray:
        """Scores of many full feature vectors (rows in FEATURE_NAMES order)."""
        return self.calibrate(self._forest.raw_many(np.asarray(X, dtype=float)))

    # ---------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        return {"format": "fuelcard-fraud-1", "version": self.version, "features": self.features,
                "calib_a": self.calib_a, "calib_b": self.calib_b, "review_threshold": self.review_threshold,
                "decline_threshold": self.decline_threshold, "metadata": self.metadata,
                "trees": [t.to_dict() for t in self.trees]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FraudModel:
        if d.get("format") != "fuelcard-fraud-1":
            raise ValueError("not a fuelcard fraud model artifact")
        return cls(str(d["version"]), list(d["features"]), [TreeArrays.from_dict(t) for t in d["trees"]],
                   float(d["calib_a"]), float(d["calib_b"]), float(d["review_threshold"]),
                   float(d["decline_threshold"]), dict(d.get("metadata") or {}))

    def save(self, directory: str | Path) -> Path:
        """Write ``model.json`` into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        p = d / ARTIFACT
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), allow_nan=True))
        tmp.replace(p)
        return p

    @classmethod
    def load(cls, directory: str | Path) -> FraudModel:
        """Read ``model.json`` from ``directory`` (or the file itself)."""
        p = Path(directory)
        if p.is_dir():
            p = p / ARTIFACT
        return cls.from_dict(json.loads(p.read_text()))


def register_model(model: FraudModel, artifacts_root: str | Path, *, promote: bool = True) -> str:
    """Save ``model`` as a new version ``<artifacts_root>/fraud/<version>/`` and (by default) promote it."""
    reg = Registry(artifacts_root)
    meta = model.metadata
    return reg.register(KIND, model.save, metrics=meta.get("metrics", {}), params=meta.get("params", {}),
                        data_window=meta.get("data_window", {}), features=model.features, promote=promote,
                        version=model.version)


def load_current(artifacts_root: str | Path) -> FraudModel | None:
    """The promoted fraud model, or None when there is none (callers fall back to rules-only)."""
    reg = Registry(artifacts_root)
    version = reg.current_version(KIND)
    if not version:
        return None
    return FraudModel.load(reg.root / KIND / version)


class ModelHandle:
    """The promoted model, swapped without a restart when the registry's current version changes."""

    def __init__(self, artifacts_root: str | Path, *, check_every_s: float = 5.0) -> None:
        self.root = Path(artifacts_root)
        self.check_every_s = check_every_s
        self._version: str | None = None
        self._model: FraudModel | None = None
        self._next = 0.0
        self.get()

    def get(self) -> FraudModel | None:
        """The current model (None → rules-only); re-checks the registry at most every ``check_every_s``."""
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.check_every_s
            try:
                version = Registry(self.root).current_version(KIND)
                if version and version != self._version:
                    self._model = FraudModel.load(self.root / KIND / version)
                    self._version = version
            except (OSError, ValueError, RegistryError):
                pass  # keep serving the model we have
        return self._model


__all__ = ["FEATURE_NAMES", "FraudModel", "ModelHandle", "load_current", "register_model"]
