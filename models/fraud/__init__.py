"""Fraud model: point-in-time training with delayed labels, calibration, thresholds, compiled inference.

Public API: :class:`FraudModel` (``score``/``explain`` one feature vector), :func:`load_current`,
:class:`ModelHandle` (hot swap on promotion), :func:`register_model`; training in :mod:`models.fraud.train`,
metrics in :mod:`models.fraud.metrics`.
"""

from models.fraud.model import FraudModel, ModelHandle, load_current, register_model

__all__ = ["FraudModel", "ModelHandle", "load_current", "register_model"]
