"""Rendering of the finance pages: one Jinja2 environment (autoescaped), the ``yuan`` filter, the
security headers of every page, and the HTML form of every refusal."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from cardsvc.api.limits import GuardedRoute
from settlement.web import i18n
from settlement.web.formatting import yuan

HERE: Final = Path(__file__).parent
# Everything a page loads comes from the app itself: no inline script, no other origin.
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

environment = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(("html", "svg")),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.filters["yuan"] = yuan


def lang_of(request: Request) -> str:
    return i18n.language(request.cookies.get(i18n.COOKIE))


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    lang = lang_of(request)
    context.setdefault("page", None)
    html = environment.get_template(template).render(
        t=i18n.translator(lang),
        lang=lang,
        path=request.url.path,
        query=request.url.query,
        **context,
    )
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


def redirect(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303, headers=SECURITY_HEADERS)


def login_location(request: Request) -> str:
    target = request.url.path if request.method == "GET" else "/finance/"
    if request.method == "GET" and request.url.query:
        target += "?" + request.url.query
    return "/finance/login?next=" + quote(target, safe="")


class PageRoute(GuardedRoute):
    """The route class of the pages: the API's guards, and refusals rendered as a page (the one
    error handler asks the route, ``cardsvc/api/errors.py``). With no session or an ended one,
    the answer is a redirect to the login page."""

    def render_error(self, request: Request, status: int, error: str, detail: str) -> Response:
        if status == 401:
            return redirect(login_location(request))
        return page(request, "error.html", status, status=status, error=error, detail=detail)
