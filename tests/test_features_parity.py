"""Parity: the vectorised features (training) equal the per-event replay (the stream) on the same events."""

import numpy as np
import pandas as pd
import pytest

from fuelcard.features import (
    FEATURE_INDEX,
    FEATURE_NAMES,
    CardState,
    FeatureConfig,
    FeatureEngine,
    StationState,
    available_features,
    features_many,
    replay,
    tx_from_mapping,
    update_card,
    update_device,
    update_station,
    update_terminal,
)

# features built from float sums (prefix sums vs Python sums differ in the last bits)
FLOAT_SUMS = {"litres_vs_mean_30d", "dist_centroid_km", "dist_prev_km", "speed_kmh", "geofence_excess_km"}


def make_events(n: int = 3000, seed: int = 3, full: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t0 = 1_767_225_600.0
    ts = t0 + np.sort(rng.uniform(0, 40 * 86400, n))
    ts[100:110] = ts[100]  # ties
    cards = rng.integers(0, 60, n)
    ts[200:220] = ts[200] + np.arange(20) * 30.0  # a burst on one card
    cards[200:220] = 7
    df = pd.DataFrame({
        "tx_id": [f"t{i}" for i in range(n)], "ts": ts, "card_id": [f"c{c}" for c in cards],
        "station_id": [f"s{s}" for s in rng.integers(0, 15, n)],
        "amount_fen": np.where(rng.random(n) < 0.1, rng.integers(1, 9, n) * 10000, rng.integers(500, 90000, n)),
        "is_fraud": np.where(rng.random(n) < 0.2, np.nan, (rng.random(n) < 0.08).astype(float)),
    })
    if full:
        df["terminal_id"] = np.where(rng.random(n) < 0.05, None, [f"T{x}" for x in rng.integers(0, 30, n)])
        df["device_id"] = np.where(rng.random(n) < 0.3, None, [f"d{x}" for x in rng.integers(0, 80, n)])
        df["product"] = np.where(rng.random(n) < 0.05, None, rng.choice(["92", "95", "diesel", "shop"], n))
        df["litres"] = np.where(rng.random(n) < 0.1, np.nan, rng.uniform(1, 90, n))
        df["lat"] = np.where(rng.random(n) < 0.1, np.nan, 30 + rng.uniform(0, 2, n))
        df["lon"] = np.where(df["lat"].isna(), np.nan, 120 + rng.uniform(0, 2, n))
        df["region"] = rng.choice(["east", "west", "highway"], n)
        fleet = cards % 3 == 0
        df["card_type"] = np.where(fleet, "fleet", np.where(cards % 3 == 1, "family_sub", "personal"))
        df["tank_capacity_l"] = np.where(fleet, 60.0, np.nan)
        df["per_tx_limit_fen"] = np.where(cards % 3 != 2, 50000.0, np.nan)
        df["daily_limit_fen"] = np.where(fleet, 100000.0, np.nan)
        df["monthly_limit_fen"] = np.where(cards % 3 != 2, 900000.0, np.nan)
        df["allowed_products"] = np.where(fleet, "92|95", None)
        df["allowed_regions"] = np.where(fleet, "east|highway", None)
        df["geofence_lat"] = np.where(fleet, 31.0, np.nan)
        df["geofence_lon"] = np.where(fleet, 121.0, np.nan)
        df["geofence_radius_km"] = np.where(fleet, 50.0, np.nan)
    return df.sample(frac=1.0, random_state=1).reset_index(drop=True)  # file order != time order


def _compare(a: np.ndarray, b: np.ndarray) -> None:
    for name, i in FEATURE_INDEX.items():
        x, y = a[:, i], b[:, i]
        assert np.array_equal(np.isnan(x), np.isnan(y)), f"{name}: NaN pattern differs"
        m = ~np.isnan(x)
        if name in FLOAT_SUMS:
            np.testing.assert_allclose(x[m], y[m], rtol=1e-7, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(x[m], y[m], err_msg=name)


@pytest.mark.parametrize("full", [True, False])
def test_vectorised_equals_replay(full):
    df = make_events(full=full)
    cfg = FeatureConfig(label_delay_days=2, tz_offset_hours=8)
    _compare(features_many(df, cfg), replay(df, cfg))


def test_six_columns_drop_optional_features():
    df = make_events(full=False)
    F = features_many(df, FeatureConfig())
    avail = set(available_features(df.columns))
    for name in FEATURE_NAMES:
        if name not in avail:
            assert np.isnan(F[:, FEATURE_INDEX[name]]).all(), name
    assert "dist_prev_km" not in avail and "card_n_24h" in avail


def test_agent_functions_with_serialised_state_equal_replay():
    """What the Faust agent does (states in tables, serialised between events) gives the same vectors."""
    df = make_events(n=800, full=True)
    cfg = FeatureConfig(label_delay_days=2)
    ref = replay(df, cfg)
    tables: dict[str, dict[str, bytes]] = {"card": {}, "station": {}, "terminal": {}, "device": {}}
    records = df.to_dict("records")
    order = np.argsort(df["ts"].to_numpy(), kind="stable")
    from fuelcard.features import profile_from_row

    for i in order:
        tx = tx_from_mapping(records[i])
        raw = tables["card"].get(tx.card_id)
        cs, cf = update_card(None if raw is None else CardState.from_bytes(raw), tx, profile_from_row(records[i]), cfg)
        tables["card"][tx.card_id] = cs.to_bytes()
        raw = tables["station"].get(tx.station_id)
        ss, sf = update_station(None if raw is None else StationState.from_bytes(raw), tx, cf, cfg)
        tables["station"][tx.station_id] = ss.to_bytes()
        tkey = tx.terminal_id or ""
        raw = tables["terminal"].get(tkey)
        ts_, tf = update_terminal(None if raw is None else StationState.from_bytes(raw), tx, cf, cfg)
        if tx.terminal_id:
            tables["terminal"][tkey] = ts_.to_bytes()
        dkey = tx.device_id or ""
        raw = tables["device"].get(dkey)
        ds, dfe = update_device(None if raw is None else StationState.from_bytes(raw), tx, cfg)
        if tx.device_id:
            tables["device"][dkey] = ds.to_bytes()
        got = np.array(cf + sf + tf + dfe, dtype=float)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref[i]))
        np.testing.assert_allclose(got[~np.isnan(got)], ref[i][~np.isnan(got)], rtol=1e-12)


