"""Demand forecasting: per-series model selection between seasonal naive, seasonal means, STL decomposition
(statsmodels) with exponential smoothing, and a regression decomposition (trend + weekday + yearly Fourier
terms + optional Chinese public holidays + optional extra regressors) with a smoothed local level; 80%
prediction intervals from held-out errors. Also accuracy metrics, a replenishment plan per tank and alerts when
sales and tank readings disagree.

Pure: no I/O except :meth:`DemandModel.save` / :meth:`DemandModel.load`.

Main entry points
-----------------
- :func:`infer_frequency`, :func:`regularize` — frequency (daily / business-day / weekly / monthly / hourly /
  fixed step) from the dates; regular grid with duplicates summed and gaps filled.
- :func:`forecast_series` — one series → :class:`SeriesForecast`.
- :func:`forecast_frame` — a long frame of many series → ``[id,]date,forecast,lower,upper``.
- :func:`backtest_frame` — hold out the last H periods of every series: WAPE, MAPE, MASE vs seasonal naive.
- :func:`replenishment_plan`, :func:`leak_alerts` — supply actions from forecasts and tank readings.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from models.common import coerce_numeric, load_artifact, save_artifact

__all__ = [
    "DemandModel",
    "Frequency",
    "SeriesForecast",
    "backtest_frame",
    "forecast_frame",
    "forecast_series",
    "holiday_features",
    "infer_frequency",
    "leak_alerts",
    "mase",
    "regularize",
    "replenishment_plan",
    "train_station_demand",
    "wape",
]

Z80 = 1.2815515655446004  # two-sided 80% interval
_WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


# --------------------------------------------------------------------------------------------- frequency
@dataclass(frozen=True)
class Frequency:
    """A regular time grid: ``offset`` steps between points, ``season`` steps per seasonal cycle."""

    kind: str  # "D", "B" (daily on some weekdays), "W", "M", "Q", "H", "Y", "X" (fixed step)
    offset: Any
    season: int
    steps_per_year: float

    def next_dates(self, last: pd.Timestamp, horizon: int) -> pd.DatetimeIndex:
        """The ``horizon`` grid points after ``last``."""
        return pd.date_range(start=last, periods=horizon + 1, freq=self.offset)[1:]


def infer_frequency(dates: pd.Series | pd.DatetimeIndex, groups: pd.Series | None = None) -> Frequency:
    """Infer the sampling frequency from (possibly grouped, unsorted, duplicated) dates.

    Uses the median gap between consecutive distinct dates within each group; daily data observed only on
    some weekdays (e.g. no Sundays) becomes a custom business-day grid so no phantom days are forecast.

    >>> infer_frequency(pd.Series(pd.date_range("2024-01-07", periods=20, freq="W-SUN"))).kind
    'W'
    """
    d = pd.Series(pd.to_datetime(pd.Series(dates)).to_numpy())
    frame = pd.DataFrame({"d": d, "g": groups.to_numpy() if groups is not None else 0}).drop_duplicates()
    frame = frame.sort_values(["g", "d"])
    gaps = frame.groupby("g")["d"].diff().dropna()
    gaps = gaps[gaps > pd.Timedelta(0)]
    if gaps.empty:
        return Frequency("D", pd.offsets.Day(1), 7, 365.25)
    days = gaps.dt.total_seconds().median() / 86400.0
    all_days = frame["d"]
    if days < 0.9:
        hours = max(1, round(days * 24))
        return Frequency("H", pd.tseries.frequencies.to_offset(f"{hours}h"), max(1, round(24 / hours)),
                         365.25 * 24 / hours)
    if days <= 1.5:
        counts = np.bincount(all_days.dt.weekday.to_numpy(), minlength=7)
        span_weeks = (all_days.max() - all_days.min()).days / 7.0
        active = counts >= 0.05 * counts.max()
        if span_weeks >= 3 and 0 < active.sum() < 7:
            mask = " ".join(w for w, a in zip(_WEEKDAYS, active, strict=True) if a)
            return Frequency("B", pd.offsets.CustomBusinessDay(weekmask=mask), int(active.sum()),
                             365.25 * active.sum() / 7)
        return Frequency("D", pd.offsets.Day(1), 7, 365.25)
    if 5.5 <= days <= 8.5:
        wd = int(np.bincount(all_days.dt.weekday.to_numpy(), minlength=7).argmax())
        return Frequency("W", pd.tseries.frequencies.to_offset(f"W-{_WEEKDAYS[wd].upper()}"), 52, 52.1775)
    if 26 <= days <= 33:
        if (all_days.dt.day == 1).mean() > 0.9:
            return Frequency("M", pd.offsets.MonthBegin(1), 12, 12.0)
        if all_days.dt.is_month_end.mean() > 0.9:
            return Frequency("M", pd.offsets.MonthEnd(1), 12, 12.0)
        return Frequency("M", pd.DateOffset(months=1), 12, 12.0)
    if 85 <= days <= 95:
        if all_days.dt.is_quarter_start.mean() > 0.9:
            return Frequency("Q", pd.offsets.QuarterBegin(startingMonth=1), 4, 4.0)
        if all_days.dt.is_quarter_end.mean() > 0.9:
            return Frequency("Q", pd.offsets.QuarterEnd(startingMonth=12), 4, 4.0)
        return Frequency("Q", pd.DateOffset(months=3), 4, 4.0)
    if 360 <= days <= 370:
        return Frequency("Y", pd.DateOffset(years=1), 1, 1.0)
    step = max(1, round(days))
    return Frequency("X", pd.offsets.Day(step), 1, 365.25 / step)


def regularize(dates: pd.Series, values: pd.Series, freq: Frequency) -> pd.Series:
    """Put one series on its regular grid: duplicates summed, each date assigned to the next grid point,
    missing points filled (zeros for non-negative count-like series with zeros or small values, otherwise
    linear interpolation). Returns a float series indexed by the grid (empty if no usable value)."""
    v = pd.to_numeric(values, errors="coerce").astype(float)
    d = pd.to_datetime(dates)
    if freq.kind in {"D", "B", "W", "M", "Q", "Y", "X"}:
        d = d.dt.normalize()
    ok = d.notna().to_numpy() & np.isfinite(v.to_numpy())
    d, v = d[ok], v[ok]
    if d.empty:
        return pd.Series(dtype=float)
    first, last = d.min(), d.max()
    try:
        grid = pd.date_range(start=first, end=last, freq=freq.offset)
        if len(grid) == 0 or grid[-1] != last:
            grid = pd.date_range(end=last, periods=max(1, len(grid) + 1), freq=freq.offset)
            grid = grid[grid >= grid[0]]
        while grid[0] > first:
            grid = pd.date_range(end=last, periods=len(grid) * 2 + 1, freq=freq.offset)
    except (ValueError, OverflowError):
        grid = pd.DatetimeIndex(sorted(d.unique()))
    pos = np.searchsorted(grid.to_numpy(), d.to_numpy(), side="left")
    pos = np.clip(pos, 0, len(grid) - 1)
    sums = np.bincount(pos, weights=v.to_numpy(), minlength=len(grid))
    seen = np.bincount(pos, minlength=len(grid)) > 0
    first_pos = int(np.argmax(seen))
    grid, sums, seen = grid[first_pos:], sums[first_pos:], seen[first_pos:]
    s = pd.Series(np.where(seen, sums, np.nan), index=grid, dtype=float)
    if not seen.all():
        obs = s.dropna()
        # Missing dates in sparse count data mean "nothing sold"; in a dense series they are gaps to bridge.
        count_like = bool((obs >= 0).all() and ((obs == 0).mean() >= 0.05 or obs.median() <= 5))
        s = s.fillna(0.0) if count_like else s.interpolate(limit_direction="both")
    return s


# --------------------------------------------------------------------------------------------- holidays
def holiday_features(dates: pd.DatetimeIndex) -> pd.DataFrame:
    """Chinese public-holiday regressors from ``chinese_calendar`` (zeros outside the years it covers):
    ``hol_spring`` (Spring Festival days off), ``hol_other`` (other statutory days off), ``hol_workday``
    (weekend days that are official working days), ``hol_eve`` (the day before a block of days off) and
    ``hol_after`` (the first working day after one)."""
    import chinese_calendar as cc

    target = pd.DatetimeIndex(dates).normalize()
    if len(target) == 0:
        return pd.DataFrame(columns=["hol_spring", "hol_other", "hol_workday", "hol_eve", "hol_after"])
    dates = pd.date_range(target.min() - pd.Timedelta(days=1), target.max() + pd.Timedelta(days=1), freq="D")
    n = len(dates)
    spring, other, makeup, off = (np.zeros(n) for _ in range(4))
    for i, ts in enumerate(dates):
        day = ts.date()
        try:
            is_hol, name = cc.get_holiday_detail(day)
        except (NotImplementedError, ValueError):
            off[i] = 1.0 if day.weekday() >= 5 else 0.0
            continue
        off[i] = 1.0 if is_hol else 0.0
        if is_hol and name is not None:
            if "Spring" in str(name):
                spring[i] = 1.0
            else:
                other[i] = 1.0
        elif not is_hol and day.weekday() >= 5:
            makeup[i] = 1.0
    stat = np.maximum(spring, other)
    nxt = np.r_[stat[1:], 0.0]
    prv = np.r_[0.0, stat[:-1]]
    eve = ((nxt > 0) & (stat == 0)).astype(float)
    after = ((prv > 0) & (stat == 0)).astype(float)
    full = pd.DataFrame({"hol_spring": spring, "hol_other": other, "hol_workday": makeup, "hol_eve": eve,
                         "hol_after": after}, index=dates)
    return full.reindex(target).set_axis(pd.DatetimeIndex(target))


_HOLIDAY_TABLE: pd.DataFrame | None = None


def _holiday_table() -> pd.DataFrame:
    """Holiday features for every day the calendar covers, computed once per process."""
    global _HOLIDAY_TABLE
    if _HOLIDAY_TABLE is None:
        _HOLIDAY_TABLE = holiday_features(pd.date_range("2004-01-01", "2026-12-31", freq="D"))
    return _HOLIDAY_TABLE


def _holiday_block(dates: pd.DatetimeIndex) -> np.ndarray:
    """Holiday features for ``dates`` (normalised to days); zeros outside the calendar's years."""
    days = pd.DatetimeIndex(dates).normalize()
    return _holiday_table().reindex(days).fillna(0.0).to_numpy(dtype=float)


