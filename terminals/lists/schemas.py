"""List payloads (docs/terminal-protocol.md §5)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from terminals.access.schemas import ListVersion


class BlacklistItem(BaseModel):
    version: int
    asn: str
    action: Literal["add", "remove"]


class BlacklistResponse(BaseModel):
    name: Literal["blacklist"] = "blacklist"
    version: int
    mode: Literal["full", "delta"]
    entries: list[BlacklistItem]


class ParameterItem(BaseModel):
    version: int
    table: str
    key: str
    action: Literal["set", "delete"]
    value: dict[str, Any] | None


class ParametersResponse(BaseModel):
    name: Literal["parameters"] = "parameters"
    version: int
    mode: Literal["full", "delta"]
    entries: list[ParameterItem]


class VersionsReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    blacklist_version: ListVersion
    params_version: ListVersion


class ParameterSet(BaseModel):
    value: dict[str, int]