@pytest.mark.parametrize("labelled", [True, False])
def test_engine_equals_agent_functions_bit_for_bit(labelled):
    """FeatureEngine.process (station, terminal and device steps inlined) == the agent's update_* functions,
    bit for bit, with labels (the station path with labels) and without (the inlined station path)."""
    from fuelcard.features import profile_from_row

    df = make_events(n=1500, seed=11, full=True)
    if not labelled:
        df = df.drop(columns=["is_fraud"])
    cfg = FeatureConfig(label_delay_days=1)
    engine = FeatureEngine(cfg)
    states: dict[str, dict] = {"card": {}, "station": {}, "terminal": {}, "device": {}}
    records = df.to_dict("records")
    for i in np.argsort(df["ts"].to_numpy(), kind="stable"):
        tx = tx_from_mapping(records[i])
        profile = profile_from_row(records[i])
        got = engine.process(tx, profile)
        cs, cf = update_card(states["card"].get(tx.card_id), tx, profile, cfg)
        states["card"][tx.card_id] = cs
        ss, sf = update_station(states["station"].get(tx.station_id), tx, cf, cfg)
        states["station"][tx.station_id] = ss
        ts_, tf = update_terminal(states["terminal"].get(tx.terminal_id), tx, cf, cfg)
        if tx.terminal_id is not None:
            states["terminal"][tx.terminal_id] = ts_
        ds, dfe = update_device(states["device"].get(tx.device_id), tx, cfg)
        if tx.device_id is not None:
            states["device"][tx.device_id] = ds
        want = np.array(cf + sf + tf + dfe, dtype=float)
        assert len(got) == len(FEATURE_NAMES)
        np.testing.assert_array_equal(np.array(got, dtype=float), want)  # NaN == NaN here
    for kind, table in (("stations", "station"), ("terminals", "terminal"), ("devices", "device")):
        mine = getattr(engine, kind)
        assert mine.keys() == states[table].keys()
        assert all(mine[k].to_dict() == states[table][k].to_dict() for k in mine)


def test_engine_is_point_in_time():
    """A transaction's features do not change when later events are appended to the history."""
    df = make_events(n=1500, full=True)
    cfg = FeatureConfig(label_delay_days=2)
    F = features_many(df, cfg)
    cut = np.quantile(df["ts"], 0.6)
    early = df[df["ts"] <= cut]
    F_early = features_many(early, cfg)
    np.testing.assert_array_equal(np.isnan(F_early), np.isnan(F[early.index.to_numpy()]))
    assert np.allclose(np.nan_to_num(F_early), np.nan_to_num(F[early.index.to_numpy()]))


def test_card_state_is_compact():
    e = FeatureEngine()
    rec = make_events(n=400).to_dict("records")
    for r in rec:
        e.process(tx_from_mapping(r))
    sizes = [len(s.to_bytes()) for s in e.cards.values()]
    assert max(sizes) < 4000


def test_card_state_reads_older_layouts():
    """A state written by the version-1 layout (per-event lists) loads into the same features as the live one."""
    cfg = FeatureConfig(label_delay_days=2)
    e = FeatureEngine(cfg)
    txs = [tx_from_mapping({"tx_id": "a", "ts": 1000.0, "card_id": "c", "station_id": "s1", "amount_fen": 5000}),
           tx_from_mapping({"tx_id": "b", "ts": 5000.0, "card_id": "c", "station_id": "s2", "amount_fen": 7000,
                            "device_id": "d1", "product": "95", "litres": 40.0, "lat": 31.0, "lon": 121.0})]
    for tx in txs:
        e.process(tx)
    live = e.cards["c"]
    v1 = {"v": 1, "ts": [1000.0, 5000.0], "amt": [5000, 7000], "station": ["s1", "s2"], "device": [None, "d1"],
          "product": [None, "95"], "litres": [0.0, 40.0], "litres_known": [0, 1], "lat": [0.0, 31.0],
          "lon": [0.0, 121.0], "geo_known": [0, 1], "night": [0, 0], "n_total": 2, "first_ts": 1000.0,
          "pending_fraud": [], "known_fraud": 0}
    old = CardState.from_dict(v1)
    assert old.to_dict() == live.to_dict()
    nxt = tx_from_mapping({"tx_id": "c", "ts": 9000.0, "card_id": "c", "station_id": "s1", "amount_fen": 9000,
                           "device_id": "d2", "product": "92", "litres": 20.0, "lat": 31.5, "lon": 121.5})
    _, a = update_card(CardState.from_bytes(live.to_bytes()), nxt, None, cfg)
    _, b = update_card(old, nxt, None, cfg)
    np.testing.assert_array_equal(np.array(a), np.array(b))
