"""Risk scoring core on one core: features + rules + model → Decision, one event at a time.

The model is the largest one fraud training can produce: LightGBM with the parameters of
:class:`models.fraud.train.TrainParams` (the ones ``fuelcard train fraud`` / ``fraud backtest`` use) run for
``int(max_rounds * 1.15)`` rounds — the most :func:`~models.fraud.train.train_model` ever fits (early stopping
only makes it smaller) — over every feature, compiled; it is trained on a synthetic history with every
optional column. Then a stream of authorisations for 5,000 cards (30 days of history first, to fill the
per-card/station state) goes through :class:`fuelcard.scoring.Scorer`, exactly the per-event path the API
calls (the stream calls the same functions with its card state from a table). After the warm-up the state is
moved out of the garbage collector's way (``gc.freeze()``, as a long-running worker would do after loading
its state). The process is pinned to one CPU. Latency is measured per decision with ``perf_counter``;
throughput over the timed part of the stream (wall clock, and CPU time: the machine is shared, so both are
reported with the load average). The card state's serialisation (what the stream changelogs per event:
``to_dict`` + orjson, and back) is timed on the warmed states too.

What runs is what ``make setup`` builds: the compiled tree evaluator (``models/fraud/_treeval.pyx``) and the
compiled feature code (``fuelcard/features.py`` compiled by Cython as ``fuelcard._features_c``). The output
says which: ``tree_evaluator`` and ``feature_code`` are ``compiled`` or ``pure`` (the pure-Python fallback
when the extensions are not built or are stale; the log says why).

Prints ``{"bench": "score_core", "decisions_per_s": R, "p99_ms": L, ...}``.
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any

import numpy as np
import pandas as pd

from fuelcard.features import FEATURE_NAMES, FEATURES_IMPL, CardProfile, FeatureConfig, Tx, features_many
from fuelcard.rules import load_rules
from fuelcard.scoring import Scorer

T0 = 1_767_225_600.0  # 2026-01-01 UTC


def synthetic_stream(n: int, n_cards: int = 5000, n_stations: int = 200, days: int = 35,
                     seed: int = 5) -> pd.DataFrame:
    """Authorisations with every optional column (and some fraud-looking ones)."""
    rng = np.random.default_rng(seed)
    card = rng.integers(0, n_cards, n)
    home = rng.integers(0, n_stations, n_cards)
    st = np.where(rng.random(n) < 0.8, home[card], rng.integers(0, n_stations, n))
    slat = 30 + rng.random(n_stations) * 2
    slon = 120 + rng.random(n_stations) * 2
    litres = np.round(rng.uniform(10, 60, n), 2)
    amount = np.round(litres * 780).astype(np.int64)
    fraud = rng.random(n) < 0.01
    amount = np.where(fraud, amount * 3, amount)
    return pd.DataFrame({
        "tx_id": [f"t{i}" for i in range(n)], "ts": T0 + np.sort(rng.uniform(0, days * 86400, n)),
        "card_id": [f"c{c}" for c in card], "station_id": [f"S{s:04d}" for s in st],
        "terminal_id": [f"S{s:04d}-T{t}" for s, t in zip(st, rng.integers(0, 8, n), strict=True)],
        "device_id": [f"d{c}" if r > 0.05 else f"dx{r}" for c, r in zip(card, rng.random(n), strict=True)],
        "product": rng.choice(["92", "95", "diesel", "shop"], n, p=[0.45, 0.3, 0.15, 0.1]),
        "litres": litres, "amount_fen": amount, "lat": slat[st], "lon": slon[st],
        "region": rng.choice(["Shanghai", "Jiangsu", "Zhejiang"], n),
        "is_fraud": fraud.astype(float),
    })


def production_sized_model(history: pd.DataFrame, rounds: int | None = None) -> Any:
    """The largest compiled model fraud training can produce (its parameters and round cap), every feature."""
    import lightgbm as lgb

    from models.fraud.compiled import MISSING, trees_from_lightgbm
    from models.fraud.model import FraudModel
    from models.fraud.train import TrainParams, threshold_for_fpr

    params = TrainParams()
    if rounds is None:  # train_model refits for int(best_iteration * 1.15) rounds, best <= max_rounds
        rounds = int(params.max_rounds * 1.15)
    F = features_many(history, FeatureConfig())
    names = [n for i, n in enumerate(FEATURE_NAMES) if not np.isnan(F[:, i]).all()]
    cols = [FEATURE_NAMES.index(n) for n in names]
    X = np.where(np.isnan(F[:, cols]), MISSING, F[:, cols])
    y = history["is_fraud"].to_numpy()
    booster = lgb.train(params.lgb(), lgb.Dataset(X, y), num_boost_round=rounds)
    raw = booster.predict(X, raw_score=True)
    p = 1.0 / (1.0 + np.exp(-raw))
    review = threshold_for_fpr(p[y == 0], 0.003)
    decline = max(review, threshold_for_fpr(p[y == 0], 0.0003))
    return FraudModel("bench-model", names, trees_from_lightgbm(booster), 1.0, 0.0, review, decline)


def _depth(tree: Any, node: int = 0) -> int:
    if node < 0:
        return 0
    return 1 + max(_depth(tree, tree.left[node]), _depth(tree, tree.right[node]))


def state_serialisation(cards: dict[str, Any], limit: int = 5000) -> dict[str, Any]:
    """µs per card state for ``to_dict`` + orjson (what the stream changelogs per event) and back."""
    import orjson

    from fuelcard.features import CardState

    states = list(cards.values())[:limit]
    clock = time.process_time
    c0 = clock()
    blobs = [orjson.dumps(s.to_dict()) for s in states]
    c1 = clock()
    back = [CardState.from_dict(orjson.loads(b)) for b in blobs]
    c2 = clock()
    assert all(b.to_dict() == s.to_dict() for b, s in zip(back, states, strict=True))
    n = max(len(states), 1)
    return {"card_state_dump_us": round((c1 - c0) / n * 1e6, 2), "card_state_load_us": round((c2 - c1) / n * 1e6, 2),
            "card_state_bytes_mean": round(sum(map(len, blobs)) / n),
            "card_state_events_mean": round(sum(len(s.ts) for s in states) / n, 1)}


def run(seconds: float | None = None) -> dict[str, Any]:
    """Train a model, replay warm-up history, then time decisions one by one."""
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        except OSError:
            pass
    n_timed = 60_000 if seconds is None else max(5_000, int(seconds * 10_000))
    n_warm = 90_000
    df = synthetic_stream(n_warm + n_timed)
    model = production_sized_model(df.iloc[:30_000])
    scorer = Scorer(load_rules(), model, FeatureConfig())
    profile = CardProfile(card_type="personal", tank_capacity_l=60.0)
    txs = [Tx(r.tx_id, r.ts, r.card_id, r.station_id, int(r.amount_fen), r.terminal_id, r.device_id, r.product,
              r.litres, r.lat, r.lon, r.region, None) for r in df.itertuples(index=False)]
    decide = scorer.decide
    for tx in txs[:n_warm]:
        decide(tx, profile)
    gc.collect()
    gc.freeze()  # the warmed state and the input events are long-lived: keep them out of every collection
    lat = np.empty(n_timed)
    clock = time.perf_counter
    decided: list[Any] = []
    keep = decided.append  # the outcomes are counted after the timed loop (Enum.value and hash are Python code)
    cpu0 = time.process_time()
    start = clock()
    for i, tx in enumerate(txs[n_warm:]):
        t0 = clock()
        d = decide(tx, profile)
        lat[i] = clock() - t0
        keep(d.outcome)
    elapsed = clock() - start
    cpu = time.process_time() - cpu0
    gc.unfreeze()
    outcomes: dict[str, int] = {}
    for o in decided:
        outcomes[o.value] = outcomes.get(o.value, 0) + 1
    leaves = sum(len(t.leaf_value) for t in model.trees)
    return {
        "decisions_per_s": round(n_timed / elapsed),
        "cpu_decisions_per_s": round(n_timed / cpu) if cpu > 0 else None,
        "cpu_us_per_decision": round(cpu / n_timed * 1e6, 2),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 4),
        "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 4),
        "mean_us": round(float(lat.mean()) * 1e6, 1),
        "decisions": n_timed, "model_trees": len(model.trees), "model_leaves": leaves,
        "model_max_depth": max(_depth(t) for t in model.trees),
        "model_features": len(model.features),
        "model_features_used": len({f for t in model.trees for f in t.feature}),
        "tree_evaluator": model.evaluator, "feature_code": FEATURES_IMPL,
        "rules": len(scorer.rules.rules), "outcomes": outcomes, "cpus_used": 1,
        **state_serialisation(scorer.engine.cards),
    }


if __name__ == "__main__":
    import json

    print(json.dumps({"bench": "score_core", **run()}))
