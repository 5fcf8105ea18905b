"""Churn: survival models (lifelines Cox PH vs parametric AFT) on any customer table, plus member features,
segments with graded retention actions and Kaplan–Meier curves per segment.

Pure: no I/O except :meth:`ChurnModel.save` / :meth:`ChurnModel.load` and :func:`plot_km_by_segment`, which
write only to the path the caller gives.

Main entry points
-----------------
- :func:`fit_churn_model` — fit on a table with a duration and an event column (all other columns are
  covariates); candidates are compared on a held-out split and the better one kept.
- :meth:`ChurnModel.predict_proba` — P(event within ``horizon``) per row; conditional on survival to the row's
  current duration when the frame carries one (see :meth:`ChurnModel.predict_proba`).
- :func:`build_churn_features`, :func:`make_survival_frame`, :func:`train_member_churn` — the fuel-card member
  pipeline (recency/frequency/monetary trends, tier, expiring points, complaints, price sensitivity).
- :func:`segment_members`, :func:`plot_km_by_segment` — value tier × risk segments with retention actions.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.common import coerce_event, coerce_numeric, load_artifact, save_artifact

__all__ = [
    "ACTIONS",
    "ChurnModel",
    "CovariateEncoder",
    "brier_at",
    "build_churn_features",
    "concordance",
    "fit_churn_model",
    "make_survival_frame",
    "plot_km_by_segment",
    "segment_members",
    "time_dependent_auc",
    "train_member_churn",
]

_MAX_LEVELS = 15
_CANDIDATES = ("cox", "weibull", "lognormal", "loglogistic")


# --------------------------------------------------------------------------------------------- encoding
@dataclass
class _ColumnSpec:
    name: str
    kind: str  # "numeric" | "categorical" | "datetime"
    fill: float = 0.0
    lo: float = -math.inf
    hi: float = math.inf
    log: bool = False
    mean: float = 0.0
    std: float = 1.0
    add_missing: bool = False
    levels: tuple[str, ...] = ()
    ref: str = ""


def _as_text(s: pd.Series) -> pd.Series:
    t = s.astype("string").str.strip()
    return t.mask(t.isin(["", "nan", "NaN", "NA", "N/A", "null", "None"]))


def _to_datetime_numeric(s: pd.Series) -> pd.Series | None:
    """Days since 1970 if the column looks like dates (≥ 90% of non-blank values parse), else None."""
    text = _as_text(s).dropna()
    if text.empty or not text.str.contains(r"\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}", regex=True).mean() >= 0.9:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(_as_text(s), errors="coerce", utc=True)
    if parsed.notna().sum() < 0.9 * len(text):
        return None
    return (parsed - pd.Timestamp("1970-01-01", tz="UTC")).dt.total_seconds() / 86400.0


@dataclass
class CovariateEncoder:
    """Turns an arbitrary customer table into a numeric design matrix, with statistics learnt on train.

    Numeric columns (also numeric strings with blanks) are imputed with the train median, clipped to the train
    range, log-compressed when heavily skewed and standardised; Yes/No-like strings become 0/1; string
    categoricals keep their frequent levels (the rest pooled into ``__other__``) as dummies; ID-like
    high-cardinality strings, constant columns and duplicated dummies are dropped.
    """

    specs: list[_ColumnSpec] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)

    def fit(self, df: pd.DataFrame, exclude: set[str] | frozenset[str] = frozenset()) -> CovariateEncoder:
        """Learn the encoding from ``df`` (columns in ``exclude`` are ignored)."""
        n = len(df)
        self.specs, self.dropped = [], {}
        for col in df.columns:
            if col in exclude:
                continue
            s = df[col]
            if s.isna().all() or _as_text(s).isna().all():
                self.dropped[col] = "empty"
                continue
            num = coerce_numeric(s)
            kind = "numeric"
            if num is None:
                ev = None
                try:
                    ev = coerce_event(s)
                except ValueError:
                    ev = None
                text = _as_text(s)
                if ev is not None and ev.notna().sum() >= 0.98 * text.notna().sum() and text.nunique() <= 2:
                    num = ev
                else:
                    dt = _to_datetime_numeric(s)
                    if dt is not None:
                        num, kind = dt, "datetime"
            if num is not None:
                vals = num.to_numpy(dtype=float)
                finite = vals[np.isfinite(vals)]
                if finite.size == 0 or np.nanstd(finite) == 0:
                    self.dropped[col] = "constant"
                    continue
                steps = np.diff(finite)
                monotonic = bool(np.all(steps > 0) or np.all(steps < 0))
                if kind == "numeric" and finite.size == n >= 50 and monotonic and np.all(finite == np.round(finite)):
                    self.dropped[col] = "row index"
                    continue
                spec = _ColumnSpec(col, kind, fill=float(np.median(finite)), lo=float(finite.min()),
                                   hi=float(finite.max()))
                spec.add_missing = bool((~np.isfinite(vals)).mean() >= 0.01)
                if spec.lo >= 0 and finite.size > 10:
                    skew = float(pd.Series(finite).skew())
                    spec.log = bool(np.isfinite(skew) and skew > 2.0)
                t = self._num_transform(spec, num)
                spec.mean, spec.std = float(t.mean()), float(t.std() or 1.0)
                self.specs.append(spec)
                continue
            text = _as_text(s).fillna("__missing__")
            counts = text.value_counts()
            if len(counts) > 50 and len(counts) > 0.5 * n:
                self.dropped[col] = "high-cardinality"
                continue
            min_count = max(5, int(0.01 * n))
            keep = [str(v) for v, c in counts.items() if c >= min_count][:_MAX_LEVELS]
            rest = n - int(counts[counts.index.isin(keep)].sum())
            levels = keep + (["__other__"] if rest >= min_count else [])
            if len(levels) < 2:
                self.dropped[col] = "constant or no frequent level"
                continue
            # the most frequent level is the reference (no dummy)
            self.specs.append(_ColumnSpec(col, "categorical", levels=tuple(levels[1:]), ref=levels[0]))
        raw = self._transform_raw(df)
        # drop constant and exactly duplicated columns (e.g. "No internet service" repeated across columns)
        keep_cols: list[str] = []
        seen: dict[bytes, str] = {}
        for c in raw.columns:
            v = raw[c].to_numpy()
            if np.nanstd(v) == 0:
                self.dropped[c] = "constant"
                continue
            key = np.round(v, 9).tobytes()
            if key in seen:
                self.dropped[c] = f"duplicate of {seen[key]}"
                continue
            seen[key] = c
            keep_cols.append(c)
        self.columns = keep_cols
        return self

    @staticmethod
    def _num_transform(spec: _ColumnSpec, num: pd.Series) -> pd.Series:
        v = num.astype(float).where(np.isfinite(num.astype(float)), np.nan).fillna(spec.fill)
        v = v.clip(spec.lo, spec.hi)
        if spec.log:
            v = np.log1p(v - min(spec.lo, 0.0))
        return v

    def _transform_raw(self, df: pd.DataFrame) -> pd.DataFrame:
        out: dict[str, np.ndarray] = {}
        n = len(df)
        for spec in self.specs:
            if spec.kind in ("numeric", "datetime"):
                if spec.name in df.columns:
                    s = df[spec.name]
                    if spec.kind == "datetime":
                        num = _to_datetime_numeric(s)
                    else:
                        num = coerce_numeric(s, min_share=0.0)
                        if num is None or num.notna().sum() == 0:
                            try:
                                num = coerce_event(s)
                            except ValueError:
                                num = None
                    if num is None:
                        num = pd.Series(np.nan, index=df.index)
                else:
                    num = pd.Series(np.nan, index=df.index)
                missing = ~np.isfinite(num.to_numpy(dtype=float))
                t = self._num_transform(spec, num)
                out[spec.name] = ((t - spec.mean) / spec.std).to_numpy(dtype=float)
                if spec.add_missing:
                    out[f"{spec.name}__missing"] = missing.astype(float)
            else:
                text = (_as_text(df[spec.name]).fillna("__missing__") if spec.name in df.columns
                        else pd.Series("__missing__", index=df.index))
                for lvl in spec.levels:
                    if lvl != "__other__":
                        out[f"{spec.name}={lvl}"] = (text == lvl).to_numpy(dtype=float)
                if "__other__" in spec.levels:
                    named = {lv for lv in spec.levels if lv != "__other__"} | {spec.ref}
                    out[f"{spec.name}=__other__"] = (~text.isin(named)).to_numpy(dtype=float)
        return pd.DataFrame(out, index=df.index) if out else pd.DataFrame(index=df.index[:n])

    def transform(self, df: pd.DataFrame) -> pd.DataFrame:
        """Design matrix with exactly the columns learnt at fit (missing inputs are imputed)."""
        raw = self._transform_raw(df)
        for c in self.columns:
            if c not in raw.columns:
                raw[c] = 0.0
        x = raw[self.columns].astype(float)
        return x.replace([np.inf, -np.inf], np.nan).fillna(0.0)


# --------------------------------------------------------------------------------------------- metrics
def _km_censoring(durations: np.ndarray, events: np.ndarray):
    """G(t) = P(censoring time > t) by Kaplan–Meier on the censoring indicator, as a step function."""
    order = np.argsort(durations, kind="mergesort")
    d, c = durations[order], 1.0 - events[order]
    times = np.unique(d)
    g = np.ones(len(times))
    surv = 1.0
    at_risk = len(d)
    idx = 0
    for k, t in enumerate(times):
        j = idx
        cens = 0.0
        while j < len(d) and d[j] == t:
            cens += c[j]
            j += 1
        if at_risk > 0:
            surv *= 1.0 - cens / at_risk
        g[k] = surv
        at_risk -= j - idx
        idx = j

    def G(t: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(times, t, side="right") - 1
        out = np.where(pos >= 0, g[np.clip(pos, 0, len(g) - 1)], 1.0)
        return np.maximum(out, 1e-3)

    return G


def concordance(durations, events, risk) -> float:
    """Harrell's C: higher ``risk`` should mean an earlier event (0.5 = random)."""
    from lifelines.utils import concordance_index

    try:
        return float(concordance_index(np.asarray(durations, float), -np.asarray(risk, float),
                                       np.asarray(events, float)))
    except Exception:  # noqa: BLE001 - no admissible pairs
        return float("nan")


