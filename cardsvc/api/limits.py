"""Request limits: every body is bounded before it is read, and every JSON body is decoded by one
parser that bounds its shape and refuses values that no column can hold (docs/architecture.md,
"The edge of the API").

- **Size.** Each route has a body limit in bytes: :data:`DEFAULT_LIMIT` unless its endpoint
  declares its own with :func:`body_limit`. :class:`BodyLimitMiddleware`, the outermost layer,
  answers 413 ``BodyTooLarge`` (with the limit) when ``Content-Length`` says more, before a byte
  is read and before authentication, and stops reading a body sent without a length at the limit.
  A 413 closes the connection (the rest of the body is never read).
- **Shape.** :func:`decode_json` refuses, before building any object, a body whose JSON values
  could number more than the route's ``max_values`` (counted as the ``,`` ``:`` and ``[`` bytes
  plus one, an upper bound), and after parsing, nesting deeper than :data:`MAX_DEPTH`.
- **Values.** Strings with U+0000 or a lone surrogate, integers outside signed 64 bits, and
  numbers that are not finite or not below 2^63 in size (``1e999``, ``NaN``) are refused with a
  422 naming the field, whatever the field: no such value reaches a schema, a column or a log.

FastAPI decodes bodies through :class:`GuardedRoute` (every router's ``route_class``); routes
that read their own body (signed terminal requests, whose MAC covers the raw bytes) call
:func:`parse_json`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cardsvc.api.errors import InputRefused, error_response
from cardsvc.settings import Settings

M = TypeVar("M", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])

MAX_DEPTH: Final = 32
INT64_MIN: Final = -(2**63)
INT64_END: Final = 2**63  # the first integer that does not fit a BIGINT column
LIMIT_SCOPE_KEY: Final = "cardsvc.body_limit"
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class BodyLimit:
    max_bytes: int
    max_values: int


DEFAULT_LIMIT: Final = BodyLimit(max_bytes=16 * 1024, max_values=1024)

LimitSpec = BodyLimit | Callable[[Settings], BodyLimit]


def body_limit(spec: LimitSpec) -> Callable[[F], F]:
    """Declare an endpoint's body limit (a fixed one, or one computed from the settings)."""

    def mark(endpoint: F) -> F:
        endpoint.__body_limit__ = spec  # type: ignore[attr-defined]
        return endpoint

    return mark


def declared_limit(route: APIRoute, settings: Settings) -> BodyLimit:
    spec: LimitSpec | None = getattr(route.endpoint, "__body_limit__", None)
    if spec is None:
        return DEFAULT_LIMIT
    return spec if isinstance(spec, BodyLimit) else spec(settings)


