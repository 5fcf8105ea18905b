"""Expert rules: every family fires on a crafted case, region overrides, reload without restart."""

import math
import os
import shutil
import time

import pytest

from fuelcard.features import FEATURE_INDEX, FEATURE_NAMES, CardProfile, FeatureConfig, FeatureEngine, Tx
from fuelcard.rules import (
    DEFAULT_RULES_PATH,
    RULE_FAMILIES,
    ReloadingRuleSet,
    RuleError,
    RuleSet,
    load_rules,
)

NAN = math.nan
T0 = 1_767_225_600.0 + 3 * 3600  # 11:00 local (UTC+8)


def vec(**values: float) -> list[float]:
    x = [NAN] * len(FEATURE_NAMES)
    for k, v in values.items():
        x[FEATURE_INDEX[k]] = v
    return x


def ids(rules: RuleSet, x: list[float], region: str | None = None) -> set[str]:
    return {h.rule_id for h in rules.evaluate(x, region)}


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return load_rules()


def test_default_rules_cover_every_family(rules):
    assert rules.families() == set(RULE_FAMILIES)
    assert rules.version
    for r in rules.rules:
        assert r.rule_id and r.reason and r.severity in ("info", "review", "decline")


def _run(events: list[Tx], profile: CardProfile | None = None) -> list[float]:
    engine = FeatureEngine(FeatureConfig(label_delay_days=7, tz_offset_hours=8))
    x: list[float] = []
    for tx in events:
        x = engine.process(tx, profile)
    return x


def test_daily_cumulative_limit(rules):
    ev = [Tx(f"t{i}", T0 + i * 3600, "c", "s1", 150_000, product="95") for i in range(3)]
    assert "DAILY_SPEND_HIGH" in ids(rules, _run(ev))


def test_min_interval_between_fills(rules):
    ev = [Tx("a", T0, "c", "s1", 20_000, product="95"), Tx("b", T0 + 120, "c", "s1", 20_000, product="95")]
    assert "MIN_INTERVAL_FUEL" in ids(rules, _run(ev))


def test_frequency_cap(rules):
    ev = [Tx(f"t{i}", T0 + i * 600, "c", "s1", 5_000, product="shop") for i in range(5)]
    assert "FREQ_CAP_1H" in ids(rules, _run(ev))


def test_tank_capacity(rules):
    ev = [Tx("a", T0, "c", "s1", 70_000, product="95", litres=90.0)]
    assert "OVER_TANK_CAPACITY" in ids(rules, _run(ev, CardProfile(tank_capacity_l=60.0)))


def test_unusual_hours(rules):
    night = 1_767_225_600.0 - 8 * 3600 + 2 * 3600 + 86400 * 5  # 02:00 local
    ev = [Tx(f"d{i}", T0 + i * 86400, "c", "s1", 20_000, product="95") for i in range(4)]
    ev.append(Tx("n", night, "c", "s1", 90_000, product="95"))
    assert "NIGHT_LARGE" in ids(rules, _run(ev))


def test_new_device_and_station(rules):
    ev = [Tx(f"d{i}", T0 + i * 86400, "c", "s1", 20_000, device_id="phone1", product="95") for i in range(4)]
    ev.append(Tx("x", T0 + 5 * 86400, "c", "s9", 150_000, device_id="phone2", product="95"))
    got = ids(rules, _run(ev))
    assert {"NEW_DEVICE_LARGE", "NEW_STATION_LARGE"} <= got


def test_impossible_travel(rules):
    ev = [Tx("a", T0, "c", "s1", 20_000, lat=31.2, lon=121.5),
          Tx("b", T0 + 1200, "c", "s2", 20_000, lat=30.3, lon=120.2)]
    assert "IMPOSSIBLE_TRAVEL" in ids(rules, _run(ev))


