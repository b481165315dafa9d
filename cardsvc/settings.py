"""Configuration: one pydantic-settings object, environment prefix ``CARDSVC_``.

Development mode is explicit (``CARDSVC_MODE=development``). Outside it, every secret must be
given and placeholders are refused, so a production process cannot start on demo secrets.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Mode(StrEnum):
    development = "development"
    production = "production"


# Values that betray a copied example file rather than a real secret.
PLACEHOLDER_SECRETS = frozenset(
    {
        "",
        "changeme",
        "change-me",
        "change_me",
        "secret",
        "password",
        "placeholder",
        "xxx",
        "todo",
        "dev",
        "test",
    }
)

# Development-only values, used when CARDSVC_MODE=development and nothing else is configured.
DEV_TOKEN_SECRET = "development-only-token-secret-not-for-production"  # noqa: S105


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CARDSVC_", env_file=None, extra="ignore")

    mode: Mode = Mode.production
    var_dir: Path = Path("var")

    # Storage. SQLite is the embedded default; PostgreSQL in production.
    database_url: str = ""
    database_pool_size: Annotated[int, Field(ge=1, le=200)] = 10
    database_echo: bool = False
    # Ping every pooled connection before use (see cardsvc.db.create_engine for the trade).
    database_pre_ping: bool = False

    # Cache/locks: Redis when set, otherwise the in-process implementation.
    redis_url: str | None = None

    # HSM: "spawn" starts an hsm-sim child process with the development key set (development only);
    # otherwise tcp://host:port of a running hsm-sim (or a real HSM behind the same client).
    hsm_url: str = ""
    hsm_secret: SecretStr | None = None
    hsm_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 5.0

    # Staff authentication tokens are HMAC-signed with this secret.
    token_secret: SecretStr | None = None
    token_ttl_seconds: Annotated[int, Field(ge=60, le=86400)] = 3600

    # Domain parameters.
    city_code: Annotated[str, Field(pattern=r"^\d{4}$")] = "3211"

    # Issuance (issue 5): staff lockout, card lifecycle.
    staff_max_failed_logins: Annotated[int, Field(ge=1, le=100)] = 5
    staff_lockout_seconds: Annotated[int, Field(ge=1, le=86400 * 30)] = 900
    # Days between loss/cancellation and the balance move: offline debits made before every
    # terminal has the new blacklist may still arrive (DESIGN §8).
    loss_waiting_period_days: Annotated[int, Field(ge=0, le=365)] = 7
    card_validity_years: Annotated[int, Field(ge=1, le=50)] = 10
    # Senior concession from this age on (national preferential policy for residents 60+).
    senior_age: Annotated[int, Field(ge=50, le=80)] = 60
    # Terminal number (12 digits) the counter uses in INITIALIZE FOR LOAD when proving new card keys.
    counter_terminal_no: Annotated[str, Field(pattern=r"^\d{12}$")] = "321100000001"
    timezone: str = "Asia/Shanghai"

    # Online authorization and purse loads (issue 8). Daily online spending per card type, fen
    # (JSON in the environment, e.g. CARDSVC_ONLINE_DAILY_LIMITS='{"student": 30000}'); a type
    # missing from the map uses ``online_daily_limit_default``.
    online_daily_limits: dict[str, Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: {
            "standard": 200_000,
            "student": 50_000,
            "senior": 100_000,
            "disabled": 100_000,
        }
    )
    online_daily_limit_default: Annotated[int, Field(ge=0)] = 200_000
    # Pre-authorization holds are released when not completed within this time.
    online_hold_expiry_seconds: Annotated[int, Field(ge=60, le=86400 * 30)] = 86400
    # The purse ceiling a load may reach (the card refuses above its own max-balance file too).
    purse_max_balance: Annotated[int, Field(ge=0, le=0xFFFFFFFF)] = 100_000
    # A purse load still pending (no TAC, no proof, no later card state) after this long opens an
    # aged_load break for finance; it is never refunded without card evidence.
    load_evidence_break_after_seconds: Annotated[int, Field(ge=60, le=86400 * 365)] = 3 * 86400

    # `cardsvc worker`: how often each periodic job runs. An expired hold still blocks the
    # resident's money until its job runs; the card jobs act on dates and waiting periods of days.
    worker_hold_expiry_interval_seconds: Annotated[int, Field(ge=1, le=3600)] = 60
    worker_card_jobs_interval_seconds: Annotated[int, Field(ge=60, le=86400)] = 3600
    worker_load_ageing_interval_seconds: Annotated[int, Field(ge=60, le=86400)] = 3600

    # Terminals (issue 7): sessions, clock skew, offline uploads.
    terminal_session_ttl_seconds: Annotated[int, Field(ge=60, le=7 * 86400)] = 86400
    # Sign-in requests and uploaded records may be this far ahead of the server clock.
    terminal_clock_skew_seconds: Annotated[int, Field(ge=0, le=86400)] = 600
    # Records older than this are refused as expired (result 05; reference/settlement_hsm.md §1.5).
    upload_max_record_age_days: Annotated[int, Field(ge=1, le=3650)] = 30
    upload_max_records: Annotated[int, Field(ge=1, le=10000)] = 2000
    # Where an acceptance takes its clearing date: the open day of ``clearing_days`` (settlement
    # closes days), or simply the local calendar date (a deployment without nightly settlement).
    clearing_date_source: Literal["clearing_days", "local_date"] = "clearing_days"

    # Web and logs.
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    log_level: str = "INFO"
    log_json: bool = True

    @property
    def development(self) -> bool:
        return self.mode is Mode.development

    @model_validator(mode="after")
    def _fill_and_check(self) -> Self:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.var_dir / 'cardsvc.db'}"
        if self.development:
            if not self.hsm_url:
                self.hsm_url = "spawn"
            if self.token_secret is None:
                self.token_secret = SecretStr(DEV_TOKEN_SECRET)
            return self
        problems: list[str] = []
        if not self.hsm_url or self.hsm_url == "spawn" or self.hsm_url.startswith("local:"):
            problems.append(
                "CARDSVC_HSM_URL must name a running HSM (tcp://host:port) outside development"
            )
        for name in ("token_secret", "hsm_secret"):
            value: SecretStr | None = getattr(self, name)
            if value is None:
                problems.append(f"CARDSVC_{name.upper()} is required outside development")
            elif _is_placeholder(value.get_secret_value()):
                problems.append(f"CARDSVC_{name.upper()} is a placeholder; set a real secret")
        if self.token_secret is not None and len(self.token_secret.get_secret_value()) < 32:
            problems.append("CARDSVC_TOKEN_SECRET must be at least 32 characters")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def _is_placeholder(value: str) -> bool:
    lowered = value.strip().lower()
    return lowered in PLACEHOLDER_SECRETS or lowered.startswith(("changeme", "development-only"))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process settings, read once from the environment."""
    return Settings()
