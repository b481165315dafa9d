from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from cardsvc.settings import Mode, Settings

STRONG = "a-real-secret-with-more-than-thirty-two-characters"


class TestDevelopment:
    def test_fills_development_defaults(self) -> None:
        settings = Settings(mode=Mode.development)
        assert settings.hsm_url == "spawn"
        assert settings.token_secret is not None
        assert settings.database_url.startswith("sqlite+aiosqlite:///")

    def test_mode_must_be_explicit(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("CARDSVC_MODE", raising=False)
        with pytest.raises(ValidationError):
            Settings()  # production by default: no secrets, no HSM → refused


class TestProduction:
    def test_requires_secrets_and_hsm(self) -> None:
        with pytest.raises(ValidationError) as info:
            Settings(mode=Mode.production)
        message = str(info.value)
        assert "CARDSVC_HSM_URL" in message
        assert "CARDSVC_TOKEN_SECRET is required" in message
        assert "CARDSVC_HSM_SECRET is required" in message

    @pytest.mark.parametrize(
        "placeholder", ["changeme", "secret", "CHANGE-ME", "development-only-token-secret-x"]
    )
    def test_refuses_placeholders(self, placeholder: str) -> None:
        with pytest.raises(ValidationError, match="placeholder"):
            Settings(
                mode=Mode.production,
                hsm_url="tcp://hsm:1500",
                token_secret=placeholder,
                hsm_secret=STRONG,
            )

    def test_refuses_spawned_hsm(self) -> None:
        with pytest.raises(ValidationError, match="running HSM"):
            Settings(mode=Mode.production, hsm_url="spawn", token_secret=STRONG, hsm_secret=STRONG)

    def test_short_token_secret(self) -> None:
        with pytest.raises(ValidationError, match="at least 32"):
            Settings(
                mode=Mode.production,
                hsm_url="tcp://hsm:1500",
                token_secret="short-but-real-x",
                hsm_secret=STRONG,
            )

    def test_valid_production(self) -> None:
        settings = Settings(
            mode=Mode.production, hsm_url="tcp://hsm:1500", token_secret=STRONG, hsm_secret=STRONG
        )
        assert not settings.development

    def test_reads_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CARDSVC_MODE", "development")
        monkeypatch.setenv("CARDSVC_CITY_CODE", "3212")
        assert Settings().city_code == "3212"

    def test_rejects_bad_city_code(self) -> None:
        with pytest.raises(ValidationError):
            Settings(mode=Mode.development, city_code="32A1")


class TestOneMeaning:
    def test_frozen(self) -> None:
        settings = Settings(mode=Mode.development)
        with pytest.raises(ValidationError):
            settings.purse_max_balance = 1  # type: ignore[misc]

    def test_database_follows_var_dir(self, tmp_path: Path) -> None:
        settings = Settings(mode=Mode.development, var_dir=tmp_path)
        assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'cardsvc.db'}"

    def test_time_zone_checked_once_and_read_as_a_zone(self) -> None:
        settings = Settings(mode=Mode.development, timezone="Asia/Urumqi")
        assert settings.zone == ZoneInfo("Asia/Urumqi")
        moment = datetime(2026, 12, 31, 17, 30, tzinfo=UTC)  # 01:30 on Jan 1 in Shanghai
        assert settings.local_date(moment) == date(2026, 12, 31)  # 23:30 in Urumqi (UTC+6)
        assert Settings(mode=Mode.development).local_date(moment) == date(2027, 1, 1)
        with pytest.raises(ValidationError, match="not an IANA time zone"):
            Settings(mode=Mode.development, timezone="Asia/Atlantis")

    @pytest.mark.parametrize(
        ("name", "url", "instead"),
        [
            ("hsm_url", "tcp://hsm:1500?secret=" + STRONG, "CARDSVC_HSM_SECRET"),
            ("hsm_url", f"tcp://user:{STRONG}@hsm:1500", "CARDSVC_HSM_SECRET"),
            ("database_url", f"postgresql+asyncpg://app:{STRONG}@db/cardsvc", "PGPASSWORD"),
            ("redis_url", f"redis://:{STRONG}@cache:6379/0", "CARDSVC_REDIS_PASSWORD"),
        ],
    )
    def test_no_secret_in_a_url(self, name: str, url: str, instead: str) -> None:
        with pytest.raises(ValidationError, match=instead):
            Settings.model_validate({"mode": Mode.development, name: url})
