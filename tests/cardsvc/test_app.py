"""Error rendering, health, readiness and metrics of the API."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import text

from cardsvc.app import create_app
from cardsvc.deps import SessionDep
from cardsvc.errors import Conflict, DomainError, Forbidden, NotFound
from cardsvc.hsm.sim import TcpHsmClient
from cardsvc.resources import Resources


class Payload(BaseModel):
    amount: int


probe = APIRouter()


@probe.get("/probe/conflict")
async def raise_conflict() -> None:
    raise Conflict("card 3211********0018 is already active")


@probe.get("/probe/forbidden")
async def raise_forbidden() -> None:
    raise Forbidden("role counter_operator may not approve")


@probe.get("/probe/items/{item_id}")
async def raise_not_found(item_id: int) -> None:
    raise NotFound(f"no item {item_id}")


@probe.post("/probe/payload")
async def take_payload(payload: Payload) -> dict[str, int]:
    return {"amount": payload.amount}


@probe.get("/probe/boom")
async def boom() -> None:
    raise RuntimeError("unexpected")


@probe.post("/probe/write-then-fail")
async def write_then_fail(session: SessionDep) -> None:
    await session.execute(
        text(
            "INSERT INTO job_runs (job, run_key, step, status, attempts, started_at) "
            "VALUES ('probe', 'k', 's', 'running', 1, CURRENT_TIMESTAMP)"
        )
    )
    raise Conflict("rolled back")


@pytest.fixture
async def api(resources: Resources) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(resources.settings, resources)
    app.include_router(probe)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.mark.parametrize(
    ("path", "status", "name"),
    [
        ("/probe/conflict", 409, "Conflict"),
        ("/probe/forbidden", 403, "Forbidden"),
        ("/probe/items/7", 404, "NotFound"),
    ],
)
async def test_domain_errors_render_with_their_status(
    api: httpx.AsyncClient, path: str, status: int, name: str
) -> None:
    response = await api.get(path)
    assert response.status_code == status
    body = response.json()
    assert body["error"] == name
    assert isinstance(body["detail"], str)
    assert body["detail"]


async def test_validation_errors_are_422(api: httpx.AsyncClient) -> None:
    response = await api.post("/probe/payload", json={"amount": "lots"})
    assert response.status_code == 422
    assert response.json()["error"] == "RequestValidationFailed"
    assert response.json()["fields"][0]["loc"] == ["body", "amount"]


async def test_unexpected_errors_do_not_leak(api: httpx.AsyncClient) -> None:
    response = await api.get("/probe/boom")
    assert response.status_code == 500
    assert response.json() == {"error": "InternalError", "detail": "internal error"}


async def test_a_failed_request_writes_nothing(
    api: httpx.AsyncClient, resources: Resources
) -> None:
    response = await api.post("/probe/write-then-fail")
    assert response.status_code == 409
    async with resources.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM job_runs"))).scalar_one() == 0


def test_every_domain_error_has_a_client_status() -> None:
    def walk(cls: type[DomainError]) -> list[type[DomainError]]:
        return [cls, *[c for sub in cls.__subclasses__() for c in walk(sub)]]

    for cls in walk(DomainError):
        assert 400 <= cls.status_code < 600


async def test_health(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}


async def test_ready_when_everything_answers(api: httpx.AsyncClient) -> None:
    response = await api.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "cache": "ok", "hsm": "ok"}


async def test_not_ready_when_the_hsm_is_gone(resources: Resources) -> None:
    with socket.socket() as sock:  # a port nobody listens on: the HSM is down
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gone = TcpHsmClient("127.0.0.1", port, timeout=0.5)
    app = create_app(resources.settings, dataclasses.replace(resources, hsm=gone))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        response = await http.get("/readyz")
    await gone.close()
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "ok"
    assert response.json()["checks"]["hsm"].startswith("error")


async def test_metrics_use_route_templates(api: httpx.AsyncClient) -> None:
    await api.get("/probe/items/6217001234567890")
    text_body = (await api.get("/metrics")).text
    assert 'route="/probe/items/{item_id}"' in text_body
    assert "6217001234567890" not in text_body
    assert "cardsvc_http_request_duration_seconds_bucket" in text_body
