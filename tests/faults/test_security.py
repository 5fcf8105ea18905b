"""Case 5: SM4-encrypted fields unreadable without the key (raw warehouse columns on a real ClickHouse server),
an audit row for every personal-data read, no personal data in the logs of a stream run and of CLI runs, no
secret in the repository.

Scope tests for every endpoint, masking in API responses and the API's own audit/log checks are the serving
suite's (tests/test_serving_auth.py, tests/test_serving_privacy.py); this module checks the other layers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.faults import harness as H

ROOT = Path(__file__).resolve().parents[2]
SM4_KEY = "8f3a61c2d94e07b5a1c6e2f9037d48b6"  # test key of this module only (not a production secret)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, fault_ch: Any) -> dict[str, Any]:
    """A small simulation loaded into the real server by ``fuelcard warehouse load`` (subprocess, output kept)."""
    from fuelcard.simulator import SimConfig, simulate, write

    d = Path(tmp_path_factory.mktemp("faults-security"))
    write(simulate(SimConfig(seed=17, days=2, stations=6, members=150)), d / "sim")
    url = fault_ch.url("faults_security")
    env = {**os.environ, "FUELCARD_SM4_KEY": SM4_KEY, "FUELCARD_DATA_DIR": str(d / "var")}
    exe = str(Path(sys.executable).with_name("fuelcard"))
    p = subprocess.run([exe, "warehouse", "load", str(d / "sim"), "--url", url, "--no-progress"],  # noqa: S603
                       capture_output=True, text=True, timeout=300, env=env, cwd=d, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    q = subprocess.run([exe, "warehouse", "query", "member_profile", "--url", url, "-p",  # noqa: S603
                        f"member_id={pd.read_parquet(d / 'sim' / 'members.parquet')['member_id'].iloc[0]}"],
                       capture_output=True, text=True, timeout=300, env=env, cwd=d, check=False)
    members = pd.read_parquet(d / "sim" / "members.parquet")
    return {"dir": d, "url": url, "members": members, "cli_output": p.stdout + p.stderr + q.stdout + q.stderr}


def _pii_values(members: pd.DataFrame) -> list[str]:
    vals = [str(v) for v in pd.concat([members["phone"], members["id_number"]]) if str(v) and str(v) != "nan"]
    assert len(vals) > 100
    return vals


def _contains_any(text: str, values: list[str]) -> list[str]:
    return [v for v in values if v in text]


@pytest.mark.integration
def test_sm4_fields_unreadable_without_the_key(loaded: dict[str, Any]) -> None:
    from fuelcard.privacy import sm4_decrypt
    from warehouse import connect

    wh = connect(loaded["url"])
    try:
        raw = wh.query_df("SELECT * FROM dim_member FINAL")
        every_table = H.stored_text(wh)
    finally:
        wh.close()
    members = loaded["members"].set_index("member_id")
    values = _pii_values(loaded["members"])
    # no raw phone / ID number in any column of any table, read as stored
    assert "dim_member" in every_table and "fact_transactions" in every_table
    for table, text in every_table.items():
        assert not _contains_any(text, values), f"raw personal data stored in {table}"
    assert {"id_number_enc", "phone_enc"} <= set(raw.columns) and not {"id_number", "phone"} & set(raw.columns)
    wrong_key = "00" * 16
    checked = 0
    for _, row in raw.head(40).iterrows():
        phone = str(members.loc[row["member_id"], "phone"])
        assert sm4_decrypt(row["phone_enc"], key_hex=SM4_KEY) == phone  # readable with the key
        try:
            assert sm4_decrypt(row["phone_enc"], key_hex=wrong_key) != phone
        except (ValueError, UnicodeDecodeError):
            pass  # bad padding / not text: unreadable, as it must be
        assert row["phone_masked"] != phone and row["phone_masked"][-4:] == phone[-4:]
        checked += 1
    assert checked == 40
    # the same plaintext encrypts differently each time (random IV): no dictionary attack on phone numbers
    assert raw["phone_enc"].nunique() == len(raw)


@pytest.mark.integration
def test_audit_row_for_every_personal_data_read(loaded: dict[str, Any]) -> None:
    from warehouse import connect
    from warehouse.pii import reveal_member_pii

    wh = connect(loaded["url"])
    try:
        before = wh.query_value("SELECT count() FROM audit_log WHERE action = 'reveal_member_pii'")
        ids = list(loaded["members"]["member_id"].head(7))
        for i, m in enumerate(ids):
            got = reveal_member_pii(wh, m, sm4_key_hex=SM4_KEY, actor=f"faults-suite-{i}", reason="fault suite check")
            assert got["phone"] == str(loaded["members"].set_index("member_id").loc[m, "phone"])
        with pytest.raises(KeyError):
            reveal_member_pii(wh, "no-such-member", sm4_key_hex=SM4_KEY, actor="faults-suite-x", reason="probe")
        trail = wh.query_df("SELECT actor, subject, detail FROM audit_log WHERE action = 'reveal_member_pii' "
                            "AND actor LIKE 'faults-suite-%'")
        assert wh.query_value("SELECT count() FROM audit_log WHERE action = 'reveal_member_pii'") - before == 8
        with pytest.raises(ValueError, match="actor and reason"):
            reveal_member_pii(wh, ids[0], sm4_key_hex=SM4_KEY, actor=" ", reason="")  # no anonymous reads
    finally:
        wh.close()
    assert sorted(trail["subject"]) == sorted([*ids, "no-such-member"])
    assert set(trail["detail"]) == {"fault suite check", "probe"}
    # the trail holds ids, never the personal values themselves
    assert not _contains_any(trail.to_csv(index=False), _pii_values(loaded["members"]))


@pytest.mark.integration
def test_no_personal_data_in_logs_of_stream_and_cli_runs(poison_run, loaded: dict[str, Any]) -> None:
    """The poison run put a member's phone and ID number into fuzzed events (dead letters keep the raw payload,
    that is the topic's job); the worker logs of that run and the CLI output of a load must not show any
    phone or ID number of the simulation."""
    _, root = poison_run
    logs = sorted(root.rglob("*.log"))
    assert any("worker" in p.name for p in logs), "no worker logs captured"
    sim = H.small_network(23, members=120)  # the poison run's network (same seed, same data)
    values = _pii_values(sim["members"])
    for p in logs:
        leaked = _contains_any(p.read_text(errors="replace"), values)
        assert not leaked, f"{p.name} contains personal data ({len(leaked)} values, e.g. {leaked[0][:3]}…)"
    assert not _contains_any(loaded["cli_output"], _pii_values(loaded["members"]))


# --------------------------------------------------------------------------------------------- repository
def test_no_secret_in_the_repository() -> None:
    """Tracked files carry no production-looking secret (patterns in tests.faults.harness.SECRET_PATTERNS)."""
    findings = H.scan_repository_for_secrets(ROOT)
    assert not findings, "possible secrets in tracked files:\n" + "\n".join(findings[:30])