def time_dependent_auc(durations, events, prob, horizon: float) -> float:
    """Cumulative/dynamic AUC at ``horizon`` with IPCW weights for cases (events before the horizon).

    Cases: event observed at ``T <= horizon``; controls: ``T > horizon``. NaN when either group is empty.
    """
    d, e, p = (np.asarray(a, dtype=float) for a in (durations, events, prob))
    cases = (d <= horizon) & (e > 0)
    controls = (d > horizon) | ((d >= horizon) & (e <= 0))
    if cases.sum() == 0 or controls.sum() == 0:
        return float("nan")
    G = _km_censoring(d, e)
    w = 1.0 / G(d[cases] - 1e-9)
    pc, pk = p[cases], p[controls]
    order = np.sort(pk)
    less = np.searchsorted(order, pc, side="left")
    leq = np.searchsorted(order, pc, side="right")
    score = (less + 0.5 * (leq - less)) / len(pk)
    return float(np.sum(w * score) / np.sum(w))


def brier_at(durations, events, prob, horizon: float) -> float:
    """IPCW Brier score of P(event by ``horizon``) (lower is better)."""
    d, e, p = (np.asarray(a, dtype=float) for a in (durations, events, prob))
    G = _km_censoring(d, e)
    cases = (d <= horizon) & (e > 0)
    controls = (d > horizon) | ((d >= horizon) & (e <= 0))
    if cases.sum() + controls.sum() == 0:
        return float("nan")
    g_h = G(np.array([horizon - 1e-9]))[0]
    total = np.sum((1 - p[cases]) ** 2 / G(d[cases] - 1e-9)) + np.sum(p[controls] ** 2 / g_h)
    return float(total / len(d))


# --------------------------------------------------------------------------------------------- model
def _coerce_durations(s: pd.Series) -> pd.Series:
    num = coerce_numeric(s, min_share=0.0)
    if num is None:
        return pd.Series(np.nan, index=s.index)
    return num


