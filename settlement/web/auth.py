"""Sign-in of the finance pages: a cookie session, CSRF tokens, and reading forms.

The session cookie holds a staff token (``cardsvc.staff.auth.issue_token``): it carries the
account's session version and expires after ``CARDSVC_TOKEN_TTL_SECONDS``, and every request
re-reads the staff row (``principal_for_token``), so a locked, disabled or re-roled account is
out at once. The cookie is HttpOnly, SameSite=Strict, scoped to ``/finance`` (and Secure over
HTTPS).

CSRF: every form carries ``csrf``, an HMAC under the token secret of the session cookie (or,
on the login form, of a random pre-session cookie). A POST whose token is missing or wrong is
refused 403 ``CsrfRefused`` before anything else happens.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated, Final

from fastapi import Depends, Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from cardsvc.api.limits import INT64_END, INT64_MIN
from cardsvc.deps import SessionsDep, SettingsDep
from cardsvc.errors import Forbidden, NotAuthenticated, ValidationFailed
from cardsvc.settings import Settings
from cardsvc.staff.auth import Role, StaffPrincipal, check_roles
from cardsvc.staff.deps import principal_for_token

SESSION_COOKIE: Final = "cardsvc_finance"
PRESESSION_COOKIE: Final = "cardsvc_finance_pre"
COOKIE_PATH: Final = "/finance"
PAGE_ROLES: Final = (Role.finance, Role.auditor, Role.administrator)
MAX_FORM_FIELDS: Final = 256
MAX_FIELD_CHARS: Final = 1000


class SignInRequired(NotAuthenticated):
    """No session, or the session ended: sign in again."""


class CsrfRefused(Forbidden):
    """A form posted without its CSRF token, or with another session's."""


def csrf_token(settings: Settings, anchor: str) -> str:
    secret = settings.token_secret
    if secret is None:
        raise SignInRequired("token signing is not configured")
    key = secret.get_secret_value().encode("utf-8")
    return hmac.new(key, b"csrf|" + anchor.encode("utf-8"), hashlib.sha256).hexdigest()


def check_csrf(settings: Settings, anchor: str | None, given: str | None) -> None:
    if not anchor or not given or not hmac.compare_digest(csrf_token(settings, anchor), given):
        raise CsrfRefused("the form's CSRF token is missing or not this session's: reload the page")


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def presession(request: Request) -> tuple[str, bool]:
    """The login form's pre-session value, and whether it is new (to be set as a cookie)."""
    found = request.cookies.get(PRESESSION_COOKIE)
    if found and 20 <= len(found) <= 100:
        return found, False
    return secrets.token_urlsafe(32), True


class Page:
    """Who is signed in, and the CSRF token of their forms."""

    def __init__(self, principal: StaffPrincipal, csrf: str) -> None:
        self.principal = principal
        self.csrf = csrf

    @property
    def finance(self) -> bool:
        return Role.finance in self.principal.roles


async def signed_in(request: Request, sessions: SessionsDep, settings: SettingsDep) -> Page:
    """The page's signed-in staff, holding a role of the pages (finance, auditor, administrator)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise SignInRequired("sign in first")
    try:
        principal = await principal_for_token(sessions, settings, token)
    except NotAuthenticated as exc:
        raise SignInRequired(exc.detail) from exc
    check_roles(principal, PAGE_ROLES)
    return Page(principal, csrf_token(settings, token))


signed_in.__admits__ = tuple(sorted(PAGE_ROLES))  # type: ignore[attr-defined]
SignedIn = Annotated[Page, Depends(signed_in)]


async def read_form(request: Request) -> FormData:
    """The urlencoded or multipart form of a POST, bounded (the body limit came first), with no
    value a column cannot hold (U+0000, lone surrogates)."""
    form = await request.form(max_files=1, max_fields=MAX_FORM_FIELDS)
    for name, value in form.multi_items():
        if isinstance(value, str) and (
            len(value) > MAX_FIELD_CHARS or "\x00" in value or _lone_surrogate(value)
        ):
            raise ValidationFailed(f"form field {name!r} is too long or holds a bad character")
    return form


def _lone_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


async def posted(request: Request, page: SignedIn, settings: SettingsDep) -> tuple[Page, FormData]:
    """A signed-in POST: the form, after its CSRF token was checked against the session."""
    form = await read_form(request)
    given = form.get("csrf")
    check_csrf(
        settings, request.cookies.get(SESSION_COOKIE), given if isinstance(given, str) else None
    )
    return page, form


posted.__admits__ = signed_in.__admits__  # type: ignore[attr-defined]
Posted = Annotated[tuple[Page, FormData], Depends(posted)]


def text_field(
    form: FormData, name: str, *, required: bool = False, max_length: int = 500
) -> str | None:
    value = form.get(name)
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        if required:
            raise ValidationFailed(f"form field {name!r} is required")
        return None
    if len(text) > max_length:
        raise ValidationFailed(f"form field {name!r} is longer than {max_length} characters")
    return text


def int_field(form: FormData, name: str, *, low: int = 1, high: int = INT64_END - 1) -> int | None:
    text = text_field(form, name, max_length=20)
    if text is None:
        return None
    if not text.lstrip("-").isdigit() or not max(low, INT64_MIN) <= int(text) <= high:
        raise ValidationFailed(f"form field {name!r} must be an integer from {low} to {high}")
    return int(text)


def int_list(form: FormData, name: str, *, most: int) -> list[int]:
    values = [v for v in form.getlist(name) if isinstance(v, str)]
    if len(values) > most:
        raise ValidationFailed(f"at most {most} values of {name!r}")
    found = []
    for value in values:
        if not value.isdigit() or not 1 <= int(value) < INT64_END:
            raise ValidationFailed(f"form field {name!r} holds a value that is not an id")
        found.append(int(value))
    return found
