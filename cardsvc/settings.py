"""Configuration: one pydantic-settings object, environment prefix ``CARDSVC_``.

Development mode is explicit (``CARDSVC_MODE=development``). Outside it, every secret must be
given and placeholders are refused, so a production process cannot start on demo secrets.

The object is frozen: what a process reads at start is what every part of it uses. A setting is
here only if every path it concerns honours it; secrets are never part of a URL.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, IPvAnyNetwork, SecretStr, field_validator, model_validator
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
# The development payer of the bank file (a placeholder account, never a real one).
DEV_PAYER_ACCOUNT = "DEV0000000001"

# The zone of card and terminal wall-clock times and of local dates (docs/architecture.md §6).
DEFAULT_TIMEZONE = "Asia/Shanghai"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CARDSVC_", env_file=None, extra="ignore", frozen=True
    )

    mode: Mode = Mode.production
    var_dir: Path = Path("var")

    # Storage. SQLite is the embedded default; PostgreSQL in production. The URL names no
    # password: the driver reads PGPASSWORD or ~/.pgpass, as every PostgreSQL client does.
    database_url: str = ""
    database_pool_size: Annotated[int, Field(ge=1, le=200)] = 10
    # Ping every pooled connection before use (see cardsvc.db.create_engine for the trade).
    database_pre_ping: bool = False
    # ...but ping a connection that sat idle this long (the first request after a restart).
    database_ping_idle_seconds: Annotated[float, Field(ge=0, le=3600)] = 1.0

    # Cache/locks: Redis when set, otherwise the in-process implementation; its password apart.
    redis_url: str | None = None
    redis_password: SecretStr | None = None

    # HSM: "spawn" starts an hsm-sim child process with the development key set and "local://dev"
    # runs it in this process (development only); otherwise tcp://host:port of a running hsm-sim
    # (or a real HSM behind the same protocol). Its secret is ``hsm_secret``, never in the URL.
    hsm_url: str = ""
    hsm_secret: SecretStr | None = None
    hsm_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 5.0
    # The API seals new audit entries in the HSM shortly after a request that wrote one commits
    # (cardsvc/audit/sealer.py), and looks for entries other processes wrote (commands, the
    # worker) this often.
    audit_seal_interval_seconds: Annotated[float, Field(gt=0, le=3600)] = 2.0

    # Staff authentication tokens are HMAC-signed with this secret.
    token_secret: SecretStr | None = None
    token_ttl_seconds: Annotated[int, Field(ge=60, le=86400)] = 3600

    # Domain parameters.
    city_code: Annotated[str, Field(pattern=r"^\d{4}$")] = "3211"

    # Issuance: staff lockout, card lifecycle.
    staff_max_failed_logins: Annotated[int, Field(ge=1, le=100)] = 5
    staff_lockout_seconds: Annotated[int, Field(ge=1, le=86400 * 30)] = 900
    # Failed logins from one client address (any usernames) within the window; then 429 until the
    # window ends. Counted in the cache: without it only the per-account lockout holds.
    staff_max_failed_logins_per_address: Annotated[int, Field(ge=1, le=10_000)] = 20
    staff_address_window_seconds: Annotated[int, Field(ge=1, le=86400)] = 900
    # The reverse proxies in front of the API whose X-Forwarded-For is believed (addresses or
    # networks): the client address the per-address login limits count is then the nearest
    # address that header names outside them. Empty: the TCP peer is the client.
    trusted_proxies: list[IPvAnyNetwork] = Field(default_factory=list)
    # Resident self-service (docs/self-service.md): the online channel's tokens, activation codes,
    # lockout and rate limits. Failures per card number and per client address are counted in the
    # cache in fixed windows; the lockout of a resident's online access is in the database.
    resident_token_ttl_seconds: Annotated[int, Field(ge=60, le=86400)] = 900
    resident_activation_code_ttl_seconds: Annotated[int, Field(ge=300, le=86400 * 30)] = 259200
    resident_max_code_failures: Annotated[int, Field(ge=1, le=100)] = 5
    resident_max_failed_logins: Annotated[int, Field(ge=1, le=100)] = 5
    resident_lockout_seconds: Annotated[int, Field(ge=60, le=86400 * 30)] = 1800
    resident_max_failures_per_card: Annotated[int, Field(ge=1, le=10_000)] = 10
    resident_max_failures_per_address: Annotated[int, Field(ge=1, le=10_000)] = 30
    resident_failure_window_seconds: Annotated[int, Field(ge=1, le=86400)] = 900
    # Days between loss/cancellation and the balance move: offline debits made before every
    # terminal has the new blacklist may still arrive (DESIGN §8).
    loss_waiting_period_days: Annotated[int, Field(ge=0, le=365)] = 7
    card_validity_years: Annotated[int, Field(ge=1, le=50)] = 10
    # Senior concession from this age on (national preferential policy for residents 60+).
    senior_age: Annotated[int, Field(ge=50, le=80)] = 60
    # Terminal number (12 digits) the counter uses in INITIALIZE FOR LOAD when proving new card keys.
    counter_terminal_no: Annotated[str, Field(pattern=r"^\d{12}$")] = "321100000001"
    # An IANA zone name; checked at start, and read everywhere through ``zone``.
    timezone: str = DEFAULT_TIMEZONE

    # Online authorization and purse loads. Daily online spending per card type, fen
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
    # Counter cash of a bill payment that did not pay, not handed back this long after the
    # payment's end, opens a bill_cash_unreturned break for finance (docs/bills.md §5).
    bill_cash_break_after_seconds: Annotated[int, Field(ge=3600, le=86400 * 365)] = 7 * 86400

    # Cardholder PINs of the online account (docs/accounts.md): the length a new PIN must have,
    # the wrong PINs in a row after which online payments are locked until a counter resets the
    # PIN, and per merchant category the amount up to which a payment needs no PIN (JSON, e.g.
    # CARDSVC_ONLINE_NO_PIN_LIMITS='{"parking": 3000}'; a category not named always needs one).
    pin_length: Annotated[int, Field(ge=4, le=12)] = 6
    pin_max_failures: Annotated[int, Field(ge=1, le=10)] = 3
    online_no_pin_limits: dict[str, Annotated[int, Field(ge=0, le=0xFFFFFFFF)]] = Field(
        default_factory=dict
    )
    # Counter withdrawals from the online account above this amount (fen) wait for a supervisor,
    # whose approval must come within ``withdrawal_approval_seconds`` (the money is held until).
    withdrawal_approval_above: Annotated[int, Field(ge=0, le=10**12)] = 200_000
    withdrawal_approval_seconds: Annotated[int, Field(ge=60, le=86400 * 7)] = 3600
    # Banks whose credit notifications and files are accepted, by code: each signs with the HSM
    # key ``BANK_<code>`` (usage bank-mac) and books to the ledger account ``bank:<code>``.
    # Development accepts the demo bank (DEMO) when none is named.
    bank_codes: list[Annotated[str, Field(pattern=r"^[A-Z0-9]{2,16}$")]] = Field(
        default_factory=list
    )
    bank_credit_file_max_lines: Annotated[int, Field(ge=1, le=100_000)] = 10_000

    # Utility bills (docs/bills.md, docs/biller-protocol.md): our channel id towards billers,
    # the timeout of one request to a biller, how often the worker sends what the outbox holds,
    # and how many outbox rows one worker pass leases.
    bills_channel_id: Annotated[str, Field(pattern=r"^[A-Z0-9]{2,16}$")] = "CITYCARD"
    bills_timeout_seconds: Annotated[float, Field(ge=0.1, le=60)] = 10.0
    worker_bills_interval_seconds: Annotated[float, Field(ge=0.1, le=3600)] = 2.0
    bills_outbox_batch: Annotated[int, Field(ge=1, le=1000)] = 100
    bills_outbox_concurrency: Annotated[int, Field(ge=1, le=256)] = 32

    # `cardsvc worker`: how often each periodic job runs. An expired hold still blocks the
    # resident's money until its job runs; the card jobs act on dates and waiting periods of days.
    worker_hold_expiry_interval_seconds: Annotated[int, Field(ge=1, le=3600)] = 60
    worker_card_jobs_interval_seconds: Annotated[int, Field(ge=60, le=86400)] = 3600
    worker_load_ageing_interval_seconds: Annotated[int, Field(ge=60, le=86400)] = 3600
    worker_bill_cash_ageing_interval_seconds: Annotated[int, Field(ge=60, le=86400)] = 3600

    # Terminals: sessions, clock skew, offline uploads.
    terminal_session_ttl_seconds: Annotated[int, Field(ge=60, le=7 * 86400)] = 86400
    # Sign-in requests and uploaded records may be this far ahead of the server clock.
    terminal_clock_skew_seconds: Annotated[int, Field(ge=0, le=86400)] = 600
    # A sign-in's terminal_time must lie within this many seconds of the host's clock (either
    # way); its nonce is kept twice as long, so a captured sign-in can never be replayed.
    terminal_sign_in_window_seconds: Annotated[int, Field(ge=30, le=86400)] = 900
    # Records older than this are refused as expired (result 05; reference/settlement_hsm.md §1.5).
    upload_max_record_age_days: Annotated[int, Field(ge=1, le=3650)] = 30
    upload_max_records: Annotated[int, Field(ge=1, le=10000)] = 2000
    # Local time of the day cut (日切, cardsvc.clearing.service): before noon it ends day D the
    # next morning, from noon on the same evening.
    day_cutoff: Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")] = "00:00"
    # How long the day cut waits for transactions that were open when it moved the open day.
    day_cut_wait_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0
    # Daily partitions (PostgreSQL) made ahead of the open day by each cut.
    partitions_ahead_days: Annotated[int, Field(ge=1, le=366)] = 7
    # How often ``cardsvc worker`` checks whether the day is due to be cut.
    worker_day_cut_interval_seconds: Annotated[int, Field(ge=1, le=3600)] = 60
    # How often ``cardsvc worker`` looks for a day past its cutoff to settle.
    worker_settlement_interval_seconds: Annotated[int, Field(ge=1, le=86400)] = 300

    # Nightly settlement (docs/settlement.md): where each day's files go (empty: <var dir>/
    # settlement), and how many merchants' postings one transaction writes.
    settlement_dir: Path | None = None
    settlement_posting_chunk: Annotated[int, Field(ge=1, le=10000)] = 500
    # The bank account (ledger ``bank:<code>``) merchants' payouts are paid from when the bank
    # file is issued (docs/payouts.md); empty: the first of ``bank_codes``.
    settlement_payout_bank: Annotated[str, Field(pattern=r"^([A-Z0-9]{2,16})?$")] = ""
    # Our account at that bank, the payer of every line of the bank file (docs/settlement-files.md);
    # required once a payout is due (development: a placeholder account).
    settlement_payer_account: Annotated[str, Field(pattern=r"^([0-9A-Za-z]{6,34})?$")] = ""
    # Development only: the run kills its own process (SIGKILL) at this point, to prove that a
    # rerun resumes (docs/settlement.md, "Crash points"); refused outside development.
    settlement_crash_at: str | None = None
    # The daily reconciliation with each biller (docs/bills.md §11): how often ``cardsvc
    # worker`` builds the files of closed days and sends those due, and the timeout of one send
    # (a file of 200 000 lines is longer to take than a payment).
    worker_bill_recon_interval_seconds: Annotated[int, Field(ge=1, le=86400)] = 300
    bill_recon_timeout_seconds: Annotated[float, Field(ge=1, le=600)] = 60.0

    # Web and logs.
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    log_level: str = "INFO"
    log_json: bool = True

    @property
    def development(self) -> bool:
        return self.mode is Mode.development

    @property
    def zone(self) -> ZoneInfo:
        """The local time zone (``ZoneInfo`` caches one object per name)."""
        return ZoneInfo(self.timezone)

    def local_date(self, moment: datetime) -> date:
        """The calendar date in the local zone at ``moment`` (an aware datetime)."""
        return moment.astimezone(self.zone).date()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"CARDSVC_TIMEZONE {value!r} is not an IANA time zone") from None
        return value

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, data: Any) -> Any:
        """The values that depend on others, filled before the object is frozen."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if not data.get("database_url"):
            var_dir = Path(data.get("var_dir") or cls.model_fields["var_dir"].default)
            data["database_url"] = f"sqlite+aiosqlite:///{var_dir / 'cardsvc.db'}"
        if str(data.get("mode") or Mode.production) == Mode.development:
            data["hsm_url"] = data.get("hsm_url") or "spawn"
            if data.get("token_secret") is None:
                data["token_secret"] = DEV_TOKEN_SECRET
            data["bank_codes"] = data.get("bank_codes") or ["DEMO"]
            data["settlement_payer_account"] = (
                data.get("settlement_payer_account") or DEV_PAYER_ACCOUNT
            )
        return data

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems: list[str] = []
        if urlsplit(self.hsm_url).query or urlsplit(self.hsm_url).password:
            problems.append(
                "CARDSVC_HSM_URL carries no secret or options (tcp://host:port); "
                "the secret is CARDSVC_HSM_SECRET"
            )
        if urlsplit(self.database_url).password:
            problems.append(
                "CARDSVC_DATABASE_URL carries no password; give it in PGPASSWORD or ~/.pgpass"
            )
        if self.redis_url and urlsplit(self.redis_url).password:
            problems.append("CARDSVC_REDIS_URL carries no password; it is CARDSVC_REDIS_PASSWORD")
        if self.settlement_crash_at and not self.development:
            problems.append("CARDSVC_SETTLEMENT_CRASH_AT exists only in development")
        if self.development:
            if problems:
                raise ValueError("; ".join(problems))
            return self
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
    def settlement_root(self) -> Path:
        """Where the settlement files of each day go (``<root>/<YYYY-MM-DD>/``)."""
        return self.settlement_dir or self.var_dir / "settlement"

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
