"""One settings object, read from the environment (prefix ``FUELCARD_``).

Entry points (CLI, Faust worker, API) build it once and pass it down; the pure
core never reads the environment. Development defaults work out of the box; in
production (``FUELCARD_ENV=production``) the development secrets are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_TOKEN_KEY = "dev-token-key-not-for-production"  # noqa: S105 - refused in production
DEV_SM4_KEY = "00112233445566778899aabbccddeeff"
DEV_API_KEY_SALT = "dev-api-key-salt"
DEV_ADMIN_KEY = "dev-admin-key"


class Settings(BaseSettings):
    """Configuration for every process of the system."""

    model_config = SettingsConfigDict(env_prefix="FUELCARD_", frozen=True, extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    data_dir: Path = Field(default=Path("var"), description="Root for embedded data, artifacts and reports")
    kafka_bootstrap: str = Field(
        default="kafka://127.0.0.1:19092",
        description="Kafka bootstrap servers (faust URL form kafka://host:port[;host:port])",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    stream_prefix: str = Field(default="fuelcard", description="Topic name prefix (<prefix>.authorisations, ...)")
    embedded_broker: bool = Field(default=True, description="Start the embedded broker (noida-db)")
    warehouse_url: str = Field(
        default="chdb:///var/warehouse",
        description="chdb:///path (embedded) or clickhouse://user:pass@host:9000/db (server)",
    )
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    region: str = "default"

    token_key: SecretStr = SecretStr(DEV_TOKEN_KEY)
    sm4_key: SecretStr = SecretStr(DEV_SM4_KEY)
    api_key_salt: SecretStr = SecretStr(DEV_API_KEY_SALT)
    admin_api_key: SecretStr = SecretStr(DEV_ADMIN_KEY)

    label_delay_days: int = 7
    target_fpr: float = 0.003
    score_budget_ms: float = 20.0

    @model_validator(mode="after")
    def _enforce_non_default_secrets(self) -> Settings:
        if self.env != "production":
            return self
        defaults = {
            "token_key": DEV_TOKEN_KEY,
            "sm4_key": DEV_SM4_KEY,
            "api_key_salt": DEV_API_KEY_SALT,
            "admin_api_key": DEV_ADMIN_KEY,
        }
        bad = [name for name, dev in defaults.items() if getattr(self, name).get_secret_value() == dev]
        if bad:
            raise ValueError(
                "development secrets are not allowed in production; set " + ", ".join(
                    f"FUELCARD_{n.upper()}" for n in bad
                )
            )
        return self

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def registry_dir(self) -> Path:
        return self.data_dir / "registry"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, with explicit overrides (for tests)."""
    return Settings(**overrides)  # type: ignore[arg-type]
