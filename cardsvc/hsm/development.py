"""Development adapters of the HSM port, both with the simulator's development key set
(DESIGN §6.1): its command handlers in this process (``local://dev``), and an ``hsm-sim serve``
child process (``spawn``). :func:`cardsvc.hsm.connect.open_hsm` refuses both outside development.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from cardsvc.hsm import HsmUnavailable
from cardsvc.hsm.sim import CommandClient, raise_for
from hsm_sim.child import HsmBusy, hsm_process
from hsm_sim.service import HsmService

__all__ = ["LocalHsmClient", "spawned_hsm"]


@asynccontextmanager
async def spawned_hsm(directory: str | os.PathLike[str]) -> AsyncIterator[str]:
    """The url of an ``hsm-sim`` child on ``directory``'s key store and audit log, or of the
    one already running on them (another process of the same var dir: ``cardsvc serve`` beside a
    command). One that holds them without answering is an outage, not a second simulator."""
    try:
        async with hsm_process(directory) as url:
            yield url
    except HsmBusy as exc:
        raise HsmUnavailable(str(exc)) from exc


class LocalHsmClient(CommandClient):
    """The simulator's command handlers in this process; same requests, same answers."""

    def __init__(self, service: HsmService) -> None:
        self._service = service
        self._next_id = 0

    @classmethod
    def development(cls) -> LocalHsmClient:
        """A fresh in-memory HSM with the development key set."""
        return cls(HsmService.in_memory_development())

    async def _call(
        self, cmd: str, fields: dict[str, Any], wait: float | None = None
    ) -> dict[str, Any]:
        self._next_id += 1
        # A JSON round trip keeps the in-process path honest about what the wire can carry.
        request = json.loads(json.dumps({"id": self._next_id, "cmd": cmd, **fields}))
        answer = await self._service.handle(request, peer="local")
        return raise_for(answer)
