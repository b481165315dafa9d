"""What ``/openapi.json`` and ``/docs`` say of every route: who it admits, its body limit, and its
error answers (all with the one ``ErrorBody``); ``/docs`` and ``/redoc`` with their assets served
by the app, so they work with no internet.

Each route's refusals are derived from what it is: every route may answer 413, 422 and 503; a
route that needs a staff token or a terminal's signature also 401 and 403; a route with a path
parameter, or that declares it (:func:`errors`), 404; a route that writes 409.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import fastapi_offline
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from cardsvc.api.errors import ErrorBody, FieldProblem
from cardsvc.api.limits import INT64_END, INT64_MIN, BodyLimit

F = TypeVar("F", bound=Callable[..., Any])

ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSETS_URL = "/docs/assets"

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DESCRIPTIONS = {
    400: "The body is not the protocol's (a biller's callback: ``BadRequest``)",
    401: "Not authenticated: no or a bad staff or resident token (each kind of route takes its "
    "own kind only), or a terminal signature that does not verify (``MacInvalid``, "
    "``ReplayRefused``, ``SessionExpired``)",
    403: "Authenticated, but the role or terminal may not do this",
    404: "No such record",
    409: "Conflicts with the current state (a repeated key with other content, an illegal "
    "transition, a duplicate)",
    413: "The body is larger than this route's limit (``limit``, in bytes)",
    422: "The input is refused; ``fields`` names each refused input",
    423: "Locked after too many wrong PINs or passwords (the detail says what lifts it)",
    429: "Too many attempts: retry after ``Retry-After`` seconds",
    503: "The database, the cache, the HSM or a biller is unavailable: retry after "
    "``Retry-After`` seconds",
}


def errors(*statuses: int) -> Callable[[F], F]:
    """Declare refusals an endpoint gives beyond the ones derived from its shape (e.g. 404)."""

    def mark(endpoint: F) -> F:
        endpoint.__errors__ = frozenset(statuses)  # type: ignore[attr-defined]
        return endpoint

    return mark


@dataclass(frozen=True, slots=True)
class Access:
    """Who a route admits: ``staff`` (with ``roles``; empty = any staff), ``terminal`` (a signed
    request), ``bank`` (a bank's signed message), ``biller`` (a biller's), ``resident`` (a resident's token) or
    ``public``."""

    kind: str
    roles: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.kind == "staff":
            roles = ", ".join(self.roles) if self.roles else "any staff role"
            return f"**Admits:** staff with a bearer token: {roles}."
        if self.kind == "terminal":
            return (
                "**Admits:** a signed-in terminal (headers X-Terminal-No, X-Session-Id, X-Seq, "
                "X-Mac; docs/terminal-protocol.md §3)."
            )
        if self.kind == "bank":
            return (
                "**Admits:** a bank, by its signature (headers X-Bank-Code, X-Bank-Signature; "
                "docs/bank-credits.md)."
            )
        if self.kind == "biller":
            return (
                "**Admits:** a biller, by its signature (headers X-Bill-Channel, X-Bill-Biller, "
                "X-Bill-Timestamp, Idempotency-Key, X-Bill-Signature; docs/biller-protocol.md §2)."
            )
        if self.kind == "resident":
            return (
                "**Admits:** a resident with a resident bearer token, for their own data only "
                "(docs/self-service.md)."
            )
        return "**Admits:** anyone (no authentication)."


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependencies(sub)


def access_of(route: APIRoute) -> Access:
    """From the route's dependencies: ``require_roles`` and ``current_principal`` mark
    themselves ``__admits__``, the terminal authentication ``__terminal__``."""
    found = Access("public")
    if getattr(route.endpoint, "__bank__", False):
        found = Access("bank")
    if getattr(route.endpoint, "__biller__", False):
        found = Access("biller")
    for dependency in _dependencies(route.dependant):
        call = dependency.call
        if getattr(call, "__terminal__", False):
            return Access("terminal")
        if getattr(call, "__resident__", False):
            return Access("resident")
        roles = getattr(call, "__admits__", None)
        if roles is not None and (found.kind != "staff" or roles):
            found = Access("staff", tuple(sorted(roles)))
            if roles:
                return found
    return found


def signed_by_bank(endpoint: F) -> F:
    """For an endpoint a bank authenticates by its signature over the body."""
    endpoint.__bank__ = True  # type: ignore[attr-defined]
    return endpoint


def signed_by_biller(endpoint: F) -> F:
    """For an endpoint a biller authenticates by its signature (docs/biller-protocol.md §2)."""
    endpoint.__biller__ = True  # type: ignore[attr-defined]
    return endpoint


def documents_body(model: type[BaseModel]) -> Callable[[F], F]:
    """For an endpoint that parses its own body: the schema /openapi.json shows for it."""

    def mark(endpoint: F) -> F:
        endpoint.__json_body__ = model  # type: ignore[attr-defined]
        return endpoint

    return mark


def body_model_of(route: APIRoute) -> type[BaseModel] | None:
    """The model of a body parsed outside FastAPI (``signed_body``, ``documents_body``)."""
    model: type[BaseModel] | None = getattr(route.endpoint, "__json_body__", None)
    for dependency in _dependencies(route.dependant):
        model = getattr(dependency.call, "__json_body__", None) or model
    return model


@dataclass(frozen=True, slots=True)
class RouteDoc:
    access: Access
    statuses: frozenset[int]
    limit: BodyLimit
    body: type[BaseModel] | None


def route_doc(route: APIRoute, limit: BodyLimit) -> RouteDoc:
    access = access_of(route)
    statuses = {413, 422, 503}
    if access.kind != "public":
        statuses |= {401, 403}
    if "{" in route.path:
        statuses.add(404)
    if (route.methods or set()) & WRITES:
        statuses.add(409)
    statuses |= getattr(route.endpoint, "__errors__", frozenset())
    return RouteDoc(access, frozenset(statuses), limit, body_model_of(route))


def install(app: FastAPI, docs: dict[tuple[str, str], RouteDoc]) -> None:
    """Replace the app's OpenAPI document and its docs pages (``docs``: by (path, method))."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app, docs)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title}: API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{app.title}: API",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )


def _document(app: FastAPI, docs: dict[tuple[str, str], RouteDoc]) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components["ErrorBody"] = ErrorBody.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    components["ErrorBody"].pop("$defs", None)
    components["FieldProblem"] = FieldProblem.model_json_schema()
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            doc = docs.get((path, method.upper()))
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            if doc is None:  # health and the like: only an outage
                responses["503"] = {"description": DESCRIPTIONS[503], "content": error}
                continue
            for status in sorted(doc.statuses):
                responses[str(status)] = {"description": DESCRIPTIONS[status], "content": error}
            text = operation.get("description", "")
            operation["description"] = "\n\n".join(
                part
                for part in (
                    text,
                    doc.access.describe(),
                    f"**Body limit:** {doc.limit.max_bytes} bytes, {doc.limit.max_values} JSON "
                    "values.",
                )
                if part
            )
            if doc.body is not None and "requestBody" not in operation:
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": _component(components, doc.body)}},
                }
            operation["x-admits"] = {"kind": doc.access.kind, "roles": list(doc.access.roles)}
            operation["x-body-limit"] = doc.limit.max_bytes
            _edge_constraints(operation, components)
    for component in components.values():
        _bound_values(component)
    return schema