def test_fleet_policy(rules):
    fleet = CardProfile(card_type="fleet", per_tx_limit_fen=50_000, daily_limit_fen=80_000,
                        monthly_limit_fen=1_000_000, allowed_products=frozenset({"diesel"}),
                        allowed_regions=frozenset({"Shanghai"}), geofence_lat=31.2, geofence_lon=121.5,
                        geofence_radius_km=30.0)
    ev = [Tx("a", T0, "c", "s1", 60_000, product="95", region="Zhejiang", lat=30.3, lon=120.2),
          Tx("b", T0 + 7200, "c", "s1", 40_000, product="diesel", region="Shanghai", lat=31.2, lon=121.5)]
    engine = FeatureEngine(FeatureConfig())
    first = engine.process(ev[0], fleet)
    assert {"FLEET_PRODUCT", "FLEET_REGION", "FLEET_GEOFENCE", "FLEET_TX_LIMIT"} <= ids(rules, first)
    second = engine.process(ev[1], fleet)
    got = ids(rules, second)
    assert "FLEET_DAILY_LIMIT" in got and "FLEET_PRODUCT" not in got


def test_family_limits(rules):
    sub = CardProfile(card_type="family_sub", per_tx_limit_fen=30_000, monthly_limit_fen=50_000)
    ev = [Tx("a", T0, "c", "s1", 40_000, product="95")]
    assert {"FAMILY_TX_LIMIT"} <= ids(rules, _run(ev, sub))
    ev = [Tx("a", T0, "c", "s1", 25_000), Tx("b", T0 + 86400, "c", "s1", 29_000)]
    assert "FAMILY_MONTHLY_LIMIT" in ids(rules, _run(ev, sub))


def test_missing_features_never_fire(rules):
    assert ids(rules, vec()) == set()


def test_region_override(rules):
    x = vec(card_spend_24h_incl=4000.0)
    assert "DAILY_SPEND_HIGH" in ids(rules, x)
    assert "DAILY_SPEND_HIGH" not in ids(rules, x, "highway")  # raised to 5,000 on highways
    assert "DAILY_SPEND_HIGH" in ids(rules, x, "unknown-region")  # default rules elsewhere
    night = vec(hour_local=2.0, amount_vs_mean_30d=5.0, amount=900.0)
    assert "NIGHT_LARGE" in ids(rules, night) and "NIGHT_LARGE" not in ids(rules, night, "rural")


def test_invalid_rules_are_refused():
    with pytest.raises(RuleError):
        RuleSet.from_mapping({"version": "x", "rules": [{"id": "A", "family": "frequency_cap", "severity": "review",
                                                         "when": [["no_such_feature", ">", 1]]}]})
    with pytest.raises(RuleError):
        RuleSet.from_mapping({"version": "x", "rules": [{"id": "A", "family": "nope", "when": [["amount", ">", 1]]}]})


def test_reload_without_restart(tmp_path):
    path = tmp_path / "rules.yaml"
    shutil.copy(DEFAULT_RULES_PATH, path)
    holder = ReloadingRuleSet(path, check_every_s=0.0)
    x = vec(card_spend_24h_incl=4000.0)
    assert "DAILY_SPEND_HIGH" in ids(holder.get(), x)
    text = path.read_text().replace('version: "rules-2026.11.1"', 'version: "rules-test-2"')
    text = text.replace('reason: "Card spent more than 3,000 yuan', 'reason: "Card spent more than 4,500 yuan')
    text = text.replace("when: [[card_spend_24h_incl, \">\", 3000]]", "when: [[card_spend_24h_incl, \">\", 4500]]")
    path.write_text(text)
    os.utime(path, (time.time() + 5, time.time() + 5))
    rs = holder.get()
    assert rs.version == "rules-test-2" and "DAILY_SPEND_HIGH" not in ids(rs, x)
    path.write_text("version: [broken")  # a broken edit keeps the last good rules
    os.utime(path, (time.time() + 10, time.time() + 10))
    assert holder.get().version == "rules-test-2" and holder.last_error


def test_generated_evaluator_equals_reference(rules):
    import numpy as np

    rng = np.random.default_rng(0)
    for _ in range(3000):
        x = list(rng.choice([NAN, 0.0, 1.0, 2.0, 3.5, 4.0, 6.0, 50.0, 200.0, 400.0, 3500.0, 9000.0],
                            len(FEATURE_NAMES)))
        for region in (None, "highway", "rural", "elsewhere"):
            assert rules.evaluate(x, region) == rules.evaluate_reference(x, region)
