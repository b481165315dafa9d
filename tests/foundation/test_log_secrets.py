"""No input reaches a log: a planted secret in every field of every route (and in a statement
that fails), with every SQL statement logged, never shows in the captured logs."""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from sqlalchemy import text

from cardsvc.api.limits import GuardedRoute
from cardsvc.app import create_app
from cardsvc.db import create_engine, session_factory
from cardsvc.deps import SessionDep
from cardsvc.logging import configure_logging
from cardsvc.resources import Resources
from cardsvc.staff.auth import Role
from tests.factories import staff_headers

SECRET = "Plantedsecretvalue"  # letters only: nothing the log masking would hide anyway
PASSWORD = "Plantedpasswordvalue"

probe = APIRouter(route_class=GuardedRoute)


@probe.post("/probe/failing-statement")
async def failing_statement(session: SessionDep) -> None:
    await session.execute(text("SELECT * FROM no_such_table WHERE x = :value"), {"value": SECRET})


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("DEBUG", json=True, stream=stream)
    client_log = logging.getLogger("httpx")  # the test's own client, not the service
    client_log.setLevel(logging.WARNING)
    yield stream
    client_log.setLevel(logging.NOTSET)
    root.handlers[:] = handlers
    root.setLevel(level)


def _example(schema: dict[str, Any], components: dict[str, Any], depth: int = 0) -> Any:
    if "$ref" in schema:
        return _example(components[schema["$ref"].rsplit("/", 1)[-1]], components, depth)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return _example(schema[key][0], components, depth)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        if depth > 3:
            return {}
        props = schema.get("properties", {})
        return {name: _example(sub, components, depth + 1) for name, sub in props.items()}
    if kind == "array":
        return [_example(schema.get("items", {}), components, depth + 1)]
    if kind == "integer":
        return 1
    if kind == "boolean":
        return False
    return SECRET


async def test_no_planted_secret_reaches_the_log(
    resources: Resources, captured: io.StringIO
) -> None:
    # Every statement logged, as a debugging operator would set it (before the engine exists).
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)
    engine = create_engine(resources.settings.database_url)
    echoing = dataclasses.replace(resources, engine=engine, sessions=session_factory(engine))
    app = create_app(echoing.settings, echoing)
    app.include_router(probe)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as api:
        admin = await staff_headers(api, "root", *Role)
        await api.post("/api/v1/staff/login", json={"username": SECRET, "password": PASSWORD})
        await api.post("/api/v1/staff/login", json={"username": "root", "password": PASSWORD})
        assert (await api.post("/probe/failing-statement")).status_code == 500
        schema = (await api.get("/openapi.json")).json()
        components = schema["components"]["schemas"]
        sent = 0
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                target = path
                params: dict[str, Any] = {}
                for parameter in operation.get("parameters", []):
                    value = 1 if parameter["schema"].get("type") == "integer" else SECRET
                    if parameter["in"] == "path":
                        target = target.replace("{" + parameter["name"] + "}", str(value))
                    elif parameter["in"] == "query":
                        params[parameter["name"]] = value
                body = operation.get("requestBody", {}).get("content", {}).get("application/json")
                for headers in (
                    admin,
                    {"X-Terminal-No": "321100000001", "X-Session-Id": "0" * 32, "X-Seq": "1"},
                ):
                    await api.request(
                        method,
                        target,
                        params=params,
                        json=_example(body["schema"], components) if body else None,
                        headers={**headers, "X-Mac": SECRET},
                    )
                    sent += 1
    await engine.dispose()
    logging.getLogger("sqlalchemy.engine").setLevel(logging.NOTSET)
    logged = captured.getvalue()
    assert sent > 80
    assert "SELECT" in logged  # the statements were logged...
    assert "InternalError" in logged or "request.failed" in logged
    leaks = [line[:400] for line in logged.splitlines() if SECRET in line or PASSWORD in line]
    assert not leaks  # ...but never their values
    assert PASSWORD not in logged
