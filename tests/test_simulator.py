"""The network simulator: contract of docs/DATA.md, determinism, fraud scenarios and statistical sanity."""

import re
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from fuelcard import sim_calendar
from fuelcard.privacy import tokenize_pan
from fuelcard.simulator import FILES, SCENARIOS, TRUTH_FILE, SimConfig, read, simulate, write
from fuelcard.simulator.geo import haversine_km
from fuelcard.simulator.people import CARD_KEY, card_tokens

ROOT = Path(__file__).resolve().parents[1]
# Late September 2026: Mid-Autumn (25-27 Sep) and National Day (1-7 Oct) holidays inside the window.
CONFIG = SimConfig(seed=11, days=28, stations=40, members=3000, start=date(2026, 9, 24))
FUELS = ["92", "95", "98", "diesel"]


@pytest.fixture(scope="module")
def sim():
    return simulate(CONFIG)


@pytest.fixture(scope="module")
def written(sim, tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "net"
    write(sim, out)
    return out


@pytest.fixture(scope="module")
def genuine_fuel(sim):
    tx = sim["transactions.parquet"]
    g = tx[(tx.is_fraud == 0) & tx["product"].isin(FUELS)].copy()
    g["local"] = sim_calendar.local_time(g["ts"])
    return g


def _data_md_columns() -> dict[str, tuple[list[str], list[str]]]:
    """{file: (documented columns in order, extra columns)} parsed from the table in docs/DATA.md."""
    text = (ROOT / "docs" / "DATA.md").read_text()
    out = {}
    for m in re.finditer(r"^\| `([^`]+\.parquet)` \|[^|]*\| (.+?) \|\s*$", text, flags=re.M):
        cell = m.group(2)
        main = re.search(r"`([^`]*)`", cell).group(1)
        extra = re.search(r"extra: `([^`]*)`", cell)
        split = lambda x: [c.strip() for c in re.sub(r"\([^)]*\)", "", x).split(",") if c.strip()]  # noqa: E731
        out[m.group(1)] = (split(main), split(extra.group(1)) if extra else [])
    return out


# ------------------------------------------------------------------ contract


def test_every_file_and_column_of_data_md_is_written(written):
    documented = _data_md_columns()
    assert len(documented) >= 20
    for name, (cols, extra) in documented.items():
        assert (written / name).exists(), name
        have = pq.read_schema(written / name).names
        missing = [c for c in cols + extra if c not in have]
        assert not missing, f"{name} lacks {missing}"
        assert list(FILES[name][: len(cols)]) == cols, f"{name}: documented columns come first, in order"
    assert (written / TRUTH_FILE).exists()


def test_timestamps_are_utc_microseconds_and_round_trip(written, sim):
    schema = pq.read_schema(written / "transactions.parquet")
    for col in ("ts", "capture_ts"):
        t = schema.field(col).type
        assert str(t) == "timestamp[us, tz=UTC]", (col, t)
    back = read(written)
    pd.testing.assert_frame_equal(back["stations.parquet"], sim["stations.parquet"], check_dtype=False)
    assert len(back["transactions.parquet"]) == len(sim["transactions.parquet"])
    assert back[TRUTH_FILE]["seed"] == CONFIG.seed


def test_ids_unique_and_references_resolve(sim):
    tx, cards, members = sim["transactions.parquet"], sim["cards.parquet"], sim["members.parquet"]
    assert tx["tx_id"].is_unique and cards["card_id"].is_unique and members["member_id"].is_unique
    assert tx["card_id"].isin(cards["card_id"]).all()
    assert tx["station_id"].isin(sim["stations.parquet"]["station_id"]).all()
    assert cards["member_id"].isin(members["member_id"]).all()
    assert sim["tanks.parquet"]["station_id"].isin(sim["stations.parquet"]["station_id"]).all()
    assert tx["ts"].is_monotonic_increasing
    assert set(tx["status"]) == {"captured", "cancelled", "timeout", "refunded"}
    assert set(tx["product"]) == set(FUELS) | {"shop", "wash"}
    assert (tx["amount"] * 100).round().astype(int).equals(tx["amount_fen"])
    assert set(cards["card_type"]) == {"personal", "family_main", "family_sub", "fleet"}
    sub = cards[cards.card_type == "family_sub"]
    assert sub["main_card_id"].isin(cards.loc[cards.card_type == "family_main", "card_id"]).all()
    assert card_tokens(["6214830000000042"])[0] == tokenize_pan("6214830000000042", key=CARD_KEY)


def test_synthetic_pii_formats(sim):
    m = sim["members.parquet"]
    assert m["phone"].str.fullmatch(r"1[3-9]\d{9}").all()
    ids = m["id_number"]
    assert ids.str.fullmatch(r"\d{17}[\dX]").all()
    w = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    for s in ids.head(50):
        assert "10X98765432"[sum(int(c) * k for c, k in zip(s[:17], w, strict=True)) % 11] == s[17]


def test_deterministic_by_seed(sim):
    again = simulate(CONFIG)
    for name in FILES:
        pd.testing.assert_frame_equal(sim[name], again[name], obj=name)
    assert again[TRUTH_FILE] == sim[TRUTH_FILE]
    other = simulate(SimConfig(seed=12, days=CONFIG.days, stations=CONFIG.stations, members=CONFIG.members,
                               start=CONFIG.start))
    assert not other["transactions.parquet"]["amount_fen"].equals(sim["transactions.parquet"]["amount_fen"])
    assert not other["stations.parquet"]["lat"].equals(sim["stations.parquet"]["lat"])


# ------------------------------------------------------------------ fraud


def test_every_scenario_present_at_roughly_its_rate(sim):
    tx = sim["transactions.parquet"]
    truth = sim[TRUTH_FILE]["fraud"]
    counts = tx.loc[tx.is_fraud == 1, "scenario"].value_counts()
    assert set(counts.index) == set(SCENARIOS)
    assert (tx["scenario"] == "").eq(tx["is_fraud"] == 0).all()
    for s in SCENARIOS:
        rate = counts[s] / len(tx)
        # small simulations carry a floor of 3 incidents per scenario, hence the wide upper bound
        assert 0.4 * CONFIG.fraud_rates[s] <= rate <= 6 * CONFIG.fraud_rates[s], (s, rate)
        assert truth["transactions"][s] == counts[s]
    assert 0.001 <= counts.sum() / len(tx) <= 0.012
    gt = sim["ground_truth/fraud.parquet"]
    assert set(gt["tx_id"]) == set(tx.loc[tx.is_fraud == 1, "tx_id"])


def test_fraud_scenarios_have_their_signature_and_genuine_rows_do_not(sim):
    tx, cards, veh, fleets = (sim["transactions.parquet"], sim["cards.parquet"], sim["vehicles.parquet"],
                              sim["fleets.parquet"])
    tx = tx.merge(cards[["card_id", "vehicle_id", "fleet_id"]], on="card_id", how="left")
    tx = tx.merge(veh[["vehicle_id", "tank_capacity_l"]], on="vehicle_id", how="left")
    fuel = tx[tx["product"].isin(FUELS)]
    over = fuel.litres > fuel.tank_capacity_l
    assert over[fuel.scenario == "over_capacity"].all()
    assert not over[fuel.is_fraud == 0].any()

    fl = fuel[fuel.fleet_id.notna()].merge(fleets[["fleet_id", "home_lat", "home_lon", "geofence_radius_km",
                                                   "allowed_products"]], on="fleet_id")
    dist = haversine_km(fl.lat.to_numpy(), fl.lon.to_numpy(), fl.home_lat.to_numpy(), fl.home_lon.to_numpy())
    outside = dist > fl.geofence_radius_km.to_numpy()
    assert outside[(fl.scenario == "fleet_geofence").to_numpy()].all()
    assert not outside[(fl.is_fraud == 0).to_numpy()].any()
    genuine_fleet = tx[(tx.is_fraud == 0) & tx.fleet_id.notna()].merge(fleets[["fleet_id", "per_tx_limit_fen"]])
    assert (genuine_fleet.amount_fen <= genuine_fleet.per_tx_limit_fen).all()
    allowed = np.array([p in a.split(",") for p, a in zip(fl["product"], fl["allowed_products"], strict=True)])
    assert not allowed[(fl.scenario == "fleet_product").to_numpy()].any()
    assert allowed[(fl.is_fraud == 0).to_numpy()].all()

    hour = sim_calendar.local_time(tx["ts"]).dt.hour
    assert hour[tx.scenario == "night_anomaly"].between(1, 4).all()
    night_genuine = tx[(tx.is_fraud == 0) & hour.between(1, 4)]
    assert len(night_genuine) > 0, "genuine customers sometimes fill at night too"

    testing = tx[tx.scenario == "card_testing"]
    assert (testing.amount_fen <= 1500).all()

    ring = tx[tx.scenario == "compromised_station"]
    per_terminal = ring.groupby("terminal_id").card_id.nunique()
    assert per_terminal.max() >= 8

    # cloned card: every cloned card has a clone fill implying impossible travel from a non-clone fill
    cloned = tx[tx.scenario == "cloned_card"]
    for card_id in cloned.card_id.unique()[:10]:
        rows = tx[tx.card_id == card_id]
        c, o = rows[rows.scenario == "cloned_card"], rows[rows.scenario != "cloned_card"]
        ct, ot = c.ts.dt.tz_convert(None).to_numpy(), o.ts.dt.tz_convert(None).to_numpy()
        dt_h = np.abs((ct[:, None] - ot[None, :]) / np.timedelta64(1, "h"))
        km = haversine_km(c.lat.to_numpy()[:, None], c.lon.to_numpy()[:, None], o.lat.to_numpy()[None, :],
                          o.lon.to_numpy()[None, :])
        assert (km / np.maximum(dt_h, 1e-6)).max() > 200, card_id


# ------------------------------------------------------------------ statistics


def test_daily_cycle_peaks_in_daytime_local_hours(genuine_fuel):
    share = genuine_fuel["local"].dt.hour.value_counts(normalize=True).sort_index()
    assert 7 <= share.idxmax() <= 19
    assert share.loc[7:19].sum() > 0.7
    assert share.loc[1:4].sum() < 0.04


def test_holiday_effect_visible(sim):
    ss = sim["station_sales.parquet"].merge(sim["stations.parquet"][["station_id", "station_type"]])
    ss = ss.merge(sim["calendar.parquet"][["date", "is_holiday"]])
    mean = ss.groupby(["station_type", "is_holiday"]).litres.mean().unstack()
    assert sim["calendar.parquet"]["is_holiday"].sum() >= 5
    assert mean.loc["highway", True] > 1.15 * mean.loc["highway", False]
    assert mean.loc["urban", True] < 0.95 * mean.loc["urban", False]


def test_volume_falls_when_own_price_rises_against_competitors(sim):
    ss = sim["station_sales.parquet"].merge(sim["prices.parquet"], on=["date", "station_id", "product"])
    ss = ss.merge(sim["stations.parquet"][["station_id", "station_type", "competitors_3km"]])
    ss["ly"] = np.log(ss.litres - ss.card_litres)
    ss["lp"] = np.log(ss.price_fen)
    g = ss.groupby(["station_id", "product"])
    ss["ly"] -= g.ly.transform("mean")
    ss["lp"] -= g.lp.transform("mean")
    ss["ly"] -= ss.groupby(["date", "station_type"]).ly.transform("mean")
    ss["lp"] -= ss.groupby(["date", "product"]).lp.transform("mean")
    dense = ss[ss.competitors_3km >= 3]
    mono = ss[ss.competitors_3km == 0]
    b_dense = np.polyfit(dense.lp, dense.ly, 1)[0]
    b_mono = np.polyfit(mono.lp, mono.ly, 1)[0] if len(mono) > 50 else 0.0
    assert b_dense < -1.0
    assert b_dense < b_mono
    truth = sim[TRUTH_FILE]["price_response"]
    true_dense = np.mean([truth["total_own_price_elasticity"][s] for s in dense.station_id.unique()])
    assert abs(b_dense - true_dense) < 0.6


def test_churned_members_stop_transacting(sim, genuine_fuel):
    m = sim["members.parquet"]
    churned = m[m.churned]
    assert 0.03 < len(churned) / len(m) < 0.5
    last = genuine_fuel.groupby("member_id")["local"].max().dt.date
    joined = churned.set_index("member_id").join(last.rename("last"), how="inner")
    assert len(joined) > 20
    assert (joined["last"] <= joined["churn_date"]).all()
    assert m.loc[~m.churned, "churn_date"].isna().all()


def test_sales_include_walk_in_and_match_card_fills(sim, genuine_fuel):
    ss = sim["station_sales.parquet"]
    assert (ss.litres >= ss.card_litres).all()
    assert 0.02 < ss.card_litres.sum() / ss.litres.sum() < 0.3
    tx = sim["transactions.parquet"]
    disp = tx[tx["product"].isin(FUELS) & tx.status.isin(["captured", "refunded"])]
    assert abs(disp.litres.sum() - ss.card_litres.sum()) < 1.0 + 1e-6 * ss.card_litres.sum()
    hourly = sim["station_hourly.parquet"]
    assert abs(hourly.litres.sum() / ss.litres.sum() - 1) < 1e-3


def test_tank_readings_disagree_with_sales_during_leaks(sim):
    tr, leaks = sim["tank_readings.parquet"], sim["ground_truth/leaks.parquet"]
    assert len(leaks) >= 1
    tr = tr.assign(diff=tr.closing_l - tr.expected_closing_l).merge(leaks, on=["tank_id", "station_id"], how="left")
    inside = tr.start_date.notna() & (tr.date >= tr.start_date) & (tr.date <= tr.end_date)
    assert tr.loc[inside, "diff"].mean() < -0.5 * leaks.litres_per_day.mean()
    assert abs(tr.loc[~inside, "diff"].mean()) < 20
    assert (tr.closing_l >= 0).all() and (tr.delivery_l > 0).any()


def test_config_validation():
    with pytest.raises(ValueError):
        SimConfig(days=0)
    with pytest.raises(ValueError):
        SimConfig(fraud_rates={"nope": 0.1})


def test_calendar_helpers_cover_fallback_years():
    assert sim_calendar.holiday_name(date(2026, 10, 2)) == "National Day"
    assert sim_calendar.is_workday(date(2026, 10, 10))  # makeup working Saturday
    assert sim_calendar.holiday_name(date(2030, 2, 4)) == "Spring Festival"  # fallback table
    assert not sim_calendar.is_holiday(date(2030, 2, 20))
    cal = sim_calendar.calendar_frame(date(2026, 12, 30), 5)  # crosses into a fallback year
    assert cal["is_holiday"].tolist() == [False, False, True, False, False]
    ts = pd.Series(pd.to_datetime(["2026-01-01T23:30:00Z"]))
    assert sim_calendar.local_time(ts).dt.hour.iloc[0] == 7


def test_transactions_validate_as_typed_events(sim):
    from fuelcard import events as ev

    tx = sim["transactions.parquet"]
    sample = pd.concat([tx.sample(300, random_state=0), tx[tx.is_fraud == 1]])
    for r in sample.itertuples(index=False):
        ev.Authorisation(tx_id=r.tx_id, ts=r.ts.to_pydatetime(), card_id=r.card_id, station_id=r.station_id,
                         product=r.product, amount_fen=int(r.amount_fen), litres=float(r.litres) or None,
                         terminal_id=r.terminal_id, device_id=r.device_id, lat=r.lat, lon=r.lon, region=r.region)
        if r.status in ("captured", "refunded"):
            assert r.capture_ts >= r.ts
            ev.Capture(tx_id=r.tx_id, ts=r.capture_ts.to_pydatetime(), card_id=r.card_id, station_id=r.station_id,
                       product=r.product, amount_fen=int(r.amount_fen), litres=float(r.litres), member_id=r.member_id)
        else:
            assert pd.isna(r.capture_ts) and r.litres == 0
