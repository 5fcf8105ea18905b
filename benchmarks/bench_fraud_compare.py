"""Our fraud backtest vs a well-tuned gradient-boosting baseline on six-column data from another generator.

Data: :mod:`benchmarks.fraudgen` (handbook-style customers/terminals, not the project's simulator), only the
six contract columns. Protocol (CONTRACTS.md): train window, label delay, test window; a label reaches a test
score only if it is at least ``delay`` days older.

Baseline: the standard features (card transaction count and mean amount over 1/7/30 days, terminal count and
fraud rate over 1/7/30 days shifted by the label delay, amount, weekend, night) computed independently here,
with LightGBM tuned by a small grid on a time-split validation (average precision). Ours: the full pipeline
behind ``fuelcard fraud backtest`` (:func:`models.fraud.train.backtest`).

Prints ``{"bench": "fraud_compare", "ours": {...}, "baseline": {...}, ...}`` with AUC ROC, AP, CP@100.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.fraudgen import START, generate
from models.fraud.metrics import auc_roc, average_precision, card_precision_at_k
from models.fraud.train import backtest, prepare_transactions

DAY = 86400.0
DELAY_DAYS = 7


def _window_stats(keys: np.ndarray, ts: np.ndarray, values: np.ndarray, window_days: float,
                  shift_days: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Per row: count and sum of ``values`` of rows with the same key and ts in (t - shift - w, t - shift]
    (the current row included when shift is 0, like the handbook's features)."""
    n = len(keys)
    cnt = np.zeros(n)
    tot = np.zeros(n)
    order = np.lexsort((ts, keys))
    k_sorted = keys[order]
    bounds = np.flatnonzero(np.r_[True, k_sorted[1:] != k_sorted[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        idx = order[a:b]
        t = ts[idx]
        v = values[idx]
        cs = np.r_[0.0, np.cumsum(v)]
        hi = np.searchsorted(t, t - shift_days * DAY, side="right")
        lo = np.searchsorted(t, t - (shift_days + window_days) * DAY, side="right")
        cnt[idx] = hi - lo
        tot[idx] = cs[hi] - cs[lo]
    return cnt, tot


def baseline_features(df: pd.DataFrame, delay_days: int) -> pd.DataFrame:
    """The standard handbook-style features."""
    ts = df["ts"].to_numpy(dtype=float)
    card = pd.factorize(df["card_id"])[0]
    term = pd.factorize(df["station_id"])[0]
    amount = df["amount_fen"].to_numpy(dtype=float) / 100.0
    y = np.nan_to_num(df["is_fraud"].to_numpy(dtype=float))
    out = {"amount": amount,
           "weekend": (((ts // DAY + 3) % 7) >= 5).astype(float),
           "night": (((ts % DAY) // 3600) < 6).astype(float)}
    for w in (1, 7, 30):
        c, s = _window_stats(card, ts, amount, w)
        out[f"card_n_{w}d"] = c
        out[f"card_mean_{w}d"] = s / np.maximum(c, 1)
        c, f = _window_stats(term, ts, y, w, shift_days=delay_days)
        out[f"term_n_{w}d"] = c
        out[f"term_risk_{w}d"] = f / np.maximum(c, 1)
    return pd.DataFrame(out)


def _fit_baseline(X: np.ndarray, y: np.ndarray, ts: np.ndarray, seed: int) -> tuple[Any, dict[str, Any]]:
    import lightgbm as lgb

    order = np.argsort(ts, kind="stable")
    cut = int(len(order) * 0.75)
    fit_i, val_i = order[:cut], order[cut:]
    best: tuple[float, dict[str, Any], int] | None = None
    for leaves in (15, 63):
        for lr in (0.05, 0.1):
            for mcs in (20, 100):
                params = {"objective": "binary", "num_leaves": leaves, "learning_rate": lr,
                          "min_child_samples": mcs, "feature_fraction": 0.9, "bagging_fraction": 0.8,
                          "bagging_freq": 1, "verbose": -1, "seed": seed, "num_threads": 1,
                          "metric": "average_precision"}
                m = lgb.train(params, lgb.Dataset(X[fit_i], y[fit_i]), num_boost_round=500,
                              valid_sets=[lgb.Dataset(X[val_i], y[val_i])],
                              callbacks=[lgb.early_stopping(50, verbose=False)])
                ap = average_precision(y[val_i], m.predict(X[val_i], num_iteration=m.best_iteration))
                if best is None or ap > best[0]:
                    best = (ap, params, int(m.best_iteration or 500))
    assert best is not None
    _, params, rounds = best
    model = lgb.train(params, lgb.Dataset(X, y), num_boost_round=int(rounds * 1.15))
    return model, {**{k: params[k] for k in ("num_leaves", "learning_rate", "min_child_samples")},
                   "rounds": int(rounds * 1.15)}


def _metrics(test: pd.DataFrame, scores: np.ndarray) -> dict[str, float]:
    y = test["is_fraud"].to_numpy(dtype=float)
    d = test.assign(score=scores)
    return {"auc_roc": round(auc_roc(y, scores), 4), "average_precision": round(average_precision(y, scores), 4),
            "cp_at_100": round(card_precision_at_k(d, 100), 4)}


def run(seconds: float | None = None, *, n_customers: int = 2500, n_terminals: int = 5000, days: int = 100,
        seed: int = 11) -> dict[str, Any]:
    """Generate, backtest ours and the baseline on the same windows, return both sets of metrics."""
    started = time.perf_counter()
    raw, scen = generate(n_customers=n_customers, n_terminals=n_terminals, days=days, seed=seed)
    d0 = START.date()
    train_start, train_end = d0 + timedelta(days=30), d0 + timedelta(days=59)
    test_start, test_end = train_end + timedelta(days=DELAY_DAYS + 1), train_end + timedelta(days=DELAY_DAYS + 7)
    t_ours = time.perf_counter()
    res = backtest(raw, train_start=train_start, train_end=train_end, test_start=test_start, test_end=test_end,
                   label_delay_days=DELAY_DAYS, seed=seed)
    t_ours = time.perf_counter() - t_ours
    test = res.test
    ours = _metrics(test, res.scores["score"].to_numpy())
    # baseline on the same rows and windows
    t_base = time.perf_counter()
    df = prepare_transactions(raw)
    feats = baseline_features(df, DELAY_DAYS)
    ts = df["ts"].to_numpy(dtype=float)

    def day0(d: date) -> float:
        return datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()

    cutoff = day0(test_start) - DELAY_DAYS * DAY
    tr = (ts >= day0(train_start)) & (ts < day0(train_end) + DAY) & (ts <= cutoff)
    te = (ts >= day0(test_start)) & (ts < day0(test_end) + DAY)
    y = df["is_fraud"].to_numpy(dtype=float)
    model, chosen = _fit_baseline(feats.to_numpy()[tr], y[tr], ts[tr], seed)
    base_scores = model.predict(feats.to_numpy()[te])
    t_base = time.perf_counter() - t_base
    base_test = df.loc[te].reset_index(drop=True)
    assert (base_test["tx_id"].to_numpy() == test["tx_id"].to_numpy()).all()
    baseline = _metrics(base_test, base_scores)
    scen_te = pd.Series(scen).astype(str).to_numpy()[te]
    flag_ours = res.scores["score"].to_numpy() >= res.model.review_threshold
    per_scen = {s: round(float(flag_ours[scen_te == s].mean()), 3) for s in sorted(set(scen_te)) if s}
    return {
        "data": {"generator": "benchmarks.fraudgen", "rows": len(raw), "columns": list(raw.columns),
                 "test_rows": int(te.sum()), "test_frauds": int(y[te].sum()),
                 "windows": f"train {train_start}..{train_end}, delay {DELAY_DAYS}d, test {test_start}..{test_end}"},
        "ours": ours, "baseline": baseline,
        "ours_beats_or_matches": {k: bool(ours[k] >= baseline[k] - 0.002) for k in ours},
        "ours_recall_at_review_by_scenario": per_scen,
        "baseline_params": chosen, "ours_features": len(res.info["features"]),
        "seconds_ours": round(t_ours, 1), "seconds_baseline": round(t_base, 1),
        "seconds_total": round(time.perf_counter() - started, 1),
    }


if __name__ == "__main__":
    import json

    print(json.dumps({"bench": "fraud_compare", **run()}))