class LimitTable:
    """The body limit of each request path: exact paths first, then templated ones, else the
    default (paths that match no route get the default too, so a 404 costs no more)."""

    def __init__(self, routes: Iterable[tuple[str, BodyLimit]]) -> None:
        self.exact: dict[str, BodyLimit] = {}
        self.templated: list[tuple[re.Pattern[str], BodyLimit]] = []
        for path, limit in routes:
            if limit == DEFAULT_LIMIT:
                continue
            if "{" in path:
                self.templated.append((compile_path(path)[0], limit))
            else:
                self.exact[path] = limit

    def lookup(self, path: str) -> BodyLimit:
        found = self.exact.get(path)
        if found is not None:
            return found
        for pattern, limit in self.templated:
            if pattern.match(path):
                return limit
        return DEFAULT_LIMIT


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(
            status_code=413, detail=f"the body exceeds this route's limit of {limit} bytes"
        )
        self.limit = limit

    def response(self) -> JSONResponse:
        return error_response(
            413, "BodyTooLarge", str(self.detail), limit=self.limit, headers={"Connection": "close"}
        )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class BodyLimitMiddleware:
    """Enforces the route's body limit on the bytes as they arrive (see the module docstring)."""

    def __init__(self, app: ASGIApp, table: LimitTable) -> None:
        self.app = app
        self.table = table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.table.lookup(scope["path"])
        scope[LIMIT_SCOPE_KEY] = limit
        declared = _content_length(scope)
        if declared is not None and declared > limit.max_bytes:
            await BodyTooLarge(limit.max_bytes).response()(scope, receive, send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit.max_bytes:
                    raise BodyTooLarge(limit.max_bytes)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as exc:  # raised where no handler rendered it
            if started:
                raise
            await exc.response()(scope, receive, send)


def route_limit(scope: Scope) -> BodyLimit:
    limit: BodyLimit = scope.get(LIMIT_SCOPE_KEY, DEFAULT_LIMIT)
    return limit


def decode_json(body: bytes, limit: BodyLimit) -> Any:
    """The JSON value of ``body`` within ``limit``; InputRefused (422) naming what is wrong."""
    values = body.count(b",") + body.count(b":") + body.count(b"[") + 1
    if values > limit.max_values:
        raise InputRefused.at(
            ["body"], f"more than {limit.max_values} JSON values", "json_too_many_values"
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputRefused.at(["body"], f"not UTF-8 at byte {exc.start}", "json_invalid") from None
    try:
        value = json.loads(text, parse_float=_float, parse_constant=_not_finite)
    except _Suspect:
        value = json.loads(text)  # NaN, Infinity and 1e999 as floats, to be located below
        suspect = True
    except RecursionError:
        raise InputRefused.at(
            ["body"], f"nested deeper than {MAX_DEPTH} levels", "json_too_deep"
        ) from None
    except json.JSONDecodeError as exc:
        raise InputRefused.at(
            ["body", exc.pos], f"JSON decode error: {exc.msg}", "json_invalid"
        ) from None
    else:
        suspect = any(pattern in body for pattern in _SUSPECT) or (
            _NINETEEN_DIGITS in body.translate(_DIGITS_AS_ZERO)
        )
    if suspect:
        if not _clean(value):
            raise _locate(value, ["body"], 1) or InputRefused.at(
                ["body"], "refused", "json_invalid"
            )
    elif body.count(b"{") + body.count(b"[") > MAX_DEPTH and _too_deep(value):
        raise _locate(value, ["body"], 1) or InputRefused.at(["body"], "refused", "json_too_deep")
    return value


# The fast pass looks for refused values in the bytes: U+0000 and surrogates exist in a string
# only as escapes (raw, they are invalid JSON or invalid UTF-8), and an integer outside signed 64
# bits needs 19 digits; floats (rare in this API) are checked as the parser meets them. When the
# bytes hold none of these (the same bytes inside a string only cost the slow pass), the value
# is only checked for its depth.
_SUSPECT = (b"\\u0000", b"\\ud", b"\\uD")
_NINETEEN_DIGITS = b"0" * 19
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")


class _Suspect(Exception):
    pass


def _float(text: str) -> float:
    number = float(text)
    if not -INT64_END < number < INT64_END:
        raise _Suspect
    return number


def _not_finite(_text: str) -> float:
    raise _Suspect


def _too_deep(value: Any) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        for item in node.values() if type(node) is dict else node:
            if type(item) is dict or type(item) is list:
                stack.append((item, depth + 1))
    return False


def _bad_str(text: str) -> bool:
    return "\x00" in text or (not text.isascii() and _LONE_SURROGATE.search(text) is not None)


def _bad_number(number: object) -> bool:
    kind = type(number)
    if kind is int:
        return not INT64_MIN <= number < INT64_END  # type: ignore[operator]
    if kind is float:
        # Also false for NaN, whose comparisons all fail.
        return not -INT64_END < number < INT64_END  # type: ignore[operator]
    return False


def _clean(value: Any) -> bool:
    """True when nothing in ``value`` is refused: the fast pass over every request body (scalars
    are checked in place; only containers go on the stack)."""
    if type(value) is not dict and type(value) is not list:
        return not (_bad_str(value) if type(value) is str else _bad_number(value))
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return False
        if type(node) is dict:
            if any(_bad_str(key) for key in node):
                return False
            items = node.values()
        else:
            items = node
        for item in items:
            kind = type(item)
            if kind is str:
                if _bad_str(item):
                    return False
            elif kind is dict or kind is list:
                stack.append((item, depth + 1))
            elif _bad_number(item):
                return False
    return True


def _locate(value: Any, loc: list[str | int], depth: int) -> InputRefused | None:
    """The first refused value under ``value``, named by its location (the slow pass)."""
    if isinstance(value, dict | list) and depth > MAX_DEPTH:
        return InputRefused.at(loc, f"nested deeper than {MAX_DEPTH} levels", "json_too_deep")
    if isinstance(value, dict):
        for key, item in value.items():
            if _bad_str(key):
                return InputRefused.at(
                    loc, "a member name holds U+0000 or a lone surrogate", "string_bad_character"
                )
            found = _locate(item, [*loc, key], depth + 1)
            if found is not None:
                return found
        return None
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _locate(item, [*loc, index], depth + 1)
            if found is not None:
                return found
        return None
    if isinstance(value, str) and _bad_str(value):
        return InputRefused.at(loc, "holds U+0000 or a lone surrogate", "string_bad_character")
    if _bad_number(value):
        if isinstance(value, float) and not math.isfinite(value):
            return InputRefused.at(loc, "not a finite number", "number_not_finite")
        return InputRefused.at(loc, "out of the signed 64-bit range", "number_out_of_range")
    return None


async def parse_json(request: Request, model: type[M]) -> M:
    """A route's own body, decoded within its limit and validated by ``model`` (422 naming the
    fields, as FastAPI's own bodies)."""
    value = decode_json(await request.body(), route_limit(request.scope))
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise InputRefused.from_validation(exc) from None


class GuardedRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = decode_json(await self.body(), route_limit(self.scope))
        return self._json


class GuardedRoute(APIRoute):
    """The route class of every router: FastAPI's body reading goes through :func:`decode_json`,
    and path and query values are refused (422 naming them) when they hold U+0000 or a lone
    surrogate, or, for an integer parameter, lie outside signed 64 bits."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        integers = {
            (where, field.alias)
            for where, fields in (
                ("path", self.dependant.path_params),
                ("query", self.dependant.query_params),
            )
            for field in fields
            if field.field_info.annotation in (int, int | None)
        }

        async def guarded(request: Request) -> Response:
            for where, items in (
                ("path", request.path_params.items()),
                ("query", request.query_params.multi_items()),
            ):
                for name, raw in items:
                    _check_parameter(where, name, str(raw), (where, name) in integers)
            return await handler(GuardedRequest(request.scope, request.receive))

        return guarded


def _check_parameter(where: str, name: str, raw: str, integer: bool) -> None:
    if _bad_str(raw):
        raise InputRefused.at(
            [where, name], "holds U+0000 or a lone surrogate", "string_bad_character"
        )
    digits = raw.strip()
    if integer and digits.lstrip("+-").isdigit() and not INT64_MIN <= int(digits) < INT64_END:
        raise InputRefused.at(
            [where, name], "out of the signed 64-bit range", "number_out_of_range"
        )