@dataclass
class ChurnModel:
    """A fitted survival model with its covariate encoder; see :func:`fit_churn_model`."""

    kind: str
    encoder: CovariateEncoder
    fitter: Any
    duration_col: str
    event_col: str
    horizon: float
    min_positive: float
    t_max: float
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    base_times: np.ndarray | None = None
    base_cumhaz: np.ndarray | None = None

    # ---- prediction
    def _cumhaz(self, x: pd.DataFrame, t: np.ndarray) -> np.ndarray:
        """Cumulative hazard H(t_i | x_i), one time per row (extrapolated beyond the last observed time)."""
        t = np.maximum(np.asarray(t, dtype=float), 0.0)
        if self.kind in ("cox", "km"):
            times, ch = self.base_times, self.base_cumhaz
            assert times is not None and ch is not None
            h = np.interp(t, times, ch)
            tail = t > times[-1]
            if tail.any():
                h[tail] = ch[-1] + self._tail_slope() * (t[tail] - times[-1])
            if self.kind == "cox" and x.shape[1] > 0:
                lp = np.asarray(self.fitter.predict_log_partial_hazard(x), dtype=float).ravel()
                h = h * np.exp(np.clip(lp, -30, 30))
            return h
        out = np.empty(len(x))
        # lifelines takes one time grid for all rows: evaluate per unique time, in chunks
        for tv in np.unique(t):
            rows = np.flatnonzero(t == tv)
            if tv <= 0:
                out[rows] = 0.0
                continue
            ch = self.fitter.predict_cumulative_hazard(x.iloc[rows], times=[tv])
            out[rows] = np.asarray(ch, dtype=float).ravel()
        return out

    def _tail_slope(self) -> float:
        times, ch = self.base_times, self.base_cumhaz
        assert times is not None and ch is not None
        t_end = times[-1]
        if t_end <= 0:
            return 0.0
        start = np.searchsorted(times, 0.75 * t_end)
        start = min(start, len(times) - 2) if len(times) >= 2 else 0
        dt = t_end - times[start]
        slope = (ch[-1] - ch[start]) / dt if dt > 0 else 0.0
        if slope <= 0:
            slope = ch[-1] / t_end
        return float(max(slope, 0.0))

    def predict_proba(self, df: pd.DataFrame, horizon: float | None = None, *,
                      conditional: bool = True) -> np.ndarray:
        """P(event within ``horizon`` duration units) for each row of ``df``.

        If ``df`` carries the duration column (the row's current tenure ``t``) and ``conditional`` is true, the
        probability is conditional on survival to ``t``: ``1 - S(t + H) / S(t)``; rows without a duration get
        the unconditional ``1 - S(H)`` from time 0. Always in [0, 1], never NaN.
        """
        h = float(self.horizon if horizon is None else horizon)
        x = self.encoder.transform(df)
        n = len(df)
        t0 = np.zeros(n)
        if conditional and self.duration_col in df.columns:
            d = _coerce_durations(df[self.duration_col]).to_numpy(dtype=float)
            t0 = np.where(np.isfinite(d), np.maximum(d, 0.0), 0.0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                h_end = self._cumhaz(x, t0 + h)
                h_start = np.where(t0 > 0, self._cumhaz(x, np.where(t0 > 0, t0, 0.0)), 0.0)
            p = 1.0 - np.exp(-np.maximum(h_end - h_start, 0.0))
        except Exception:  # noqa: BLE001 - a broken fitter must not break scoring
            p = np.full(n, np.nan)
        fallback = float(self.metrics.get("base_rate", 0.5))
        p = np.where(np.isfinite(p), p, fallback)
        return np.clip(p, 0.0, 1.0)

    def risk_score(self, df: pd.DataFrame) -> np.ndarray:
        """A ranking score (higher = earlier churn): the unconditional P(event within the horizon)."""
        return self.predict_proba(df, conditional=False)

    # ---- persistence
    def save(self, path: str | Path) -> Path:
        """Write the model to ``path`` (file, or directory that gets ``model.pkl``)."""
        return save_artifact(self, path)

    @classmethod
    def load(cls, path: str | Path) -> ChurnModel:
        """Read a model written by :meth:`save`."""
        return load_artifact(path, cls)


def _make_fitter(kind: str, penalizer: float):
    from lifelines import CoxPHFitter, LogLogisticAFTFitter, LogNormalAFTFitter, WeibullAFTFitter

    if kind == "cox":
        return CoxPHFitter(penalizer=penalizer)
    cls = {"weibull": WeibullAFTFitter, "lognormal": LogNormalAFTFitter, "loglogistic": LogLogisticAFTFitter}[kind]
    return cls(penalizer=penalizer)


def _fit_one(kind: str, x: pd.DataFrame, d: np.ndarray, e: np.ndarray, penalizers: tuple[float, ...]):
    """Fit one candidate; on convergence trouble raise the penalizer; None when nothing works."""
    frame = x.copy()
    frame["__T"] = d
    frame["__E"] = e
    from lifelines.exceptions import ConvergenceWarning

    for k, pen in enumerate(penalizers):
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                f = _make_fitter(kind, pen)
                if kind == "cox":
                    f.fit(frame, "__T", "__E", fit_options={"max_steps": 50})
                else:
                    f.fit(frame, "__T", "__E")
            params = np.asarray(f.params_, dtype=float)
            if not np.all(np.isfinite(params)):
                continue
            # an unconverged Newton run can stop at finite but wild coefficients (even reversed rankings):
            # retry with a stronger penalty, accept it only when nothing stronger is left
            diverged = any(issubclass(w.category, ConvergenceWarning) and "converge" in str(w.message).lower()
                           for w in caught)
            if diverged and k < len(penalizers) - 1:
                continue
            return f, pen
        except Exception:  # noqa: BLE001,S112 - convergence/linear-algebra failures: try a stronger penalty
            continue
    return None


def _km_model(d: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from lifelines import NelsonAalenFitter

    naf = NelsonAalenFitter()
    naf.fit(d, e)
    ch = naf.cumulative_hazard_
    return ch.index.to_numpy(dtype=float), ch.iloc[:, 0].to_numpy(dtype=float)


def _build(kind: str, fitter, enc: CovariateEncoder, duration_col: str, event_col: str, horizon: float,
           d: np.ndarray, e: np.ndarray, min_pos: float, x: pd.DataFrame) -> ChurnModel:
    m = ChurnModel(kind=kind, encoder=enc, fitter=fitter, duration_col=duration_col, event_col=event_col,
                   horizon=horizon, min_positive=min_pos, t_max=float(d.max()))
    if kind == "cox":
        bch = fitter.baseline_cumulative_hazard_
        m.base_times = bch.index.to_numpy(dtype=float)
        m.base_cumhaz = bch.iloc[:, 0].to_numpy(dtype=float)
    elif kind == "km":
        m.base_times, m.base_cumhaz = _km_model(d, e)
    m.metrics["base_rate"] = float(e.mean())
    return m


def _prepare(df: pd.DataFrame, duration_col: str, event_col: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    if duration_col not in df.columns or event_col not in df.columns:
        raise ValueError(f"training data needs columns {duration_col!r} and {event_col!r}")
    d = _coerce_durations(df[duration_col])
    e = coerce_event(df[event_col])
    ok = d.notna().to_numpy() & e.notna().to_numpy() & np.isfinite(d.to_numpy(dtype=float))
    ok &= d.to_numpy(dtype=float) >= 0
    if ok.sum() < 2:
        raise ValueError("training data has fewer than 2 rows with a usable duration and event")
    return df.loc[ok], d.to_numpy(dtype=float)[ok], e.to_numpy(dtype=float)[ok]


def _duration_proxies(frame: pd.DataFrame, d: np.ndarray, skip: set[str], threshold: float = 0.8) -> list[str]:
    """Numeric covariates that are essentially the duration itself (e.g. ``TotalCharges`` ≈ tenure × monthly
    charge): measured at the end of follow-up they leak the outcome time and wreck the survival fit."""
    out = []
    rank_d = pd.Series(d).rank().to_numpy()
    for col in frame.columns:
        if col in skip:
            continue
        num = coerce_numeric(frame[col])
        if num is None or num.nunique() < 10:
            continue
        v = num.to_numpy(dtype=float)
        ok = np.isfinite(v)
        if ok.sum() < 10:
            continue
        rho = np.corrcoef(pd.Series(v[ok]).rank().to_numpy(), rank_d[ok])[0, 1]
        if np.isfinite(rho) and abs(rho) >= threshold:
            out.append(col)
    return out


def fit_churn_model(
    train: pd.DataFrame,
    *,
    duration_col: str,
    event_col: str,
    horizon: float,
    exclude: tuple[str, ...] = (),
    candidates: tuple[str, ...] = _CANDIDATES,
    penalizers: tuple[float, ...] = (0.01, 0.1, 1.0),
    holdout: float = 0.25,
    seed: int = 0,
    max_rows_compare: int = 8_000,
) -> ChurnModel:
    """Fit survival candidates (Cox PH and AFT Weibull/log-normal/log-logistic), compare them on a held-out
    split (time-dependent AUC at ``horizon``, ties broken by the IPCW Brier score), refit the winner on all
    rows. Never fails on odd data: convergence problems raise the penalizer, then fall back to a covariate-free
    Nelson–Aalen model. Raises ``ValueError`` only when the duration/event columns are unusable.
    """
    from sklearn.model_selection import train_test_split

    frame, d, e = _prepare(train, duration_col, event_col)
    pos = d[d > 0]
    min_pos = float(pos.min()) if pos.size else 1.0
    # AFT likelihoods need strictly positive times: zero durations become half the smallest positive one
    d = np.where(d > 0, d, min_pos / 2.0)
    proxies = _duration_proxies(frame, d, skip={duration_col, event_col, *exclude})
    enc = CovariateEncoder().fit(frame, exclude={duration_col, event_col, *exclude, *proxies})
    enc.dropped.update(dict.fromkeys(proxies, "duration proxy (accumulates with tenure)"))
    x = enc.transform(frame)
    x.index = range(len(x))
    n_events = int(e.sum())
    base = {"n_rows": len(frame), "n_events": n_events, "n_covariates": x.shape[1], "horizon": horizon,
            "dropped_columns": dict(enc.dropped)}

    if n_events < 2 or x.shape[1] == 0:
        m = _build("km", None, enc, duration_col, event_col, horizon, d, e, min_pos, x)
        m.metrics.update(base)
        m.params = {"kind": "km", "reason": "too few events or no covariates"}
        return m

    # few events per covariate: start with a stronger ridge so small tables do not give 0/1 probabilities
    p_cov = max(1, x.shape[1])
    if n_events < 2 * p_cov:
        penalizers = tuple(p for p in penalizers if p >= 1.0) or (1.0,)
    elif n_events < 10 * p_cov:
        penalizers = tuple(p for p in penalizers if p >= 0.1) or (0.1, 1.0)
    results: dict[str, dict[str, float]] = {}
    chosen = candidates[0] if candidates else "cox"
    can_compare = len(frame) >= 60 and n_events >= 10 and (len(e) - n_events) >= 10 and len(candidates) > 1
    if can_compare:
        idx = np.arange(len(frame))
        if len(idx) > max_rows_compare:
            idx = np.random.default_rng(seed).choice(idx, max_rows_compare, replace=False)
        tr, va = train_test_split(idx, test_size=holdout, random_state=seed, stratify=e[idx])
        for kind in candidates:
            got = _fit_one(kind, x.iloc[tr], d[tr], e[tr], penalizers)
            if got is None:
                continue
            m = _build(kind, got[0], enc, duration_col, event_col, horizon, d[tr], e[tr], min_pos, x.iloc[tr])
            p = m.predict_proba(frame.iloc[va], conditional=False)
            auc = time_dependent_auc(d[va], e[va], p, horizon)
            results[kind] = {
                "concordance": concordance(d[va], e[va], p),
                "auc_at_horizon": auc,
                "brier_at_horizon": brier_at(d[va], e[va], p, horizon),
                "penalizer": got[1],
            }
        if results:
            def key(k: str) -> tuple[float, float]:
                r = results[k]
                main = r["auc_at_horizon"] if np.isfinite(r["auc_at_horizon"]) else r["concordance"]
                main = main if np.isfinite(main) else 0.0
                brier = r["brier_at_horizon"] if np.isfinite(r["brier_at_horizon"]) else 1.0
                return (round(main, 2), -brier)

            chosen = max(results, key=key)

    order = [chosen] + [k for k in (*candidates, "cox") if k != chosen]
    for kind in dict.fromkeys(order):
        pens = penalizers
        if kind in results:
            pens = tuple(p for p in penalizers if p >= results[kind]["penalizer"]) or penalizers
        got = _fit_one(kind, x, d, e, pens)
        if got is not None:
            m = _build(kind, got[0], enc, duration_col, event_col, horizon, d, e, min_pos, x)
            m.params = {"kind": kind, "penalizer": got[1], "seed": seed, "candidates": list(candidates)}
            break
    else:
        m = _build("km", None, enc, duration_col, event_col, horizon, d, e, min_pos, x)
        m.params = {"kind": "km", "reason": "no survival regression converged"}
    m.metrics.update(base)
    m.metrics["holdout"] = results
    if m.kind in results:
        m.metrics.update({k: v for k, v in results[m.kind].items() if k != "penalizer"})
    return m


# --------------------------------------------------------------------------------------------- member features
_TIER_MULT = {"standard": 1.0, "silver": 1.2, "gold": 1.5, "diamond": 2.0}


def _day(s: pd.Series) -> pd.Series:
    t = pd.to_datetime(s, utc=True, errors="coerce")
    return t.dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize()


def _by_member(frame: pd.DataFrame):
    return frame.groupby("member_id", observed=True)


def prepare_transactions(transactions: pd.DataFrame) -> pd.DataFrame:
    """Slim, typed view of purchases for feature building (captured only, ``member_id, day, amt, lit,
    station_id``). Idempotent: an already prepared frame is returned as is, so jobs prepare once."""
    if {"member_id", "day", "amt", "lit"}.issubset(transactions.columns):
        return transactions
    tx = transactions
    if "status" in tx.columns:
        tx = tx[tx["status"].astype(str) == "captured"]
    tx = tx[tx["member_id"].notna()]
    out = pd.DataFrame({"member_id": pd.Categorical(tx["member_id"].astype(str)), "day": _day(tx["ts"]).to_numpy()})
    amount = tx["amount"] if "amount" in tx.columns else tx.get("amount_fen", pd.Series(0.0, index=tx.index)) / 100
    out["amt"] = pd.to_numeric(amount, errors="coerce").fillna(0.0).to_numpy()
    out["lit"] = pd.to_numeric(tx["litres"], errors="coerce").fillna(0.0).to_numpy() if "litres" in tx.columns else 0.0
    if "station_id" in tx.columns:
        out["station_id"] = tx["station_id"].astype(str).to_numpy()
    return out


def build_churn_features(
    transactions: pd.DataFrame,
    members: pd.DataFrame,
    *,
    as_of: str | pd.Timestamp,
    complaints: pd.DataFrame | None = None,
    redemptions: pd.DataFrame | None = None,
    window_days: int = 90,
    points_expiry_days: int = 365,
    stations: pd.DataFrame | None = None,
    prices: pd.DataFrame | None = None,
    competitor_prices: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Point-in-time behaviour features per member, using only events strictly before ``as_of``.

    Columns: ``member_id, tenure_days, recency_days, freq_90, freq_prev_90, freq_trend, spend_90,
    spend_prev_90, spend_trend, litres_90, avg_ticket, distinct_stations_90, tier, price_sensitivity,
    complaints_total, complaints_90, points_expiring`` (``points_expiring`` = points earned between one year
    and one year minus ``window_days`` ago, net of redemptions since, i.e. what lapses in the next window).
    Optional inputs (complaints, redemptions, price_sensitivity, tier) are tolerated when absent.
    """
    cutoff = pd.Timestamp(as_of).tz_localize(None) if pd.Timestamp(as_of).tzinfo else pd.Timestamp(as_of)
    cutoff = cutoff.normalize()
    w = pd.Timedelta(days=window_days)
    mem = members.copy()
    mem["member_id"] = mem["member_id"].astype(str)
    joined = _day(mem["joined"]) if "joined" in mem.columns else pd.Series(cutoff, index=mem.index)
    out = pd.DataFrame({"member_id": mem["member_id"].to_numpy()})
    out["tenure_days"] = (cutoff - joined).dt.days.to_numpy(dtype=float)

    tx = prepare_transactions(transactions)
    tx = tx[tx["day"] < cutoff]
    recent = tx[tx["day"] >= cutoff - w]
    prev = tx[(tx["day"] >= cutoff - 2 * w) & (tx["day"] < cutoff - w)]
    g_all = tx.pipe(_by_member)
    last = g_all["day"].max()
    f90 = recent.pipe(_by_member).size()
    fprev = prev.pipe(_by_member).size()
    s90 = recent.pipe(_by_member)["amt"].sum()
    sprev = prev.pipe(_by_member)["amt"].sum()
    l90 = recent.pipe(_by_member)["lit"].sum()
    st90 = recent.pipe(_by_member)["station_id"].nunique() if "station_id" in recent.columns else None
    mid = out["member_id"]
    out["recency_days"] = (cutoff - mid.map(last)).dt.days.astype(float)
    out["recency_days"] = out["recency_days"].fillna(out["tenure_days"].clip(lower=0).fillna(2 * window_days))
    out["freq_90"] = mid.map(f90).fillna(0).astype(float).to_numpy()
    out["freq_prev_90"] = mid.map(fprev).fillna(0).astype(float).to_numpy()
    out["freq_trend"] = (out["freq_90"] - out["freq_prev_90"]) / (out["freq_prev_90"] + 1.0)
    out["spend_90"] = mid.map(s90).fillna(0.0).to_numpy()
    out["spend_prev_90"] = mid.map(sprev).fillna(0.0).to_numpy()
    out["spend_trend"] = (out["spend_90"] - out["spend_prev_90"]) / (out["spend_prev_90"] + 100.0)
    f30 = tx[tx["day"] >= cutoff - pd.Timedelta(days=30)].pipe(_by_member).size()
    f_31_90 = tx[(tx["day"] >= cutoff - w) & (tx["day"] < cutoff - pd.Timedelta(days=30))].pipe(_by_member).size()
    out["freq_30"] = mid.map(f30).fillna(0).astype(float).to_numpy()
    rate_before = mid.map(f_31_90).fillna(0).astype(float).to_numpy() * 30.0 / max(1.0, window_days - 30.0)
    # log change of the monthly fill rate: the fade-out before leaving shows up here first
    out["log_trend_30"] = np.log((out["freq_30"] + 0.5) / (rate_before + 0.5))
    out["log_freq_90"] = np.log1p(out["freq_90"])
    out["litres_90"] = mid.map(l90).fillna(0.0).to_numpy()
    # member's fill-rate drift: least-squares slope of log(fills + 0.5) over six 30-day bins (per 30 days)
    hist = tx[tx["day"] >= cutoff - pd.Timedelta(days=180)]
    k = ((cutoff - hist["day"]).dt.days // 30).clip(upper=5)
    counts = hist.groupby([hist["member_id"], 5 - k], observed=True).size().unstack(fill_value=0)
    counts = counts.reindex(columns=range(6), fill_value=0)
    logc = np.log(counts.to_numpy(dtype=float) + 0.5)
    xs = np.arange(6) - 2.5
    slope = pd.Series((logc * xs).sum(axis=1) / (xs**2).sum(), index=counts.index)
    out["fill_trend_slope"] = mid.map(slope).fillna(0.0).to_numpy()
    # the member's own usual fill rate, learnt from history (up to a year) before the last 30 days: a fade
    # against it, and the fills "missed" since the last one (recency scaled by the usual rate), show
    # disengagement without needing a declared habit column
    first_day = tx["day"].min() if len(tx) else cutoff
    base_start = max(cutoff - pd.Timedelta(days=365), first_day)
    hist_end = cutoff - pd.Timedelta(days=30)
    f_hist = tx[(tx["day"] >= base_start) & (tx["day"] < hist_end)].pipe(_by_member).size()
    span_start = np.maximum(joined.fillna(base_start).clip(lower=base_start).to_numpy(dtype="datetime64[ns]"),
                            np.datetime64(base_start))
    hist_days = np.clip((np.datetime64(hist_end) - span_start) / np.timedelta64(1, "D"), 0.0, None)
    usual = (mid.map(f_hist).fillna(0).astype(float).to_numpy() + 0.5) / (hist_days + 7.0)
    out["usual_rate_hist"] = usual
    out["fade_hist_30"] = np.log((out["freq_30"] + 0.5) / (usual * 30.0 + 0.5))
    out["missed_fills"] = np.log1p(out["recency_days"].to_numpy() * usual)
    out["log_recency"] = np.log1p(out["recency_days"].clip(lower=0).to_numpy())
    # shortfall of the last 45 days against the usual rate, as a Poisson z-score (large = activity dropped)
    f45 = mid.map(tx[tx["day"] >= cutoff - pd.Timedelta(days=45)].pipe(_by_member).size()).fillna(0).to_numpy(float)
    out["shortfall_z_45"] = (usual * 45.0 - f45) / np.sqrt(usual * 45.0 + 1.0)
    out["avg_ticket"] = out["spend_90"] / out["freq_90"].where(out["freq_90"] > 0, np.nan)
    out["avg_ticket"] = out["avg_ticket"].fillna(0.0)
    out["distinct_stations_90"] = mid.map(st90).fillna(0).astype(float).to_numpy() if st90 is not None else 0.0
    tier = mem["tier"].astype(str).to_numpy() if "tier" in mem.columns else np.array(["standard"] * len(mem))
    out["tier"] = tier
    if "fills_per_week" in mem.columns:
        out["log_fills_per_week"] = np.log(pd.to_numeric(mem["fills_per_week"], errors="coerce").clip(lower=0.05)
                                           ).to_numpy()
        # fills in the last 30 / 14 days against the member's usual rate: leavers fade out before they go
        usual = pd.to_numeric(mem["fills_per_week"], errors="coerce").fillna(0.0).to_numpy() / 7.0
        f14 = tx[tx["day"] >= cutoff - pd.Timedelta(days=14)].pipe(_by_member).size()
        out["fade_30"] = np.log((out["freq_30"] + 0.5) / (usual * 30 + 0.5))
        out["fade_14"] = np.log((mid.map(f14).fillna(0).astype(float).to_numpy() + 0.5) / (usual * 14 + 0.5))
    if "price_sensitivity" in mem.columns:
        out["price_sensitivity"] = pd.to_numeric(mem["price_sensitivity"], errors="coerce").to_numpy()
    else:
        out["price_sensitivity"] = np.nan

    if complaints is not None and len(complaints):
        c = complaints[complaints["member_id"].notna()].copy()
        c["member_id"] = c["member_id"].astype(str)
        c["day"] = _day(c["ts"])
        c = c[c["day"] < cutoff]
        out["complaints_total"] = mid.map(c.pipe(_by_member).size()).fillna(0).astype(float).to_numpy()
        c90 = c[c["day"] >= cutoff - w].pipe(_by_member).size()
        out["complaints_90"] = mid.map(c90).fillna(0).astype(float).to_numpy()
    else:
        total = pd.to_numeric(mem["complaints"], errors="coerce") if "complaints" in mem.columns else None
        out["complaints_total"] = total.fillna(0.0).to_numpy() if total is not None else 0.0
        out["complaints_90"] = 0.0

    # points: 1 point per yuan times the tier multiplier; points earned a year ago lapse in the next window
    mult = pd.Series(tier).str.lower().map(_TIER_MULT).fillna(1.0).to_numpy()
    exp_start = cutoff - pd.Timedelta(days=points_expiry_days)
    lapsing = tx[(tx["day"] >= exp_start) & (tx["day"] < exp_start + w)].pipe(_by_member)["amt"].sum()
    pts = mid.map(lapsing).fillna(0.0).to_numpy() * mult
    if redemptions is not None and len(redemptions) and "points" in redemptions.columns:
        r = redemptions[redemptions["member_id"].notna()].copy()
        r["member_id"] = r["member_id"].astype(str)
        r["day"] = _day(r["ts"])
        r = r[(r["day"] >= exp_start) & (r["day"] < cutoff)]
        used = mid.map(r.pipe(_by_member)["points"].sum()).fillna(0.0).to_numpy()
        pts = np.maximum(pts - used, 0.0)
    if "opening_points" in mem.columns and "points_expire_date" in mem.columns:
        # a balance carried in with a known expiry date: it lapses in the next window unless spent
        exp_day = _day(mem["points_expire_date"])
        soon = ((exp_day > cutoff) & (exp_day <= cutoff + w)).to_numpy()
        opening = pd.to_numeric(mem["opening_points"], errors="coerce").fillna(0.0).to_numpy()
        pts = pts + np.where(soon, opening, 0.0)
    out["points_expiring"] = pts
    out["points_expiring_flag"] = (pts >= 1000).astype(float)
    gap = _home_price_gap(mem, stations, prices, competitor_prices, cutoff)
    if gap is not None:
        out["home_price_gap_pct"] = gap
        out["price_sens_x_gap"] = out["price_sensitivity"].fillna(0.0).to_numpy() * gap
    return out


def _home_price_gap(mem: pd.DataFrame, stations: pd.DataFrame | None, prices: pd.DataFrame | None,
                    competitor_prices: pd.DataFrame | None, cutoff: pd.Timestamp) -> np.ndarray | None:
    """Price gap (%, 92# or the first product) of the own station nearest each member's home to its nearby
    competitors, averaged over the days before ``cutoff``; None when an input is missing."""
    need = {"home_lat", "home_lon"}
    if stations is None or prices is None or competitor_prices is None or not need <= set(mem.columns):
        return None
    product = "92" if (prices["product"].astype(str) == "92").any() else str(prices["product"].iloc[0])

    def mean_price(frame: pd.DataFrame) -> pd.Series:
        f = frame[(frame["product"].astype(str) == product) & (pd.to_datetime(frame["date"]) < cutoff)]
        return f.groupby(f["station_id"].astype(str))["price_fen"].mean()

    own, comp = mean_price(prices), mean_price(competitor_prices)
    gap_by_station = (100 * np.log(own / comp)).dropna()
    st = stations[stations["station_id"].astype(str).isin(gap_by_station.index)]
    if st.empty:
        return None
    lat0 = np.radians(float(st["lat"].mean()))
    sx = st["lon"].to_numpy(float) * np.cos(lat0)
    sy = st["lat"].to_numpy(float)
    hx = pd.to_numeric(mem["home_lon"], errors="coerce").to_numpy(float) * np.cos(lat0)
    hy = pd.to_numeric(mem["home_lat"], errors="coerce").to_numpy(float)
    nearest = np.argmin((hx[:, None] - sx[None, :]) ** 2 + (hy[:, None] - sy[None, :]) ** 2, axis=1)
    gap = gap_by_station.reindex(st["station_id"].astype(str)).to_numpy(float)[nearest]
    return np.where(np.isfinite(hx) & np.isfinite(hy), gap, 0.0)


def make_survival_frame(
    features: pd.DataFrame,
    members: pd.DataFrame,
    *,
    as_of: str | pd.Timestamp,
    end: str | pd.Timestamp,
) -> pd.DataFrame:
    """Attach landmark survival labels: members active at ``as_of`` are followed until ``end``.

    ``duration`` = days from ``as_of`` to ``churn_date`` (event = 1) or to ``end`` (censored). Members who
    churned on or before ``as_of`` or joined after it are left out.
    """
    cutoff = pd.Timestamp(as_of).normalize()
    stop = pd.Timestamp(end).normalize()
    mem = members.copy()
    mem["member_id"] = mem["member_id"].astype(str)
    cd = _day(mem["churn_date"]) if "churn_date" in mem.columns else pd.Series(pd.NaT, index=mem.index)
    joined = _day(mem["joined"]) if "joined" in mem.columns else pd.Series(cutoff, index=mem.index)
    lab = pd.DataFrame({"member_id": mem["member_id"], "churn_day": cd.to_numpy(), "joined_day": joined.to_numpy()})
    df = features.merge(lab, on="member_id", how="inner")
    alive = (df["churn_day"].isna() | (df["churn_day"] > cutoff)) & (df["joined_day"].isna()
                                                                        | (df["joined_day"] <= cutoff))
    df = df[alive].copy()
    event = df["churn_day"].notna() & (df["churn_day"] <= stop)
    df["duration"] = np.where(event, (df["churn_day"] - cutoff).dt.days, (stop - cutoff).days).astype(float)
    df["event"] = event.astype(int)
    return df.drop(columns=["churn_day", "joined_day"])


ACTIONS: dict[int, str] = {
    0: "none",
    1: "reminder: points/benefit push message",
    2: "coupon: standard fuel coupon",
    3: "coupon: premium fuel coupon + bonus points",
    4: "personal call from the account manager",
}


def segment_members(
    scored: pd.DataFrame,
    *,
    prob_col: str = "churn_probability",
    value_col: str = "spend_90",
    risk_cuts: tuple[float, float] = (0.2, 0.5),
) -> pd.DataFrame:
    """Value tier (low/mid/high by tertiles of ``value_col``) × risk band (low/medium/high by ``risk_cuts``),
    with a graded retention action (level 0 none … 4 personal call) per segment; returns a copy with
    ``value_tier, risk_band, segment, action_level, action``.
    """
    out = scored.copy()
    v = pd.to_numeric(out[value_col], errors="coerce").fillna(0.0)
    ranks = v.rank(method="first", pct=True)
    out["value_tier"] = np.select([ranks <= 1 / 3, ranks <= 2 / 3], ["low", "mid"], "high")
    p = pd.to_numeric(out[prob_col], errors="coerce").fillna(0.0)
    out["risk_band"] = np.select([p < risk_cuts[0], p < risk_cuts[1]], ["low", "medium"], "high")
    grid = {("low", "low"): 0, ("low", "medium"): 1, ("low", "high"): 2,
            ("mid", "low"): 0, ("mid", "medium"): 2, ("mid", "high"): 3,
            ("high", "low"): 1, ("high", "medium"): 3, ("high", "high"): 4}
    out["segment"] = out["value_tier"] + "-value/" + out["risk_band"] + "-risk"
    out["action_level"] = [grid[(a, b)] for a, b in zip(out["value_tier"], out["risk_band"], strict=True)]
    out["action"] = out["action_level"].map(ACTIONS)
    return out


def plot_km_by_segment(durations, events, segments, path: str | Path, *, title: str = "Survival by segment",
                       horizon: float | None = None) -> Path:
    """Kaplan–Meier curve per segment, saved as a PNG at ``path`` (matplotlib Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from lifelines import KaplanMeierFitter

    d = np.asarray(durations, dtype=float)
    e = np.asarray(events, dtype=float)
    seg = np.asarray(segments).astype(str)
    fig, ax = plt.subplots(figsize=(8, 5))
    for name in sorted(set(seg)):
        mask = seg == name
        if mask.sum() < 2:
            continue
        KaplanMeierFitter().fit(d[mask], e[mask], label=f"{name} (n={mask.sum()})").plot_survival_function(
            ax=ax, ci_show=False)
    if horizon is not None:
        ax.axvline(horizon, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("days since landmark")
    ax.set_ylabel("share still active")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower left")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p


def train_member_churn(
    transactions: pd.DataFrame,
    members: pd.DataFrame,
    *,
    complaints: pd.DataFrame | None = None,
    redemptions: pd.DataFrame | None = None,
    stations: pd.DataFrame | None = None,
    prices: pd.DataFrame | None = None,
    competitor_prices: pd.DataFrame | None = None,
    end: str | pd.Timestamp | None = None,
    horizon_days: int = 90,
    landmarks: int = 3,
    candidates: tuple[str, ...] = _CANDIDATES,
    seed: int = 0,
    km_path: str | Path | None = None,
    max_train_rows: int = 30_000,
) -> tuple[ChurnModel, dict[str, Any], pd.DataFrame]:
    """The member churn job: train at landmark ``end - 2·horizon`` (labels to ``end - horizon``), evaluate
    out of time at landmark ``end - horizon`` (labels to ``end``: concordance, AUC at the horizon, Brier),
    refit on the evaluation landmark and score every active member at ``end``.

    With less history than ``2·horizon_days`` plus some feature history (short simulations), the horizon is
    shrunk to fit (``metrics["horizon_days"]`` vs ``metrics["requested_horizon_days"]``, with a ``note``);
    ``churn_probability`` is always P(churn within the requested horizon).

    Returns ``(model, metrics, scored)``; ``scored`` has the features, ``churn_probability`` and the segment
    columns of :func:`segment_members`. With ``km_path``, Kaplan–Meier curves of the out-of-time landmark per
    segment (value tier × predicted risk) are saved there as a PNG; ``metrics["segments"]`` has their
    observed 90-day churn rates.
    """
    transactions = prepare_transactions(transactions)
    if end is None:
        end = transactions["day"].max() + pd.Timedelta(days=1)
    end_ts = pd.Timestamp(end).normalize()
    requested = int(horizon_days)
    # Short histories (e.g. a 45-day demo): two landmark windows of `horizon_days` before `end` would start
    # before the first transaction, so every feature is empty and the metrics are meaningless (C = 0.5).
    # Shrink the horizon so that both follow-up windows fit after some history (reported in the metrics).
    first_day = transactions["day"].min() if len(transactions) else end_ts - 2 * pd.Timedelta(days=requested)
    history_days = max(0, int((end_ts - first_day).days))
    min_hist = min(60, max(7, history_days // 3))
    horizon_days = int(min(requested, max(1, (history_days - min_hist) // 2)))
    h = pd.Timedelta(days=horizon_days)
    kw = {"complaints": complaints, "redemptions": redemptions, "stations": stations, "prices": prices,
          "competitor_prices": competitor_prices}
    l1, l2 = end_ts - 2 * h, end_ts - h
    # several landmarks, 30 days apart, all followed up only until l2: more events, no look-ahead; an extra
    # landmark needs at least `min_hist` days of history before it
    stack = []
    for back in range(landmarks):
        lm = l1 - pd.Timedelta(days=30 * back)
        if back and lm - pd.Timedelta(days=min_hist) < first_day:
            break
        part = make_survival_frame(build_churn_features(transactions, members, as_of=lm, **kw), members,
                                   as_of=lm, end=l2)
        stack.append(part)
    train = pd.concat(stack, ignore_index=True)
    if len(train) > max_train_rows:  # keeps the AFT fits bounded on large member bases
        train = train.sample(max_train_rows, random_state=seed).reset_index(drop=True)
    test = make_survival_frame(build_churn_features(transactions, members, as_of=l2, **kw), members,
                               as_of=l2, end=end_ts)
    model = fit_churn_model(train, duration_col="duration", event_col="event", horizon=horizon_days,
                            exclude=("member_id",), seed=seed, candidates=candidates)
    p = model.predict_proba(test.drop(columns=["duration"]), conditional=False)
    metrics = {
        "model": model.kind,
        "horizon_days": horizon_days,
        "requested_horizon_days": requested,
        "history_days": history_days,
        "landmarks_used": len(stack),
        "train_rows": len(train),
        "test_rows": len(test),
        "test_events": int(test["event"].sum()),
        "concordance": concordance(test["duration"], test["event"], p),
        "auc_90d": time_dependent_auc(test["duration"], test["event"], p, horizon_days),
        "brier_90d": brier_at(test["duration"], test["event"], p, horizon_days),
        "holdout": model.metrics.get("holdout", {}),
    }
    if horizon_days < requested:
        metrics["note"] = (f"only {history_days} days of history before {end_ts.date()}: evaluated at a "
                           f"{horizon_days}-day horizon instead of {requested} (landmarks {l1.date()}, {l2.date()}); "
                           f"churn_probability is P(churn within {requested} days), extrapolated by the model")
    seg_test = segment_members(test.assign(churn_probability=p))
    observed = seg_test.assign(churned_in_h=(seg_test["event"] > 0) & (seg_test["duration"] <= horizon_days))
    metrics["segments"] = {
        str(k): {"members": int(len(g)), "predicted": round(float(g["churn_probability"].mean()), 4),
                 "observed": round(float(g["churned_in_h"].mean()), 4)}
        for k, g in observed.groupby("segment")
    }
    if km_path is not None:
        plot_km_by_segment(seg_test["duration"], seg_test["event"], seg_test["risk_band"] + "-risk",
                           km_path, title=f"Members by predicted {horizon_days}-day churn risk", horizon=horizon_days)
    if len(test) > max_train_rows:
        test_fit = test.sample(max_train_rows, random_state=seed).reset_index(drop=True)
    else:
        test_fit = test
    final = fit_churn_model(test_fit, duration_col="duration", event_col="event", horizon=horizon_days,
                            exclude=("member_id",), seed=seed, candidates=(model.kind,))
    final.metrics["out_of_time"] = metrics
    feats = build_churn_features(transactions, members, as_of=end_ts, **kw)
    if "churn_date" in members.columns:
        cd = _day(members["churn_date"])
        gone = set(members.loc[cd.notna() & (cd <= end_ts), "member_id"].astype(str))
        feats = feats[~feats["member_id"].isin(gone)]
    feats = feats.copy()
    feats["churn_probability"] = final.predict_proba(feats, requested, conditional=False)
    scored = segment_members(feats)
    return final, metrics, scored


def synthetic_customers(n: int = 2000, *, seed: int = 0) -> pd.DataFrame:
    """A telecom-like customer table for tests and demos (``customerID``, ``tenure``, ``Churn`` Yes/No, string
    categoricals, ``TotalCharges`` as a numeric string with blanks for brand-new customers), drawn from a
    known Weibull proportional-hazards model."""
    r = np.random.default_rng(seed)
    contract = r.choice(["Month-to-month", "One year", "Two year"], n, p=[0.55, 0.25, 0.2])
    internet = r.choice(["DSL", "Fiber optic", "No"], n, p=[0.35, 0.45, 0.2])
    security = np.where(internet == "No", "No internet service", r.choice(["Yes", "No"], n))
    support = np.where(internet == "No", "No internet service", r.choice(["Yes", "No"], n))
    senior = r.binomial(1, 0.16, n)
    partner = r.choice(["Yes", "No"], n)
    paperless = r.choice(["Yes", "No"], n, p=[0.6, 0.4])
    payment = r.choice(["Electronic check", "Mailed check", "Bank transfer (automatic)",
                        "Credit card (automatic)"], n)
    monthly = np.round(20 + 30 * (internet == "DSL") + 60 * (internet == "Fiber optic") + r.normal(0, 8, n), 2)
    lp = (1.6 * (contract == "Month-to-month") - 0.9 * (contract == "Two year") + 0.6 * (internet == "Fiber optic")
          - 0.5 * (security == "Yes") - 0.4 * (support == "Yes") + 0.4 * senior + 0.4 * (paperless == "Yes")
          + 0.5 * (payment == "Electronic check") - 0.3 * (partner == "Yes"))
    shape, scale = 0.7, 150.0
    t = scale * (-np.log(r.uniform(size=n)) / np.exp(lp)) ** (1 / shape)
    c = r.uniform(0, 73, n)
    tenure = np.floor(np.minimum(t, c)).astype(int)
    churn = np.where(t <= c, "Yes", "No")
    total = np.where(tenure == 0, " ", np.round(monthly * tenure, 2).astype(str))
    return pd.DataFrame({
        "customerID": [f"{i:04d}-{r.integers(1e4):04d}X" for i in range(n)],
        "gender": r.choice(["Male", "Female"], n), "SeniorCitizen": senior, "Partner": partner,
        "tenure": tenure, "PhoneService": "Yes", "InternetService": internet, "OnlineSecurity": security,
        "TechSupport": support, "Contract": contract, "PaperlessBilling": paperless, "PaymentMethod": payment,
        "MonthlyCharges": monthly, "TotalCharges": total, "Churn": churn,
    })
