"""Helpers shared by the analytic models: artifact save/load, seeding, tolerant column coercion.

Everything here is pure except :func:`save_artifact` / :func:`load_artifact`, which touch only the path the
caller passes.
"""

from __future__ import annotations

import pickle  # noqa: S403 - artifacts are written and read by this project only (trusted registry paths)
import random
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ARTIFACT_NAME = "model.pkl"
_MAGIC = b"FUELCARD-MODEL-1\n"


def artifact_path(path: str | Path) -> Path:
    """The file an artifact lives in: ``path`` itself, or ``path/model.pkl`` when ``path`` is a directory."""
    p = Path(path)
    return p / ARTIFACT_NAME if p.is_dir() else p


def save_artifact(obj: Any, path: str | Path) -> Path:
    """Pickle ``obj`` to ``path`` (a file, or a directory that gets ``model.pkl``); returns the file written."""
    p = artifact_path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    with tmp.open("wb") as fh:
        fh.write(_MAGIC)
        pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(p)
    return p


def load_artifact(path: str | Path, expected: type | None = None) -> Any:
    """Load what :func:`save_artifact` wrote; checks the header and, if given, the object's type."""
    p = artifact_path(path)
    with p.open("rb") as fh:
        head = fh.read(len(_MAGIC))
        if head != _MAGIC:
            raise ValueError(f"{p} is not a fuelcard model artifact")
        obj = pickle.load(fh)  # noqa: S301 - trusted artifact written by save_artifact
    if expected is not None and not isinstance(obj, expected):
        raise TypeError(f"{p} holds a {type(obj).__name__}, expected {expected.__name__}")
    return obj


def rng(seed: int | None) -> np.random.Generator:
    """A numpy generator for ``seed`` (also seeds :mod:`random` so third-party code is reproducible)."""
    random.seed(seed)
    return np.random.default_rng(seed)


_TRUE = {"1", "1.0", "yes", "y", "true", "t", "churn", "churned", "event", "dead", "died", "death", "lost",
         "left", "cancelled", "canceled", "terminated", "closed", "inactive", "attrited", "attrited customer",
         "exited", "gone", "positive", "pos"}
_FALSE = {"0", "0.0", "no", "n", "false", "f", "stay", "stayed", "active", "alive", "censored", "retained",
          "existing", "existing customer", "current", "open", "negative", "neg", "none", "not churned",
          "no churn"}


def coerce_event(values: pd.Series) -> pd.Series:
    """Map an event/label column (0/1, bool, Yes/No, True/False, churned/active…) to a float 0/1 series.

    Unrecognised values become NaN; raises ``ValueError`` when nothing at all can be interpreted.

    >>> coerce_event(pd.Series(["Yes", "No", " yes", None])).tolist()
    [1.0, 0.0, 1.0, nan]
    """
    s = values
    if s.dtype == bool:
        return s.astype(float)
    num = pd.to_numeric(s, errors="coerce")
    text = s.astype("string").str.strip().str.lower()
    out = pd.Series(np.nan, index=s.index, dtype=float)
    out[text.isin(_TRUE).fillna(False).to_numpy()] = 1.0
    out[text.isin(_FALSE).fillna(False).to_numpy()] = 0.0
    numeric_mask = out.isna() & num.notna()
    out[numeric_mask] = (num[numeric_mask] > 0).astype(float)
    if out.notna().sum() == 0:
        # Two distinct unrecognised labels (e.g. "Gone"/"Here"): the rarer one is the event.
        counts = text.dropna().value_counts()
        if len(counts) == 2:
            out[(text == counts.index[-1]).fillna(False).to_numpy()] = 1.0
            out[(text == counts.index[0]).fillna(False).to_numpy()] = 0.0
        else:
            raise ValueError("cannot interpret any value as an event (expected 0/1, true/false or yes/no)")
    return out


def coerce_numeric(values: pd.Series, *, min_share: float = 0.9) -> pd.Series | None:
    """Numeric view of ``values`` if at least ``min_share`` of its non-blank entries parse as numbers, else None.

    Blanks (``""``, ``" "``) count as missing, so a ``TotalCharges`` column with a few blanks stays numeric.
    """
    if pd.api.types.is_bool_dtype(values):
        return values.astype(float)
    if pd.api.types.is_numeric_dtype(values):
        return values.astype(float)
    text = values.astype("string").str.strip().str.replace(",", "", regex=False)
    text = text.mask(text.isin(["", "nan", "NaN", "NA", "N/A", "null", "None", "-", "?"]))
    present = text.notna().sum()
    if present == 0:
        return None
    num = pd.to_numeric(text, errors="coerce")
    if num.notna().sum() >= min_share * present:
        return num.astype(float)
    return None
