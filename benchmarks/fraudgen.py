"""A second, independent transaction generator (not the project's simulator), in the spirit of the
"fraud detection handbook" simulator: customers and terminals on a 100 x 100 map, each customer uses the
terminals within a radius, with its own mean amount and daily frequency.

Fraud (labels), chosen to differ from the project's scenarios:
1. big amounts: any transaction above 220 is fraud;
2. compromised terminals: every day a few terminals are compromised, every transaction there in the next 28
   days is fraud (needs terminal history with the label delay);
3. compromised customers: every day a few customers have their credentials stolen; for 14 days a third of
   their transactions are fraudulent with 5x their usual amount (needs card history);
4. card testing: every few days a stolen card is tested with a burst of tiny amounts at random terminals.

Output has only the six contract columns (``tx_id, ts, card_id, station_id, amount, is_fraud``), with epoch
seconds for ``ts`` and integer ids, plus the scenario returned separately. Pure numpy; deterministic by seed.

>>> df, scen = generate(n_customers=50, n_terminals=100, days=10, seed=1)
>>> list(df.columns)
['tx_id', 'ts', 'card_id', 'station_id', 'amount', 'is_fraud']
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

START = datetime(2025, 4, 1, tzinfo=UTC)


def _index(keys: np.ndarray, n: int) -> list[np.ndarray]:
    order = np.argsort(keys, kind="stable")
    bounds = np.searchsorted(keys[order], np.arange(n + 1))
    return [order[bounds[i]:bounds[i + 1]] for i in range(n)]


def generate(
    n_customers: int = 2500,
    n_terminals: int = 5000,
    days: int = 100,
    seed: int = 11,
    radius: float = 5.0,
    compromised_terminals_per_day: int = 2,
    compromised_customers_per_day: int = 3,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Generate ``(transactions, scenario)``; scenario is '' for genuine rows."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    cxy = rng.uniform(0, 100, (n_customers, 2))
    mean_amt = rng.uniform(5, 100, n_customers)
    std_amt = mean_amt / 2
    per_day = rng.uniform(0, 4, n_customers)
    txy = rng.uniform(0, 100, (n_terminals, 2))
    near = cKDTree(txy).query_ball_point(cxy, r=radius)
    cust, ts, term, amount = [], [], [], []
    t0 = START.timestamp()
    for c in range(n_customers):
        avail = np.asarray(near[c], dtype=np.int64)
        if len(avail) == 0:
            continue
        counts = rng.poisson(per_day[c], days)
        k = int(counts.sum())
        if k == 0:
            continue
        day = np.repeat(np.arange(days), counts)
        secs = rng.normal(43200, 20000, k)
        keep = (secs > 0) & (secs < 86400)
        day, secs = day[keep], secs[keep]
        k = len(day)
        a = rng.normal(mean_amt[c], std_amt[c], k)
        neg = a < 0
        a[neg] = rng.uniform(0, 2 * mean_amt[c], int(neg.sum()))
        cust.append(np.full(k, c))
        ts.append(t0 + day * 86400.0 + np.floor(secs))
        term.append(avail[rng.integers(0, len(avail), k)])
        amount.append(np.round(a, 2))
    cust_a = np.concatenate(cust)
    ts_a = np.concatenate(ts)
    term_a = np.concatenate(term)
    amt_a = np.concatenate(amount)
    scen = np.full(len(cust_a), "", dtype=object)
    day_a = ((ts_a - t0) // 86400).astype(np.int64)
    # 1. big amounts
    scen[amt_a > 220] = "big_amount"
    by_term = _index(term_a, n_terminals)
    by_cust = _index(cust_a, n_customers)
    # 2. compromised terminals (28 days)
    for d in range(days):
        for tm in rng.choice(n_terminals, compromised_terminals_per_day, replace=False):
            rows = by_term[tm]
            hit = rows[(day_a[rows] >= d) & (day_a[rows] < d + 28) & (scen[rows] == "")]
            scen[hit] = "compromised_terminal"
    # 3. compromised customers (14 days, a third of their transactions, 5x amount)
    for d in range(days):
        for c in rng.choice(n_customers, compromised_customers_per_day, replace=False):
            rows = by_cust[c]
            idx = rows[(day_a[rows] >= d) & (day_a[rows] < d + 14) & (scen[rows] == "")]
            if len(idx) == 0:
                continue
            pick = rng.choice(idx, max(1, len(idx) // 3), replace=False)
            amt_a[pick] = np.round(amt_a[pick] * 5, 2)
            scen[pick] = "compromised_customer"
    # 4. card testing bursts: new rows
    extra_c, extra_t, extra_term, extra_a = [], [], [], []
    for d in range(0, days, 3):
        c = int(rng.integers(0, n_customers))
        k = int(rng.integers(5, 11))
        start = t0 + d * 86400.0 + float(rng.integers(0, 86400 - 1800))
        extra_c.append(np.full(k, c))
        extra_t.append(start + np.sort(rng.integers(0, 1800, k)).astype(float))
        extra_term.append(rng.integers(0, n_terminals, k))
        extra_a.append(np.round(rng.uniform(0.5, 2.0, k), 2))
    if extra_c:
        n_extra = sum(len(x) for x in extra_c)
        cust_a = np.concatenate([cust_a, *extra_c])
        ts_a = np.concatenate([ts_a, *extra_t])
        term_a = np.concatenate([term_a, *extra_term])
        amt_a = np.concatenate([amt_a, *extra_a])
        scen = np.concatenate([scen, np.full(n_extra, "card_testing", dtype=object)])
    order = np.argsort(ts_a, kind="stable")
    df = pd.DataFrame({
        "tx_id": np.arange(len(order)) + 1,
        "ts": ts_a[order].astype(np.int64),
        "card_id": cust_a[order],
        "station_id": term_a[order],
        "amount": amt_a[order],
        "is_fraud": (scen[order] != "").astype(np.int64),
    })
    return df, scen[order]