# No string the edge admits holds U+0000 (cardsvc.api.limits); a lone surrogate cannot be written
# in a JSON Schema pattern, and a client's JSON encoder never produces one from text.
NO_NUL = "^[^\\u0000]*$"


def _edge_constraints(operation: dict[str, Any], components: dict[str, Any]) -> None:
    """What the edge refuses in every request (cardsvc.api.limits), stated where a client reads
    it: each parameter's and body's integers within signed 64 bits, strings without U+0000, and
    request objects without members they do not name."""
    for parameter in operation.get("parameters", []):
        found = parameter.setdefault("schema", {})
        # A parameter that may be left out is absent, never null: a query string cannot say null.
        branches = found.get("anyOf")
        if isinstance(branches, list) and {"type": "null"} in branches:
            kept = [b for b in branches if b != {"type": "null"}]
            found.pop("anyOf")
            if len(kept) == 1:
                found.update(kept[0])
            else:
                found["anyOf"] = kept
        _bound_values(found)
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    if "schema" in body:
        _bound_values(body["schema"])
        _closed(body["schema"], components, set())


def _bound_values(schema: Any) -> None:
    """Integers and numbers within what a BIGINT holds, strings free of U+0000, everywhere in
    ``schema`` (a constraint already there stays)."""
    if isinstance(schema, list):
        for item in schema:
            _bound_values(item)
        return
    if not isinstance(schema, dict):
        return
    kind = schema.get("type")
    if kind == "integer":
        # A bound written as a float (2**63 - 1 as a double is 2**63) is brought inside BIGINT.
        schema["minimum"] = max(math.ceil(schema.get("minimum", INT64_MIN)), INT64_MIN)
        schema["maximum"] = min(math.floor(schema.get("maximum", INT64_END - 1)), INT64_END - 1)
    elif kind == "number":
        if "minimum" not in schema:
            schema.setdefault("exclusiveMinimum", -INT64_END)
        if "maximum" not in schema:
            schema.setdefault("exclusiveMaximum", INT64_END)
    elif kind == "string" and not {"pattern", "enum", "const", "format"} & schema.keys():
        schema["pattern"] = NO_NUL
    for key, value in schema.items():
        if key in ("properties", "patternProperties", "$defs"):
            for item in value.values():
                _bound_values(item)
        elif isinstance(value, dict | list) and key not in ("enum", "const", "default", "examples"):
            _bound_values(value)


def _closed(schema: Any, components: dict[str, Any], seen: set[str]) -> None:
    """A request object admits no member it does not name: a client that sends one meets the
    edge's refusals (or, where a body ignores unknown members, a member that does nothing)."""
    if isinstance(schema, list):
        for item in schema:
            _closed(item, components, seen)
        return
    if not isinstance(schema, dict):
        return
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        name = ref.rsplit("/", 1)[-1]
        if name not in seen and name in components:
            seen.add(name)
            _closed(components[name], components, seen)
        return
    if "properties" in schema and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    for key, value in schema.items():
        if key == "properties":
            for item in value.values():
                _closed(item, components, seen)
        elif isinstance(value, dict | list) and key not in ("enum", "const", "default", "examples"):
            _closed(value, components, seen)


def _component(components: dict[str, Any], model: type[BaseModel]) -> dict[str, str]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def documented(
    routes: Iterable[tuple[str, APIRoute, BodyLimit]],
) -> dict[tuple[str, str], RouteDoc]:
    return {
        (path, method): route_doc(route, limit)
        for path, route, limit in routes
        for method in route.methods or ()
    }
