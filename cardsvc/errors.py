"""Domain errors. Services raise these; one handler (``cardsvc.app``) renders them.

Each error names its HTTP status so the domain never imports the web layer; the rendered body
is ``{"error": <class name>, "detail": <message>}``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """Base of every expected business outcome that ends a request."""

    status_code: ClassVar[int] = 400

    def __init__(self, detail: str, **context: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.context = context


class ValidationFailed(DomainError):
    """Input that parsed but breaks a domain rule (bad check digit, impossible date...)."""

    status_code = 422


class NotAuthenticated(DomainError):
    status_code = 401


class Forbidden(DomainError):
    """The caller is known but its role does not admit this action."""

    status_code = 403


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    """The request contradicts current state: illegal transition, duplicate, idempotency clash."""

    status_code = 409


class InvalidStateTransition(Conflict):
    pass


class IdempotencyConflict(Conflict):
    """The same idempotency key was used with different content."""


class RateLimited(DomainError):
    status_code = 429


class DependencyUnavailable(DomainError):
    """A backing service (HSM, database, cache) did not answer; safe to retry."""

    status_code = 503
