"""The terminal a signed request comes from, once authenticated: a plain value that services take.

The web dependency that produces it (:mod:`terminals.access.auth`) is the only part of terminal
access that knows about HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass

from terminals.registry.models import TerminalKind


@dataclass(frozen=True)
class TerminalContext:
    terminal_id: int
    terminal_no: str  # 12 digits
    psam_no: str
    kind: TerminalKind
    merchant_id: int
    merchant_no: str  # 15 digits
    merchant_category: str
    session_id: str
    seq: int
    # The session's PIN key (an HSM blob): what the terminal's PIN blocks are encrypted under.
    pin_key_blob: bytes | None = None