def _covered_by_calendar(dates: pd.DatetimeIndex) -> bool:
    return bool(len(dates)) and dates.min().year >= 2004 and dates.min().year <= 2026


# --------------------------------------------------------------------------------------------- metrics
def wape(actual, forecast) -> float:
    """Weighted absolute percentage error: sum|a - f| / sum|a| (accuracy = 1 - WAPE)."""
    a, f = np.asarray(actual, float), np.asarray(forecast, float)
    den = np.abs(a).sum()
    return float(np.abs(a - f).sum() / den) if den > 0 else float("nan")


def mape(actual, forecast) -> float:
    """Mean absolute percentage error over non-zero actuals."""
    a, f = np.asarray(actual, float), np.asarray(forecast, float)
    nz = a != 0
    return float(np.mean(np.abs((a[nz] - f[nz]) / a[nz]))) if nz.any() else float("nan")


def _scale(history: np.ndarray, m: int) -> float:
    y = np.asarray(history, float)
    lag = m if len(y) > m else 1
    if len(y) <= lag:
        return float("nan")
    s = np.mean(np.abs(y[lag:] - y[:-lag]))
    return float(s) if s > 0 else float("nan")


def mase(actual, forecast, history, m: int) -> float:
    """Mean absolute scaled error: MAE over the in-sample MAE of the seasonal naive (lag ``m``)."""
    s = _scale(history, m)
    a, f = np.asarray(actual, float), np.asarray(forecast, float)
    return float(np.mean(np.abs(a - f)) / s) if np.isfinite(s) else float("nan")


