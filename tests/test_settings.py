import pytest
from pydantic import ValidationError

from fuelcard.settings import Settings


def test_development_defaults_just_work(monkeypatch):
    monkeypatch.delenv("FUELCARD_ENV", raising=False)
    s = Settings()
    assert s.env == "development"
    assert s.warehouse_url.startswith("chdb://")
    assert "dev" in s.token_key.get_secret_value()
    assert "dev-token" not in repr(s)  # secrets never printed


def test_production_refuses_development_secrets(monkeypatch):
    monkeypatch.setenv("FUELCARD_ENV", "production")
    with pytest.raises(ValidationError, match="FUELCARD_TOKEN_KEY"):
        Settings()


def test_production_accepts_real_secrets(monkeypatch):
    monkeypatch.setenv("FUELCARD_ENV", "production")
    monkeypatch.setenv("FUELCARD_TOKEN_KEY", "a" * 40)
    monkeypatch.setenv("FUELCARD_SM4_KEY", "ff" * 16)
    monkeypatch.setenv("FUELCARD_API_KEY_SALT", "salt-xyz")
    monkeypatch.setenv("FUELCARD_ADMIN_API_KEY", "admin-xyz")
    monkeypatch.setenv("FUELCARD_WAREHOUSE_URL", "clickhouse://ch:9000/fuel")
    s = Settings()
    assert s.warehouse_url == "clickhouse://ch:9000/fuel"
