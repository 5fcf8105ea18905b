"""The compiled feature code (fuelcard._features_c, features.py compiled by setup.py) equals features.py run as
plain Python, bit for bit: vectors, states, serialisation, labels."""

import importlib.util
import struct
import sys
import types

import orjson
import pytest

import fuelcard
from fuelcard import features
from fuelcard.features import FeatureConfig, profile_from_row, tx_from_mapping
from tests.test_features_parity import make_events


@pytest.fixture(scope="module")
def pure():
    """features.py executed again as plain Python under another name (no swap to the compiled functions)."""
    name = "fuelcard_features_pure_reference"
    spec = importlib.util.spec_from_file_location(name, features.__file__)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    assert mod.FEATURES_IMPL == "pure" and type(mod.update_card) is types.FunctionType
    assert type(features.update_card) is not types.FunctionType  # the compiled one
    yield mod
    sys.modules.pop(name, None)


def _bits(v):
    return struct.pack(f"<{len(v)}d", *v)


def test_compiled_feature_code_is_built_and_in_use():
    assert features.FEATURES_IMPL == "compiled", features.FEATURES_IMPL_PROBLEM
    from fuelcard import _features_c

    assert features.update_card is _features_c.update_card
    assert features.FeatureEngine.process is _features_c.FeatureEngine.__dict__["process"]
    # the classes stay features.py's own
    engine = features.FeatureEngine(FeatureConfig())
    engine.process(features.Tx("t", 0.0, "c", "s", 100, "T", "d"))
    assert type(engine.cards["c"]) is features.CardState
    assert type(engine.terminals["T"]) is features.StationState


@pytest.mark.parametrize("full", [True, False])
def test_engine_vectors_and_states_bit_for_bit(pure, full):
    df = make_events(4000, seed=8, full=full)
    records = df.to_dict("records")
    order = features.processing_order(df)
    cfg = FeatureConfig(label_delay_days=3.0)
    fast_engine, ref_engine = features.FeatureEngine(cfg), pure.FeatureEngine(pure.FeatureConfig(3.0))
    for k, i in enumerate(order):
        r = records[i]
        tx = tx_from_mapping(r)
        # labels: attached on some events, late on others (the stream's record_label path)
        if k % 5 == 0:
            tx = tx._replace(is_fraud=None)
        got = fast_engine.process(tx, profile_from_row(r))
        ref = ref_engine.process(pure.Tx(*tx), pure.profile_from_row(r))
        assert _bits(got) == _bits(ref), (k, [(n, a, b) for n, a, b in zip(features.FEATURE_NAMES, got, ref,
                                                                         strict=True) if _bits([a]) != _bits([b])])
        if k % 5 == 0 and r["is_fraud"] == r["is_fraud"]:
            fast_engine.record_label(tx, int(r["is_fraud"]))
            ref_engine.record_label(pure.Tx(*tx), int(r["is_fraud"]))
    assert fast_engine.cards.keys() == ref_engine.cards.keys()
    for key, state in fast_engine.cards.items():
        d = state.to_dict()
        assert d == ref_engine.cards[key].to_dict()
        back = features.CardState.from_bytes(state.to_bytes())
        assert back.to_dict() == d and type(back) is features.CardState
        assert features.CardState.from_dict(orjson.loads(orjson.dumps(d))).to_dict() == d
    for mine, theirs in ((fast_engine.stations, ref_engine.stations), (fast_engine.terminals, ref_engine.terminals),
                         (fast_engine.devices, ref_engine.devices)):
        assert {k: v.to_dict() for k, v in mine.items()} == {k: v.to_dict() for k, v in theirs.items()}


def test_stream_functions_bit_for_bit(pure):
    """The per-state functions the stream calls (update_card/station/terminal/device), states round-tripped
    through bytes between events as a changelogged table would."""
    df = make_events(2500, seed=12)
    records = df.to_dict("records")
    cfg = FeatureConfig()
    tables = [{}, {}]
    for i in features.processing_order(df):
        r = records[i]
        tx = tx_from_mapping(r)
        prof = profile_from_row(r)
        out = []
        for mod, tab in ((features, tables[0]), (pure, tables[1])):
            t = tx if mod is features else pure.Tx(*tx)
            p = prof
            if mod is pure and prof is not None:
                p = pure.CardProfile(*(getattr(prof, f) for f in prof.__slots__))
            c = cfg if mod is features else pure.FeatureConfig()
            cs = tab.get(("c", tx.card_id))
            cs = None if cs is None else mod.CardState.from_bytes(cs)
            cs, cf = mod.update_card(cs, t, p, c)
            ss, sf = mod.update_station(tab.get(("s", tx.station_id)), t, cf, c)
            ts_, tf = mod.update_terminal(tab.get(("t", tx.terminal_id)), t, cf, c)
            ds, df_ = mod.update_device(tab.get(("d", tx.device_id)), t, c)
            tab[("c", tx.card_id)] = cs.to_bytes()
            tab[("s", tx.station_id)] = ss
            if tx.terminal_id is not None:
                tab[("t", tx.terminal_id)] = ts_
            if tx.device_id is not None:
                tab[("d", tx.device_id)] = ds
            out.append(mod.assemble(cf, sf, tf, df_))
        assert _bits(out[0]) == _bits(out[1])
    assert tables[0].keys() == tables[1].keys()


def test_stale_build_is_refused(monkeypatch):
    stale = types.SimpleNamespace(__source_sha256__="0" * 64)
    monkeypatch.setitem(sys.modules, "fuelcard._features_c", stale)
    monkeypatch.setattr(fuelcard, "_features_c", stale, raising=False)
    impl, why = features._use_compiled()
    assert impl == "pure" and "stale build" in why