# --------------------------------------------------------------------------------------------- candidates
def _snaive(y: np.ndarray, h: int, m: int) -> np.ndarray:
    if m <= 1 or len(y) < m:
        return np.full(h, y[-1])
    return np.resize(y[-m:], h)


def _smean(y: np.ndarray, h: int, m: int, k: int = 4, median: bool = False) -> np.ndarray:
    k = min(k, len(y) // m)
    if m <= 1 or k < 2:
        w = y[-min(len(y), max(m, 4)):]
        return np.full(h, np.median(w) if median else w.mean())
    block = y[len(y) - k * m:].reshape(k, m)
    prof = np.median(block, axis=0) if median else block.mean(axis=0)
    return np.resize(prof, h)


def _ses_grid(y: np.ndarray, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Simple exponential smoothing for several alphas at once: final levels and one-step SSEs."""
    from scipy.signal import lfilter

    y = np.asarray(y, dtype=float)
    levels = np.empty(len(alphas))
    sse = np.zeros(len(alphas))
    if len(y) < 2:
        return np.full(len(alphas), y[0] if len(y) else 0.0), sse
    for i, a in enumerate(alphas):
        # L_t = (1 - a) L_{t-1} + a y_t with L_0 = y_0, evaluated in C
        lv = lfilter([a], [1.0, a - 1.0], y[1:], zi=[(1.0 - a) * y[0]])[0]
        preds = np.r_[y[0], lv[:-1]]
        sse[i] = float(np.sum((y[1:] - preds) ** 2))
        levels[i] = lv[-1]
    return levels, sse


def _holt_damped(y: np.ndarray, h: int, phi: float = 0.9) -> tuple[np.ndarray, float]:
    """Additive damped-trend exponential smoothing with (alpha, beta) picked from a grid by one-step SSE."""
    al = np.array([0.05, 0.1, 0.2, 0.3, 0.5, 0.8])
    be = np.array([0.0, 0.02, 0.1])
    A, B = (g.ravel() for g in np.meshgrid(al, be))
    level = np.full(len(A), y[0], dtype=float)
    trend = np.full(len(A), (y[min(len(y) - 1, 3)] - y[0]) / max(1, min(len(y) - 1, 3)) if len(y) > 1 else 0.0)
    sse = np.zeros(len(A))
    for v in y[1:]:
        pred = level + phi * trend
        err = v - pred
        sse += err * err
        new_level = pred + A * err
        trend = phi * trend + B * A * err
        level = new_level
    j = int(np.argmin(sse))
    steps = np.cumsum(phi ** np.arange(1, h + 1))
    return level[j] + steps * trend[j], float(np.sqrt(sse[j] / max(1, len(y) - 1)))


def _ses(y: np.ndarray, h: int) -> np.ndarray:
    level, sse = _ses_grid(y, np.array([0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8]))
    return np.full(h, level[int(np.argmin(sse))])


def _stl_ets(y: np.ndarray, h: int, m: int) -> np.ndarray:
    """STL decomposition (statsmodels) + damped-trend exponential smoothing of the seasonally adjusted series;
    the seasonal component is carried forward from its last cycle."""
    from statsmodels.tsa.seasonal import STL

    w = y[-min(len(y), max(8 * m, 3 * 56)):]  # recent history keeps the seasonal shape current
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = STL(w, period=m, robust=False).fit()
    seasonal = np.asarray(res.seasonal)
    adj = w - seasonal
    fc, _ = _holt_damped(adj, h, phi=0.85)
    return fc + np.resize(seasonal[-m:], h)


@dataclass
class _Design:
    """Regression-decomposition design: columns for trend, weekday, yearly Fourier, holidays and exog."""

    weekday: bool
    fourier_k: int
    period_days: float
    holidays: bool
    trend: bool
    month: bool


def _design_matrix(dates: pd.DatetimeIndex, t: np.ndarray, spec: _Design, exog: np.ndarray | None,
                   weekdays: np.ndarray) -> np.ndarray:
    cols = [np.ones(len(dates))]
    if spec.trend:
        cols.append(t)
    if spec.weekday:
        wd = dates.weekday.to_numpy()
        for k in weekdays[1:]:
            cols.append((wd == k).astype(float))
    if spec.month:
        mo = dates.month.to_numpy()
        for k in range(2, 13):
            cols.append((mo == k).astype(float))
    if spec.fourier_k > 0:
        doy = (dates - pd.Timestamp("2000-01-01")).days.to_numpy() / spec.period_days
        for k in range(1, spec.fourier_k + 1):
            cols.append(np.sin(2 * np.pi * k * doy))
            cols.append(np.cos(2 * np.pi * k * doy))
    if spec.holidays:
        cols.extend(_holiday_block(dates).T)
    if exog is not None:
        cols.extend(np.asarray(exog, float).T)
    return np.column_stack(cols)


def _decomp(y: np.ndarray, dates: pd.DatetimeIndex, future: pd.DatetimeIndex, spec: _Design,
            exog: np.ndarray | None = None, exog_future: np.ndarray | None = None,
            log: bool = False) -> tuple[np.ndarray, float]:
    """Regression decomposition fitted by ridge least squares, plus an exponentially smoothed level on its
    residuals (so level shifts are tracked). Returns (forecast, in-sample residual BIC)."""
    n = len(y)
    target = np.log1p(y) if log else y
    t_all = np.arange(n + len(future), dtype=float) / max(1.0, n)
    weekdays = np.unique(dates.weekday.to_numpy())
    x = _design_matrix(dates, t_all[:n], spec, exog, weekdays)
    xf = _design_matrix(future, t_all[n:], spec, exog_future, weekdays)
    lam = 1e-3 * n
    reg = np.eye(x.shape[1]) * lam
    reg[0, 0] = 0.0
    try:
        beta = np.linalg.solve(x.T @ x + reg, x.T @ target)
    except np.linalg.LinAlgError:
        beta = np.linalg.lstsq(x, target, rcond=None)[0]
    fitted = x @ beta
    resid = target - fitted
    level, sse = _ses_grid(resid, np.array([0.0, 0.02, 0.05, 0.1, 0.2, 0.4]))
    j = int(np.argmin(sse))
    if spec.trend:
        # dampen the regression trend beyond the data: a straight line is rarely right 30 days out
        slope = beta[1]
        steps = np.arange(1, len(future) + 1, dtype=float) / max(1.0, n)
        damp = np.cumsum(0.97 ** np.arange(1, len(future) + 1)) / np.arange(1, len(future) + 1)
        xf_no_trend = xf.copy()
        xf_no_trend[:, 1] = t_all[n - 1]
        fc = xf_no_trend @ beta + slope * steps * damp + level[j]
    else:
        fc = xf @ beta + level[j]
    rss = float(np.sum(resid**2)) + 1e-12
    bic = n * math.log(rss / n) + x.shape[1] * math.log(n)
    if log:
        fc = np.expm1(np.clip(fc, -50, 50))
    return fc, bic


# --------------------------------------------------------------------------------------------- one series
@dataclass
class SeriesForecast:
    """Forecast of one series: grid dates, point forecast, 80% bounds, chosen model and validation scores."""

    dates: pd.DatetimeIndex
    forecast: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    model: str
    scores: dict[str, float] = field(default_factory=dict)


def _design_for(freq: Frequency, n: int, use_holidays: bool, dates: pd.DatetimeIndex) -> _Design:
    daily = freq.kind in {"D", "B"}
    years = n / freq.steps_per_year
    if daily:
        k = 0 if years < 1.0 else (3 if years < 2 else 6)
        return _Design(weekday=True, fourier_k=k, period_days=365.25, trend=n >= 56,
                       holidays=use_holidays and _covered_by_calendar(dates), month=False)
    if freq.kind == "W":
        k = 0 if years < 1.0 else (4 if years < 2 else 8)
        return _Design(weekday=False, fourier_k=k, period_days=365.25, trend=n >= 26, holidays=False, month=False)
    if freq.kind == "M":
        return _Design(weekday=False, fourier_k=0, period_days=365.25, trend=n >= 12, holidays=False,
                       month=n >= 24)
    if freq.kind == "H":
        return _Design(weekday=False, fourier_k=0, period_days=1.0, trend=False, holidays=False, month=False)
    return _Design(weekday=False, fourier_k=0, period_days=365.25, trend=n >= 8, holidays=False, month=False)


def _candidates(y: np.ndarray, dates: pd.DatetimeIndex, future: pd.DatetimeIndex, freq: Frequency,
                use_holidays: bool, exog: np.ndarray | None, exog_future: np.ndarray | None,
                only: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    h = len(future)
    m = freq.season if freq.season > 1 and len(y) >= 2 * freq.season else 1
    out: dict[str, np.ndarray] = {}

    def want(name: str) -> bool:
        return only is None or name in only

    if want("snaive"):
        out["snaive"] = _snaive(y, h, m)
    if want("naive"):
        out["naive"] = np.full(h, y[-1])
    if len(y) >= 4 and want("ses"):
        out["ses"] = _ses(y, h)
    if m > 1 and len(y) >= 3 * m:
        if want("smean"):
            out["smean"] = _smean(y, h, m, k=4 if m <= 12 else 2)
        if want("smedian") and m <= 12:
            out["smedian"] = _smean(y, h, m, k=5, median=True)
    if m > 1 and len(y) >= 3 * m and m <= 24 and want("stl_ets"):
        try:
            out["stl_ets"] = _stl_ets(y, h, m)
        except Exception:  # noqa: BLE001,S110 - numerical trouble: just skip the candidate
            pass
    if len(y) >= 10:
        spec = _design_for(freq, len(y), use_holidays, dates)
        try:
            if want("decomp"):
                out["decomp"] = _decomp(y, dates, future, spec, exog, exog_future)[0]
            if want("decomp_log") and y.min() > 0 and len(y) >= 28:
                out["decomp_log"] = _decomp(y, dates, future, spec, exog, exog_future, log=True)[0]
        except Exception:  # noqa: BLE001,S110
            pass
    if "decomp" in out and "stl_ets" in out and want("combo"):
        out["combo"] = 0.5 * (out["decomp"] + out["stl_ets"])
    for k in list(out):
        if not np.all(np.isfinite(out[k])):
            del out[k]
    return out


_PRIORITY = ["snaive", "naive", "smean", "smedian", "ses", "stl_ets", "decomp", "decomp_log", "combo"]


def forecast_series(
    y: pd.Series,
    horizon: int,
    freq: Frequency,
    *,
    use_holidays: bool = False,
    exog: pd.DataFrame | None = None,
    exog_future: pd.DataFrame | None = None,
    level: float = 0.8,
) -> SeriesForecast:
    """Forecast ``horizon`` steps of a regular series (see :func:`regularize`).

    Every candidate is scored on up to two held-out windows at the end of the history (mean absolute error);
    the best is refitted on the full history. The interval is the point forecast ± z·RMSE of the chosen
    model's held-out errors (widened like √h beyond the validated horizon), clipped at zero when the history
    is non-negative. Extra regressors (``exog`` for the history, ``exog_future`` for the horizon, same columns)
    are used by the regression decomposition only.
    """
    z = NormalDist().inv_cdf(0.5 + level / 2)
    future = freq.next_dates(y.index[-1], horizon) if len(y) else pd.DatetimeIndex([])
    vals = y.to_numpy(dtype=float)
    n = len(vals)
    ex = exog.to_numpy(float) if exog is not None else None
    exf = exog_future.to_numpy(float) if exog_future is not None and exog is not None else None
    if ex is not None and (exf is None or len(exf) != horizon):
        ex = exf = None
    nonneg = bool(n and vals.min() >= 0)
    if n == 0:
        zeros = np.zeros(horizon)
        return SeriesForecast(future, zeros, zeros, zeros, "empty")
    if n < 3:
        f = np.full(horizon, vals.mean())
        spread = np.abs(vals).mean() * 0.5 if n == 1 else max(np.std(vals), 1e-9) * 2
        lo, hi = f - spread, f + spread
        if nonneg:
            lo = np.maximum(lo, 0.0)
        return SeriesForecast(future, f, lo, hi, "mean")

    m = freq.season if freq.season > 1 and n >= 2 * freq.season else 1
    h_val = int(min(horizon, max(1, (n - max(2 * m, 8)) // 2) if n > 16 else max(1, n // 3)))
    folds = [n - h_val]
    if n - 2 * h_val >= max(2 * m + h_val, 3 * h_val, 28):
        folds.append(n - 2 * h_val)
    errs: dict[str, list[np.ndarray]] = {}
    for cut in folds:
        tr_y, tr_d = vals[:cut], y.index[:cut]
        va_d = y.index[cut:cut + h_val]
        cands = _candidates(tr_y, tr_d, va_d, freq, use_holidays,
                            ex[:cut] if ex is not None else None,
                            ex[cut:cut + h_val] if ex is not None else None)
        actual = vals[cut:cut + h_val]
        for name, f in cands.items():
            f = np.maximum(f, 0.0) if nonneg else f
            errs.setdefault(name, []).append(actual - f)
    complete = {k: np.concatenate(v) for k, v in errs.items() if len(v) == len(folds)}
    if not complete:
        complete = {"naive": np.zeros(1)}
    scores = {k: float(np.mean(np.abs(e))) for k, e in complete.items()}
    best_score = min(scores.values())
    # prefer the simplest candidate within 1% of the best (ties, flat series)
    best = next(k for k in _PRIORITY if k in scores and scores[k] <= best_score * 1.01 + 1e-12)

    final = _candidates(vals, y.index, future, freq, use_holidays, ex, exf, only=[best, "snaive", "naive"])
    f = final.get(best, final.get("snaive", np.full(horizon, vals[-1])))
    if best == "combo" and "combo" not in final:
        f = final.get("snaive")
    if nonneg:
        f = np.maximum(f, 0.0)
    e = complete.get(best, np.zeros(1))
    sigma = float(np.sqrt(np.mean(e**2)))
    if not np.isfinite(sigma) or sigma <= 0:
        sigma = float(np.std(np.diff(vals))) if n > 2 else abs(float(vals.mean())) * 0.1
    steps = np.arange(1, horizon + 1, dtype=float)
    widen = np.sqrt(np.maximum(1.0, steps / max(1, h_val)))
    lo, hi = f - z * sigma * widen, f + z * sigma * widen
    if nonneg:
        lo = np.maximum(lo, 0.0)
    return SeriesForecast(future, f, lo, hi, best, scores)


# --------------------------------------------------------------------------------------------- many series
def parse_dates(raw: pd.Series) -> pd.Series:
    """Parse a date column: ISO and common formats, timezone-aware timestamps (made naive), ``YYYYMMDD``
    integers and plain years. Unparsable entries become NaT."""
    if pd.api.types.is_datetime64_any_dtype(raw):
        dates = pd.to_datetime(raw)
    elif pd.api.types.is_numeric_dtype(raw):
        v = pd.to_numeric(raw, errors="coerce")
        if v.dropna().between(19000101, 21001231).all():
            dates = pd.to_datetime(v.astype("Int64").astype(str), format="%Y%m%d", errors="coerce")
        elif v.dropna().between(1800, 2200).all():
            dates = pd.to_datetime(v.astype("Int64").astype(str), format="%Y", errors="coerce")
        else:
            dates = pd.Series(pd.NaT, index=raw.index)
    else:
        text = raw.astype("string").str.strip()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dates = pd.to_datetime(text, errors="coerce")
            if dates.isna().sum() > text.isna().sum():
                alt = pd.to_datetime(text, errors="coerce", format="mixed")
                dates = dates if alt.isna().sum() >= dates.isna().sum() else alt
            if dates.isna().sum() > text.isna().sum():
                utc = pd.to_datetime(text, errors="coerce", utc=True, format="mixed")
                if utc.isna().sum() < dates.isna().sum():
                    dates = utc
    if getattr(dates.dt, "tz", None) is not None:
        dates = dates.dt.tz_localize(None)  # keep local wall-clock dates
    return dates


def _prepare_frame(df: pd.DataFrame, date_col: str, value_col: str, id_col: str | None):
    df = df.reset_index(drop=True)
    dates = parse_dates(df[date_col])
    ids = df[id_col].astype(str) if id_col else pd.Series("__all__", index=df.index)
    return dates, ids


def _decide_holidays(series: dict[str, pd.Series], freq: Frequency, max_series: int = 60) -> bool:
    """Use Chinese holiday regressors only for daily data the calendar covers and only if they lower the
    in-sample BIC of the regression decomposition summed over (up to ``max_series``) series."""
    if freq.kind not in {"D", "B"}:
        return False
    total = 0.0
    used = 0
    for s in list(series.values())[:max_series]:
        if len(s) < 120 or not _covered_by_calendar(s.index):
            continue
        y = s.to_numpy(float)
        spec = _design_for(freq, len(y), True, s.index)
        spec_no = _design_for(freq, len(y), False, s.index)
        try:
            b1 = _decomp(y, s.index, s.index[-1:], spec)[1]
            b0 = _decomp(y, s.index, s.index[-1:], spec_no)[1]
        except Exception:  # noqa: BLE001,S112
            continue
        total += b1 - b0
        used += 1
    return used > 0 and total < -10.0


def _forecast_task(args) -> tuple[str, SeriesForecast]:
    key, s, horizon, freq, use_hol, ex = args
    ex_hist = ex_future = None
    if ex is not None and len(s):
        future = freq.next_dates(s.index[-1], horizon)
        ex = ex.sort_index()
        ex = ex[~ex.index.duplicated()].astype(float)
        ex_hist = ex.reindex(s.index).interpolate(limit_direction="both")
        ex_future = ex.reindex(future).interpolate(limit_direction="both")
        if ex_hist.isna().any().any() or ex_future.isna().any().any():
            ex_hist = ex_future = None
    return key, forecast_series(s, horizon, freq, use_holidays=use_hol, exog=ex_hist, exog_future=ex_future)


def forecast_frame(
    df: pd.DataFrame,
    *,
    date_col: str,
    value_col: str,
    id_col: str | None = None,
    horizon: int,
    n_jobs: int = 1,
    use_holidays: bool | None = None,
    exog: dict[str, pd.DataFrame] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Forecast every series of a long frame ``horizon`` periods past its own last date.

    ``exog`` (optional): per series id, a date-indexed frame of numeric regressors covering the history and
    the horizon (e.g. weather and its forecast); used by the regression decomposition when complete.

    Returns ``(forecasts, info)``: forecasts has ``[id,]date,forecast,lower,upper`` (series in order of first
    appearance, dates ascending); info has the inferred frequency, whether holidays were used and the count of
    models chosen. ``use_holidays=None`` decides automatically. Raises ``ValueError`` on unparsable dates.
    """
    dates, ids = _prepare_frame(df, date_col, value_col, id_col)
    bad = dates.isna() & df[date_col].notna()
    if bad.any():
        example = df.loc[bad, date_col].iloc[0]
        raise ValueError(f"column {date_col!r} has unparsable date(s), e.g. {example!r}")
    if dates.notna().sum() == 0:
        raise ValueError(f"column {date_col!r} has no dates")
    freq = infer_frequency(dates[dates.notna()], ids[dates.notna()])
    order = list(dict.fromkeys(ids.tolist()))
    values = coerce_numeric(df[value_col].reset_index(drop=True), min_share=0.0)
    if values is None:
        raise ValueError(f"column {value_col!r} has no numeric values")
    series: dict[str, pd.Series] = {}
    last_raw: dict[str, pd.Timestamp] = {}
    for key, pos in ids.groupby(ids, sort=False).indices.items():
        series[str(key)] = regularize(dates.iloc[pos], values.iloc[pos], freq)
        last_raw[str(key)] = dates.iloc[pos].max()
    if use_holidays is None:
        use_holidays = _decide_holidays(series, freq)
    exog = exog or {}
    tasks = [(k, series[k], horizon, freq, use_holidays, exog.get(k)) for k in order]
    results: dict[str, SeriesForecast] = {}
    if n_jobs > 1 and len(tasks) >= 40:
        with ProcessPoolExecutor(max_workers=n_jobs) as pool:
            for key, fc in pool.map(_forecast_task, tasks, chunksize=max(1, len(tasks) // (n_jobs * 8))):
                results[key] = fc
    else:
        for t in tasks:
            key, fc = _forecast_task(t)
            results[key] = fc
    frames = []
    chosen: dict[str, int] = {}
    for k in order:
        fc = results[k]
        if len(fc.dates) != len(fc.forecast):
            if pd.isna(last_raw.get(k)):
                continue
            zeros = np.zeros(horizon)
            fc = SeriesForecast(freq.next_dates(pd.Timestamp(last_raw[k]).normalize(), horizon), zeros, zeros,
                                zeros, "empty")
        chosen[fc.model] = chosen.get(fc.model, 0) + 1
        part = pd.DataFrame({"date": fc.dates, "forecast": fc.forecast, "lower": fc.lower, "upper": fc.upper})
        if id_col:
            part.insert(0, "id", k)
        frames.append(part)
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["date", "forecast"])
    info = {"frequency": freq.kind, "season": freq.season, "holidays": bool(use_holidays), "series": len(order),
            "models": chosen}
    return out, info


def backtest_frame(
    df: pd.DataFrame,
    *,
    date_col: str,
    value_col: str,
    id_col: str | None = None,
    horizon: int,
    n_jobs: int = 1,
    use_holidays: bool | None = None,
    exog: dict[str, pd.DataFrame] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Hold out the last ``horizon`` periods of every series, forecast them from the rest and score.

    Returns ``(per_series, summary)``: per-series WAPE, MAPE, MASE of the model and of the seasonal naive,
    interval coverage; summary aggregates (WAPE over all volume, mean MASE, coverage, accuracy = 1 - WAPE).
    """
    dates, ids = _prepare_frame(df, date_col, value_col, id_col)
    freq = infer_frequency(dates[dates.notna()], ids[dates.notna()])
    values = coerce_numeric(df[value_col].reset_index(drop=True), min_share=0.0)
    if values is None:
        raise ValueError(f"column {value_col!r} has no numeric values")
    rows = []
    train_parts, tests = [], {}
    for key, pos in ids.groupby(ids, sort=False).indices.items():
        s = regularize(dates.iloc[pos], values.iloc[pos], freq)
        if len(s) <= horizon + 3:
            continue
        tests[str(key)] = s
        train_parts.append(pd.DataFrame({"id": str(key), "date": s.index[:-horizon],
                                         "value": s.to_numpy()[:-horizon]}))
    if not train_parts:
        raise ValueError("no series is longer than the horizon")
    train = pd.concat(train_parts, ignore_index=True)
    fc, info = forecast_frame(train, date_col="date", value_col="value", id_col="id", horizon=horizon,
                              n_jobs=n_jobs, use_holidays=use_holidays, exog=exog)
    all_a, all_f, all_n = [], [], []
    for key, s in tests.items():
        part = fc[fc["id"] == key]
        a = s.to_numpy()[-horizon:]
        hist = s.to_numpy()[:-horizon]
        f = part["forecast"].to_numpy()[: len(a)]
        m = freq.season if len(hist) >= 2 * freq.season else 1
        sn = _snaive(hist, horizon, m)
        cov = float(np.mean((a >= part["lower"].to_numpy()) & (a <= part["upper"].to_numpy())))
        rows.append({"id": key, "wape": wape(a, f), "mape": mape(a, f), "mase": mase(a, f, hist, m),
                     "wape_snaive": wape(a, sn), "mase_snaive": mase(a, sn, hist, m), "coverage80": cov,
                     "volume": float(np.abs(a).sum())})
        all_a.append(a)
        all_f.append(f)
        all_n.append(sn)
    per = pd.DataFrame(rows)
    a, f, sn = np.concatenate(all_a), np.concatenate(all_f), np.concatenate(all_n)
    summary = {
        "series": len(per), "horizon": horizon, "frequency": info["frequency"], "holidays": info["holidays"],
        "wape": wape(a, f), "wape_snaive": wape(a, sn), "accuracy": 1 - wape(a, f),
        "mape": float(per["mape"].mean()), "mase": float(per["mase"].mean()),
        "mase_snaive": float(per["mase_snaive"].mean()), "coverage80": float(per["coverage80"].mean()),
        "median_series_wape": float(per["wape"].median()), "models": info["models"],
    }
    return per, summary


# --------------------------------------------------------------------------------------------- persistence
@dataclass
class DemandModel:
    """A trained demand forecaster: the settings plus the forecasts it made (so serving needs no refit)."""

    horizon: int
    frequency: str
    use_holidays: bool
    forecasts: pd.DataFrame
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(cls, df: pd.DataFrame, *, date_col: str, value_col: str, id_col: str | None = None,
            horizon: int = 30, n_jobs: int = 1, backtest: bool = True,
            exog: dict[str, pd.DataFrame] | None = None) -> DemandModel:
        """Forecast every series and (optionally) record the holdout accuracy of the same procedure."""
        fc, info = forecast_frame(df, date_col=date_col, value_col=value_col, id_col=id_col, horizon=horizon,
                                  n_jobs=n_jobs, exog=exog)
        metrics: dict[str, Any] = {}
        if backtest:
            try:
                metrics = backtest_frame(df, date_col=date_col, value_col=value_col, id_col=id_col,
                                         horizon=horizon, n_jobs=n_jobs, use_holidays=info["holidays"],
                                         exog=exog)[1]
            except ValueError:
                metrics = {}
        return cls(horizon, info["frequency"], info["holidays"], fc, metrics,
                   {"date_col": date_col, "value_col": value_col, "id_col": id_col, "models": info["models"]})

    def predict(self, series_id: str | None = None) -> pd.DataFrame:
        """The stored forecasts (one series if ``series_id`` is given)."""
        if series_id is None or "id" not in self.forecasts.columns:
            return self.forecasts.copy()
        return self.forecasts[self.forecasts["id"] == str(series_id)].reset_index(drop=True)

    def save(self, path: str | Path) -> Path:
        """Write to ``path`` (file, or directory that gets ``model.pkl``)."""
        return save_artifact(self, path)

    @classmethod
    def load(cls, path: str | Path) -> DemandModel:
        """Read a model written by :meth:`save`."""
        return load_artifact(path, cls)


# --------------------------------------------------------------------------------------------- supply
def replenishment_plan(
    forecasts: pd.DataFrame,
    tanks: pd.DataFrame,
    levels: pd.DataFrame,
    *,
    level: float = 0.8,
    fill_to: float = 0.95,
) -> pd.DataFrame:
    """A replenishment plan per tank.

    ``forecasts``: ``station_id, product, date, forecast, lower, upper`` (litres per day); ``tanks``:
    ``tank_id, station_id, product, capacity_l, lead_time_days``; ``levels``: ``tank_id, level_l`` (the latest
    measured level). Demand over the lead time is the forecast sum; safety stock is the gap between the upper
    bound and the forecast over the lead time (the 80% interval's 90th percentile). The reorder point is demand
    over the lead time plus safety stock; the order quantity tops the tank up to ``fill_to`` of capacity after
    the lead time. Several tanks of one station × product share its forecast in proportion to capacity.
    """
    f = forecasts.copy()
    f["station_id"] = f["station_id"].astype(str)
    f["product"] = f["product"].astype(str)
    f = f.sort_values("date")
    t = tanks.copy()
    t["station_id"] = t["station_id"].astype(str)
    t["product"] = t["product"].astype(str)
    share = t["capacity_l"] / t.groupby(["station_id", "product"])["capacity_l"].transform("sum")
    lv = levels.set_index(levels["tank_id"].astype(str))["level_l"]
    rows = []
    groups = dict(list(f.groupby(["station_id", "product"])))
    for (_, tank), sh in zip(t.iterrows(), share, strict=True):
        g = groups.get((tank["station_id"], tank["product"]))
        lead = max(1, int(tank.get("lead_time_days", 1) or 1))
        cap = float(tank["capacity_l"])
        cur = float(lv.get(str(tank["tank_id"]), np.nan))
        if g is None or g.empty:
            rows.append({"tank_id": tank["tank_id"], "station_id": tank["station_id"], "product": tank["product"],
                         "capacity_l": cap, "level_l": cur, "status": "no forecast"})
            continue
        fc = g["forecast"].to_numpy() * sh
        up = g["upper"].to_numpy() * sh
        d_lead = float(fc[:lead].sum())
        safety = float(max(0.0, (up[:lead] - fc[:lead]).sum()))
        rop = d_lead + safety
        daily = float(fc.mean()) if len(fc) else 0.0
        days_cover = cur / daily if daily > 0 and np.isfinite(cur) else float("inf")
        order = max(0.0, fill_to * cap - (cur - d_lead)) if np.isfinite(cur) else 0.0
        need = np.isfinite(cur) and cur <= rop
        rows.append({
            "tank_id": tank["tank_id"], "station_id": tank["station_id"], "product": tank["product"],
            "capacity_l": cap, "level_l": cur, "lead_time_days": lead, "demand_lead_time_l": round(d_lead, 1),
            "safety_stock_l": round(safety, 1), "reorder_point_l": round(rop, 1),
            "days_of_cover": round(days_cover, 1) if np.isfinite(days_cover) else None,
            "order_now": bool(need), "order_l": round(min(order, cap), 1) if need else 0.0,
            "status": "order now" if need else "ok",
        })
    return pd.DataFrame(rows)


def leak_alerts(
    readings: pd.DataFrame,
    *,
    window: int = 7,
    min_days: int = 3,
    threshold_l: float | None = None,
    rel_threshold: float = 0.01,
) -> pd.DataFrame:
    """Alerts where sales and tank readings disagree (leaks, theft, meter faults).

    ``readings``: ``date, tank_id, opening_l, sales_l, delivery_l, closing_l`` (``expected_closing_l`` optional;
    otherwise opening - sales + delivery). The daily variance is ``measured - expected``; a tank is flagged
    when the rolling ``window``-day mean loss exceeds ``threshold_l`` (default: ``rel_threshold`` of the tank's
    mean daily sales, at least 5 l) on at least ``min_days`` consecutive days. One row per alert episode:
    ``tank_id, start_date, end_date, days, mean_loss_l_per_day, total_loss_l``.
    """
    r = readings.copy()
    r["date"] = pd.to_datetime(r["date"])
    if "expected_closing_l" not in r.columns:
        r["expected_closing_l"] = r["opening_l"] - r["sales_l"] + r["delivery_l"]
    r["loss"] = r["expected_closing_l"] - r["closing_l"]
    rows = []
    for tank, g in r.sort_values("date").groupby("tank_id", sort=False):
        loss = g["loss"].to_numpy(float)
        sales = g["sales_l"].to_numpy(float)
        thr = threshold_l if threshold_l is not None else max(5.0, rel_threshold * float(np.nanmean(sales)))
        noise = float(np.nanmedian(np.abs(loss - np.nanmedian(loss)))) * 1.4826
        thr = max(thr, 3.0 * noise / math.sqrt(window))
        roll = pd.Series(loss).rolling(window, min_periods=min(window, 3)).mean().to_numpy()
        flag = np.nan_to_num(roll) > thr
        dates = g["date"].to_numpy()
        i = 0
        while i < len(flag):
            if not flag[i]:
                i += 1
                continue
            j = i
            while j + 1 < len(flag) and flag[j + 1]:
                j += 1
            if j - i + 1 >= min_days:
                start = max(0, i - window + 1)
                seg = loss[start:j + 1]
                rows.append({"tank_id": tank, "station_id": g["station_id"].iloc[0] if "station_id" in g else None,
                             "start_date": pd.Timestamp(dates[start]).date(), "end_date": pd.Timestamp(dates[j]).date(),
                             "days": int(j - start + 1), "mean_loss_l_per_day": round(float(np.mean(seg)), 1),
                             "total_loss_l": round(float(np.sum(seg)), 1)})
            i = j + 1
    return pd.DataFrame(rows, columns=["tank_id", "station_id", "start_date", "end_date", "days",
                                       "mean_loss_l_per_day", "total_loss_l"])


def train_station_demand(
    station_sales: pd.DataFrame,
    *,
    horizon: int = 30,
    value_col: str = "litres",
    n_jobs: int = 1,
    backtest: bool = True,
    weather: pd.DataFrame | None = None,
    stations: pd.DataFrame | None = None,
) -> tuple[DemandModel, pd.DataFrame]:
    """The station demand job: one daily series per station × product (``date, station_id, product, litres``),
    forecasts ``horizon`` days with 80% intervals, and the holdout accuracy of the same procedure.

    Returns ``(model, forecasts)`` where forecasts has ``station_id, product, date, forecast, lower, upper``
    (the input of :func:`replenishment_plan`) and ``model.metrics`` holds WAPE/MAPE/MASE vs seasonal naive.

    With ``weather`` (``date, region, temp_c, rain_mm``, covering the horizon: a weather forecast, or the
    actuals in a backtest) and ``stations`` (``station_id, region``), temperature above 15 °C and capped
    rainfall become regressors of the decomposition.
    """
    df = station_sales[["date", "station_id", "product", value_col]].copy()
    df["series"] = df["station_id"].astype(str) + "|" + df["product"].astype(str)
    exog = None
    if weather is not None and stations is not None and {"region", "temp_c", "rain_mm"} <= set(weather.columns):
        w = weather.copy()
        w["date"] = pd.to_datetime(w["date"])
        w["temp_above_15"] = pd.to_numeric(w["temp_c"], errors="coerce") - 15.0
        w["rain_capped"] = pd.to_numeric(w["rain_mm"], errors="coerce").clip(0, 30)
        by_region = {str(r): g.set_index("date")[["temp_above_15", "rain_capped"]] for r, g in w.groupby("region")}
        region = stations.set_index(stations["station_id"].astype(str))["region"].astype(str)
        exog = {}
        for sid in df["series"].unique():
            reg = region.get(sid.split("|", 1)[0])
            if reg in by_region:
                exog[sid] = by_region[reg]
    model = DemandModel.fit(df, date_col="date", value_col=value_col, id_col="series", horizon=horizon,
                            n_jobs=n_jobs, backtest=backtest, exog=exog)
    fc = model.forecasts.copy()
    parts = fc["id"].str.split("|", n=1, expand=True)
    fc.insert(0, "station_id", parts[0])
    fc.insert(1, "product", parts[1])
    return model, fc.drop(columns=["id"])


def synthetic_series(n_series: int = 20, *, days: int = 730, freq: str = "D", seed: int = 0,
                     start: str = "2022-01-01", noise: float = 0.08) -> pd.DataFrame:
    """Retail-like demand series for tests and demos (``item, date, sales``): level × weekday × yearly
    seasonality × Chinese-holiday uplift, multiplicative noise, a few zeros. ``freq`` "D" or "W"."""
    r = np.random.default_rng(seed)
    dates = pd.date_range(start, periods=days, freq=freq if freq != "W" else "W-SUN")
    doy = dates.dayofyear.to_numpy()
    hol = holiday_features(dates) if freq == "D" else None
    rows = []
    for i in range(n_series):
        base = r.uniform(20, 400)
        wk = 1 + r.uniform(0.05, 0.3) * np.sin(2 * np.pi * (dates.weekday.to_numpy() + r.uniform(0, 7)) / 7)
        yr = 1 + r.uniform(0.05, 0.25) * np.sin(2 * np.pi * (doy / 365.25 + r.uniform()))
        tr = 1 + r.uniform(-0.1, 0.2) * np.arange(days) / days
        mu = base * yr * tr * (wk if freq == "D" else 1.0)
        if hol is not None:
            mu = mu * (1 + 0.4 * hol["hol_spring"].to_numpy() + 0.2 * hol["hol_other"].to_numpy())
        y = mu * np.exp(r.normal(0, noise, days))
        y[r.uniform(size=days) < 0.005] = 0.0
        rows.append(pd.DataFrame({"item": f"item{i:03d}", "date": dates, "sales": np.round(y, 1)}))
    return pd.concat(rows, ignore_index=True)
