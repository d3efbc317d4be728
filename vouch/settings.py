"""Settings from VOUCH_* environment variables (and secret files in VOUCH_SECRETS_DIR)."""

from __future__ import annotations

import os

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOUCH_", extra="ignore")

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    database_url: str = "sqlite:///vouch.db"
    policy_file: str = "policy.yaml"
    ca_key: str = "ca_key"
    ca_key_passphrase: SecretStr | None = None
    pkcs11_module: str | None = None
    pkcs11_pin: SecretStr | None = None
    scheduler_interval: str = "30s"
    log_format: str = "text"
    public_url: str | None = None  # where hosts fetch /krl; host-setup refuses to guess it
    audit_key: SecretStr | None = None  # see vouch.audit_key
    audit_checkpoints: str = "audit-checkpoints.log"
    secrets_dir: str | None = None
    digest_at: str = "09:00"  # the daily digest, UTC
    offboarding_interval: str = "1h"  # the users.info sweep for deactivated users
    url: str | None = None  # for `vouch request` / `vouch ssh`: the server's public URL
    host_ca_key: str = "host_ca_key"  # the host CA: a key file path or a pkcs11: URI
    host_ca_key_passphrase: SecretStr | None = None
    host_pattern: str = "*"  # the hosts the served @cert-authority line covers

    @classmethod
    def load(cls) -> Settings:
        """Read the environment once, at start-up; secrets may also be files in VOUCH_SECRETS_DIR."""
        secrets_dir = os.environ.get("VOUCH_SECRETS_DIR")
        return cls(_secrets_dir=secrets_dir) if secrets_dir else cls()


def secret_value(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
