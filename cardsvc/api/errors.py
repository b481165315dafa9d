"""The one error body of the API and the handlers that render every refusal with it.

Every answer that is not a success is ``ErrorBody``: ``{"error": <name>, "detail": <text>}``,
with ``fields`` on a 422 (which input, what is wrong) and ``limit`` on a 413 (the route's limit
in bytes). Names: a domain error's class name (``NotFound``, ``ReplayRefused``...),
``RequestValidationFailed`` for input the schemas refuse, ``BodyTooLarge``,
``DependencyUnavailable`` for an outage (database, cache or HSM: 503 with ``Retry-After``), and
``InternalError`` for a bug (500, no detail).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cardsvc.errors import DependencyUnavailable, DomainError, RateLimited
from cardsvc.logging import get_logger
from cardsvc.metrics import DOMAIN_ERRORS
from cardsvc.outages import outage

log = get_logger(__name__)

# Seconds a client should wait before retrying after a 503.
RETRY_AFTER_SECONDS = 2
# At most this many problems are listed in ``fields`` (the rest are counted in ``detail``).
MAX_FIELD_PROBLEMS = 20


class FieldProblem(BaseModel):
    loc: list[str | int] = Field(
        description='where: "body", "query", "path" or "header", then the field names and indexes'
    )
    msg: str
    type: str = Field(description="a stable code: missing, int_parsing, string_too_long...")


class ErrorBody(BaseModel):
    """Every error answer of the API."""

    error: str = Field(description="the error's name, stable: branch on it")
    detail: str = Field(description="for people; never contains a secret or personal data")
    fields: list[FieldProblem] | None = Field(
        default=None, description="422 only: the inputs refused, at most 20"
    )
    limit: int | None = Field(default=None, description="413 only: the route's body limit (bytes)")


def error_response(
    status: int,
    error: str,
    detail: str,
    *,
    fields: list[FieldProblem] | None = None,
    limit: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(error=error, detail=detail, fields=fields, limit=limit)
    return JSONResponse(
        status_code=status, content=body.model_dump(exclude_none=True), headers=headers
    )


def field_problems(errors: Iterable[Mapping[str, Any]]) -> list[FieldProblem]:
    """Pydantic or FastAPI errors as field problems, without the input values (which may hold a
    password or a resident ID)."""
    return [
        FieldProblem(
            loc=[p if isinstance(p, int) else str(p) for p in error.get("loc", ())],
            msg=str(error.get("msg", "")),
            type=str(error.get("type", "")),
        )
        for error in errors
    ]


class InputRefused(HTTPException):
    """Input refused before or while it is parsed (JSON shape, bad bytes, schema): a 422 naming
    the fields. An HTTPException so that FastAPI passes it on unchanged from the body reader."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__(status_code=422, detail=summary(problems))
        self.problems = problems

    @classmethod
    def at(cls, loc: Iterable[str | int], msg: str, type_: str) -> InputRefused:
        return cls([FieldProblem(loc=list(loc), msg=msg, type=type_)])

    @classmethod
    def from_validation(cls, exc: ValidationError, prefix: str = "body") -> InputRefused:
        return cls(
            field_problems(
                {**e, "loc": (prefix, *e["loc"])}
                for e in exc.errors(include_url=False, include_input=False)
            )
        )


def summary(problems: list[FieldProblem]) -> str:
    shown = "; ".join(
        f"{'.'.join(str(p) for p in problem.loc)}: {problem.msg}" for problem in problems[:3]
    )
    more = len(problems) - 3
    return shown + (f" (and {more} more)" if more > 0 else "")


def _page_error(request: Request, status: int, error: str, detail: str) -> Response | None:
    """A route that renders pages (the finance pages) renders its refusals as a page: the same
    name, status and detail, in HTML."""
    render = getattr(request.scope.get("route"), "render_error", None)
    if render is None:
        return None
    response: Response = render(request, status, error, detail)
    return response


def _validation(problems: list[FieldProblem]) -> JSONResponse:
    return error_response(
        422,
        "RequestValidationFailed",
        summary(problems),
        fields=problems[:MAX_FIELD_PROBLEMS],
    )


async def domain_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)  # noqa: S101 - registered for DomainError only
    DOMAIN_ERRORS.labels(type(exc).__name__).inc()
    as_page = _page_error(request, exc.status_code, type(exc).__name__, exc.detail)
    if as_page is not None:
        return as_page
    headers = None
    if isinstance(exc, DependencyUnavailable | RateLimited):
        # A rate limit that knows when its window ends says so (``retry_after``, whole seconds).
        retry_after = exc.context.get("retry_after")
        seconds = retry_after if isinstance(retry_after, int) else RETRY_AFTER_SECONDS
        headers = {"Retry-After": str(seconds)}
    return error_response(exc.status_code, type(exc).__name__, exc.detail, headers=headers)


async def validation_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)  # noqa: S101
    problems = field_problems(exc.errors())
    as_page = _page_error(request, 422, "RequestValidationFailed", summary(problems))
    return as_page if as_page is not None else _validation(problems)


# Starlette's own refusals (no route, wrong method, a body over the limit) by status.
HTTP_ERROR_NAMES = {
    400: "BadRequest",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "BodyTooLarge",
    415: "UnsupportedMediaType",
    422: "RequestValidationFailed",
}


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101
    if isinstance(exc, InputRefused):
        as_page = _page_error(request, 422, "RequestValidationFailed", summary(exc.problems))
        return as_page if as_page is not None else _validation(exc.problems)
    from cardsvc.api.limits import BodyTooLarge

    if isinstance(exc, BodyTooLarge):
        return exc.response()
    name = HTTP_ERROR_NAMES.get(exc.status_code, "HTTPError")
    return error_response(exc.status_code, name, str(exc.detail), headers=exc.headers)


async def unexpected_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    down = outage(exc)
    if down is not None:
        log.warning("request.dependency_unavailable", dependency=down, error=type(exc).__name__)
        DOMAIN_ERRORS.labels("DependencyUnavailable").inc()
        return error_response(
            503,
            "DependencyUnavailable",
            f"the {down} is unavailable: retry later",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    log.error("request.failed", error=type(exc).__name__, exc_info=exc)
    return error_response(500, "InternalError", "internal error")


class OutageMiddleware:
    """Answers an outage that got past the route (a pool with no free connection, a database or
    HSM gone) with the 503 of ``unexpected_error_handler``, here, inside the app. Starlette's
    handler of ``Exception`` answers too, but then raises the exception on to the server, which
    logs it as a crash of the application with its traceback: an outage is an answer, not a
    crash. Anything else (a bug) goes on to that handler: 500, logged with its traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            # Once an answer has begun there is nothing left to answer with.
            if started or outage(exc) is None:
                raise
            response = await unexpected_error_handler(Request(scope), exc)
            await response(scope, receive, send)


HANDLERS: dict[Any, Any] = {
    DomainError: domain_error_handler,
    RequestValidationError: validation_error_handler,
    HTTPException: http_error_handler,
    Exception: unexpected_error_handler,
}
