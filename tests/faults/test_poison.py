"""Case 3 (stream part): fuzzed events among a valid simulated stream on the real broker and agents.

Wrong types, missing fields, huge values, bad encodings, personal data in the wrong fields, an envelope with
one bad item, duplicates, out-of-order and far-future timestamps, on the authorisations, payments and
redemptions topics (``tests.faults.harness.poison_records``). The run itself is the session fixture
``poison_run`` (tests/faults/conftest.py); the API fuzzing (schemathesis, no 5xx) is the serving suite's
tests/test_schemathesis_api.py.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_poison_lands_in_dead_letters_with_reasons_and_agents_keep_going(poison_run) -> None:
    r, _ = poison_run
    d = r.details
    assert all(d["workers_alive"]), "an agent crashed on poison input"
    assert d["poison_lost"] == 0, f"no dead letter nor decision for: {d['poison_unaccounted']}"
    assert d["poison_duplicated"] == 0, "a fuzzed record produced two outcomes"
    assert d["dead_letters_without_reason"] == 0
    assert set(d["dead_letter_reasons"]) <= {"malformed", "schema-invalid", "processing error"}
    # the valid stream around the poison: every authorisation decided once, balances equal the ledger
    assert d["decisions_topic_missing"] == 0 and d["tx_with_two_decision_ids"] == 0
    assert d["accruals"] == d["expected_accruals"] and d["balances_wrong"] == 0


def test_far_future_timestamps_are_dead_lettered(poison_run) -> None:
    r, _ = poison_run
    assert r.details["far_future"] and set(r.details["far_future"].values()) == {"dead-lettered"}


def test_poison_costs_no_valid_row_in_the_warehouse(poison_run) -> None:
    r, _ = poison_run
    d = r.details
    assert d["warehouse_decision_tx"] == d["authorisations"], d
    assert d["ledger_lines_missing_in_warehouse"] == 0, d
