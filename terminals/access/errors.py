"""Terminal access errors (docs/terminal-protocol.md §6); rendered by the one domain handler."""

from __future__ import annotations

from cardsvc.errors import Forbidden, NotAuthenticated


class MacInvalid(NotAuthenticated):
    """The request's MAC is missing, malformed or not the session key's (or the TMK's at sign-in)."""


class ReplayRefused(NotAuthenticated):
    """The sequence number is not greater than the last one the session accepted."""


class SignInTimeRefused(NotAuthenticated):
    """The sign-in's terminal_time is outside the window around the host's clock."""


class SessionExpired(NotAuthenticated):
    """The session is unknown, expired, revoked or belongs to another terminal: sign in again."""


class TerminalUnknown(Forbidden):
    """No such terminal, or it is suspended or retired, or its merchant is suspended."""


class PsamMismatch(Forbidden):
    """The PSAM the terminal reports is not the one registered for it."""
