"""Fraud metrics: AUC ROC, average precision, card precision@k (PLATFORM.md), FPR/recall at thresholds,
recall per scenario and the share of fraudulent amount caught."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def auc_roc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve (NaN when only one class)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan")


def average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Average precision (area under the PR curve, step-wise)."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(y)
    return float(average_precision_score(y, s)) if y.sum() > 0 else float("nan")


def card_precision_at_k(df: pd.DataFrame, k: int = 100, known_compromised: set[str] | None = None,
                        tz_offset_hours: float = 0.0) -> float:
    """CP@k: per test day, drop cards already known compromised, rank the remaining cards by their highest
    score that day, take the k best, measure the share really compromised (a fraud that day); cards detected
    (true positives in the top k) on earlier days are dropped from later days; average over the days.

    ``df`` needs ``ts`` (epoch seconds), ``card_id``, ``score``, ``is_fraud``.
    """
    d = df[["ts", "card_id", "score", "is_fraud"]].copy()
    d["day"] = np.floor((d["ts"].to_numpy(dtype=float) + tz_offset_hours * 3600.0) / 86400.0)
    d["is_fraud"] = d["is_fraud"].fillna(0.0)
    known = set(known_compromised or ())
    per_day = []
    for _, day in d.groupby("day", sort=True):
        cards = day.groupby("card_id").agg(score=("score", "max"), fraud=("is_fraud", "max"))
        cards = cards[~cards.index.isin(known)]
        if cards.empty:
            continue
        top = cards.sort_values("score", ascending=False, kind="stable").head(k)
        per_day.append(float(top["fraud"].sum()) / k)
        known |= set(top.index[top["fraud"] > 0])
    return float(np.mean(per_day)) if per_day else float("nan")


def rates_at(y: np.ndarray, s: np.ndarray, threshold: float, amount: np.ndarray | None = None) -> dict[str, float]:
    """False-positive rate, recall and (with amounts) share of fraudulent amount caught at ``score >= thr``."""
    y = np.asarray(y, dtype=float)
    flag = np.asarray(s) >= threshold
    neg = y == 0
    pos = y == 1
    out = {"threshold": float(threshold),
           "fpr": float(flag[neg].mean()) if neg.any() else float("nan"),
           "recall": float(flag[pos].mean()) if pos.any() else float("nan"),
           "flagged": int(flag.sum())}
    if amount is not None and pos.any():
        a = np.asarray(amount, dtype=float)
        out["amount_recall"] = float(a[pos & flag].sum() / max(a[pos].sum(), 1e-12))
    return out


def summarize(test: pd.DataFrame, scores: np.ndarray, *, review_threshold: float, decline_threshold: float,
              k: int = 100) -> dict[str, Any]:
    """Every headline metric for a scored test window (rows with unknown labels are left out)."""
    y = test["is_fraud"].to_numpy(dtype=float)
    m = ~np.isnan(y)
    ym, sm = y[m], np.asarray(scores)[m]
    amount = test["amount_fen"].to_numpy(dtype=float)[m] if "amount_fen" in test.columns else None
    d = test.assign(score=scores)
    out: dict[str, Any] = {
        "rows": int(len(test)), "labelled": int(m.sum()), "frauds": int(ym.sum()),
        "auc_roc": auc_roc(ym, sm), "average_precision": average_precision(ym, sm),
        "cp_at_100": card_precision_at_k(d, k),
        "review": rates_at(ym, sm, review_threshold, amount),
        "decline": rates_at(ym, sm, decline_threshold, amount),
    }
    if "scenario" in test.columns:
        sc = test["scenario"].fillna("").astype(str).to_numpy()[m]
        flag = sm >= review_threshold
        out["recall_by_scenario"] = {
            name: {"frauds": int(((sc == name) & (ym == 1)).sum()),
                   "recall": float(flag[(sc == name) & (ym == 1)].mean())}
            for name in sorted(set(sc[ym == 1])) if name
        }
    return out
