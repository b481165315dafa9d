"""hsm-sim configuration: environment variables with the prefix ``HSM_SIM_`` (pydantic-settings).

Development mode is explicit (``HSM_SIM_MODE=development``): only there do the fixed development
LMK, the loopback exemption from client authentication and the development key set exist.
Outside it the LMK components, the client secret and the group factor must be configured.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hsm_sim.protocol import DEFAULT_MAX_MESSAGE


class Mode(StrEnum):
    development = "development"
    production = "production"


DEV_GROUP_FACTOR = (
    "3211FF0000000000"  # DESIGN §6: city 3211, 住建部 format (reference/pboc.md §2.2)
)


def development_lmk_components() -> list[str]:
    """Two fixed development LMK components: demo key stores stay readable across restarts."""
    return [
        hashlib.sha256(f"hsm-sim development LMK component {i}".encode()).hexdigest()
        for i in (1, 2)
    ]


class HsmSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HSM_SIM_", env_file=None, extra="ignore")

    mode: Mode = Mode.production
    keystore: Path | None = None
    audit_log: Path | None = None
    # Comma-separated hex components (2 or 3, 32 bytes each); the LMK is their XOR.
    lmk_components: SecretStr | None = None
    # Shared secret of the challenge-response client authentication.
    client_secret: SecretStr | None = None
    group_factor: Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{16}$")] | None = None
    max_message_bytes: Annotated[int, Field(ge=1024, le=256 * 1024 * 1024)] = DEFAULT_MAX_MESSAGE
    frame_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # The listener's bounds (docs/hsm-protocol.md, "Connections"): connections in all, from one
    # client address, and not yet authenticated; an unauthenticated connection must finish
    # HELLO/AUTH in time and send only small frames; an authenticated one is closed when idle.
    max_connections: Annotated[int, Field(ge=1, le=100_000)] = 1024
    max_connections_per_address: Annotated[int, Field(ge=1, le=100_000)] = 128
    max_unauthenticated_connections: Annotated[int, Field(ge=1, le=100_000)] = 256
    max_unauthenticated_per_address: Annotated[int, Field(ge=1, le=100_000)] = 16
    auth_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 5.0
    idle_timeout_seconds: Annotated[float, Field(gt=0, le=86_400)] = 600.0
    max_unauthenticated_frame_bytes: Annotated[int, Field(ge=64, le=1024 * 1024)] = 4096
    max_in_flight_per_connection: Annotated[int, Field(ge=1, le=4096)] = 64
    # Worker processes for large TAC_VERIFY batches; 0 verifies in the server process.
    workers: Annotated[int, Field(ge=0, le=64)] = 2
    card_key_cache_size: Annotated[int, Field(ge=0, le=10_000_000)] = 200_000
    card_key_cache_ttl_seconds: Annotated[float, Field(ge=0, le=86_400)] = 300.0

    @property
    def development(self) -> bool:
        return self.mode is Mode.development

    @model_validator(mode="after")
    def _fill_and_check(self) -> Self:
        if self.development:
            if self.group_factor is None:
                self.group_factor = DEV_GROUP_FACTOR
            if self.lmk_components is None:
                self.lmk_components = SecretStr(",".join(development_lmk_components()))
            return self
        problems = []
        if self.lmk_components is None:
            problems.append(
                "HSM_SIM_LMK_COMPONENTS (2 or 3 hex components) is required outside development"
            )
        if self.client_secret is None or len(self.client_secret.get_secret_value()) < 16:
            problems.append(
                "HSM_SIM_CLIENT_SECRET (16 characters or more) is required outside development"
            )
        if self.group_factor is None:
            problems.append("HSM_SIM_GROUP_FACTOR is required outside development")
        if self.keystore is None:
            problems.append("HSM_SIM_KEYSTORE is required outside development")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def lmk_component_list(self) -> list[str]:
        assert self.lmk_components is not None  # noqa: S101 - filled by the validator
        return [c.strip() for c in self.lmk_components.get_secret_value().split(",") if c.strip()]

    def group_factor_bytes(self) -> bytes:
        assert self.group_factor is not None  # noqa: S101 - filled by the validator
        return bytes.fromhex(self.group_factor)
